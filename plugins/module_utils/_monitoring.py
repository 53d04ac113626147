# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Prometheus for dgxspark.sglang, made from cluster plans (``spark_cluster_plan``): pure Python, no Ansible objects.

* ``file_sd(plan, node_exporter_port)``: the scrape targets of one cluster, in Prometheus's file_sd format: rank 0's
  ``/metrics`` (the plan's ``groups.<group>.metrics``, SGLang's ``sglang:*`` metrics) and node_exporter on every node,
  both through the nodes' management addresses, labelled ``cluster``, ``node`` and ``rank``.
* ``prometheus_config(...)``: the scrape configuration that reads those files (jobs ``sglang`` and ``node``).
* ``rules(plans, thresholds)``: recording and alerting rules: SGLang down, its queue growing, ``sglang:token_usage``
  near 1, the p99 of the time to first token (``histogram_quantile`` over ``_bucket``), a node's available memory low
  (node_exporter's meminfo: on a GB10 the memory is unified and DCGM's framebuffer fields are unsupported), and per
  cluster, each configured CX7 twin down, missing or slower than the plan's expected speed (node_exporter's netclass
  collector: ``node_network_up``, ``node_network_speed_bytes``).

Metric names are SGLang 0.5.23's (``srt/observability/metrics_collector.py``) and node_exporter's.
"""

from __future__ import annotations

import copy
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import NODE_EXPORTER_PORT
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, problem

SGLANG_JOB = 'sglang'
NODE_JOB = 'node'
# File names under the file_sd folder: one pair per cluster, so that clusters can be added one run at a time.
SGLANG_FILE = '%s-sglang.json'
NODE_FILE = '%s-node.json'
RULES_FILE = 'dgxspark-sglang.rules.yml'

# Thresholds of the alerts (the monitoring role's variables, monitoring_alert_*, are the user's way to change them).
THRESHOLDS = {
    'sglang_down_for': '2m',
    'queue_min': 10,
    'queue_for': '10m',
    'token_usage_max': 0.95,
    'token_usage_for': '5m',
    'ttft_p99_seconds': 10,
    'ttft_for': '10m',
    'memory_available_ratio_min': 0.10,
    'memory_for': '2m',
    'cx7_for': '1m',
}
_DURATION = re.compile(r'^([0-9]+(ms|s|m|h|d|w|y))+$')
_IFNAME = re.compile(r'^[A-Za-z0-9_.-]{1,15}$')
# A cluster's name becomes a label value and a file name.
_CLUSTER = re.compile(r'^[A-Za-z0-9_.-]+$')

# Recording rules: name -> PromQL. The alerts and the dashboard read these names, or the raw metrics.
TTFT_P99 = 'cluster:sglang_time_to_first_token_seconds:p99_5m'
E2E_P99 = 'cluster:sglang_e2e_request_latency_seconds:p99_5m'
QUEUE = 'cluster:sglang_num_queue_reqs:max'
TOKEN_USAGE = 'cluster:sglang_token_usage:max'
MEMORY_RATIO = 'node:memory_available:ratio'


def _quantile(metric):
    return 'histogram_quantile(0.99, sum by (cluster, le) (rate(%s_bucket{job="%s"}[5m])))' % (metric, SGLANG_JOB)


RECORDING = [
    (TTFT_P99, _quantile('sglang:time_to_first_token_seconds')),
    (E2E_P99, _quantile('sglang:e2e_request_latency_seconds')),
    # Rank 0 exports the gauges of the scheduler of tp_rank 0, pp_rank 0: max, never sum (a pipeline's other stages
    # count the same requests again where they are scraped).
    (QUEUE, 'max by (cluster) (sglang:num_queue_reqs{job="%s"})' % SGLANG_JOB),
    (TOKEN_USAGE, 'max by (cluster) (sglang:token_usage{job="%s"})' % SGLANG_JOB),
    (MEMORY_RATIO, 'node_memory_MemAvailable_bytes{job="%s"} / node_memory_MemTotal_bytes{job="%s"}'
     % (NODE_JOB, NODE_JOB)),
]


def _where(plan):
    return 'spark_cluster_plan of group %s' % plan.get('cluster', '?')


def _cluster_name(plan):
    name = plan.get('cluster') if isinstance(plan, dict) else None
    if not isinstance(name, str) or not _CLUSTER.match(name):
        raise ProblemsError([problem('monitoring-plan-invalid', 'spark_cluster_plan',
                                     'is not a cluster plan (cluster name %r)' % (name,),
                                     'run the preflight role on the group first (playbooks/monitoring.yml does)',
                                     'the monitoring host')])
    return name


def file_sd(plan, node_exporter_port=NODE_EXPORTER_PORT):
    """{file name: [file_sd target group]} of one cluster: SGLang's rank 0 (when its metrics are on) and node_exporter
    on every node, labelled cluster, node (inventory name) and rank."""
    cluster = _cluster_name(plan)
    group = plan['groups'][cluster]
    nodes = plan['nodes']
    sglang = []
    if group.get('metrics'):
        metrics = group['metrics']
        sglang.append({'targets': [metrics['target']],
                       'labels': {'cluster': cluster, 'node': group['head'], 'rank': '0',
                                  '__scheme__': metrics['scheme'], '__metrics_path__': metrics['path']}})
    node = []
    for name in group['hosts']:
        address = str(nodes[name]['management_address'])
        address = '[%s]' % address if ':' in address else address
        node.append({'targets': ['%s:%d' % (address, int(node_exporter_port))],
                     'labels': {'cluster': cluster, 'node': name, 'rank': str(nodes[name]['node_rank'])}})
    return {SGLANG_FILE % cluster: sglang, NODE_FILE % cluster: node}


def prometheus_config(file_sd_dir, rule_files, scrape_interval='15s', evaluation_interval='15s', sglang_tls=None):
    """The whole prometheus.yml: jobs sglang and node read every cluster's files under FILE_SD_DIR."""
    sglang_job = {'job_name': SGLANG_JOB,
                  'file_sd_configs': [{'files': ['%s/%s' % (file_sd_dir.rstrip('/'), SGLANG_FILE % '*')]}]}
    if sglang_tls:
        sglang_job['tls_config'] = dict(sglang_tls)
    return {
        'global': {'scrape_interval': scrape_interval, 'evaluation_interval': evaluation_interval},
        'rule_files': list(rule_files),
        'scrape_configs': [
            sglang_job,
            {'job_name': NODE_JOB,
             'file_sd_configs': [{'files': ['%s/%s' % (file_sd_dir.rstrip('/'), NODE_FILE % '*')]}]},
        ],
    }


def _thresholds(values):
    merged = dict(THRESHOLDS)
    problems = []
    for key, value in (values or {}).items():
        if key not in THRESHOLDS:
            problems.append(problem('monitoring-threshold-unknown', 'monitoring_alert_thresholds',
                                    'has no threshold %r' % key, 'use one of %s' % ', '.join(sorted(THRESHOLDS)),
                                    'the monitoring host'))
            continue
        if key.endswith('_for'):
            ok = isinstance(value, str) and bool(_DURATION.match(value))
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not ok:
            problems.append(problem('monitoring-threshold-invalid', 'monitoring_alert_thresholds',
                                    '%s is %r, not %s' % (key, value, 'a Prometheus duration' if key.endswith('_for')
                                                          else 'a positive number'),
                                    'write e.g. %s: %s' % (key, THRESHOLDS[key]), 'the monitoring host'))
            continue
        merged[key] = value
    if problems:
        raise ProblemsError(problems)
    return merged


def _alert(name, expr, duration, severity, summary, description):
    return {'alert': name, 'expr': expr, 'for': duration, 'labels': {'severity': severity},
            'annotations': {'summary': summary, 'description': description}}


def _cx7_rules(plan, duration):
    """Each configured twin of one cluster: down, missing (node_exporter answers, the interface is gone), slower than
    the plan's expected speed (a CX7 link can come up at 13 Gb/s instead of 200)."""
    cluster = _cluster_name(plan)
    twins = list(plan.get('interfaces') or [])
    bad = [t for t in twins if not isinstance(t, str) or not _IFNAME.match(t)]
    if not twins or bad:
        raise ProblemsError([problem('monitoring-plan-invalid', 'spark_cx7_interfaces',
                                     'the plan of %s names no usable interfaces (%r)' % (cluster, twins),
                                     'run the preflight role on the group first', _where(plan))])
    speed_bytes = int(plan['expected_speed_mbps']) * 125000  # Mb/s -> bytes/s, as node_exporter reports speed
    match = 'job="%s",cluster="%s",device=~"%s"' % (NODE_JOB, cluster, '|'.join(twins))
    return [
        _alert('SparkCX7TwinDown', 'node_network_up{%s} == 0' % match, duration, 'critical',
               'CX7 twin {{ $labels.device }} of {{ $labels.node }} is down',
               'operstate of {{ $labels.device }} on {{ $labels.node }} (cluster {{ $labels.cluster }}) is not up: NCCL '
               'loses that twin (about half the bandwidth, or the group). Check the cable and `ip link` there.'),
        _alert('SparkCX7TwinMissing',
               'up{job="%s",cluster="%s"} == 1 unless on (instance) count by (instance) (node_network_up{%s}) == %d'
               % (NODE_JOB, cluster, match, len(twins)), duration, 'critical',
               'A CX7 twin of {{ $labels.node }} is missing',
               'node_exporter on {{ $labels.node }} does not list every twin of %s: the interface is gone (driver, '
               'renamed netdev).' % ', '.join(twins)),
        _alert('SparkCX7TwinDegraded', 'node_network_speed_bytes{%s} < %d' % (match, speed_bytes),
               duration, 'warning',
               'CX7 twin {{ $labels.device }} of {{ $labels.node }} runs below %d Mb/s' % int(plan['expected_speed_mbps']),
               '{{ $labels.device }} on {{ $labels.node }} reports {{ $value | humanize }}B/s, expected %d bytes/s '
               '(spark_cx7_expected_speed_mbps): a degraded link; reseat the cable or check the switch port.'
               % speed_bytes),
    ]


def rules(plans, thresholds=None):
    """The rule file: one group of recording rules, one of SGLang and node alerts, one of CX7 alerts per cluster."""
    t = _thresholds(thresholds)
    sglang_alerts = [
        _alert('SGLangDown', 'up{job="%s"} == 0' % SGLANG_JOB, t['sglang_down_for'], 'critical',
               'SGLang of cluster {{ $labels.cluster }} does not answer /metrics',
               'Prometheus cannot scrape rank 0 ({{ $labels.instance }}) of {{ $labels.cluster }}: the group is down '
               'or restarting. `systemctl status sglang` and its journal on {{ $labels.node }}.'),
        _alert('SGLangQueueGrowing', '%s > %s and deriv(%s[10m]) > 0' % (QUEUE, t['queue_min'], QUEUE),
               t['queue_for'], 'warning',
               'Requests pile up in the queue of {{ $labels.cluster }}',
               '{{ $value }} requests wait and the queue keeps growing: more load than the group serves.'),
        _alert('SGLangTokenUsageHigh', '%s > %s' % (TOKEN_USAGE, t['token_usage_max']), t['token_usage_for'], 'warning',
               'KV cache of {{ $labels.cluster }} is nearly full',
               'sglang:token_usage is {{ $value | humanizePercentage }}: new requests wait or are retracted.'),
        _alert('SGLangTimeToFirstTokenHigh', '%s > %s' % (TTFT_P99, t['ttft_p99_seconds']), t['ttft_for'], 'warning',
               'p99 time to first token of {{ $labels.cluster }} is {{ $value | humanizeDuration }}',
               'Above %s s for %s (sglang:time_to_first_token_seconds over 5 minutes).'
               % (t['ttft_p99_seconds'], t['ttft_for'])),
        _alert('SparkNodeMemoryLow', '%s < %s' % (MEMORY_RATIO, t['memory_available_ratio_min']), t['memory_for'],
               'critical',
               'Available memory of {{ $labels.node }} is {{ $value | humanizePercentage }}',
               'Unified memory (CPU and GPU share it on a GB10): MemAvailable of node_exporter\'s meminfo. earlyoom '
               'stops SGLang at 5%; below that a GB10 may freeze.'),
    ]
    cx7 = []
    names = []
    for plan in plans:
        name = _cluster_name(plan)
        if name in names:
            continue
        names.append(name)
        cx7.append({'name': 'dgxspark-cx7-%s' % name, 'rules': _cx7_rules(plan, t['cx7_for'])})
    return {'groups': [
        {'name': 'dgxspark-recording', 'rules': [{'record': r, 'expr': e} for r, e in RECORDING]},
        {'name': 'dgxspark-sglang', 'rules': sglang_alerts},
    ] + cx7}


def plans_of(hostvars_plans):
    """One plan per cluster from the plans that hosts hold (every host of a group holds the same one)."""
    seen = {}
    for plan in hostvars_plans or []:
        seen.setdefault(_cluster_name(plan), copy.deepcopy(plan))
    return [seen[k] for k in sorted(seen)]


def monitoring_files(plans, config_dir, node_exporter_port=NODE_EXPORTER_PORT, thresholds=None, scrape_interval='15s',
                     sglang_tls=None):
    """Everything the Prometheus host gets, from the plans its hosts hold: ``prometheus`` (prometheus.yml), ``rules``
    (the rule file) and ``file_sd`` ({file name: targets}); the files live in CONFIG_DIR (rules under ``rules/``,
    targets under ``file_sd/``)."""
    plans = plans_of(plans)
    if not plans:
        raise ProblemsError([problem('monitoring-no-plan', 'spark_cluster_plan', 'no host of the play holds a cluster plan',
                                     'run the preflight role on each cluster\'s group in the same run first '
                                     '(playbooks/monitoring.yml does it for spark_group)', 'the monitoring host')])
    base = config_dir.rstrip('/')
    targets = {}
    for plan in plans:
        targets.update(file_sd(plan, node_exporter_port))
    return {
        'prometheus': prometheus_config(base + '/file_sd', [base + '/rules/' + RULES_FILE], scrape_interval,
                                        scrape_interval, sglang_tls),
        'rules': rules(plans, thresholds),
        'file_sd': targets,
        'clusters': [p['cluster'] for p in plans],
    }
