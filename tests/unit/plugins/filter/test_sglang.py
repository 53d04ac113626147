"""SGLang flag filters (plugins/filter/sglang.py): argv for valid extras, one error listing every problem.

Problems are compared by code; the error's text is checked to carry each problem's message, whatever its wording.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import sglang
from ansible_collections.dgxspark.sglang.plugins.filter.sglang import FilterModule
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import validate_server_args

FILTERS = FilterModule().filters()
HERE = pathlib.Path(sglang.__file__).resolve().parent


def test_filters_are_registered_with_docs():
    assert set(FILTERS) == {'sglang_advertised_address', 'sglang_args', 'sglang_args_problems', 'sglang_launch_argv',
                            'sglang_plan_argv', 'sglang_version', 'sglang_version_probe'}
    for name in FILTERS:
        doc = yaml.safe_load((HERE / (name + '.yml')).read_text())
        assert doc['DOCUMENTATION']['name'] == name
        assert doc['RETURN']['_value']['type'] == ('str' if name == 'sglang_version' else 'list')


def test_sglang_args_returns_the_argv():
    assert FILTERS['sglang_args']({'mem-fraction-static': 0.75, 'enable-metrics': True}) == [
        '--enable-metrics', '--mem-fraction-static', '0.75']
    assert FILTERS['sglang_args'](None) == []


def test_sglang_args_fails_naming_the_variable_and_every_problem():
    args = {'schedule-heuristic': 'lpm', 'max-num-reqs': 64, 'kv-cache-dtype': 'fp8', 'node-rank': 1}
    problems = validate_server_args(args)
    assert codes(problems) == ['sglang-renamed-flag', 'sglang-renamed-flag', 'sglang-bad-choice', 'sglang-owned-flag']
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS['sglang_args'](args)
    text = str(err.value)
    assert text.startswith('sglang_server_args (checked against SGLang 0.5.23) has 4 problems:')
    for number, item in enumerate(problems, 1):
        assert '  %d. %s' % (number, item['message']) in text
    for key in args:
        assert "sglang_server_args['%s']" % key in text


def test_sglang_args_problems_lists_instead_of_failing():
    assert FILTERS['sglang_args_problems']({'mem-fraction-static': 0.75}) == []
    found = FILTERS['sglang_args_problems']({'mem-fraction-statc': 0.75, 'enable-metrics': 1, 'disable-cuda-graph': True})
    assert codes(found) == ['sglang-unknown-flag', 'sglang-switch-with-value', 'sglang-deprecated-flag']
    assert [p['severity'] for p in found] == ['error', 'error', 'warning']


def test_deprecated_flag_warns(monkeypatch):
    seen = []
    monkeypatch.setattr(sglang.display, 'warning', seen.append)
    assert FILTERS['sglang_args']({'enable-dp-attention': True}) == ['--enable-dp-attention']
    assert len(seen) == 1 and seen[0].startswith('dgxspark.sglang.sglang_args [sglang-deprecated-flag]: ')
    assert '--attn-dp-size' in seen[0]
    FILTERS['sglang_launch_argv']('m', extra={'enable-dp-attention': True})
    assert len(seen) == 2 and seen[1].startswith('dgxspark.sglang.sglang_launch_argv [sglang-deprecated-flag]: ')


def test_sglang_launch_argv():
    argv = FILTERS['sglang_launch_argv']('Qwen/Qwen2.5-72B-Instruct', nnodes=2, node_rank=0,
                                         dist_init_addr='192.168.100.11:20000', tp_size=2, host='0.0.0.0',
                                         port=30000, extra={'enable-metrics': True})
    assert argv[:10] == ['--model-path', 'Qwen/Qwen2.5-72B-Instruct', '--tp-size', '2', '--nnodes', '2',
                         '--node-rank', '0', '--dist-init-addr', '192.168.100.11:20000']
    assert argv[-1] == '--enable-metrics'
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS['sglang_launch_argv']('m', nnodes=2, node_rank=1, tp_size=2)
    text = str(err.value)
    assert text.startswith('The SGLang launch command (checked against SGLang 0.5.23) has 1 problem:')
    assert '  1. --dist-init-addr: ' in text
    item, = validate_server_args({'mem-fraction-static': 85})
    assert item['code'] == 'sglang-out-of-range'
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS['sglang_launch_argv']('m', extra={'mem-fraction-static': 85})
    assert '  1. %s' % item['message'] in str(err.value)


def test_sglang_advertised_address_reads_both_runtimes_registered_results():
    import base64  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel
    from ansible_collections.dgxspark.sglang.plugins.filter.sglang import sglang_advertised_address  # pylint: disable=import-outside-toplevel
    plan = {"groups": {"g": {"runtime": "native", "hosts": ["a", "b"]}},
            "nodes": {"a": {"node_rank": 0, "host_ip": "10.0.0.1"}, "b": {"node_rank": 1, "host_ip": "10.0.0.2"}}}
    processes = {"results": [{"item": "a", "rc": 0, "stdout": "123\n"}, {"item": "b", "rc": 0, "stdout": "0\n"}]}
    environs = {"results": [
        {"item": processes["results"][0], "content": base64.b64encode(b"X=1\0HF_TOKEN=t\0").decode()},
        {"item": processes["results"][1], "skipped": True}]}
    problems = sglang_advertised_address(plan, "g", processes, environs)
    assert [p.split(":")[0] for p in problems] == ["a (rank 0)", "b (rank 1)"]
    assert "HF_TOKEN" not in "".join(problems) and "no SGLang process runs there" in problems[1]
    plan["groups"]["g"]["runtime"] = "container"
    inspect = [{"State": {"Running": True}, "Config": {"Env": ["SGLANG_HOST_IP=10.0.0.1"]}}]
    processes = {"results": [{"item": "a", "rc": 0, "stdout": json.dumps(inspect)},
                             {"item": "b", "rc": 1, "stdout": "[]"}]}
    problems = sglang_advertised_address(plan, "g", processes, {"results": []})
    assert len(problems) == 1 and problems[0].startswith("b (rank 1): no SGLang process runs there")


def test_sglang_version_filters():
    from ansible.errors import AnsibleFilterError  # pylint: disable=import-outside-toplevel
    from ansible_collections.dgxspark.sglang.plugins.filter.sglang import (  # pylint: disable=import-outside-toplevel
        sglang_version, sglang_version_probe)
    assert sglang_version_probe({'runtime': 'native', 'python': '/opt/venv/bin/python', 'image': 'x'})[:2] == [
        '/opt/venv/bin/python', '-c']
    argv = sglang_version_probe({'runtime': 'container', 'python': 'p', 'image': 'lmsysorg/sglang:v0.5.23-cu130',
                                 'container_volumes': ['/v:/v:ro']})
    assert argv[:3] == ['docker', 'run', '--rm'] and argv[argv.index('--volume') + 1] == '/v:/v:ro'
    assert argv.index('--volume') < argv.index('lmsysorg/sglang:v0.5.23-cu130')
    assert sglang_version('0.5.23\n', 'a', 'native') == '0.5.23'
    with pytest.raises(AnsibleFilterError, match=r'(?s)SGLang on a has 1 problem.*0\.5\.22.*\[sglang-version-mismatch\]'):
        sglang_version('0.5.22', 'a', 'native')
    assert sglang_version('0.5.22', 'a', 'native', True) == '0.5.22'


def test_sglang_plan_argv_is_each_ranks_argv_from_the_plan():
    from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
    from ansible_collections.dgxspark.sglang.tests.unit.plugins.module_utils.test__cluster import describe
    plan = _cluster.plan_cluster(describe(2, sglang_server_args={'mem-fraction-static': 0.8}, sglang_server_enable_metrics=False))
    argv = FILTERS['sglang_plan_argv'](plan, 'spark-02', config_file='/etc/sglang/server.yaml')
    assert argv == ['--model-path', 'Qwen/Qwen2.5-7B-Instruct', '--tp-size', '2', '--nnodes', '2', '--node-rank', '1',
                    '--dist-init-addr', '192.168.100.11:20000', '--host', '0.0.0.0', '--port', '30000',
                    '--config', '/etc/sglang/server.yaml', '--mem-fraction-static', '0.8']
    assert '--enable-metrics' in FILTERS['sglang_plan_argv'](_cluster.plan_cluster(describe(2)), 'spark-01')
    with pytest.raises(AnsibleFilterError, match='spark-09'):
        FILTERS['sglang_plan_argv'](plan, 'spark-09')
