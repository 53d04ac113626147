# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster filters (plugins/filter/cluster.py): the thin layer over plugins/module_utils/_cluster.py.

What the plan holds and every problem it finds are tested in tests/unit/plugins/module_utils/test__cluster.py;
here only what the filters add: the filters exposed, AnsibleFilterError, the inputs read from hostvars, the probes
mapped by host, and Ansible's values turned into plain ones.
"""

from __future__ import annotations

import copy

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import cluster
from ansible_collections.dgxspark.sglang.plugins.filter.cluster import FilterModule, cx7_twin, plain
from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import INPUTS
from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import twin_name

SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']
GOOD_GROUP_VARS = {'spark_cx7_subnets': SUBNETS, 'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct'}
FILTERS = FilterModule().filters()


def describe(n=2, **group_vars):
    values = dict(copy.deepcopy(GOOD_GROUP_VARS), **group_vars)
    names = ['spark-%02d' % (i + 1) for i in range(n)]
    return {'cluster': 'spark', 'play_hosts': names, 'gpus_per_node': 1,
            'hosts': [{'name': name, 'vars': dict(copy.deepcopy(values), ansible_host='10.0.0.%d' % (11 + i))}
                      for i, name in enumerate(names)]}


def gpu_ready(driver='580.95.05'):
    return {'changed': False, 'failed': False, 'driver_state': 'ready', 'dgx_os': True, 'gpu_count': 1,
            'driver_version': driver, 'cuda_version': '13.0',
            'gpus': [{'index': 0, 'name': 'NVIDIA GB10', 'memory_total_mib': 124610, 'unified_memory': True}]}


def cx7_ready():
    return {'changed': False, 'failed': False, 'interfaces': [], 'rdma_devices': ['rocep1s0f1', 'roceP2p1s0f1'],
            'healthy': True, 'problems': []}


def _tagged(value):
    from ansible._internal._datatag._tags import Origin   # Ansible's own tagged str/int/list/dict
    return Origin(path='/inventory/group_vars/spark.yml', line_num=3).tag(value)


# ---- the filters ------------------------------------------------------------------------------------------

def test_filter_module_exposes_the_filters():
    assert set(FILTERS) == {'cluster_check', 'cluster_inputs', 'cluster_plan', 'cluster_plan_probed', 'cluster_problems',
                            'cx7_twin', 'memory_fit', 'memory_reserve'}
    assert all(callable(f) for f in FILTERS.values())
    assert FILTERS['cluster_plan'](describe(2))['groups']['spark']['head'] == 'spark-01'


def test_cluster_plan_raises_ansible_filter_error_with_every_problem_and_its_code():
    desc = describe(2, spark_cx7_subnets=['192.168.100.0/24', '192.168.100.0/24'], spark_dist_init_port=1)
    problems = FILTERS['cluster_problems'](desc)
    assert sorted(p['code'] for p in problems) == ['cx7-subnet-twice', 'port-invalid']
    with pytest.raises(AnsibleFilterError) as info:
        FILTERS['cluster_plan'](desc)
    text = str(info.value)
    assert text.startswith('The cluster description has 2 problems:')
    for item in problems:
        assert '%s [%s]' % (item['message'], item['code']) in text


def test_cluster_check_returns_plan_problems_message_and_nccl_settings():
    settings = {'nccl_env_extra': {'NCCL_MIN_NCHANNELS': 4}, 'nccl_env_debug': 'INFO'}
    result = FILTERS['cluster_check'](describe(2, **settings))
    assert set(result) == {'plan', 'problems', 'message', 'nccl_settings'}
    assert result['plan']['stage'] == 'description' and result['message'] == ''
    assert [p['code'] for p in result['problems']] == ['nccl-discouraged-variable']   # a warning keeps the plan
    assert result['nccl_settings'] == {'extra': {'NCCL_MIN_NCHANNELS': 4}, 'deliberate': None, 'debug': 'INFO',
                                       'ib_disable': None}
    bad = FILTERS['cluster_check'](describe(2, sglang_server_port=70000))
    assert bad['plan'] is None and '[port-invalid]' in bad['message']


def test_filters_take_ansible_values_and_never_show_their_types():
    desc = describe(2)
    desc['hosts'][0]['vars']['cx7_network_mtu'] = _tagged(16000)
    desc['hosts'][1]['vars']['cx7_network_mtu'] = _tagged(16000)
    for h in desc['hosts']:
        h['vars']['nccl_env_extra'] = _tagged(['NCCL_DEBUG'])
        h['vars']['spark_cx7_subnets'] = _tagged(list(SUBNETS))
    problems = FILTERS['cluster_problems'](_tagged(desc))
    assert sorted(p['code'] for p in problems) == ['mtu-invalid', 'nccl-extra-not-dict']
    for item in problems:
        for word in ('_Ansible', 'Tagged', 'Lazy'):
            assert word not in item['message'], item['message']


# ---- cluster_inputs: hostvars -> the description's hosts ------------------------------------------------------

class _Unreadable(dict):
    """Stands in for a host's vars where one variable refers to an undefined one (raises on access)."""

    def __getitem__(self, key):
        if key == 'spark_cx7_subnets':
            raise ValueError("'cx7_base' is undefined. 'cx7_base' is undefined\nsecond line of the traceback")
        return super().__getitem__(key)


def test_cluster_inputs_reads_only_the_inputs_of_the_plan():
    hostvars = {
        'spark-01': {'ansible_host': '10.0.0.11', 'spark_cx7_subnets': SUBNETS, 'spark_node_rank': 0,
                     'ansible_password': 'secret', 'inventory_hostname': 'spark-01', 'other_var': 1,
                     'sglang_server_args': _tagged({'mem-fraction-static': _tagged(0.8)})},
        'spark-02': _Unreadable({'ansible_host': '10.0.0.12', 'spark_cx7_subnets': SUBNETS, 'cx7_network_mtu': 9000}),
        'spark-03': {},
    }
    hosts = FILTERS['cluster_inputs'](hostvars, ['spark-02', 'spark-01'])
    assert hosts == [
        {'name': 'spark-02', 'vars': {'ansible_host': '10.0.0.12', 'cx7_network_mtu': 9000,
                                      '__errors__': {'spark_cx7_subnets': "'cx7_base' is undefined. 'cx7_base' is undefined"}}},
        {'name': 'spark-01', 'vars': {'ansible_host': '10.0.0.11', 'spark_cx7_subnets': SUBNETS, 'spark_node_rank': 0,
                                      'sglang_server_args': {'mem-fraction-static': 0.8}}},
    ]
    assert type(hosts[1]['vars']['sglang_server_args']) is dict  # pylint: disable=unidiomatic-typecheck
    assert FILTERS['cluster_inputs'](hostvars, ['spark-03']) == [{'name': 'spark-03', 'vars': {}}]
    assert FILTERS['cluster_inputs'](hostvars, None) == []
    assert set(hosts[1]['vars']) <= set(INPUTS)


def test_an_unreadable_input_becomes_a_problem_of_the_plan():
    hostvars = {'spark-01': dict(GOOD_GROUP_VARS, ansible_host='10.0.0.11'),
                'spark-02': _Unreadable(dict(GOOD_GROUP_VARS, ansible_host='10.0.0.12'))}
    desc = {'cluster': 'spark', 'hosts': FILTERS['cluster_inputs'](hostvars, ['spark-01', 'spark-02']),
            'play_hosts': ['spark-01', 'spark-02'], 'gpus_per_node': 1}
    problems = FILTERS['cluster_problems'](desc)
    assert [(p['code'], p['variable'], p['hosts']) for p in problems][0] == (
        'variable-undefined', 'spark_cx7_subnets', ['spark-02'])
    assert "'cx7_base' is undefined" in problems[0]['message']


# ---- cluster_plan_probed -----------------------------------------------------------------------------------

def test_cluster_plan_probed_strict_and_not():
    plan = FILTERS['cluster_plan'](describe(2))
    gpu = {'spark-01': gpu_ready(), 'spark-02': gpu_ready('580.82.09')}
    cx7 = {'spark-01': cx7_ready(), 'spark-02': cx7_ready()}
    refused = FILTERS['cluster_plan_probed'](plan, gpu, cx7)
    assert refused['plan'] is None
    assert [p['code'] for p in refused['problems']] == ['gpu-driver-versions-differ']
    assert refused['message'].startswith('The probed cluster has 1 problem:')
    assert '[gpu-driver-versions-differ]' in refused['message']
    kept = FILTERS['cluster_plan_probed'](plan, gpu, cx7, strict=False)
    assert kept['plan']['stage'] == 'probed' and kept['message'] == ''
    assert [p['code'] for p in kept['problems']] == ['gpu-driver-versions-differ'] == [
        p['code'] for p in kept['plan']['problems']]
    good = FILTERS['cluster_plan_probed'](plan, {'spark-01': gpu_ready(), 'spark-02': gpu_ready()}, cx7)
    assert good['problems'] == [] and good['plan']['nodes']['spark-02']['nccl_env']['NCCL_IB_HCA'] == (
        '=rocep1s0f1,roceP2p1s0f1')


def test_cluster_plan_probed_maps_results_by_host_and_passes_the_options():
    plan = FILTERS['cluster_plan'](describe(2))
    absent = {'failed': True, 'driver_state': 'absent', 'dgx_os': False, 'msg': 'nvidia-smi not found on PATH'}
    # spark-02 has no result: left out of the run.
    result = FILTERS['cluster_plan_probed'](plan, {'spark-01': absent}, {'spark-01': cx7_ready()}, strict=True)
    assert sorted(p['code'] for p in result['problems']) == ['gpu-driver-absent', 'node-not-probed']
    result = FILTERS['cluster_plan_probed'](plan, _tagged({'spark-01': absent, 'spark-02': gpu_ready()}),
                                            {'spark-01': cx7_ready(), 'spark-02': cx7_ready()},
                                            allow_missing_driver=True,
                                            nccl_settings={'extra': None, 'deliberate': None, 'debug': 'TRACE',
                                                           'ib_disable': None})
    assert [(p['code'], p['severity']) for p in result['problems']] == [('gpu-driver-to-install', 'warning')]
    assert result['plan']['nodes']['spark-01']['probe']['driver']['state'] == 'absent'
    assert result['plan']['nodes']['spark-02']['nccl_env']['NCCL_DEBUG'] == 'TRACE'
    assert FILTERS['cluster_plan_probed'](plan, None, None, strict=False)['plan']['stage'] == 'probed'


# ---- plain ------------------------------------------------------------------------------------------------

class _Str(str):
    pass


class _List(list):
    pass


class _Dict(dict):
    pass


class _Int(int):
    pass


class _Float(float):
    pass


def _types(value):
    """Every type in a nested value, keys included."""
    found = {type(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= _types(key) | _types(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= _types(item)
    return found


@pytest.mark.parametrize('value, expected', [
    (_Str('a'), 'a'),
    (_Int(3), 3),
    (_Float(0.5), 0.5),
    (_List([_Str('a'), _List([_Int(1)])]), ['a', [1]]),
    (_Dict({_Str('k'): _Dict({'x': (_Str('y'), _Int(2))})}), {'k': {'x': ['y', 2]}}),
    (True, True),
    (None, None),
    ({'a': [True, None, 1.5]}, {'a': [True, None, 1.5]}),
])
def test_plain_turns_subclasses_into_plain_types(value, expected):
    result = plain(value)
    assert result == expected
    assert _types(result) <= {str, int, float, bool, type(None), list, dict}


def test_plain_turns_ansible_tagged_values_into_plain_ones():
    value = _tagged({'a': _tagged([_tagged('x'), _tagged(1)])})
    assert _types(value) - {str, int, list, dict}    # Ansible's own types, really
    result = plain(value)
    assert result == {'a': ['x', 1]} and _types(result) == {str, int, list, dict}


# ---- cx7_twin, memory_fit -----------------------------------------------------------------------------------

@pytest.mark.parametrize('name, twin', [
    ('enp1s0f1np1', 'enP2p1s0f1np1'), ('enP2p1s0f1np1', 'enp1s0f1np1'),
    ('enp1s0f0np0', 'enP2p1s0f0np0'), ('enP2p1s0f0np0', 'enp1s0f0np0'),
])
def test_cx7_twin(name, twin):
    assert cx7_twin(name) == twin
    assert FILTERS['cx7_twin'](name) == twin


@pytest.mark.parametrize('name', ['enP7s7', 'eth0', '', None, 'enP7p1s0f1np1'])
def test_cx7_twin_rejects_other_names(name):
    assert twin_name(name) is None
    with pytest.raises(AnsibleFilterError, match='not a CX7 twin name'):
        FILTERS['cx7_twin'](name)


def test_memory_fit_filter_wraps_errors():
    gb10 = {'spark-%02d' % i: {'gpus': [{'name': 'NVIDIA GB10', 'memory_total_mib': 124610}]} for i in (1, 2)}
    assert FILTERS['memory_fit'](140 * 1000 ** 3, gb10)['fraction'] == 0.75
    assert FILTERS['memory_fit'](_tagged(140 * 1000 ** 3), _tagged(gb10), _tagged(0.75))['fits'] is True
    with pytest.raises(AnsibleFilterError, match='mem-fraction-static'):
        FILTERS['memory_fit'](1, gb10, 2)
    assert cluster.memory_fit is FILTERS['memory_fit']


def test_memory_reserve_filter_adds_one_message_of_the_errors_and_wraps_bad_input():
    gb10 = {'spark-%02d' % i: {'gpus': [{'name': 'NVIDIA GB10', 'memory_total_mib': 124610}]} for i in (1, 2)}
    short = FILTERS['memory_reserve'](_tagged(gb10), _tagged(0.9), _tagged(16))
    assert [p['code'] for p in short['problems']] == ['memory-reserve-short']
    assert short['message'].startswith('The memory reserve has 1 problem:')
    assert short['message'].endswith('[memory-reserve-short]')
    # A warning (no fraction set) is in the problems, not in the message that fails the run.
    unset = FILTERS['memory_reserve'](gb10, None, 16)
    assert [p['severity'] for p in unset['problems']] == ['warning'] and unset['message'] == ''
    assert FILTERS['memory_reserve'](gb10, 0.8, 16)['message'] == ''
    with pytest.raises(AnsibleFilterError, match='sglang_server_memory_reserve_gib'):
        FILTERS['memory_reserve'](gb10, 0.8, -1)
    assert cluster.memory_reserve is FILTERS['memory_reserve']
