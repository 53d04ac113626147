# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""plugins/module_utils/_monitoring.py: targets, configuration and rules from real cluster plans, judged by Debian's
promtool (``check config``, ``check rules``, ``test rules`` with cases that fire and cases that do not).

promtool comes with Debian's ``prometheus`` package (tests/lab/install-deps.sh installs it; ``make unit`` runs that).
``promtool test rules`` compares annotations too; they are checked by ``check rules`` (their templates parse) and
dropped from the copy that the cases run against, so that a case states what fires, with which labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import plan_cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._monitoring import (
    RULES_FILE,
    file_sd,
    monitoring_files,
    rules,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError

SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']
TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']


def promtool():
    found = shutil.which('promtool')
    if not found:
        pytest.fail('promtool is missing: run tests/lab/install-deps.sh (Debian package prometheus)')
    return found


def plan(n=2, cluster='spark', **group_vars):
    values = {'spark_cx7_subnets': list(SUBNETS), 'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct'}
    if n > 2:
        values['spark_cx7_topology'] = 'switch'   # direct joins two Sparks
    values.update(group_vars)
    names = ['%s-%02d' % (cluster, i + 1) for i in range(n)]
    return plan_cluster({'cluster': cluster, 'play_hosts': names, 'gpus_per_node': 1,
                         'hosts': [{'name': name, 'vars': dict(values, ansible_host='10.0.0.%d' % (11 + i))}
                                   for i, name in enumerate(names)]})


def write(tmp_path, files):
    (tmp_path / 'rules').mkdir()
    (tmp_path / 'file_sd').mkdir()
    (tmp_path / 'prometheus.yml').write_text(yaml.safe_dump(files['prometheus']))
    (tmp_path / 'rules' / RULES_FILE).write_text(yaml.safe_dump(files['rules'], sort_keys=False))
    for name, targets in files['file_sd'].items():
        (tmp_path / 'file_sd' / name).write_text(json.dumps(targets))


def run(*argv):
    return subprocess.run([promtool(), *argv], capture_output=True, text=True, check=False, timeout=120)


# ---- targets ------------------------------------------------------------------------------------------------

def test_rank0_metrics_and_node_exporter_on_every_node_through_the_management_addresses():
    found = file_sd(plan(3))
    assert found['spark-sglang.json'] == [{'targets': ['10.0.0.11:30000'], 'labels': {
        'cluster': 'spark', 'node': 'spark-01', 'rank': '0', '__scheme__': 'http', '__metrics_path__': '/metrics'}}]
    assert [(t['targets'], t['labels']['node'], t['labels']['rank']) for t in found['spark-node.json']] == [
        (['10.0.0.11:9100'], 'spark-01', '0'), (['10.0.0.12:9100'], 'spark-02', '1'), (['10.0.0.13:9100'], 'spark-03', '2')]


def test_rank0_follows_the_plan_rank_order_scheme_and_port():
    p = plan(2, sglang_server_port=31000, sglang_server_args={'ssl-certfile': '/etc/sglang/c.pem',
                                                              'ssl-keyfile': '/etc/sglang/k.pem'})
    (group,) = file_sd(p)['spark-sglang.json']
    assert group['targets'] == ['10.0.0.11:31000'] and group['labels']['__scheme__'] == 'https'


def test_metrics_off_leaves_sglang_unscraped_and_the_flag_in_the_args_turns_them_on():
    assert file_sd(plan(2, sglang_server_enable_metrics=False))['spark-sglang.json'] == []
    on = plan(2, sglang_server_enable_metrics=False, sglang_server_args={'enable-metrics': True})
    assert on['groups']['spark']['metrics']['target'] == '10.0.0.11:30000'


def test_a_listen_address_is_the_target_instead_of_the_management_address():
    p = plan(1, sglang_server_host='10.0.0.11', sglang_server_port=30000)
    assert p['groups']['spark']['metrics']['url'] == 'http://10.0.0.11:30000/metrics'


def test_a_switch_that_is_not_a_boolean_is_a_problem_of_the_plan():
    with pytest.raises(ProblemsError) as err:
        plan(2, sglang_server_enable_metrics='yes')
    assert [(p['code'], p['variable']) for p in err.value.problems] == [
        ('metrics-switch-invalid', 'sglang_server_enable_metrics')]


def test_two_clusters_get_files_of_their_own_and_cx7_rules_each():
    lab = plan(2, 'lab', spark_cx7_interfaces=['enp1s0f0np0'], spark_cx7_subnets=['192.168.102.0/24'])
    files = monitoring_files([plan(2, 'spark'), plan(2, 'spark'), lab], '/etc/prometheus')
    assert files['clusters'] == ['lab', 'spark']
    assert sorted(files['file_sd']) == ['lab-node.json', 'lab-sglang.json', 'spark-node.json', 'spark-sglang.json']
    names = [g['name'] for g in files['rules']['groups']]
    assert names == ['dgxspark-recording', 'dgxspark-sglang', 'dgxspark-cx7-lab', 'dgxspark-cx7-spark']
    lab = files['rules']['groups'][2]['rules'][0]['expr']
    assert 'device=~"enp1s0f0np0"' in lab and 'cluster="lab"' in lab


def test_thresholds_problems_are_listed_at_once():
    with pytest.raises(ProblemsError) as err:
        rules([plan(1)], {'ttft_p99_seconds': 'slow', 'ttft_for': '10 minutes', 'queue_size': 3})
    assert sorted(p['code'] for p in err.value.problems) == [
        'monitoring-threshold-invalid', 'monitoring-threshold-invalid', 'monitoring-threshold-unknown']


def test_no_plan_is_a_problem_with_its_fix():
    with pytest.raises(ProblemsError) as err:
        monitoring_files([], '/etc/prometheus')
    assert err.value.problems[0]['code'] == 'monitoring-no-plan'


# ---- promtool -----------------------------------------------------------------------------------------------

def test_promtool_accepts_the_configuration_and_the_rules(tmp_path):
    files = monitoring_files([plan(2)], str(tmp_path), thresholds={'ttft_p99_seconds': 4})
    write(tmp_path, files)
    config = run('check', 'config', str(tmp_path / 'prometheus.yml'))
    assert config.returncode == 0, config.stdout + config.stderr
    assert '1 rule files found' in config.stdout
    checked = run('check', 'rules', str(tmp_path / 'rules' / RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'SUCCESS: 13 rules found' in checked.stdout


def test_promtool_refuses_a_broken_rule(tmp_path):
    """The check above can fail: the same file with one expression broken."""
    files = monitoring_files([plan(2)], str(tmp_path))
    files['rules']['groups'][1]['rules'][0]['expr'] = 'up{job="sglang" == 0'
    write(tmp_path, files)
    assert run('check', 'rules', str(tmp_path / 'rules' / RULES_FILE)).returncode != 0


SGLANG = 'job="sglang",cluster="spark",instance="10.0.0.11:30000",node="spark-01",rank="0"'
NODE1 = 'job="node",cluster="spark",instance="10.0.0.11:9100",node="spark-01",rank="0"'
SGLANG_LABELS = {'job': 'sglang', 'cluster': 'spark', 'instance': '10.0.0.11:30000', 'node': 'spark-01', 'rank': '0'}
NODE1_LABELS = {'job': 'node', 'cluster': 'spark', 'instance': '10.0.0.11:9100', 'node': 'spark-01', 'rank': '0'}


def series(name, labels, values):
    return {'series': '%s{%s}' % (name, labels), 'values': values}


def ttft(bucket_rates):
    """TTFT histogram buckets: {le: increase per minute}, cumulative as Prometheus's are."""
    out = []
    for le, per_minute in bucket_rates.items():
        out.append(series('sglang:time_to_first_token_seconds_bucket',
                          '%s,model_name="m",engine_type="unified",le="%s"' % (SGLANG, le), '0+%sx30' % per_minute))
    return out


def alert(name, at, *expected):
    return {'eval_time': at, 'alertname': name, 'exp_alerts': [{'exp_labels': e} for e in expected]}


CASES = [
    # SGLang down: fires after 2m of up == 0; an answering rank 0 fires nothing.
    ([series('up', SGLANG, '0x10')], [alert('SGLangDown', '3m', dict(SGLANG_LABELS, severity='critical'))]),
    ([series('up', SGLANG, '1x10')], [alert('SGLangDown', '5m')]),
    # The queue: growing above 10 for 10 minutes fires; a long but steady queue, or a short growing one, does not.
    ([series('sglang:num_queue_reqs', SGLANG, '0+3x30')],
     [alert('SGLangQueueGrowing', '25m', {'cluster': 'spark', 'severity': 'warning'})]),
    ([series('sglang:num_queue_reqs', SGLANG, '50x30')], [alert('SGLangQueueGrowing', '25m')]),
    ([series('sglang:num_queue_reqs', SGLANG, '0+0.1x30')], [alert('SGLangQueueGrowing', '25m')]),
    # The KV cache nearly full (sglang:token_usage near 1), or half full.
    ([series('sglang:token_usage', SGLANG, '0.98x10')],
     [alert('SGLangTokenUsageHigh', '7m', {'cluster': 'spark', 'severity': 'warning'})]),
    ([series('sglang:token_usage', SGLANG, '0.5x10')], [alert('SGLangTokenUsageHigh', '7m')]),
    # TTFT p99 (histogram_quantile over _bucket): every request between 10 and 20 s fires; under 1 s does not.
    (ttft({'1': 0, '10': 0, '20': 1, '+Inf': 1}),
     [alert('SGLangTimeToFirstTokenHigh', '20m', {'cluster': 'spark', 'severity': 'warning'})]),
    (ttft({'1': 1, '10': 1, '20': 1, '+Inf': 1}), [alert('SGLangTimeToFirstTokenHigh', '20m')]),
    # A node's available memory (node_exporter's meminfo; unified on a GB10): 4% fires, 40% does not.
    ([series('node_memory_MemAvailable_bytes', NODE1, '5e9x10'), series('node_memory_MemTotal_bytes', NODE1, '128e9x10')],
     [alert('SparkNodeMemoryLow', '4m', dict(NODE1_LABELS, severity='critical'))]),
    ([series('node_memory_MemAvailable_bytes', NODE1, '50e9x10'), series('node_memory_MemTotal_bytes', NODE1, '128e9x10')],
     [alert('SparkNodeMemoryLow', '4m')]),
    # A CX7 twin down; degraded (13 Gb/s instead of 200); missing (node_exporter answers, one twin gone); healthy.
    ([series('node_network_up', NODE1 + ',device="enP2p1s0f1np1"', '0x10'),
      series('node_network_up', NODE1 + ',device="enp1s0f1np1"', '1x10')],
     [alert('SparkCX7TwinDown', '3m', dict(NODE1_LABELS, device='enP2p1s0f1np1', severity='critical'))]),
    ([series('node_network_speed_bytes', NODE1 + ',device="enp1s0f1np1"', '1625000000x10'),
      series('node_network_speed_bytes', NODE1 + ',device="enP2p1s0f1np1"', '25000000000x10')],
     [alert('SparkCX7TwinDegraded', '3m', dict(NODE1_LABELS, device='enp1s0f1np1', severity='warning'))]),
    ([series('up', NODE1, '1x10'), series('node_network_up', NODE1 + ',device="enp1s0f1np1"', '1x10')],
     [alert('SparkCX7TwinMissing', '3m', dict(NODE1_LABELS, severity='critical'))]),
    ([series('up', NODE1, '1x10'), series('node_network_up', NODE1 + ',device="enp1s0f1np1"', '1x10'),
      series('node_network_up', NODE1 + ',device="enP2p1s0f1np1"', '1x10'),
      # The other port's twins are not the configured ones: down, yet nothing fires.
      series('node_network_up', NODE1 + ',device="enp1s0f0np0"', '0x10'),
      series('node_network_speed_bytes', NODE1 + ',device="enp1s0f1np1"', '25000000000x10'),
      series('node_network_speed_bytes', NODE1 + ',device="enP2p1s0f1np1"', '25000000000x10')],
     [alert('SparkCX7TwinMissing', '3m'), alert('SparkCX7TwinDown', '3m'), alert('SparkCX7TwinDegraded', '3m')]),
]


CASE_IDS = ['%02d-%s-%s' % (i, c[1][0]['alertname'], 'fires' if c[1][0]['exp_alerts'] else 'quiet')
            for i, c in enumerate(CASES)]


@pytest.mark.parametrize('inputs, expected', CASES, ids=CASE_IDS)
def test_promtool_test_rules(tmp_path, inputs, expected):
    files = monitoring_files([plan(2)], str(tmp_path))
    for group in files['rules']['groups']:
        for rule in group['rules']:
            rule.pop('annotations', None)
    write(tmp_path, files)
    cases = {'rule_files': [str(tmp_path / 'rules' / RULES_FILE)], 'evaluation_interval': '1m',
             'tests': [{'interval': '1m', 'input_series': inputs, 'alert_rule_test': expected}]}
    (tmp_path / 'cases.yml').write_text(yaml.safe_dump(cases, sort_keys=False))
    result = run('test', 'rules', str(tmp_path / 'cases.yml'))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_can_fail(tmp_path):
    """A case that expects the wrong thing fails: the cases above prove something."""
    files = monitoring_files([plan(2)], str(tmp_path))
    write(tmp_path, files)
    cases = {'rule_files': [str(tmp_path / 'rules' / RULES_FILE)], 'evaluation_interval': '1m',
             'tests': [{'interval': '1m', 'input_series': [series('up', SGLANG, '1x10')],
                        'alert_rule_test': [alert('SGLangDown', '5m', dict(SGLANG_LABELS, severity='critical'))]}]}
    (tmp_path / 'cases.yml').write_text(yaml.safe_dump(cases, sort_keys=False))
    assert run('test', 'rules', str(tmp_path / 'cases.yml')).returncode != 0


def test_the_annotations_render(tmp_path):
    """One alert with its annotations, as Prometheus expands their templates."""
    files = monitoring_files([plan(2)], str(tmp_path))
    write(tmp_path, files)
    labels = dict(NODE1_LABELS, device='enp1s0f1np1', severity='warning')
    cases = {'rule_files': [str(tmp_path / 'rules' / RULES_FILE)], 'evaluation_interval': '1m',
             'tests': [{'interval': '1m',
                        'input_series': [series('node_network_speed_bytes', NODE1 + ',device="enp1s0f1np1"',
                                                '1625000000x10')],
                        'alert_rule_test': [{'eval_time': '3m', 'alertname': 'SparkCX7TwinDegraded', 'exp_alerts': [{
                            'exp_labels': labels,
                            'exp_annotations': {
                                'summary': 'CX7 twin enp1s0f1np1 of spark-01 runs below 200000 Mb/s',
                                'description': 'enp1s0f1np1 on spark-01 reports 1.625GB/s, expected 25000000000 '
                                               'bytes/s (spark_cx7_expected_speed_mbps): a degraded link; reseat the '
                                               'cable or check the switch port.'}}]}]}]}
    (tmp_path / 'cases.yml').write_text(yaml.safe_dump(cases, sort_keys=False))
    result = run('test', 'rules', str(tmp_path / 'cases.yml'))
    assert result.returncode == 0, result.stdout + result.stderr
