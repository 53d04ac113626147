# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""plan_memory_reserve and sglang_server_memory_reserve_gib (plugins/module_utils/_cluster.py).

SGLang's static pool is mem-fraction-static x node memory; what is left must hold the reserve on every node. Node
memory as gpu_info reports it from real captures: a DGX Spark's /proc/meminfo MemTotal 127600748 kB is
memory_total_mib 124610 (121.7 GiB); an H200 has 143771 MiB per GPU. Problems are compared by code, variable and hosts,
and by the figures a message must carry (the fraction to write), never by wording.
"""

from __future__ import annotations

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import (
    DEFAULTS,
    check_description,
    plan_cluster,
    plan_memory_reserve,
)

GB10_MIB = int(round(127600748 / 1024.0))
H200_MIB = 143771
SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']


def node(mib=GB10_MIB, count=1):
    return {'gpus': [{'memory_total_mib': mib}] * count}


def sparks(n=2, **odd):
    infos = {'spark-%02d' % (i + 1): node() for i in range(n)}
    infos.update(odd)
    return infos


def describe(**group_vars):
    values = dict({'spark_cx7_subnets': SUBNETS, 'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct'}, **group_vars)
    return {'cluster': 'spark', 'play_hosts': ['spark-01', 'spark-02'], 'gpus_per_node': 1,
            'hosts': [{'name': name, 'vars': dict(values, ansible_host='10.0.0.%d' % (11 + i))}
                      for i, name in enumerate(['spark-01', 'spark-02'])]}


def test_the_default_reserve_is_16_gib_and_allows_086_on_a_gb10():
    assert DEFAULTS['sglang_server_memory_reserve_gib'] == 16
    result = plan_memory_reserve(sparks(1), 0.86, DEFAULTS['sglang_server_memory_reserve_gib'])
    assert result['problems'] == []
    assert result['nodes']['spark-01'] == {'node_gib': 121.7, 'static_gib': 104.7, 'left_gib': 17.0, 'max_fraction': 0.86}


@pytest.mark.parametrize('fraction', [0.75, 0.8, 0.85, 0.86])
def test_community_fractions_leave_the_reserve_on_a_gb10(fraction):
    assert plan_memory_reserve(sparks(2), fraction, 16)['problems'] == []


@pytest.mark.parametrize('fraction', [0.87, 0.88, 0.9, 0.95, 1.0])
def test_higher_fractions_fail_naming_every_node_and_the_fraction_to_write(fraction):
    (item,) = plan_memory_reserve(sparks(2), fraction, 16)['problems']
    assert (item['code'], item['severity'], item['variable']) == (
        'memory-reserve-short', 'error', "sglang_server_args['mem-fraction-static']")
    assert item['hosts'] == ['spark-01', 'spark-02']
    assert 'to 0.86 or less' in item['fix'] and 'sglang_server_memory_reserve_gib to ' in item['fix']


def test_the_reserve_the_fix_offers_is_one_that_passes():
    (item,) = plan_memory_reserve(sparks(1), 0.9, 16)['problems']
    offered = float(item['fix'].split('sglang_server_memory_reserve_gib to ')[1].split()[0])
    assert offered == 12.1      # 121.69 GiB x 0.1 = 12.17, floored
    assert plan_memory_reserve(sparks(1), 0.9, offered)['problems'] == []
    assert plan_memory_reserve(sparks(1), 0.9, 12.2)['problems'] != []


def test_exactly_the_reserve_left_passes():
    node_gib = GB10_MIB / 1024
    assert plan_memory_reserve(sparks(1), 0.5, node_gib / 2)['problems'] == []
    assert plan_memory_reserve(sparks(1), 0.5, node_gib / 2 + 0.01)['problems'] != []


def test_only_the_nodes_left_short_are_named_and_the_smallest_sets_the_fraction():
    infos = sparks(1, **{'h200-host': node(H200_MIB, count=2)})
    (item,) = plan_memory_reserve(infos, 0.88, 16)['problems']
    assert item['hosts'] == ['spark-01']
    result = plan_memory_reserve(infos, 0.88, 16)
    # 2 x 143771 MiB = 280.8 GiB: 0.88 leaves 33.7 GiB there; the Spark bounds the group.
    assert result['nodes']['h200-host']['max_fraction'] == 0.94
    assert 'to 0.86 or less' in item['fix']


def test_a_reserve_above_the_node_asks_for_bigger_nodes():
    (item,) = plan_memory_reserve(sparks(1), 0.1, 200)['problems']
    assert item['fix'].startswith('run SGLang on nodes with more than 200 GiB')


def test_no_fraction_set_is_a_warning_where_sglangs_own_choice_leaves_less():
    # SGLang 0.5.23 picks (memory - max(reserved, 10 GiB)) / memory on a GPU of more than 60 GiB.
    (item,) = plan_memory_reserve(sparks(2), None, 16)['problems']
    assert (item['code'], item['severity'], item['hosts']) == ('memory-fraction-auto', 'warning', ['spark-01', 'spark-02'])
    assert 'to 0.86 or less' in item['fix']
    assert plan_memory_reserve(sparks(2), None, 10)['problems'] == []
    # Below 60 GiB SGLang sizes what it leaves itself (no 10 GiB floor): always said.
    (small,) = plan_memory_reserve({'small': node(48 * 1024)}, None, 4)['problems']
    assert small['code'] == 'memory-fraction-auto'


@pytest.mark.parametrize('infos, fraction, reserve, words', [
    (sparks(1), 0.8, -1, 'sglang_server_memory_reserve_gib'),
    (sparks(1), 0.8, True, 'sglang_server_memory_reserve_gib'),
    (sparks(1), 0.8, '16', 'sglang_server_memory_reserve_gib'),
    (sparks(1), 0, 16, 'mem-fraction-static'),
    (sparks(1), 1.2, 16, 'mem-fraction-static'),
    ({}, 0.8, 16, 'no gpu_info results'),
    ({'spark-01': {'gpus': []}}, 0.8, 16, 'host spark-01'),
])
def test_bad_input_is_refused(infos, fraction, reserve, words):
    with pytest.raises(ValueError, match=words):
        plan_memory_reserve(infos, fraction, reserve)


def test_the_reserve_reaches_the_plan():
    assert plan_cluster(describe())['groups']['spark']['memory_reserve_gib'] == 16
    assert plan_cluster(describe(sglang_server_memory_reserve_gib=4.5))['groups']['spark']['memory_reserve_gib'] == 4.5


@pytest.mark.parametrize('value', [-1, 'ten', True, [16], float('inf')])
def test_a_reserve_that_is_no_number_of_gib_is_refused_before_any_host(value):
    problems, plan = check_description(describe(sglang_server_memory_reserve_gib=value))
    assert plan is None
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [
        ('memory-reserve-invalid', 'sglang_server_memory_reserve_gib', ['spark-01', 'spark-02'])]
