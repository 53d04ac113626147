"""sglang_server_args_override: flags for one run (an AWX survey answer), merged over sglang_server_args by one rule,
and judged by the same checks of the cluster plan as the inventory's flags."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import (
    check_description,
    flag_identity,
    merge_server_args,
    parse_args_override,
    plan_cluster,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes, errors

MODEL = 'Qwen/Qwen2.5-7B-Instruct'
INVENTORY_ARGS = {'mem-fraction-static': 0.75, 'chunked-prefill-size': 8192, 'served-model-name': 'qwen-7b'}


def describe(args=None, override=None, gpus=1, **group_vars):
    """A group of 2 Sparks whose group vars hold ``args`` and, as an extra var does, ``override`` on every host."""
    values = {'spark_cx7_subnets': ['192.168.100.0/24', '192.168.101.0/24'], 'sglang_server_model': MODEL,
              'sglang_server_args': copy.deepcopy(INVENTORY_ARGS if args is None else args)}
    if override is not None:
        values['sglang_server_args_override'] = override
    values.update(group_vars)
    names = ['spark-01', 'spark-02']
    return {'cluster': 'spark', 'play_hosts': names, 'gpus_per_node': gpus,
            'hosts': [{'name': n, 'vars': dict(copy.deepcopy(values), ansible_host='10.0.0.%d' % (11 + i))}
                      for i, n in enumerate(names)]}


def group_of(plan):
    return plan['groups']['spark']


# ---- the rule ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('key, flag', [
    ('mem-fraction-static', 'mem-fraction-static'),
    ('mem_fraction_static', 'mem-fraction-static'),
    ('--mem-fraction-static', 'mem-fraction-static'),
    ('tensor-parallel-size', 'tp-size'),
    ('tp', 'tp-size'),
    ('not-a-flag', 'not-a-flag'),
])
def test_a_key_is_known_by_the_flag_it_sets(key, flag):
    assert flag_identity(key) == flag


def test_a_flag_of_the_override_replaces_the_inventorys_and_the_others_stay():
    merged = merge_server_args(INVENTORY_ARGS, {'mem-fraction-static': 0.8, 'max-running-requests': 64})
    assert merged == {'mem-fraction-static': 0.8, 'chunked-prefill-size': 8192, 'served-model-name': 'qwen-7b',
                      'max-running-requests': 64}


def test_the_same_flag_spelled_otherwise_replaces_it_rather_than_setting_it_twice():
    merged = merge_server_args({'tp-size': 2, 'mem-fraction-static': 0.75},
                               {'tensor-parallel-size': 4, 'mem_fraction_static': 0.8})
    assert merged == {'tensor-parallel-size': 4, 'mem_fraction_static': 0.8}


def test_null_removes_the_inventorys_flag():
    assert merge_server_args(INVENTORY_ARGS, {'served-model-name': None, 'no-such-flag': None}) == {
        'mem-fraction-static': 0.75, 'chunked-prefill-size': 8192}


def test_the_merge_changes_neither_input():
    args, override = copy.deepcopy(INVENTORY_ARGS), {'mem-fraction-static': 0.8}
    merge_server_args(args, override)
    assert args == INVENTORY_ARGS and override == {'mem-fraction-static': 0.8}


@pytest.mark.parametrize('text, parsed', [
    ('mem-fraction-static: 0.8\nchunked-prefill-size: 4096\n', {'mem-fraction-static': 0.8, 'chunked-prefill-size': 4096}),
    ('{mem-fraction-static: 0.8, enable-metrics: true}', {'mem-fraction-static': 0.8, 'enable-metrics': True}),
    ('served-model-name: null', {'served-model-name': None}),
    ('', {}),
    ('  \n', {}),
    ('# nothing to change\n', {}),
    (None, {}),
    ({'mem-fraction-static': 0.8}, {'mem-fraction-static': 0.8}),
])
def test_yaml_text_or_a_dict_is_read(text, parsed):
    assert parse_args_override(text) == (parsed, None)


@pytest.mark.parametrize('value', ['mem-fraction-static: [0.8', 'mem-fraction-static 0.8', '- a\n- b', 42, ['a']])
def test_text_that_holds_no_mapping_is_a_problem_naming_the_variable(value):
    parsed, item = parse_args_override(value)
    assert parsed == {} and item['code'] == 'sglang-args-override-invalid'
    assert item['variable'] == 'sglang_server_args_override' and item['fix']


# ---- in the cluster plan ---------------------------------------------------------------------------------

def test_a_survey_answer_reaches_the_plan_merged_over_the_inventory():
    plan = plan_cluster(describe(override='mem-fraction-static: 0.8\nchunked-prefill-size: 4096\n'))
    assert group_of(plan)['server_args'] == {'mem-fraction-static': 0.8, 'chunked-prefill-size': 4096,
                                             'served-model-name': 'qwen-7b'}


def test_without_an_override_the_plan_has_the_inventorys_flags():
    assert group_of(plan_cluster(describe()))['server_args'] == INVENTORY_ARGS
    assert group_of(plan_cluster(describe(override='')))['server_args'] == INVENTORY_ARGS


def test_the_override_sets_what_the_plan_derives_from_the_flags():
    assert group_of(plan_cluster(describe(gpus=2)))['tp_size'] == 4
    plan = plan_cluster(describe(override={'tp-size': 2, 'served-model-name': 'other'}, gpus=2))
    assert group_of(plan)['tp_size'] == 2 and group_of(plan)['model']['served_name'] == 'other'
    plan = plan_cluster(describe(override={'served-model-name': None}))
    assert group_of(plan)['model']['served_name'] == MODEL


@pytest.mark.parametrize('override, code, key', [
    ('schedule-heuristic: lpm', 'sglang-renamed-flag', 'schedule-heuristic'),
    ('mem-fraction-static: 85', 'sglang-out-of-range', 'mem-fraction-static'),
    ('kv-cache-dtype: fp8', 'sglang-bad-choice', 'kv-cache-dtype'),
    ('port: 8000', 'sglang-owned-flag', 'port'),
])
def test_a_bad_answer_fails_the_same_checks_and_names_the_override(override, code, key):
    problems, plan = check_description(describe(override=override))
    assert plan is None
    bad = errors(problems)
    assert codes(bad) == [code], bad
    assert bad[0]['variable'] == "sglang_server_args_override[%r]" % key
    assert bad[0]['message'].startswith("sglang_server_args_override[%r] (group vars of hosts spark-01, spark-02)" % key)


def test_a_bad_inventory_flag_still_names_the_inventory():
    problems, plan = check_description(describe(args={'schedule-heuristic': 'lpm'}, override='mem-fraction-static: 0.8'))
    assert plan is None
    assert [p['variable'] for p in errors(problems)] == ["sglang_server_args['schedule-heuristic']"]


def test_a_tp_size_of_the_override_that_the_group_cannot_take_names_the_override():
    problems, plan = check_description(describe(override='tp-size: 3'))
    assert plan is None
    assert [(p['code'], p['variable']) for p in errors(problems)] == [
        ('tp-size-too-large', "sglang_server_args_override['tp-size']")]


def test_an_answer_that_is_no_mapping_stops_the_plan():
    problems, plan = check_description(describe(override='mem-fraction-static 0.8'))
    assert plan is None and codes(errors(problems)) == ['sglang-args-override-invalid']


def test_an_override_that_replaces_a_bad_inventory_flag_clears_it():
    problems, plan = check_description(describe(args={'mem-fraction-static': 85}, override={'mem-fraction-static': 0.8}))
    assert plan is not None and not errors(problems)


def test_hosts_that_disagree_on_the_override_are_a_problem():
    desc = describe(override='mem-fraction-static: 0.8')
    desc['hosts'][1]['vars']['sglang_server_args_override'] = 'mem-fraction-static: 0.7'
    problems, plan = check_description(desc)
    assert plan is None
    assert [(p['code'], p['variable']) for p in errors(problems)] == [('host-vars-disagree', 'sglang_server_args_override')]
