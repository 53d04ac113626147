# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify_report role, run for real by ansible-playbook on localhost against fixed inputs (two runs).

The inputs are what playbooks/verify.yml handed the role on the lab (tests/lab, 2 machines, gloo over the CX7
veths, the SGLang stand-in) on 2026-11-27: a passing run (report spark-20261127T001609Z) and the run after
`ip link set enp1s0f1np1 down` on lab-spark-02 (report spark-20261127T001626Z). Only the fields the report shows
are kept; every value is as recorded.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'
STAMP = '20261127T001609Z'

PLAY = """
- name: Write a verify report from fixed inputs
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the report role
      ansible.builtin.include_role:
        name: dgxspark.sglang.verify_report
"""

# nccl_allreduce's table on rank 0 of the passing lab run: (bytes, time_us, algbw_gbps, busbw_gbps, correct).
ROWS = [
    (8, 276.72, 2.9e-05, 2.9e-05, True), (16, 1224.5, 1.3e-05, 1.3e-05, True),
    (32, 442.19, 7.2e-05, 7.2e-05, True), (64, 633.63, 0.000101, 0.000101, True),
    (128, 340.17, 0.000376, 0.000376, True), (256, 337.31, 0.000759, 0.000759, True),
    (512, 914.96, 0.00056, 0.00056, True), (1024, 762.6, 0.001343, 0.001343, True),
    (2048, 465.71, 0.004398, 0.004398, True), (4096, 863.76, 0.004742, 0.004742, True),
    (8192, 1191.58, 0.006875, 0.006875, True), (16384, 718.1, 0.022816, 0.022816, True),
    (32768, 933.47, 0.035103, 0.035103, True), (65536, 633.52, 0.103447, 0.103447, True),
    (131072, 561.65, 0.233371, 0.233371, True), (262144, 1952.45, 0.134264, 0.134264, True),
    (524288, 1565.47, 0.334907, 0.334907, True), (1048576, 2163.74, 0.484614, 0.484614, True),
    (2097152, 2626.52, 0.798452, 0.798452, True), (4194304, 5533.98, 0.757918, 0.757918, True),
    (8388608, 9860.75, 0.850707, 0.850707, True), (16777216, 19767.57, 0.848724, 0.848724, True),
    (33554432, 39899.38, 0.840976, 0.840976, True), (67108864, 78132.08, 0.858916, 0.858916, True),
]


def node(host, rank, mgmt, cx7, failures=(), down=False):
    interfaces = [
        {'name': 'enp1s0f1np1', 'present': True, 'operstate': 'down' if down else 'up',
         'speed_mbps': None if down else 10000, 'mtu': 9000, 'ipv4': [] if down else ['%s/24' % cx7[0]],
         'rdma_device': None, 'driver': None},
        {'name': 'enP2p1s0f1np1', 'present': True, 'operstate': 'up', 'speed_mbps': 10000, 'mtu': 9000,
         'ipv4': ['%s/24' % cx7[1]], 'rdma_device': None, 'driver': None},
    ]
    return {
        'host': host, 'node_rank': rank, 'management_address': mgmt,
        'gpu': {'ok': True, 'count': 1, 'names': ['NVIDIA GB10'], 'driver_version': '580.126.09', 'cuda_version': '13.0',
                'unified_memory': [True], 'memory_total_mib': [24106], 'error': None},
        'link': {'ok': not down, 'interfaces': interfaces, 'rdma_devices': [], 'rdma_required': False,
                 'problems': [f['reason'] for f in failures if f['check'] == 'link']},
        'nccl_env': {'path': '/etc/sglang/nccl.env', 'found': True,
                     'variables': {'NCCL_SOCKET_IFNAME': '=enp1s0f1np1,enP2p1s0f1np1', 'GLOO_SOCKET_IFNAME': 'enp1s0f1np1',
                                   'NCCL_IB_DISABLE': '1', 'UCX_NET_DEVICES': 'enp1s0f1np1,enP2p1s0f1np1',
                                   'NCCL_DEBUG': 'WARN'}},
        'unit': {'name': 'sglang.service', 'load_state': 'loaded', 'active_state': 'active', 'sub_state': 'running',
                 'restarts': '0'},
        'allreduce': {'backend': 'gloo', 'runtime': 'python', 'ran': not down, 'passed': not down, 'error': None},
        'failures': list(failures),
    }


PASSING = {
    'verify_report_timestamp': STAMP,
    'verify_report_cluster': {'group': 'spark', 'nnodes': 2, 'head': 'lab-spark-01',
                              'hosts': ['lab-spark-01', 'lab-spark-02'], 'dist_init_addr': '192.168.100.11:20000',
                              'tp_size': 2, 'model': 'Qwen/Qwen2.5-0.5B-Instruct'},
    'verify_report_nodes': [node('lab-spark-01', 0, '172.31.253.11', ('192.168.100.11', '192.168.101.11')),
                            node('lab-spark-02', 1, '172.31.253.12', ('192.168.100.12', '192.168.101.12'))],
    'verify_report_allreduce': {
        'ran': True, 'blockers': [], 'backend': 'gloo', 'runtime': 'python', 'world_size': 2, 'torch_version': '2.13.0+cpu',
        'nccl_version': None, 'device_name': None,
        'results': [dict(zip(('bytes', 'time_us', 'algbw_gbps', 'busbw_gbps', 'correct'), row)) for row in ROWS],
        'peak_busbw_gbps': 0.858916, 'threshold_gbps': 21.875, 'threshold_min_bytes': 134217728,
        'threshold_applied': False, 'passed': True, 'problems': [], 'error': None},
    'verify_report_health': {
        'checked': True, 'host': 'lab-spark-01', 'url': 'http://127.0.0.1:30000', 'healthy': True, 'model_ok': True,
        'served_model': 'Qwen/Qwen2.5-0.5B-Instruct', 'ttft_s': 0.0065, 'total_s': 0.0421, 'elapsed_s': 0.047,
        'completion_text': 'Hello from the lab stand-in (rank 0 of', 'completion_tokens': 8,
        'metrics': {'sglang:num_running_reqs': 0.0, 'sglang:num_requests_total': 5.0, 'sglang:token_usage': 0.0},
        'error': None},
}

# After `ip link set enp1s0f1np1 down` on lab-spark-02: the reasons verify.yml gave (connectx_info's sentences).
LINK_DOWN = [
    {'check': 'link', 'reason': 'enp1s0f1np1: link is down (operstate down); check the cable and `ip link set enp1s0f1np1 up`'},
    {'check': 'link', 'reason': 'enp1s0f1np1: no IPv4 address; give it one in its own subnet (e.g. in /etc/netplan/40-cx7.yaml)'},
    {'check': 'all-reduce', 'reason': 'not run: CX7 twin enp1s0f1np1 missing or down here'},
]


def failing_inputs():
    inputs = copy.deepcopy(PASSING)
    inputs['verify_report_nodes'][1] = node('lab-spark-02', 1, '172.31.253.12', ('192.168.100.12', '192.168.101.12'),
                                            failures=LINK_DOWN, down=True)
    inputs['verify_report_allreduce'].update(
        ran=False, results=[], passed=False, peak_busbw_gbps=None, world_size=None, torch_version=None,
        blockers=['lab-spark-02: CX7 twin enp1s0f1np1 missing or down'])
    return inputs


def run_report(tmp_path, inputs):
    inputs = dict(inputs, verify_report_dir=str(tmp_path / 'reports'))
    (tmp_path / 'input.json').write_text(json.dumps(inputs))
    (tmp_path / 'play.yml').write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'), ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_LOCALHOST_WARNING='false')
    proc = subprocess.run([str(PLAYBOOK_BIN), '-e', '@' + str(tmp_path / 'input.json'), str(tmp_path / 'play.yml')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, proc.stdout + proc.stderr, tmp_path / 'reports' / ('spark-' + STAMP)


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        return False
    return True


@pytest.fixture(scope='module')
def passing(tmp_path_factory):
    return run_report(tmp_path_factory.mktemp('pass'), PASSING)


@pytest.fixture(scope='module')
def failing(tmp_path_factory):
    return run_report(tmp_path_factory.mktemp('fail'), failing_inputs())


def test_passing_run_writes_three_files_and_exits_zero(passing):
    rc, out, folder = passing
    assert rc == 0, out[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ['busbw.svg', 'report.json', 'report.md'], out[-3000:]
    assert 'verify report: %s/report.md' % folder in out.replace('\n        ', ' ')


def test_report_json_has_a_correct_row_per_size(passing):
    report = json.loads((passing[2] / 'report.json').read_text())
    assert [r['bytes'] for r in report['allreduce']['results']] == [row[0] for row in ROWS]
    assert all(r['correct'] is True for r in report['allreduce']['results'])
    assert report['verdict'] == 'pass' and report['passed'] is True and report['failures'] == []
    assert (report['cluster'], report['timestamp'], report['nnodes'], report['head']) == ('spark', STAMP, 2, 'lab-spark-01')
    assert [n['host'] for n in report['nodes']] == ['lab-spark-01', 'lab-spark-02']
    assert report['health']['ttft_s'] == 0.0065 and report['allreduce']['peak_busbw_gbps'] == 0.858916


def test_report_md_has_verdict_node_tables_and_all_reduce_rows(passing):
    md = (passing[2] / 'report.md').read_text()
    assert '**Verdict: PASS**' in md
    assert '## lab-spark-01 (rank 0)' in md and '## lab-spark-02 (rank 1)' in md
    assert '| GPU | ok | 1 x NVIDIA GB10, driver 580.126.09' in md
    assert '| 64 MiB | 67108864 | 78132.08 | 0.858916 | 0.858916 | yes |' in md
    assert '| 8 B | 8 | 276.72 |' in md
    assert 'not applied (gloo)' in md
    assert '**FAIL**' not in md


@pytest.mark.skipif(not has_matplotlib(), reason='matplotlib is not installed (requirements.txt pins it)')
def test_svg_has_the_curve_and_the_threshold(passing):
    svg = (passing[2] / 'busbw.svg').read_text()
    curve = re.search(r'<g id="busbw-curve">(.*?)</g>', svg, re.S)
    assert curve and re.search(r'<path d="M [\d.]+ [\d.]+\s+(L [\d.]+ [\d.]+\s+){%d}"' % (len(ROWS) - 1), curve.group(1)), svg[:500]
    assert 'threshold 21.875 GB/s: not applied (gloo)' in svg
    assert '64 MiB' in svg and '8 B' in svg
    assert re.search(r'<g id="threshold">.*?stroke-dasharray', svg, re.S), 'a threshold that is not applied is dashed'


def test_failing_run_names_host_and_reason_in_its_last_lines(failing):
    rc, out, folder = failing
    assert rc != 0
    lines = [line.strip() for line in out.strip().splitlines() if line.strip()]
    tail = lines[lines.index(next(line for line in reversed(lines) if line.startswith('PLAY RECAP'))) - 4:]
    assert 'lab-spark-02: link: enp1s0f1np1: link is down (operstate down)' in '\n'.join(tail), '\n'.join(lines[-20:])
    assert 'lab-spark-02: all-reduce: not run: CX7 twin enp1s0f1np1 missing or down here' in '\n'.join(tail)
    assert 'lab-spark-01:' not in '\n'.join(tail)
    report = json.loads((folder / 'report.json').read_text())
    assert report['verdict'] == 'fail'
    assert [(f['host'], f['check']) for f in report['failures']] == [
        ('lab-spark-02', 'link'), ('lab-spark-02', 'link'), ('lab-spark-02', 'all-reduce')]
    md = (folder / 'report.md').read_text()
    assert '**Verdict: FAIL**: 3 failure(s) on lab-spark-02.' in md
    assert 'Not run: lab-spark-02: CX7 twin enp1s0f1np1 missing or down.' in md
    if has_matplotlib():
        assert 'all-reduce not run or failed' in (folder / 'busbw.svg').read_text()
