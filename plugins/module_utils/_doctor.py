# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the doctor playbook decides, as pure functions (no Ansible objects inside).

The doctor role collects raw results on every node it reaches (commands, files, the probe modules, an all-reduce
with ``NCCL_DEBUG=INFO``); the controller turns them into the files of one tarball and a short list of what looks
wrong. Everything it decides is decided here:

- ``redact``: a text with every secret replaced: the values the run knows (the API key, the Hugging Face token) and
  whatever looks like one (``hf_...`` tokens, ``api-key: ...``, ``Bearer ...``);
- ``node_files``: one node's files of the tarball (name -> redacted text) from its registered results;
- ``findings``: what looks wrong, from the verify role's own judgement of each node (``_verify.group_reports``: the
  probes' problem codes, connectx_info's and gpu_info's findings, the unit, the NCCL file, the all-reduce) and the
  problems of other checks (``_problems`` dicts: the SGLang version, the preflight's plan); each with its code and
  fix as those checks wrote them, never reworded here;
- ``format_findings``: the short list the play ends with.
"""

from __future__ import annotations

import base64
import json
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import version_problems

REDACTED = '<redacted>'

# Secrets the run knows are replaced wherever they occur, when at least this long (a shorter value would turn
# ordinary words into <redacted>; the keys this collection generates are 32 characters).
MIN_SECRET_LENGTH = 6


def _quoted(value):
    """<redacted> in the quotes the value had, so that JSON, YAML and Python reprs stay what they were."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        return value[0] + REDACTED + value[0]
    return REDACTED


# What looks like a secret in any text: the value is replaced, the name kept (so the reader sees what was there).
_PATTERNS = (
    # Hugging Face user access tokens.
    (re.compile(r'\bhf_[A-Za-z0-9]{30,}'), lambda m: REDACTED),
    # An HTTP Authorization header's credentials.
    (re.compile(r'(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}'), lambda m: m.group(1) + m.group(2) + REDACTED),
    # --api-key VALUE on a command line.
    (re.compile(r'(?i)(--(?:admin-)?api-key(?:=|\s+))("[^"]*"|\'[^\']*\'|\S+)'),
     lambda m: m.group(1) + _quoted(m.group(2))),
    # NAME=VALUE, NAME: VALUE, 'name': 'value', name='value' (SGLang's server_args line, YAML, env files, JSON).
    (re.compile(r'(?i)\b((?:admin[-_])?api[-_]?key|(?:hf|hugging_?face(?:_hub)?)[-_]token|token|access[-_]token|'
                r'password|passwd|secret|secret[-_]key|ssl[-_]keyfile[-_]password)(["\']?\s*[:=]\s*)'
                r'(?!None\b|null\b|<redacted>)("[^"\n]*"|\'[^\'\n]*\'|[^\s"\',}\]]+)'),
     lambda m: m.group(1) + m.group(2) + _quoted(m.group(3))),
)


def redact(text, secrets=()):
    """``text`` with every secret replaced by ``<redacted>``: each value of ``secrets`` (longest first) wherever it
    occurs, then whatever looks like a secret (``hf_...``, ``api-key: ...``, ``--api-key ...``, ``Bearer ...``)."""
    if text is None:
        return ''
    text = str(text)
    known = sorted({str(s) for s in secrets or () if s and len(str(s)) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    for value in known:
        text = text.replace(value, REDACTED)
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text


def secrets_in(text, secrets):
    """The secrets of ``secrets`` that occur in ``text`` (what a redaction test looks for)."""
    return [s for s in secrets or () if s and str(s) in (text or '')]


# --- the versions of the runtime ----------------------------------------------------------------------------------

# Printed as one JSON line by the runtime's python3 (the image's, or the native venv's): the distributions'
# versions through importlib.metadata, then torch's view of CUDA and NCCL. The NCCL is the one torch loads, i.e.
# the one SGLang uses. Every step is guarded: a CPU-only torch has no NCCL, an image may lack torch.
VERSIONS_PROBE = '\n'.join((
    'import importlib.metadata as m, json',
    'out = {}',
    'for name in ("sglang", "torch", "flashinfer-python", "sgl-kernel", "transformers"):',
    '    try:',
    '        out[name] = m.version(name)',
    '    except Exception:',
    '        out[name] = None',
    'try:',
    '    import torch',
    '    out["torch_cuda"] = torch.version.cuda',
    '    v = torch.cuda.nccl.version() if torch.cuda.is_available() or hasattr(torch._C, "_nccl_version") else None',
    '    out["nccl"] = ".".join(str(p) for p in v) if isinstance(v, tuple) else v',
    'except Exception as exc:',
    '    out["nccl"] = None',
    '    out["torch_error"] = "%s: %s" % (type(exc).__name__, exc)',
    'print(json.dumps(out, sort_keys=True))',
))


def parse_versions(stdout):
    """The versions probe's JSON line (its last line), or ``{}`` when it printed none."""
    for line in reversed((stdout or '').strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def node_versions(host, runtime, stdout):
    """What a node runs: ``{host, runtime, versions}`` (``versions`` from ``parse_versions``)."""
    return {'host': host, 'runtime': runtime, 'versions': parse_versions(stdout)}


def versions_problems(nodes):
    """The SGLang version problems of the nodes (``node_versions`` each), as the sglang_server role would find them:
    not the version the flag catalog describes (``sglang-version-mismatch``), or none readable
    (``sglang-version-unknown``)."""
    out = []
    for item in nodes or ():
        if not item or not item.get('runtime'):
            continue
        host = item.get('host')
        for found in version_problems((item.get('versions') or {}).get('sglang') or '', 'host %s' % host,
                                      item['runtime']):
            out.append(dict(found, hosts=[host]))
    return out


# --- one node's files ---------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r'[^A-Za-z0-9._-]+')


def file_name(name):
    """A file name of the tarball from a collection item's name (``/etc/netplan/40-cx7.yaml`` -> ``etc-netplan-...``)."""
    return _SAFE_NAME.sub('-', str(name)).strip('-.') or 'unnamed'


def command_text(result):
    """What a command of the collection printed, with its command line and exit status, as one text."""
    result = result or {}
    if result.get('skipped'):
        return '# skipped: %s\n' % (result.get('skip_reason') or 'condition false')
    argv = result.get('cmd')
    head = '$ %s\n' % (' '.join(argv) if isinstance(argv, list) else argv or '?')
    body = result.get('stdout') or ''
    if result.get('stderr'):
        body += ('\n' if body and not body.endswith('\n') else '') + '# stderr:\n' + result['stderr']
    if result.get('msg') and not body:
        body = '# %s' % result['msg']
    tail = '\n# rc %s\n' % result.get('rc')
    return head + body + ('' if body.endswith('\n') else '\n') + tail.lstrip('\n')


def slurp_text(result, path=None):
    """The text of a file that ansible.builtin.slurp read, or a line saying why it was not read."""
    result = result or {}
    if 'content' in result:
        return base64.b64decode(result['content']).decode('utf-8', 'replace')
    if result.get('skipped'):
        return '# %s: skipped\n' % (path or result.get('source') or 'file')
    return '# %s: not read (%s)\n' % (path or result.get('source') or 'file', result.get('msg') or 'no content')


def module_json(result):
    """A module's registered result as JSON text (Ansible's own bookkeeping keys left out)."""
    result = dict(result or {})
    for key in ('invocation', '_ansible_no_log', 'changed', 'failed_when_result', '_ansible_verbose_always'):
        result.pop(key, None)
    return json.dumps(result, indent=2, sort_keys=True, default=str) + '\n'


def node_files(commands=(), files=(), modules=None, secrets=(), host=None):
    """One node's files of the tarball, ``{host, name, path, text}`` each (``path`` is ``host/name`` in the tarball,
    ``text`` redacted), sorted by name. A module that was skipped (e.g. rank 0's health check on another rank) has none.

    ``commands``: the results of the collection's commands (a loop's ``results``; each holds its ``item`` with a
    ``name``); ``files``: the results of slurp (each holds its ``item``, the path); ``modules``: name -> a module's
    registered result (``gpu_info``, ``connectx_info``, ``nccl_allreduce``, ...), written as JSON; the all-reduce's
    output (``NCCL_DEBUG=INFO`` lines) also as text of its own.
    """
    out = {}
    for result in commands or ():
        item = (result or {}).get('item') or {}
        out[file_name(item.get('name') or 'command') + '.txt'] = redact(command_text(result), secrets)
    for result in files or ():
        item = (result or {}).get('item')
        path = item.get('path') if isinstance(item, dict) else item
        out[file_name(path or 'file')] = redact(slurp_text(result, path), secrets)
    for name, result in sorted((modules or {}).items()):
        if result is None or result.get('skipped'):
            continue
        out[file_name(name) + '.json'] = redact(module_json(result), secrets)
        if name == 'nccl_allreduce' and (result.get('stdout') or result.get('stderr')):
            out['nccl_allreduce-output.txt'] = redact(command_text(result), secrets)
    return [{'host': host, 'name': name, 'path': '%s/%s' % (host, name) if host else name, 'text': out[name]}
            for name in sorted(out)]


# --- what looks wrong ---------------------------------------------------------------------------------------------

def finding(host, code, message, severity='error'):
    """One thing that looks wrong: where, its code (the code the check that found it gave) and the sentence with its
    fix, as that check wrote it."""
    return {'host': host, 'code': code, 'severity': severity, 'message': str(message).strip()}


# The code of a node whose checks did not run, as the verify role gives it.
UNREACHED_CODE = 'verify-node-not-run'
# What the doctor says of a node it did not reach when no group report says it (the plan was not probed).
NOT_REACHED = ('the doctor did not reach %s (unreachable, or a task failed there). Fix: check that it is up and '
               'answers SSH (`ansible %s -m ansible.builtin.ping`)')


def findings(group_reports=(), problems=(), unreached=(), secrets=()):
    """What looks wrong, once each (by host and code), in order: first the problems of the other checks (``problems``:
    ``_problems`` dicts, e.g. the preflight's plan, the SGLang version), then the hosts in ``unreached`` (with what to
    check, under the verify role's code for a node whose checks did not run), then each group's failures and warnings
    as the verify role judged them (``_verify.group_reports``).
    Each message is redacted (``secrets``, and what looks like one).
    """
    out = []
    seen = set()

    def add(item):
        key = (item['host'], item['code'])
        if key not in seen:
            seen.add(key)
            item['message'] = redact(item['message'], secrets)
            out.append(item)

    for item in problems or ():
        hosts = item.get('hosts') or [item.get('where')]
        for host in hosts:
            add(finding(host, item.get('code') or 'problem', item.get('message') or item.get('what') or '',
                        item.get('severity', 'error')))
    # A node the doctor did not reach: its own sentence, which says what to check.
    for host in unreached or ():
        add(finding(host, UNREACHED_CODE, NOT_REACHED % (host, host)))
    for report in group_reports or ():
        for item in report.get('failures') or ():
            add(finding(item.get('host'), item.get('code'), _with_check(item)))
        for item in report.get('warnings') or ():
            add(finding(item.get('host'), item.get('code'), _with_check(item), 'warning'))
    return out


def _with_check(item):
    reason = item.get('reason') or ''
    return '%s: %s' % (item['check'], reason) if item.get('check') else reason


def format_findings(items, tarball=None):
    """The short list the doctor ends with: one numbered line per finding, ``host: message [code]``."""
    items = list(items or ())
    lines = []
    if tarball:
        lines.append('doctor tarball: %s' % tarball)
    if not items:
        lines.append('Nothing looks wrong.')
        return '\n'.join(lines)
    lines.append('%d thing%s look%s wrong:' % (len(items), '' if len(items) == 1 else 's', 's' if len(items) == 1 else ''))
    for number, item in enumerate(items, 1):
        mark = ' (warning)' if item.get('severity') == 'warning' else ''
        where = item.get('host') or 'cluster'
        lines.append('  %d. %s%s: %s [%s]' % (number, where, mark, item['message'], item['code']))
    return '\n'.join(lines)
