# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of the dgxspark.sglang.nccl_env filters, and of the nccl_env role that uses them."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
from ansible_collections.dgxspark.sglang.plugins.filter import nccl as nccl_filter
from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import check_nccl_settings
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes, format_problems

ROOT = pathlib.Path(__file__).resolve().parents[4]
TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SPARK_RDMA = ['rocep1s0f1', 'roceP2p1s0f1']
FILTERS = nccl_filter.FilterModule().filters()


def test_filters_are_registered():
    assert set(FILTERS) == {'nccl_env', 'nccl_env_file'}


def test_nccl_env_filter_on_a_spark():
    env = FILTERS['nccl_env'](TWINS, rdma_devices=SPARK_RDMA, extra={'NCCL_DEBUG': 'INFO'})
    assert env['NCCL_IB_HCA'] == '=rocep1s0f1,roceP2p1s0f1'
    assert env['NCCL_DEBUG'] == 'INFO'


def test_nccl_env_filter_raises_one_error_listing_every_problem():
    with pytest.raises(AnsibleFilterError) as info:
        FILTERS['nccl_env'](TWINS, rdma_devices=[], extra={'NCCL_TIMEOUT': 1800, 'NCCL_SOCKET_IFNAME': 'enP7s7'})
    text = str(info.value)
    assert text.startswith('The NCCL environment has 2 problems:')
    # The filter's error carries the messages of the problems _nccl found, in order: compare with them, not wording.
    found = check_nccl_settings({'NCCL_TIMEOUT': 1800, 'NCCL_SOCKET_IFNAME': 'enP7s7'}, None, None, None, TWINS, [])
    assert codes(found) == ['nccl-dead-variable', 'nccl-not-cx7-interface']
    assert text == format_problems(found, 'The NCCL environment')


def test_nccl_env_filter_warns_about_gid_index(monkeypatch):
    seen = []
    monkeypatch.setattr(nccl_filter.display, 'warning', seen.append)
    FILTERS['nccl_env'](TWINS, rdma_devices=SPARK_RDMA, extra={'NCCL_IB_GID_INDEX': 3})
    assert len(seen) == 1 and '[nccl-discouraged-variable]' in seen[0] and 'NCCL_IB_GID_INDEX' in seen[0]


def test_nccl_env_filter_warns_when_ib_is_forced_off_with_devices(monkeypatch):
    seen = []
    monkeypatch.setattr(nccl_filter.display, 'warning', seen.append)
    env = FILTERS['nccl_env'](TWINS, rdma_devices=SPARK_RDMA, ib_disable=True)
    assert env['NCCL_IB_DISABLE'] == '1'
    assert len(seen) == 1 and '[nccl-ib-disabled-with-rdma]' in seen[0]
    seen.clear()
    FILTERS['nccl_env'](TWINS, rdma_devices=SPARK_RDMA)
    assert seen == []


def test_nccl_env_file_filter_renders_and_rejects():
    text = FILTERS['nccl_env_file'](FILTERS['nccl_env'](TWINS, rdma_devices=[]))
    assert 'NCCL_SOCKET_IFNAME==enp1s0f1np1,enP2p1s0f1np1\n' in text
    with pytest.raises(AnsibleFilterError):
        FILTERS['nccl_env_file']({'NCCL_DEBUG': 'INFO\nX=1'})
    with pytest.raises(AnsibleFilterError):
        FILTERS['nccl_env_file'](['NCCL_DEBUG=INFO'])


# ---- the role, run for real against this machine (connection local) --------------------------------

PLAYBOOK = """
- hosts: all
  gather_facts: false
  roles:
    - role: dgxspark.sglang.nccl_env
"""


def run_role(tmp_path, extra_vars, *args):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(PLAYBOOK)
    varsfile = tmp_path / 'vars.json'
    varsfile.write_text(json.dumps(extra_vars))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    cmd = [str(pathlib.Path(sys.executable).parent / 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
           '-e', '@%s' % varsfile, str(playbook)] + list(args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


needs_root_and_playbook = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which('ansible-playbook', path=str(pathlib.Path(sys.executable).parent)),
    reason='the role writes files owned by root; needs root and ansible-playbook beside this Python')


def probed_plan(target, rdma, **settings):
    """A one-node plan at stage probed, as preflight publishes it, with the node's RDMA devices."""
    vars_ = {'ansible_host': '192.0.2.11', 'spark_cx7_interfaces': TWINS, 'nccl_env_file': str(target),
             'spark_cx7_subnets': ['192.168.100.0/24', '192.168.101.0/24'], 'sglang_server_model': 'Qwen/Q'}
    plan = _cluster.plan_cluster({'cluster': 'spark', 'hosts': [{'name': 'localhost', 'vars': vars_}]})
    gpu = {'driver_state': 'ready', 'dgx_os': True, 'gpu_count': 1, 'gpus': [{'name': 'NVIDIA GB10'}]}
    cx7 = {'interfaces': [{'name': t, 'present': True} for t in TWINS], 'rdma_devices': rdma}
    return _cluster.complete_plan(plan, {'localhost': {'gpu': gpu, 'cx7': cx7}}, nccl_settings=settings)


@needs_root_and_playbook
def test_role_writes_the_plan_s_file_and_is_idempotent(tmp_path):
    target = tmp_path / 'etc' / 'sglang' / 'nccl.env'
    plan = probed_plan(target, SPARK_RDMA, extra={'NCCL_DEBUG_SUBSYS': 'INIT,NET', 'NCCL_IB_MERGE_NICS': False})
    first = run_role(tmp_path, {'spark_cluster_plan': plan})
    assert first.returncode == 0, first.stdout + first.stderr
    text = target.read_text()
    assert 'NCCL_IB_HCA==rocep1s0f1,roceP2p1s0f1\n' in text
    assert 'NCCL_IB_MERGE_NICS=0\n' in text
    assert oct(target.stat().st_mode & 0o777) == '0o644'
    assert oct(target.parent.stat().st_mode & 0o777) == '0o755'
    second = run_role(tmp_path, {'spark_cluster_plan': plan}, '--check', '--diff')
    assert second.returncode == 0, second.stdout + second.stderr
    assert 'changed=0' in second.stdout, second.stdout


@needs_root_and_playbook
def test_role_writes_the_lab_file_without_rdma(tmp_path):
    # No RDMA device behind the twins, like the lab's veths: sockets over the twins, IB off.
    target = tmp_path / 'nccl.env'
    result = run_role(tmp_path, {'spark_cluster_plan': probed_plan(target, [])})
    assert result.returncode == 0, result.stdout + result.stderr
    text = target.read_text()
    assert 'NCCL_SOCKET_IFNAME==enp1s0f1np1,enP2p1s0f1np1\n' in text
    assert 'NCCL_IB_DISABLE=1\n' in text
    assert 'NCCL_IB_HCA' not in text and 'enP7s7' not in text


@needs_root_and_playbook
def test_role_refuses_a_plan_without_the_node_s_probe(tmp_path):
    # A plan at stage description knows no RDMA device: the role writes nothing rather than guess IB off.
    target = tmp_path / 'nccl.env'
    plan = probed_plan(target, SPARK_RDMA)
    plan['stage'] = 'description'
    plan['nodes']['localhost']['nccl_env'] = None
    result = run_role(tmp_path, {'spark_cluster_plan': plan})
    assert result.returncode != 0
    assert 'Fix: run the dgxspark.sglang.preflight role before this one' in result.stdout
    assert not target.exists()
