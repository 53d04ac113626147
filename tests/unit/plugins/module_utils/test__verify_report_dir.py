"""Where verify's reports go when verify_report_dir is not set: ansible-runner's artifacts, the current folder of an
installed collection's run, reports/ of a checkout."""

from __future__ import annotations

import os

import pytest

from ansible_collections.dgxspark.sglang.plugins.filter.verify import verify_default_report_dir
from ansible_collections.dgxspark.sglang.plugins.module_utils._verify import default_report_dir


def test_a_checkout_keeps_reports_at_its_top(tmp_path):
    (tmp_path / 'playbooks').mkdir()
    assert default_report_dir(str(tmp_path / 'playbooks'), '/elsewhere') == str(tmp_path / 'reports')


def test_an_installed_collection_writes_into_the_current_folder_not_into_itself(tmp_path):
    playbooks = tmp_path / 'collections' / 'ansible_collections' / 'dgxspark' / 'sglang' / 'playbooks'
    playbooks.mkdir(parents=True)
    assert default_report_dir(str(playbooks), '/home/ops/sparks') == '/home/ops/sparks/reports'


def test_a_checkout_run_by_its_fqcn_through_the_collections_link_is_still_a_checkout(tmp_path):
    # ansible.cfg's collections_path: collections/ansible_collections/dgxspark/sglang links to the checkout.
    checkout = tmp_path / 'checkout'
    (checkout / 'playbooks').mkdir(parents=True)
    link = checkout / 'collections' / 'ansible_collections' / 'dgxspark'
    link.mkdir(parents=True)
    os.symlink('../../..', str(link / 'sglang'))
    assert default_report_dir(str(link / 'sglang' / 'playbooks'), '/elsewhere') == str(checkout / 'reports')


@pytest.mark.parametrize('playbook_dir', ['/srv/checkout/playbooks',
                                          '/usr/share/ansible/collections/ansible_collections/dgxspark/sglang/playbooks'])
def test_ansible_runner_puts_them_among_the_jobs_artifacts(playbook_dir):
    assert default_report_dir(playbook_dir, '/runner/project', '/runner/artifacts/42') == '/runner/artifacts/42/reports'


def test_the_filter_takes_the_current_folder_and_ignores_an_empty_artifact_dir(tmp_path, monkeypatch):
    playbooks = tmp_path / 'ansible_collections' / 'dgxspark' / 'sglang' / 'playbooks'
    playbooks.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert verify_default_report_dir(str(playbooks), '') == str(tmp_path / 'reports')
