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

Then the values that SGLang's parser accepts but SGLang itself fails on, at start-up or once the model is loaded
(``_value_checks``, each written from SGLang 0.5.23's code, cited there): ``mem-fraction-static`` outside (0, 1),
log levels that Python's logging or uvicorn do not know, ports outside 1-65535, the flags that crash together
with the API key the role always sets (``tokenizer-worker-num`` above 1, ``grpc-port``), TLS flags without their
pair, and a few more.

Every problem is a dict of ``_problems.problem`` with a stable code (``sglang-unknown-flag``, ``sglang-bad-choice``,
...) and the variable ``sglang_server_args['<key as written>']``; deprecated flags that still work are warnings.
``build_argv`` and ``launch_argv`` raise ``_problems.ProblemsError`` with every problem at once.

Secrets never appear in an argv built here: SGLang 0.5.23 reads ``--api-key`` from its command line
or from the YAML file of ``--config`` only (no environment variable), so ``launch_argv`` takes the path
of such a file (``config_file``) and never the key itself.
"""

from __future__ import annotations

import difflib
import json
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import (
    ProblemsError,
    errors,
    problem,
    warning,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang_catalog import (
    ALIASES,
    FLAGS,
    SGLANG_VERSION,
)

VAR_ARGS = 'sglang_server_args'
SUBJECT_ARGS = '%s (checked against SGLang %s)' % (VAR_ARGS, SGLANG_VERSION)
SUBJECT_LAUNCH = 'The SGLang launch command (checked against SGLang %s)' % SGLANG_VERSION

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
    'revision': 'sglang_server_model_revision (preflight pins it to a commit; the staging role stages that commit)',
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

# Level names SGLang 0.5.23 can start with. prepare_server_args (sglang/srt/server_args.py) and configure_logger
# (sglang/srt/utils/common.py) call logging.basicConfig(level=getattr(logging, log_level.upper())): only the names of
# Python's logging levels are attributes (--log-level trace dies there, AttributeError).
PYTHON_LOG_LEVELS = ('critical', 'fatal', 'error', 'warn', 'warning', 'info', 'debug', 'notset')
# The HTTP server gets --log-level-http, else --log-level: launch_server in sglang/srt/entrypoints/http_server.py
# builds uvicorn.Config(log_level=log_level_http or log_level), and uvicorn's Config.configure_logging reads
# LOG_LEVELS[log_level.lower()] (uvicorn/config.py): a KeyError for any other name, once the model is loaded.
# Only --enable-http2 hands the level to Granian instead.
UVICORN_LOG_LEVELS = ('critical', 'error', 'warning', 'info', 'debug', 'trace')

# Flags that must be at least 1 in SGLang 0.5.23, with where it checks. tokenizer-worker-num above 1 is refused
# separately (it crashes with the API key).
MINIMUM_ONE = {
    'tokenizer-worker-num': 'check_server_args (sglang/srt/arg_groups/validation_hook.py) asserts it is >= 1',
    'asr-max-buffer-seconds': 'handle_asr_validation (sglang/srt/arg_groups/serving_hook.py) wants it positive',
    'asr-max-concurrent-sessions': 'handle_asr_validation (sglang/srt/arg_groups/serving_hook.py) wants it positive',
}

# TLS flags that SGLang refuses without --ssl-certfile and --ssl-keyfile: handle_ssl_validation in
# sglang/srt/arg_groups/serving_hook.py (run at start-up, before the model is loaded).
TLS_PAIR = ('ssl-certfile', 'ssl-keyfile')
NEEDS_TLS_PAIR = ('ssl-ca-certs', 'enable-ssl-refresh')

_INT = re.compile(r'^[+-]?\d+$')
_HUMAN_INT = re.compile(r'^(\d+(\.\d+)?(k|M|G|T)|\d+(Ki|Mi|Gi|Ti)|[+-]?\d+)$')
_JSON_TYPES = ('loads', 'json_list_type')
_TYPE_WORDS = {'int': 'integer', 'human_readable_int': 'integer', 'float': 'number'}


def _dashed(names):
    return ', '.join('--' + n for n in names)


def _kind(value):
    """A value's kind in the words of YAML (never a Python or Ansible type name)."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, (int, float)):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, dict):
        return 'a dict'
    if isinstance(value, (list, tuple)):
        return 'a list'
    return 'a value of another kind'


def _var(key):
    """The variable a problem of one key names: sglang_server_args['<key as written>']."""
    return '%s[%r]' % (VAR_ARGS, key)


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


def port_flags(catalog=None):
    """The flags whose value is a TCP port: ``port`` and every integer ``*-port`` of the catalog."""
    catalog = FLAGS if catalog is None else catalog
    return sorted(name for name, entry in catalog.items()
                  if (name == 'port' or name.endswith('-port')) and entry.get('type') == 'int')


def _abbreviation_of(name, catalog, aliases):
    """The long options that argparse would expand ``--name`` to (a prefix match), sorted."""
    return sorted(n for n in _all_names(catalog, aliases) if n.startswith(name) and n != name)


def _unknown(key, name, catalog, aliases):
    var = _var(key)
    name = name.replace('_', '-') if name.replace('_', '-') in RENAMES else name
    if name in RENAMES:
        what, new = RENAMES[name]
        valid = [n for n in new if n in catalog]
        return problem('sglang-renamed-flag', var, '--%s is not a flag of SGLang %s: it %s %s' % (
            name, SGLANG_VERSION, what, _dashed(valid)), 'use %s in %s' % (' or '.join(repr(n) for n in valid), VAR_ARGS))
    prefixed = _abbreviation_of(name, catalog, aliases) if len(name) >= 2 else []
    if len(prefixed) == 1:
        target, _negated, _how = lookup(prefixed[0], catalog, aliases)
        if target in OWNED_FLAGS:
            return problem('sglang-owned-flag', var, '--%s is an abbreviation of --%s, which the role sets from %s' % (
                name, target, OWNED_FLAGS[target]), 'remove it from %s' % VAR_ARGS)
        return problem('sglang-abbreviation', var, '--%s is only an abbreviation of --%s (argparse expands it while no '
                       'other flag starts the same way)' % (name, prefixed[0]), "write '%s'" % prefixed[0])
    near = suggest(name, catalog, aliases)
    if not near and 1 < len(prefixed) <= 6:
        near = prefixed
    what = '--%s is not a flag of SGLang %s' % (name, SGLANG_VERSION)
    if near:
        return problem('sglang-unknown-flag', var, what, 'did you mean %s?' % ' or '.join(repr(n) for n in near))
    return problem('sglang-unknown-flag', var, what, 'use one that `python -m sglang.launch_server --help` lists')


def _scalar_problem(key, name, entry, value):
    """What is wrong with one value of a valued flag (a problem dict), or None."""
    var = _var(key)
    if isinstance(value, bool) or value is None:
        return problem('sglang-not-a-switch', var, '--%s takes a value, not %s' % (
            name, {True: 'true', False: 'false', None: 'null (an empty value)'}[value]),
            'give it a value, or remove the key to leave it unset')
    ftype = entry.get('type')
    if isinstance(value, (dict, list)):
        if ftype in _JSON_TYPES or (isinstance(value, dict) and ftype in ('str', None)):
            return None  # passed as compact JSON
        return problem('sglang-bad-type', var, '--%s takes one %s, not %s' % (
            name, _TYPE_WORDS.get(ftype, 'value'), _kind(value)), 'give a single value')
    if not isinstance(value, (str, int, float)):
        return problem('sglang-bad-type', var, '--%s: %s is not a value it takes' % (name, _kind(value)),
                       'give a string or a number')
    text = str(value).strip()
    choices = entry.get('choices')
    if choices is not None:
        if text in [str(c) for c in choices]:
            return None
        valid = ', '.join(str(c) for c in choices)
        hint = CHOICE_HINTS.get(name, {}).get(text)
        if hint:
            return problem('sglang-bad-choice', var, '--%s %s is not a choice of SGLang %s (valid: %s)' % (
                name, text, SGLANG_VERSION, valid), 'use %s' % ' or '.join(hint))
        return problem('sglang-bad-choice', var, '--%s %s is not one of its choices: %s' % (name, text, valid),
                       'use one of them')
    if ftype == 'int' and not (isinstance(value, int) or _INT.match(text)):
        return problem('sglang-bad-type', var, '--%s takes an integer, not %r' % (name, value), 'write a whole number')
    if ftype == 'human_readable_int' and not (isinstance(value, int) or _HUMAN_INT.match(text)):
        return problem('sglang-bad-type', var, '--%s takes an integer, not %r' % (name, value),
                       'write a whole number; the suffixes k, M, G, T, Ki, Mi, Gi, Ti are allowed')
    if ftype == 'float' and not isinstance(value, (int, float)):
        try:
            float(text)
        except ValueError:
            return problem('sglang-bad-type', var, '--%s takes a number, not %r' % (name, value), 'write a number')
    if ftype in _JSON_TYPES and isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return problem('sglang-bad-type', var, '--%s takes JSON, not %r' % (name, value),
                           'write a YAML dict or list, or a JSON string')
    return None


def _value_problems(key, name, entry, value, negated):
    var = _var(key)
    kind = entry['value']
    if kind == 'none':
        if isinstance(value, bool):
            if negated and value is False:
                return [problem('sglang-double-negative', var, 'false for a --no-X switch is a double negative',
                                "write '%s: true' instead" % name)]
            return []
        return [problem('sglang-switch-with-value', var, '--%s is a switch and takes no value (got %r)' % (
            'no-' + name if negated else name, value), 'write true to pass it, false to leave it out')]
    if kind == 'optional' and value is True:
        return []
    if kind in ('list', 'any'):
        if isinstance(value, list) and entry.get('type') not in _JSON_TYPES:
            if not value and kind == 'list':
                return [problem('sglang-empty-list', var, '--%s takes one or more values, got an empty list' % name,
                                'give values or remove the key')]
            return [p for p in (_scalar_problem(key, name, entry, v) for v in value) if p]
    found = _scalar_problem(key, name, entry, value)
    return [found] if found else []


def _resolve(args, catalog, aliases):
    """(problems, resolved): resolved is a list of (canonical, negated, value, key) in input order."""
    if args is None:
        return [], []
    if not isinstance(args, dict):
        return [problem('sglang-args-not-dict', VAR_ARGS, 'must be a dict of flag names (without the leading dashes) '
                        'to values, not %s' % _kind(args), 'write e.g. {mem-fraction-static: 0.8}')], []
    problems = []
    resolved = []
    seen = {}
    for key, value in args.items():
        var = _var(key)
        if not isinstance(key, str) or not key.strip():
            problems.append(problem('sglang-bad-key', var, 'a flag name must be a non-empty string',
                                    'write the flag name without its leading dashes'))
            continue
        name = key.strip()
        if name.startswith('-'):
            problems.append(problem('sglang-dashes-in-key', var, 'the key carries the leading dashes of the flag',
                                    "write '%s'" % name.lstrip('-')))
            name = name.lstrip('-')
        if '=' in name or ' ' in name:
            problems.append(problem('sglang-value-in-key', var, 'the key carries a value',
                                    "write the value as the dict value: '%s: <value>'" % re.split(r'[= ]', name)[0]))
            continue
        canonical, negated, how = lookup(name, catalog, aliases)
        if canonical is None and '_' in name:
            canonical, negated, how = lookup(name.replace('_', '-'), catalog, aliases)
            if canonical is not None:
                problems.append(problem('sglang-underscore-key', var, "SGLang's command line spells it with dashes",
                                        "write '%s'" % name.replace('_', '-')))
                continue
        if canonical is None:
            problems.append(_unknown(key, name, catalog, aliases))
            continue
        if canonical in OWNED_FLAGS:
            spelled = '--' + canonical if how == 'flag' else '--%s (%s alias of --%s)' % (
                name, 'a deprecated' if name in DEPRECATED_ALIASES else 'an', canonical)
            problems.append(problem('sglang-owned-flag', var, '%s is set by the role from %s' % (
                spelled, OWNED_FLAGS[canonical]), 'remove it from %s' % VAR_ARGS))
            continue
        if canonical in SECRET_FLAGS:
            problems.append(problem('sglang-secret-flag', var, '--%s carries %s, which on a command line shows in ps and '
                                    '/proc; it cannot be passed through %s' % (
                                        canonical, SECRET_FLAGS[canonical], VAR_ARGS), 'remove it'))
            continue
        if canonical in seen:
            problems.append(problem('sglang-flag-twice', var, '%r and %r both set --%s' % (seen[canonical], key, canonical),
                                    'keep one of them'))
            continue
        seen[canonical] = key
        found = _value_problems(key, canonical, catalog[canonical], value, negated)
        problems.extend(found)
        if not found:
            resolved.append((canonical, negated, value, key))
    problems.extend(_value_checks(resolved, catalog))
    return problems, resolved


def _number(value):
    """A value that passed the type checks, as an int or a float."""
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    return int(text) if _INT.match(text) else float(text)


def _value_checks(resolved, catalog):
    """Problems with values SGLang's parser accepts and SGLang itself then fails on (only well-typed values)."""
    given = dict((name, (value, key)) for name, negated, value, key in resolved if not negated)
    problems = []

    # mem-fraction-static: no check at parse time (Optional[float] in sglang/srt/arg_groups/fields/schedule.py);
    # KVCacheConfigurator._profile_available_bytes (sglang/srt/mem_cache/kv_cache_configurator.py) keeps
    # pre_model_load_memory * (1 - mem_fraction_static) free and gives the rest to the KV pool: 0 or less leaves
    # nothing ("Loaded weights leave no GPU memory for the KV cache"), 1 or more (85 meant as a percentage) asks
    # for more memory than there is, after the weights are loaded.
    if 'mem-fraction-static' in given:
        value, key = given['mem-fraction-static']
        fraction = _number(value)
        if not 0 < fraction < 1:
            fix = ('write %g (a fraction of the memory, not a percentage)' % (fraction / 100.0) if 1 < fraction < 100
                   else 'write a fraction between 0 and 1; 0.80-0.85 on a DGX Spark, whose memory the OS shares')
            problems.append(problem('sglang-out-of-range', _var(key), '--mem-fraction-static %s is not between 0 and 1 '
                                    '(SGLang sizes the KV cache from it once the weights are loaded, and fails)'
                                    % (value,), fix))

    uvicorn_gets = 'log-level-http' if 'log-level-http' in given else 'log-level'
    http2 = bool(given.get('enable-http2', (False,))[0])
    if 'log-level' in given:
        value, key = given['log-level']
        level = str(value).strip().lower()
        if level not in PYTHON_LOG_LEVELS:
            problems.append(problem('sglang-bad-value', _var(key), '--log-level %s is not a level of Python\'s logging, '
                                    'and SGLang starts with getattr(logging, level.upper())' % (value,),
                                    'use one of %s' % ', '.join(n for n in PYTHON_LOG_LEVELS if n in UVICORN_LOG_LEVELS)))
        elif uvicorn_gets == 'log-level' and not http2 and level not in UVICORN_LOG_LEVELS:
            problems.append(problem('sglang-bad-value', _var(key), "--log-level %s is not a level uvicorn knows (%s), and "
                                    "SGLang hands it to uvicorn when --log-level-http is not set" % (
                                        value, ', '.join(UVICORN_LOG_LEVELS)),
                                    'use one of %s' % ', '.join(n for n in PYTHON_LOG_LEVELS if n in UVICORN_LOG_LEVELS)))
    if 'log-level-http' in given and not http2:
        value, key = given['log-level-http']
        if str(value).strip().lower() not in UVICORN_LOG_LEVELS:
            problems.append(problem('sglang-bad-value', _var(key), '--log-level-http %s is not a level uvicorn knows, and '
                                    'SGLang hands it to uvicorn once the model is loaded' % (value,),
                                    'use one of %s' % ', '.join(UVICORN_LOG_LEVELS)))

    # Every port must be one a socket can listen on or connect to. SGLang checks --grpc-port itself
    # (handle_deprecated_args in sglang/srt/arg_groups/serving_hook.py: 1-65535) and the ports it waits for
    # (wait_port_available in sglang/srt/utils/network.py: 0-65535); the others go to bind() or torch.distributed,
    # which refuse them at run time. Port 0 would be a random port no other node can know.
    for name in port_flags(catalog):
        if name in given:
            value, key = given[name]
            if not 1 <= _number(value) <= 65535:
                problems.append(problem('sglang-out-of-range', _var(key), '--%s %s is not a TCP port' % (name, value),
                                        'use a port between 1 and 65535'))

    for name, where in MINIMUM_ONE.items():
        if name in given:
            value, key = given[name]
            if _number(value) < 1:
                problems.append(problem('sglang-out-of-range', _var(key), '--%s %s is below 1: SGLang\'s %s' % (
                    name, value, where), 'use 1 or more, or remove the key'))

    # The role always passes an API key (in the --config file). Two features crash with one in SGLang 0.5.23:
    # - more than one tokenizer worker: init_multi_tokenizer in sglang/srt/entrypoints/http_server.py asserts
    #   `get_serving().api_key is None` ("API key is not supported in multi-tokenizer mode") in every HTTP worker,
    #   once the model is loaded;
    # - the native gRPC server: handle_deprecated_args in sglang/srt/arg_groups/serving_hook.py raises "--grpc-port
    #   is incompatible with --api-key/--admin-api-key" at start-up (the listener bypasses the HTTP auth).
    # --enable-http-worker-reuseport needs --tokenizer-worker-num above 1 (handle_ssl_validation, same file).
    if 'tokenizer-worker-num' in given:
        value, key = given['tokenizer-worker-num']
        if _number(value) > 1:
            problems.append(problem('sglang-crashes-with-api-key', _var(key), '--tokenizer-worker-num %s: SGLang %s '
                                    'asserts that no API key is set when it runs more than one tokenizer worker, and '
                                    'the role always sets one (sglang_server_api_key)' % (value, SGLANG_VERSION),
                                    'remove the key (one tokenizer worker)'))
    if 'grpc-port' in given:
        problems.append(problem('sglang-crashes-with-api-key', _var(given['grpc-port'][1]), '--grpc-port: SGLang %s '
                                'refuses its native gRPC server together with an API key (the gRPC listener bypasses '
                                'the HTTP authentication), and the role always sets one (sglang_server_api_key)'
                                % SGLANG_VERSION, 'remove the key; clients use the HTTP API'))
    if given.get('enable-http-worker-reuseport', (False,))[0]:
        problems.append(problem('sglang-crashes-with-api-key', _var(given['enable-http-worker-reuseport'][1]),
                                '--enable-http-worker-reuseport needs --tokenizer-worker-num above 1, which SGLang %s '
                                'refuses together with the API key the role always sets' % SGLANG_VERSION,
                                'remove the key'))

    # handle_ssl_validation (sglang/srt/arg_groups/serving_hook.py): each of --ssl-certfile and --ssl-keyfile needs
    # the other; --ssl-ca-certs and --enable-ssl-refresh need both.
    for name in TLS_PAIR:
        other = TLS_PAIR[1 - TLS_PAIR.index(name)]
        if name in given and other not in given:
            problems.append(problem('sglang-needs-flag', _var(given[name][1]), '--%s without --%s: SGLang refuses to '
                                    'start' % (name, other), "add '%s' (the path on every node)" % other))
    for name in NEEDS_TLS_PAIR:
        if name in given and given[name][0] is not False and not all(n in given for n in TLS_PAIR):
            problems.append(problem('sglang-needs-flag', _var(given[name][1]), '--%s needs --ssl-certfile and '
                                    '--ssl-keyfile: SGLang refuses to start' % name,
                                    "add 'ssl-certfile' and 'ssl-keyfile', or remove the key"))

    # handle_other_validations (sglang/srt/arg_groups/serving_hook.py): "--default-chat-template-kwargs must decode
    # to a JSON object".
    if 'default-chat-template-kwargs' in given:
        value, key = given['default-chat-template-kwargs']
        decoded = json.loads(value) if isinstance(value, str) else value
        if not isinstance(decoded, dict):
            problems.append(problem('sglang-bad-value', _var(key), '--default-chat-template-kwargs must be a JSON object '
                                    '(a dict), not %s' % _kind(decoded),
                                    'write a YAML dict, e.g. {enable_thinking: false}'))

    # check_server_args (sglang/srt/arg_groups/validation_hook.py): "served_model_name cannot contain a colon", the
    # separator of 'model:adapter' (LoRA). Checked at start-up, once the model's config is read.
    if 'served-model-name' in given:
        value, key = given['served-model-name']
        if ':' in str(value):
            problems.append(problem('sglang-bad-value', _var(key), "--served-model-name %s contains ':', which SGLang "
                                    "keeps for 'model:adapter' (LoRA)" % (value,),
                                    "write it without ':', e.g. %s" % str(value).replace(':', '-')))
    return problems


def resolve_server_args(args, catalog=None, aliases=None):
    """(problems, resolved): resolved is a list of (canonical, negated, value) in input order, problems are dicts."""
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    problems, resolved = _resolve(args, catalog, aliases)
    return problems, [(name, negated, value) for name, negated, value, _key in resolved]


def server_args_warnings(args, catalog=None, aliases=None):
    """Flags that still work in the pinned SGLang but are deprecated: warning problems, each with its replacement."""
    catalog = FLAGS if catalog is None else catalog
    aliases = ALIASES if aliases is None else aliases
    found = []
    for key in (args or {}) if isinstance(args, dict) else ():
        name = str(key).lstrip('-')
        canonical, _negated, _how = lookup(name, catalog, aliases)
        if canonical is None:
            continue
        if name in DEPRECATED_ALIASES:
            found.append(warning('sglang-deprecated-alias', _var(key), '--%s is a deprecated alias' % name,
                                 "write '%s'" % DEPRECATED_ALIASES[name]))
        elif catalog[canonical].get('deprecated_for'):
            found.append(warning('sglang-deprecated-flag', _var(key), '--%s is deprecated in SGLang %s' % (
                canonical, SGLANG_VERSION), 'use %s' % catalog[canonical]['deprecated_for']))
    return found


def validate_server_args(args, catalog=None, aliases=None):
    """Every problem of a ``sglang_server_args`` dict: errors, then the deprecation warnings of the keys without an
    error (empty: all is well)."""
    problems = resolve_server_args(args, catalog, aliases)[0]
    refused = set(item['variable'] for item in problems)
    return problems + [item for item in server_args_warnings(args, catalog, aliases) if item['variable'] not in refused]


def _render(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(',', ':'), sort_keys=True)
    return str(value).strip()


def _argv(resolved, catalog):
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


def build_argv(args, catalog=None, aliases=None):
    """The command-line tokens for a valid ``sglang_server_args`` dict, sorted by flag name.

    Switches: ``true`` -> ``--X``; ``false`` -> nothing, or ``--no-X`` for a --X/--no-X switch.
    Several values (nargs '+' or '*'): ``--X a b c`` (argparse keeps only the last of repeated --X).
    Raises ProblemsError (a ValueError) with every problem when the dict is not valid; warnings do not stop it.
    """
    catalog = FLAGS if catalog is None else catalog
    problems, resolved = resolve_server_args(args, catalog, aliases)
    if errors(problems):
        raise ProblemsError(errors(problems), SUBJECT_ARGS)
    return _argv(resolved, catalog)


def _integer(value, variable, what, problems, minimum=1):
    """The integer of a launch_argv parameter, or None after appending its problem."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not _INT.match(str(value).strip()):
        problems.append(problem('sglang-bad-type', variable, '%s must be an integer, not %r' % (what, value),
                                'write a whole number'))
        return None
    number = int(str(value).strip())
    if number < minimum:
        problems.append(problem('sglang-out-of-range', variable, '%s must be at least %d, not %d' % (what, minimum, number),
                                'use %d or more' % minimum))
        return None
    return number


_DIST_INIT_ADDR = re.compile(r'^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(\d{1,5})$')


def launch_argv(model, nnodes=1, node_rank=0, dist_init_addr=None, tp_size=1, host='127.0.0.1', port=30000,
                extra=None, config_file=None, catalog=None, aliases=None, revision=None):
    """The full argument list of ``python -m sglang.launch_server`` for one node (the program not included).

    The one place that writes the flags the role owns (OWNED_FLAGS): --model-path, --revision (a Hugging Face
    model's pinned commit, when given), --tp-size, --nnodes, --node-rank and --dist-init-addr (these three only when
    nnodes > 1: a one-node group, such as a data-parallel replica behind the router, runs without them, as SGLang's own
    single-node defaults; SGLang needs --dist-init-addr whenever --nnodes > 1),
    --host, --port and --config (the YAML file that carries the API key, when given); then the validated extras of
    ``sglang_server_args``, sorted.
    Raises ProblemsError (a ValueError) with every problem.
    """
    problems = []
    if not isinstance(model, str) or not model.strip():
        problems.append(problem('sglang-bad-model', 'sglang_server_model', 'must be a Hugging Face model id or a path, '
                                'not %r' % (model,), 'set it, e.g. Qwen/Qwen2.5-7B-Instruct'))
    n = _integer(nnodes, '--nnodes', '--nnodes (the size of the inventory group)', problems)
    rank = _integer(node_rank, 'spark_node_rank', '--node-rank', problems, minimum=0)
    tp = _integer(tp_size, 'sglang_server_tp_size', '--tp-size', problems)
    p = _integer(port, 'sglang_server_port', '--port', problems)
    if p is not None and p > 65535:
        problems.append(problem('sglang-out-of-range', 'sglang_server_port', '--port %d is not a TCP port' % p,
                                'use a port between 1 and 65535'))
    if not isinstance(host, str) or not host.strip():
        problems.append(problem('sglang-bad-host', 'sglang_server_host', 'must be an address to listen on, not %r' % (
            host,), 'use 0.0.0.0 (every address) or one address of the node'))
    if n is not None and rank is not None and rank >= n:
        problems.append(problem('sglang-out-of-range', 'spark_node_rank', '--node-rank %d is out of range for --nnodes %d '
                                '(ranks are 0 .. %d)' % (rank, n, n - 1), 'use a rank between 0 and %d' % (n - 1)))
    if n is not None and n > 1:
        match = _DIST_INIT_ADDR.match(dist_init_addr.strip()) if isinstance(dist_init_addr, str) else None
        if match is None:
            problems.append(problem('sglang-bad-dist-init-addr', '--dist-init-addr', 'must be HEAD_ADDRESS:PORT (IPv6 in '
                                    'brackets) when --nnodes > 1, not %r' % (dist_init_addr,),
                                    "pass the cluster plan's dist_init_addr"))
        elif not 1 <= int(match.group(2)) <= 65535:
            problems.append(problem('sglang-out-of-range', 'spark_dist_init_port', 'the port of --dist-init-addr %s is not '
                                    'a TCP port' % dist_init_addr.strip(), 'use a port between 1 and 65535'))
    if config_file is not None and (not isinstance(config_file, str)
                                    or not config_file.lower().endswith(('.yaml', '.yml'))):
        problems.append(problem('sglang-bad-config-file', '--config', 'must be the path of a .yaml or .yml file (SGLang '
                                'refuses others), not %r' % (config_file,), 'name the file *.yaml'))
    extra_problems, resolved = resolve_server_args(extra, catalog, aliases)
    extra_errors = errors(extra_problems)
    problems.extend(extra_errors)
    if tp is not None and n is not None and not extra_errors:
        pp_value = dict((name, value) for name, _neg, value in resolved).get('pp-size', 1)
        pp = _integer(pp_value, "%s['pp-size']" % VAR_ARGS, '--pp-size', problems)
        if pp is not None and (tp * pp) % n:
            problems.append(problem('sglang-tp-pp-not-divisible', 'sglang_server_tp_size', '--tp-size %d x --pp-size %d '
                                    'must be divisible by --nnodes %d' % (tp, pp, n),
                                    'use a --tp-size whose product with --pp-size is a multiple of %d' % n))
    if revision is not None and not (isinstance(revision, str) and re.match(r'^[0-9a-f]{40}$', revision)):
        problems.append(problem('sglang-bad-revision', 'sglang_server_model_revision', '--revision must be the commit '
                                'hash the plan pinned, not %r' % (revision,), "pass the cluster plan's model.commit"))
    if problems:
        raise ProblemsError(problems, SUBJECT_LAUNCH)
    argv = ['--model-path', model.strip()] + (['--revision', revision] if revision else [])
    argv += ['--tp-size', str(tp)]
    if n > 1:
        argv += ['--nnodes', str(n), '--node-rank', str(rank), '--dist-init-addr', dist_init_addr.strip()]
    argv += ['--host', host.strip(), '--port', str(p)]
    if config_file is not None:
        argv += ['--config', config_file]
    return argv + _argv(resolved, FLAGS if catalog is None else catalog)


def plan_launch_argv(plan, host, config_file=None):
    """The launch_server arguments of ``host``'s rank, from the cluster plan (``spark_cluster_plan``).

    The one mapping from the plan to ``launch_argv``, shared by the systemd unit of the sglang_server role and the
    Kubernetes objects of the kubernetes role, so that both start every rank with the same flags: the group's model
    (its pinned commit), ``--nnodes``, the node's ``--node-rank``, the head's ``--dist-init-addr``, ``--tp-size``,
    ``--host``, ``--port``, ``--config`` (the file that carries the API key) and the group's ``server_args``, with
    ``enable-metrics`` first when the plan gives the group a metrics target, ``ssl-certfile``/``ssl-keyfile`` when it
    gives the group TLS files (the group's own values win).
    Raises KeyError for a host outside the plan and ProblemsError (a ValueError) with every problem of the flags.
    """
    node = plan['nodes'][host]
    group = plan['groups'][node['group']]
    extra = {'enable-metrics': True} if group.get('metrics') else {}
    if group.get('tls'):
        extra.update({'ssl-certfile': group['tls']['certfile'], 'ssl-keyfile': group['tls']['keyfile']})
    extra.update(group.get('server_args') or {})
    return launch_argv(group['model']['path'], nnodes=group['nnodes'], node_rank=node['node_rank'],
                       dist_init_addr=group['dist_init_addr'], tp_size=group['tp_size'], host=group['host'],
                       port=group['port'], extra=extra, config_file=config_file,
                       revision=group['model'].get('commit') or None)


# ---------------------------------------------------------------------------------------------------------------------
# The SGLang a node really runs
# ---------------------------------------------------------------------------------------------------------------------

VAR_OTHER_VERSION = 'sglang_server_allow_other_version'
# Prints the installed sglang's version without importing sglang (its import pulls in torch and takes seconds).
VERSION_PROBE = "import importlib.metadata as m; print(m.version('sglang'))"
REGENERATE = ('python3 scripts/sglang_flag_catalog.py in a checkout of this collection, with that SGLang version pinned '
              'in the script, then review the diff of plugins/module_utils/_sglang_catalog.py')


def version_problems(found, where, runtime, allow_other=False):
    """Problems when the SGLang of a node (``found``, the probe's output) is not the version the flag catalog describes.

    Another version may lack flags the catalog knows, or reject values it accepts, on every node at once: an error,
    unless ``allow_other`` (``sglang_server_allow_other_version``) turns it into a warning.
    """
    found = (found or '').strip().splitlines()[-1].strip() if (found or '').strip() else ''
    if found == SGLANG_VERSION:
        return []
    source = 'the image' if runtime == 'container' else 'the native Python'
    if not re.match(r'^\d+(\.\d+)+\S*$', found):
        what = ('%s of %s has no SGLang the collection can read (importlib.metadata said %r)'
                % (source, where, found or 'nothing'))
        return [problem('sglang-version-unknown', 'sglang_server_image' if runtime == 'container'
                        else 'sglang_server_native_python', what,
                        'point it at an SGLang %s install, or see why the probe failed on %s' % (SGLANG_VERSION, where),
                        where=where)]
    what = ('%s of %s runs SGLang %s, but the flags are checked against SGLang %s: a flag or value that %s changed '
            'would stop every node at start-up' % (source, where, found, SGLANG_VERSION, found))
    fix = ('run SGLang %s, or regenerate the catalog for %s (%s); set %s: true to go on anyway'
           % (SGLANG_VERSION, found, REGENERATE, VAR_OTHER_VERSION))
    make = warning if allow_other else problem
    return [make('sglang-version-mismatch', VAR_OTHER_VERSION, what, fix, where=where)]
