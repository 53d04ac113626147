"""Cluster math (plugins/filter/cluster.py): the plan for good inventories, every problem for bad ones."""

from __future__ import annotations

import copy

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import cluster
from ansible_collections.dgxspark.sglang.plugins.filter.cluster import (
    ClusterPlanError,
    FilterModule,
    consistency_problems,
    cx7_twin,
    plan_cluster,
)

TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']


def base(n=3):
    return {
        'group': 'spark',
        'hosts': [{'name': 'spark-%02d' % (i + 1), 'management_address': '10.0.0.%d' % (11 + i),
                   'cx7_addresses': None, 'node_rank': None} for i in range(n)],
        'interfaces': list(TWINS),
        'subnets': list(SUBNETS),
        'dist_init_port': 20000,
        'tp_size': None,
        'pp_size': 1,
        'gpus_per_node': 1,
    }


def host(desc, name):
    return next(h for h in desc['hosts'] if h['name'] == name)


# ---- good inventories --------------------------------------------------------------------------------

def test_two_sparks_like_design_md():
    plan = plan_cluster(base(2))
    assert plan['nnodes'] == 2 and plan['head'] == 'spark-01' and plan['hosts'] == ['spark-01', 'spark-02']
    assert plan['dist_init_addr'] == '192.168.100.11:20000'
    assert plan['tp_size'] == 2 and plan['pp_size'] == 1 and plan['total_gpus'] == 2
    assert plan['nodes']['spark-02'] == {
        'node_rank': 1,
        'management_address': '10.0.0.12',
        'cx7_addresses': ['192.168.100.12', '192.168.101.12'],
        'cx7_interfaces': [
            {'name': 'enp1s0f1np1', 'address': '192.168.100.12/24', 'ip': '192.168.100.12', 'subnet': '192.168.100.0/24'},
            {'name': 'enP2p1s0f1np1', 'address': '192.168.101.12/24', 'ip': '192.168.101.12', 'subnet': '192.168.101.0/24'},
        ],
        'cx7_addresses_from': 'spark_cx7_subnets',
        'next': 'spark-01',
    }
    assert plan['peers'] == {
        'spark-01': [{'name': 'spark-02', 'node_rank': 1, 'cx7_addresses': ['192.168.100.12', '192.168.101.12']}],
        'spark-02': [{'name': 'spark-01', 'node_rank': 0, 'cx7_addresses': ['192.168.100.11', '192.168.101.11']}],
    }


def test_explicit_ranks_reorder_and_pick_the_head():
    desc = base(3)
    for name, rank in (('spark-01', 2), ('spark-02', 0), ('spark-03', 1)):
        host(desc, name)['node_rank'] = rank
    plan = plan_cluster(desc)
    assert plan['head'] == 'spark-02'
    assert plan['hosts'] == ['spark-02', 'spark-03', 'spark-01']
    assert plan['nodes']['spark-01']['cx7_addresses'] == ['192.168.100.13', '192.168.101.13']
    assert plan['dist_init_addr'] == '192.168.100.11:20000'
    assert [p['name'] for p in plan['peers']['spark-03']] == ['spark-02', 'spark-01']


def test_explicit_addresses_mix_with_computed_ones():
    desc = base(2)
    host(desc, 'spark-01')['cx7_addresses'] = ['192.168.100.50', '192.168.101.50']
    desc['dist_init_port'] = 29500
    desc['tp_size'] = 2
    plan = plan_cluster(desc)
    assert plan['dist_init_addr'] == '192.168.100.50:29500'
    assert plan['nodes']['spark-01']['cx7_addresses_from'] == 'spark_cx7_addresses'
    assert plan['nodes']['spark-02']['cx7_addresses'] == ['192.168.100.12', '192.168.101.12']


def test_single_twin_and_small_subnet_that_fits():
    desc = base(2)
    desc['interfaces'] = ['enp1s0f0np0']
    desc['subnets'] = ['172.16.0.0/28']   # host parts 1 .. 14: .11 and .12 fit
    plan = plan_cluster(desc)
    assert plan['nodes']['spark-02']['cx7_interfaces'] == [
        {'name': 'enp1s0f0np0', 'address': '172.16.0.12/28', 'ip': '172.16.0.12', 'subnet': '172.16.0.0/28'}]


def test_defaults_and_dns_management_name():
    desc = base(1)
    del desc['interfaces'], desc['dist_init_port'], desc['pp_size'], desc['gpus_per_node']
    host(desc, 'spark-01')['management_address'] = 'spark-01.lan'
    plan = plan_cluster(desc)
    assert plan['interfaces'] == TWINS and plan['dist_init_addr'] == '192.168.100.11:20000'
    assert plan['nnodes'] == 1 and plan['tp_size'] == 1 and plan['peers'] == {'spark-01': []}


def test_tp_and_pp_with_several_gpus_per_node():
    desc = base(2)
    desc.update(gpus_per_node=4, pp_size=2)
    plan = plan_cluster(desc)
    assert (plan['tp_size'], plan['pp_size'], plan['total_gpus']) == (4, 2, 8)


def test_ipv6_subnets_bracket_the_dist_init_addr():
    desc = base(2)
    desc['subnets'] = ['fd00:100::/64', 'fd00:101::/64']
    plan = plan_cluster(desc)
    assert plan['dist_init_addr'] == '[fd00:100::b]:20000'
    assert plan['nodes']['spark-02']['cx7_interfaces'][1]['address'] == 'fd00:101::c/64'


# ---- bad inventories: each names the variable, the host(s) and the fix ----------------------------------

def _addresses(name, addrs):
    def mutate(desc):
        host(desc, name)['cx7_addresses'] = addrs
    return mutate


def _ranks(*ranks):
    def mutate(desc):
        for h, rank in zip(desc['hosts'], ranks):
            h['node_rank'] = rank
    return mutate


def _set(**values):
    def mutate(desc):
        desc.update(values)
    return mutate


def _mgmt(name, address):
    def mutate(desc):
        host(desc, name)['management_address'] = address
    return mutate


def _both(*mutations):
    def mutate(desc):
        for m in mutations:
            m(desc)
    return mutate


# id, mutation, variable, hosts named, substrings of the problem (what + fix)
BAD = [
    ('duplicate_cx7_address_across_hosts',
     _both(_addresses('spark-01', ['192.168.100.20', '192.168.101.20']),
           _addresses('spark-02', ['192.168.100.20', '192.168.101.21'])),
     'spark_cx7_addresses', ['spark-01', 'spark-02'], ['192.168.100.20 is given to both', 'Fix: give every host its own']),
    ('addresses_swapped_between_twins', _addresses('spark-02', ['192.168.101.12', '192.168.100.12']),
     'spark_cx7_addresses', ['spark-02'], ['in the wrong order', 'Fix: write spark_cx7_addresses: [192.168.100.12, 192.168.101.12]']),
    ('address_outside_twin_subnet', _addresses('spark-02', ['192.168.100.12', '192.168.102.12']),
     'spark_cx7_addresses', ['spark-02'], ["outside that twin's subnet 192.168.101.0/24", 'Fix: use an address inside']),
    ('address_is_network_address', _addresses('spark-02', ['192.168.100.0', '192.168.101.12']),
     'spark_cx7_addresses', ['spark-02'], ['network address of 192.168.100.0/24', 'Fix: use a host address between']),
    ('address_prefix_differs_from_subnet', _addresses('spark-03', ['192.168.100.13/16', '192.168.101.13']),
     'spark_cx7_addresses', ['spark-03'], ['prefix other than its subnet', 'Fix: write the plain address 192.168.100.13']),
    ('same_subnet_on_both_twins', _set(subnets=['192.168.100.0/24', '192.168.100.0/24']),
     'spark_cx7_subnets', ['spark-01', 'spark-02', 'spark-03'], ['same subnet 192.168.100.0/24 on both twins', 'Fix: never use one subnet']),
    ('overlapping_subnets', _set(subnets=['192.168.0.0/16', '192.168.101.0/24']),
     'spark_cx7_subnets', ['spark-01', 'spark-03'], ['overlap', 'Fix: give each twin a separate']),
    ('subnet_count_differs_from_interfaces', _set(subnets=['192.168.100.0/24']),
     'spark_cx7_subnets', ['spark-01', 'spark-02'], ['1 subnet(s) for 2 interface(s)', 'Fix: give exactly one subnet per twin']),
    ('address_count_differs_from_interfaces', _addresses('spark-01', ['192.168.100.11']),
     'spark_cx7_addresses', ['spark-01'], ['1 address(es) for 2 interface(s)', 'Fix: give exactly one address per twin']),
    ('malformed_address', _addresses('spark-02', ['192.168.100', '192.168.101.12']),
     'spark_cx7_addresses', ['spark-02'], ["'192.168.100' (for enp1s0f1np1) is not an IP address", 'Fix: write a plain address inside']),
    ('address_not_a_list', _addresses('spark-02', '192.168.100.12'),
     'spark_cx7_addresses', ['spark-02'], ['must be a list', 'Fix: write spark_cx7_addresses: [192.168.100.12, 192.168.101.12]']),
    ('malformed_subnet', _set(subnets=['192.168.100.0/33', '192.168.101.0/24']),
     'spark_cx7_subnets', ['spark-01'], ['is not a valid subnet', 'Fix: write it as network/prefix']),
    ('subnet_without_prefix', _set(subnets=['192.168.100.0', '192.168.101.0/24']),
     'spark_cx7_subnets', ['spark-02'], ['not a subnet in CIDR notation', 'Fix: write it as network/prefix']),
    ('subnet_with_host_bits', _set(subnets=['192.168.100.5/24', '192.168.101.0/24']),
     'spark_cx7_subnets', ['spark-03'], ['192.168.100.5/24 has host bits set', 'Fix: write 192.168.100.0/24']),
    ('management_address_used_as_own_cx7_address', _mgmt('spark-02', '192.168.100.12'),
     'ansible_host', ['spark-02'], ['management address 192.168.100.12 of spark-02 is also its own CX7 address',
                                    'Fix: keep ansible_host on the management port']),
    ('management_address_used_as_other_hosts_cx7_address',
     _both(_mgmt('spark-03', '10.0.0.99'), _set(subnets=['10.0.0.0/25', '192.168.101.0/24']),
           _addresses('spark-01', ['10.0.0.99', '192.168.101.11']), _mgmt('spark-01', '172.20.0.1'),
           _mgmt('spark-02', '172.20.0.2')),
     'ansible_host', ['spark-03', 'spark-01'], ["is also spark-01's CX7 address", 'Fix: keep ansible_host on the management port']),
    ('management_address_inside_cx7_subnet', _mgmt('spark-03', '192.168.101.200'),
     'ansible_host', ['spark-03'], ['lies inside the CX7 subnet 192.168.101.0/24 of enP2p1s0f1np1', 'Fix: pick CX7 subnets apart']),
    ('duplicate_management_address', _mgmt('spark-03', '10.0.0.12'),
     'ansible_host', ['spark-02', 'spark-03'], ['10.0.0.12 is the management address of spark-02 and spark-03',
                                                'Fix: give each host its own ansible_host']),
    ('duplicate_ranks', _ranks(0, 1, 1),
     'spark_node_rank', ['spark-02', 'spark-03'], ['rank 1 is given to 2 hosts', 'Fix: give each host its own rank from 0 to 2']),
    ('gapped_ranks', _ranks(0, 2, 3),
     'spark_node_rank', ['spark-03'], ['leave a gap (missing 1)', 'Fix: number the hosts 0 .. 2 without gaps']),
    ('negative_rank', _ranks(0, -1, 1),
     'spark_node_rank', ['spark-02'], ['is negative (-1)', 'Fix: ranks run from 0']),
    ('quoted_rank', _ranks(0, '1', 2),
     'spark_node_rank', ['spark-02'], ["is the string '1', not an integer", 'Fix: write spark_node_rank: 1 without quotes']),
    ('boolean_rank', _ranks(0, True, 2),
     'spark_node_rank', ['spark-02'], ['is True, not an integer', 'Fix: write an integer from 0 to 2']),
    ('rank_on_some_hosts_only', _ranks(0, None, None),
     'spark_node_rank', ['spark-02', 'spark-03'],
     ['set on host spark-01 but not on spark-02, spark-03', 'Fix: set spark_node_rank on every host of the group']),
    ('tp_not_divisible_by_nnodes', _set(tp_size=2),
     "sglang_server_args['tp-size']", ['spark-01', 'spark-03'],
     ['tp x pp = 2 x 1 = 2 is not divisible by the node count 3', 'Fix: use a tp-size whose product with pp-size is a multiple of 3']),
    ('tp_larger_than_total_gpus', _set(tp_size=6),
     "sglang_server_args['tp-size']", ['spark-01', 'spark-02'], ['needs more GPUs than the cluster has (3 nodes x 1 GPU(s) = 3)',
                                                                 'Fix: lower tp-size to at most 3']),
    ('quoted_tp', _set(tp_size='3'),
     "sglang_server_args['tp-size']", ['spark-02'], ["is '3', not a positive integer", 'Fix: write 3 without quotes']),
    ('management_port_as_cx7_interface', _set(interfaces=['enp1s0f1np1', 'enP7s7']),
     'spark_cx7_interfaces', ['spark-01', 'spark-03'], ['enP7s7 is the 10 GbE management port, not a CX7 twin',
                                                        'Fix: use the CX7 twins of the cabled port']),
    ('unknown_interface_eth0', _set(interfaces=['eth0', 'enP2p1s0f1np1']),
     'spark_cx7_interfaces', ['spark-02'], ['eth0 is not a ConnectX-7 interface name', 'Fix: use the CX7 twins']),
    ('duplicate_interface', _set(interfaces=['enp1s0f1np1', 'enp1s0f1np1']),
     'spark_cx7_interfaces', ['spark-01'], ['enp1s0f1np1 is listed twice', 'Fix: list each twin once; the twin of enp1s0f1np1 is enP2p1s0f1np1']),
    ('dist_port_privileged', _set(dist_init_port=80),
     'spark_dist_init_port', ['spark-01'], ['is 80, not a port from 1024 to 65535', 'Fix: use an unprivileged TCP port']),
    ('dist_port_quoted', _set(dist_init_port='20000'),
     'spark_dist_init_port', ['spark-03'], ["is the string '20000'", 'Fix: write 20000 without quotes']),
    ('subnet_too_small_for_nodes', _set(subnets=['192.168.100.0/30', '192.168.101.0/24']),
     'spark_cx7_subnets', ['spark-01', 'spark-02', 'spark-03'], ['192.168.100.0/30 (enp1s0f1np1) is too small for 3 nodes',
                                                                 'Fix: use a /24 per twin']),
    ('computed_address_collides_with_explicit_one', _addresses('spark-01', ['192.168.100.12', '192.168.101.12']),
     'spark_cx7_addresses', ['spark-01', 'spark-02'], ['computed for spark-02 (rank 1): 192.168.100.12 on enp1s0f1np1, 192.168.101.12 on enP2p1s0f1np1',
                                                       'Fix: set spark_cx7_addresses on spark-02 too']),
    ('host_vars_override_of_group_subnets',
     lambda desc: host(desc, 'spark-02').update(subnets=['192.168.200.0/24', '192.168.201.0/24']),
     'spark_cx7_subnets', ['spark-02'],
     ["hosts disagree (a host_vars override?): spark-01, spark-03: ['192.168.100.0/24', '192.168.101.0/24']; "
      "spark-02: ['192.168.200.0/24'", 'Fix: set spark_cx7_subnets once in the group vars of spark']),
    ('host_vars_override_on_the_first_host',
     _both(_set(interfaces=['enp1s0f0np0', 'enP2p1s0f0np0']),
           lambda desc: [h.update(interfaces=None) for h in desc['hosts']],
           lambda desc: host(desc, 'spark-01').update(interfaces=['enp1s0f0np0', 'enP2p1s0f0np0'])),
     'spark_cx7_interfaces', ['spark-01', 'spark-02', 'spark-03'],
     ["spark-01: ['enp1s0f0np0', 'enP2p1s0f0np0']; spark-02, spark-03: ['enp1s0f1np1', 'enP2p1s0f1np1']",
      'Fix: set spark_cx7_interfaces once in the group vars of spark']),
]


@pytest.mark.parametrize('case_id, mutate, variable, hosts, fragments', BAD, ids=[c[0] for c in BAD])
def test_bad_input_names_variable_host_and_fix(case_id, mutate, variable, hosts, fragments):
    desc = base(3)
    mutate(desc)
    with pytest.raises(ClusterPlanError) as info:
        plan_cluster(desc)
    problems = info.value.problems
    matching = [p for p in problems if p.startswith(variable + ' (') and all(f in p for f in fragments)]
    assert matching, '%s: no problem matches %s %s in:\n%s' % (case_id, variable, fragments, '\n'.join(problems))
    line = matching[0]
    for name in hosts:
        assert name in line, (case_id, name, line)
    assert 'Fix: ' in line
    # One mistake, one problem: no follow-on noise from the same slip.
    assert len(problems) == 1, '%s: expected one problem, got:\n%s' % (case_id, '\n'.join(problems))


def test_bad_input_count():
    assert len(BAD) >= 20


def test_every_problem_is_reported_at_once():
    desc = base(3)
    desc['subnets'] = ['192.168.100.5/24', '192.168.101.0/24']
    desc['interfaces'] = ['enp1s0f1np1', 'enP7s7']
    desc['tp_size'] = 2
    desc['dist_init_port'] = 70000
    host(desc, 'spark-01')['node_rank'] = '0'
    with pytest.raises(ClusterPlanError) as info:
        plan_cluster(desc)
    text = str(info.value)
    assert text.startswith('The cluster description has 6 problems:')
    for fragment in ('enP7s7 is the 10 GbE management port', 'write 192.168.100.0/24', 'is 70000, not a port',
                     "write spark_node_rank: 0 without quotes", 'set on host spark-01 but not on spark-02, spark-03',
                     'not divisible by the node count 3'):
        assert fragment in text, fragment


def test_empty_group():
    desc = base(1)
    desc['hosts'] = []
    with pytest.raises(ClusterPlanError) as info:
        plan_cluster(desc)
    assert info.value.problems == [
        "spark (inventory group) (no hosts): the group 'spark' has no hosts. Fix: add the Sparks under "
        "all.children.spark.hosts in the inventory, or set spark_group to the group that holds them."]


def test_input_is_not_modified():
    desc = base(3)
    host(desc, 'spark-01')['node_rank'] = 0
    host(desc, 'spark-02')['node_rank'] = 2
    host(desc, 'spark-03')['node_rank'] = 1
    before = copy.deepcopy(desc)
    plan_cluster(desc)
    assert desc == before


# ---- filter wrappers ---------------------------------------------------------------------------------

def test_filter_module_exposes_the_filters():
    filters = FilterModule().filters()
    assert set(filters) == {'cluster_plan', 'cluster_problems', 'cluster_consistency', 'cx7_twin', 'memory_fit'}
    assert filters['cluster_plan'](base(2))['head'] == 'spark-01'


def test_filter_raises_ansible_filter_error_with_all_problems():
    desc = base(2)
    desc['subnets'] = ['192.168.100.0/24', '192.168.100.0/24']
    desc['dist_init_port'] = 1
    with pytest.raises(AnsibleFilterError) as info:
        FilterModule().filters()['cluster_plan'](desc)
    assert 'has 2 problems' in str(info.value) and 'spark_dist_init_port' in str(info.value)


@pytest.mark.parametrize('name, twin', [
    ('enp1s0f1np1', 'enP2p1s0f1np1'), ('enP2p1s0f1np1', 'enp1s0f1np1'),
    ('enp1s0f0np0', 'enP2p1s0f0np0'), ('enP2p1s0f0np0', 'enp1s0f0np0'),
])
def test_cx7_twin(name, twin):
    assert cx7_twin(name) == twin
    assert FilterModule().filters()['cx7_twin'](name) == twin


@pytest.mark.parametrize('name', ['enP7s7', 'eth0', '', None, 'enP7p1s0f1np1'])
def test_cx7_twin_rejects_other_names(name):
    assert cx7_twin(name) is None
    with pytest.raises(AnsibleFilterError, match='not a CX7 twin name'):
        FilterModule().filters()['cx7_twin'](name)


# ---- cluster_consistency -----------------------------------------------------------------------------

def gb10(driver, count=1):
    return {'driver_version': driver, 'gpu_count': count,
            'gpus': [{'name': 'NVIDIA GB10', 'driver_version': driver}] * count}


def test_consistent_hosts_have_no_problems():
    assert consistency_problems({'spark-01': gb10('580.95.05'), 'spark-02': gb10('580.95.05')}, 1) == []


def test_driver_versions_differ_names_each_host_and_version():
    problems = consistency_problems({'spark-01': gb10('580.95.05'), 'spark-02': gb10('580.82.09'),
                                     'spark-03': gb10('580.95.05')}, 1)
    assert problems == [
        'NVIDIA driver version (hosts spark-01, spark-02, spark-03): hosts disagree on the driver version: '
        '580.82.09 on spark-02; 580.95.05 on spark-01, spark-03. '
        'Fix: install the same driver on all nodes (e.g. 580.95.05) and reboot them.']


def test_driver_version_read_from_gpus_list_and_counts_checked():
    problems = consistency_problems({'spark-01': {'gpus': [{'name': 'NVIDIA GB10', 'driver_version': '580.95.05'}]},
                                     'spark-02': {'gpu_count': 0, 'gpus': [], 'driver_version': '580.95.05'}}, 1)
    assert len(problems) == 1
    assert problems[0].startswith('preflight_expected_gpus_per_node (host spark-02): 0 GPU(s) found, 1 expected. Fix: ')


def test_mixed_gpu_models():
    h200 = {'driver_version': '580.95.05', 'gpu_count': 1, 'gpus': [{'name': 'NVIDIA H200'}]}
    problems = consistency_problems({'spark-01': gb10('580.95.05'), 'spark-02': h200})
    assert len(problems) == 1 and 'NVIDIA GB10 on spark-01; NVIDIA H200 on spark-02' in problems[0]


def test_cluster_consistency_filter_checks_its_argument():
    with pytest.raises(AnsibleFilterError, match='expected_gpus_per_node must be an integer'):
        FilterModule().filters()['cluster_consistency']({'a': gb10('1')}, '1')
    assert cluster.cluster_consistency({'a': gb10('1')}, 1) == []


# ---- tp/pp from sglang_server_args, ring successor, the list-returning filter --------------------------

@pytest.mark.parametrize('args, tp, pp', [
    ({'tp-size': 4, 'pp-size': 1}, 4, 1),
    ({'tp': 2, 'pp': 2}, 2, 2),
    ({'tensor-parallel-size': 4}, 4, 1),
    ({'mem-fraction-static': 0.75}, 4, 1),
])
def test_tp_and_pp_from_server_args(args, tp, pp):
    desc = base(2)
    del desc['tp_size'], desc['pp_size']
    desc.update(server_args=args, gpus_per_node=2)
    plan = plan_cluster(desc)
    assert (plan['tp_size'], plan['pp_size']) == (tp, pp)


def test_problem_names_the_server_args_key_the_user_wrote():
    desc = base(2)
    del desc['tp_size']
    desc['server_args'] = {'tp': 3}
    problems = FilterModule().filters()['cluster_problems'](desc)
    assert problems and all(p.startswith("sglang_server_args['tp'] (") for p in problems)
    assert FilterModule().filters()['cluster_problems'](base(2)) == []


def test_next_is_a_ring_in_rank_order():
    desc = base(3)
    for name, rank in (('spark-01', 1), ('spark-02', 2), ('spark-03', 0)):
        host(desc, name)['node_rank'] = rank
    nodes = plan_cluster(desc)['nodes']
    assert {n: v['next'] for n, v in nodes.items()} == {'spark-03': 'spark-01', 'spark-01': 'spark-02', 'spark-02': 'spark-03'}
    assert plan_cluster(base(1))['nodes']['spark-01']['next'] == 'spark-01'


def test_tp_size_set_twice_is_a_problem_of_the_plan():
    desc = base(2)
    desc['tp_size'] = 2
    desc['server_args'] = {'tp': 2, 'mem-fraction-static': 0.75}
    problems = FilterModule().filters()['cluster_problems'](desc)
    assert problems == ["sglang_server_tp_size (group vars of hosts spark-01, spark-02): sglang_server_tp_size and "
                        "sglang_server_args['tp'] both set --tp-size. Fix: keep sglang_server_tp_size and remove it "
                        "from sglang_server_args."]


def test_plan_hands_back_server_args_without_the_tp_size():
    desc = base(2)
    desc['server_args'] = {'tp-size': 2, 'mem-fraction-static': 0.75, 'pp-size': 1}
    assert plan_cluster(desc)['server_args'] == {'mem-fraction-static': 0.75, 'pp-size': 1}
