"""Without sglang_server_api_key, the sglang_server role takes the key the group already serves with (server.yaml on the
head) before it generates one: a run from another checkout or an AWX job, which has no credentials folder, neither
writes a new key nor restarts the group for one. Run for real by ansible-playbook, in check mode, on local hosts (the
harness of test_sglang_server_render.py)."""

from __future__ import annotations

import json
import re
import sys

import jinja2
import pytest
import yaml

from ansible_collections.dgxspark.sglang.tests.unit.roles.test_sglang_server_render import (  # pylint: disable=unused-import
    PLAYBOOK_BIN,
    ROLE,
    fixture_hub,
    local_group,
    role_vars,
    run,
)

KEY_ON_NODES = 'KeyTheGroupServesWith0123456789abcdef'


def server_yaml(key):
    """server.yaml as the role writes it (the content of its own task, rendered with ``key``)."""
    tasks = yaml.safe_load((ROLE / 'tasks' / 'main.yml').read_text())
    task = next(t for t in tasks if t.get('name', '').startswith('Write server.yaml'))
    env = jinja2.Environment(keep_trailing_newline=True)
    env.filters['to_json'] = json.dumps
    return env.from_string(task['ansible.builtin.copy']['content']).render(__sglang_server_api_key=key)


@pytest.fixture(scope='module')
def checked(tmp_path_factory, hub):
    if not PLAYBOOK_BIN.exists():
        pytest.skip('ansible-playbook not next to %s' % sys.executable)
    tmp_path = tmp_path_factory.mktemp('apikey')
    etc = tmp_path / 'etc'
    etc.mkdir()
    # What the role wrote on an earlier run (from another checkout, whose credentials folder this run does not have).
    (etc / 'server.yaml').write_text(server_yaml(KEY_ON_NODES))
    (etc / 'server.yaml').chmod(0o600)
    group = role_vars(tmp_path, 'grp', sglang_server_runtime='native', sglang_server_native_python=sys.executable,
                      spark_hf_endpoint=hub.endpoint)
    del group['sglang_server_hf_token']
    inventory = {'all': {'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
                         'children': {'grp': local_group(tmp_path, ['grp-1', 'grp-2'], **group)}}}
    play = """
- name: The role on a group that already has a key
  hosts: grp
  gather_facts: false
  roles:
    - role: dgxspark.sglang.preflight
      preflight_allow_missing_driver: true
      preflight_fail_on_missing_interface: false
    - dgxspark.sglang.sglang_server
"""
    rc, out = run(tmp_path, inventory, play, '--check', '--diff')
    return rc, out, tmp_path


def test_the_run_succeeds(checked):
    rc, out, _tmp = checked
    assert rc == 0, out


def test_the_key_on_the_nodes_is_kept_and_none_is_generated(checked):
    _rc, out, tmp_path = checked
    assert not (tmp_path / 'credentials').exists(), 'a key was generated although the group has one'
    # server.yaml would be rewritten (and the group restarted) if the key differed from the one on the nodes.
    reports = re.findall(r'grp-\d \(--node-rank \d of --nnodes 2, native\): ([^"\n]*)', out)
    assert len(reports) == 2, out
    assert all('server.yaml' not in report for report in reports), reports


def test_the_key_is_never_shown(checked):
    _rc, out, _tmp = checked
    assert KEY_ON_NODES not in out
