"""The preflight role's controller-side validation, run for real by ansible-playbook against inventories
whose hosts are never contacted (gather_facts: false, only tasks_from: validate, run_once on localhost)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / 'roles' / 'preflight'
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'

# Unreachable management addresses (TEST-NET-1): a task that tried to connect would fail loudly.
PLAY = """
- name: Validate the cluster only
  hosts: spark
  gather_facts: false
  tasks:
    - name: Run the controller-side part of preflight
      ansible.builtin.include_role:
        name: dgxspark.sglang.preflight
        tasks_from: validate
    - name: Print the plan each host received
      ansible.builtin.debug:
        msg: "{{ preflight_cluster }}"
"""


def run_validate(tmp_path, inventory):
    (tmp_path / 'hosts.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_CALLBACK_RESULT_FORMAT='json',
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'))
    proc = subprocess.run([str(PLAYBOOK_BIN), '-i', str(tmp_path / 'hosts.yml'), str(tmp_path / 'play.yml')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def plans_by_host(output):
    """{host: plan} from the debug task's `ok: [host] => {"msg": ...}` blocks."""
    decoder = json.JSONDecoder()
    plans = {}
    task = output.split('TASK [Print the plan each host received]', 1)[1]
    for chunk in task.split('ok: [')[1:]:
        name, rest = chunk.partition('] => ')[::2]
        plans[name] = decoder.raw_decode(rest)[0]
    return {name: result['msg'] for name, result in plans.items()}


def spark(hosts, **group_vars):
    group_vars.setdefault('spark_cx7_subnets', ['192.168.100.0/24', '192.168.101.0/24'])
    return {'all': {'children': {'spark': {'hosts': hosts, 'vars': group_vars}}}}


@pytest.fixture(scope='module', autouse=True)
def _have_ansible_playbook():
    if not PLAYBOOK_BIN.exists():
        pytest.skip('ansible-playbook not next to %s' % sys.executable)


def test_good_inventory_publishes_the_plan_to_every_host(tmp_path):
    rc, out = run_validate(tmp_path, spark(
        {'spark-01': {'ansible_host': '192.0.2.11'},
         'spark-02': {'ansible_host': '192.0.2.12', 'spark_cx7_addresses': ['192.168.100.40', '192.168.101.40']},
         'spark-03': {'ansible_host': '192.0.2.13'}},
        sglang_server_args={'tp-size': 3, 'mem-fraction-static': 0.75}, spark_dist_init_port=29500))
    assert rc == 0, out
    plans = plans_by_host(out)
    assert sorted(plans) == ['spark-01', 'spark-02', 'spark-03']
    plan = plans['spark-03']
    assert all(p == plan for p in plans.values())
    assert (plan['nnodes'], plan['head'], plan['dist_init_addr'], plan['tp_size']) == (3, 'spark-01', '192.168.100.11:29500', 3)
    assert plan['nodes']['spark-02']['cx7_addresses'] == ['192.168.100.40', '192.168.101.40']
    assert plan['nodes']['spark-03']['cx7_interfaces'][1] == {
        'name': 'enP2p1s0f1np1', 'address': '192.168.101.13/24', 'ip': '192.168.101.13', 'subnet': '192.168.101.0/24'}
    # validate ran once, on the controller, and never connected to a host.
    assert out.count('Fail with every problem of the cluster description') == 1
    assert '[spark-01 -> localhost]' in out and 'UNREACHABLE' not in out


BAD = [
    ('quoted_rank_management_port_one_subnet',
     spark({'spark-01': {'ansible_host': '192.0.2.11', 'spark_node_rank': '0'},
            'spark-02': {'ansible_host': '192.0.2.12', 'spark_node_rank': 1}},
           spark_cx7_interfaces=['enp1s0f1np1', 'enP7s7'], spark_cx7_subnets=['192.168.100.0/24', '192.168.100.0/24']),
     ['has 3 problem(s)',
      'spark_node_rank (host spark-01): is the string \'0\', not an integer. Fix: write spark_node_rank: 0 without quotes',
      'spark_cx7_interfaces (group vars of hosts spark-01, spark-02): enP7s7 is the 10 GbE management port, not a CX7 twin',
      'spark_cx7_subnets (group vars of hosts spark-01, spark-02): the same subnet 192.168.100.0/24 on both twins']),
    ('management_in_cx7_subnet_duplicate_address_tp',
     spark({'spark-01': {'ansible_host': '192.168.101.5', 'spark_cx7_addresses': ['192.168.100.30', '192.168.101.30']},
            'spark-02': {'ansible_host': '192.0.2.12', 'spark_cx7_addresses': ['192.168.100.30', '192.168.101.31']}},
           sglang_server_args={'tp': 3}),
     ['spark_cx7_addresses (hosts spark-01, spark-02): 192.168.100.30 is given to both spark-01 and spark-02',
      'ansible_host (host spark-01): the management address 192.168.101.5 lies inside the CX7 subnet 192.168.101.0/24',
      "sglang_server_args['tp'] (group vars of hosts spark-01, spark-02): tp x pp = 3 x 1 = 3 is not divisible by the node count 2"]),
    ('host_vars_override_and_gapped_ranks',
     spark({'spark-01': {'ansible_host': '192.0.2.11', 'spark_node_rank': 0},
            'spark-02': {'ansible_host': '192.0.2.12', 'spark_node_rank': 2,
                         'spark_cx7_subnets': ['192.168.200.0/24', '192.168.201.0/24']}}),
     ['spark_cx7_subnets (hosts spark-02, spark-01): hosts disagree (a host_vars override?): spark-01: [',
      'spark_node_rank (host spark-02): ranks [0, 2] leave a gap (missing 1) for 2 hosts. Fix: number the hosts 0 .. 1']),
]


@pytest.mark.parametrize('case_id, inventory, fragments', BAD, ids=[c[0] for c in BAD])
def test_bad_inventory_fails_before_any_host_is_touched(tmp_path, case_id, inventory, fragments):
    rc, out = run_validate(tmp_path, inventory)
    assert rc != 0, out
    for fragment in fragments:
        assert fragment in out, '%s: %r not in output:\n%s' % (case_id, fragment, out)
    assert 'Print the plan each host received' not in out
    assert 'UNREACHABLE' not in out
