"""The kubernetes role, run for real by ansible-playbook on this machine (render only: no cluster here).

The play gets a probed cluster plan of two Sparks (as preflight publishes it) and runs the role: the files land in
kubernetes_manifest_dir (the objects 0644, the Secrets 0600, the folder 0700), every object in them passes the pinned
Kubernetes schema, no secret shows in the output, a second run changes nothing, and a run in check mode after it
predicts no change. A plan at stage description fails before anything is written, saying what to run.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._kubernetes import KUBERNETES_VERSION
from ansible_collections.dgxspark.sglang.tests.unit.plugins.module_utils.test__cluster import describe, probes

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'
API_KEY = 'sk-role-test-key-NEVER-shown-4242'

PLAY = """
- name: The kubernetes role
  hosts: spark
  gather_facts: false
  roles:
    - role: dgxspark.sglang.kubernetes
"""


@pytest.fixture(scope='module', autouse=True)
def _have_ansible_playbook():
    if not PLAYBOOK_BIN.exists():
        pytest.skip('ansible-playbook not next to %s' % sys.executable)


def run(tmp_path, plan, *args, **extra):
    inventory = {'all': {'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
                         'children': {'spark': {'hosts': {'spark-01': {}, 'spark-02': {}}}}}}
    (tmp_path / 'inventory').mkdir(exist_ok=True)
    (tmp_path / 'inventory' / 'hosts.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(PLAY)
    variables = dict({'spark_cluster_plan': plan, 'kubernetes_manifest_dir': str(tmp_path / 'out'),
                      'sglang_server_api_key': API_KEY}, **extra)
    (tmp_path / 'vars.json').write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'))
    proc = subprocess.run([str(PLAYBOOK_BIN), '-i', str(tmp_path / 'inventory' / 'hosts.yml'), str(tmp_path / 'play.yml'),
                           '-e', '@' + str(tmp_path / 'vars.json')] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def recap(output):
    return {host: dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', line))
            for host, line in re.findall(r'^(\S+)\s+:\s+(ok=.*)$', output, re.MULTILINE)}


@pytest.fixture(scope='module')
def probed():
    plan = _cluster.plan_cluster(describe(2))
    return _cluster.complete_plan(plan, probes(plan))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, probed):
    tmp_path = tmp_path_factory.mktemp('k8s-role')
    first = run(tmp_path, probed)
    second = run(tmp_path, probed)
    check = run(tmp_path, probed, '--check', '--diff')
    return tmp_path, first, second, check


def test_the_role_writes_the_objects_and_the_secrets_apart(runs):
    tmp_path, (rc, output), _second, _check = runs
    assert rc == 0, output
    out = tmp_path / 'out'
    assert oct(out.stat().st_mode & 0o777) == '0o700'
    assert oct((out / '00-sglang.yaml').stat().st_mode & 0o777) == '0o644'
    assert oct((out / '10-secrets.yaml').stat().st_mode & 0o777) == '0o600'
    objects = [o for o in yaml.safe_load_all((out / '00-sglang.yaml').read_text()) if o]
    secrets = [o for o in yaml.safe_load_all((out / '10-secrets.yaml').read_text()) if o]
    assert [o['kind'] for o in objects] == ['Namespace', 'ConfigMap', 'ConfigMap', 'Service', 'StatefulSet', 'StatefulSet']
    assert [o['kind'] for o in secrets] == ['Secret']
    for obj in objects + secrets:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert API_KEY not in (out / '00-sglang.yaml').read_text()
    assert yaml.safe_load(secrets[0]['stringData']['server.yaml']) == {'api-key': API_KEY}
    assert API_KEY not in output


def test_a_second_run_changes_nothing_and_check_mode_agrees(runs):
    _tmp_path, _first, (rc, output), (check_rc, check_output) = runs
    assert rc == 0, output
    assert all(counts['changed'] == 0 for counts in recap(output).values()), output
    assert check_rc == 0, check_output
    assert all(counts['changed'] == 0 for counts in recap(check_output).values()), check_output
    assert API_KEY not in check_output


def test_a_plan_without_probes_fails_before_anything_is_written(tmp_path):
    rc, output = run(tmp_path, _cluster.plan_cluster(describe(2)))
    assert rc != 0
    assert 'preflight_probe: true' in output
    assert not (tmp_path / 'out').exists()


def test_a_bad_setting_fails_naming_the_variable(tmp_path, probed):
    rc, output = run(tmp_path, probed, kubernetes_namespace='Not_A_Label')
    assert rc != 0 and 'kubernetes_namespace' in output and '[k8s-bad-setting]' in output
    assert not (tmp_path / 'out').exists()
