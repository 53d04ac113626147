# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The monitoring role on the lab, after the site scenario's converge ran playbooks/monitoring.yml.

node_exporter (Debian's prometheus-node-exporter, installed by the role) runs on both machines, SGLang's stand-in
serves /metrics on rank 0, and the role wrote Prometheus's files on the monitoring host, the controller. Here Debian's
real Prometheus runs on those files in the lab's controller namespace (dgxlab<ID>-ctl), whose scrapes cross the
management bridge to the machines' management addresses, as a monitoring host's do on a Spark's LAN. It must scrape
every target, evaluate the rules, answer PromQL through its HTTP API, and raise no CX7 alert for the lab's healthy
twins; every metric a dashboard expression names must be in what the stand-in and node_exporter really export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / 'roles' / 'monitoring' / 'files' / 'dgxspark-sglang.json'
MONITOR = 'lab-prometheus'
PORT = 9090
USER = 'prometheus'  # made by Debian's prometheus package
NODES = ('lab-spark-01', 'lab-spark-02')
# Prometheus makes `up` itself for every target; it is no exported metric.
SYNTHETIC = {'up'}
KEYWORDS = {'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless'}


def in_ctl(lab, *argv, timeout=30):
    return subprocess.run(['ip', 'netns', 'exec', lab.CTL_NS, *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)


def fetch(lab, url):
    """GET url from the controller's namespace (where Prometheus listens and from where it scrapes)."""
    res = in_ctl(lab, 'python3', '-c', 'import sys, urllib.request; '
                 'sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())', url)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(name='monitor_vars', scope='module')
def fixture_monitor_vars(pytestconfig):
    from testinfra.utils.ansible_runner import AnsibleRunner
    return AnsibleRunner.get_runner(pytestconfig.option.ansible_inventory).get_variables(MONITOR)


@pytest.fixture(name='prometheus', scope='module')
def fixture_prometheus(lab, monitor_vars):
    """Debian's prometheus on the role's prometheus.yml in dgxlab<ID>-ctl; yields its API's base URL."""
    config = Path(monitor_vars['monitoring_prometheus_config_dir']) / 'prometheus.yml'
    assert config.is_file(), 'the monitoring role wrote no %s' % config
    top = Path(tempfile.mkdtemp(prefix='dgxspark-prometheus-'))  # pytest's own tmp folder is root's alone (0700)
    data = top / 'data'
    data.mkdir()
    shutil.chown(top, USER, USER)
    shutil.chown(data, USER, USER)
    log = open(top / 'prometheus.log', 'w')  # noqa: SIM115  (closed below)
    base = 'http://%s:%d' % (lab.CTL_IP, PORT)
    # As Debian's unit runs it, as the user prometheus: file_sd watches its files with inotify, whose instances are
    # counted per user (128 by default), and root's are taken by the lab's machines' systemd.
    proc = subprocess.Popen(['ip', 'netns', 'exec', lab.CTL_NS, 'runuser', '-u', USER, '--', 'prometheus',
                             '--config.file=%s' % config, '--storage.tsdb.path=%s' % data,
                             '--web.listen-address=%s:%d' % (lab.CTL_IP, PORT)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (top / 'prometheus.log').read_text()[-3000:]
            up = query_values(lab, base, 'up')
            if len(up) == 3 and all(v == 1 for v in up.values()):
                break
            if time.monotonic() > deadline:
                raise AssertionError('targets not all up after 90 s: %s\n%s\n%s' % (
                    up, fetch(lab, base + '/api/v1/targets'), (top / 'prometheus.log').read_text()[-3000:]))
            time.sleep(2)
        # Two scrapes and a rule evaluation after every target answered (scrape_interval of the lab: 2s).
        time.sleep(6)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(top, ignore_errors=True)


def api(lab, base, path, **params):
    try:
        body = json.loads(fetch(lab, base + path + ('?' + urllib.parse.urlencode(params) if params else '')))
    except AssertionError:
        return None
    assert body['status'] == 'success', body
    return body['data']


def query(lab, base, promql):
    data = api(lab, base, '/api/v1/query', query=promql)
    return [] if data is None else data['result']


def query_values(lab, base, promql):
    """{(job, node[, device]): value} of an instant vector."""
    return {tuple(s['metric'].get(k) for k in ('job', 'node', 'device') if k in s['metric']): float(s['value'][1])
            for s in query(lab, base, promql)}


def test_prometheus_scrapes_rank0_and_node_exporter_on_every_node_over_the_management_network(lab, prometheus):
    targets = api(lab, prometheus, '/api/v1/targets')['activeTargets']
    found = {(t['labels']['job'], t['labels']['node']): (t['health'], t['scrapeUrl']) for t in targets}
    # Addresses and ports from the plan (lab.py's management addresses), written by the role into file_sd.
    assert found == {
        ('sglang', 'lab-spark-01'): ('up', 'http://%s:30000/metrics' % lab.node_ip(1)),
        ('node', 'lab-spark-01'): ('up', 'http://%s:9100/metrics' % lab.node_ip(1)),
        ('node', 'lab-spark-02'): ('up', 'http://%s:9100/metrics' % lab.node_ip(2)),
    }
    assert {t['labels']['cluster'] for t in targets} == {'spark'}


def test_promql_answers_sglang_and_node_exporter_metrics_and_the_recorded_rules(lab, prometheus):
    # SGLang's stand-in, rank 0, with SGLang's names and labels.
    usage = query(lab, prometheus, 'sglang:token_usage{cluster="spark"}')
    assert [s['metric']['node'] for s in usage] == ['lab-spark-01'] and 0 <= float(usage[0]['value'][1]) <= 1
    assert query(lab, prometheus, 'sglang:max_total_num_tokens{cluster="spark"} > 0')
    # The CX7 twins of every node: up, at the speed of a veth (the lab's spark_cx7_expected_speed_mbps, 10000 Mb/s).
    twins = 'device=~"enp1s0f1np1|enP2p1s0f1np1"'
    assert query_values(lab, prometheus, 'node_network_up{%s}' % twins) == {
        ('node', n, d): 1.0 for n in NODES for d in ('enp1s0f1np1', 'enP2p1s0f1np1')}
    assert set(query_values(lab, prometheus, 'node_network_speed_bytes{%s}' % twins).values()) == {10000 * 125000.0}
    # A recording rule, evaluated by this Prometheus from node_exporter's meminfo.
    ratios = query_values(lab, prometheus, 'node:memory_available:ratio')
    assert set(ratios) == {('node', n) for n in NODES} and all(0 < v < 1 for v in ratios.values())
    assert query(lab, prometheus, 'cluster:sglang_token_usage:max')


def test_the_rules_load_and_the_healthy_lab_raises_no_sglang_or_cx7_alert_but_a_missing_twin_would(lab, prometheus):
    groups = api(lab, prometheus, '/api/v1/rules')['groups']
    assert {g['name'] for g in groups} == {'dgxspark-recording', 'dgxspark-sglang', 'dgxspark-cx7-spark'}
    assert all(r['health'] == 'ok' for g in groups for r in g['rules']), groups
    # Not even pending. (The machines show this host's /proc/meminfo: a busy host may really be low on memory.)
    alerts = api(lab, prometheus, '/api/v1/alerts')['alerts']
    assert [a['labels']['alertname'] for a in alerts if a['labels']['alertname'] != 'SparkNodeMemoryLow'] == []
    # The CX7 rules' expressions match the lab's real series: one twin filtered out reads as missing.
    missing = next(r for g in groups for r in g['rules'] if r['name'] == 'SparkCX7TwinMissing')['query']
    assert query(lab, prometheus, missing) == []
    broken = missing.replace('device=~"enp1s0f1np1|enP2p1s0f1np1"', 'device=~"enp1s0f1np1"')
    assert broken != missing and len(query(lab, prometheus, broken)) == 2


def metric_names(expr):
    """The metric names a PromQL expression selects (strings, matchers, ranges, grouping labels, functions and
    keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r'\{[^}]*\}', '', expr)
    expr = re.sub(r'\[[^\]]*\]', '', expr)
    expr = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', '', expr)
    expr = re.sub(r'(?<![A-Za-z_:])[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?', '', expr)
    names = set()
    for match in re.finditer(r'[A-Za-z_:][A-Za-z0-9_:]*', expr):
        if expr[match.end():].lstrip().startswith('(') or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def dashboard_exprs():
    board = json.loads(DASHBOARD.read_text())
    exprs = [t['expr'] for p in board['panels'] for t in p.get('targets', [])]
    for var in board['templating']['list']:
        if var['type'] == 'query':
            exprs.append(re.match(r'^label_values\((.*),\s*\w+\)$', var['query']['query']).group(1))
    return exprs


def test_metric_names_reads_promql():
    assert metric_names('histogram_quantile(0.99, sum by (cluster, le) (rate(sglang:time_to_first_token_seconds_bucket'
                        '{job="sglang",cluster=~"$cluster"}[$__rate_interval])))') == {
        'sglang:time_to_first_token_seconds_bucket'}
    assert metric_names('1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[5m])) / a_b * 1e9') == {
        'node_cpu_seconds_total', 'a_b'}


def exported_names(text):
    return {line.split('{')[0].split(' ')[0] for line in text.splitlines() if line and not line.startswith('#')}


def test_every_dashboard_expression_names_metrics_that_are_really_exported_and_parses(lab, prometheus):
    targets = api(lab, prometheus, '/api/v1/targets')['activeTargets']
    exported = {}
    for target in targets:
        exported.setdefault(target['labels']['job'], set()).update(exported_names(fetch(lab, target['scrapeUrl'])))
    assert 'sglang:time_to_first_token_seconds_bucket' in exported['sglang']
    assert 'node_memory_MemAvailable_bytes' in exported['node'] and 'node_network_speed_bytes' in exported['node']
    real = exported['sglang'] | exported['node'] | SYNTHETIC
    exprs = dashboard_exprs()
    named = set().union(*(metric_names(e) for e in exprs))
    assert {'sglang:token_usage', 'sglang:e2e_request_latency_seconds_bucket', 'node_network_up'} <= named
    assert sorted(named - real) == []
    # Every expression is PromQL this Prometheus runs (Grafana's variables replaced by what they stand for).
    for expr in exprs:
        promql = expr.replace('$__rate_interval', '1m').replace('$cluster', '.+').replace('$twins', '.+')
        assert api(lab, prometheus, '/api/v1/query', query=promql) is not None, expr
