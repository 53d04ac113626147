# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""SGLang launch_server flags: validation against SGLang's real parser, and the argv of one node.

Thin wrappers over ``plugins/module_utils/_sglang.py`` (all the knowledge lives there): problems (dicts of
``_problems.problem``, each with a stable code) become one AnsibleFilterError that lists them all; deprecated but
working flags become warnings. The docs of each filter live beside this file in ``<filter>.yml``
(``ansible-doc -t filter dgxspark.sglang.<filter>``).
"""

from __future__ import annotations

import base64
import json

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang_health import (
    advertised_address_problems,
    environ_vars,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import errors, format_problems, warnings
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import (
    VERSION_PROBE,
    build_argv,
    launch_argv,
    plan_launch_argv,
    server_args_warnings,
    validate_server_args,
    version_problems,
)

display = Display()


def _warn(name, args):
    for item in server_args_warnings(args):
        display.warning('dgxspark.sglang.%s [%s]: %s' % (name, item['code'], item['message']))


def sglang_args_problems(args):
    """Every problem with a sglang_server_args dict, errors and warnings, as problem dicts (empty list: valid)."""
    return validate_server_args(args)


def sglang_args(args):
    """The launch_server tokens for a sglang_server_args dict; fails listing every problem."""
    try:
        argv = build_argv(args)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    _warn('sglang_args', args)
    return argv


def sglang_launch_argv(model, nnodes=1, node_rank=0, dist_init_addr=None, tp_size=1, host='127.0.0.1', port=30000,
                       extra=None, config_file=None, revision=None):
    """The full launch_server argument list of one node; fails listing every problem."""
    try:
        argv = launch_argv(model, nnodes=nnodes, node_rank=node_rank, dist_init_addr=dist_init_addr, tp_size=tp_size,
                           host=host, port=port, extra=extra, config_file=config_file, revision=revision or None)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    _warn('sglang_launch_argv', extra)
    return argv


def sglang_plan_argv(plan, host, config_file=None):
    """The launch_server arguments of one host's rank, from the cluster plan; fails listing every problem."""
    try:
        argv = plan_launch_argv(plan, host, config_file=config_file)
    except KeyError:
        raise AnsibleFilterError('sglang_plan_argv: %s is not a node of spark_cluster_plan (its nodes: %s). Fix: run '
                                 'the play on the hosts of the plan\'s group' % (host, ', '.join(sorted(plan['nodes']))))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    _warn('sglang_plan_argv', plan['groups'][plan['nodes'][host]['group']].get('server_args'))
    return argv


def sglang_advertised_address(plan, group, processes, environs):
    """Messages naming each node of ``group`` whose running SGLang advertises an address other than the plan's.

    ``processes``: the registered results of a loop over the group's hosts that found each rank's process
    (``docker inspect <service>`` for the container runtime, ``systemctl show --property MainPID --value`` for the
    native one); ``environs``: the registered results of slurping ``/proc/<MainPID>/environ`` (native runtime).
    """
    spec = plan['groups'][group]
    container = spec['runtime'] == 'container'
    slurped = {r['item']['item']: r.get('content') for r in (environs or {}).get('results', [])
               if isinstance(r.get('item'), dict) and not r.get('skipped') and not r.get('failed')}
    found = {}
    for result in (processes or {}).get('results', []):
        host, out = result['item'], (result.get('stdout') or '').strip()
        env = None
        if container and result.get('rc') == 0:
            try:
                state = json.loads(out)[0]
            except (ValueError, IndexError, KeyError, TypeError):
                state = None
            if state and state.get('State', {}).get('Running'):
                env = environ_vars(state.get('Config', {}).get('Env'))
        elif not container and host in slurped and slurped[host]:
            env = environ_vars(base64.b64decode(slurped[host]).decode('utf-8', 'replace'))
        found[host] = env
    expected = {host: {'node_rank': plan['nodes'][host]['node_rank'], 'host_ip': plan['nodes'][host]['host_ip']}
                for host in spec['hosts']}
    return advertised_address_problems(expected, found)


def sglang_version_probe(group):
    """The command that prints the SGLang version a group's runtime would run (native Python, or the image)."""
    if group['runtime'] == 'container':  # with the group's extra volumes, as the unit runs the image
        volumes = [arg for volume in group.get('container_volumes') or [] for arg in ('--volume', volume)]
        return ['docker', 'run', '--rm', '--network', 'none'] + volumes + ['--entrypoint', 'python3', group['image'],
                                                                           '-c', VERSION_PROBE]
    return [group['python'], '-c', VERSION_PROBE]


def sglang_version(found, host, runtime, allow_other=False):
    """The SGLang version a node runs (the probe's output); fails unless it is the catalog's, or warns when allowed."""
    problems = version_problems(found, host, runtime, allow_other=bool(allow_other))
    if errors(problems):
        raise AnsibleFilterError(format_problems(problems, 'SGLang on %s' % host))
    for item in warnings(problems):
        display.warning('dgxspark.sglang.sglang_version [%s]: %s' % (item['code'], item['message']))
    return (found or '').strip()


class FilterModule:
    """dgxspark.sglang SGLang flag filters."""

    def filters(self):
        return {
            'sglang_args': sglang_args,
            'sglang_advertised_address': sglang_advertised_address,
            'sglang_args_problems': sglang_args_problems,
            'sglang_launch_argv': sglang_launch_argv,
            'sglang_plan_argv': sglang_plan_argv,
            'sglang_version': sglang_version,
            'sglang_version_probe': sglang_version_probe,
        }
