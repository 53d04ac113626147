# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure logic of connectx_info against sysfs trees shaped like a DGX Spark's (tests/unit/sysfs.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _connectx as cx
from ansible_collections.dgxspark.sglang.tests.unit import sysfs

A, B = 'enp1s0f1np1', 'enP2p1s0f1np1'


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
    ('enp1s0f0', None, 'rocep1s0f0'),  # a NIC name without a port suffix has no twin
    ('eth0', None, None),
])
def test_names(name, twin, rdma):
    assert cx.twin_name(name) == twin
    assert cx.expected_rdma_name(name) == rdma


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


@pytest.mark.parametrize('operstate, sentence', [
    ('down', 'enp1s0f1np1: link is down (operstate down); check the cable and `ip link set enp1s0f1np1 up`'),
    ('lowerlayerdown', 'enp1s0f1np1: link is down (operstate lowerlayerdown); check the cable and '
                       '`ip link set enp1s0f1np1 up`'),
    ('unknown', 'enp1s0f1np1: link is not up (operstate unknown); check the cable and `ip link set enp1s0f1np1 up`'),
])
def test_report_operstates(tmp_path, operstate, sentence):
    result = report(tmp_path, sysfs.spark_pair(netdevs={A: {'operstate': operstate}}))
    assert result['problems'] == [sentence]  # no speed complaint about a link that is not up


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


@pytest.mark.parametrize('spec, kwargs, problems', [
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'speed': 13000}}), {},
        ['enp1s0f1np1: speed 13000 Mb/s is below the expected 200000 Mb/s (degraded link; reseat the cable '
         'or check the peer)'],
        id='degraded_13g'),
    pytest.param(
        sysfs.spark_pair(netdevs={B: {'operstate': 'down', 'speed': sysfs.UNREADABLE}},
                         rdma={B: {'state': '1: DOWN', 'phys_state': '3: Disabled'}}), {},
        ['enP2p1s0f1np1: link is down (operstate down); check the cable and `ip link set enP2p1s0f1np1 up`',
         'enP2p1s0f1np1: RDMA port roceP2p1s0f1/1 is DOWN, expected ACTIVE'],
        id='twin_down'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'mtu': 1500}}), {'expected_mtu': 9000},
        ['enp1s0f1np1: MTU 1500, expected 9000; set the same MTU on both nodes (netplan `mtu: 9000`)'],
        id='mtu_mismatch'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'mtu': 1500}}), {},
        [], id='mtu_not_checked_by_default'),
    pytest.param(
        sysfs.spark_pair(rdma={A: None, B: None}), {},
        ['enp1s0f1np1: no RDMA device (expected rocep1s0f1; is mlx5_ib loaded?)',
         'enP2p1s0f1np1: no RDMA device (expected roceP2p1s0f1; is mlx5_ib loaded?)'],
        id='no_mlx5_ib'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B], ['192.168.100.12'])}}),
        {'ip': SAME_SUBNET_IP},
        ['enp1s0f1np1 and enP2p1s0f1np1 share subnet 192.168.100.0/24; give each twin its own subnet'],
        id='twins_one_subnet'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B])}}), {'ip': TWIN_NO_IPV4_IP},
        ['enP2p1s0f1np1: no IPv4 address; give it one in its own subnet (e.g. in /etc/netplan/40-cx7.yaml)'],
        id='twin_without_ipv4'),
    pytest.param(
        sysfs.spark_pair(rdma={B: {'gids': sysfs.roce_gids(sysfs.MAC[B])}}), {},
        ['enP2p1s0f1np1: no RoCE v2 GID on roceP2p1s0f1 matches 192.168.101.11/24; check `rdma link` and the address'],
        id='address_without_roce_gid'),
    pytest.param(
        sysfs.veth_pair(), {},
        ['enp1s0f1np1: speed 10000 Mb/s is below the expected 200000 Mb/s (degraded link; reseat the cable '
         'or check the peer)',
         'enp1s0f1np1: no RDMA device (expected rocep1s0f1; is mlx5_ib loaded?)',
         'enP2p1s0f1np1: speed 10000 Mb/s is below the expected 200000 Mb/s (degraded link; reseat the cable '
         'or check the peer)',
         'enP2p1s0f1np1: no RDMA device (expected roceP2p1s0f1; is mlx5_ib loaded?)'],
        id='lab_veths'),
    pytest.param(
        sysfs.veth_pair(), {'expected_speed_mbps': 0},
        ['enp1s0f1np1: no RDMA device (expected rocep1s0f1; is mlx5_ib loaded?)',
         'enP2p1s0f1np1: no RDMA device (expected roceP2p1s0f1; is mlx5_ib loaded?)'],
        id='lab_veths_speed_check_off'),
    pytest.param(
        sysfs.spark_pair(netdevs={A: {'speed': -1}}), {},
        ['enp1s0f1np1: link speed is not reported, expected 200000 Mb/s; check `ethtool enp1s0f1np1`'],
        id='up_without_speed'),
    pytest.param(
        sysfs.spark_pair(), {'interfaces': ['enp1s0f0np0']},
        ['enp1s0f0np0: interface not found; check the name with `ip -br link`',
         'enP2p1s0f0np0: interface not found; check the name with `ip -br link`'],
        id='other_port_not_there'),
    pytest.param(
        {'netdevs': {A: sysfs.spark_netdev(A)}, 'rdma': {'rocep1s0f1': sysfs.spark_rdma(A)}}, {},
        ['enP2p1s0f1np1: interface not found; check the name with `ip -br link`'],
        id='twin_missing'),
    pytest.param(
        {'netdevs': {A: sysfs.spark_netdev(A)}, 'rdma': {'rocep1s0f1': sysfs.spark_rdma(A)}}, {'include_twins': False},
        [], id='twin_missing_not_asked'),
    pytest.param(
        sysfs.spark_pair(), {'ip': None, 'address_problem': 'cannot read addresses: ip (iproute2) not found'},
        ['cannot read addresses: ip (iproute2) not found'],
        id='no_ip_binary'),
])
def test_report_problems(tmp_path, spec, kwargs, problems):
    result = report(tmp_path, spec, **kwargs)
    assert result['problems'] == problems
    assert result['healthy'] is (not problems)
    per_interface = [p for info in result['interfaces'] for p in info['problems']]
    assert all(p in result['problems'] for p in per_interface)


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
    assert first['problems'] == second['problems'] == [
        'enp1s0f1np1 and enP2p1s0f1np1 share subnet 192.168.100.0/24; give each twin its own subnet']
    assert second['roce_v2_gid_index'] == 3


def test_report_without_addresses(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(), ip=None)
    info = result['interfaces'][0]
    assert (info['ipv4'], info['ipv6'], info['roce_v2_gid_index']) == (None, None, None)
    assert result['healthy'] is True  # nothing said about addresses when none were read and no problem given


def test_report_rdma_devices_in_interface_order_deduplicated(tmp_path):
    result = report(tmp_path, sysfs.spark_pair(), interfaces=[B, A, B])
    assert [i['name'] for i in result['interfaces']] == [B, A]
    assert result['rdma_devices'] == ['roceP2p1s0f1', 'rocep1s0f1']
