# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""spark_cx7_topology's rules in the cluster plan (plugins/module_utils/_cluster.py), and a node in two SGLang groups.

- direct joins two Sparks; more is refused with the fix (a switch), before any host is touched;
- switch takes any number of Sparks: every node's twins on the same two subnets, each node's ring successor the next
  rank (so every twin is pinged as sender and as receiver, one peer per node), and every twin at the same speed;
- a node that two SGLang groups list is refused.
Problems are compared by code, variable and hosts, never by wording.
"""

from __future__ import annotations

import copy

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import (
    DIRECT_MAX_NODES,
    check_description,
    complete_plan,
    group_overlap_problems,
    plan_cluster,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, errors

from test__cluster import SUBNETS, cluster, converged, describe, probes


def _codes(problems):
    return [(p['code'], p['variable'], p['hosts']) for p in problems]


@pytest.mark.parametrize('n', [3, 4, 8])
def test_direct_with_more_than_two_nodes_is_refused_with_the_switch_as_fix(n):
    problems, plan = check_description(describe(n, spark_cx7_topology='direct'))
    names = ['spark-%02d' % (i + 1) for i in range(n)]
    assert plan is None
    assert _codes(problems) == [('topology-direct-too-many', 'spark_cx7_topology', names)]
    item = problems[0]
    assert str(n) in item['what'] and 'patched NCCL' in item['what'] and 'switch' in item['fix']
    assert 'spark_cx7_topology: switch' in item['message']


@pytest.mark.parametrize('n', [1, DIRECT_MAX_NODES])
def test_direct_with_one_or_two_nodes_is_fine(n):
    problems, plan = check_description(describe(n, spark_cx7_topology='direct'))
    assert problems == [] and plan['topology'] == 'direct'


def test_the_seed_s_four_node_example_through_a_switch():
    """The seed's "Scaling to More Nodes": 4 Sparks behind a switch, --tp-size 4, --nnodes 4."""
    plan = plan_cluster(describe(4, spark_cx7_topology='switch'))
    group = cluster(plan)
    assert (plan['topology'], group['nnodes'], group['tp_size'], group['head']) == ('switch', 4, 4, 'spark-01')
    assert group['dist_init_addr'] == '192.168.100.11:20000'
    assert plan['subnets'] == SUBNETS
    for rank, name in enumerate(group['hosts']):
        node = plan['nodes'][name]
        # every node's twins on the same two subnets, the host part by rank
        assert [t['subnet'] for t in node['cx7_interfaces']] == SUBNETS
        assert node['cx7_addresses'] == ['192.168.100.%d' % (11 + rank), '192.168.101.%d' % (11 + rank)]
        assert node['host_ip'] == node['cx7_addresses'][0] and node['node_rank'] == rank


@pytest.mark.parametrize('n', [2, 3, 4, 8])
def test_ring_successors_test_every_twin_as_sender_and_receiver_once(n):
    """cx7_network pings node['next'] over both twins: each node pings one peer, and is pinged by one."""
    plan = plan_cluster(describe(n))
    nodes = plan['nodes']
    successors = [nodes[name]['next'] for name in nodes]
    assert sorted(successors) == sorted(nodes)                  # each node receives exactly once
    assert all(nodes[name]['next'] != name for name in nodes)   # and never pings itself
    seen, name = [], next(iter(nodes))
    for _step in nodes:                                         # one cycle through every node
        seen.append(name)
        name = nodes[name]['next']
    assert sorted(seen) == sorted(nodes) and name == seen[0]


def _up_at(probe_map, host, speeds):
    for iface, speed in zip(probe_map[host]['cx7']['interfaces'], speeds):
        iface['speed_mbps'] = speed


def test_switch_twins_at_one_speed_pass():
    plan = plan_cluster(describe(4))
    assert errors(complete_plan(plan, probes(plan))['problems']) == []


def test_switch_twins_at_different_speeds_are_refused_naming_the_slow_nodes():
    plan = plan_cluster(describe(4))
    probe_map = probes(plan)
    _up_at(probe_map, 'spark-03', [200000, 100000])
    with pytest.raises(ProblemsError) as info:
        complete_plan(plan, probe_map)
    assert _codes(info.value.problems) == [('cx7-speeds-differ', 'spark_cx7_topology', ['spark-03'])]
    item = info.value.problems[0]
    assert '100000' in item['what'] and 'spark-03 enP2p1s0f1np1' in item['what'] and '200000' in item['fix']
    # verify (strict=False) reports it from the same rule
    done = complete_plan(plan, probe_map, strict=False)
    assert [p['code'] for p in errors(done['problems'])] == ['cx7-speeds-differ']


def test_speeds_above_the_expected_one_must_still_agree():
    plan = plan_cluster(describe(3, spark_cx7_expected_speed_mbps=100000))
    probe_map = probes(plan)
    _up_at(probe_map, 'spark-01', [100000, 100000])
    problems = complete_plan(plan, probe_map, strict=False)['problems']
    assert _codes(errors(problems)) == [('cx7-speeds-differ', 'spark_cx7_topology', ['spark-01'])]


def test_twins_down_or_without_speed_are_not_compared():
    """Before cx7_network's first run the twins are down: only twins that are up and report a speed count."""
    plan = plan_cluster(describe(3))
    probe_map = probes(plan, addresses=False)
    probe_map['spark-02']['cx7']['interfaces'][0].update(operstate='down', speed_mbps=None)
    probe_map['spark-03']['cx7']['interfaces'][1].update(operstate='down', speed_mbps=10000)
    assert errors(complete_plan(plan, probe_map, fail_on_missing_interface=False)['problems']) == []


def test_direct_twins_are_not_compared_across_nodes():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan)
    _up_at(probe_map, 'spark-02', [100000, 100000])
    assert [p['code'] for p in complete_plan(plan, probe_map, strict=False)['problems']
            if p['code'] == 'cx7-speeds-differ'] == []


# ---- a node in two SGLang groups ------------------------------------------------------------------------------

INVENTORY = {'all': ['a1', 'a2', 'b1', 'b2'], 'ungrouped': [], 'spark': ['a1', 'a2'], 'spark_b': ['b1', 'b2'],
             'racks': ['a1', 'b1']}


def test_separate_groups_are_fine_and_other_inventory_groups_do_not_count():
    assert group_overlap_problems(['spark', 'spark_b'], INVENTORY, 'spark') == []
    assert group_overlap_problems(None, INVENTORY, 'spark') == []


def test_a_node_in_two_sglang_groups_is_refused_with_the_fix():
    inventory = dict(INVENTORY, spark_b=['a2', 'b1', 'b2'])
    problems = group_overlap_problems(['spark_b'], inventory, 'spark')   # the planned group always counts
    assert _codes(problems) == [('node-in-two-groups', 'preflight_sglang_groups', ['a2'])]
    assert 'spark and spark_b' in problems[0]['what'] and 'a2' in problems[0]['fix']


def test_an_unknown_or_malformed_group_list_is_a_problem():
    assert _codes(group_overlap_problems(['spark', 'spark_c'], INVENTORY, 'spark')) == [
        ('sglang-group-unknown', 'preflight_sglang_groups', [])]
    assert _codes(group_overlap_problems('spark,spark_b', INVENTORY, 'spark')) == [
        ('sglang-groups-invalid', 'preflight_sglang_groups', [])]


def test_the_description_refuses_a_node_in_two_groups_before_any_host_is_touched():
    desc = describe(2)
    good = copy.deepcopy(desc)
    desc.update(sglang_groups=['spark', 'spark_b'], inventory_groups={'spark': ['spark-01', 'spark-02'],
                                                                      'spark_b': ['spark-02', 'spark-09']})
    problems, plan = check_description(desc)
    assert plan is None and _codes(problems) == [('node-in-two-groups', 'preflight_sglang_groups', ['spark-02'])]
    good.update(sglang_groups=['spark'], inventory_groups={'spark': ['spark-01', 'spark-02'], 'other': ['spark-02']})
    assert check_description(good)[0] == []


def test_converged_addresses_are_the_plan_s_own():
    plan = plan_cluster(describe(4))
    assert converged(plan['nodes']['spark-04']) == [['192.168.100.14/24'], ['192.168.101.14/24']]
