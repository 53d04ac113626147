# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""SGLang's router (SMG, the ``smg`` package SGLang 0.5.23's README points to) in front of several SGLang groups.

Each group is one SGLang instance (one inventory group, one cluster plan, ``_cluster.check_description``); its rank 0
is one worker of the router. ``router_workers`` plans the groups and lists the workers (URL, model served, head);
``router_argv`` writes the router's command line. Every problem of every group is listed at once, with the variable,
the host and the fix. Pure Python: the filters in ``plugins/filter/router.py`` only wrap these functions.
"""

from __future__ import annotations

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import check_description
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, errors, problem

VAR_GROUPS = 'sglang_router_groups'
VAR_PORT = 'sglang_router_port'
VAR_METRICS_PORT = 'sglang_router_metrics_port'
VAR_EXTRA = 'sglang_router_extra_args'
SUBJECT = 'The router'
# The router's package and version (roles/sglang_router installs it; the kubernetes role's image carries the same).
SMG_VERSION = '1.13.0'
# `smg launch --help` of SMG 1.13.0: --policy's choices and default, --prometheus-port's default.
POLICIES = ('random', 'round_robin', 'passthrough', 'cache_aware', 'power_of_two', 'least_load', 'manual',
            'consistent_hashing', 'prefix_hash')
DEFAULT_POLICY = 'cache_aware'
DEFAULT_METRICS_PORT = 29000

# The flags the role writes itself (one variable each, or computed): never from sglang_router_extra_args.
OWNED_FLAGS = {
    'host': 'sglang_router_host', 'port': VAR_PORT, 'worker-urls': VAR_GROUPS, 'policy': 'sglang_router_policy',
    'prometheus-host': 'sglang_router_metrics_host', 'prometheus-port': VAR_METRICS_PORT,
    'api-key': 'sglang_router_api_key (or the groups\' own key)', 'log-level': 'sglang_router_log_level',
    'disable-tokenizer-autoload': 'the role (always set: the router forwards HTTP requests and never needs a tokenizer)',
}


def router_workers(descriptions, router_address=None, router_ports=()):
    """``{workers, models, problems}`` for the groups behind the router.

    ``descriptions``: one cluster description per group (as the preflight role builds it: ``cluster``, ``hosts``,
    ``gpus_per_node``), in the order of ``sglang_router_groups``. ``router_address``: the router host's management
    address (``ansible_host``), to find a group port on the router's own host; ``router_ports``: the ports the router
    listens on. Each worker: ``group``, ``url`` (the group's rank 0 as the router reaches it), ``model`` (the name a
    request names), ``head``, ``hosts``, ``config_file`` (where the group keeps its API key).
    """
    problems = []
    if not descriptions:
        problems.append(problem('router-no-groups', VAR_GROUPS, 'names no SGLang group',
                                'list the inventory groups whose rank 0 the router serves, e.g. [replica_a, replica_b]',
                                'the router'))
    workers, seen_hosts, seen_urls = [], {}, {}
    for description in descriptions or []:
        found, plan = check_description(description)
        name = str(description.get('cluster'))
        if plan is None:
            for item in errors(found):
                item = dict(item, message='group %s: %s' % (name, item['message']))
                problems.append(item)
            continue
        group = plan['groups'][plan['cluster']]
        for host in group['hosts']:
            if host in seen_hosts:
                problems.append(problem('router-host-in-two-groups', VAR_GROUPS,
                                        '%s is in group %s and in group %s' % (host, seen_hosts[host], name),
                                        'put each node in one SGLang group only', 'host ' + host, [host]))
            seen_hosts.setdefault(host, name)
        url = group['head_url']
        if url in seen_urls:
            problems.append(problem('router-same-worker-twice', VAR_GROUPS, 'groups %s and %s are both served at %s'
                                    % (seen_urls[url], name, url), 'list each group once', 'the router'))
        seen_urls.setdefault(url, name)
        # Every rank listens on the group's port (ranks >= 1 with SGLang's dummy health server).
        shared = [host for host in group['hosts'] if plan['nodes'][host]['management_address'] == str(router_address)]
        if router_address is not None and shared and group['port'] in router_ports:
            problems.append(problem('router-port-taken', VAR_PORT, 'the router and group %s\'s SGLang both listen on '
                                    'port %d of %s' % (name, group['port'], shared[0]),
                                    'give the router another port (sglang_router_port, sglang_router_metrics_port)',
                                    'host ' + shared[0], shared))
        workers.append({'group': name, 'url': url, 'model': group['model']['served_name'], 'head': group['head'],
                        'hosts': list(group['hosts']), 'config_file': group['config_file']})
    ports = list(router_ports)
    if len(ports) == 2 and ports[0] == ports[1]:
        problems.append(problem('router-port-taken', VAR_METRICS_PORT, 'is the router\'s own port %s' % ports[0],
                                'give the metrics another port than sglang_router_port', 'the router'))
    models = {}
    for worker in workers:
        models.setdefault(worker['model'], []).append(worker['group'])
    return {'workers': workers, 'models': models, 'problems': problems}


def _flag_values(key, value):
    if value is True:
        return ['--' + key]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        return ['--' + key] + [str(v) for v in value]
    return ['--' + key, str(value)]


def router_argv(workers, host, port, policy, metrics_host, metrics_port, log_level='info', extra=None):
    """The arguments of ``smg launch`` (the program not included), without the API key (the unit's environment file
    holds it: see the role's launcher). Raises ProblemsError for a policy SMG lacks, the metrics on the API's port, an
    owned flag or a malformed key in ``extra``."""
    problems = []
    extra = extra or {}
    if not isinstance(extra, dict):
        raise ProblemsError([problem('router-bad-extra-args', VAR_EXTRA, 'must be a dict of SMG flags, not %s'
                                     % type(extra).__name__, 'write it as {flag-name: value}', 'the router')], SUBJECT)
    if policy not in POLICIES:
        problems.append(problem('router-bad-policy', OWNED_FLAGS['policy'], 'is %r, not a policy of SMG %s'
                                % (policy, SMG_VERSION), 'use one of %s' % ', '.join(POLICIES), 'the router'))
    if port == metrics_port:
        problems.append(problem('router-port-clash', VAR_METRICS_PORT, 'is the API\'s port too (%s)' % (port,),
                                'give the metrics a port of their own, e.g. %d' % DEFAULT_METRICS_PORT, 'the router'))
    for key in extra:
        flag = str(key).lstrip('-').replace('_', '-')
        if flag in OWNED_FLAGS:
            problems.append(problem('router-owned-flag', '%s[%r]' % (VAR_EXTRA, key), '--%s is set by the role' % flag,
                                    'set %s instead' % OWNED_FLAGS[flag], 'the router'))
    if problems:
        raise ProblemsError(problems, SUBJECT)
    argv = ['--host', str(host), '--port', str(port), '--worker-urls'] + [w['url'] for w in workers]
    argv += ['--policy', str(policy), '--prometheus-host', str(metrics_host), '--prometheus-port', str(metrics_port),
             '--log-level', str(log_level), '--disable-tokenizer-autoload']
    for key in sorted(extra, key=str):
        argv += _flag_values(str(key).lstrip('-').replace('_', '-'), extra[key])
    return argv
