# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""SGLang's router (SMG) in front of several SGLang groups: thin wrappers around plugins/module_utils/_router.py.

The docs of each filter live beside this file in ``<filter>.yml`` (``ansible-doc -t filter dgxspark.sglang.router_workers``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter.cluster import cluster_inputs, plain
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, errors, format_problems
from ansible_collections.dgxspark.sglang.plugins.module_utils._router import (
    SUBJECT,
    router_argv as _router_argv,
    router_workers as _router_workers,
)

VAR_GPUS = 'preflight_expected_gpus_per_node'


def router_workers(hostvars, groups, names, router_address=None, router_ports=()):
    """Filter: ``{workers, models, problems, message}`` of the SGLang groups NAMES (inventory groups) behind the router."""
    descriptions = []
    for name in plain(names) or []:
        hosts = list(groups.get(name) or [])
        first = hostvars[hosts[0]] if hosts else {}
        descriptions.append({'cluster': str(name), 'hosts': cluster_inputs(hostvars, hosts),
                             'gpus_per_node': plain(first.get(VAR_GPUS, 1)) if hosts else 1})
    result = _router_workers(descriptions, plain(router_address), [int(p) for p in plain(router_ports) or []])
    bad = errors(result['problems'])
    result['message'] = format_problems(bad, SUBJECT) if bad else ''
    return result


def router_argv(workers, host, port, policy, metrics_host, metrics_port, log_level='info', extra=None):
    """Filter: the arguments of ``smg launch`` for WORKERS (from router_workers), the API key left out."""
    try:
        return _router_argv(plain(workers), plain(host), plain(port), plain(policy), plain(metrics_host),
                            plain(metrics_port), plain(log_level), plain(extra))
    except ProblemsError as exc:
        raise AnsibleFilterError(format_problems(exc.problems, SUBJECT)) from None


class FilterModule:
    """dgxspark.sglang router."""

    def filters(self):
        return {'router_workers': router_workers, 'router_argv': router_argv}
