# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_cluster.py: the cluster plan for good inventories, every problem for bad ones.

Problems are compared by ``code``, ``variable`` and ``hosts`` (and by the data a message must carry, such as the
address to write), never by their wording. Probes are built like the registered results of gpu_info and connectx_info
(their RETURN docs; GB10 figures from the captures in tests/unit/fixtures/nvidia-smi). The plan is checked against
roles/preflight/meta/spark_cluster_plan.yml key by key, both ways.
"""

from __future__ import annotations

import copy
import json
import pathlib

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import (
    CLUSTER_INPUTS,
    DEFAULTS,
    HOST_INPUTS,
    INPUTS,
    check_description,
    complete_plan,
    node_probe,
    plan_cluster,
    plan_memory_fit,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, codes, errors, warnings

ROOT = pathlib.Path(__file__).resolve().parents[4]
PLAN_DOC = ROOT / 'roles' / 'preflight' / 'meta' / 'spark_cluster_plan.yml'
PREFLIGHT_SPEC = ROOT / 'roles' / 'preflight' / 'meta' / 'argument_specs.yml'

TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SPARK_RDMA = ['rocep1s0f1', 'roceP2p1s0f1']
SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']
MODEL = 'Qwen/Qwen2.5-7B-Instruct'
HF_PLACEHOLDER = '<your-hf-token>'
INTERNAL_TYPE_WORDS = ('_Ansible', 'Tagged', 'Lazy')


# ---- descriptions, as the preflight role builds them (cluster_inputs of hostvars) ---------------------------

# The model's pin before the probes (the staging part of the plan fills it at stage probed).
UNPINNED = {'requested': None, 'commit': None, 'files': None, 'bytes': None, 'weights_bytes': None, 'pinned_by': None}


def name_of(index):
    return 'spark-%02d' % (index + 1)


def describe(n=3, gpus=1, names=None, **group_vars):
    """The description of a group of ``n`` Sparks whose group vars are the good ones plus ``group_vars``.

    Cluster-wide inputs reach the plan once per host (what hostvars holds), so a group var is set on every host.
    More than two Sparks are joined through a switch (direct cabling joins two).
    """
    names = list(names or [name_of(i) for i in range(n)])
    values = {'spark_cx7_subnets': list(SUBNETS), 'sglang_server_model': MODEL}
    if len(names) > 2:
        values['spark_cx7_topology'] = 'switch'
    values.update(group_vars)
    return {
        'cluster': 'spark',
        'hosts': [{'name': name, 'vars': dict(copy.deepcopy(values), ansible_host='10.0.0.%d' % (11 + i))}
                  for i, name in enumerate(names)],
        'play_hosts': list(names),
        'gpus_per_node': gpus,
    }


def host(desc, name):
    """The vars of one host of a description."""
    return next(h for h in desc['hosts'] if h['name'] == name)['vars']


def group(desc, **values):
    """Set group vars: the same value on every host."""
    for h in desc['hosts']:
        h['vars'].update(copy.deepcopy(values))


def refused(desc):
    """The problems of a description plan_cluster refuses (every one of them, errors first)."""
    with pytest.raises(ProblemsError) as info:
        plan_cluster(desc)
    assert info.value.problems, 'ProblemsError without problems'
    return info.value.problems


def show(problems):
    return '\n'.join('[%s] %s' % (p['code'], p['message']) for p in problems)


def cluster(plan):
    """The plan's one group (every description holds one)."""
    (group_plan,) = plan['groups'].values()
    return group_plan


# ---- probes, as gpu_info and connectx_info return them (registered with failed_when: false) --------------------

GB10_MIB = int(round(127600748 / 1024.0))   # MemTotal of a DGX Spark's /proc/meminfo, as gpu_info reports it
H200_MIB = 143771


def gb10_gpu(driver='580.95.05', count=1, model='NVIDIA GB10', dgx_os=True, memory_mib=GB10_MIB):
    """A successful gpu_info result (exit_json: driver_state ready)."""
    gpu = {'index': 0, 'name': model, 'uuid': 'GPU-e4e580be-0d3f-e3b4-f9cf-e490971cd5d9', 'pci_bus_id': '0000000F:01:00.0',
           'compute_capability': '12.1', 'memory_total_mib': memory_mib, 'memory_used_mib': 8823,
           'memory_available_mib': memory_mib - 8823, 'unified_memory': model == 'NVIDIA GB10', 'temperature_c': 41,
           'power_draw_w': 11.17, 'persistence_mode': True, 'mig_mode': None}
    return {'changed': False, 'failed': False, 'driver_state': 'ready', 'dgx_os': dgx_os, 'gpu_count': count,
            'driver_version': driver, 'cuda_version': '13.0', 'gpus': [dict(gpu, index=i) for i in range(count)]}


def gpu_failed(state='absent', dgx_os=False):
    """A failed gpu_info result (fail_json: driver_state and msg, no GPUs)."""
    msg = {
        'absent': 'nvidia-smi not found on PATH (driver not installed?): install the NVIDIA driver (on DGX OS it comes '
                  'preinstalled), or set nvidia_smi_path to the nvidia-smi binary',
        'not-loaded': "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
        'mismatch': 'Failed to initialize NVML: Driver/library version mismatch',
    }.get(state, 'nvidia-smi failed')
    return {'changed': False, 'failed': True, 'driver_state': state, 'dgx_os': dgx_os, 'msg': msg}


def interface(name, ipv4, rdma_device):
    return {'name': name, 'present': True, 'twin': TWINS[1 - TWINS.index(name)] if name in TWINS else None,
            'operstate': 'up', 'speed_mbps': 200000, 'mtu': 9000, 'mac': '5a:e8:b3:97:c5:33', 'driver': 'mlx5_core',
            'pci_address': '0000:01:00.1', 'ipv4': list(ipv4), 'ipv6': [], 'rdma_device': rdma_device,
            'rdma_port_state': 'ACTIVE' if rdma_device else None, 'link_layer': 'Ethernet' if rdma_device else None,
            'roce_v2_gid_index': 3 if rdma_device else None, 'problems': []}


def cx7_result(addresses=None, rdma=True):
    """A connectx_info result for the two twins: ``addresses`` holds each twin's ipv4 list (address/prefix)."""
    addresses = addresses or [[], []]
    devices = list(SPARK_RDMA) if rdma else []
    ifaces = [interface(name, addrs, devices[i] if rdma else None) for i, (name, addrs) in enumerate(zip(TWINS, addresses))]
    return {'changed': False, 'failed': False, 'interfaces': ifaces, 'rdma_devices': devices, 'healthy': True,
            'problems': []}


def converged(node):
    """What connectx_info finds on a node that already carries its planned addresses."""
    return [[twin['address']] for twin in node['cx7_interfaces']]


def probes(plan, gpu=None, rdma=True, addresses=True):
    """{host: {'gpu', 'cx7'}} for every node of a plan; ``gpu(name)`` gives a node's gpu_info result."""
    return {name: {'gpu': gpu(name) if gpu else gb10_gpu(),
                   'cx7': cx7_result(converged(node) if addresses else None, rdma)}
            for name, node in plan['nodes'].items()}


def probed_refused(plan, probe_map, **kwargs):
    with pytest.raises(ProblemsError) as info:
        complete_plan(plan, probe_map, **kwargs)
    return info.value.problems


# ---- good inventories --------------------------------------------------------------------------------

def test_two_sparks_like_design_md():
    plan = plan_cluster(describe(2))
    spark = cluster(plan)
    assert spark['nnodes'] == 2 and spark['head'] == 'spark-01' and spark['hosts'] == ['spark-01', 'spark-02']
    assert spark['dist_init_addr'] == '192.168.100.11:20000'
    assert spark['tp_size'] == 2 and spark['pp_size'] == 1 and spark['total_gpus'] == 2
    assert plan['nodes']['spark-02'] == {
        'group': 'spark',
        'node_rank': 1,
        'management_address': '10.0.0.12',
        'cx7_addresses': ['192.168.100.12', '192.168.101.12'],
        'cx7_interfaces': [
            {'name': 'enp1s0f1np1', 'address': '192.168.100.12/24', 'ip': '192.168.100.12', 'subnet': '192.168.100.0/24'},
            {'name': 'enP2p1s0f1np1', 'address': '192.168.101.12/24', 'ip': '192.168.101.12', 'subnet': '192.168.101.0/24'},
        ],
        'cx7_addresses_from': 'spark_cx7_subnets',
        'host_ip': '192.168.100.12',
        'next': 'spark-01',
        'probe': None,
        'nccl_env': None,
        'staging': None,
    }
    assert plan['nodes']['spark-01']['cx7_addresses'] == ['192.168.100.11', '192.168.101.11']
    assert plan['stage'] == 'description' and plan['problems'] == []


def test_explicit_ranks_reorder_and_pick_the_head():
    desc = describe(3)
    for name, rank in (('spark-01', 2), ('spark-02', 0), ('spark-03', 1)):
        host(desc, name)['spark_node_rank'] = rank
    plan = plan_cluster(desc)
    spark = cluster(plan)
    assert spark['head'] == 'spark-02'
    assert spark['hosts'] == ['spark-02', 'spark-03', 'spark-01']
    assert plan['nodes']['spark-01']['cx7_addresses'] == ['192.168.100.13', '192.168.101.13']
    assert spark['dist_init_addr'] == '192.168.100.11:20000'
    assert {n: v['node_rank'] for n, v in plan['nodes'].items()} == {'spark-02': 0, 'spark-03': 1, 'spark-01': 2}
    # The old plan's peers of spark-03 (every other node, in rank order) follow from the group's hosts.
    assert [n for n in spark['hosts'] if n != 'spark-03'] == ['spark-02', 'spark-01']


def test_explicit_addresses_mix_with_computed_ones():
    desc = describe(2, spark_dist_init_port=29500, sglang_server_tp_size=2)
    host(desc, 'spark-01')['spark_cx7_addresses'] = ['192.168.100.50', '192.168.101.50']
    plan = plan_cluster(desc)
    assert cluster(plan)['dist_init_addr'] == '192.168.100.50:29500'
    assert plan['nodes']['spark-01']['cx7_addresses_from'] == 'spark_cx7_addresses'
    assert plan['nodes']['spark-01']['host_ip'] == '192.168.100.50'
    assert plan['nodes']['spark-02']['cx7_addresses'] == ['192.168.100.12', '192.168.101.12']
    assert plan['nodes']['spark-02']['cx7_addresses_from'] == 'spark_cx7_subnets'


def test_single_twin_and_small_subnet_that_fits():
    # host parts 1 .. 14: .11 and .12 fit
    plan = plan_cluster(describe(2, spark_cx7_interfaces=['enp1s0f0np0'], spark_cx7_subnets=['172.16.0.0/28']))
    assert plan['nodes']['spark-02']['cx7_interfaces'] == [
        {'name': 'enp1s0f0np0', 'address': '172.16.0.12/28', 'ip': '172.16.0.12', 'subnet': '172.16.0.0/28'}]
    assert plan['interfaces'] == ['enp1s0f0np0'] and plan['subnets'] == ['172.16.0.0/28']


def test_defaults_and_dns_management_name():
    desc = describe(1)
    del desc['gpus_per_node']
    host(desc, 'spark-01')['ansible_host'] = 'spark-01.lan'
    plan = plan_cluster(desc)
    spark = cluster(plan)
    assert plan['interfaces'] == TWINS and spark['dist_init_addr'] == '192.168.100.11:20000'
    assert spark['nnodes'] == 1 and spark['tp_size'] == 1 and spark['pp_size'] == 1 and spark['gpus_per_node'] == 1
    assert plan['nodes']['spark-01']['management_address'] == 'spark-01.lan'
    assert spark['head_url'] == 'http://spark-01.lan:30000' and spark['url'] == 'http://127.0.0.1:30000'
    # A one-node group has no peers: the ring comes back to the node itself.
    assert spark['hosts'] == ['spark-01'] and plan['nodes']['spark-01']['next'] == 'spark-01'
    # Every default of DEFAULTS reaches the plan where the plan carries it.
    assert (plan['mtu'], plan['expected_speed_mbps'], plan['topology'], plan['nccl_env_file'], plan['allowed_cidrs']) == (
        DEFAULTS['cx7_network_mtu'], DEFAULTS['spark_cx7_expected_speed_mbps'], DEFAULTS['spark_cx7_topology'],
        DEFAULTS['nccl_env_file'], DEFAULTS['spark_allowed_cidrs'])
    assert (spark['port'], spark['host'], spark['runtime'], spark['image'], spark['python'], spark['service'],
            spark['config_dir'], spark['dist_init_port']) == (
        DEFAULTS['sglang_server_port'], DEFAULTS['sglang_server_host'], DEFAULTS['sglang_server_runtime'],
        DEFAULTS['sglang_server_image'], DEFAULTS['sglang_server_native_python'],
        DEFAULTS['sglang_server_service_name'], DEFAULTS['sglang_server_config_dir'], DEFAULTS['spark_dist_init_port'])
    assert spark['model'] == {'path': MODEL, 'local': False, 'revision': None, 'served_name': MODEL,
                              'source_host': 'spark-01', 'size_gb': None, **UNPINNED}


def test_tp_and_pp_with_several_gpus_per_node():
    spark = cluster(plan_cluster(describe(2, gpus=4, sglang_server_args={'pp-size': 2})))
    assert (spark['tp_size'], spark['pp_size'], spark['total_gpus']) == (4, 2, 8)


def test_model_path_revision_and_served_name():
    spark = cluster(plan_cluster(describe(
        2, sglang_server_model=' /models/qwen ', sglang_server_model_revision='main', sglang_server_model_size_gb=15.2,
        spark_model_source_host='spark-02', sglang_server_args={'served-model-name': 'qwen'})))
    assert spark['model'] == {'path': '/models/qwen', 'local': True, 'revision': None, 'served_name': 'qwen',
                              'source_host': 'spark-02', 'size_gb': 15.2, **UNPINNED}


def test_ssl_certfile_makes_the_urls_https():
    spark = cluster(plan_cluster(describe(
        2, sglang_server_args={'ssl-certfile': '/etc/sglang/cert.pem', 'ssl-keyfile': '/etc/sglang/key.pem'},
        sglang_server_host='10.0.0.11')))
    assert spark['scheme'] == 'https'
    assert spark['url'] == 'https://10.0.0.11:30000' and spark['head_url'] == 'https://10.0.0.11:30000'


def test_sglang_server_tls_makes_the_urls_https_and_names_the_files_on_the_nodes():
    spark = cluster(plan_cluster(describe(2, sglang_server_tls=True, sglang_server_config_dir='/etc/sg/')))
    assert spark['scheme'] == 'https'
    assert spark['url'] == 'https://127.0.0.1:30000' and spark['head_url'] == 'https://10.0.0.11:30000'
    assert spark['tls'] == {'certfile': '/etc/sg/tls-cert.pem', 'keyfile': '/etc/sg/tls-key.pem',
                            'cafile': '/etc/sg/tls-ca.pem'}
    plain = cluster(plan_cluster(describe(2)))
    assert plain['tls'] is None and plain['scheme'] == 'http' and plain['url'] == 'http://127.0.0.1:30000'


@pytest.mark.parametrize('values, code', [
    ({'sglang_server_tls': 'true'}, 'tls-invalid'),   # -e sglang_server_tls=true is a string
    ({'sglang_server_tls': True, 'sglang_server_args': {'ssl-certfile': '/c.pem', 'ssl-keyfile': '/k.pem'}}, 'tls-twice'),
])
def test_sglang_server_tls_refused(values, code):
    problems = refused(describe(2, **values))
    assert codes(errors(problems)) == [code], show(problems)
    assert problems[0]['variable'] == 'sglang_server_tls'


# ---- bad inventories: each names the variable, the host(s) and the fix ----------------------------------

def _addresses(name, addrs):
    def mutate(desc):
        host(desc, name)['spark_cx7_addresses'] = addrs
    return mutate


def _ranks(*ranks):
    def mutate(desc):
        for h, rank in zip(desc['hosts'], ranks):
            if rank is None:
                h['vars'].pop('spark_node_rank', None)
            else:
                h['vars']['spark_node_rank'] = rank
    return mutate


def _set(**values):
    def mutate(desc):
        group(desc, **values)
    return mutate


def _mgmt(name, address):
    def mutate(desc):
        host(desc, name)['ansible_host'] = address
    return mutate


def _host_var(name, **values):
    def mutate(desc):
        host(desc, name).update(copy.deepcopy(values))
    return mutate


def _both(*mutations):
    def mutate(desc):
        for m in mutations:
            m(desc)
    return mutate


ALL3 = ['spark-01', 'spark-02', 'spark-03']

# id, mutation of a good 3-node description, code, variable, hosts of the problem, data its message carries
BAD = [
    ('duplicate_cx7_address_across_hosts',
     _both(_addresses('spark-01', ['192.168.100.20', '192.168.101.20']),
           _addresses('spark-02', ['192.168.100.20', '192.168.101.21'])),
     'cx7-address-twice', 'spark_cx7_addresses', ['spark-01', 'spark-02'], ['192.168.100.20']),
    ('addresses_swapped_between_twins', _addresses('spark-02', ['192.168.101.12', '192.168.100.12']),
     'cx7-addresses-order', 'spark_cx7_addresses', ['spark-02'], ['[192.168.100.12, 192.168.101.12]']),
    ('address_outside_twin_subnet', _addresses('spark-02', ['192.168.100.12', '192.168.102.12']),
     'cx7-address-outside-subnet', 'spark_cx7_addresses', ['spark-02'], ['192.168.102.12', '192.168.101.0/24']),
    ('address_is_network_address', _addresses('spark-02', ['192.168.100.0', '192.168.101.12']),
     'cx7-address-reserved', 'spark_cx7_addresses', ['spark-02'], ['192.168.100.0/24', '192.168.100.1', '192.168.100.254']),
    ('address_prefix_differs_from_subnet', _addresses('spark-03', ['192.168.100.13/16', '192.168.101.13']),
     'cx7-address-prefix', 'spark_cx7_addresses', ['spark-03'], ['192.168.100.13/16']),
    ('same_subnet_on_both_twins', _set(spark_cx7_subnets=['192.168.100.0/24', '192.168.100.0/24']),
     'cx7-subnet-twice', 'spark_cx7_subnets', ALL3, ['192.168.100.0/24']),
    ('overlapping_subnets', _set(spark_cx7_subnets=['192.168.0.0/16', '192.168.101.0/24']),
     'cx7-subnet-overlap', 'spark_cx7_subnets', ALL3, ['192.168.0.0/16', '192.168.101.0/24']),
    ('subnet_count_differs_from_interfaces', _set(spark_cx7_subnets=['192.168.100.0/24']),
     'cx7-subnets-count', 'spark_cx7_subnets', ALL3, ['enp1s0f1np1', 'enP2p1s0f1np1']),
    ('address_count_differs_from_interfaces', _addresses('spark-01', ['192.168.100.11']),
     'cx7-addresses-count', 'spark_cx7_addresses', ['spark-01'], ['enp1s0f1np1', 'enP2p1s0f1np1']),
    ('malformed_address', _addresses('spark-02', ['192.168.100', '192.168.101.12']),
     'cx7-address-invalid', 'spark_cx7_addresses', ['spark-02'], ["'192.168.100'", 'enp1s0f1np1', '192.168.100.12']),
    ('address_not_a_list', _addresses('spark-02', '192.168.100.12'),
     'cx7-addresses-not-list', 'spark_cx7_addresses', ['spark-02'], ['[192.168.100.12, 192.168.101.12]']),
    ('malformed_subnet', _set(spark_cx7_subnets=['192.168.100.0/33', '192.168.101.0/24']),
     'cx7-subnet-invalid', 'spark_cx7_subnets', ALL3, ['192.168.100.0/33']),
    ('subnet_without_prefix', _set(spark_cx7_subnets=['192.168.100.0', '192.168.101.0/24']),
     'cx7-subnet-invalid', 'spark_cx7_subnets', ALL3, ["'192.168.100.0'"]),
    ('subnet_with_host_bits', _set(spark_cx7_subnets=['192.168.100.5/24', '192.168.101.0/24']),
     'cx7-subnet-host-bits', 'spark_cx7_subnets', ALL3, ['192.168.100.5/24', 'write 192.168.100.0/24']),
    ('management_address_used_as_own_cx7_address', _mgmt('spark-02', '192.168.100.12'),
     'management-address-is-cx7', 'ansible_host', ['spark-02'], ['192.168.100.12']),
    ('management_address_used_as_other_hosts_cx7_address',
     _both(_mgmt('spark-03', '10.0.0.99'), _set(spark_cx7_subnets=['10.0.0.0/25', '192.168.101.0/24']),
           _addresses('spark-01', ['10.0.0.99', '192.168.101.11']), _mgmt('spark-01', '172.20.0.1'),
           _mgmt('spark-02', '172.20.0.2')),
     'management-address-is-cx7', 'ansible_host', ['spark-01', 'spark-03'], ['10.0.0.99', "spark-01's"]),
    ('management_address_inside_cx7_subnet', _mgmt('spark-03', '192.168.101.200'),
     'management-address-in-cx7-subnet', 'ansible_host', ['spark-03'],
     ['192.168.101.200', '192.168.101.0/24', 'enP2p1s0f1np1']),
    ('duplicate_management_address', _mgmt('spark-03', '10.0.0.12'),
     'management-address-twice', 'ansible_host', ['spark-02', 'spark-03'], ['10.0.0.12']),
    ('duplicate_ranks', _ranks(0, 1, 1),
     'rank-twice', 'spark_node_rank', ['spark-02', 'spark-03'], ['rank 1', 'from 0 to 2']),
    ('gapped_ranks', _ranks(0, 2, 3),
     'rank-invalid', 'spark_node_rank', ['spark-03'], ['is 3', '0 .. 2']),
    ('negative_rank', _ranks(0, -1, 1),
     'rank-invalid', 'spark_node_rank', ['spark-02'], ['-1', '0 .. 2']),
    ('quoted_rank', _ranks(0, '1', 2),
     'rank-invalid', 'spark_node_rank', ['spark-02'], ["'1'", 'write 1 without quotes']),
    ('boolean_rank', _ranks(0, True, 2),
     'rank-invalid', 'spark_node_rank', ['spark-02'], ['from 0 to 2']),
    ('rank_on_some_hosts_only', _ranks(0, None, None),
     'rank-partial', 'spark_node_rank', ['spark-02', 'spark-03'], ['spark-01', 'spark-02, spark-03']),
    ('tp_not_divisible_by_nnodes', _set(sglang_server_tp_size=2),
     'tp-size-not-divisible', 'sglang_server_tp_size', ALL3, ['2 x 1 = 2', 'node count 3', 'multiple of 3']),
    ('tp_larger_than_total_gpus', _set(sglang_server_tp_size=6),
     'tp-size-too-large', 'sglang_server_tp_size', ALL3, ['3 nodes x 1 GPU = 3', 'at most 3']),
    ('quoted_tp', _set(sglang_server_tp_size='3'),
     'tp-size-invalid', 'sglang_server_tp_size', ALL3, ["'3'", 'write 3 without quotes']),
    ('management_port_as_cx7_interface', _set(spark_cx7_interfaces=['enp1s0f1np1', 'enP7s7']),
     'cx7-interface-not-cx7', 'spark_cx7_interfaces', ALL3, ['enP7s7', '10 GbE management port']),
    ('unknown_interface_eth0', _set(spark_cx7_interfaces=['eth0', 'enP2p1s0f1np1']),
     'cx7-interface-not-cx7', 'spark_cx7_interfaces', ALL3, ['eth0']),
    ('duplicate_interface', _set(spark_cx7_interfaces=['enp1s0f1np1', 'enp1s0f1np1']),
     'cx7-interface-twice', 'spark_cx7_interfaces', ALL3, ['enp1s0f1np1', 'enP2p1s0f1np1']),
    ('dist_port_privileged', _set(spark_dist_init_port=80),
     'port-invalid', 'spark_dist_init_port', ALL3, ['80', '1024', '65535']),
    ('dist_port_quoted', _set(spark_dist_init_port='20000'),
     'port-invalid', 'spark_dist_init_port', ALL3, ["'20000'", 'write 20000 without quotes']),
    ('subnet_too_small_for_nodes', _set(spark_cx7_subnets=['192.168.100.0/30', '192.168.101.0/24']),
     'cx7-subnet-too-small', 'spark_cx7_subnets', ALL3, ['192.168.100.0/30', 'enp1s0f1np1', '3 nodes']),
    ('computed_address_collides_with_explicit_one', _addresses('spark-01', ['192.168.100.12', '192.168.101.12']),
     'cx7-address-clash', 'spark_cx7_addresses', ['spark-01', 'spark-02'], ['192.168.100.12', 'spark-02 (rank 1)']),
    ('host_vars_override_of_group_subnets',
     _host_var('spark-02', spark_cx7_subnets=['192.168.200.0/24', '192.168.201.0/24']),
     'host-vars-disagree', 'spark_cx7_subnets', ['spark-02'],
     ["spark-01, spark-03: ['192.168.100.0/24', '192.168.101.0/24']", "spark-02: ['192.168.200.0/24'",
      'group vars of spark']),
    ('host_vars_override_on_the_first_host',
     _host_var('spark-01', spark_cx7_interfaces=['enp1s0f0np0', 'enP2p1s0f0np0']),
     'host-vars-disagree', 'spark_cx7_interfaces', None,
     ["spark-01: ['enp1s0f0np0', 'enP2p1s0f0np0']", "spark-02, spark-03: ['enp1s0f1np1', 'enP2p1s0f1np1']",
      'group vars of spark']),
    # Added with the move to module_utils.
    ('ipv6_subnet', _set(spark_cx7_subnets=['fd00:100::/64', '192.168.101.0/24']),
     'cx7-subnet-ipv6', 'spark_cx7_subnets', ALL3, ['fd00:100::/64', '192.168.100.0/24']),
    ('mtu_too_large', _set(cx7_network_mtu=16000),
     'mtu-invalid', 'cx7_network_mtu', ALL3, ['16000', '9216']),
    ('http_port_out_of_range', _set(sglang_server_port=70000),
     'port-invalid', 'sglang_server_port', ALL3, ['70000', '65535']),
    ('dist_init_port_is_the_http_port', _set(spark_dist_init_port=30000),
     'port-clash', 'spark_dist_init_port', ALL3, ['30000', 'sglang_server_port']),
    ('pp_larger_than_total_gpus', _set(sglang_server_args={'pp-size': 8}),
     'pp-size-too-large', "sglang_server_args['pp-size']", ALL3, ['pp-size 8', '3 nodes x 1 GPU = 3', 'at most 3']),
    ('model_empty', _set(sglang_server_model=''),
     'model-missing', 'sglang_server_model', ALL3, ['group vars of spark']),
    ('model_unset', lambda desc: [h['vars'].pop('sglang_server_model') for h in desc['hosts']],
     'model-missing', 'sglang_server_model', ALL3, []),
    ('hf_token_placeholder', _set(sglang_server_hf_token=HF_PLACEHOLDER),
     'secret-placeholder', 'sglang_server_hf_token', ALL3, []),
    ('play_host_outside_the_group', lambda desc: desc['play_hosts'].append('spark-09'),
     'play-host-outside-group', 'preflight_group', ['spark-09'], ['spark-09', 'spark']),
    ('variable_that_cannot_be_read',
     _host_var('spark-02', __errors__={'spark_cx7_subnets': "'cx7_base' is undefined"}),
     'variable-undefined', 'spark_cx7_subnets', ['spark-02'], ["'cx7_base' is undefined"]),
    ('gpus_per_node_zero', lambda desc: desc.update(gpus_per_node=0),
     'gpus-per-node-invalid', 'preflight_expected_gpus_per_node', ALL3, ['1 .. 64']),
    ('speed_negative', _set(spark_cx7_expected_speed_mbps=-5),
     'speed-invalid', 'spark_cx7_expected_speed_mbps', ALL3, ['-5']),
    ('topology_unknown', _set(spark_cx7_topology='ring'),
     'topology-invalid', 'spark_cx7_topology', ALL3, ["'ring'", 'direct', 'switch']),
    ('allowed_cidr_invalid', _set(spark_allowed_cidrs=['10.0.0.0/33']),
     'cidr-invalid', 'spark_allowed_cidrs', ALL3, ["'10.0.0.0/33'"]),
    ('nccl_env_file_relative', _set(nccl_env_file='etc/nccl.env'),
     'path-invalid', 'nccl_env_file', ALL3, ["'etc/nccl.env'"]),
    ('service_name_with_suffix', _set(sglang_server_service_name='sglang.service'),
     'service-name-invalid', 'sglang_server_service_name', ALL3, ["'sglang.service'"]),
    ('runtime_unknown', _set(sglang_server_runtime='podman'),
     'runtime-invalid', 'sglang_server_runtime', ALL3, ["'podman'"]),
    ('image_with_a_space', _set(sglang_server_image='a b'),
     'image-invalid', 'sglang_server_image', ALL3, ["'a b'"]),
    ('volumes_not_a_list', _set(sglang_server_container_volumes='/data:/data'),
     'volumes-invalid', 'sglang_server_container_volumes', ALL3, ["'/data:/data'"]),
    ('volume_relative_destination', _set(sglang_server_container_volumes=['/data:/data:ro', '/venv:venv']),
     'volumes-invalid', 'sglang_server_container_volumes', ALL3, ["'/venv:venv'"]),
    ('ulimit_unknown_name', _set(sglang_server_container_ulimits={'memlock': -1, 'mem-lock': -1}),
     'ulimits-invalid', 'sglang_server_container_ulimits', ALL3, ["'mem-lock'"]),
    ('ulimit_not_a_number', _set(sglang_server_container_ulimits={'memlock': 'unlimited'}),
     'ulimits-invalid', 'sglang_server_container_ulimits', ALL3, ["'unlimited'"]),
    ('listen_address_a_name', _set(sglang_server_host='localhost'),
     'listen-address-invalid', 'sglang_server_host', ALL3, ["'localhost'"]),
    ('model_not_an_id', _set(sglang_server_model='not a model'),
     'model-invalid', 'sglang_server_model', ALL3, ["'not a model'"]),
    ('model_revision_with_a_space', _set(sglang_server_model_revision='a b'),
     'model-revision-invalid', 'sglang_server_model_revision', ALL3, ["'a b'"]),
    ('model_size_negative', _set(sglang_server_model_size_gb=-1),
     'model-size-invalid', 'sglang_server_model_size_gb', ALL3, ['-1']),
    ('model_source_not_in_group', _set(spark_model_source_host='spark-09'),
     'model-source-unknown', 'spark_model_source_host', ALL3, ["'spark-09'"]),
    ('api_key_too_short', _set(sglang_server_api_key='short'),
     'secret-too-short', 'sglang_server_api_key', ALL3, []),
    # The checks of _sglang and _nccl, placed at the group.
    ('server_args_not_a_dict', _set(sglang_server_args=['mem-fraction-static']),
     'sglang-args-not-dict', 'sglang_server_args', ALL3, []),
    ('server_args_pp_is_no_sglang_flag', _set(sglang_server_args={'tp': 3, 'pp': 1}),
     'sglang-unknown-flag', "sglang_server_args['pp']", ALL3, ['pp-size']),
    ('server_args_bad_value', _set(sglang_server_args={'log-level': 'loud'}),
     'sglang-bad-value', "sglang_server_args['log-level']", ALL3, ['loud']),
    ('nccl_dead_variable', _set(nccl_env_extra={'NCCL_LL_THRESHOLD': 0}),
     'nccl-dead-variable', 'nccl_env_extra', ALL3, ['NCCL_LL_THRESHOLD']),
    ('nccl_debug_level', _set(nccl_env_debug='LOUD'),
     'nccl-debug-level', 'nccl_env_debug', ALL3, ["'LOUD'"]),
]

# One mistake, one problem: these slips still bring a follow-on problem (see the report of this test file).
FOLLOW_ON = {}


@pytest.mark.parametrize('case_id, mutate, code, variable, hosts, data', BAD, ids=[c[0] for c in BAD])
def test_bad_input_names_code_variable_hosts_and_fix(case_id, mutate, code, variable, hosts, data):
    desc = describe(3)
    mutate(desc)
    problems = refused(desc)
    matching = [p for p in problems if p['code'] == code and p['variable'] == variable]
    assert matching, '%s: no [%s] for %s in:\n%s' % (case_id, code, variable, show(problems))
    item = matching[0]
    assert item['severity'] == 'error'
    if hosts is not None:
        assert sorted(item['hosts']) == sorted(hosts), (case_id, item)
    for name in hosts or ALL3:
        assert name in item['message'], (case_id, name, item['message'])
    for fragment in data:
        assert fragment in item['message'], (case_id, fragment, item['message'])
    assert item['fix'] and 'Fix: ' in item['message']
    assert item['message'].startswith(variable + ' (')


@pytest.mark.parametrize('case_id, mutate', [
    pytest.param(c[0], c[1], marks=pytest.mark.xfail(strict=True, reason='BUG: ' + FOLLOW_ON[c[0]]))
    if c[0] in FOLLOW_ON else pytest.param(c[0], c[1])
    for c in BAD], ids=[c[0] for c in BAD])
def test_one_mistake_one_problem(case_id, mutate):
    desc = describe(3)
    mutate(desc)
    problems = refused(desc)
    assert len(problems) == 1, '%s: expected one problem, got:\n%s' % (case_id, show(problems))


def test_bad_input_count():
    assert len(BAD) >= 60
    assert len({c[2] for c in BAD}) >= 50


def test_every_problem_is_reported_at_once():
    desc = describe(3, spark_cx7_subnets=['192.168.100.5/24', '192.168.101.0/24'],
                    spark_cx7_interfaces=['enp1s0f1np1', 'enP7s7'], sglang_server_tp_size=2, spark_dist_init_port=70000)
    host(desc, 'spark-01')['spark_node_rank'] = '0'
    with pytest.raises(ProblemsError) as info:
        plan_cluster(desc)
    assert sorted(codes(info.value.problems)) == sorted([
        'cx7-interface-not-cx7', 'cx7-subnet-host-bits', 'port-invalid', 'rank-invalid', 'rank-partial',
        'tp-size-not-divisible'])
    text = str(info.value)
    assert text.startswith('The cluster description has 6 problems:')
    for item in info.value.problems:
        assert '%s [%s]' % (item['message'], item['code']) in text


def test_empty_group():
    desc = describe(1)
    desc['hosts'] = []
    problems = refused(desc)
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [('group-empty', 'preflight_group', [])]
    assert "'spark'" in problems[0]['message'] and 'all.children.spark.hosts' in problems[0]['fix']


@pytest.mark.parametrize('description', [None, [], 'spark', {'cluster': 'spark'}, {'cluster': 'spark', 'hosts': None}])
def test_no_description_or_no_hosts(description):
    problems, plan = check_description(description)
    assert plan is None and codes(problems) in (['plan-input-invalid'], ['group-empty'])


def test_input_is_not_modified():
    desc = describe(3, sglang_server_args={'tp-size': 3, 'mem-fraction-static': 0.75})
    for name, rank in (('spark-01', 0), ('spark-02', 2), ('spark-03', 1)):
        host(desc, name)['spark_node_rank'] = rank
    host(desc, 'spark-02')['__errors__'] = {}
    before = copy.deepcopy(desc)
    plan = plan_cluster(desc)
    assert desc == before
    # Nor does the plan share a mutable value with the input.
    cluster(plan)['server_args']['x'] = 1
    plan['interfaces'].append('x')
    assert desc == before


def test_plan_cluster_raises_only_errors_and_keeps_warnings():
    desc = describe(2, nccl_env_extra={'NCCL_MIN_NCHANNELS': 4})
    plan = plan_cluster(desc)
    assert codes(plan['problems']) == ['nccl-discouraged-variable']
    assert warnings(plan['problems']) == plan['problems']
    problems, _plan = check_description(desc)
    assert codes(problems) == ['nccl-discouraged-variable']


# ---- ranks, tp/pp, the ring, server_args ---------------------------------------------------------------

@pytest.mark.parametrize('ranks, order', [
    ((0, 1, 2), ['spark-01', 'spark-02', 'spark-03']),
    ((2, 1, 0), ['spark-03', 'spark-02', 'spark-01']),
    ((1, 2, 0), ['spark-03', 'spark-01', 'spark-02']),
    ((None, None, None), ['spark-01', 'spark-02', 'spark-03']),
])
def test_ranks_give_the_order_and_the_addresses(ranks, order):
    desc = describe(3)
    _ranks(*ranks)(desc)
    plan = plan_cluster(desc)
    assert cluster(plan)['hosts'] == order and cluster(plan)['head'] == order[0]
    for rank, name in enumerate(order):
        node = plan['nodes'][name]
        assert node['node_rank'] == rank
        assert node['cx7_addresses'] == ['192.168.100.%d' % (11 + rank), '192.168.101.%d' % (11 + rank)]
        assert node['next'] == order[(rank + 1) % 3]


@pytest.mark.parametrize('args, tp, pp', [
    ({'tp-size': 4, 'pp-size': 1}, 4, 1),
    ({'tp': 2, 'pp-size': 2}, 2, 2),
    ({'tensor-parallel-size': 4}, 4, 1),
    ({'pipeline-parallel-size': 2}, 2, 2),
    ({'mem-fraction-static': 0.75}, 4, 1),
])
def test_tp_and_pp_from_server_args(args, tp, pp):
    spark = cluster(plan_cluster(describe(2, gpus=2, sglang_server_args=args)))
    assert (spark['tp_size'], spark['pp_size']) == (tp, pp)


def test_problem_names_the_server_args_key_the_user_wrote():
    problems = refused(describe(2, sglang_server_args={'tp': 3}))
    assert [(p['code'], p['variable']) for p in problems] == [('tp-size-too-large', "sglang_server_args['tp']")]
    assert check_description(describe(2))[0] == []


def test_next_is_a_ring_in_rank_order():
    desc = describe(3)
    for name, rank in (('spark-01', 1), ('spark-02', 2), ('spark-03', 0)):
        host(desc, name)['spark_node_rank'] = rank
    nodes = plan_cluster(desc)['nodes']
    assert {n: v['next'] for n, v in nodes.items()} == {'spark-03': 'spark-01', 'spark-01': 'spark-02', 'spark-02': 'spark-03'}
    assert plan_cluster(describe(1))['nodes']['spark-01']['next'] == 'spark-01'


def test_tp_size_set_twice_is_a_problem_of_the_plan():
    problems = refused(describe(2, sglang_server_tp_size=2, sglang_server_args={'tp': 2, 'mem-fraction-static': 0.75}))
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [
        ('tp-size-twice', 'sglang_server_tp_size', ['spark-01', 'spark-02'])]
    assert "sglang_server_args['tp']" in problems[0]['message']


def test_plan_hands_back_server_args_without_the_tp_size():
    spark = cluster(plan_cluster(describe(2, sglang_server_args={'tp-size': 2, 'mem-fraction-static': 0.75, 'pp-size': 1})))
    assert spark['server_args'] == {'mem-fraction-static': 0.75, 'pp-size': 1}
    assert spark['tp_size'] == 2


def test_pp_size_larger_than_the_gpus_never_suggests_zero():
    for nodes, gpus, pp in ((1, 1, 2), (2, 1, 3), (3, 1, 8), (2, 4, 9)):
        problems = refused(describe(nodes, gpus=gpus, sglang_server_args={'pp-size': pp}))
        assert [(p['code'], p['variable']) for p in problems] == [('pp-size-too-large', "sglang_server_args['pp-size']")]
        assert 'at most %d' % (nodes * gpus) in problems[0]['fix']
        assert 'at most 0' not in problems[0]['message']


def test_pp_size_that_leaves_no_even_tp_blames_pp_size():
    problems = refused(describe(3, sglang_server_args={'pp-size': 2}))
    assert [p['variable'] for p in problems] == ["sglang_server_args['pp-size']"]


# ---- the secrets, the messages -------------------------------------------------------------------------

def test_placeholder_token_never_appears_in_a_message_or_the_plan():
    desc = describe(3, sglang_server_hf_token=HF_PLACEHOLDER, sglang_server_model='')
    problems = refused(desc)
    assert sorted(codes(problems)) == ['model-missing', 'secret-placeholder']
    for item in problems:
        assert HF_PLACEHOLDER not in json.dumps(item)
    # A host_vars override of a secret shows neither value.
    desc = describe(3, sglang_server_hf_token='hf_%s' % ('a' * 30))
    host(desc, 'spark-02')['sglang_server_hf_token'] = HF_PLACEHOLDER
    problems = refused(desc)
    assert codes(problems) == ['host-vars-disagree']
    assert HF_PLACEHOLDER not in json.dumps(problems) and 'hf_aaaa' not in json.dumps(problems)
    # A good token reaches no key of the plan.
    token = 'hf_%s' % ('b' * 30)
    plan = plan_cluster(describe(2, sglang_server_hf_token=token, sglang_server_api_key='k' * 32))
    assert token not in json.dumps(plan) and 'k' * 32 not in json.dumps(plan)


def _tagged(value):
    from ansible._internal._datatag._tags import Origin   # Ansible's own tagged str/int/list/dict
    return Origin(path='/inventory/group_vars/spark.yml', line_num=3).tag(value)


class _AnsibleLazyTemplateList(list):
    """Stands in for Ansible's lazy list (its name is what a message must never show)."""


class _AnsibleLazyTemplateDict(dict):
    """Stands in for Ansible's lazy dict."""


WRONG_KINDS = [None, True, 0, -1, 1.5, 70000, '', 'x', '3', [], [None], ['x'], {}, {'a': None}]


def _wrong_kinds():
    for value in WRONG_KINDS:
        yield value
        if isinstance(value, (str, int, list, dict)) and not isinstance(value, bool):
            yield _tagged(value)
        if isinstance(value, list):
            yield _AnsibleLazyTemplateList(value)
        if isinstance(value, dict):
            yield _AnsibleLazyTemplateDict(value)


@pytest.mark.parametrize('var', INPUTS)
def test_messages_never_show_internal_types_or_empty_ranges(var):
    """Whatever kind of value an input holds, the messages speak of it in words a user knows."""
    for value in _wrong_kinds():
        desc = describe(3)
        if var in HOST_INPUTS:
            host(desc, 'spark-02')[var] = value
        else:
            for h in desc['hosts']:
                h['vars'][var] = value
        problems, _plan = check_description(desc)
        for item in problems:
            for word in INTERNAL_TYPE_WORDS + ('1 .. 0', 'at most 0', 'for 0 interface', 'for the 0 twins',
                                               'subnet(s) for 0', 'object at 0x'):
                assert word not in item['message'], (var, value, item['message'])
            assert set(item) == {'code', 'variable', 'where', 'hosts', 'severity', 'what', 'fix', 'message'}


def test_messages_of_an_empty_interface_list_never_count_zero_twins():
    for interfaces in ([], None, [None, ''], 'enp1s0f1np1'):
        problems, plan = check_description(describe(2, spark_cx7_interfaces=interfaces))
        assert plan is None
        assert codes(problems)[0] in ('cx7-interfaces-not-list', 'cx7-interface-not-name'), show(problems)
        assert 'cx7-subnets-count' not in codes(problems), show(problems)
        for item in problems:
            assert 'for 0' not in item['message'] and '0 twins' not in item['message'], item['message']


# ---- host_vars overrides of cluster-wide inputs, the play, unreadable variables ----------------------------

# A valid value for every cluster-wide input that differs from the group's: set on one host only.
OTHER_VALUE = {
    'spark_cx7_interfaces': ['enp1s0f0np0', 'enP2p1s0f0np0'],
    'spark_cx7_subnets': ['192.168.200.0/24', '192.168.201.0/24'],
    'spark_cx7_topology': 'direct',
    'spark_cx7_expected_speed_mbps': 100000,
    'spark_dist_init_port': 29500,
    'spark_allowed_cidrs': ['10.0.0.0/24'],
    'spark_model_source_host': 'spark-02',
    'cx7_network_mtu': 1500,
    'nccl_env_file': '/etc/nccl.env',
    'sglang_server_model': 'Qwen/Qwen2.5-72B-Instruct',
    'sglang_server_model_revision': 'main',
    'sglang_server_model_size_gb': 145,
    'sglang_server_memory_reserve_gib': 8,
    'sglang_server_args': {'mem-fraction-static': 0.8},
    'sglang_server_args_override': 'mem-fraction-static: 0.8',
    'sglang_server_tp_size': 1,
    'sglang_server_host': '127.0.0.1',
    'sglang_server_port': 30001,
    'sglang_server_enable_metrics': False,
    'sglang_server_runtime': 'native',
    'sglang_server_image': 'lmsysorg/sglang:latest',
    'sglang_server_container_volumes': ['/data:/data:ro'],
    'sglang_server_container_ulimits': {'memlock': 8388608},
    'sglang_server_native_python': '/usr/bin/python3',
    'sglang_server_service_name': 'sglang2',
    'sglang_server_config_dir': '/etc/sglang2',
    'spark_hf_endpoint': 'https://hf-mirror.example.com',
    'spark_http_proxy': 'http://proxy.example.com:3128',
    'spark_https_proxy': 'http://proxy.example.com:3128',
    'spark_no_proxy': ['.example.com'],
    'sglang_server_model_refresh': True,
    'sglang_server_tls': True,
    'sglang_server_cache_dir': '/data/hf',
    'sglang_server_image_size_gb': 25,
    'nccl_env_extra': {'NCCL_DEBUG_SUBSYS': 'INIT'},
    'nccl_env_deliberate': ['NCCL_FUTURE_KNOB'],
    'nccl_env_debug': 'INFO',
    'nccl_env_ib_disable': True,
    'sglang_server_hf_token': 'hf_%s' % ('c' * 30),
    'sglang_server_api_key': 'k' * 32,
    'sglang_server_shm_size': '64g',
}


def test_every_cluster_wide_input_has_an_override_case():
    assert set(OTHER_VALUE) == set(CLUSTER_INPUTS)


@pytest.mark.parametrize('var', CLUSTER_INPUTS)
def test_host_vars_override_of_a_cluster_wide_input(var):
    desc = describe(3)
    host(desc, 'spark-02')[var] = copy.deepcopy(OTHER_VALUE[var])
    problems = refused(desc)
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [('host-vars-disagree', var, ['spark-02'])]
    assert 'spark-01, spark-03' in problems[0]['message']
    if var in _cluster.SECRET_INPUTS:
        assert OTHER_VALUE[var] not in problems[0]['message'] and '(hidden)' in problems[0]['message']


def test_the_same_value_on_every_host_is_not_an_override():
    desc = describe(3, sglang_server_port=30001)
    assert plan_cluster(desc)['groups']['spark']['port'] == 30001
    # A host that sets the default explicitly agrees with hosts that leave it out.
    desc = describe(3)
    host(desc, 'spark-02')['cx7_network_mtu'] = DEFAULTS['cx7_network_mtu']
    assert plan_cluster(desc)['mtu'] == DEFAULTS['cx7_network_mtu']


def test_play_hosts_inside_the_group_are_fine():
    desc = describe(3)
    desc['play_hosts'] = ['spark-02']
    assert plan_cluster(desc)['groups']['spark']['hosts'] == ALL3
    desc['play_hosts'] = ['spark-02', 'other-01', 'other-02']
    problems = refused(desc)
    assert [(p['code'], p['hosts']) for p in problems] == [('play-host-outside-group', ['other-01', 'other-02'])]


# ---- growing a group -------------------------------------------------------------------------------------

@pytest.mark.parametrize('n', [1, 2, 3, 4, 7])
def test_a_node_added_at_the_end_changes_no_existing_node(n):
    before = plan_cluster(describe(n))
    after = plan_cluster(describe(n + 1))
    kept = ('group', 'node_rank', 'management_address', 'cx7_addresses', 'cx7_interfaces', 'cx7_addresses_from', 'host_ip')
    for name, node in before['nodes'].items():
        assert {k: after['nodes'][name][k] for k in kept} == {k: node[k] for k in kept}, name
    assert cluster(after)['head'] == cluster(before)['head']
    assert cluster(after)['dist_init_addr'] == cluster(before)['dist_init_addr']
    assert cluster(after)['hosts'][:n] == cluster(before)['hosts']
    # The converged nodes keep their addresses: the probes of the grown group find nothing to readdress.
    grown = probes(after)
    grown[name_of(n)]['cx7'] = cx7_result()   # the new node has no address yet
    assert complete_plan(after, grown)['problems'] == []


INSERTED = ['spark-01', 'spark-new', 'spark-02', 'spark-03']


def _inserted_probes(old):
    """The probes of the grown group: the old nodes still carry their old addresses, the new one none."""
    return {name: {'gpu': gb10_gpu(), 'cx7': cx7_result(converged(old['nodes'][name]) if name in old['nodes'] else None)}
            for name in INSERTED}


def test_a_node_inserted_in_a_converged_group_is_refused():
    old = plan_cluster(describe(3))
    new = plan_cluster(describe(names=INSERTED))
    problems = probed_refused(new, _inserted_probes(old))
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [
        ('cx7-readdress', 'spark_cx7_addresses', ['spark-02']), ('cx7-readdress', 'spark_cx7_addresses', ['spark-03'])]
    # Each names what the node has and what it would keep when pinned.
    assert '192.168.100.12/24' in problems[0]['what'] and '192.168.100.13/24' in problems[0]['what']
    assert '[192.168.100.12, 192.168.101.12]' in problems[0]['fix']
    assert '[192.168.100.13, 192.168.101.13]' in problems[1]['fix']


def test_a_node_inserted_in_a_group_with_pinned_addresses_is_fine():
    old = plan_cluster(describe(3))
    desc = describe(names=INSERTED)
    for h in desc['hosts']:
        h['vars']['spark_cx7_addresses'] = (old['nodes'][h['name']]['cx7_addresses'] if h['name'] in old['nodes']
                                            else ['192.168.100.14', '192.168.101.14'])
    done = complete_plan(plan_cluster(desc), _inserted_probes(old))
    assert done['problems'] == []
    assert {n: (v['node_rank'], v['cx7_addresses']) for n, v in done['nodes'].items()} == {
        'spark-01': (0, ['192.168.100.11', '192.168.101.11']),
        'spark-new': (1, ['192.168.100.14', '192.168.101.14']),
        'spark-02': (2, ['192.168.100.12', '192.168.101.12']),
        'spark-03': (3, ['192.168.100.13', '192.168.101.13']),
    }


def test_a_fresh_group_has_nothing_to_readdress():
    plan = plan_cluster(describe(names=INSERTED))
    assert complete_plan(plan, probes(plan, addresses=False))['problems'] == []


# ---- stage probed: the nodes together ----------------------------------------------------------------------

def test_consistent_nodes_have_no_problems():
    plan = plan_cluster(describe(2))
    done = complete_plan(plan, probes(plan))
    assert done['stage'] == 'probed' and done['problems'] == []
    assert plan['stage'] == 'description' and plan['nodes']['spark-01']['probe'] is None   # the input is kept
    probe = done['nodes']['spark-01']['probe']
    assert probe['driver'] == {'state': 'ready', 'version': '580.95.05', 'message': None}
    assert probe['gpu_count'] == 1 and probe['gpus'][0]['name'] == 'NVIDIA GB10' and probe['dgx_os'] is True
    assert probe['rdma_devices'] == SPARK_RDMA and probe['link_problems'] == [] and probe['cuda_version'] == '13.0'


def test_driver_versions_differ_names_each_host_and_version():
    plan = plan_cluster(describe(3))
    problems = probed_refused(plan, probes(plan, gpu=lambda n: gb10_gpu('580.82.09' if n == 'spark-02' else '580.95.05')))
    assert [(p['code'], p['hosts']) for p in problems] == [('gpu-driver-versions-differ', ALL3)]
    what = problems[0]['what']
    assert '580.82.09 on spark-02' in what and '580.95.05 on spark-01, spark-03' in what
    assert '580.95.05' in problems[0]['fix']     # the newest, compared as numbers


def test_driver_versions_compare_as_numbers():
    plan = plan_cluster(describe(2))
    problems = probed_refused(plan, probes(plan, gpu=lambda n: gb10_gpu('580.159.04' if n == 'spark-02' else '580.95.05')))
    assert codes(problems) == ['gpu-driver-versions-differ'] and '580.159.04' in problems[0]['fix']


def test_gpu_count_is_checked_per_node():
    plan = plan_cluster(describe(2))
    problems = probed_refused(plan, probes(plan, gpu=lambda n: gb10_gpu(count=0) if n == 'spark-02' else gb10_gpu()))
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [
        ('gpu-count', 'preflight_expected_gpus_per_node', ['spark-02'])]
    assert '0 GPU(s) found, 1 expected' in problems[0]['what']
    # The count declared in the description is the one expected.
    plan = plan_cluster(describe(2, gpus=2))
    assert codes(probed_refused(plan, probes(plan))) == ['gpu-count', 'gpu-count']
    assert complete_plan(plan, probes(plan, gpu=lambda n: gb10_gpu(count=2)))['problems'] == []
    assert complete_plan(plan, probes(plan), expected_gpus=1)['problems'] == []


def test_mixed_gpu_models():
    plan = plan_cluster(describe(2))
    problems = probed_refused(plan, probes(plan, gpu=lambda n: gb10_gpu(model='NVIDIA H200') if n == 'spark-02' else gb10_gpu()))
    assert [(p['code'], p['hosts']) for p in problems] == [('gpu-models-differ', ['spark-01', 'spark-02'])]
    assert 'NVIDIA GB10 on spark-01; NVIDIA H200 on spark-02' in problems[0]['what']


def test_no_driver_yet_is_a_node_state_when_the_run_installs_it():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan, gpu=lambda n: gpu_failed('absent') if n == 'spark-02' else gb10_gpu())
    done = complete_plan(plan, probe_map, allow_missing_driver=True)
    assert [(p['code'], p['severity'], p['hosts']) for p in done['problems']] == [
        ('gpu-driver-to-install', 'warning', ['spark-02'])]
    driver = done['nodes']['spark-02']['probe']['driver']
    assert driver['state'] == 'absent' and driver['version'] is None and 'nvidia-smi not found' in driver['message']
    assert done['nodes']['spark-02']['probe']['gpu_count'] == 0
    # ... and an error otherwise.
    problems = probed_refused(plan, probe_map)
    assert [(p['code'], p['severity'], p['hosts']) for p in problems] == [('gpu-driver-absent', 'error', ['spark-02'])]


def test_no_driver_on_dgx_os_is_always_an_error():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan, gpu=lambda n: gpu_failed('absent', dgx_os=True) if n == 'spark-02' else gb10_gpu())
    assert codes(probed_refused(plan, probe_map, allow_missing_driver=True)) == ['gpu-driver-absent']


@pytest.mark.parametrize('state', ['not-loaded', 'mismatch', 'no-gpu', 'error'])
def test_other_driver_states_are_errors(state):
    plan = plan_cluster(describe(2))
    probe_map = probes(plan, gpu=lambda n: gpu_failed(state) if n == 'spark-02' else gb10_gpu())
    problems = probed_refused(plan, probe_map)
    assert [(p['code'], p['hosts']) for p in problems] == [('gpu-driver-' + state, ['spark-02'])]
    done = complete_plan(plan, probe_map, allow_missing_driver=True, strict=False)
    assert done['nodes']['spark-02']['probe']['driver']['state'] == state
    # Only "no driver" (absent, not loaded) is a state the driver install fixes.
    assert codes(done['problems']) == ['gpu-driver-to-install' if state == 'not-loaded' else 'gpu-driver-' + state]


def test_a_node_not_probed():
    plan = plan_cluster(describe(3))
    probe_map = probes(plan)
    del probe_map['spark-03']
    problems = probed_refused(plan, probe_map)
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [('node-not-probed', 'preflight_group', ['spark-03'])]
    done = complete_plan(plan, probe_map, strict=False)
    assert done['nodes']['spark-03']['probe']['driver']['state'] == 'not-probed'
    assert codes(errors(done['problems'])) == ['node-not-probed']
    # A host left out by --limit registers nothing: hostvars gives the role's default {}.
    probe_map['spark-03'] = {'gpu': {}, 'cx7': {}}
    assert codes(probed_refused(plan, probe_map)) == ['node-not-probed']


def test_node_probe_of_results_registered_with_failed_when_false():
    assert node_probe(gb10_gpu(), cx7_result())['driver']['state'] == 'ready'
    # A gpu_info that failed its own expectations has GPUs but a msg: not ready.
    failed = dict(gb10_gpu(), failed=True, msg='1 GPU(s) found, 2 expected')
    expected = {'state': 'error', 'version': '580.95.05', 'message': '1 GPU(s) found, 2 expected'}
    assert node_probe(failed, cx7_result())['driver'] == expected
    assert node_probe(failed, cx7_result())['gpu_count'] == 0
    probe = node_probe(None, None)
    assert probe['driver']['state'] == 'not-probed' and probe['interfaces'] == [] and probe['rdma_devices'] == []
    # RDMA devices as names, or as dicts with a name.
    assert node_probe(gb10_gpu(), {'rdma_devices': [{'name': 'rocep1s0f1', 'netdev': 'enp1s0f1np1'}]})['rdma_devices'] == [
        'rocep1s0f1']


def test_missing_twin_is_an_error_unless_allowed():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan)
    cx7 = probe_map['spark-02']['cx7']
    cx7['interfaces'][1].update(present=False, ipv4=None, rdma_device=None, operstate=None, speed_mbps=None)
    cx7['rdma_devices'] = SPARK_RDMA[:1]
    cx7['problems'] = [{'code': 'cx7-interface-missing', 'variable': 'spark_cx7_interfaces', 'where': None, 'hosts': [],
                        'severity': 'error', 'what': 'enP2p1s0f1np1 does not exist', 'fix': 'check ibdev2netdev',
                        'message': 'spark_cx7_interfaces: enP2p1s0f1np1 does not exist. Fix: check ibdev2netdev.'}]
    problems = probed_refused(plan, probe_map)
    assert [(p['code'], p['variable'], p['hosts']) for p in problems] == [
        ('cx7-interface-missing', 'spark_cx7_interfaces', ['spark-02'])]
    assert 'enP2p1s0f1np1' in problems[0]['what']
    assert errors(complete_plan(plan, probe_map, fail_on_missing_interface=False)['problems']) == []


def test_link_problems_of_connectx_info_are_warnings_at_their_node():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan)
    degraded = {'code': 'cx7-speed-degraded', 'variable': 'spark_cx7_expected_speed_mbps', 'where': None, 'hosts': [],
                'severity': 'error', 'what': 'enp1s0f1np1 runs at 13000 Mb/s, below the expected 200000 Mb/s (degraded link)',
                'fix': 'reseat the cable or check the peer',
                'message': 'spark_cx7_expected_speed_mbps: enp1s0f1np1 runs at 13000 Mb/s. Fix: reseat the cable.'}
    probe_map['spark-01']['cx7']['problems'] = [degraded]
    probe_map['spark-01']['cx7']['healthy'] = False
    done = complete_plan(plan, probe_map)
    assert [(p['code'], p['variable'], p['severity'], p['hosts']) for p in done['problems']] == [
        ('cx7-speed-degraded', 'spark_cx7_expected_speed_mbps', 'warning', ['spark-01'])]
    assert done['nodes']['spark-01']['probe']['link_problems'] == [degraded]


def test_nccl_env_per_node_from_its_own_probe():
    plan = plan_cluster(describe(3))
    probe_map = probes(plan)
    probe_map['spark-02']['cx7']['rdma_devices'] = SPARK_RDMA[:1]          # one twin without its RDMA device
    probe_map['spark-03']['cx7'] = cx7_result(converged(plan['nodes']['spark-03']), rdma=False)   # the lab's veths
    done = complete_plan(plan, probe_map, strict=False)
    # Nodes that disagree on RDMA are a problem of their own; each still gets the environment its probe implies.
    assert [p['hosts'] for p in done['problems'] if p['code'] == 'rdma-mixed'] == [['spark-03']]
    env = {name: node['nccl_env'] for name, node in done['nodes'].items()}
    assert env['spark-01']['NCCL_IB_HCA'] == '=rocep1s0f1,roceP2p1s0f1' and env['spark-01']['NCCL_IB_DISABLE'] == '0'
    assert env['spark-02']['NCCL_IB_HCA'] == '=rocep1s0f1' and env['spark-02']['NCCL_IB_DISABLE'] == '0'
    assert env['spark-03']['NCCL_IB_DISABLE'] == '1' and 'NCCL_IB_HCA' not in env['spark-03']
    for node_env in env.values():
        assert node_env['NCCL_SOCKET_IFNAME'] == '=enp1s0f1np1,enP2p1s0f1np1'
        assert all(isinstance(v, str) for v in node_env.values())


def test_nccl_settings_reach_every_node_and_are_checked_against_its_devices():
    plan = plan_cluster(describe(2))
    settings = {'extra': {'NCCL_DEBUG_SUBSYS': 'INIT,NET'}, 'deliberate': None, 'debug': 'INFO', 'ib_disable': None}
    done = complete_plan(plan, probes(plan), nccl_settings=settings)
    for node in done['nodes'].values():
        assert node['nccl_env']['NCCL_DEBUG'] == 'INFO' and node['nccl_env']['NCCL_DEBUG_SUBSYS'] == 'INIT,NET'
    settings = {'extra': {'NCCL_IB_HCA': '=mlx5_9'}, 'deliberate': None, 'debug': None, 'ib_disable': None}
    problems = probed_refused(plan, probes(plan), nccl_settings=settings)
    assert codes(problems) == ['nccl-ib-hca-unknown-device']
    assert 'mlx5_9' in problems[0]['what']
    # ib_disable true with RDMA devices: a warning on each node, and IB off as asked.
    settings = {'extra': None, 'deliberate': None, 'debug': None, 'ib_disable': True}
    done = complete_plan(plan, probes(plan), nccl_settings=settings)
    assert set(codes(done['problems'])) == {'nccl-ib-disabled-with-rdma'}
    assert warnings(done['problems']) == done['problems']
    assert all(node['nccl_env']['NCCL_IB_DISABLE'] == '1' for node in done['nodes'].values())


def test_an_nccl_device_problem_of_every_node_names_every_node():
    plan = plan_cluster(describe(2))
    settings = {'extra': {'NCCL_IB_HCA': '=mlx5_9'}, 'deliberate': None, 'debug': None, 'ib_disable': None}
    problems = probed_refused(plan, probes(plan), nccl_settings=settings)
    assert [(p['code'], p['hosts']) for p in problems] == [('nccl-ib-hca-unknown-device', ['spark-01', 'spark-02'])]


def test_ib_disable_false_without_rdma_devices_is_refused():
    plan = plan_cluster(describe(2))
    settings = {'extra': None, 'deliberate': None, 'debug': None, 'ib_disable': False}
    problems = probed_refused(plan, probes(plan, rdma=False), nccl_settings=settings)
    assert codes(problems) == ['nccl-ib-disable-no-rdma']


def test_a_failed_connectx_probe_is_an_error():
    plan = plan_cluster(describe(2))
    probe_map = probes(plan)
    probe_map['spark-02']['cx7'] = {'changed': False, 'failed': True, 'msg': 'ip -j addr show failed (rc 1)'}
    problems = probed_refused(plan, probe_map)
    assert [(p['code'], p['hosts']) for p in problems] == [('cx7-probe-failed', ['spark-02'])]


def test_complete_plan_not_strict_keeps_every_problem():
    plan = plan_cluster(describe(2, nccl_env_extra={'NCCL_MIN_NCHANNELS': 4}))
    probe_map = probes(plan, gpu=lambda n: gb10_gpu('580.82.09' if n == 'spark-02' else '580.95.05'))
    done = complete_plan(plan, probe_map, strict=False)
    assert done['stage'] == 'probed'
    assert codes(done['problems']) == ['nccl-discouraged-variable', 'gpu-driver-versions-differ']


# ---- the plan's shape: roles/preflight/meta/spark_cluster_plan.yml, key by key, both ways -----------------------

def _load_plan_doc():
    return yaml.safe_load(PLAN_DOC.read_text())['spark_cluster_plan']


def _text(spec):
    description = spec.get('description') or ''
    return ' '.join(description) if isinstance(description, list) else description


def _nullable(spec):
    return 'null' in _text(spec).lower()


# dicts of the plan whose keys are names (inventory group / host), each value shaped like the options
BY_NAME = ('groups', 'nodes')

TYPES = {
    'str': (str,),
    'path': (str,),
    'int': (int,),
    'float': (float, int),
    'bool': (bool,),
    'list': (list,),
    'dict': (dict,),
}


def _type_ok(value, type_name):
    if type_name in ('int', 'float') and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[type_name])


def _conforms(value, spec, path, found):
    """Every difference between ``value`` and its documented ``spec``, as lines in ``found``."""
    type_name = spec['type']
    if value is None:
        if not _nullable(spec):
            found.append('%s: null, but the doc never says it may be null' % path)
        return
    if not _type_ok(value, type_name):
        found.append('%s: %r is not of type %s' % (path, value, type_name))
        return
    if 'choices' in spec and value not in spec['choices']:
        found.append('%s: %r is not one of the choices %s' % (path, value, spec['choices']))
    if type_name == 'path' and not value.startswith('/'):
        found.append('%s: %r is not an absolute path' % (path, value))
    if type_name == 'list' and 'elements' in spec:
        for index, item in enumerate(value):
            if not _type_ok(item, spec['elements']):
                found.append('%s[%d]: %r is not of type %s' % (path, index, item, spec['elements']))
    if type_name == 'dict' and 'options' in spec:
        entries = value.items() if path.split('.')[-1] in BY_NAME else [(None, value)]
        for key, entry in entries:
            where = path if key is None else '%s[%s]' % (path, key)
            if not isinstance(entry, dict):
                found.append('%s: %r is not a dict' % (where, entry))
                continue
            options = spec['options']
            for extra in sorted(set(entry) - set(options)):
                found.append('%s.%s: in the plan, not in the doc' % (where, extra))
            for missing in sorted(set(options) - set(entry)):
                found.append('%s.%s: in the doc, not in the plan' % (where, missing))
            for name in sorted(set(options) & set(entry)):
                _conforms(entry[name], options[name], '%s.%s' % (where, name), found)


def _description_plan():
    """A plan that sets every optional part: explicit addresses, a local model with a size, a warning."""
    desc = describe(3, gpus=1, sglang_server_model='/models/qwen', sglang_server_model_size_gb=15.2,
                    spark_allowed_cidrs=['10.0.0.0/24', '10.0.1.5'], spark_model_source_host='spark-02',
                    nccl_env_extra={'NCCL_MIN_NCHANNELS': 4}, sglang_server_args={'mem-fraction-static': 0.8})
    host(desc, 'spark-03')['spark_cx7_addresses'] = ['192.168.100.50', '192.168.101.50']
    return plan_cluster(desc)


def _probed_plan():
    """A probed plan with a ready node, a node whose driver the run installs, a degraded link and the lab's veths."""
    plan = _description_plan()
    probe_map = probes(plan, gpu=lambda n: gpu_failed('absent') if n == 'spark-03' else gb10_gpu())
    probe_map['spark-02']['cx7'] = cx7_result(converged(plan['nodes']['spark-02']), rdma=False)
    probe_map['spark-01']['cx7']['problems'] = [{
        'code': 'cx7-speed-degraded', 'variable': 'spark_cx7_expected_speed_mbps', 'where': None, 'hosts': [],
        'severity': 'error', 'what': 'enp1s0f1np1 runs at 13000 Mb/s', 'fix': 'reseat the cable',
        'message': 'spark_cx7_expected_speed_mbps: enp1s0f1np1 runs at 13000 Mb/s. Fix: reseat the cable.'}]
    # strict=False as verify.yml runs it: spark-02 without RDMA makes the nodes disagree (rdma-mixed), kept in problems.
    return complete_plan(plan, probe_map, allow_missing_driver=True, strict=False,
                         nccl_settings={'extra': {'NCCL_MIN_NCHANNELS': 4}, 'deliberate': None, 'debug': None,
                                        'ib_disable': None})


@pytest.mark.parametrize('make, stage', [(_description_plan, 'description'), (_probed_plan, 'probed'),
                                         (lambda: plan_cluster(describe(1)), 'description')],
                         ids=['description', 'probed', 'one-node'])
def test_plan_conforms_to_its_doc_both_ways(make, stage):
    plan = make()
    assert plan['stage'] == stage
    found = []
    _conforms(plan, _load_plan_doc(), 'spark_cluster_plan', found)
    assert not found, '\n'.join(found)


def test_the_conformance_cases_cover_the_optional_parts():
    """The plans above hold a warning (the problems list), nulls and values where the doc allows both."""
    described, probed = _description_plan(), _probed_plan()
    assert described['problems'] and probed['problems']
    assert {n['cx7_addresses_from'] for n in described['nodes'].values()} == {'spark_cx7_addresses', 'spark_cx7_subnets'}
    assert cluster(described)['model']['size_gb'] == 15.2 and cluster(described)['model']['revision'] is None
    drivers = [n['probe']['driver'] for n in probed['nodes'].values()]
    assert {d['state'] for d in drivers} == {'ready', 'absent'} and None in {d['version'] for d in drivers}
    assert any(n['probe']['link_problems'] for n in probed['nodes'].values())
    assert any(not n['probe']['rdma_devices'] for n in probed['nodes'].values())


def test_plan_is_plain_json():
    for plan in (_description_plan(), _probed_plan()):
        assert json.loads(json.dumps(plan)) == plan


def test_probe_and_nccl_env_are_null_only_at_stage_description():
    for node in _description_plan()['nodes'].values():
        assert node['probe'] is None and node['nccl_env'] is None
    for node in _probed_plan()['nodes'].values():
        assert isinstance(node['probe'], dict) and isinstance(node['nccl_env'], dict)


def test_nested_keys_are_documented_as_options():
    """The twins, the driver state and the problems: each key of the plan is an option of the doc."""
    doc = _load_plan_doc()['options']
    plan = _probed_plan()
    node_doc = doc['nodes']['options']
    driver_doc = node_doc['probe']['options']['driver']['options']
    for node in plan['nodes'].values():
        for twin in node['cx7_interfaces']:
            assert set(twin) == set(node_doc['cx7_interfaces']['options'])
        assert set(node['probe']['driver']) == set(driver_doc)
        assert node['probe']['driver']['state'] in driver_doc['state']['choices']
    assert plan['problems']
    for item in plan['problems']:
        assert set(item) == set(doc['problems']['options'])


def test_every_driver_state_is_documented():
    doc = _load_plan_doc()['options']['nodes']['options']['probe']['options']['driver']['options']['state']
    for state in ('ready', 'absent', 'not-loaded', 'mismatch', 'no-gpu', 'error', 'not-probed'):
        assert state in doc['choices'] and 'C(%s)' % state in _text(doc), state


# ---- the defaults, typed once: roles/preflight/meta/argument_specs.yml documents DEFAULTS --------------------

def _preflight_options():
    return yaml.safe_load(PREFLIGHT_SPEC.read_text())['argument_specs']['main']['options']


@pytest.mark.parametrize('var', sorted(DEFAULTS))
def test_preflight_argument_spec_documents_each_default(var):
    options = _preflight_options()
    assert var in options, '%s is a cluster-wide input of _cluster.DEFAULTS, not in the preflight argument spec' % var
    spec = options[var]
    if DEFAULTS[var] is None:
        assert 'default' not in spec, '%s: the default lives in _cluster.DEFAULTS (None), the spec has %r' % (
            var, spec['default'])
    else:
        assert 'default' in spec, '%s: no default in the spec, _cluster.DEFAULTS has %r' % (var, DEFAULTS[var])
        assert spec['default'] == DEFAULTS[var] and type(spec['default']) is type(DEFAULTS[var]), (
            var, spec['default'], DEFAULTS[var])
        # Typed raw on purpose (the plan judges the inputs, all at once); the type is said in words.
        assert spec['type'] == 'raw', (var, spec['type'])
    if 'choices' in spec and DEFAULTS[var] is not None:
        assert DEFAULTS[var] in spec['choices']


def test_every_cluster_wide_option_of_the_spec_is_an_input_of_the_plan():
    options = _preflight_options()
    cluster_wide = {name for name, spec in options.items() if _text(spec).startswith('Cluster-wide')}
    # spark_group names the group the preflight role reads; it is no input of the plan.
    assert cluster_wide - {'spark_group'} == set(DEFAULTS)
    per_host = {name for name, spec in options.items() if _text(spec).startswith('Per host')}
    assert per_host == set(HOST_INPUTS) - {'ansible_host'}


# ---- memory fit ------------------------------------------------------------------------------------------------
# Node memory from real captures (tests/unit/fixtures/nvidia-smi/README.md): a DGX Spark (GB10, unified memory) has
# /proc/meminfo MemTotal 127600748 kB, which gpu_info reports as memory_total_mib 124610 (130.7 GB); an H200 has
# memory.total 143771 MiB per GPU (h200x2-query-gpu.csv).

GB = 1000 ** 3


def gb10_infos(n):
    return {name_of(i): gb10_gpu() for i in range(n)}


def test_gb10_figure_from_meminfo():
    assert GB10_MIB == 124610


def test_70b_bf16_does_not_fit_one_spark_and_needs_two():
    # The seed's table: a 70B model in bf16 needs about 140 GB -> TP 2 over two Sparks.
    fit = plan_memory_fit(140 * GB, gb10_infos(1), 0.75)
    assert fit['fits'] is False
    assert (fit['node_gb'], fit['per_node_gb'], fit['capacity_gb']) == (130.7, 98.0, 98.0)
    assert fit['nodes_needed'] == 2
    assert 'run it on 2 nodes' in fit['message']
    assert '1 node(s) x 130.7 GB (spark-01, the smallest) x mem-fraction-static 0.75 = 98.0 GB' in fit['message']


def test_70b_bf16_fits_two_sparks():
    fit = plan_memory_fit(140 * GB, gb10_infos(2), 0.75)
    assert fit['fits'] is True
    assert (fit['capacity_gb'], fit['nnodes'], fit['nodes_needed']) == (196.0, 2, 2)
    assert fit['message'].startswith('The weights (140.0 GB) fit')


def test_a_higher_fraction_still_needs_two_sparks_for_70b():
    fit = plan_memory_fit(140 * GB, gb10_infos(1), 0.9)
    assert (fit['fits'], fit['per_node_gb'], fit['nodes_needed']) == (False, 117.6, 2)


def test_405b_needs_nine_sparks():
    fit = plan_memory_fit(810 * GB, gb10_infos(2), 0.75)
    assert (fit['fits'], fit['nodes_needed']) == (False, 9)


def test_small_model_fits_one_spark():
    fit = plan_memory_fit(int(15.2 * GB), gb10_infos(1), 0.75)
    assert (fit['fits'], fit['nodes_needed'], fit['weights_gb']) == (True, 1, 15.2)


def test_exactly_full_fits():
    node_bytes = GB10_MIB * 1024 ** 2
    assert plan_memory_fit(node_bytes * 0.5, gb10_infos(1), 0.5)['fits'] is True
    assert plan_memory_fit(node_bytes * 0.5 + 1, gb10_infos(1), 0.5)['fits'] is False


def test_the_smallest_node_bounds_every_rank():
    infos = gb10_infos(1)
    infos['h200-host'] = gb10_gpu(count=2, model='NVIDIA H200', dgx_os=False, memory_mib=H200_MIB)
    fit = plan_memory_fit(200 * GB, infos, 0.75)
    assert fit['smallest_node'] == 'spark-01'
    assert (fit['fits'], fit['capacity_gb']) == (False, 196.0)
    # A node's GPUs add up: 2 x 143771 MiB.
    alone = plan_memory_fit(200 * GB, {'h200-host': infos['h200-host']}, 0.75)
    assert (alone['node_gb'], alone['fits']) == (301.5, True)


def test_memory_fit_reads_the_probes_of_a_probed_plan():
    plan = plan_cluster(describe(2))
    done = complete_plan(plan, probes(plan))
    fit = plan_memory_fit(140 * GB, {name: node['probe'] for name, node in done['nodes'].items()}, 0.75)
    assert (fit['fits'], fit['capacity_gb'], fit['nnodes']) == (True, 196.0, 2)


@pytest.mark.parametrize('weights, infos, fraction, words', [
    (-1, gb10_infos(1), 0.75, 'number of bytes'),
    (True, gb10_infos(1), 0.75, 'number of bytes'),
    (1, gb10_infos(1), 0, 'mem-fraction-static'),
    (1, gb10_infos(1), 1.5, 'mem-fraction-static'),
    (1, {}, 0.75, 'no gpu_info results'),
    (1, {'spark-01': {'gpus': [{'memory_total_mib': None}]}}, 0.75, 'host spark-01 reports no usable GPU memory'),
    (1, {'spark-01': {'gpus': []}}, 0.75, 'host spark-01'),
    (1, {'spark-01': gpu_failed('absent')}, 0.75, 'host spark-01'),
])
def test_bad_memory_fit_input_is_refused(weights, infos, fraction, words):
    with pytest.raises(ValueError, match=words):
        plan_memory_fit(weights, infos, fraction)


def test_a_removed_variable_is_a_warning_that_says_what_to_do():
    problems, plan = check_description(describe(2, sglang_server_shm_size='32g'))
    assert plan is not None
    assert [(p['code'], p['severity'], p['variable']) for p in problems] == [
        ('variable-removed', 'warning', 'sglang_server_shm_size')]
    assert '--ipc host' in problems[0]['message'] and 'Fix: remove it' in problems[0]['message']


def test_container_volumes_reach_the_plan_as_given():
    volumes = ['/var/lib/venv:/var/lib/venv:ro', 'models:/models']
    assert plan_cluster(describe(2, sglang_server_container_volumes=volumes))['groups']['spark']['container_volumes'] == volumes
    assert plan_cluster(describe(2))['groups']['spark']['container_volumes'] == []


def test_container_ulimits_default_to_unlimited_memlock():
    assert plan_cluster(describe(2))['groups']['spark']['container_ulimits'] == {'memlock': -1}
    ulimits = {'memlock': '8388608:8388608', 'stack': 67108864}
    assert plan_cluster(describe(2, sglang_server_container_ulimits=ulimits))['groups']['spark']['container_ulimits'] == ulimits
