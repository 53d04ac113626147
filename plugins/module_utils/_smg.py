# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The command line of SGLang's router, SMG (``smg`` on PyPI, pinned at ``SMG_VERSION``): one home for its flags.

SGLang 0.5.23's README points to SMG (Shepherd Model Gateway) for routing and load balancing; ``sglang-router`` (0.3)
is the older one. The flags below are SMG's documented ones (docs/reference/configuration.md of lightseekorg/smg):
``--worker-urls`` (space-separated), ``--policy`` (default ``cache_aware``), ``--host``, ``--port``,
``--prometheus-host``/``--prometheus-port`` (its own metrics port, 29000 by default), ``--api-key`` (the key SMG
sends to the workers) and ``--disable-tokenizer-autoload`` (no tokenizer is fetched from the hub when a worker
registers: the nodes run offline, and so does the router).

Pure functions over plain values (no Ansible objects); problems carry a code (``_problems.problem``).
"""

from __future__ import annotations

import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, problem

SMG_VERSION = '1.13.0'
POLICIES = ('random', 'round_robin', 'cache_aware', 'power_of_two', 'prefix_hash', 'consistent_hashing', 'bucket',
            'manual')
DEFAULT_POLICY = 'cache_aware'
DEFAULT_PORT = 30000
DEFAULT_METRICS_PORT = 29000
SUBJECT = 'The SGLang router (SMG %s)' % SMG_VERSION

_URL = re.compile(r'^https?://[^\s/]+(:\d{1,5})?/?$')


def _port_problem(value, variable):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return problem('router-bad-port', variable, 'is %r, not a TCP port' % (value,), 'use a port from 1 to 65535')
    return None


def smg_argv(worker_urls, policy=DEFAULT_POLICY, host='0.0.0.0', port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT,
             api_key=None, variables=None):
    """The arguments of ``smg`` (the program not included) for a router in front of ``worker_urls``.

    ``api_key``: the token to pass as ``--api-key`` (a reference such as Kubernetes' ``$(VAR)`` where the caller keeps
    the key itself off the rendered text), None for none. ``variables`` names the inventory variables of the values
    (``policy``, ``port``, ``metrics_port``, ``worker_urls``) in the problems. Raises ProblemsError with every problem.
    """
    names = dict({'policy': 'policy', 'port': 'port', 'metrics_port': 'metrics_port', 'worker_urls': 'worker_urls'},
                 **(variables or {}))
    problems = []
    urls = list(worker_urls) if isinstance(worker_urls, (list, tuple)) else None
    if not urls:
        problems.append(problem('router-no-workers', names['worker_urls'], 'the router has no worker to route to',
                                'give it at least one SGLang group'))
    else:
        for url in urls:
            if not isinstance(url, str) or not _URL.match(url):
                problems.append(problem('router-bad-worker-url', names['worker_urls'],
                                        '%r is not a worker URL (http://HOST:PORT)' % (url,),
                                        'use the rank-0 URL of each group'))
    if policy not in POLICIES:
        problems.append(problem('router-bad-policy', names['policy'], 'is %r, not a policy of SMG %s' % (policy, SMG_VERSION),
                                'use one of %s (cache_aware by default)' % ', '.join(POLICIES)))
    for value, key in ((port, 'port'), (metrics_port, 'metrics_port')):
        item = _port_problem(value, names[key])
        if item:
            problems.append(item)
    if not problems and port == metrics_port:
        problems.append(problem('router-port-clash', names['metrics_port'], 'is the same port as the API (%d)' % port,
                                'give the metrics their own port, e.g. %d' % DEFAULT_METRICS_PORT))
    if problems:
        raise ProblemsError(problems, SUBJECT)
    argv = ['--worker-urls'] + urls + ['--policy', policy, '--host', host, '--port', str(port),
                                       '--prometheus-host', host, '--prometheus-port', str(metrics_port),
                                       '--disable-tokenizer-autoload']
    if api_key is not None:
        argv += ['--api-key', api_key]
    return argv
