"""A survey answer reaches the same preflight checks as the inventory's values, and a bad one fails the job before any
host is touched: "Deploy SGLang cluster" run as AWX runs it (ansible-runner, a private data dir laid out as AWX lays
it out, the project being this repository, the inventory imported from inventories/spark), on hosts whose SSH port is
closed, so that any task that reached a host would show as unreachable."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.dgxspark.sglang.tests.unit.awx_job import exported_inventory, private_data_dir, run_job
from ansible_collections.dgxspark.sglang.tests.unit.awx.test_awx_config import Loader

ROOT = pathlib.Path(__file__).resolve().parents[3]
HF_TOKEN = 'hf_SurveyJobTokenNeverShown0123456789'
API_KEY = 'SurveyJobApiKeyNeverShown0123456789'
# What runs before the plan is published, all on the controller (action plugins; no host contacted): the role's
# argument spec check, then the plan's two tasks (set_fact, assert).
SPEC_CHECK = "Validating arguments against arg spec 'main'"
PLAN_TASKS = ['Check the cluster description of group spark',
              'Fail with every problem of the cluster description, or publish spark_cluster_plan']


def without_spec_check(tasks):
    return [t for t in tasks if not t.startswith(SPEC_CHECK)]


def deploy_playbook():
    jts = yaml.load((ROOT / 'awx' / 'templates.yml').read_text(), Loader=Loader)['awx_job_templates']
    return next(jt['playbook'] for jt in jts if jt['name'] == 'Deploy SGLang cluster')


def job(tmp_path, answers, ident):
    # Closed ports on loopback: a task that reaches a host fails at once as unreachable.
    inventory = exported_inventory(ROOT / 'inventories' / 'spark',
                                   **{'spark-01': {'ansible_host': '127.0.0.11', 'ansible_port': 1},
                                      'spark-02': {'ansible_host': '127.0.0.12', 'ansible_port': 1}})
    root = private_data_dir(tmp_path / ('job-%s' % ident), ROOT, inventory, extra_vars=answers,
                            credential_vars={'sglang_server_hf_token': HF_TOKEN, 'sglang_server_api_key': API_KEY},
                            job_id=ident)
    return run_job(root, deploy_playbook(), ident, timeout=600)


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    answers = {'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct',
               'sglang_server_args_override': 'schedule-heuristic: lpm\nmem-fraction-static: 85\n'}
    return job(tmp_path_factory.mktemp('bad'), answers, 101)


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    answers = {'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct', 'sglang_server_tp_size': 2,
               'sglang_server_args_override': 'mem-fraction-static: 0.8\n'}
    return job(tmp_path_factory.mktemp('good'), answers, 102)


def test_a_bad_answer_fails_the_job_at_the_plan(bad):
    assert bad.status == 'failed' and bad.rc != 0, bad
    assert without_spec_check(bad.tasks_started()) == PLAN_TASKS, bad
    failed = bad.host_events('runner_on_failed')
    assert len(failed) == 1 and failed[0]['event_data']['task'] == PLAN_TASKS[1]
    message = failed[0]['event_data']['res']['msg']
    assert "sglang_server_args_override['schedule-heuristic']" in message and '[sglang-renamed-flag]' in message
    assert "sglang_server_args_override['mem-fraction-static']" in message and '[sglang-out-of-range]' in message


def test_a_bad_answer_touches_no_host(bad):
    assert bad.host_events('runner_on_unreachable') == []
    # Every task that ran is one of the plan's, which run on the controller.
    ran = {e['event_data']['task'] for e in bad.host_events('runner_on_ok', 'runner_on_failed')}
    assert set(without_spec_check(ran)) <= set(PLAN_TASKS)


def test_a_good_answer_passes_the_plan_and_goes_on_to_the_hosts(good):
    # The control: the same job with a good answer gets past the plan, to the probes, which find the hosts unreachable.
    assert good.status == 'failed', good
    started = without_spec_check(good.tasks_started())
    assert started[:2] == PLAN_TASKS and len(started) > 2, started
    assert good.host_events('runner_on_unreachable'), good


def test_no_secret_in_any_event_or_output(bad, good):
    for one in (bad, good):
        text = one.events_text() + one.stdout
        assert HF_TOKEN not in text and API_KEY not in text


def test_the_job_reads_awx_s_files(bad):
    # The credential's vars came through env/cmdline (-e @file), the survey's through env/extravars.
    command = (bad.artifact_dir / 'command').read_text()
    assert 'tmp_sglang_secrets' in command and 'env/extravars' in command
