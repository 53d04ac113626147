"""The collection as a product: built, installed from its tarball into an empty collections path, and run as AWX runs
it, by ansible-runner, against a lab of its own: ``dgxspark.sglang.site`` then ``dgxspark.sglang.verify`` by their FQCN,
from a folder that is not the checkout.

The private data dir is laid out as AWX lays it out (tests/unit/awx_job.py): a project of a team's own (its
``collections/requirements.yml`` names the tarball; ``ansible-galaxy collection install -r`` into
``requirements_collections`` is what a project sync does), the lab's inventory as an SCM inventory source imports it,
a survey answer in ``env/extravars``, the "SGLang secrets" credential's injected vars (``-e @file``), the lab's SSH key
as the machine credential. Checked: each job ends ``successful``; every task came from the installed copy; no secret
in any event or output; the verify report among the verify job's artifacts. Then the deploy job again with a
credential that holds no API key (and no credentials folder, as from a fresh checkout): the key is read back from the
nodes, nothing changes and nothing restarts.

The lab takes the ids of the environment (DGXSPARK_LAB_ID, DGXSPARK_LAB_DIR), as the Molecule scenarios do; it is
brought up here and down at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from ansible_collections.dgxspark.sglang.tests.unit.awx_job import (
    exported_inventory,
    private_data_dir,
    run_job,
    set_credential_vars,
)

REPO = pathlib.Path(__file__).resolve().parents[3]
LAB = [sys.executable, str(REPO / 'tests/lab/lab.py')]
BIN = pathlib.Path(sys.executable).parent
HF_TOKEN = 'hf_InstalledJobTokenNeverShown0123456789'
API_KEY = 'InstalledJobApiKeyNeverShown0123456789'
# A survey answer: a flag merged over the lab inventory's sglang_server_args, checked and passed to every rank.
ANSWERS = {'sglang_server_args_override': 'max-running-requests: 16\n'}
TIMES = {}


def timed(name, func, *args, **kwargs):
    start = time.monotonic()
    try:
        return func(*args, **kwargs)
    finally:
        TIMES[name] = round(time.monotonic() - start, 1)


@pytest.fixture(scope='module')
def lab_inventory(request):
    if os.geteuid() != 0:
        pytest.skip('the lab needs root (namespaces, mounts, cgroups)')
    env = dict(os.environ, DGXSPARK_LAB_TORCH='1')
    up = timed('lab up', subprocess.run, LAB + ['up', '2'], capture_output=True, text=True, check=False, env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield pathlib.Path(up.stdout.strip().splitlines()[-1]).resolve()
    finally:
        down = timed('lab down', subprocess.run, LAB + ['down'], capture_output=True, text=True, check=False)
        reporter = request.config.pluginmanager.get_plugin('terminalreporter')
        capture = request.config.pluginmanager.get_plugin('capturemanager')
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line('\nawx-test times (s): %s' % json.dumps(TIMES))
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('installed')
    assert REPO not in path.resolve().parents
    return path


def galaxy(*args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.devnull)
    env.pop('ANSIBLE_CONFIG', None)
    proc = subprocess.run([str(BIN / 'ansible-galaxy'), 'collection'] + list(args), capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope='module')
def pdd(workdir, lab_inventory):
    """The private data dir: the tarball built, a team's project that requires it, the project sync's install."""
    timed('build', galaxy, 'build', '--output-path', str(workdir), str(REPO))
    tarball = next(workdir.glob('dgxspark-sglang-*.tar.gz'))
    project = workdir / 'project-src'
    (project / 'collections').mkdir(parents=True)
    (project / 'collections' / 'requirements.yml').write_text(yaml.safe_dump(
        {'collections': [{'name': str(tarball), 'type': 'file'}]}))
    (project / 'ansible.cfg').write_text('[defaults]\nforks = 10\n\n[ssh_connection]\npipelining = true\n')
    inventory = exported_inventory(lab_inventory)
    key = inventory['all']['vars']['ansible_ssh_private_key_file']
    root = private_data_dir(workdir / 'pdd', project, inventory, extra_vars=ANSWERS,
                            credential_vars={'sglang_server_hf_token': HF_TOKEN, 'sglang_server_api_key': API_KEY},
                            ssh_key=key)
    timed('install', galaxy, 'install', '-r', str(root / 'project' / 'collections' / 'requirements.yml'),
          '-p', str(root / 'requirements_collections'))
    assert (root / 'requirements_collections' / 'ansible_collections' / 'dgxspark' / 'sglang' / 'MANIFEST.json').is_file()
    return root


@pytest.fixture(scope='module')
def deploy(pdd):
    return timed('deploy job', run_job, pdd, 'dgxspark.sglang.site', 1)


@pytest.fixture(scope='module')
def verify(pdd, deploy):
    return timed('verify job', run_job, pdd, 'dgxspark.sglang.verify', 2)


@pytest.fixture(scope='module')
def redeploy(pdd, verify):
    """The deploy job again with a credential that holds the HF token only: AWX injects its empty API key as ''. No
    credentials folder either (a fresh checkout, an AWX job)."""
    set_credential_vars(pdd, {'sglang_server_hf_token': HF_TOKEN, 'sglang_server_api_key': ''})
    return timed('deploy job, no key', run_job, pdd, 'dgxspark.sglang.site', 3)


def test_the_deploy_job_is_successful(deploy):
    assert deploy.status == 'successful' and deploy.rc == 0, deploy


def test_every_task_came_from_the_installed_tarball(pdd, deploy, verify):
    installed = str(pdd / 'requirements_collections' / 'ansible_collections' / 'dgxspark' / 'sglang') + '/'
    paths = {e['event_data']['task_path'].rsplit(':', 1)[0] for job in (deploy, verify) for e in job.events
             if e.get('event') == 'playbook_on_task_start' and e['event_data'].get('task_path')}
    assert paths and all(p.startswith(installed) for p in paths), sorted(p for p in paths if not p.startswith(installed))


def test_the_survey_answer_reached_every_rank(deploy):
    units = [e for e in deploy.host_events('runner_on_ok')
             if e['event_data']['task'] == 'Write the systemd unit of this rank']
    assert len(units) == 2
    argv = [e for e in deploy.host_events('runner_on_ok')
            if e['event_data']['task'].startswith('Build this node') and 'launch_server flags' in e['event_data']['task']]
    assert len(argv) == 2 and all('--max-running-requests' in e['event_data']['res']['ansible_facts']['__sglang_server_argv']
                                  for e in argv)


def test_the_verify_job_is_successful_with_its_report_among_the_artifacts(verify):
    assert verify.status == 'successful' and verify.rc == 0, verify
    reports = sorted((verify.artifact_dir / 'reports').glob('spark-*/report.json'))
    assert len(reports) == 1, list(verify.artifact_dir.iterdir())
    report = json.loads(reports[0].read_text())
    assert report['verdict'] == 'pass', report.get('failures')
    for name in ('report.md', 'busbw.svg'):
        assert (reports[0].parent / name).stat().st_size > 0


def test_no_secret_in_any_event_or_output(deploy, verify, redeploy):
    for job in (deploy, verify, redeploy):
        text = job.events_text() + job.stdout
        assert HF_TOKEN not in text and API_KEY not in text, job.artifact_dir


def test_without_a_key_the_groups_own_is_read_back_and_nothing_restarts(pdd, redeploy):
    assert redeploy.status == 'successful', redeploy
    stats = [e for e in redeploy.events if e.get('event') == 'playbook_on_stats'][-1]['event_data']
    assert stats['changed'] == {}, stats['changed']
    assert not (pdd / 'credentials').exists(), 'an API key was generated'
    reports = [e['event_data']['res']['msg'] for e in redeploy.host_events('runner_on_ok')
               if e['event_data']['task'] == 'Report what happened on this node']
    assert len(reports) == 2 and all('unchanged, kept running' in r for r in reports), reports
