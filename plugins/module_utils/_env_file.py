# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one format of the environment files this collection writes (``nccl.env``, ``secrets.env``).

Each file is read twice: by systemd (``EnvironmentFile=``) and by docker (``docker run --env-file``). The two
readers disagree about everything but plain text:

* systemd (``parse_env_file_internal`` in ``src/basic/env-file.c``): skips blank space before a value and chops
  it after; a value that starts with ``"`` or ``'`` is unquoted, with ``\\`` escapes inside double quotes; a
  ``\\`` in a bare value escapes the next character (and a trailing one joins the next line); ``\\r`` ends a line
  like ``\\n``; lines starting with ``#`` or ``;`` are comments (and, before systemd 254, a comment line ending
  in ``\\`` swallowed the next line); keys and values must be valid UTF-8.
* docker (``pkg/kvfile/kvfile.go`` of docker/cli, used by ``opts.ParseEnvFile``): cuts each line at the first
  ``=`` and keeps the rest verbatim, quotes, backslashes and trailing blanks included; strips leading blank
  space of the line only; skips lines starting with ``#`` (not ``;``); a line without ``=`` takes the value of
  that name from the docker client's own environment; a line longer than 64 KiB fails the run.

So a value like ``"a b"`` reaches a native service as ``a b`` and a container as ``"a b"``. The format here is
the subset both read byte for byte the same, and nothing else: ``NAME=value`` lines with bare values made of
printable ASCII without quotes, backslashes, ``$`` or backticks (nobody's NCCL setting or token needs them,
and other readers of such files, docker compose or a shell's ``source``, expand them), without blank space at
either end; ``#`` comment lines that do not end in a backslash. Anything else is refused with the reason,
never quoted: a quoted value would be read two ways.
"""

from __future__ import annotations

import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, kind, problem

# Inside double quotes of a value written by releases before this format, what systemd unescapes.
_ESCAPED = re.compile(r'\\(["\\`$])')
# A variable name as both readers take it and a process can use it.
NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
# The longest line docker reads (bufio.MaxScanTokenSize, newline excluded).
MAX_LINE = 64 * 1024 - 1

# Characters refused anywhere in a value, with the code and why.
_REFUSED = (
    ('"\'', 'env-value-quote', 'a quote (%s): docker would pass it on, systemd would remove it'),
    ('\\', 'env-value-backslash', 'a backslash: systemd drops it (it escapes the next character), docker keeps it'),
    ('$`', 'env-value-expansion', 'a %s, which other readers of environment files (docker compose, a shell) expand'),
)


class EnvFileError(ProblemsError):
    """Every entry of an environment file that cannot be written, not only the first."""

    subject = 'The environment file'


def env_value(value):
    """The string a scalar becomes in the file: bools as 1/0, numbers as written; raises TypeError otherwise."""
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TypeError('%s is not a value an environment variable can take' % kind(value))


def value_trouble(name, value):
    """(code, what) when the string ``value`` of ``name`` is outside the format, else None.

    ``what`` names the variable and the offending character, never the value itself (it may be a token).
    """
    for chars, code, why in _REFUSED:
        found = [c for c in chars if c in value]
        if found:
            return code, '%s: the value holds %s' % (name, why % found[0] if '%s' in why else why)
    bad = [c for c in value if not ' ' <= c <= '~']
    if bad:
        if bad[0] in '\n\r':
            what = 'a line break, which ends the line in both readers'
        elif ord(bad[0]) < 32 or ord(bad[0]) == 127:
            what = 'the control character %r' % bad[0]
        else:
            what = 'the non-ASCII character %r; the file holds printable ASCII only' % bad[0]
        return 'env-value-control' if ord(bad[0]) < 128 else 'env-value-non-ascii', '%s: the value holds %s' % (
            name, what)
    if value != value.strip(' '):
        return 'env-value-edge-space', ('%s: the value starts or ends with a space, which systemd drops and docker '
                                        'keeps' % name)
    if len(name) + 1 + len(value) > MAX_LINE:
        return 'env-value-too-long', '%s: the line is longer than the %d bytes docker reads' % (name, MAX_LINE)
    return None


FIX = ('write the value bare (no quotes, backslashes, $ or backticks, no space at either end, printable ASCII '
       'only), as systemd EnvironmentFile= and docker --env-file then read the same')


def check_entry(name, raw, variable):
    """(value, None) for one entry as the file holds it, or (None, problem) naming ``variable`` and the fix."""
    if not (isinstance(name, str) and NAME.match(name)):
        return None, problem('env-bad-name', variable, '%r is not a valid environment variable name (letters, digits, '
                             '_; not starting with a digit)' % (name,), 'correct or remove it')
    return check_value(name, raw, variable)


def check_value(name, raw, variable, type_code='env-bad-value'):
    """(value, None) for the value of ``name`` as the file holds it, or (None, problem) naming ``variable``.

    ``type_code``: the code of a value that is no string, number or bool (callers with codes of their own pass theirs).
    """
    try:
        value = env_value(raw)
    except TypeError as exc:
        return None, problem(type_code, variable, '%s: %s' % (name, exc),
                             'remove the key to leave it unset' if raw is None else 'give it a string, number or bool')
    trouble = value_trouble(name, value)
    if trouble:
        return None, problem(trouble[0], variable, trouble[1], FIX)
    return value, None


def header_text(header):
    """``header`` (text ending with a newline, or a list of lines) as text; raises ValueError unless every line
    is a comment both readers skip (``#``, printable ASCII, no trailing backslash)."""
    if not header:
        return ''
    if isinstance(header, (list, tuple)):
        header = ''.join('%s\n' % line for line in header)
    if not header.endswith('\n'):
        raise ValueError('the header must end with a newline')
    for line in header[:-1].split('\n'):
        if not line.startswith('#') or line.endswith('\\') or any(not ' ' <= c <= '~' for c in line):
            raise ValueError('header line %r is not a plain "#" comment line' % line)
    return header


def render_env_file(mapping, header='', variable='environment'):
    """The file's text: ``header`` (comment lines, see header_text), then one ``NAME=value`` line per entry.

    Raises EnvFileError with a problem (naming ``variable``) for every entry outside the format.
    """
    header = header_text(header)
    problems = []
    lines = []
    for name, raw in mapping.items():
        value, bad = check_entry(name, raw, variable)
        if bad:
            problems.append(bad)
        else:
            lines.append('%s=%s\n' % (name, value))
    if problems:
        raise EnvFileError(problems)
    return header + ''.join(lines)


def parse_env_file(text):
    """The variables of an environment file, name -> value (strings): the inverse of ``render_env_file``.

    Comment and blank lines are skipped, and so is a line without ``=``; a bare value is taken as it is (it may hold
    ``=``, as in ``NCCL_SOCKET_IFNAME==enp1s0f1np1``); a name that appears twice keeps its last value, as systemd
    reads it. A value in double quotes, as earlier releases of this collection wrote some, has ``" \\ ` $``
    unescaped, as systemd reads it.
    """
    env = {}
    # Lines end at '\n' only, as systemd reads them (str.splitlines would also split at a U+2028 inside quotes).
    for line in (text or '').split('\n'):
        line = line.strip(' \t\r')
        if not line or line.startswith('#') or '=' not in line:
            continue
        name, value = line.split('=', 1)
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = _ESCAPED.sub(r'\1', value[1:-1])
        env[name] = value
    return env
