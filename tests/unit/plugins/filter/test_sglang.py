"""SGLang flag filters (plugins/filter/sglang.py): argv for valid extras, one error listing every problem."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import sglang
from ansible_collections.dgxspark.sglang.plugins.filter.sglang import FilterModule

FILTERS = FilterModule().filters()
HERE = pathlib.Path(sglang.__file__).resolve().parent


def test_filters_are_registered_with_docs():
    assert set(FILTERS) == {'sglang_args', 'sglang_args_problems', 'sglang_launch_argv'}
    for name in FILTERS:
        doc = yaml.safe_load((HERE / (name + '.yml')).read_text())
        assert doc['DOCUMENTATION']['name'] == name
        assert doc['RETURN']['_value']['type'] == 'list'


def test_sglang_args_returns_the_argv():
    assert FILTERS['sglang_args']({'mem-fraction-static': 0.75, 'enable-metrics': True}) == [
        '--enable-metrics', '--mem-fraction-static', '0.75']
    assert FILTERS['sglang_args'](None) == []


def test_sglang_args_fails_naming_the_variable_and_every_problem():
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS['sglang_args']({'schedule-heuristic': 'lpm', 'max-num-reqs': 64, 'kv-cache-dtype': 'fp8',
                                'node-rank': 1})
    text = str(err.value)
    assert text.startswith('sglang_server_args has 4 problems (checked against SGLang 0.5.23)')
    for needle in ('--schedule-policy', '--max-queued-requests', 'fp8_e4m3 or fp8_e5m2', "'node-rank'"):
        assert needle in text


def test_sglang_args_problems_lists_instead_of_failing():
    assert FILTERS['sglang_args_problems']({'mem-fraction-static': 0.75}) == []
    assert len(FILTERS['sglang_args_problems']({'mem-fraction-statc': 0.75, 'enable-metrics': 1})) == 2


def test_deprecated_flag_warns(monkeypatch):
    seen = []
    monkeypatch.setattr(sglang.display, 'warning', seen.append)
    assert FILTERS['sglang_args']({'enable-dp-attention': True}) == ['--enable-dp-attention']
    assert len(seen) == 1 and '--attn-dp-size' in seen[0]


def test_sglang_launch_argv():
    argv = FILTERS['sglang_launch_argv']('Qwen/Qwen2.5-72B-Instruct', nnodes=2, node_rank=0,
                                         dist_init_addr='192.168.100.11:20000', tp_size=2, host='0.0.0.0',
                                         port=30000, extra={'enable-metrics': True})
    assert argv[:10] == ['--model-path', 'Qwen/Qwen2.5-72B-Instruct', '--tp-size', '2', '--nnodes', '2',
                         '--node-rank', '0', '--dist-init-addr', '192.168.100.11:20000']
    assert argv[-1] == '--enable-metrics'
    with pytest.raises(AnsibleFilterError, match='--dist-init-addr must be'):
        FILTERS['sglang_launch_argv']('m', nnodes=2, node_rank=1, tp_size=2)
