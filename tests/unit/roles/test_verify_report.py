# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify role, run for real by ansible-playbook on this machine: two nodes that are both localhost.

The plan (``spark_cluster_plan`` at stage ``probed``, as preflight publishes it) is given in the inventory; the
rest is real: the NCCL environment file read back, the all-reduce (torch's gloo on 127.0.0.1 over ``lo``, both
ranks started at once by one task), the API key read from rank 0's server.yaml, the health check against the
lab's SGLang stand-in, the report on the controller and the final failure. Only ``systemctl`` is a stand-in on
PATH that prints the unit state the test chooses (this machine runs no systemd).

Runs: everything healthy; lab-spark-02's first CX7 twin down (its probe says so) with the unit stopped on every
node; lab-spark-02 unreachable. Needs torch (requirements-dev.txt pins the CPU wheel).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (
    DEFAULT_MIN_BUSBW_GBPS,
    DEFAULT_THRESHOLD_MIN_BYTES,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import render_env_file
from ansible_collections.dgxspark.sglang.tests.unit.standin import StandIn, free_port

pytest.importorskip('torch', reason='torch is not installed: make venv (requirements-dev.txt pins torch)')

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'
MODEL = 'Qwen/Qwen2.5-0.5B-Instruct'
KEY = 'lab-key-0123'
A, B = 'enp1s0f1np1', 'enP2p1s0f1np1'
H1, H2 = 'lab-spark-01', 'lab-spark-02'
STAMP = '20261127T001609Z'
MAX_BYTES = 65536  # 8 B .. 64 KiB: 14 sizes, a few seconds

PLAY = """
- name: Verify the cluster
  hosts: spark
  gather_facts: false
  roles:
    - role: dgxspark.sglang.verify
"""

SYSTEMCTL = """#!/bin/sh
# systemctl show UNIT --property=...: the state the test wrote beside this script.
cat "$(dirname "$0")/unit-state"
"""


def veth(name, up=True):
    return {'name': name, 'present': True, 'operstate': 'up' if up else 'down', 'speed_mbps': 10000 if up else None,
            'mtu': 9000, 'ipv4': ['127.0.0.1/8'] if up else [], 'rdma_device': None, 'driver': None}


def problem(code, variable, what, fix):
    return {'code': code, 'variable': variable, 'where': None, 'hosts': [], 'severity': 'error', 'what': what,
            'fix': fix, 'message': '%s: %s. Fix: %s.' % (variable, what, fix)}


def probe(down=False):
    problems = [problem('cx7-no-rdma-device', 'spark_cx7_interfaces', '%s has no RDMA device' % name,
                        'check that mlx5_ib is loaded') for name in (A, B)]
    if down:
        problems[:0] = [problem('cx7-link-down', 'spark_cx7_interfaces', '%s is down (operstate down)' % A,
                                'check the cable and `ip link set %s up`' % A)]
    return {'driver': {'state': 'ready', 'version': '580.126.09', 'message': None}, 'gpu_count': 1,
            'gpus': [{'name': 'NVIDIA GB10', 'unified_memory': True, 'memory_total_mib': 24106}],
            'cuda_version': '13.0', 'interfaces': [veth(A, up=not down), veth(B)], 'rdma_devices': [],
            'link_problems': problems}


def plan(tmp_path, url, down=False, one_node=False):
    """Both nodes on 127.0.0.1 (their CX7 addresses too), the rest as in the lab; ``one_node``: H1 alone."""
    node = {'group': 'spark', 'cx7_addresses': ['127.0.0.1', '127.0.0.1']}
    if one_node:
        alone = plan(tmp_path, url)
        alone['groups']['spark'].update(hosts=[H1], nnodes=1, tp_size=1)
        del alone['nodes'][H2]
        return alone
    return {
        'stage': 'probed',
        'nccl_env_file': str(tmp_path / 'nccl.env'),
        'groups': {'spark': {
            'hosts': [H1, H2], 'head': H1, 'nnodes': 2, 'tp_size': 2, 'gpus_per_node': 1,
            'dist_init_addr': '127.0.0.1:20000', 'url': url, 'scheme': 'http', 'service': 'sglang',
            'config_dir': str(tmp_path / 'etc'), 'config_file': str(tmp_path / 'etc' / 'server.yaml'),
            'runtime': 'native', 'image': None, 'python': sys.executable,
            'model': {'served_name': MODEL},
        }},
        'nodes': {
            H1: dict(node, node_rank=0, management_address='127.0.0.1', probe=probe()),
            H2: dict(node, node_rank=1, management_address='127.0.0.1', probe=probe(down)),
        },
    }


def run_verify(tmp_path, url, unit_state, down=False, unreachable=False, one_node=False):
    """Run the role; returns (rc, output, report folder)."""
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc' / 'server.yaml').write_text(yaml.safe_dump({'model-path': MODEL, 'api-key': KEY}))
    (tmp_path / 'nccl.env').write_text(render_env_file({
        'NCCL_SOCKET_IFNAME': '=lo', 'GLOO_SOCKET_IFNAME': 'lo', 'NCCL_IB_DISABLE': '1', 'NCCL_DEBUG': 'WARN'}))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'systemctl').write_text(SYSTEMCTL)
    (bin_dir / 'systemctl').chmod(0o755)
    (bin_dir / 'unit-state').write_text(unit_state)
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    hosts = {H1: dict(local)} if one_node else {H1: dict(local), H2: dict(local)}
    if unreachable:
        hosts[H2] = {'ansible_connection': 'ssh', 'ansible_host': '192.0.2.1', 'ansible_user': 'nobody',
                     'ansible_ssh_common_args': '-o ConnectTimeout=2 -o StrictHostKeyChecking=no'}
    inventory = {'all': {'children': {'spark': {'hosts': hosts, 'vars': {
        'spark_cluster_plan': plan(tmp_path, url, down, one_node),
        'verify_allreduce_backend': 'gloo',
        'verify_allreduce_runtime': 'python',
        'verify_allreduce_python': sys.executable,
        'verify_allreduce_max_bytes': MAX_BYTES,
        # The unit is active (a serving node): the sizes come from MemAvailable less this reserve. 0 here, so that
        # the run does not depend on how much memory this machine has free.
        'verify_allreduce_memory_reserve_bytes': 0,
        'verify_allreduce_timeout_s': 60,
        'verify_allreduce_master_port': free_port(),
        'verify_health_timeout_s': 10,
        'verify_report_dir': str(tmp_path / 'reports'),
        'verify_report_timestamp': STAMP,
    }}}}}
    (tmp_path / 'hosts.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'), PATH='%s:%s' % (bin_dir, os.environ.get('PATH', '')))
    proc = subprocess.run([str(PLAYBOOK_BIN), '-i', str(tmp_path / 'hosts.yml'), str(tmp_path / 'play.yml')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr, tmp_path / 'reports' / ('spark-' + STAMP)


ACTIVE = 'LoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=0\n'
STOPPED = 'LoadState=loaded\nActiveState=inactive\nSubState=dead\nNRestarts=0\n'


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    # The lab's SGLang stand-in as rank 0 of a one-node group, on a free port.
    port = free_port()
    server = StandIn(tmp_path_factory.mktemp('standin'), 'standin', '--model-path', MODEL, '--host', '127.0.0.1',
                     '--port', str(port), '--enable-metrics', '--api-key', KEY, '--tp-size', '1')
    server.wait_listening(port, timeout=10)
    yield 'http://127.0.0.1:%d' % port
    server.stop()


@pytest.fixture(scope='module')
def passing(tmp_path_factory, standin):
    return run_verify(tmp_path_factory.mktemp('pass'), standin, ACTIVE)


@pytest.fixture(scope='module')
def failing(tmp_path_factory, standin):
    return run_verify(tmp_path_factory.mktemp('fail'), standin, STOPPED, down=True)


@pytest.fixture(scope='module')
def unreachable(tmp_path_factory, standin):
    return run_verify(tmp_path_factory.mktemp('unreachable'), standin, ACTIVE, unreachable=True)


@pytest.fixture(scope='module')
def one_node(tmp_path_factory, standin):
    return run_verify(tmp_path_factory.mktemp('one'), standin, ACTIVE, one_node=True)


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        return False
    return True


def tail(out):
    """The lines before PLAY RECAP: where a user looks."""
    lines = [line.strip() for line in out.strip().splitlines() if line.strip()]
    end = max(i for i, line in enumerate(lines) if line.startswith('PLAY RECAP'))
    return '\n'.join(lines[max(0, end - 15):end])


def test_passing_run_writes_three_files_and_exits_zero(passing):
    rc, out, folder = passing
    assert rc == 0, out[-4000:]
    assert sorted(p.name for p in folder.iterdir()) == ['busbw.svg', 'report.json', 'report.md'], out[-3000:]
    assert 'verify report: %s/report.md' % folder in out
    assert 'verdict PASS' in out
    assert KEY not in out  # read from server.yaml with no_log, passed to sglang_health's no_log option


def test_report_json_has_a_correct_row_per_size_and_the_health_check(passing):
    report = json.loads((passing[2] / 'report.json').read_text())
    assert report['verdict'] == 'pass' and report['passed'] is True and report['failures'] == []
    assert (report['cluster'], report['timestamp'], report['nnodes'], report['head']) == ('spark', STAMP, 2, H1)
    assert [n['host'] for n in report['nodes']] == [H1, H2]
    rows = report['allreduce']['results']
    assert [r['bytes'] for r in rows] == [8 << i for i in range(14)] and all(r['correct'] for r in rows)
    assert report['allreduce']['world_size'] == 2 and report['allreduce']['backend'] == 'gloo'
    assert (report['allreduce']['threshold_gbps'], report['allreduce']['threshold_min_bytes']) == (
        DEFAULT_MIN_BUSBW_GBPS, DEFAULT_THRESHOLD_MIN_BYTES)
    assert report['allreduce']['threshold_applied'] is False
    # gloo: the threshold does not apply, at any size; no provisional verdict and no warning either
    assert (report['allreduce']['verdict'], report['allreduce']['warnings'], report['warnings']) == (
        'not-judged', [], [])
    # both units are active: the sizes were capped by the memory free (the 64 KiB asked for fits)
    assert report['allreduce']['sized_from_memory'] is True
    assert report['allreduce']['sizing_note'].startswith('SGLang serves on lab-spark-01, lab-spark-02: the buffers '
                                                         'were sized from the memory free (MemAvailable ')
    assert report['allreduce']['sizing_note'].endswith('largest size 64 KiB')
    health = report['health']
    assert health['checked'] and health['healthy'] and health['served_model'] == MODEL and health['ttft_s'] > 0
    assert health['completion_text'].startswith('Hello from the lab stand-in')
    node = report['nodes'][1]
    assert node['nccl_env']['variables']['GLOO_SOCKET_IFNAME'] == 'lo'
    assert node['link']['rdma_required'] is False and node['link']['problems'] == []
    assert node['unit']['active_state'] == 'active' and node['allreduce']['passed'] is True


def test_report_md_has_verdict_node_tables_and_all_reduce_rows(passing):
    md = (passing[2] / 'report.md').read_text()
    assert '**Verdict: PASS**' in md
    assert '## lab-spark-01 (rank 0)' in md and '## lab-spark-02 (rank 1)' in md
    assert '| GPU | ok | 1 x NVIDIA GB10, driver 580.126.09' in md
    assert re.search(r'\| 64 KiB \| 65536 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| yes \|', md)
    assert '| 8 B | 8 |' in md
    assert 'not applied (gloo)' in md
    assert 'Bandwidth verdict: not judged (gloo runs on the CPUs over sockets' in md
    assert 'Buffers sized from free memory (GB10 memory is unified): SGLang serves on lab-spark-01' in md
    assert '| healthy | yes |' in md
    assert '**FAIL**' not in md


@pytest.mark.skipif(not has_matplotlib(), reason='matplotlib is not installed (requirements.txt pins it)')
def test_svg_has_the_curve_and_the_threshold(passing):
    svg = (passing[2] / 'busbw.svg').read_text()
    curve = re.search(r'<g id="busbw-curve">(.*?)</g>', svg, re.S)
    assert curve and re.search(r'<path d="M [\d.]+ [\d.]+\s+(L [\d.]+ [\d.]+\s+){13}"', curve.group(1)), svg[:500]
    assert 'threshold %g GB/s: not applied (gloo)' % DEFAULT_MIN_BUSBW_GBPS in svg
    assert '64 KiB' in svg and '8 B' in svg
    assert re.search(r'<g id="threshold">.*?stroke-dasharray', svg, re.S), 'a threshold that is not applied is dashed'


def test_failing_run_names_host_and_reason_in_its_last_lines(failing):
    rc, out, folder = failing
    assert rc != 0
    last = tail(out)
    assert ('lab-spark-02: link: spark_cx7_interfaces: enp1s0f1np1 is down (operstate down). Fix: check the cable '
            'and `ip link set enp1s0f1np1 up`. [cx7-link-down]') in last, last
    assert 'lab-spark-02: all-reduce: not run: CX7 twin enp1s0f1np1 missing or down here [allreduce-not-run]' in last
    assert 'lab-spark-01: sglang unit: sglang.service is inactive (dead) on lab-spark-01.' in last
    assert 'lab-spark-01: sglang health: not checked: sglang.service is not active on rank 0 (lab-spark-01)' in last
    assert 'no RDMA device' not in last, 'gloo runs need no RDMA device'
    report = json.loads((folder / 'report.json').read_text())
    assert report['verdict'] == 'fail'
    assert [(f['host'], f['check'], f['code']) for f in report['failures']] == [
        (H1, 'sglang unit', 'sglang-unit-not-active'), (H1, 'sglang health', 'sglang-health-not-checked'),
        (H2, 'link', 'cx7-link-down'), (H2, 'all-reduce', 'allreduce-not-run'),
        (H2, 'sglang unit', 'sglang-unit-not-active')]
    assert report['allreduce']['ran'] is False
    md = (folder / 'report.md').read_text()
    assert '**Verdict: FAIL**: 5 failure(s) on lab-spark-01, lab-spark-02.' in md
    assert 'Not run: lab-spark-02: CX7 twin enp1s0f1np1 missing or down.' in md
    assert '| lab-spark-02 | link | `cx7-link-down` |' in md
    if has_matplotlib():
        assert 'all-reduce not run or failed' in (folder / 'busbw.svg').read_text()


def test_unreachable_node_is_named_and_blocks_the_allreduce(unreachable):
    rc, out, folder = unreachable
    assert rc != 0
    last = tail(out)
    assert ('lab-spark-02: reachable: the checks did not run on lab-spark-02 (unreachable, a task failed there, or '
            'left out by --limit) [verify-node-not-run]') in last, last
    report = json.loads((folder / 'report.json').read_text())
    assert [(f['host'], f['code']) for f in report['failures']] == [(H2, 'verify-node-not-run')]
    assert report['allreduce']['ran'] is False
    assert [b['host'] for b in report['allreduce']['blockers']] == [H2]
    assert report['health']['healthy'] is True, 'rank 0 was still checked'


def test_one_node_cluster_shows_the_allreduce_as_not_applicable_and_passes(one_node):
    rc, out, folder = one_node
    assert rc == 0, out[-4000:]
    assert 'verdict PASS; all-reduce not applicable (one node)' in out
    report = json.loads((folder / 'report.json').read_text())
    assert (report['verdict'], report['nnodes'], report['failures']) == ('pass', 1, [])
    allreduce = report['allreduce']
    assert (allreduce['ran'], allreduce['applicable'], allreduce['results']) == (True, False, [])
    assert allreduce['passed'] is False and allreduce['error'] is None
    assert report['nodes'][0]['allreduce']['applicable'] is False
    md = (folder / 'report.md').read_text()
    assert '| All-reduce | ok | not applicable (one node) |' in md
    assert 'Not applicable (one node): a group of one node with one rank has no link between ranks' in md
    assert 'Peak bus bandwidth' not in md and '**FAIL**' not in md
