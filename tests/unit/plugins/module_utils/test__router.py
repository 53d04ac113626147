"""The groups behind SGLang's router and its command line (plugins/module_utils/_router.py), and the filters over it.

Problems are compared by code, variable and host; the filter's error is checked to carry each problem's message.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter import router as router_filter
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, codes
from ansible_collections.dgxspark.sglang.plugins.module_utils._router import (
    DEFAULT_POLICY, OWNED_FLAGS, POLICIES, SMG_VERSION, router_argv, router_workers)

FILTERS = router_filter.FilterModule().filters()
SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']
SPECS = pathlib.Path(__file__).resolve().parents[4] / 'roles' / 'sglang_router' / 'meta' / 'argument_specs.yml'


def description(name, hosts, **group_vars):
    """One group as the preflight role describes it: hosts (name, management address) in inventory order."""
    base = {'sglang_server_model': 'Qwen/Qwen2.5-7B-Instruct', 'spark_cx7_subnets': SUBNETS}
    base.update(group_vars)
    return {'cluster': name, 'gpus_per_node': 1,
            'hosts': [{'name': host, 'vars': dict(base, ansible_host=address)} for host, address in hosts]}


def test_two_by_two_sparks_and_a_replica_with_another_model():
    result = router_workers([
        description('pair_a', [('s1', '10.0.0.11'), ('s2', '10.0.0.12')]),
        description('pair_b', [('s3', '10.0.0.13'), ('s4', '10.0.0.14')]),
        description('small', [('s5', '10.0.0.15')], sglang_server_args={'served-model-name': 'small-model'},
                    sglang_server_port=30001),
    ], router_address='10.0.0.11', router_ports=[8000, 29000])
    assert result['problems'] == []
    assert [(w['group'], w['url'], w['head'], w['model']) for w in result['workers']] == [
        ('pair_a', 'http://10.0.0.11:30000', 's1', 'Qwen/Qwen2.5-7B-Instruct'),
        ('pair_b', 'http://10.0.0.13:30000', 's3', 'Qwen/Qwen2.5-7B-Instruct'),
        ('small', 'http://10.0.0.15:30001', 's5', 'small-model'),
    ]
    assert result['models'] == {'Qwen/Qwen2.5-7B-Instruct': ['pair_a', 'pair_b'], 'small-model': ['small']}
    assert result['workers'][0]['config_file'] == '/etc/sglang/server.yaml'


def test_a_tls_group_is_reached_over_https():
    result = router_workers([description('tls', [('s1', '10.0.0.11')],
                                         sglang_server_args={'ssl-certfile': '/c.pem', 'ssl-keyfile': '/k.pem'})])
    assert result['workers'][0]['url'] == 'https://10.0.0.11:30000'


def test_every_problem_at_once():
    result = router_workers([
        description('a', [('s1', '10.0.0.11')]),
        description('b', [('s1', '10.0.0.11')]),                       # the same node again
        description('bad', [('s9', '10.0.0.19')], sglang_server_model=''),  # a group that cannot be planned
    ], router_address='10.0.0.11', router_ports=[30000, 30000])
    found = [(p['code'], p['variable'], p['hosts']) for p in result['problems']]
    assert ('router-host-in-two-groups', 'sglang_router_groups', ['s1']) in found
    assert ('router-same-worker-twice', 'sglang_router_groups', []) in found
    assert ('router-port-taken', 'sglang_router_port', ['s1']) in found
    assert ('router-port-taken', 'sglang_router_metrics_port', []) in found
    assert any(p['variable'] == 'sglang_server_model' and p['message'].startswith('group bad: ')
               for p in result['problems'])
    assert [w['group'] for w in result['workers']] == ['a', 'b']
    assert codes(router_workers([])['problems']) == ['router-no-groups']
    # A rank >= 1 listens on the group's port too (SGLang's dummy health server).
    pair = router_workers([description('pair', [('s1', '10.0.0.11'), ('s2', '10.0.0.12')])],
                          router_address='10.0.0.12', router_ports=[30000, 29000])
    assert [(p['code'], p['hosts']) for p in pair['problems']] == [('router-port-taken', ['s2'])]


def test_the_argv_has_the_workers_policy_metrics_and_no_tokenizer_no_key():
    workers = router_workers([description('a', [('s1', '10.0.0.11')]), description('b', [('s2', '10.0.0.12')])])['workers']
    argv = router_argv(workers, '0.0.0.0', 8000, 'round_robin', '127.0.0.1', 29000, 'warn',
                       {'worker-startup-check-interval': 5, 'upstream-http2': True, 'disable-retries': False,
                        'model-alias': ['a=b', 'c=d']})
    assert argv == ['--host', '0.0.0.0', '--port', '8000', '--worker-urls', 'http://10.0.0.11:30000',
                    'http://10.0.0.12:30000', '--policy', 'round_robin', '--prometheus-host', '127.0.0.1',
                    '--prometheus-port', '29000', '--log-level', 'warn', '--disable-tokenizer-autoload',
                    '--model-alias', 'a=b', 'c=d', '--upstream-http2', '--worker-startup-check-interval', '5']
    assert not any('key' in token for token in argv)


@pytest.mark.parametrize('flag', sorted(OWNED_FLAGS))
def test_an_owned_flag_in_the_extras_is_refused_with_the_variable_to_set(flag):
    with pytest.raises(ProblemsError) as err:
        router_argv([], '0.0.0.0', 8000, 'cache_aware', '0.0.0.0', 29000, extra={flag.replace('-', '_'): 'x'})
    assert codes(err.value.problems) == ['router-owned-flag']
    with pytest.raises(AnsibleFilterError, match=r'router-owned-flag'):
        FILTERS['router_argv']([], '0.0.0.0', 8000, 'cache_aware', '0.0.0.0', 29000, extra={flag: 'x'})


def test_the_filter_reads_the_groups_from_the_inventory():
    hostvars = {'s1': {'ansible_host': '10.0.0.11', 'sglang_server_model': 'm', 'spark_cx7_subnets': SUBNETS},
                's2': {'ansible_host': '10.0.0.12', 'sglang_server_model': 'm', 'spark_cx7_subnets': SUBNETS}}
    result = FILTERS['router_workers'](hostvars, {'a': ['s1'], 'b': ['s2']}, ['a', 'b'], '10.0.0.11', [8000, 29000])
    assert [w['url'] for w in result['workers']] == ['http://10.0.0.11:30000', 'http://10.0.0.12:30000']
    assert result['message'] == ''
    empty = FILTERS['router_workers'](hostvars, {'a': ['s1'], 'none': []}, ['a', 'none'])
    assert 'group-empty' in empty['message'] and codes(empty['problems']) == ['group-empty']


def test_filters_are_registered_with_docs():
    here = pathlib.Path(router_filter.__file__).resolve().parent
    for name in FILTERS:
        doc = yaml.safe_load((here / (name + '.yml')).read_text())
        assert doc['DOCUMENTATION']['name'] == name


def test_the_roles_policy_choices_and_version_are_smgs():
    # SMG 1.13.0's `smg launch --help`: --policy {random,round_robin,passthrough,cache_aware,power_of_two,least_load,
    # manual,consistent_hashing,prefix_hash}, default cache_aware. Both roles that run SMG offer exactly those.
    assert set(POLICIES) == {'random', 'round_robin', 'passthrough', 'cache_aware', 'power_of_two',
                             'least_load', 'manual', 'consistent_hashing', 'prefix_hash'}
    option = yaml.safe_load(SPECS.read_text())['argument_specs']['main']['options']['sglang_router_policy']
    assert option['default'] == DEFAULT_POLICY and option['choices'] == list(POLICIES)
    kubernetes = yaml.safe_load((SPECS.parents[2] / 'kubernetes/meta/argument_specs.yml').read_text())
    option = kubernetes['argument_specs']['main']['options']['kubernetes_router_policy']
    assert option['default'] == DEFAULT_POLICY and option['choices'] == list(POLICIES)
    package = yaml.safe_load((SPECS.parents[1] / 'defaults/main.yml').read_text())['sglang_router_package']
    assert package == 'smg==' + SMG_VERSION
