"""The kubernetes_manifests filter (plugins/filter/kubernetes.py): a thin wrapper; problems become one error."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import kubernetes
from ansible_collections.dgxspark.sglang.plugins.filter.kubernetes import FilterModule
from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
from ansible_collections.dgxspark.sglang.tests.unit.plugins.module_utils.test__cluster import describe, probes

FILTERS = FilterModule().filters()
HERE = pathlib.Path(kubernetes.__file__).resolve().parent


def test_the_filter_is_registered_with_docs():
    assert set(FILTERS) == {'kubernetes_manifests'}
    doc = yaml.safe_load((HERE / 'kubernetes_manifests.yml').read_text())
    assert doc['DOCUMENTATION']['name'] == 'kubernetes_manifests' and doc['RETURN']['_value']['type'] == 'dict'


def test_objects_and_secrets_of_a_probed_plan():
    plan = _cluster.plan_cluster(describe(2))
    plan = _cluster.complete_plan(plan, probes(plan))
    rendered = FILTERS['kubernetes_manifests'](plan, {'namespace': 'llm', 'run_as_user': None}, api_key='k')
    assert {o['metadata'].get('namespace', 'llm') for o in rendered['objects'] + rendered['secrets']} == {'llm'}


def test_every_problem_in_one_error_with_its_code():
    with pytest.raises(AnsibleFilterError) as info:
        FILTERS['kubernetes_manifests'](_cluster.plan_cluster(describe(2)), {'namespace': 'Bad_Name'})
    text = str(info.value)
    assert '[k8s-plan-not-probed]' in text and '[k8s-bad-setting]' in text and '[k8s-api-key-missing]' in text
    with pytest.raises(AnsibleFilterError, match='spark_cluster_plan'):
        FILTERS['kubernetes_manifests']('not a plan')
