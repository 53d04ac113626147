# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Everything the collection knows about SGLang's launch_server flags, in one place.

Pure functions over plain dicts and lists (no Ansible objects), checked against the catalog that
``scripts/sglang_flag_catalog.py`` generates from SGLang's own argument parser
(``_sglang_catalog.py``, sglang ``SGLANG_VERSION``).

User extras come from the dict ``sglang_server_args``: keys are flag names without the leading dashes
(``mem-fraction-static: 0.75``), ``true`` for a bare switch. Rules, as SGLang's parser applies them:

- a switch (a flag that takes no value) takes ``true`` (pass it) or ``false`` (leave it out); the
  ``--X/--no-X`` switches (argparse's BooleanOptionalAction) pass ``--no-X`` for ``false``;
- a flag that takes a value takes a string or a number; a dict (or, for SGLang's JSON-typed flags, a
  list) is passed as compact JSON; ``true``, ``false`` and null are refused there;
- a flag that takes several values (``nargs='+'``/``'*'``) takes a list, or one scalar;
- the flags the role sets itself (OWNED_FLAGS) and those that would put a secret on the command line
  (SECRET_FLAGS) are refused, naming the variable to set instead;
- the names SGLang accepts as aliases (``tensor-parallel-size``) are accepted and rendered under
  their canonical name; argparse's prefix abbreviations (``--tp`` for ``--tp-size``), which work only
  while no other flag shares the prefix, are refused with the full name.

Secrets never appear in an argv built here: SGLang 0.5.23 reads ``--api-key`` from its command line
or from the YAML file of ``--config`` only (no environment variable), so ``launch_argv`` takes the path
of such a file (``config_file``) and never the key itself.
"""

from __future__ import annotations

import difflib
import json
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang_catalog import (
    ALIASES,
    FLAGS,
    SGLANG_VERSION,
)

VAR_ARGS = 'sglang_server_args'

# Flags that guides still use but the pinned SGLang does not know: old name -> (what happened, new names).
RENAMES = {
    'schedule-heuristic': ('was renamed', ('schedule-policy',)),
    'max-num-reqs': ('was removed; the closest are', ('max-queued-requests', 'max-running-requests')),
    'cuda-graph-max-bs': ('was split into', ('cuda-graph-max-bs-decode', 'cuda-graph-max-bs-prefill')),
}

# Aliases SGLang still accepts but that are on their way out (FACTS.md: --nccl-init-addr is deprecated).
DEPRECATED_ALIASES = {'nccl-init-addr': 'dist-init-addr'}

# Values users copy from guides for a flag with choices: flag -> {value: the valid choices to suggest}.
CHOICE_HINTS = {
    'kv-cache-dtype': {'fp8': ('fp8_e4m3', 'fp8_e5m2')},
}

# Flags the role sets itself, canonical name -> where the value comes from. launch_argv is the one
# place that writes them.
OWNED_FLAGS = {
    'model-path': 'sglang_server_model',
    'tp-size': 'sglang_server_tp_size',
    'nnodes': 'the size of the inventory group (the cluster plan computes it)',
    'node-rank': "the host's place in the inventory group (or spark_node_rank)",
    'dist-init-addr': "the head's CX7 address and spark_dist_init_port (the cluster plan computes it)",
    'host': 'sglang_server_host',
    'port': 'sglang_server_port',
    'api-key': 'sglang_server_api_key (kept off the command line)',
    'config': "the role itself (its YAML file keeps the API key off the command line)",
}

# Flags whose value is a secret: on a command line it shows in ps and /proc/<pid>/cmdline.
SECRET_FLAGS = {
    'admin-api-key': 'an admin API key',
    'ssl-keyfile-password': 'the password of the TLS key file',
}

_INT = re.compile(r'^[+-]?\d+$')
_HUMAN_INT = re.compile(r'^(\d+(\.\d+)?(k|M|G|T)|\d+(Ki|Mi|Gi|Ti)|[+-]?\d+)$')
_JSON_TYPES = ('loads', 'json_list_type')


def _dashed(names):
    return ', '.join('--' + n for n in names)


def lookup(name, catalog=None, aliases=None):
    """How SGLang's parser reads one key: (canonical name, negated, how) or (None, False, None).

    how is 'flag', 'alias' or 'negated' (the --no-X form of a BooleanOptionalAction).
    """
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    if name in catalog:
        return name, False, 'flag'
    if name in aliases:
        return aliases[name], False, 'alias'
    if name.startswith('no-') and name[3:] in catalog and name in catalog[name[3:]].get('negated', ()):
        return name[3:], True, 'negated'
    return None, False, None


def _all_names(catalog, aliases):
    names = set(catalog) | set(aliases)
    for entry in catalog.values():
        names.update(entry.get('negated', ()))
    return names


def suggest(name, catalog=None, aliases=None, count=3):
    """The valid names nearest to an unknown one (difflib), canonical names first."""
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    found = []
    for near in difflib.get_close_matches(name, sorted(_all_names(catalog, aliases)), n=count, cutoff=0.6):
        canonical, _negated, _how = lookup(near, catalog, aliases)
        near = near if near in catalog or near.startswith('no-') else canonical
        if near not in found:
            found.append(near)
    return found


def _abbreviation_of(name, catalog, aliases):
    """The long options that argparse would expand ``--name`` to (a prefix match), sorted."""
    return sorted(n for n in _all_names(catalog, aliases) if n.startswith(name) and n != name)


def _unknown(key, name, catalog, aliases):
    name = name.replace('_', '-') if name.replace('_', '-') in RENAMES else name
    if name in RENAMES:
        what, new = RENAMES[name]
        valid = [n for n in new if n in catalog]
        return "'%s': --%s is not a flag of SGLang %s: it %s %s. Fix: use %s in %s" % (
            key, name, SGLANG_VERSION, what, _dashed(valid), ' or '.join(repr(n) for n in valid), VAR_ARGS)
    prefixed = _abbreviation_of(name, catalog, aliases) if len(name) >= 2 else []
    if len(prefixed) == 1:
        target, _negated, _how = lookup(prefixed[0], catalog, aliases)
        if target in OWNED_FLAGS:
            return "'%s': --%s is an abbreviation of --%s, which the role sets from %s. Fix: remove it from %s" % (
                key, name, target, OWNED_FLAGS[target], VAR_ARGS)
        return ("'%s': --%s is only an abbreviation of --%s (argparse expands it while no other flag starts the "
                "same way). Fix: write '%s'" % (key, name, prefixed[0], prefixed[0]))
    near = suggest(name, catalog, aliases)
    if not near and 1 < len(prefixed) <= 6:
        near = prefixed
    if near:
        return "'%s': --%s is not a flag of SGLang %s. Did you mean %s?" % (
            key, name, SGLANG_VERSION, ' or '.join(repr(n) for n in near))
    return "'%s': --%s is not a flag of SGLang %s. Fix: use one that `python -m sglang.launch_server --help` lists" % (
        key, name, SGLANG_VERSION)


def _scalar_problem(key, name, entry, value):
    """What is wrong with one value of a valued flag, or None."""
    if isinstance(value, bool) or value is None:
        return "'%s': --%s takes a value, not %s. Fix: give it a value, or remove the key to leave it unset" % (
            key, name, {True: 'true', False: 'false', None: 'null (an empty value)'}[value])
    ftype = entry.get('type')
    if isinstance(value, (dict, list)):
        if ftype in _JSON_TYPES or (isinstance(value, dict) and ftype in ('str', None)):
            return None  # passed as compact JSON
        return "'%s': --%s takes one %s, not a %s. Fix: give a single value" % (
            key, name, ftype or 'value', type(value).__name__)
    if not isinstance(value, (str, int, float)):
        return "'%s': --%s: a %s is not a value it takes. Fix: give a string or a number" % (
            key, name, type(value).__name__)
    text = str(value).strip()
    choices = entry.get('choices')
    if choices is not None:
        if text in [str(c) for c in choices]:
            return None
        hint = CHOICE_HINTS.get(name, {}).get(text)
        if hint:
            return "'%s': --%s %s is not a choice of SGLang %s; use %s. Valid choices: %s" % (
                key, name, text, SGLANG_VERSION, ' or '.join(hint), ', '.join(str(c) for c in choices))
        return "'%s': --%s %s is not one of its choices: %s" % (key, name, text, ', '.join(str(c) for c in choices))
    if ftype == 'int' and not (isinstance(value, int) or _INT.match(text)):
        return "'%s': --%s takes an integer, not %r" % (key, name, value)
    if ftype == 'human_readable_int' and not (isinstance(value, int) or _HUMAN_INT.match(text)):
        return "'%s': --%s takes an integer (suffixes k, M, G, T, Ki, Mi, Gi, Ti allowed), not %r" % (key, name, value)
    if ftype == 'float' and not isinstance(value, (int, float)):
        try:
            float(text)
        except ValueError:
            return "'%s': --%s takes a number, not %r" % (key, name, value)
    if ftype in _JSON_TYPES and isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return "'%s': --%s takes JSON (write a YAML dict or list, or a JSON string), not %r" % (key, name, value)
    return None


def _value_problems(key, name, entry, value, negated):
    kind = entry['value']
    if kind == 'none':
        if isinstance(value, bool):
            if negated and value is False:
                return ["'%s': false for a --no-X switch is a double negative. Fix: write '%s: true' instead" % (
                    key, name)]
            return []
        return ["'%s': --%s is a switch and takes no value (got %r). Fix: write true to pass it, false to leave it out" % (
            key, '--no-' + name if negated else name, value)]
    if kind == 'optional' and value is True:
        return []
    if kind in ('list', 'any'):
        if isinstance(value, list) and entry.get('type') not in _JSON_TYPES:
            if not value and kind == 'list':
                return ["'%s': --%s takes one or more values, got an empty list. Fix: give values or remove the key" % (
                    key, name)]
            return [p for p in (_scalar_problem(key, name, entry, v) for v in value) if p]
    problem = _scalar_problem(key, name, entry, value)
    return [problem] if problem else []


def resolve_server_args(args, catalog=None, aliases=None):
    """(problems, resolved): resolved is a list of (canonical, negated, value) in input order."""
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    if args is None:
        return [], []
    if not isinstance(args, dict):
        return ['%s must be a dict of flag names (without the leading dashes) to values, not a %s' % (
            VAR_ARGS, type(args).__name__)], []
    problems = []
    resolved = []
    seen = {}
    for key, value in args.items():
        if not isinstance(key, str) or not key.strip():
            problems.append('%r: a flag name must be a non-empty string' % (key,))
            continue
        name = key.strip()
        if name.startswith('-'):
            problems.append("'%s': write the flag name without the leading dashes: '%s'" % (key, name.lstrip('-')))
            name = name.lstrip('-')
        if '=' in name or ' ' in name:
            problems.append("'%s': write the value as the dict value, not in the key: '%s: <value>'" % (
                key, re.split(r'[= ]', name)[0]))
            continue
        canonical, negated, how = lookup(name, catalog, aliases)
        if canonical is None and '_' in name:
            canonical, negated, how = lookup(name.replace('_', '-'), catalog, aliases)
            if canonical is not None:
                problems.append("'%s': SGLang's command line spells it with dashes: '%s'" % (key, name.replace('_', '-')))
                continue
        if canonical is None:
            problems.append(_unknown(key, name, catalog, aliases))
            continue
        if canonical in OWNED_FLAGS:
            spelled = '--' + canonical if how == 'flag' else '--%s (%s alias of --%s)' % (
                name, 'a deprecated' if name in DEPRECATED_ALIASES else 'an', canonical)
            problems.append("'%s': %s is set by the role from %s. Fix: remove it from %s" % (
                key, spelled, OWNED_FLAGS[canonical], VAR_ARGS))
            continue
        if canonical in SECRET_FLAGS:
            problems.append("'%s': --%s carries %s, which on a command line shows in ps and /proc; it cannot be "
                            "passed through %s. Fix: remove it" % (key, canonical, SECRET_FLAGS[canonical], VAR_ARGS))
            continue
        if canonical in seen:
            problems.append("'%s' and '%s' both set --%s. Fix: keep one of them" % (seen[canonical], key, canonical))
            continue
        seen[canonical] = key
        found = _value_problems(key, canonical, catalog[canonical], value, negated)
        problems.extend(found)
        if not found:
            resolved.append((canonical, negated, value))
    return problems, resolved


def validate_server_args(args, catalog=None, aliases=None):
    """Every problem with a ``sglang_server_args`` dict, as a list of messages (empty: all is well)."""
    return resolve_server_args(args, catalog, aliases)[0]


def server_args_warnings(args, catalog=None, aliases=None):
    """Flags that still work in the pinned SGLang but are deprecated, each with its replacement."""
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    warnings = []
    for key in (args or {}) if isinstance(args, dict) else ():
        name = str(key).lstrip('-')
        canonical, _negated, _how = lookup(name, catalog, aliases)
        if canonical is None:
            continue
        if name in DEPRECATED_ALIASES:
            warnings.append("%s: --%s is a deprecated alias; use --%s" % (VAR_ARGS, name, DEPRECATED_ALIASES[name]))
        elif catalog[canonical].get('deprecated_for'):
            warnings.append('%s: --%s is deprecated in SGLang %s; use %s' % (
                VAR_ARGS, canonical, SGLANG_VERSION, catalog[canonical]['deprecated_for']))
    return warnings


def _render(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(',', ':'), sort_keys=True)
    return str(value).strip()


def build_argv(args, catalog=None, aliases=None):
    """The command-line tokens for a valid ``sglang_server_args`` dict, sorted by flag name.

    Switches: ``true`` -> ``--X``; ``false`` -> nothing, or ``--no-X`` for a --X/--no-X switch.
    Several values (nargs '+' or '*'): ``--X a b c`` (argparse keeps only the last of repeated --X).
    Raises ValueError listing every problem when the dict is not valid.
    """
    catalog = FLAGS if catalog is None else catalog
    problems, resolved = resolve_server_args(args, catalog, aliases)
    if problems:
        raise ValueError(format_problems(problems))
    argv = []
    for name, negated, value in sorted(resolved, key=lambda item: item[0]):
        entry = catalog[name]
        if entry['value'] == 'none':
            if negated:
                argv.append('--no-' + name)  # only true gets here
            elif value:
                argv.append('--' + name)
            elif entry.get('negated'):
                argv.append('--' + entry['negated'][0])
            continue
        if value is True:  # nargs='?' given without a value
            argv.append('--' + name)
            continue
        argv.append('--' + name)
        if isinstance(value, list) and entry['value'] in ('list', 'any') and entry.get('type') not in _JSON_TYPES:
            argv.extend(_render(v) for v in value)
        else:
            argv.append(_render(value))
    return argv


def format_problems(problems, variable=VAR_ARGS):
    """One message for a list of problems, numbered, one per line."""
    head = '%s has %d problem%s (checked against SGLang %s):' % (
        variable, len(problems), '' if len(problems) == 1 else 's', SGLANG_VERSION)
    return '\n'.join([head] + ['  %d. %s' % (i, p) for i, p in enumerate(problems, 1)])


def _positive_int(value, what, problems, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not _INT.match(str(value).strip()):
        problems.append('%s must be an integer, not %r' % (what, value))
        return None
    number = int(str(value).strip())
    if number < minimum:
        problems.append('%s must be at least %d, not %d' % (what, minimum, number))
        return None
    return number


def launch_argv(model, nnodes=1, node_rank=0, dist_init_addr=None, tp_size=1, host='127.0.0.1', port=30000,
                extra=None, config_file=None, catalog=None, aliases=None):
    """The full argument list of ``python -m sglang.launch_server`` for one node (the program not included).

    The one place that writes the flags the role owns (OWNED_FLAGS): --model-path, --tp-size, --nnodes,
    --node-rank, --dist-init-addr (only when nnodes > 1), --host, --port and --config (the YAML file that
    carries the API key, when given); then the validated extras of ``sglang_server_args``, sorted.
    Raises ValueError listing every problem.
    """
    problems = []
    if not isinstance(model, str) or not model.strip():
        problems.append('sglang_server_model must be a Hugging Face model id or a path, not %r' % (model,))
    n = _positive_int(nnodes, '--nnodes (the size of the inventory group)', problems)
    rank = _positive_int(node_rank, '--node-rank', problems, minimum=0)
    tp = _positive_int(tp_size, '--tp-size (sglang_server_tp_size)', problems)
    p = _positive_int(port, '--port (sglang_server_port)', problems)
    if p is not None and p > 65535:
        problems.append('--port (sglang_server_port) must be 1-65535, not %d' % p)
    if not isinstance(host, str) or not host.strip():
        problems.append('--host (sglang_server_host) must be an address to listen on, not %r' % (host,))
    if n is not None and rank is not None and rank >= n:
        problems.append('--node-rank %d is out of range for --nnodes %d (ranks are 0 .. %d)' % (rank, n, n - 1))
    if n is not None and n > 1:
        if not isinstance(dist_init_addr, str) or not re.match(r'^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$',
                                                               dist_init_addr.strip()):
            problems.append('--dist-init-addr must be HEAD_ADDRESS:PORT (IPv6 in brackets) when --nnodes > 1, not %r' % (
                dist_init_addr,))
    if config_file is not None and (not isinstance(config_file, str)
                                    or not config_file.lower().endswith(('.yaml', '.yml'))):
        problems.append('--config must be the path of a .yaml or .yml file (SGLang refuses others), not %r' % (
            config_file,))
    extra_problems, _resolved = resolve_server_args(extra, catalog, aliases)
    problems.extend(extra_problems)
    if tp is not None and n is not None and not extra_problems:
        pp_value = dict((name, value) for name, _neg, value in _resolved).get('pp-size', 1)
        pp = _positive_int(pp_value, "--pp-size (sglang_server_args['pp-size'])", problems)
        if pp is not None and (tp * pp) % n:
            problems.append('--tp-size %d x --pp-size %d must be divisible by --nnodes %d' % (tp, pp, n))
    if problems:
        raise ValueError(format_problems(problems, 'The SGLang launch command'))
    argv = ['--model-path', model.strip(), '--tp-size', str(tp), '--nnodes', str(n), '--node-rank', str(rank)]
    if n > 1:
        argv += ['--dist-init-addr', dist_init_addr.strip()]
    argv += ['--host', host.strip(), '--port', str(p)]
    if config_file is not None:
        argv += ['--config', config_file]
    return argv + build_argv(extra, catalog, aliases)
