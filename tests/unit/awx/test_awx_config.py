"""AWX configured as code (awx/): surveys AWX accepts, one job template per playbook, survey variables the roles
declare, a credential type whose secrets stay secret, and a playbook that passes --syntax-check and ansible-lint."""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.dgxspark.sglang.tests.unit.awx.survey_rules import answer_errors, launch_extra_vars, spec_errors

ROOT = pathlib.Path(__file__).resolve().parents[3]
AWX = ROOT / 'awx'
BIN = pathlib.Path(sys.executable).parent


class Loader(yaml.SafeLoader):
    """YAML as Ansible reads awx/templates.yml: !unsafe marks a string Ansible does not template."""


Loader.add_constructor('!unsafe', lambda loader, node: loader.construct_scalar(node))


def templates():
    return yaml.load((AWX / 'templates.yml').read_text(), Loader=Loader)


def surveys():
    data = templates()
    found = [(jt['name'], jt['survey_spec']) for jt in data['awx_job_templates']]
    found.append((data['awx_workflow']['name'], data['awx_workflow']['survey_spec']))
    return found


SURVEYS = surveys()


# ---- AWX's survey rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, spec', SURVEYS, ids=[name for name, _spec in SURVEYS])
def test_every_survey_passes_awxs_rules(name, spec):
    assert spec_errors(spec) == [], name


@pytest.mark.parametrize('name, spec', SURVEYS, ids=[name for name, _spec in SURVEYS])
def test_no_question_has_a_default_or_is_required(name, spec):
    # AWX applies a valid default as an extra var on every launch, over the inventory's value; a required question
    # blocks every launch without an answer. Unanswered, a question sends nothing (AWX's API, and its UI drops '').
    for question in spec['spec']:
        assert 'default' not in question and question['required'] is False, (name, question['variable'])
    assert launch_extra_vars(spec, {}) == {}


def test_the_rules_refuse_what_awx_refuses():
    good = copy.deepcopy(SURVEYS[0][1])
    assert spec_errors(good) == []
    cases = []
    for change in (lambda s: s.pop('description'),
                   lambda s: s.update(spec=[]),
                   lambda s: s['spec'].append(dict(s['spec'][0])),                     # a variable twice
                   lambda s: s['spec'][0].pop('required'),
                   lambda s: s['spec'][0].update(type='number'),
                   lambda s: s['spec'][0].update(min=0.5),                             # AWX's min/max are integers
                   lambda s: s['spec'][0].update(default=3),                           # a text question's default
                   lambda s: s['spec'][0].update(default='x' * 300),                   # beyond its max
                   lambda s: s['spec'][0].update(type='multiplechoice', choices=['a', 'b'], default='c'),
                   lambda s: s['spec'][0].update(type='multiselect', choices=None) or s['spec'][0].pop('choices'),
                   lambda s: s['spec'][0].update(default='$encrypted$')):
        spec = copy.deepcopy(good)
        change(spec)
        cases.append(spec_errors(spec))
    assert all(cases), cases


@pytest.mark.parametrize('variable, answer, ok', [
    ('sglang_server_model', 'Qwen/Qwen2.5-7B-Instruct', True),
    ('sglang_server_model', 'x' * 201, False),
    ('sglang_server_tp_size', 2, True),
    ('sglang_server_tp_size', 0, False),
    ('sglang_server_tp_size', '2', False),
    ('sglang_server_args_override', 'mem-fraction-static: 0.8\nmax-running-requests: 64\n', True),
    ('sglang_server_args_override', 'x' * 5000, False),
    ('verify_allreduce_min_busbw_gbps', 21.875, True),
    ('verify_allreduce_min_busbw_gbps', 20, True),
    ('verify_allreduce_min_busbw_gbps', -1.0, False),
    ('verify_allreduce_below_threshold', 'warn', True),
    ('verify_allreduce_below_threshold', 'ignore', False),
])
def test_answers_are_checked_as_awx_checks_them(variable, answer, ok):
    question = templates()['awx_survey_questions'][variable]
    assert (answer_errors(question, {variable: answer}) == []) is ok


# ---- the job templates ----------------------------------------------------------------------------------------

def test_the_job_templates_name_playbooks_that_exist():
    for jt in templates()['awx_job_templates']:
        assert (ROOT / jt['playbook']).is_file(), jt


def test_every_playbook_has_a_job_template():
    playbooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'playbooks').glob('*.yml'))
    assert 'playbooks/site.yml' in playbooks and 'playbooks/verify.yml' in playbooks
    named = [jt['playbook'] for jt in templates()['awx_job_templates']]
    assert sorted(named) == playbooks, 'playbooks without a job template in awx/templates.yml: %s' % (
        sorted(set(playbooks) - set(named)))
    names = [jt['name'] for jt in templates()['awx_job_templates']]
    assert len(set(names)) == len(names)


def test_the_issue_names_of_deploy_and_verify():
    by_playbook = {jt['playbook']: jt['name'] for jt in templates()['awx_job_templates']}
    assert by_playbook['playbooks/site.yml'] == 'Deploy SGLang cluster'
    assert by_playbook['playbooks/verify.yml'] == 'Verify SGLang cluster'


def test_the_workflow_runs_deploy_then_verify_and_the_schedule_verify():
    data = templates()
    names = {jt['name'] for jt in data['awx_job_templates']}
    nodes = {n['identifier']: n for n in data['awx_workflow']['nodes']}
    assert {n['unified_job_template']['name'] for n in nodes.values()} <= names
    assert all(n['unified_job_template']['type'] == 'job_template' for n in nodes.values())
    deploy = next(n for n in nodes.values() if n['unified_job_template']['name'] == 'Deploy SGLang cluster')
    assert [s['identifier'] for s in deploy['related']['success_nodes']] == ['verify']
    assert nodes['verify']['unified_job_template']['name'] == 'Verify SGLang cluster'
    assert data['awx_verify_schedule']['job_template'] == 'Verify SGLang cluster'
    # The workflow asks everything its jobs ask, once (templates outside the workflow ask their own).
    in_workflow = {n['unified_job_template']['name'] for n in nodes.values()}
    asked = {q['variable'] for jt in data['awx_job_templates'] if jt['name'] in in_workflow
             for q in jt['survey_spec']['spec']}
    assert {q['variable'] for q in data['awx_workflow']['survey_spec']['spec']} == asked


def test_the_deploy_survey_asks_what_an_operator_changes():
    spec = next(jt for jt in templates()['awx_job_templates'] if jt['name'] == 'Deploy SGLang cluster')['survey_spec']
    assert [q['variable'] for q in spec['spec']] == ['sglang_server_model', 'sglang_server_model_revision',
                                                     'sglang_server_tp_size', 'sglang_server_args_override']
    verify = next(jt for jt in templates()['awx_job_templates'] if jt['name'] == 'Verify SGLang cluster')['survey_spec']
    assert 'verify_allreduce_min_busbw_gbps' in [q['variable'] for q in verify['spec']]


# ---- survey variables are the roles' declared variables ----------------------------------------------------------

def role_options():
    """variable -> (role, its option) from every role's meta/argument_specs.yml."""
    options = {}
    for spec in sorted(ROOT.glob('roles/*/meta/argument_specs.yml')):
        for entry in yaml.safe_load(spec.read_text())['argument_specs'].values():
            for name, option in entry.get('options', {}).items():
                options.setdefault(name, (spec.parents[1].name, option))
    return options


def module_option(reference):
    """The option a C(O(ns.coll.module#module:option)) reference names, from the module's DOCUMENTATION."""
    module, option = re.match(r'dgxspark\.sglang\.(\w+)#module:(\w+)', reference).groups()
    doc = importlib.import_module('ansible_collections.dgxspark.sglang.plugins.modules.' + module).DOCUMENTATION
    return yaml.safe_load(doc)['options'][option]


TYPES = {'text': ('str', 'raw', 'path'), 'textarea': ('str', 'raw'), 'password': ('str', 'raw'),
         'integer': ('int', 'raw'), 'float': ('float', 'raw'), 'multiplechoice': ('str', 'raw'),
         'multiselect': ('list', 'raw')}


@pytest.mark.parametrize('variable', sorted(templates()['awx_survey_questions']))
def test_each_survey_variable_is_declared_by_a_role_with_a_matching_type(variable):
    question = templates()['awx_survey_questions'][variable]
    assert question['variable'] == variable
    options = role_options()
    assert variable in options, '%s is asked by a survey but no role declares it in meta/argument_specs.yml' % variable
    role, option = options[variable]
    assert option.get('type', 'str') in TYPES[question['type']], (role, variable, option.get('type'))
    if question['type'] == 'multiplechoice':
        choices = option.get('choices')
        if choices is None:
            text = ' '.join(option['description'] if isinstance(option['description'], list) else [option['description']])
            choices = module_option(re.search(r'O\((dgxspark\.sglang\.\w+#module:\w+)\)', text).group(1))['choices']
        assert set(question['choices']) <= set(choices), (variable, question['choices'], choices)


def test_the_survey_variables_are_used_by_the_playbooks_they_are_asked_for():
    # Each question of a job template is a variable its playbook's roles declare (preflight runs in both playbooks).
    options = role_options()
    for jt in templates()['awx_job_templates']:
        text = (ROOT / jt['playbook']).read_text()
        roles = set(re.findall(r'(?:role|name): dgxspark\.sglang\.(\w+)', text))  # roles:, or include_role
        for question in jt['survey_spec']['spec']:
            assert options[question['variable']][0] in roles, (jt['name'], question['variable'], roles)


# ---- the credential type ----------------------------------------------------------------------------------------

def test_the_credential_type_injects_the_two_secrets_as_extra_vars():
    ctype = templates()['awx_secrets_credential_type']
    assert ctype['name'] == 'SGLang secrets'
    fields = {f['id']: f for f in ctype['inputs']['fields']}
    assert set(fields) == {'hf_token', 'api_key'} and all(f['secret'] is True for f in fields.values())
    assert ctype['injectors'] == {'extra_vars': {'sglang_server_hf_token': '{{ hf_token }}',
                                                 'sglang_server_api_key': '{{ api_key }}'}}
    # The variables they land in are declared, and no_log where the role takes them.
    options = role_options()
    for var in ctype['injectors']['extra_vars']:
        assert options[var][1].get('no_log') is True, var


# ---- the playbook -------------------------------------------------------------------------------------------------

def test_configure_passes_syntax_check():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'))
    proc = subprocess.run([str(BIN / 'ansible-playbook'), '--syntax-check', str(AWX / 'configure.yml')], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_configure_passes_ansible_lint():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'))
    proc = subprocess.run([str(BIN / 'ansible-lint'), '--profile', 'production', '--nocolor', 'awx/'], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_awx_collection_is_the_pinned_one():
    pinned = yaml.safe_load((AWX / 'requirements.yml').read_text())['collections']
    assert [c['name'] for c in pinned] == ['awx.awx']
    assert importlib.metadata.version('ansible') == '12.3.0'
    manifest = pathlib.Path(importlib.metadata.distribution('ansible').locate_file('ansible_collections/awx/awx/MANIFEST.json'))
    assert json.loads(manifest.read_text())['collection_info']['version'] == pinned[0]['version']
