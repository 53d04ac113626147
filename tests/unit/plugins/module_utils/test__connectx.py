# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure logic of connectx_info against sysfs trees shaped like a DGX Spark's (tests/unit/sysfs.py)."""

from __future__ import annotations

import ast
import inspect
import json

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _connectx as cx
from ansible_collections.dgxspark.sglang.plugins.module_utils import _cx7
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes
from ansible_collections.dgxspark.sglang.tests.unit import sysfs

A, B = 'enp1s0f1np1', 'enP2p1s0f1np1'
PROBLEM_KEYS = {'code', 'variable', 'where', 'hosts', 'severity', 'what', 'fix', 'message'}


def ip_json(*links):
    """`ip -j addr show` output: lo first, then the given links, as iproute2 prints it (one line)."""
    return json.dumps([sysfs.LOOPBACK] + list(links), separators=(',', ':'))


HEALTHY_IP = ip_json(
    sysfs.ip_link(2, B, ipv4=['192.168.101.11/24']),
    sysfs.ip_link(3, A, ipv4=['192.168.100.11/24'], ipv6=['fd00:100::11/64']),
)


@pytest.mark.parametrize('name, twin, rdma', [
    (A, B, 'rocep1s0f1'),
    (B, A, 'roceP2p1s0f1'),
    ('enp1s0f0np0', 'enP2p1s0f0np0', 'rocep1s0f0'),
    ('enP2p1s0f0np0', 'enp1s0f0np0', 'roceP2p1s0f0'),
    ('enP7s7', None, None),             # the 10 GbE management port: no twin, no RDMA name
    ('enP3p1s0f1np1', None, 'roceP3p1s0f1'),  # only domain 2 is the other half
    ('enp1s0f0', None, None),  # a NIC name without a port suffix is not a CX7 netdev: no twin, no RDMA name
    ('eth0', None, None),
])
def test_names(name, twin, rdma):
    assert cx.twin_name(name) == twin
    assert cx.expected_rdma_name(name) == rdma


def test_naming_rules_come_from_cx7():
    """One home for each naming rule: _connectx applies _cx7's, it keeps no regex or constant of its own."""
    assert cx.twin_name is _cx7.twin_name and cx.expected_rdma_name is _cx7.expected_rdma_name
    for name in ('IFNAME_RE', '_PCI_NAME_RE', '_TWIN_DOMAIN', 'DEFAULT_INTERFACES'):
        assert not hasattr(cx, name), name
    assert (cx.DEFAULT_SPEED_MBPS, cx.MTU_MIN, cx.MTU_MAX) == (_cx7.DEFAULT_SPEED_MBPS, _cx7.MTU_MIN, _cx7.MTU_MAX)
    patterns = compiled_patterns(cx)
    assert patterns, 'expected at least the PCI address pattern'
    for pattern in patterns:
        assert not any(part in pattern for part in ('A-Za-z0-9_.:-', 'np', '{1,15}', '(?:P')), pattern


def compiled_patterns(module):
    """The literal patterns a module passes to re.compile."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'compile' and node.args \
                and isinstance(node.args[0], ast.Constant):
            found.append(node.args[0].value)
    return found


@pytest.mark.parametrize('interfaces, include_twins, expected', [
    ([A], True, [A, B]),
    ([B], True, [B, A]),
    ([A, B], True, [A, B]),
    ([A, 'enp1s0f0np0'], True, [A, B, 'enp1s0f0np0', 'enP2p1s0f0np0']),
    ([A], False, [A]),
    (['eth0'], True, ['eth0']),
])
def test_with_twins(interfaces, include_twins, expected):
    assert cx.with_twins(interfaces, include_twins) == expected


@pytest.mark.parametrize('interfaces, speed, mtu, errors', [
    ([A], 200000, None, []),
    ([A, B], 0, 9000, []),
    ([A], 200000, 68, []),
    ([A], 200000, 9216, []),
    ([], 200000, None, ['interfaces must name at least one interface']),
    (['en p1'], 200000, None, ["interfaces: 'en p1' is not a valid interface name"]),
    (['enp1s0f1np1xxxxx'], 200000, None, ["interfaces: 'enp1s0f1np1xxxxx' is not a valid"]),
    (['../../etc'], 200000, None, ["interfaces: '../../etc' is not a valid"]),
    ([A], -1, None, ['expected_speed_mbps must be 0 (no speed check) or more, got -1']),
    ([A], 200000, 9217, ['expected_mtu must be between 68 and 9216, got 9217']),
    ([A], 200000, 67, ['expected_mtu must be between 68 and 9216, got 67']),
])
def test_check_options(interfaces, speed, mtu, errors):
    got = cx.check_options(interfaces, speed, mtu)
    assert len(got) == len(errors), got
    for sentence, start in zip(got, errors):
        assert sentence.startswith(start), sentence


def test_parse_ip_addr_json_keeps_ipv4_and_global_ipv6():
    parsed = cx.parse_ip_addr_json(HEALTHY_IP)
    assert parsed[A] == {'ipv4': ['192.168.100.11/24'], 'ipv6': ['fd00:100::11/64']}  # fe80:: left out
    assert parsed[B] == {'ipv4': ['192.168.101.11/24'], 'ipv6': []}
    assert parsed['lo'] == {'ipv4': ['127.0.0.1/8'], 'ipv6': []}  # ::1 has scope host


def test_parse_ip_addr_json_interface_without_addresses():
    down = dict(sysfs.ip_link(2, B, operstate='DOWN'), addr_info=[])
    assert cx.parse_ip_addr_json(ip_json(down))[B] == {'ipv4': [], 'ipv6': []}


@pytest.mark.parametrize('text', ['', 'Object "addr" is unknown, try "ip help".', '{"ifname": "lo"}'])
def test_parse_ip_addr_json_rejects_other_output(text):
    with pytest.raises(ValueError):
        cx.parse_ip_addr_json(text)


def test_read_netdev_spark(tmp_path):
    root = sysfs.build_tree(str(tmp_path), sysfs.spark_pair())
    assert cx.read_netdev(root, A) == {
        'name': A, 'present': True, 'operstate': 'up', 'speed_mbps': 200000, 'mtu': 9000,
        'mac': '5a:e8:b3:97:c5:33', 'driver': 'mlx5_core', 'pci_address': '0000:01:00.1'}
    assert cx.read_netdev(root, B)['pci_address'] == '0002:01:00.1'


@pytest.mark.parametrize('speed, expected', [(sysfs.UNREADABLE, None), (-1, None), (13000, 13000)])
def test_read_netdev_speed(tmp_path, speed, expected):
    """speed reads EINVAL while the interface is administratively down and -1 when unknown."""
    root = sysfs.build_tree(str(tmp_path), sysfs.spark_pair(netdevs={A: {'speed': speed}}))
    assert cx.read_netdev(root, A)['speed_mbps'] == expected


def test_read_netdev_veth_and_missing(tmp_path):
    root = sysfs.build_tree(str(tmp_path), sysfs.veth_pair())
    veth = cx.read_netdev(root, A)
    assert (veth['driver'], veth['pci_address'], veth['speed_mbps']) == (None, None, 10000)
    assert cx.read_netdev(root, 'enp1s0f0np0') == {
        'name': 'enp1s0f0np0', 'present': False, 'operstate': None, 'speed_mbps': None, 'mtu': None,
        'mac': None, 'driver': None, 'pci_address': None}


def test_read_netdev_virtio_under_pci_function(tmp_path):
    """The layout of this development machine's eth0: device -> .../0000:00:03.0/virtio2."""
    pci = tmp_path / 'devices' / 'pci0000:00' / '0000:00:03.0'
    net = pci / 'virtio2' / 'net' / 'eth0'
    net.mkdir(parents=True)
    (tmp_path / 'bus' / 'virtio' / 'drivers' / 'virtio_net').mkdir(parents=True)
    (pci / 'virtio2' / 'driver').symlink_to('../../../../bus/virtio/drivers/virtio_net')
    (net / 'device').symlink_to('../../../virtio2')
    for key, value in (('operstate', 'up'), ('speed', '-1'), ('mtu', '1400'), ('address', '02:fc:00:00:00:01')):
        (net / key).write_text(value + '\n')
    (tmp_path / 'class' / 'net').mkdir(parents=True)
    (tmp_path / 'class' / 'net' / 'eth0').symlink_to('../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0')
    info = cx.read_netdev(str(tmp_path), 'eth0')
    assert (info['driver'], info['pci_address'], info['speed_mbps'], info['mtu']) == (
        'virtio_net', '0000:00:03.0', None, 1400)


@pytest.mark.parametrize('operstate, code', [
    ('down', 'cx7-link-down'),
    ('lowerlayerdown', 'cx7-link-down'),
    ('unknown', 'cx7-link-not-up'),
])
def test_report_operstates(tmp_path, operstate, code):
    result = report(tmp_path, sysfs.spark_pair(netdevs={A: {'operstate': operstate}}))
    assert codes(result['problems']) == [code]  # no speed complaint about a link that is not up
    [item] = result['problems']
    assert item['variable'] == 'spark_cx7_interfaces'
    assert A in item['what'] and operstate in item['what']
    assert 'ip link set %s up' % A in item['fix']


def test_find_rdma_devices_reads_device_net(tmp_path):
    spec = sysfs.spark_pair()
    # An RDMA device whose name breaks the naming rule is still found: sysfs is the truth.
    spec['rdma']['mlx5_1'] = spec['rdma'].pop('roceP2p1s0f1')
    root = sysfs.build_tree(str(tmp_path), spec)
    assert cx.find_rdma_devices(root) == {A: 'rocep1s0f1', B: 'mlx5_1'}
    assert cx.find_rdma_devices(str(tmp_path / 'nowhere')) == {}


def test_rdma_port_and_gids_skip_unused_entries(tmp_path):
    root = sysfs.build_tree(str(tmp_path), sysfs.spark_pair())
    port = cx.read_rdma_port(root, 'rocep1s0f1')
    assert (port['state'], port['link_layer']) == ('ACTIVE', 'Ethernet')
    assert [(g['index'], g['type']) for g in port['gids']] == [
        (0, 'IB/RoCE v1'), (1, 'RoCE v2'), (2, 'IB/RoCE v1'), (3, 'RoCE v2'), (4, 'IB/RoCE v1'), (5, 'RoCE v2')]
    assert port['gids'][0]['gid'] == 'fe80:0000:0000:0000:58e8:b3ff:fe97:c533'
    assert port['gids'][3]['gid'] == '0000:0000:0000:0000:0000:ffff:c0a8:640b'
    assert cx.roce_v2_gid_index(port['gids'], ['192.168.100.11/24']) == 3
    assert cx.roce_v2_gid_index(port['gids'], ['192.168.101.11/24']) is None
    assert cx.roce_v2_gid_index(port['gids'], None) is None


def report(tmp_path, spec, interfaces=(A,), ip=HEALTHY_IP, **kwargs):
    root = sysfs.build_tree(str(tmp_path), spec)
    addresses = cx.parse_ip_addr_json(ip) if ip is not None else None
    return cx.connectx_report(root, list(interfaces), addresses=addresses, **kwargs)


def test_report_healthy_spark_pair(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(), expected_mtu=9000)
    assert result['healthy'] is True and result['problems'] == []
    assert result['rdma_devices'] == ['rocep1s0f1', 'roceP2p1s0f1']
    first, second = result['interfaces']
    assert first == {
        'name': A, 'present': True, 'twin': B, 'operstate': 'up', 'speed_mbps': 200000, 'mtu': 9000,
        'mac': '5a:e8:b3:97:c5:33', 'driver': 'mlx5_core', 'pci_address': '0000:01:00.1',
        'ipv4': ['192.168.100.11/24'], 'ipv6': ['fd00:100::11/64'], 'rdma_device': 'rocep1s0f1',
        'rdma_port_state': 'ACTIVE', 'link_layer': 'Ethernet', 'roce_v2_gid_index': 3, 'problems': []}
    assert (second['name'], second['rdma_device'], second['roce_v2_gid_index']) == (B, 'roceP2p1s0f1', 3)


SAME_SUBNET_IP = ip_json(
    sysfs.ip_link(2, B, ipv4=['192.168.100.12/24']),
    sysfs.ip_link(3, A, ipv4=['192.168.100.11/24'], ipv6=['fd00:100::11/64']),
)
TWIN_NO_IPV4_IP = ip_json(sysfs.ip_link(2, B), sysfs.ip_link(3, A, ipv4=['192.168.100.11/24']))


SPEED, MTU, IFACES, ADDRS, SUBNETS = (
    'spark_cx7_expected_speed_mbps', 'cx7_network_mtu', 'spark_cx7_interfaces', 'spark_cx7_addresses', 'spark_cx7_subnets')


# Each expected problem is (code, variable, the interface its `what` names).
@pytest.mark.parametrize('spec, kwargs, problems', [
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'speed': 13000}}), {},
        [('cx7-speed-degraded', SPEED, A)],
        id='degraded_13g'),
    pytest.param(
        sysfs.spark_pair(netdevs={B: {'operstate': 'down', 'speed': sysfs.UNREADABLE}},
                         rdma={B: {'state': '1: DOWN', 'phys_state': '3: Disabled'}}), {},
        [('cx7-link-down', IFACES, B), ('cx7-rdma-port-down', IFACES, B)],
        id='twin_down'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'mtu': 1500}}), {'expected_mtu': 9000},
        [('cx7-mtu-mismatch', MTU, A)],
        id='mtu_mismatch'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'mtu': 1500}}), {},
        [], id='mtu_not_checked_by_default'),
    pytest.param(
        sysfs.spark_pair(rdma={A: None, B: None}), {},
        [('cx7-no-rdma-device', IFACES, A), ('cx7-no-rdma-device', IFACES, B)],
        id='no_mlx5_ib'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B], ['192.168.100.12'])}}),
        {'ip': SAME_SUBNET_IP},
        [('cx7-shared-subnet', SUBNETS, A)],
        id='twins_one_subnet'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B])}}), {'ip': TWIN_NO_IPV4_IP},
        [('cx7-no-ipv4', ADDRS, B)],
        id='twin_without_ipv4'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B])}}), {},
        [('cx7-no-roce-gid', IFACES, B)],
        id='address_without_roce_gid'),
    pytest.param(
        sysfs.veth_pair(), {},
        [('cx7-speed-degraded', SPEED, A), ('cx7-no-rdma-device', IFACES, A),
         ('cx7-speed-degraded', SPEED, B), ('cx7-no-rdma-device', IFACES, B)],
        id='lab_veths'),
    pytest.param(
        sysfs.veth_pair(), {'expected_speed_mbps': 0},
        [('cx7-no-rdma-device', IFACES, A), ('cx7-no-rdma-device', IFACES, B)],
        id='lab_veths_speed_check_off'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'speed': -1}}), {},
        [('cx7-speed-unknown', SPEED, A)],
        id='up_without_speed'),
    pytest.param(
        sysfs.spark_pair(), {'interfaces': ['enp1s0f0np0']},
        [('cx7-interface-missing', IFACES, 'enp1s0f0np0'), ('cx7-interface-missing', IFACES, 'enP2p1s0f0np0')],
        id='other_port_not_there'),
    pytest.param(
        {'netdevs': {A: sysfs.spark_netdev(A)}, 'rdma': {'rocep1s0f1': sysfs.spark_rdma(A)}}, {},
        [('cx7-interface-missing', IFACES, B)],
        id='twin_missing'),
    pytest.param(
        {'netdevs': {A: sysfs.spark_netdev(A)}, 'rdma': {'rocep1s0f1': sysfs.spark_rdma(A)}}, {'include_twins': False},
        [], id='twin_missing_not_asked'),
    pytest.param(
        sysfs.spark_pair(), {'ip': None, 'address_problem': cx.unreadable_addresses('ip (iproute2) not found')},
        [('cx7-addresses-unreadable', 'iproute2', None)],
        id='no_ip_binary'),
    pytest.param(
        sysfs.spark_pair(), {'ip': None, 'address_problem': 'ip (iproute2) not found'},
        [('cx7-addresses-unreadable', 'iproute2', None)],
        id='address_problem_as_a_sentence'),
])
def test_report_problems(tmp_path, spec, kwargs, problems):
    result = report(tmp_path, spec, **kwargs)
    assert [(p['code'], p['variable']) for p in result['problems']] == [(code, var) for code, var, _ifname in problems]
    for item, (_code, _var, ifname) in zip(result['problems'], problems):
        assert set(item) == PROBLEM_KEYS
        assert (item['where'], item['hosts'], item['severity']) == (None, [], 'error')  # the caller places it
        assert item['what'] and item['fix'] and item['message'].startswith(item['variable'] + ': ')
        if ifname:
            assert ifname in item['what'], item
    assert result['healthy'] is (not problems)
    per_interface = [p for info in result['interfaces'] for p in info['problems']]
    assert all(p in result['problems'] for p in per_interface)


def test_report_degraded_speed_names_both_speeds(tmp_path):
    [item] = report(tmp_path, sysfs.spark_pair(netdevs={A: {'speed': 13000}}))['problems']
    assert '13000' in item['what'] and '200000' in item['what']


def test_report_missing_rdma_device_names_the_expected_one(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(rdma={A: None, B: None}))
    first, second = result['problems']
    assert 'rocep1s0f1' in first['what'] and 'roceP2p1s0f1' in second['what']


def test_report_twin_down_keeps_rdma_devices_and_states(tmp_path):
    spec = sysfs.spark_pair(netdevs={B: {'operstate': 'down', 'speed': sysfs.UNREADABLE}},
                            rdma={B: {'state': '1: DOWN'}})
    result = report(tmp_path, spec)
    assert result['rdma_devices'] == ['rocep1s0f1', 'roceP2p1s0f1']
    down = result['interfaces'][1]
    assert (down['operstate'], down['speed_mbps'], down['rdma_port_state']) == ('down', None, 'DOWN')


def test_report_shared_subnet_lands_on_both_twins(tmp_path):
    spec = sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B], ['192.168.100.12'])}})
    first, second = report(tmp_path, spec, ip=SAME_SUBNET_IP)['interfaces']
    assert first['problems'] == second['problems']
    assert codes(first['problems']) == ['cx7-shared-subnet']
    [item] = first['problems']
    assert A in item['what'] and B in item['what'] and '192.168.100.0/24' in item['what']
    assert 'twin' in item['fix']  # the two are twins, so the fix speaks of twins
    assert second['roce_v2_gid_index'] == 3


def test_report_without_addresses(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(), ip=None)
    info = result['interfaces'][0]
    assert (info['ipv4'], info['ipv6'], info['roce_v2_gid_index']) == (None, None, None)
    assert result['healthy'] is True  # nothing said about addresses when none were read and no problem given


def test_report_problems_survive_json(tmp_path):
    """Problems travel through Ansible facts: plain dicts, equal after a JSON round trip."""
    result = report(tmp_path, sysfs.veth_pair())
    assert json.loads(json.dumps(result['problems'])) == result['problems']


def test_report_rdma_devices_in_interface_order_deduplicated(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(), interfaces=[B, A, B])
    assert [i['name'] for i in result['interfaces']] == [B, A]
    assert result['rdma_devices'] == ['roceP2p1s0f1', 'rocep1s0f1']
