# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The verdicts of the verify role, as pure functions (no Ansible objects inside).

The role gathers raw results on every node (the NCCL environment file, the all-reduce, the unit's state, rank 0's
health check) and reads the rest from the cluster plan (``spark_cluster_plan`` at stage ``probed``: the GPUs and CX7
twins that preflight probed once). Everything it decides is decided here:

- ``parse_env_file`` (from ``_env_file``, the one home of the format): the variables of the NCCL environment file;
- ``allreduce_blockers``: why the all-reduce cannot run for a node's group (a node missing, a twin down);
- ``node_report``: one node's report, with its ``failures``, each ``{check, code, reason}``;
- ``cluster_verdict`` and ``group_reports``: the verdict of each group and the report the controller writes.

A failure carries a code beside its sentence (``cx7-link-down``, ``sglang-unit-not-active``); code that reacts to a
failure tests the code. Link problems keep the code the probe gave them.
"""

from __future__ import annotations

import base64
import os

from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MIN_BUSBW_GBPS,
    DEFAULT_SERVING_RESERVE_BYTES,
    DEFAULT_THRESHOLD_MIN_BYTES,
    VERDICT_FAIL,
    VERDICT_PROVISIONAL,
    human_bytes,
    memory_capped_max_bytes,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import DRIVER_FIX
from ansible_collections.dgxspark.sglang.plugins.module_utils._env_file import parse_env_file
from ansible_collections.dgxspark.sglang.plugins.module_utils._nvidia_smi import parse_meminfo

# The checks of a node, in the order the report shows them.
CHECK_REACHABLE = 'reachable'
CHECK_GPU = 'gpu'
CHECK_LINK = 'link'
CHECK_NCCL_ENV = 'nccl.env'
CHECK_ALLREDUCE = 'all-reduce'
CHECK_UNIT = 'sglang unit'
CHECK_HEALTH = 'sglang health'
CHECK_CLUSTER = 'cluster'
CHECKS = (CHECK_REACHABLE, CHECK_GPU, CHECK_LINK, CHECK_NCCL_ENV, CHECK_ALLREDUCE, CHECK_UNIT, CHECK_HEALTH,
          CHECK_CLUSTER)

# Link problems that are expected, not failures, when the run does not need RDMA (gloo over sockets: the lab's
# veths, CPU-only CI).
RDMA_ONLY_CODES = frozenset(('cx7-no-rdma-device',))

# The interface keys the report keeps of each CX7 twin that connectx_info returned.
INTERFACE_KEYS = ('name', 'present', 'operstate', 'speed_mbps', 'mtu', 'ipv4', 'rdma_device', 'driver')

# What the report keeps of the completion text of the health check.
COMPLETION_TEXT_MAX = 200


def failure(check, code, reason):
    """One failure of a node: the check, a stable code and the sentence a user reads (with ``Fix: ...``)."""
    return {'check': check, 'code': code, 'reason': str(reason).strip()}


# --- raw results -------------------------------------------------------------------------------------------------

def slurped_text(result):
    """The text of a file that ansible.builtin.slurp read (its ``content`` is base64), or None when it was not read."""
    result = result or {}
    if result.get('skipped') or 'content' not in result:
        return None
    return base64.b64decode(result['content']).decode('utf-8', 'replace')


def parse_systemctl_show(text):
    """``systemctl show --property=...`` output (``Key=Value`` lines) as a dict."""
    props = {}
    for line in (text or '').splitlines():
        if '=' in line:
            key, value = line.split('=', 1)
            props[key.strip()] = value.strip()
    return props


def links_down(interfaces):
    """The names of the twins that are missing or not up, in order."""
    return [i.get('name') for i in interfaces or () if not i.get('present') or i.get('operstate') != 'up']


def _ran(result):
    return bool(result) and not result.get('skipped')


# --- the plan ----------------------------------------------------------------------------------------------------

def node_of(plan, host):
    """The plan's entry of a host (KeyError when the host is not in the plan)."""
    return plan['nodes'][host]


def group_of(plan, host):
    """The plan's group of a host."""
    return plan['groups'][node_of(plan, host)['group']]


def allreduce_blockers(plan, host, play_hosts, skip_on_link_down=True):
    """Why the all-reduce of ``host``'s group cannot start: one ``{host, code, reason}`` per node in the way.

    A node of the group that is not among ``play_hosts`` (unreachable, failed, left out by ``--limit``) would leave
    the others waiting for it until the timeout; with ``skip_on_link_down``, so would a node whose CX7 twin is
    missing or down. Every node of a group gets the same list, so they all start the all-reduce or none does.
    """
    play_hosts = set(play_hosts or ())
    blockers = []
    for name in group_of(plan, host)['hosts']:
        if name not in play_hosts or name not in plan['nodes']:
            blockers.append({'host': name, 'code': 'verify-node-not-run',
                             'reason': '%s did not run the checks (unreachable, failed or left out by --limit)' % name})
            continue
        down = links_down((plan['nodes'][name].get('probe') or {}).get('interfaces'))
        if skip_on_link_down and down:
            blockers.append({'host': name, 'code': 'cx7-twin-down',
                             'reason': '%s: CX7 twin %s missing or down' % (name, ', '.join(down))})
    return blockers


def allreduce_sizing(plan, host, memories, max_bytes=None, reserve_bytes=None):
    """How large the all-reduce's messages may be for ``host``'s group: the same answer on every node of it.

    ``memories``: one ``{host, serving, meminfo}`` per node of the play (``serving``: the SGLang unit is active;
    ``meminfo``: the text of its /proc/meminfo). When no node of the group serves, the sizes are ``max_bytes``
    (None: the module's default). When some do, SGLang holds most of their memory (GB10 memory is unified, so GPU
    buffers come out of MemAvailable): the largest size is capped so that each serving node's buffers fit in its
    MemAvailable less ``reserve_bytes``; the node with the least memory sets it for the whole group (every node
    must run the same sizes). A serving node without room for even the smallest size, or without a readable
    MemAvailable, is a blocker: the all-reduce does not run.

    Returns ``{sized_from_memory, max_bytes, serving_hosts, limited_by, mem_available_bytes, reserve_bytes, note,
    blockers}``; ``note`` is the sentence the report shows (None when nothing was sized).
    """
    group = group_of(plan, host)
    limit = int(max_bytes) if max_bytes not in (None, '') else DEFAULT_MAX_BYTES
    reserve = int(reserve_bytes) if reserve_bytes not in (None, '') else DEFAULT_SERVING_RESERVE_BYTES
    ranks = group.get('gpus_per_node') or 1
    serving = [m for m in memories or () if m.get('serving') and m.get('host') in group['hosts']]
    result = {'sized_from_memory': False, 'max_bytes': None if max_bytes in (None, '') else limit,
              'serving_hosts': sorted(m['host'] for m in serving), 'limited_by': None, 'mem_available_bytes': None,
              'reserve_bytes': reserve, 'note': None, 'blockers': []}
    if not serving:
        return result
    available = {}
    for item in serving:
        kib = parse_meminfo(item.get('meminfo')).get('MemAvailable')
        if kib is None:
            result['blockers'].append({
                'host': item['host'], 'code': 'allreduce-memory-unknown',
                'reason': '%s serves SGLang and its MemAvailable cannot be read (/proc/meminfo), so the all-reduce '
                          'cannot be sized to the memory it has free. Fix: check that /proc/meminfo is readable there'
                          % item['host']})
        else:
            available[item['host']] = kib * 1024
    if result['blockers']:
        return result
    tightest = min(sorted(available), key=lambda name: available[name])
    cap = memory_capped_max_bytes(limit, available[tightest], reserve, ranks)
    result.update(sized_from_memory=True, limited_by=tightest, mem_available_bytes=available[tightest])
    free = 'MemAvailable %.1f GiB on %s less a reserve of %s' % (available[tightest] / float(1 << 30), tightest,
                                                                 human_bytes(reserve))
    if cap is None:
        result['blockers'].append({
            'host': tightest, 'code': 'allreduce-no-free-memory',
            'reason': '%s serves SGLang and has no room for the all-reduce\'s buffers (%s). Fix: lower '
                      "sglang_server_args['mem-fraction-static'], or stop the SGLang unit while verify runs, or lower "
                      'verify_allreduce_memory_reserve_bytes' % (tightest, free)})
        return result
    result['max_bytes'] = cap
    result['note'] = ('SGLang serves on %s: the buffers were sized from the memory free (%s, %d rank(s) x 2 x the '
                      'size), largest size %s%s' % (', '.join(result['serving_hosts']), free, ranks, human_bytes(cap),
                                                    '' if cap >= limit else ' instead of %s' % human_bytes(limit)))
    return result


# --- one node ----------------------------------------------------------------------------------------------------

def gpu_section(probe, expected_count, host):
    """The GPU part of a node's report and its failures, from the probe in the plan."""
    probe = probe or {}
    driver = probe.get('driver') or {}
    state = driver.get('state')
    gpus = probe.get('gpus') or []
    section = {
        'ok': True,
        'driver_state': state,
        'count': probe.get('gpu_count'),
        'expected': expected_count,
        'names': [g.get('name') for g in gpus],
        'driver_version': driver.get('version'),
        'cuda_version': probe.get('cuda_version'),
        'unified_memory': [g.get('unified_memory') for g in gpus],
        'memory_total_mib': [g.get('memory_total_mib') for g in gpus],
        'error': None,
    }
    failures = []
    if state != 'ready':
        what = driver.get('message') or 'the GPU driver is %s' % (state or 'not probed')
        fix = DRIVER_FIX.get(state, DRIVER_FIX['error'])
        failures.append(failure(CHECK_GPU, 'gpu-driver-%s' % (state or 'unknown'),
                                '%s on %s. Fix: %s' % (what.rstrip('.'), host, fix)))
    elif expected_count is not None and probe.get('gpu_count') != expected_count:
        failures.append(failure(CHECK_GPU, 'gpu-count',
                                '%s GPU(s) found on %s, expected %s. Fix: check `nvidia-smi` there, or set '
                                'preflight_expected_gpus_per_node' % (probe.get('gpu_count'), host, expected_count)))
    if failures:
        section.update(ok=False, error=failures[0]['reason'])
    return section, failures


def link_section(probe, require_rdma):
    """The CX7 part of a node's report and its failures: every link problem of the probe, by code.

    Without ``require_rdma`` a missing RDMA device (codes in ``RDMA_ONLY_CODES``) is expected, not a failure.
    """
    probe = probe or {}
    problems = [p for p in probe.get('link_problems') or ()
                if require_rdma or p.get('code') not in RDMA_ONLY_CODES]
    section = {
        'ok': not problems,
        'interfaces': [{key: i.get(key) for key in INTERFACE_KEYS} for i in probe.get('interfaces') or ()],
        'rdma_devices': list(probe.get('rdma_devices') or ()),
        'rdma_required': bool(require_rdma),
        'problems': [{'code': p.get('code'), 'message': _problem_sentence(p)} for p in problems],
    }
    failures = [failure(CHECK_LINK, p['code'], p['message']) for p in section['problems']]
    return section, failures


def _problem_sentence(problem):
    if problem.get('message'):
        return problem['message']
    text = problem.get('what') or problem.get('code') or 'link problem'
    return '%s. Fix: %s' % (text.rstrip('.'), problem['fix'].rstrip('.')) if problem.get('fix') else text


def nccl_env_section(path, slurp_result, host):
    """The NCCL environment part of a node's report (the variables of the file) and its failures."""
    text = slurped_text(slurp_result)
    section = {'path': path, 'found': text is not None, 'variables': parse_env_file(text) if text is not None else {}}
    failures = []
    if text is None:
        why = (slurp_result or {}).get('msg') or 'not read'
        failures.append(failure(CHECK_NCCL_ENV, 'nccl-env-missing',
                                '%s cannot be read on %s (%s). Fix: run site.yml (the nccl_env role writes it)'
                                % (path, host, why)))
    return section, failures


def unit_section(service, command_result, host):
    """The SGLang unit part of a node's report (``systemctl show``) and its failures."""
    props = parse_systemctl_show((command_result or {}).get('stdout'))
    unit = '%s.service' % service
    section = {
        'name': unit,
        'load_state': props.get('LoadState', 'unknown'),
        'active_state': props.get('ActiveState', 'unknown'),
        'sub_state': props.get('SubState', 'unknown'),
        'restarts': props.get('NRestarts'),
    }
    failures = []
    if section['active_state'] != 'active':
        if section['load_state'] == 'not-found':
            failures.append(failure(CHECK_UNIT, 'sglang-unit-not-installed',
                                    '%s is not installed on %s (LoadState not-found). Fix: run site.yml (the '
                                    'sglang_server role)' % (unit, host)))
        else:
            failures.append(failure(CHECK_UNIT, 'sglang-unit-not-active',
                                    '%s is %s (%s) on %s. Fix: read why in `journalctl -u %s -n 100` there, then '
                                    'rerun site.yml (it restarts the whole group)'
                                    % (unit, section['active_state'], section['sub_state'], host, service)))
    return section, failures


def allreduce_summary(result, backend, runtime, blockers=(), min_busbw_gbps=None, threshold_min_bytes=None,
                      sizing=None):
    """What the report shows of a node's all-reduce (``nccl_allreduce``'s result; skipped when blocked).

    The threshold is the one the module used: the value it returns, else the one it was given, else its default.
    ``applicable`` is False when the module said so (a group of one node with one rank: no link to measure); then
    there is no bandwidth verdict, and no failure either. ``verdict`` is the module's bandwidth verdict (``pass``,
    ``fail``, ``warn``, ``provisional``, ``not-judged``); ``provisional`` and ``warn`` are warnings, shown in
    ``warnings``, not failures. ``sizing`` is what ``allreduce_sizing`` decided (its ``note`` says how the sizes were
    capped on a serving node).
    """
    result = result or {}
    ran = _ran(result)
    applicable = not (ran and result.get('applicable') is False)
    min_bytes = _first_set(result.get('threshold_min_bytes'), threshold_min_bytes, DEFAULT_THRESHOLD_MIN_BYTES, cast=int)
    sizing = dict(sizing or {})
    judged = list(result.get('judged_bytes') or ())
    return {
        'ran': ran,
        'applicable': applicable,
        'not_applicable_reason': None if applicable else result.get('reason'),
        'blockers': [dict(b) for b in blockers or ()],
        'backend': backend,
        'runtime': runtime,
        'world_size': result.get('world_size'),
        'torch_version': result.get('torch_version'),
        'nccl_version': result.get('nccl_version'),
        'device_name': result.get('device_name'),
        'results': [dict(row, size=human_bytes(row['bytes'])) for row in result.get('results') or ()],
        'peak_busbw_gbps': result.get('peak_busbw_gbps'),
        'threshold_gbps': _first_set(result.get('min_busbw_gbps'), min_busbw_gbps, DEFAULT_MIN_BUSBW_GBPS, cast=float),
        'threshold_min_bytes': min_bytes,
        'threshold_min_size': human_bytes(min_bytes),
        'threshold_applied': bool(result.get('threshold_applied', False)),
        'verdict': result.get('bandwidth_verdict') if ran and applicable else None,
        'provisional': bool(ran and applicable and result.get('bandwidth_verdict') == 'provisional'),
        'judged_busbw_gbps': result.get('judged_busbw_gbps'),
        'judged_sizes': [human_bytes(size) for size in judged],
        'warnings': list(result.get('bandwidth_warnings') or ()) if ran and applicable else [],
        'sized_from_memory': bool(sizing.get('sized_from_memory')),
        'sizing_note': sizing.get('note'),
        'passed': bool(ran and applicable and result.get('passed', False)),
        'problems': list(result.get('problems') or ()),
        'error': result.get('msg') if ran and applicable else None,
    }


def _first_set(*values, **kwargs):
    cast = kwargs.get('cast', lambda v: v)
    for value in values:
        if value is not None and value != '':
            return cast(value)
    return None


def allreduce_failures(summary, host, link_down=()):
    """The all-reduce failures of a node: the run failed (wrong sums, too slow, an error), or it could not start
    because a twin of this node is down. A run blocked by another node is that node's failure, not this one's.
    A run that does not apply (one node, one rank) is no failure."""
    if summary['ran'] and not summary.get('applicable', True):
        return []
    if summary['ran']:
        if summary['passed'] and not summary['error']:
            return []
        rows = summary['results']
        if any(not row.get('correct') for row in rows):
            code = 'allreduce-wrong-sums'
        elif rows and summary.get('verdict') == VERDICT_FAIL:
            code = 'allreduce-below-threshold'
        else:
            code = 'allreduce-error'
        reason = summary['error'] or '; '.join(summary['problems']) or 'the all-reduce did not pass on %s' % host
        return [failure(CHECK_ALLREDUCE, code, reason)]
    if link_down:
        return [failure(CHECK_ALLREDUCE, 'allreduce-not-run',
                        'not run: CX7 twin %s missing or down here' % ', '.join(link_down))]
    # A serving node without room for the buffers (or without a readable MemAvailable) is its own failure.
    return [failure(CHECK_ALLREDUCE, b['code'], 'not run: %s' % b['reason']) for b in summary['blockers']
            if b.get('host') == host and b.get('code') in SIZING_CODES]


# The blockers that allreduce_sizing gives: the node named is the one that failed.
SIZING_CODES = frozenset(('allreduce-no-free-memory', 'allreduce-memory-unknown'))


def health_summary(result, host):
    """What the report shows of rank 0's health check (``sglang_health``'s result; skipped when the unit is down)."""
    result = result or {}
    text = result.get('completion_text') or ''
    if len(text) > COMPLETION_TEXT_MAX:
        text = text[:COMPLETION_TEXT_MAX - 3].rstrip() + '...'
    return {
        'checked': _ran(result),
        'host': host,
        'url': result.get('url'),
        'healthy': bool(result.get('healthy', False)),
        'model_ok': bool(result.get('model_ok', False)),
        'served_model': result.get('served_model'),
        'ttft_s': result.get('ttft_s'),
        'total_s': result.get('total_s'),
        'elapsed_s': result.get('elapsed_s'),
        'completion_text': text,
        'completion_tokens': result.get('completion_tokens'),
        'metrics': dict(result.get('metrics') or {}),
        'error': result.get('msg') if _ran(result) else None,
    }


def health_failures(summary, service, host):
    """The health failures of rank 0: not checked (the unit is not active) or the check failed."""
    if not summary['checked']:
        return [failure(CHECK_HEALTH, 'sglang-health-not-checked',
                        'not checked: %s.service is not active on rank 0 (%s)' % (service, host))]
    if summary['error'] or not summary['healthy']:
        return [failure(CHECK_HEALTH, 'sglang-health-failed',
                        summary['error'] or 'rank 0 (%s) did not answer healthy at %s' % (host, summary['url']))]
    return []


def node_report(plan, host, nccl_env=None, allreduce=None, unit=None, health=None, blockers=(), backend='nccl',
                runtime='python', require_rdma=None, min_busbw_gbps=None, threshold_min_bytes=None, sizing=None):
    """One node's report from the plan and the node's raw results, with its ``failures``.

    ``nccl_env``, ``allreduce``, ``unit`` and ``health`` are the registered results of the role's tasks (slurp,
    nccl_allreduce, ``systemctl show``, sglang_health); ``health`` counts on rank 0 only. ``require_rdma`` None
    means: required on ``nccl`` runs. Rank 0's report also holds the health check (``health``); every node's holds
    its own all-reduce (``allreduce``); ``sizing`` is what ``allreduce_sizing`` decided for its group.
    """
    node = node_of(plan, host)
    group = group_of(plan, host)
    probe = node.get('probe')
    if require_rdma is None:
        require_rdma = backend == 'nccl'
    gpu, failures = gpu_section(probe, group.get('gpus_per_node'), host)
    if probe is None:
        failures = [failure(CHECK_GPU, 'verify-not-probed',
                            'the plan holds no probe of %s (stage %s). Fix: run the preflight role with '
                            'preflight_probe true before the verify role' % (host, plan.get('stage')))]
    link, more = link_section(probe, require_rdma)
    failures.extend(more)
    env, more = nccl_env_section(plan.get('nccl_env_file'), nccl_env, host)
    failures.extend(more)
    summary = allreduce_summary(allreduce, backend, runtime, blockers, min_busbw_gbps, threshold_min_bytes, sizing)
    failures.extend(allreduce_failures(summary, host, links_down((probe or {}).get('interfaces'))))
    unit_state, more = unit_section(group['service'], unit, host)
    failures.extend(more)
    report = {
        'host': host,
        'group': node['group'],
        'node_rank': node['node_rank'],
        'management_address': node.get('management_address'),
        'reachable': True,
        'gpu': gpu,
        'link': link,
        'nccl_env': env,
        'unit': unit_state,
        'allreduce': summary,
    }
    if node['node_rank'] == 0:
        report['health'] = health_summary(health, host)
        failures.extend(health_failures(report['health'], group['service'], host))
    seen = set(f['code'] for f in failures) | set(p.get('code') for p in (probe or {}).get('link_problems') or ())
    failures.extend(plan_failures(plan, host, seen))
    report['failures'] = failures
    return report


def plan_failures(plan, host, seen=()):
    """The errors the probed plan holds about ``host`` that no check of its own reported (codes not in ``seen``):
    nodes that disagree on the driver or the GPU model, a node that would be readdressed, NCCL settings naming
    devices that are not there. preflight leaves them in the plan instead of failing when verify runs it."""
    out = []
    for item in plan.get('problems') or ():
        if item.get('severity', 'error') != 'error' or host not in (item.get('hosts') or ()):
            continue
        if item.get('code') in seen:
            continue
        out.append(failure(CHECK_CLUSTER, item.get('code') or 'cluster-problem', _problem_sentence(item)))
    return out


def unreachable_report(plan, host):
    """The report of a node whose checks did not run (unreachable, a task failed there, left out by --limit)."""
    node = plan.get('nodes', {}).get(host) or {}
    group = node.get('group')
    if group is None:
        group = next((name for name, g in plan.get('groups', {}).items() if host in g.get('hosts', ())), None)
    rank = node.get('node_rank')
    if rank is None and group is not None:
        rank = plan['groups'][group]['hosts'].index(host)
    return {
        'host': host,
        'group': group,
        'node_rank': rank,
        'management_address': node.get('management_address'),
        'reachable': False,
        'failures': [failure(CHECK_REACHABLE, 'verify-node-not-run',
                             'the checks did not run on %s (unreachable, a task failed there, or left out by '
                             '--limit)' % host)],
    }


# --- the group ---------------------------------------------------------------------------------------------------

def cluster_verdict(node_reports, allreduce, health):
    """The verdict of a group: ``{verdict, passed, failures}``, each failure ``{host, check, code, reason}``.

    Every node's failures count. Should the head list none while its all-reduce or health check did not pass (a
    result that names no failure), that counts against the head too, so that ``pass`` always means both passed
    (the all-reduce: passed, or not applicable, on a group of one node with one rank).
    """
    failures = []
    for report in node_reports:
        for item in report.get('failures') or ():
            failures.append(dict(item, host=report['host']))
    head = next((r['host'] for r in node_reports if r.get('node_rank') == 0), None)
    if not failures and head is not None:
        allreduce = allreduce or {}
        health = health or {}
        if not allreduce.get('passed') and allreduce.get('applicable', True):
            failures.append(dict(failure(CHECK_ALLREDUCE, 'allreduce-not-passed',
                                         allreduce.get('error') or 'the all-reduce did not pass'), host=head))
        if not health.get('checked') or health.get('error') or not health.get('healthy'):
            failures.append(dict(failure(CHECK_HEALTH, 'sglang-health-failed',
                                         health.get('error') or 'rank 0 did not answer healthy'), host=head))
    return {'verdict': 'fail' if failures else 'pass', 'passed': not failures, 'failures': failures}


_NODE_ALLREDUCE_KEYS = ('backend', 'runtime', 'ran', 'applicable', 'passed', 'verdict', 'error')


def allreduce_warnings(allreduce, head):
    """The warnings of a group's all-reduce (rank 0's): a provisional verdict, or one below the threshold that only
    warns (``below_threshold=warn``). Each ``{host, check, code, reason}``; they do not change the verdict."""
    allreduce = allreduce or {}
    code = 'allreduce-provisional' if allreduce.get('verdict') == VERDICT_PROVISIONAL else 'allreduce-below-threshold'
    return [dict(failure(CHECK_ALLREDUCE, code, text), host=head) for text in allreduce.get('warnings') or ()]


def group_report(plan, group_name, node_reports, timestamp, report_dir=None):
    """The report of one group, as report.json holds it: the group, each node, rank 0's all-reduce and health check,
    the verdict. ``node_reports``: host -> ``node_report`` (None or missing for a node whose checks did not run)."""
    group = plan['groups'][group_name]
    nodes = []
    for host in group['hosts']:
        report = (node_reports or {}).get(host)
        nodes.append(dict(report) if report else unreachable_report(plan, host))
    head = next((n for n in nodes if n['host'] == group['head']), {})
    if 'allreduce' in head:
        allreduce = dict(head['allreduce'])
    else:
        # The head's checks did not run: the other nodes' blockers say why (at least the head itself).
        ran = [n['allreduce'] for n in nodes if 'allreduce' in n]
        allreduce = allreduce_summary(None, ran[0]['backend'] if ran else None, ran[0]['runtime'] if ran else None,
                                      next((a['blockers'] for a in ran if a['blockers']), None) or [{
                                          'host': group['head'], 'code': 'verify-node-not-run',
                                          'reason': '%s did not run the checks (unreachable, failed or left out by '
                                                    '--limit)' % group['head']}])
    health = head.get('health') or health_summary(None, group['head'])
    for node in nodes:
        node.pop('health', None)
        if 'allreduce' in node:
            node['allreduce'] = {key: node['allreduce'].get(key) for key in _NODE_ALLREDUCE_KEYS}
    report = {
        'cluster': group_name,
        'timestamp': timestamp,
        'nnodes': group['nnodes'],
        'head': group['head'],
        'hosts': list(group['hosts']),
        'dist_init_addr': group.get('dist_init_addr'),
        'tp_size': group.get('tp_size'),
        'model': (group.get('model') or {}).get('served_name'),
    }
    report.update(cluster_verdict(nodes, allreduce, health))
    report.update(warnings=allreduce_warnings(allreduce, group['head']), nodes=nodes, allreduce=allreduce,
                  health=health)
    if report_dir is not None:
        report['path'] = os.path.join(str(report_dir), '%s-%s' % (group_name, timestamp))
    return report


def group_reports(plan, node_reports, timestamp, report_dir=None, hosts=None):
    """One ``group_report`` per group of the plan that holds one of ``hosts`` (default: every node of the plan)."""
    hosts = list(plan['nodes']) if hosts is None else list(hosts)
    names = []
    for host in hosts:
        name = (plan['nodes'].get(host) or {}).get('group')
        if name is not None and name not in names:
            names.append(name)
    return [group_report(plan, name, node_reports, timestamp, report_dir) for name in names]


# ---- where the report goes when verify_report_dir is not set ------------------------------------------------

def default_report_dir(playbook_dir, cwd, artifact_dir=None):
    """The folder verify writes its reports into when ``verify_report_dir`` is not set.

    - Run by ansible-runner (the engine of AWX; ``artifact_dir`` is its ``AWX_ISOLATED_DATA_DIR``, the job's artifact
      folder): ``<artifact_dir>/reports``, among the job's artifacts (ansible-runner keeps them, AWX's worker sends
      them back with the job).
    - From an installed collection (the playbook lies in ``.../ansible_collections/<namespace>/<name>/playbooks``):
      ``<cwd>/reports``, the folder the command runs in, never inside the installed collection (in an execution
      environment that path is read-only, and it is shared by every run of the machine).
    - From a checkout (the playbook lies anywhere else, links resolved): ``reports/`` at its top, git-ignored.
    """
    if artifact_dir:
        return os.path.join(str(artifact_dir), 'reports')
    top = os.path.dirname(os.path.realpath(str(playbook_dir)))
    parts = top.split(os.sep)
    if len(parts) >= 3 and parts[-3] == 'ansible_collections':
        return os.path.join(str(cwd), 'reports')
    return os.path.join(top, 'reports')
