# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_problems.py: one shape for every problem, one way to print a list of them."""

from __future__ import annotations

import json

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import (
    ProblemsError,
    codes,
    errors,
    format_problems,
    located,
    problem,
    warning,
    warnings,
)

KEYS = {'code', 'variable', 'where', 'hosts', 'severity', 'what', 'fix', 'message'}


def test_problem_is_a_plain_dict_with_every_key():
    item = problem('subnet-overlap', 'spark_cx7_subnets', 'subnets a and b overlap.', 'give each twin its own subnet.',
                   'group sparks', ('s1', 's2'))
    assert set(item) == KEYS
    assert item == {
        'code': 'subnet-overlap', 'variable': 'spark_cx7_subnets', 'where': 'group sparks', 'hosts': ['s1', 's2'],
        'severity': 'error', 'what': 'subnets a and b overlap', 'fix': 'give each twin its own subnet',
        'message': 'spark_cx7_subnets (group sparks): subnets a and b overlap. Fix: give each twin its own subnet.'}
    assert json.loads(json.dumps(item)) == item  # travels through facts unchanged


def test_problem_without_place_or_fix():
    item = problem('cx7-link-down', 'spark_cx7_interfaces', 'enp1s0f1np1 is down')
    assert (item['where'], item['hosts'], item['fix']) == (None, [], None)
    assert item['message'] == 'spark_cx7_interfaces: enp1s0f1np1 is down.'


@pytest.mark.parametrize('code', ['Subnet-Overlap', 'subnet_overlap', 'subnet overlap', '-x', 'x-', 'a--b', ''])
def test_codes_are_lower_case_and_dashed(code):
    with pytest.raises(ValueError):
        problem(code, 'v', 'what')


def test_warning_has_severity_warning():
    item = warning('nccl-discouraged-variable', 'nccl_env_extra', 'NCCL_IB_GID_INDEX is set')
    assert item['severity'] == 'warning'
    assert item == dict(problem('nccl-discouraged-variable', 'nccl_env_extra', 'NCCL_IB_GID_INDEX is set'),
                        severity='warning')


def test_errors_warnings_and_codes_split_and_list_in_order():
    items = [problem('a', 'v', 'x'), warning('b', 'v', 'y'), problem('c', 'v', 'z'), {'code': 'd', 'message': 'm'}]
    assert codes(items) == ['a', 'b', 'c', 'd']
    assert codes(errors(items)) == ['a', 'c', 'd']  # a dict without severity is an error
    assert codes(warnings(items)) == ['b']


def test_located_places_only_unplaced_problems():
    placed = problem('p', 'v', 'already somewhere', where='host a', hosts=['a'])
    loose = problem('q', 'v', 'anywhere', 'do this')
    out = located([placed, loose], 'host b', ['b'])
    assert out[0] is placed
    assert (out[1]['where'], out[1]['hosts']) == ('host b', ['b'])
    assert out[1]['message'] == 'v (host b): anywhere. Fix: do this.'
    assert loose['where'] is None  # the input is not changed


def test_format_problems_numbers_every_problem():
    items = [problem('a', 'v', 'one'), problem('b', 'w', 'two', 'fix it')]
    title, first, second = format_problems(items, 'The NCCL environment').split('\n')
    assert title == 'The NCCL environment has 2 problems:'
    assert first.startswith('  1. v: one.') and '[a]' in first      # each line: its sentence and its code
    assert second.startswith('  2. w: two. Fix: fix it.') and '[b]' in second
    assert format_problems(items[:1]).startswith('The cluster description has 1 problem:\n')


def test_problems_error_carries_every_problem():
    items = [problem('a', 'v', 'one'), problem('b', 'w', 'two')]
    err = ProblemsError(items, 'The probed cluster')
    assert isinstance(err, ValueError)
    assert err.problems == items and err.subject == 'The probed cluster'
    assert str(err) == format_problems(items, 'The probed cluster')
    assert ProblemsError(items).subject == 'The cluster description'


def test_problems_error_subclass_sets_its_subject():
    class Sub(ProblemsError):
        subject = 'The thing'

    assert str(Sub([problem('a', 'v', 'x')])).startswith('The thing has 1 problem:')
