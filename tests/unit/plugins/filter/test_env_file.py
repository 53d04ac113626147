# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of the dgxspark.sglang.env_file filter, and that every env file the roles write goes through it."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import env_file as env_file_filter

ROOT = pathlib.Path(__file__).resolve().parents[4]
FILTERS = env_file_filter.FilterModule().filters()


def test_filter_is_registered_and_writes_bare_values():
    assert set(FILTERS) == {'env_file'}
    assert FILTERS['env_file']({'HF_TOKEN': 'hf_x'}, ['# h']) == '# h\nHF_TOKEN=hf_x\n'
    assert FILTERS['env_file']({}) == ''


def test_filter_fails_with_the_code_the_variable_and_not_the_value():
    with pytest.raises(AnsibleFilterError) as info:
        FILTERS['env_file']({'HF_TOKEN': 'hf_"secret'}, None, 'sglang_server_hf_token')
    assert '[env-value-quote]' in str(info.value) and 'sglang_server_hf_token' in str(info.value)
    assert 'secret' not in str(info.value)


@pytest.mark.parametrize('args', [(['a'],), ({'A': 'b'}, ['not a comment'])])
def test_filter_rejects_what_is_no_env_file(args):
    with pytest.raises(AnsibleFilterError):
        FILTERS['env_file'](*args)


def _tasks():
    for path in sorted(ROOT.glob('roles/*/tasks/*.yml')):
        for task in yaml.safe_load(path.read_text()) or []:
            yield path, task


def test_every_env_file_a_role_writes_uses_the_one_format():
    """nccl.env (read by systemd and docker) and the router's router.env (systemd): written by the env-file filters."""
    found = []
    for path, task in _tasks():
        copy = task.get('ansible.builtin.copy') or {}
        if 'content' in copy and ('.env' in str(copy.get('dest')) or 'env_file' in str(copy.get('dest'))
                                  or 'secrets_file' in str(copy.get('dest'))):
            found.append(path.parts[-3])
            assert ('dgxspark.sglang.env_file' in copy['content']
                    or 'dgxspark.sglang.nccl_env_file' in copy['content']), (path, task['name'])
    assert sorted(found) == ['nccl_env', 'sglang_router']
