# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_firewall.py: the firewall role's nftables table, from the cluster plan.

Where this machine has nft and root, the text is also loaded into a scratch network namespace by the real nft: it
parses, it replaces only its own table (a foreign one, standing in for Docker's, survives two loads), and the rules
come out in the order that makes them mean what the docstring says.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _firewall
from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import plan_cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._firewall import FirewallError, render_ruleset, ruleset_from_plan

TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SUBNETS = ['192.168.100.0/24', '192.168.101.0/24']
API = {'name': 'sglang-api', 'port': 30000, 'protocol': 'tcp', 'sources': ['10.0.0.0/24']}


def rules(text):
    """The rules of the input chain, one string each, in order."""
    body = text.split('policy accept;\n', 1)[1].split('\n  }\n', 1)[0]
    return [line.strip() for line in body.splitlines()]


def index(lines, start):
    found = [i for i, line in enumerate(lines) if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_the_text_replaces_its_own_table_in_one_transaction():
    text = render_ruleset(TWINS, SUBNETS, [API])
    commands = [line for line in text.splitlines() if line and not line.startswith('#')]
    # add (so that delete never fails), delete, define: nothing that names another table, no flush.
    assert commands[:3] == ['table inet dgxspark', 'delete table inet dgxspark', 'table inet dgxspark {']
    assert not [line for line in commands if 'flush' in line] and ' '.join(commands).count('table ') == 3


def test_order_cx7_and_ssh_first_then_each_exposed_port_from_its_sources_then_everything_else_dropped():
    exporter_entry = dict(API, name='node-exporter', port=9100, sources=['10.0.9.7/32'])
    lines = rules(render_ruleset(TWINS, SUBNETS, [API, exporter_entry], trusted_interfaces=['docker0']))
    assert lines[0].startswith('iif "lo" accept') and lines[1].startswith('ct state established,related accept')
    # The two /24 of the twins, merged into the /23 they make.
    cx7 = index(lines, 'iifname { "enp1s0f1np1", "enP2p1s0f1np1" } ip saddr 192.168.100.0/23 accept')
    ssh = index(lines, 'tcp dport 22 accept')
    api = index(lines, 'tcp dport 30000 ip saddr 10.0.0.0/24 accept')
    exporter = index(lines, 'tcp dport 9100 ip saddr 10.0.9.7/32 accept')
    closed = index(lines, 'tcp dport { 9100, 30000 } counter drop')
    trusted = index(lines, 'iifname "docker0" accept')
    assert cx7 < api and ssh < api and api < closed and exporter < closed < trusted < len(lines) - 1
    assert lines[-1].startswith('counter drop')


def test_sources_by_family_merged_and_none_means_nobody():
    lines = rules(render_ruleset(TWINS, SUBNETS, [dict(API, sources=['10.0.0.0/24', '10.0.0.7', '10.0.1.0/24',
                                                                     'fd00::/64'])]))
    # 10.0.0.7 lies inside 10.0.0.0/24, which joins 10.0.1.0/24: one /23 (nft refuses or merges overlaps by version).
    assert 'tcp dport 30000 ip saddr 10.0.0.0/23 accept comment "sglang-api from its sources only"' in lines
    assert 'tcp dport 30000 ip6 saddr fd00::/64 accept comment "sglang-api from its sources only"' in lines
    nobody = rules(render_ruleset(TWINS, SUBNETS, [dict(API, sources=[])]))
    assert not [line for line in nobody if 'dport 30000' in line and 'accept' in line]
    assert 'tcp dport 30000 counter drop comment "exposed ports, any other source"' in nobody


def test_ssh_ports_are_left_open_and_deduplicated():
    assert 'tcp dport { 22, 2222 } accept comment "SSH, untouched"' in rules(
        render_ruleset(TWINS, SUBNETS, [API], ssh_ports=[22, 2222, 22]))


@pytest.mark.parametrize('kwargs, words', [
    ({'exposed': [dict(API, port=0)]}, 'port 0 is not a port number'),
    ({'exposed': [dict(API, port=True)]}, 'port True is not a port number'),
    ({'exposed': [dict(API, name='API port')]}, "'API port'"),
    ({'exposed': [dict(API, protocol='sctp')]}, "protocol 'sctp'"),
    ({'exposed': [dict(API, sources='10.0.0.0/24')]}, 'sources must be a list'),
    ({'exposed': [dict(API, sources=['10.0.0.0/33'])]}, "source '10.0.0.0/33' is not a network"),
    ({'trusted_interfaces': ['docker 0']}, "'docker 0' is not an interface name"),
    ({'trusted_interfaces': ['*']}, "'*' is not an interface name"),
    ({'table': 'my-table'}, "firewall_table: 'my-table'"),
    ({'ssh_ports': [70000]}, 'firewall_ssh_ports: port 70000'),
])
def test_bad_values_are_refused_naming_them_and_the_fix(kwargs, words):
    args = dict({'interfaces': TWINS, 'subnets': SUBNETS, 'exposed': [API]}, **kwargs)
    with pytest.raises(FirewallError, match='Fix|must be|not one of') as err:
        render_ruleset(**args)
    assert words in str(err.value)


def test_prefix_wildcards_are_trusted_interfaces():
    assert 'iifname "br-*" accept comment "trusted interface"' in rules(
        render_ruleset(TWINS, SUBNETS, [API], trusted_interfaces=['br-*']))


def _plan(**group_vars):
    base = {'spark_cx7_subnets': SUBNETS, 'sglang_server_model': 'Qwen/Qwen2.5-0.5B-Instruct'}
    hosts = [{'name': 'spark-0%d' % i, 'vars': dict(base, ansible_host='10.0.0.1%d' % i, **group_vars)}
             for i in (1, 2)]
    return plan_cluster({'cluster': 'spark', 'hosts': hosts, 'gpus_per_node': 1})


def test_the_plan_exposes_the_api_and_node_exporter_to_spark_allowed_cidrs_and_to_everyone_when_it_is_empty():
    plan = _plan(spark_allowed_cidrs=['10.0.0.0/24', '10.0.5.5'], sglang_server_port=30001)
    sources = ['10.0.0.0/24', '10.0.5.5/32']
    assert plan['exposed_ports'] == [
        {'name': 'sglang-api', 'port': 30001, 'protocol': 'tcp', 'sources': sources, 'variable': 'spark_allowed_cidrs'},
        {'name': 'node-exporter', 'port': 9100, 'protocol': 'tcp', 'sources': sources, 'variable': 'spark_allowed_cidrs'}]
    assert _plan()['exposed_ports'][0]['sources'] == ['0.0.0.0/0', '::/0']
    lines = rules(ruleset_from_plan(plan))
    assert 'tcp dport 30001 ip saddr { 10.0.0.0/24, 10.0.5.5/32 } accept comment "sglang-api from its sources only"' \
        in lines


def test_firewall_open_ports_add_to_the_plans_and_a_malformed_list_names_the_variable():
    plan = _plan(spark_allowed_cidrs=['10.0.0.0/24'])
    lines = rules(ruleset_from_plan(plan, open_ports=[{'name': 'router', 'port': 8000, 'sources': ['10.0.1.0/24']}]))
    assert 'tcp dport 8000 ip saddr 10.0.1.0/24 accept comment "router from its sources only"' in lines
    assert any(line.startswith('tcp dport { 8000, 9100, 30000 } counter drop') for line in lines), lines
    with pytest.raises(FirewallError, match='firewall_open_ports'):
        ruleset_from_plan(plan, open_ports={'router': 8000})


def test_a_plan_without_exposed_ports_names_the_fix():
    with pytest.raises(FirewallError, match='run the dgxspark.sglang.preflight role first'):
        ruleset_from_plan({'interfaces': TWINS, 'subnets': SUBNETS})


NFT = shutil.which('nft')
UNSHARE = shutil.which('unshare')


@pytest.mark.skipif(not (NFT and UNSHARE and os.geteuid() == 0), reason='needs nft, unshare and root')
def test_real_nft_loads_it_twice_and_leaves_a_foreign_table_alone():
    text = ruleset_from_plan(_plan(spark_allowed_cidrs=['10.0.0.0/24', 'fd00::/64']), trusted_interfaces=['docker0'])
    script = ('nft add table ip docker_stand_in && nft add chain ip docker_stand_in FORWARD && '
              'nft -f - <<"EOF"\n%sEOF\nnft -f - <<"EOF"\n%sEOF\nnft list ruleset') % (text, text)
    out = subprocess.run([UNSHARE, '--net', '--', 'sh', '-c', script], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert 'table ip docker_stand_in' in out.stdout and 'chain FORWARD' in out.stdout
    assert out.stdout.count('table inet dgxspark') == 1
    assert 'tcp dport 30000 ip saddr 10.0.0.0/24 accept' in out.stdout
    assert 'tcp dport 30000 ip6 saddr fd00::/64 accept' in out.stdout


def test_module_defaults():
    assert (_firewall.FAMILY, _firewall.DEFAULT_TABLE) == ('inet', 'dgxspark')
