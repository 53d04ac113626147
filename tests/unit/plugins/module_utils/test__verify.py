# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verdicts of the verify role (plugins/module_utils/_verify.py), fed with what the lab recorded.

The plan is the lab's (tests/lab, 2 machines, gloo over the CX7 veths, the SGLang stand-in) at stage ``probed``,
holding only the keys the verify role reads; ``test_plan_keys_are_the_documented_ones`` checks each of them
against the contract, roles/preflight/meta/spark_cluster_plan.yml. The module results are those of the lab run of
2026-11-27 (a passing run, then `ip link set enp1s0f1np1 down` on lab-spark-02), shortened to what is read.
"""

from __future__ import annotations

import base64
import copy
import pathlib
import random
import re

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils import _verify as v
from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (
    DEFAULT_MIN_BUSBW_GBPS,
    DEFAULT_THRESHOLD_MIN_BYTES,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._connectx import connectx_report
from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import build_nccl_env, render_env_file
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError
from ansible_collections.dgxspark.sglang.tests.unit import sysfs

ROOT = pathlib.Path(__file__).resolve().parents[4]
CONTRACT = ROOT / 'roles' / 'preflight' / 'meta' / 'spark_cluster_plan.yml'
A, B = 'enp1s0f1np1', 'enP2p1s0f1np1'
H1, H2 = 'lab-spark-01', 'lab-spark-02'

GB10 = {'name': 'NVIDIA GB10', 'unified_memory': True, 'memory_total_mib': 24106}


def veth(name, ip, up=True):
    return {'name': name, 'present': True, 'twin': None, 'operstate': 'up' if up else 'down',
            'speed_mbps': 10000 if up else None, 'mtu': 9000, 'mac': None, 'driver': None, 'pci_address': None,
            'ipv4': ['%s/24' % ip] if up else [], 'ipv6': [], 'rdma_device': None, 'rdma_port_state': None,
            'link_layer': None, 'roce_v2_gid_index': None}


def link_problem(code, variable, what, fix):
    return {'code': code, 'variable': variable, 'where': None, 'hosts': [], 'severity': 'error', 'what': what,
            'fix': fix, 'message': '%s: %s. Fix: %s.' % (variable, what, fix)}


NO_RDMA = [link_problem('cx7-no-rdma-device', 'spark_cx7_interfaces', '%s has no RDMA device%s' % (name, expected),
                        'check that mlx5_ib is loaded (`lsmod | grep mlx5_ib`) and `ibdev2netdev`')
           for name, expected in ((A, ' (expected rocep1s0f1)'), (B, ' (expected roceP2p1s0f1)'))]
DOWN = [link_problem('cx7-link-down', 'spark_cx7_interfaces', '%s is down (operstate down)' % A,
                     'check the cable and `ip link set %s up`' % A),
        link_problem('cx7-no-ipv4', 'spark_cx7_addresses', '%s has no IPv4 address' % A,
                     'run site.yml (the cx7_network role gives each twin its address)')]


def probe(ips, down=False):
    return {
        'driver': {'state': 'ready', 'version': '580.126.09', 'message': None},
        'gpu_count': 1, 'gpus': [dict(GB10)], 'cuda_version': '13.0',
        'interfaces': [veth(A, ips[0], up=not down), veth(B, ips[1])],
        'rdma_devices': [],
        'link_problems': (DOWN if down else []) + copy.deepcopy(NO_RDMA),
    }


def lab_plan():
    """The lab's plan at stage probed, only the keys the verify role reads."""
    return {
        'stage': 'probed',
        'nccl_env_file': '/etc/sglang/nccl.env',
        'problems': [],
        'groups': {'spark': {
            'hosts': [H1, H2], 'head': H1, 'nnodes': 2, 'tp_size': 2, 'gpus_per_node': 1,
            'dist_init_addr': '192.168.100.11:20000', 'url': 'http://127.0.0.1:30000', 'scheme': 'http',
            'service': 'sglang', 'config_dir': '/etc/sglang', 'runtime': 'native', 'image': 'lmsysorg/sglang:v0.5.3',
            'python': '/usr/bin/python3', 'model': {'served_name': 'Qwen/Qwen2.5-0.5B-Instruct'},
        }},
        'nodes': {
            H1: {'group': 'spark', 'node_rank': 0, 'management_address': '172.31.255.11',
                 'cx7_addresses': ['192.168.100.11', '192.168.101.11'],
                 'probe': probe(('192.168.100.11', '192.168.101.11'))},
            H2: {'group': 'spark', 'node_rank': 1, 'management_address': '172.31.255.12',
                 'cx7_addresses': ['192.168.100.12', '192.168.101.12'],
                 'probe': probe(('192.168.100.12', '192.168.101.12'))},
        },
    }


ENV_TEXT = render_env_file(build_nccl_env([A, B], [], debug='WARN'))
ENV_READ = {'content': base64.b64encode(ENV_TEXT.encode()).decode(), 'source': '/etc/sglang/nccl.env', 'failed': False}
ENV_MISSING = {'failed': False, 'msg': 'file not found: /etc/sglang/nccl.env'}
UNIT_ACTIVE = {'rc': 0, 'stdout': 'LoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=0'}
UNIT_DEAD = {'rc': 0, 'stdout': 'NRestarts=0\nLoadState=loaded\nActiveState=inactive\nSubState=dead'}
UNIT_MISSING = {'rc': 0, 'stdout': 'LoadState=not-found\nActiveState=inactive\nSubState=dead\nNRestarts=0'}
SKIPPED = {'changed': False, 'skipped': True, 'skip_reason': 'Conditional result was False'}
ROWS = [{'bytes': 8 << i, 'time_us': 300.0 + i, 'algbw_gbps': 0.001 * (i + 1), 'busbw_gbps': 0.001 * (i + 1),
         'correct': True} for i in range(24)]
ALLREDUCE = {'changed': False, 'failed': False, 'results': ROWS, 'peak_busbw_gbps': 0.024, 'passed': True,
             'threshold_applied': False, 'problems': [], 'world_size': 2, 'local_ranks': 1,
             'torch_version': '2.13.0+cpu', 'cmd': ['python3', '/tmp/w.py']}
HEALTH = {'changed': False, 'failed': False, 'url': 'http://127.0.0.1:30000', 'healthy': True, 'model_ok': True,
          'served_model': 'Qwen/Qwen2.5-0.5B-Instruct', 'ttft_s': 0.0065, 'total_s': 0.0421, 'elapsed_s': 0.047,
          'completion_text': 'Hello from the lab stand-in (rank 0 of', 'completion_tokens': 8,
          'metrics': {'sglang:num_running_reqs': 0.0}}
HEALTH_DOWN = {'changed': False, 'failed': False, 'url': 'http://127.0.0.1:30000', 'healthy': False,
               'msg': 'SGLang at http://127.0.0.1:30000 did not become healthy within 60 s: connection refused'}


def report(plan, host, **kwargs):
    args = dict(nccl_env=ENV_READ, allreduce=ALLREDUCE, unit=UNIT_ACTIVE, health=HEALTH, backend='gloo',
                runtime='python')
    args.update(kwargs)
    return v.node_report(plan, host, **args)


def codes(failures):
    return [f['code'] for f in failures]


# --- the environment file ------------------------------------------------------------------------------------------

def test_parse_env_file_reads_back_the_lab_file():
    assert v.parse_env_file(ENV_TEXT) == {
        'NCCL_SOCKET_IFNAME': '=enp1s0f1np1,enP2p1s0f1np1', 'GLOO_SOCKET_IFNAME': A, 'NCCL_IB_DISABLE': '1',
        'UCX_NET_DEVICES': 'enp1s0f1np1,enP2p1s0f1np1', 'NCCL_DEBUG': 'WARN'}
    assert list(v.parse_env_file(ENV_TEXT)) == list(build_nccl_env([A, B], [], debug='WARN'))


@pytest.mark.parametrize('value', ['', 'plain', '=a,b', '^x', 'a=b=c', 'with space', 'a#b', '#start', 'x;y', '[%F %T]'])
def test_parse_env_file_is_the_inverse_of_render_env_file(value):
    mapping = {'NAME': value, 'OTHER': 'x'}
    assert v.parse_env_file(render_env_file(mapping)) == mapping


@pytest.mark.parametrize('value', [
    ' lead', 'trail ', '"', '""', 'say "hi"', 'back\\slash', '\\', '\\"', 'tick`s', '$HOME', '${X}', "it's", '\ttab',
    'ünïcode', '"quoted"', 'line\u2028sep', 'nel\x85', 'nbsp\xa0', '\xa0lead', ' ', '\t',
])
def test_values_the_two_readers_would_read_differently_are_never_written(value):
    """The file holds bare values only (_env_file): these are refused, not quoted."""
    with pytest.raises(ProblemsError):
        render_env_file({'NAME': value, 'OTHER': 'x'})


def test_parse_env_file_inverse_on_random_values():
    rng = random.Random(20261127)
    alphabet = 'aZ09_.,:/=@%+^- "\\`$#\'\t;!~*?()[]{}<>|&éß\xa0\u2028\x85'
    written = 0
    for dummy in range(500):
        mapping = {'V': ''.join(rng.choice(alphabet) for dummy in range(rng.randrange(0, 12)))}
        try:
            text = render_env_file(mapping)
        except ProblemsError:
            continue
        written += 1
        assert v.parse_env_file(text) == mapping
    assert written > 50


def test_parse_env_file_skips_what_is_no_variable_and_keeps_the_last_of_two():
    text = '# comment\n\n   \nNO_EQUALS\nA=1\nA=2\r\n  B="x y"  \n'
    assert v.parse_env_file(text) == {'A': '2', 'B': 'x y'}
    assert v.parse_env_file(None) == {} and v.parse_env_file('') == {}


def test_slurped_text():
    assert v.slurped_text(ENV_READ) == ENV_TEXT
    assert v.slurped_text(ENV_MISSING) is None and v.slurped_text(SKIPPED) is None and v.slurped_text(None) is None


def test_parse_systemctl_show():
    assert v.parse_systemctl_show(UNIT_ACTIVE['stdout']) == {
        'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running', 'NRestarts': '0'}
    assert v.parse_systemctl_show('') == {} and v.parse_systemctl_show(None) == {}


# --- the all-reduce's blockers ---------------------------------------------------------------------------------------

def test_no_blockers_when_every_node_is_here_and_up():
    plan = lab_plan()
    assert v.allreduce_blockers(plan, H1, [H1, H2]) == [] == v.allreduce_blockers(plan, H2, [H2, H1])


def test_blockers_name_a_missing_node_and_a_down_twin_the_same_on_every_node():
    plan = lab_plan()
    plan['nodes'][H2]['probe'] = probe(('192.168.100.12', '192.168.101.12'), down=True)
    expected = [{'host': H2, 'code': 'cx7-twin-down', 'reason': 'lab-spark-02: CX7 twin enp1s0f1np1 missing or down'}]
    assert v.allreduce_blockers(plan, H1, [H1, H2]) == expected == v.allreduce_blockers(plan, H2, [H1, H2])
    assert v.allreduce_blockers(plan, H1, [H1, H2], skip_on_link_down=False) == []
    gone = v.allreduce_blockers(plan, H2, [H2], skip_on_link_down=False)
    assert gone == [{'host': H1, 'code': 'verify-node-not-run',
                     'reason': 'lab-spark-01 did not run the checks (unreachable, failed or left out by --limit)'}]


def test_a_missing_interface_counts_as_down():
    interfaces = [veth(A, '192.168.100.11'), dict(veth(B, '192.168.101.11'), present=False, operstate=None)]
    assert v.links_down(interfaces) == [B]


# --- one node --------------------------------------------------------------------------------------------------------

def test_passing_lab_node_has_no_failure_and_no_rdma_needed_on_gloo():
    plan = lab_plan()
    head, other = report(plan, H1), report(plan, H2)
    assert head['failures'] == [] and other['failures'] == []
    assert head['gpu'] == {'ok': True, 'driver_state': 'ready', 'count': 1, 'expected': 1, 'names': ['NVIDIA GB10'],
                           'driver_version': '580.126.09', 'cuda_version': '13.0', 'unified_memory': [True],
                           'memory_total_mib': [24106], 'error': None}
    assert head['link']['ok'] and head['link']['problems'] == [] and head['link']['rdma_required'] is False
    assert [i['name'] for i in head['link']['interfaces']] == [A, B]
    assert set(head['link']['interfaces'][0]) == set(v.INTERFACE_KEYS)
    assert head['nccl_env'] == {'path': '/etc/sglang/nccl.env', 'found': True, 'variables': v.parse_env_file(ENV_TEXT)}
    assert head['unit'] == {'name': 'sglang.service', 'load_state': 'loaded', 'active_state': 'active',
                            'sub_state': 'running', 'restarts': '0'}
    assert head['allreduce']['ran'] and head['allreduce']['passed']
    assert head['allreduce']['results'] == [dict(row, size=v.human_bytes(row['bytes'])) for row in ROWS]
    assert [row['size'] for row in head['allreduce']['results']][:3] == ['8 B', '16 B', '32 B']
    assert head['allreduce']['threshold_min_size'] == '1 GiB'
    assert head['health']['checked'] and head['health']['healthy'] and head['health']['host'] == H1
    assert 'health' not in other
    assert (head['host'], head['group'], head['node_rank'], head['reachable']) == (H1, 'spark', 0, True)


def test_rdma_is_required_on_nccl_runs_by_code():
    plan = lab_plan()
    nccl = report(plan, H2, backend='nccl')
    assert codes(nccl['failures']) == ['cx7-no-rdma-device', 'cx7-no-rdma-device']
    assert nccl['failures'][0] == {'check': 'link', 'code': 'cx7-no-rdma-device', 'reason': NO_RDMA[0]['message']}
    assert codes(report(plan, H2, backend='nccl', require_rdma=False)['failures']) == []
    assert codes(report(plan, H2, require_rdma=True)['failures']) == ['cx7-no-rdma-device'] * 2


def test_the_rdma_code_is_the_one_connectx_gives(tmp_path):
    """The code the role forgives on gloo runs is the one the real probe gives a veth without RDMA."""
    root = sysfs.build_tree(str(tmp_path), sysfs.veth_pair())
    cx7 = connectx_report(root, [A, B], include_twins=False, expected_speed_mbps=10000, expected_mtu=9000,
                          addresses={A: {'ipv4': ['192.168.100.11/24']}, B: {'ipv4': ['192.168.101.11/24']}})
    plan = lab_plan()
    plan['nodes'][H1]['probe'].update(interfaces=cx7['interfaces'], rdma_devices=cx7['rdma_devices'],
                                      link_problems=cx7['problems'])
    assert set(codes(cx7['problems'])) == set(v.RDMA_ONLY_CODES)
    assert report(plan, H1)['failures'] == []
    assert codes(report(plan, H1, backend='nccl')['failures']) == ['cx7-no-rdma-device'] * 2


def test_link_down_on_lab_spark_02():
    """`ip link set enp1s0f1np1 down` on lab-spark-02: the link problems, and the all-reduce not run."""
    plan = lab_plan()
    plan['nodes'][H2]['probe'] = probe(('192.168.100.12', '192.168.101.12'), down=True)
    blockers = v.allreduce_blockers(plan, H2, [H1, H2])
    node = report(plan, H2, allreduce=SKIPPED, blockers=blockers)
    assert node['failures'] == [
        {'check': 'link', 'code': 'cx7-link-down', 'reason': DOWN[0]['message']},
        {'check': 'link', 'code': 'cx7-no-ipv4', 'reason': DOWN[1]['message']},
        {'check': 'all-reduce', 'code': 'allreduce-not-run', 'reason': 'not run: CX7 twin enp1s0f1np1 missing or down here'},
    ]
    assert not node['link']['ok'] and node['allreduce']['ran'] is False and node['allreduce']['blockers'] == blockers
    # The head was blocked by lab-spark-02, which carries the failure: nothing against the head.
    assert report(plan, H1, allreduce=SKIPPED, blockers=blockers)['failures'] == []


def test_missing_env_file_stopped_unit_and_unchecked_health():
    plan = lab_plan()
    head = report(plan, H1, nccl_env=ENV_MISSING, unit=UNIT_DEAD, health=SKIPPED)
    assert head['failures'] == [
        {'check': 'nccl.env', 'code': 'nccl-env-missing',
         'reason': '/etc/sglang/nccl.env cannot be read on lab-spark-01 (file not found: /etc/sglang/nccl.env). '
                   'Fix: run site.yml (the nccl_env role writes it)'},
        {'check': 'sglang unit', 'code': 'sglang-unit-not-active',
         'reason': 'sglang.service is inactive (dead) on lab-spark-01. Fix: read why in `journalctl -u sglang -n 100` '
                   'there, then rerun site.yml (it restarts the whole group)'},
        {'check': 'sglang health', 'code': 'sglang-health-not-checked',
         'reason': 'not checked: sglang.service is not active on rank 0 (lab-spark-01)'},
    ]
    assert head['nccl_env'] == {'path': '/etc/sglang/nccl.env', 'found': False, 'variables': {}}
    assert codes(report(plan, H2, unit=UNIT_MISSING)['failures']) == ['sglang-unit-not-installed']
    assert codes(report(plan, H2, unit={'rc': 1, 'stdout': ''})['failures']) == ['sglang-unit-not-active']


def test_health_failure_keeps_the_modules_message():
    head = report(lab_plan(), H1, health=HEALTH_DOWN)
    assert head['failures'] == [{'check': 'sglang health', 'code': 'sglang-health-failed', 'reason': HEALTH_DOWN['msg']}]
    assert head['health']['error'] == HEALTH_DOWN['msg'] and head['health']['checked'] is True


def test_allreduce_failures_by_code():
    plan = lab_plan()
    wrong = dict(ALLREDUCE, passed=False, results=[dict(ROWS[0], correct=False)] + ROWS[1:],
                 msg='wrong sums at 1 size(s) (bytes: 8): ...')
    slow = dict(ALLREDUCE, passed=False, threshold_applied=True, bandwidth_verdict='fail',
                msg='peak bus bandwidth 3.100 GB/s (at 1 GiB) over the sizes from 1 GiB on is below ...')
    timeout = {'failed': False, 'msg': 'timed out after 90 s; no rank left running on lab-spark-02. ...'}
    for result, code in ((wrong, 'allreduce-wrong-sums'), (slow, 'allreduce-below-threshold'),
                         (timeout, 'allreduce-error')):
        node = report(plan, H2, allreduce=result)
        assert node['failures'] == [{'check': 'all-reduce', 'code': code, 'reason': result['msg']}]
        assert node['allreduce']['passed'] is False and node['allreduce']['error'] == result['msg']


# --- the bandwidth verdict as the report shows it (the module's verdict: _allreduce.evaluate) ------------------------

GIB_ROWS = [{'bytes': (1 << 30) << i, 'time_us': 45000.0, 'algbw_gbps': bw, 'busbw_gbps': bw, 'correct': True}
            for i, bw in enumerate((23.1, 23.7))]


def nccl_result(verdict, judged_bytes, judged, warnings=(), passed=True, msg=None):
    result = dict(ALLREDUCE, results=GIB_ROWS, peak_busbw_gbps=max(r['busbw_gbps'] for r in GIB_ROWS), passed=passed,
                  threshold_applied=True, bandwidth_verdict=verdict, judged_bytes=judged_bytes,
                  judged_busbw_gbps=judged, bandwidth_warnings=list(warnings), min_busbw_gbps=21.875,
                  threshold_min_bytes=1 << 30)
    if msg:
        result['msg'] = msg
    return result


def test_a_passing_bandwidth_verdict_shows_the_judged_sizes_and_no_warning():
    plan = lab_plan()
    node = report(plan, H1, allreduce=nccl_result('pass', [1 << 30, 2 << 30], 23.7), backend='nccl',
                  require_rdma=False)
    summary = node['allreduce']
    assert node['failures'] == [] and summary['passed']
    assert (summary['verdict'], summary['provisional'], summary['judged_sizes'], summary['judged_busbw_gbps']) == (
        'pass', False, ['1 GiB', '2 GiB'], 23.7)
    [group] = v.group_reports(plan, {H1: node, H2: report(plan, H2)}, 'T')
    assert group['verdict'] == 'pass' and group['warnings'] == []


def test_a_failing_bandwidth_verdict_fails_the_head_with_its_code():
    plan = lab_plan()
    msg = 'peak bus bandwidth 3.100 GB/s (at 1 GiB) over the sizes from 1 GiB on is below min_busbw_gbps 21.875: ...'
    node = report(plan, H1, allreduce=nccl_result('fail', [1 << 30], 3.1, passed=False, msg=msg), backend='nccl',
                  require_rdma=False)
    assert node['failures'] == [{'check': 'all-reduce', 'code': 'allreduce-below-threshold', 'reason': msg}]
    [group] = v.group_reports(plan, {H1: node, H2: report(plan, H2)}, 'T')
    assert group['verdict'] == 'fail' and [f['code'] for f in group['failures']] == ['allreduce-below-threshold']


@pytest.mark.parametrize('verdict, code', [('provisional', 'allreduce-provisional'),
                                           ('warn', 'allreduce-below-threshold')])
def test_a_provisional_or_warn_verdict_is_a_warning_of_the_group_not_a_failure(verdict, code):
    plan = lab_plan()
    text = 'provisional bandwidth verdict: the largest size run, 64 MiB, is below threshold_min_bytes (1 GiB) ...'
    node = report(plan, H1, allreduce=nccl_result(verdict, [64 << 20], 3.1, warnings=[text]), backend='nccl',
                  require_rdma=False)
    assert node['failures'] == [] and node['allreduce']['warnings'] == [text]
    assert node['allreduce']['provisional'] is (verdict == 'provisional')
    [group] = v.group_reports(plan, {H1: node, H2: report(plan, H2)}, 'T')
    assert (group['verdict'], group['failures']) == ('pass', [])
    assert group['warnings'] == [{'host': H1, 'check': 'all-reduce', 'code': code, 'reason': text}]


# --- a serving node: the sizes from the memory it has free -----------------------------------------------------------

def meminfo(available_gib):
    return 'MemTotal:       124610000 kB\nMemFree:        1000000 kB\nMemAvailable:   %d kB\n' % (
        available_gib * 1024 * 1024)


def memories(first, second, serving=(True, True)):
    return [{'host': H1, 'serving': serving[0], 'meminfo': meminfo(first)},
            {'host': H2, 'serving': serving[1], 'meminfo': meminfo(second)}]


def test_sizing_leaves_the_module_default_when_nothing_serves():
    sizing = v.allreduce_sizing(lab_plan(), H1, memories(2, 2, serving=(False, False)))
    assert (sizing['sized_from_memory'], sizing['max_bytes'], sizing['note'], sizing['blockers']) == (
        False, None, None, [])
    assert v.allreduce_sizing(lab_plan(), H1, [], max_bytes=65536)['max_bytes'] == 65536


def test_sizing_of_a_serving_group_comes_from_the_node_with_the_least_memory_free():
    # lab-spark-02 has 7 GiB free: less the 6 GiB reserve, 1 GiB of room, so 512 MiB x 2 buffers at most.
    for host in (H1, H2):  # the same answer on every node of the group
        sizing = v.allreduce_sizing(lab_plan(), host, memories(30, 7))
        assert (sizing['sized_from_memory'], sizing['max_bytes'], sizing['limited_by']) == (True, 512 << 20, H2)
        assert sizing['mem_available_bytes'] == 7 << 30 and sizing['serving_hosts'] == [H1, H2]
    assert sizing['note'] == ('SGLang serves on lab-spark-01, lab-spark-02: the buffers were sized from the memory '
                              'free (MemAvailable 7.0 GiB on lab-spark-02 less a reserve of 6 GiB, 1 rank(s) x 2 x '
                              'the size), largest size 512 MiB instead of 1 GiB')
    # plenty free: the full 1 GiB, and the report still says how it was sized
    roomy = v.allreduce_sizing(lab_plan(), H1, memories(30, 20))
    assert roomy['max_bytes'] == 1 << 30 and roomy['note'].endswith('largest size 1 GiB')
    # a node that does not serve does not limit the others
    assert v.allreduce_sizing(lab_plan(), H1, memories(30, 1, serving=(True, False)))['max_bytes'] == 1 << 30
    assert v.allreduce_sizing(lab_plan(), H1, memories(7, 30), reserve_bytes=0)['max_bytes'] == 1 << 30


def test_sizing_the_report_says_so_and_the_small_size_gives_a_provisional_verdict():
    plan = lab_plan()
    sizing = v.allreduce_sizing(plan, H1, memories(30, 7))
    result = nccl_result('provisional', [512 << 20], 22.4, warnings=['provisional bandwidth verdict: ...'])
    node = report(plan, H1, allreduce=result, backend='nccl', require_rdma=False, sizing=sizing)
    assert node['failures'] == []
    assert node['allreduce']['sized_from_memory'] is True and node['allreduce']['sizing_note'] == sizing['note']
    assert node['allreduce']['provisional'] is True


def test_a_serving_node_without_room_blocks_the_allreduce_and_fails_itself():
    plan = lab_plan()
    sizing = v.allreduce_sizing(plan, H1, memories(30, 5))
    assert sizing['max_bytes'] is None and [(b['host'], b['code']) for b in sizing['blockers']] == [
        (H2, 'allreduce-no-free-memory')]
    assert "mem-fraction-static" in sizing['blockers'][0]['reason']
    head = report(plan, H1, allreduce=SKIPPED, blockers=sizing['blockers'], sizing=sizing)
    other = report(plan, H2, allreduce=SKIPPED, blockers=sizing['blockers'], sizing=sizing)
    assert head['failures'] == []
    assert [(f['check'], f['code']) for f in other['failures']] == [('all-reduce', 'allreduce-no-free-memory')]
    unreadable = v.allreduce_sizing(plan, H1, [{'host': H1, 'serving': True, 'meminfo': ''}])
    assert [b['code'] for b in unreadable['blockers']] == ['allreduce-memory-unknown']


NOT_APPLICABLE = {'changed': False, 'failed': False, 'applicable': False, 'world_size': 1, 'local_ranks': 1,
                  'reason': 'one node with one rank: there is no link between ranks to measure, so the all-reduce '
                            'does not apply (it measures the link between nodes)', 'cmd': ['python3', '/tmp/w.py']}


def test_one_node_allreduce_is_not_applicable_and_no_failure():
    summary = v.allreduce_summary(NOT_APPLICABLE, 'nccl', 'container')
    assert (summary['ran'], summary['applicable'], summary['passed'], summary['error']) == (True, False, False, None)
    assert summary['not_applicable_reason'] == NOT_APPLICABLE['reason']
    assert summary['results'] == [] and summary['peak_busbw_gbps'] is None
    assert v.allreduce_failures(summary, H1) == []
    # applicable unless the module said otherwise: a run, a skipped run, an older result without the key
    assert v.allreduce_summary(ALLREDUCE, 'gloo', 'python')['applicable'] is True
    assert v.allreduce_summary(SKIPPED, 'gloo', 'python')['applicable'] is True
    assert v.allreduce_summary(dict(ALLREDUCE, applicable=True), 'gloo', 'python')['passed'] is True


def test_one_node_group_passes_without_an_allreduce_verdict():
    plan = lab_plan()
    plan['groups']['spark'].update(hosts=[H1], nnodes=1, tp_size=1)
    del plan['nodes'][H2]
    node = report(plan, H1, allreduce=NOT_APPLICABLE, backend='nccl', require_rdma=False)
    assert node['failures'] == []
    [group] = v.group_reports(plan, {H1: node}, 'T')
    assert (group['verdict'], group['failures']) == ('pass', [])
    assert group['allreduce']['applicable'] is False and group['nodes'][0]['allreduce']['applicable'] is False
    # ... but an all-reduce that applies and did not pass still fails the head
    verdict = v.cluster_verdict([node], {'applicable': True, 'passed': False}, {'checked': True, 'healthy': True})
    assert [(f['host'], f['code']) for f in verdict['failures']] == [(H1, 'allreduce-not-passed')]


def test_threshold_is_the_one_the_module_used():
    plan = lab_plan()
    default = report(plan, H1)['allreduce']
    assert (default['threshold_gbps'], default['threshold_min_bytes']) == (DEFAULT_MIN_BUSBW_GBPS,
                                                                           DEFAULT_THRESHOLD_MIN_BYTES)
    given = report(plan, H1, min_busbw_gbps=20, threshold_min_bytes=1024)['allreduce']
    assert (given['threshold_gbps'], given['threshold_min_bytes']) == (20.0, 1024)
    returned = report(plan, H1, allreduce=dict(ALLREDUCE, min_busbw_gbps=19.5, threshold_min_bytes=2048),
                      min_busbw_gbps=20)['allreduce']
    assert (returned['threshold_gbps'], returned['threshold_min_bytes']) == (19.5, 2048)
    assert report(plan, H1, min_busbw_gbps=0)['allreduce']['threshold_gbps'] == 0.0


@pytest.mark.parametrize('state, code', [('absent', 'gpu-driver-absent'), ('mismatch', 'gpu-driver-mismatch'),
                                         ('no-gpu', 'gpu-driver-no-gpu'), ('error', 'gpu-driver-error')])
def test_gpu_driver_not_ready(state, code):
    plan = lab_plan()
    plan['nodes'][H2]['probe']['driver'] = {'state': state, 'version': None,
                                            'message': 'Failed to initialize NVML: Driver/library version mismatch'}
    plan['nodes'][H2]['probe']['gpu_count'] = 0
    failures = report(plan, H2)['failures']
    assert codes(failures) == [code]
    assert failures[0]['reason'].startswith('Failed to initialize NVML: Driver/library version mismatch on '
                                            'lab-spark-02. Fix: ')


def test_gpu_count_and_missing_probe():
    plan = lab_plan()
    plan['nodes'][H2]['probe']['gpu_count'] = 2
    assert report(plan, H2)['failures'] == [{
        'check': 'gpu', 'code': 'gpu-count',
        'reason': '2 GPU(s) found on lab-spark-02, expected 1. Fix: check `nvidia-smi` there, or set '
                  'preflight_expected_gpus_per_node'}]
    plan['nodes'][H2]['probe'] = None
    assert codes(report(plan, H2)['failures']) == ['verify-not-probed']


def test_errors_of_the_probed_plan_that_no_check_reported():
    """preflight leaves its errors in the plan when verify runs it; those about a host that its own checks did not
    report become that host's failures, once each."""
    plan = lab_plan()
    both = [H1, H2]
    plan['problems'] = [
        {'code': 'gpu-driver-versions-differ', 'severity': 'error', 'hosts': both, 'what': 'x', 'fix': None,
         'message': 'NVIDIA driver version (hosts lab-spark-01, lab-spark-02): nodes disagree on the driver version: '
                    '580.95.05 on lab-spark-01; 580.126.09 on lab-spark-02. Fix: install the same driver on all nodes.'},
        {'code': 'gpu-count', 'severity': 'error', 'hosts': [H2], 'message': 'counted by the gpu check'},
        {'code': 'cx7-no-rdma-device', 'severity': 'error', 'hosts': [H2], 'message': 'forgiven on gloo'},
        {'code': 'cx7-speed-degraded', 'severity': 'warning', 'hosts': [H2], 'message': 'a warning'},
        {'code': 'subnet-overlap', 'severity': 'error', 'hosts': [], 'message': 'names no host'},
    ]
    plan['nodes'][H2]['probe']['gpu_count'] = 3
    assert report(plan, H1)['failures'] == [
        {'check': 'cluster', 'code': 'gpu-driver-versions-differ', 'reason': plan['problems'][0]['message']}]
    assert codes(report(plan, H2)['failures']) == ['gpu-count', 'gpu-driver-versions-differ']


@pytest.mark.parametrize('count, text', [(8, '8 B'), (1023, '1023 B'), (1024, '1 KiB'), (1536, '1536 B'),
                                         (65536, '64 KiB'), (3 << 20, '3 MiB'), (1 << 30, '1 GiB'), (6 << 30, '6 GiB')])
def test_human_bytes(count, text):
    assert v.human_bytes(count) == text


def test_long_completion_text_is_cut():
    head = report(lab_plan(), H1, health=dict(HEALTH, completion_text='x' * 500))
    assert len(head['health']['completion_text']) == v.COMPLETION_TEXT_MAX
    assert head['health']['completion_text'].endswith('...')


def test_every_failure_code_is_lower_case_and_dashed():
    plan = lab_plan()
    plan['nodes'][H2]['probe'] = probe(('192.168.100.12', '192.168.101.12'), down=True)
    node = report(plan, H2, nccl_env=ENV_MISSING, unit=UNIT_MISSING, allreduce=SKIPPED, backend='nccl')
    head = report(plan, H1, allreduce={'msg': 'x'}, unit=UNIT_DEAD, health=SKIPPED)
    for item in node['failures'] + head['failures']:
        assert re.match(r'^[a-z0-9]+(-[a-z0-9]+)*$', item['code']), item
        assert item['check'] in v.CHECKS


# --- the group -------------------------------------------------------------------------------------------------------

def test_passing_group_report():
    plan = lab_plan()
    nodes = {H1: report(plan, H1), H2: report(plan, H2)}
    [group] = v.group_reports(plan, nodes, '20261127T001609Z', '/tmp/reports')
    assert group['verdict'] == 'pass' and group['passed'] is True and group['failures'] == []
    assert group['path'] == '/tmp/reports/spark-20261127T001609Z'
    assert (group['cluster'], group['nnodes'], group['head'], group['hosts']) == ('spark', 2, H1, [H1, H2])
    assert (group['dist_init_addr'], group['tp_size'], group['model']) == (
        '192.168.100.11:20000', 2, 'Qwen/Qwen2.5-0.5B-Instruct')
    assert [r['bytes'] for r in group['allreduce']['results']] == [r['bytes'] for r in ROWS]
    assert group['allreduce']['blockers'] == []
    assert group['health']['ttft_s'] == 0.0065
    assert [n['host'] for n in group['nodes']] == [H1, H2]
    assert all(set(n['allreduce']) == {'backend', 'runtime', 'ran', 'applicable', 'passed', 'verdict', 'error'}
               for n in group['nodes'])
    assert group['warnings'] == []
    assert group['allreduce']['applicable'] is True
    assert all('health' not in n for n in group['nodes'])
    assert 'health' in nodes[H1] and 'results' in nodes[H1]['allreduce'], 'the inputs are not changed'


def test_failing_group_report_lists_every_failure_with_its_host():
    plan = lab_plan()
    plan['nodes'][H2]['probe'] = probe(('192.168.100.12', '192.168.101.12'), down=True)
    blockers = v.allreduce_blockers(plan, H1, [H1, H2])
    nodes = {H1: report(plan, H1, allreduce=SKIPPED, blockers=blockers),
             H2: report(plan, H2, allreduce=SKIPPED, blockers=blockers)}
    [group] = v.group_reports(plan, nodes, '20261127T001626Z')
    assert group['verdict'] == 'fail' and 'path' not in group
    assert [(f['host'], f['check'], f['code']) for f in group['failures']] == [
        (H2, 'link', 'cx7-link-down'), (H2, 'link', 'cx7-no-ipv4'), (H2, 'all-reduce', 'allreduce-not-run')]
    assert group['allreduce']['ran'] is False and group['allreduce']['blockers'] == blockers


def test_a_node_without_report_did_not_run_and_the_head_missing_blocks_the_allreduce():
    plan = lab_plan()
    blockers = v.allreduce_blockers(plan, H2, [H2])
    [group] = v.group_reports(plan, {H1: None, H2: report(plan, H2, allreduce=SKIPPED, blockers=blockers)}, 'T')
    assert group['failures'] == [{
        'host': H1, 'check': 'reachable', 'code': 'verify-node-not-run',
        'reason': 'the checks did not run on lab-spark-01 (unreachable, a task failed there, or left out by --limit)'}]
    assert group['nodes'][0]['reachable'] is False and group['nodes'][0]['node_rank'] == 0
    assert group['allreduce']['ran'] is False and group['allreduce']['blockers'] == blockers
    assert group['allreduce']['backend'] == 'gloo' and group['health']['checked'] is False
    [alone] = v.group_reports(plan, {}, 'T')
    assert [f['host'] for f in alone['failures']] == [H1, H2]
    assert codes(alone['allreduce']['blockers']) == ['verify-node-not-run']


def test_cluster_verdict_never_passes_without_allreduce_and_health():
    plan = lab_plan()
    nodes = [report(plan, H1), report(plan, H2)]
    assert v.cluster_verdict(nodes, {'passed': True}, {'checked': True, 'healthy': True})['passed'] is True
    verdict = v.cluster_verdict(nodes, {'passed': False}, {'checked': False})
    assert verdict['verdict'] == 'fail'
    assert [(f['host'], f['code']) for f in verdict['failures']] == [
        (H1, 'allreduce-not-passed'), (H1, 'sglang-health-failed')]


def test_one_report_per_group():
    plan = lab_plan()
    plan['groups']['other'] = dict(plan['groups']['spark'], hosts=['lab-spark-03'], head='lab-spark-03', nnodes=1)
    plan['nodes']['lab-spark-03'] = dict(plan['nodes'][H1], group='other')
    nodes = {h: report(plan, h) for h in plan['nodes']}
    reports = v.group_reports(plan, nodes, 'T', 'r')
    assert [(r['cluster'], r['hosts'], r['verdict']) for r in reports] == [
        ('spark', [H1, H2], 'pass'), ('other', ['lab-spark-03'], 'pass')]
    assert [r['cluster'] for r in v.group_reports(plan, nodes, 'T', hosts=['lab-spark-03'])] == ['other']


# --- the contract --------------------------------------------------------------------------------------------------

def _documented(spec, path):
    node = {'options': spec}
    for key in path:
        options = node.get('options') or {}
        if key not in options:
            return False
        node = options[key]
    return True


def _paths(value, spec_path=()):
    """Key paths of a plan, the names under groups and nodes left out (they are not keys of the contract)."""
    for key, item in value.items():
        path = spec_path + (key,)
        yield path
        if path in (('groups',), ('nodes',)):
            for entry in item.values():
                yield from _paths(entry, path)
        # The contract describes the probe's driver and the modules' dicts as a whole.
        elif isinstance(item, dict) and path != ('nodes', 'probe', 'driver'):
            yield from _paths(item, path)


def test_plan_keys_are_the_documented_ones():
    """Every key the fixture plan holds (the ones verify reads) is in roles/preflight/meta/spark_cluster_plan.yml."""
    spec = yaml.safe_load(CONTRACT.read_text())['spark_cluster_plan']['options']
    paths = sorted(set(_paths(lab_plan())))
    assert ('groups', 'model', 'served_name') in paths and ('nodes', 'probe', 'link_problems') in paths
    missing = [path for path in paths if not _documented(spec, path)]
    assert missing == []
