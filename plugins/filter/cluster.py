# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster plan filters: thin wrappers around plugins/module_utils/_cluster.py.

The docs of each filter live beside this file in ``<filter>.yml`` (``ansible-doc -t filter dgxspark.sglang.cluster_plan``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import (
    INPUTS,
    check_description,
    nccl_settings,
    complete_plan,
    plan_memory_fit,
    plan_memory_reserve,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import twin_name
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import (
    ProblemsError,
    errors,
    format_problems,
)


def plain(value):
    """Ansible's templated values (tagged strings, lazy lists and dicts) as plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def cluster_inputs(hostvars, names):
    """Filter: the plan's inputs of each host in ``names``, read from ``hostvars`` (only those that are defined)."""
    hosts = []
    for name in names or []:
        host = hostvars[name]
        found, broken = {}, {}
        for var in INPUTS:
            try:
                if var in host:
                    found[var] = plain(host[var])
            except Exception as exc:  # an input that refers to an undefined variable; reported as a problem
                broken[var] = str(exc).splitlines()[0]
        if broken:
            found['__errors__'] = broken
        hosts.append({'name': str(name), 'vars': found})
    return hosts


def _result(problems, plan, subject):
    bad = errors(problems)
    return {'plan': plan, 'problems': problems, 'message': format_problems(bad, subject) if bad else ''}


def cluster_check(description):
    """Filter: ``{plan, problems, message, nccl_settings}`` for a cluster description; ``plan`` is null when a problem
    is an error. ``nccl_settings`` holds the NCCL inputs the probed step checks again against the RDMA devices."""
    description = plain(description)
    problems, plan = check_description(description)
    result = _result(problems, plan, 'The cluster description')
    result['nccl_settings'] = nccl_settings(description)
    return result


def cluster_plan(description):
    """Filter: the plan at stage description, or AnsibleFilterError listing every problem."""
    result = cluster_check(description)
    if result['plan'] is None:
        raise AnsibleFilterError(result['message'])
    return result['plan']


def cluster_problems(description):
    """Filter: every problem of a cluster description (errors and warnings), as problem dicts."""
    return cluster_check(description)['problems']


def cluster_plan_probed(plan, gpu_results, cx7_results, allow_missing_driver=False, fail_on_missing_interface=True,
                        nccl_settings=None, strict=True, staging_results=None, hub=None, has_token=False):
    """Filter: ``{plan, problems, message}``: the plan completed with every node's gpu_info and connectx_info result
    (host -> registered result; a host without one was not probed), checked again."""
    gpu_results, cx7_results = plain(gpu_results) or {}, plain(cx7_results) or {}
    probes = {name: {'gpu': gpu_results.get(name), 'cx7': cx7_results.get(name)} for name in plain(plan)['nodes']}
    try:
        done = complete_plan(plain(plan), probes, allow_missing_driver=bool(allow_missing_driver),
                             fail_on_missing_interface=bool(fail_on_missing_interface),
                             nccl_settings=plain(nccl_settings), strict=bool(strict),
                             staging=plain(staging_results), hub=plain(hub) or None, has_token=bool(has_token))
    except ProblemsError as exc:
        return _result(exc.problems, None, exc.subject)
    return {'plan': done, 'problems': done['problems'], 'message': ''}


def cx7_twin(interface):
    """Filter: the other twin's name (enp1s0f1np1 <-> enP2p1s0f1np1)."""
    twin = twin_name(interface)
    if twin is None:
        raise AnsibleFilterError('cx7_twin: %r is not a CX7 twin name (expected enp<bus>s<slot>f<fn>np<port> or '
                                 'enP2p<bus>s<slot>f<fn>np<port>)' % (interface,))
    return twin


def memory_fit(weights_bytes, gpu_infos, fraction=0.75):
    """Filter: whether the weights fit in the nodes' memory at mem-fraction-static."""
    try:
        return plan_memory_fit(plain(weights_bytes), plain(gpu_infos), plain(fraction))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def memory_reserve(gpu_infos, fraction, reserve_gib):
    """Filter: whether mem-fraction-static leaves sglang_server_memory_reserve_gib on every node."""
    try:
        result = plan_memory_reserve(plain(gpu_infos), plain(fraction), plain(reserve_gib))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    bad = errors(result['problems'])
    result['message'] = format_problems(bad, 'The memory reserve') if bad else ''
    return result


class FilterModule:
    """dgxspark.sglang cluster plan."""

    def filters(self):
        return {
            'cluster_check': cluster_check,
            'cluster_inputs': cluster_inputs,
            'cluster_plan': cluster_plan,
            'cluster_plan_probed': cluster_plan_probed,
            'cluster_problems': cluster_problems,
            'cx7_twin': cx7_twin,
            'memory_fit': memory_fit,
            'memory_reserve': memory_reserve,
        }
