# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build fake sysfs trees shaped like a DGX Spark's, for the connectx tests.

The layout follows the kernel's (and FACTS.md):

    devices/pci0000:00/0000:00:00.0/0000:01:00.1/            the PCI function
        driver -> ../../../../bus/pci/drivers/mlx5_core
        net/enp1s0f1np1/{operstate,speed,mtu,address}
        net/enp1s0f1np1/device -> ../../                     back to the PCI function
        infiniband/rocep1s0f1/device -> ../../               so device/net/<if> is the netdev
        infiniband/rocep1s0f1/ports/1/{state,phys_state,link_layer}
        infiniband/rocep1s0f1/ports/1/gids/<i>, gid_attrs/{types,ndevs}/<i>
    devices/virtual/net/<veth>/...                           virtual netdevs have no device link
    class/net/<if> -> ../../devices/.../net/<if>
    class/infiniband/<dev> -> ../../devices/.../infiniband/<dev>

Files the kernel lists but refuses to read (``speed`` of an interface that is administratively
down, ``gid_attrs/types/<i>`` of an unused GID entry: EINVAL) are made directories here, so that
reading them raises an OSError as the real ones do.

GID tables mirror what mlx5 fills in for RoCE: for each address of the netdev (the link-local
one first) an ``IB/RoCE v1`` and a ``RoCE v2`` entry, IPv4 addresses in IPv4-mapped form
(192.168.100.11 -> 0000:0000:0000:0000:0000:ffff:c0a8:640b); the remaining entries are unused.

MAC and IP addresses are those of the veth twins captured with ``ip -j -p addr show`` for the
module tests (test_connectx_info.yaml), so a tree and an ``ip`` output describe the same host.
"""

from __future__ import annotations

import ipaddress
import os

UNREADABLE = object()  # a file that exists but cannot be read (EINVAL in the kernel)

MAC = {'enp1s0f1np1': '5a:e8:b3:97:c5:33', 'enP2p1s0f1np1': 'd2:82:9b:cc:7d:fd'}
PCI = {'enp1s0f1np1': '0000:01:00.1', 'enP2p1s0f1np1': '0002:01:00.1',
       'enp1s0f0np0': '0000:01:00.0', 'enP2p1s0f0np0': '0002:01:00.0'}
RDMA = {'enp1s0f1np1': 'rocep1s0f1', 'enP2p1s0f1np1': 'roceP2p1s0f1',
        'enp1s0f0np0': 'rocep1s0f0', 'enP2p1s0f0np0': 'roceP2p1s0f0'}
IPV4 = {'enp1s0f1np1': '192.168.100.11', 'enP2p1s0f1np1': '192.168.101.11'}
IPV6 = {'enp1s0f1np1': 'fd00:100::11'}  # the capture has one global IPv6 address, on the first twin
GID_TABLE_LEN = 16


def link_local(mac):
    """fe80::/64 address from a MAC (modified EUI-64), as the kernel derives it."""
    octets = [int(part, 16) for part in mac.split(':')]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xff, 0xfe] + octets[3:]
    return ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + eui))


def gid_text(address):
    """An address as sysfs prints a GID: 8 groups of 4 hex digits, IPv4 in IPv4-mapped form."""
    address = ipaddress.ip_address(address)
    if address.version == 4:
        address = ipaddress.IPv6Address('::ffff:%s' % address)
    return ':'.join(address.exploded.split(':'))


def roce_gids(mac, addresses=()):
    """{index: (gid, type, ndev)} as mlx5 fills it: v1 and v2 entry per address, link-local first."""
    table = {}
    index = 0
    for address in [link_local(mac)] + [ipaddress.ip_address(a) for a in addresses]:
        for gid_type in ('IB/RoCE v1', 'RoCE v2'):
            table[index] = (gid_text(address), gid_type)
            index += 1
    return table


def spark_netdev(name, **overrides):
    """A healthy CX7 netdev of a Spark: mlx5_core, up, 200000 Mb/s, MTU 9000."""
    spec = {'pci': PCI[name], 'driver': 'mlx5_core', 'operstate': 'up', 'speed': 200000,
            'mtu': 9000, 'mac': MAC[name]}
    spec.update(overrides)
    return spec


def spark_rdma(netdev, addresses=None, **overrides):
    """The RDMA device behind a CX7 netdev: port 1 ACTIVE, Ethernet, RoCE GIDs for its addresses."""
    if addresses is None:
        addresses = [table[netdev] for table in (IPV4, IPV6) if netdev in table]
    spec = {'pci': PCI[netdev], 'netdev': netdev, 'state': '4: ACTIVE', 'phys_state': '5: LinkUp',
            'link_layer': 'Ethernet', 'gids': roce_gids(MAC[netdev], addresses)}
    spec.update(overrides)
    return spec


def spark_pair(netdevs=None, rdma=None):
    """Both twins of the cabled port, each with its RDMA device.

    ``netdevs`` / ``rdma``: overrides per netdev name; ``rdma={name: None}`` leaves that RDMA
    device out (mlx5_ib not loaded).
    """
    netdevs, rdma = netdevs or {}, rdma or {}
    names = ('enp1s0f1np1', 'enP2p1s0f1np1')
    spec = {'netdevs': {name: spark_netdev(name, **netdevs.get(name, {})) for name in names}, 'rdma': {}}
    for name in names:
        if name in rdma and rdma[name] is None:
            continue
        spec['rdma'][RDMA[name]] = spark_rdma(name, **rdma.get(name, {}))
    return spec


def veth_pair(speed=10000, mtu=9000):
    """The lab's stand-in for the twins: veths with the same names, no device link, no RDMA."""
    return {'netdevs': {name: {'pci': None, 'operstate': 'up', 'speed': speed, 'mtu': mtu, 'mac': MAC[name]}
                        for name in ('enp1s0f1np1', 'enP2p1s0f1np1')},
            'rdma': {}}


# --- writing the tree ----------------------------------------------------------------------------

def _write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if value is UNREADABLE:
        os.makedirs(path, exist_ok=True)  # open() on a directory raises IsADirectoryError
        return
    with open(path, 'w') as handle:
        handle.write('%s\n' % value)


def _link(target, link):
    """Relative symlink ``link`` -> ``target``, as sysfs makes them."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _pci_dir(root, pci):
    domain = pci.split(':', 1)[0]
    return os.path.join(root, 'devices', 'pci%s:00' % domain, '%s:00:00.0' % domain, pci)


def build_tree(root, spec):
    """Create the tree described by ``spec`` under ``root``; return ``root``.

    ``spec``: ``{'netdevs': {name: netdev}, 'rdma': {device: rdma}}`` where a netdev is
    ``{pci, driver, operstate, speed, mtu, mac}`` (``pci: None`` for a virtual one, ``speed:
    UNREADABLE`` or ``-1`` as the kernel gives them) and an rdma device is ``{pci, netdev, state,
    phys_state, link_layer, gids: {index: (gid, type)}}`` (see spark_netdev / spark_rdma).
    """
    os.makedirs(os.path.join(root, 'class', 'net'), exist_ok=True)
    for name, netdev in (spec.get('netdevs') or {}).items():
        if netdev.get('pci'):
            pci_dir = _pci_dir(root, netdev['pci'])
            net_dir = os.path.join(pci_dir, 'net', name)
            os.makedirs(net_dir, exist_ok=True)
            _link(pci_dir, os.path.join(net_dir, 'device'))
            if netdev.get('driver') and not os.path.lexists(os.path.join(pci_dir, 'driver')):
                driver_dir = os.path.join(root, 'bus', 'pci', 'drivers', netdev['driver'])
                os.makedirs(driver_dir, exist_ok=True)
                _link(driver_dir, os.path.join(pci_dir, 'driver'))
        else:
            net_dir = os.path.join(root, 'devices', 'virtual', 'net', name)
        for key in ('operstate', 'speed', 'mtu'):
            _write(os.path.join(net_dir, key), netdev[key])
        _write(os.path.join(net_dir, 'address'), netdev['mac'])
        _link(net_dir, os.path.join(root, 'class', 'net', name))

    for device, rdma in (spec.get('rdma') or {}).items():
        dev_dir = os.path.join(_pci_dir(root, rdma['pci']), 'infiniband', device)
        os.makedirs(dev_dir, exist_ok=True)
        _link(os.path.dirname(os.path.dirname(dev_dir)), os.path.join(dev_dir, 'device'))
        port = os.path.join(dev_dir, 'ports', '1')
        for key in ('state', 'phys_state', 'link_layer'):
            _write(os.path.join(port, key), rdma[key])
        gids = rdma.get('gids') or {}
        for index in range(max([GID_TABLE_LEN] + [i + 1 for i in gids])):
            gid, gid_type = gids.get(index, (gid_text('::'), UNREADABLE))
            _write(os.path.join(port, 'gids', str(index)), gid)
            _write(os.path.join(port, 'gid_attrs', 'types', str(index)), gid_type)
            _write(os.path.join(port, 'gid_attrs', 'ndevs', str(index)),
                   UNREADABLE if gid_type is UNREADABLE else rdma['netdev'])
        _link(dev_dir, os.path.join(root, 'class', 'infiniband', device))
    return root


# --- `ip -j addr show` ----------------------------------------------------------------------------

def ip_link(ifindex, ifname, mtu=9000, operstate='UP', ipv4=(), ipv6=()):
    """One element of `ip -j addr show` in the shape iproute2 6.1 prints (captured on a veth).

    An interface that is administratively down (operstate DOWN) has lost its link-local address,
    as in the capture.
    """
    addr_info = []
    for cidr in ipv4:
        address, prefix = cidr.split('/')
        addr_info.append({'family': 'inet', 'local': address, 'prefixlen': int(prefix), 'scope': 'global',
                          'label': ifname, 'valid_life_time': 4294967295, 'preferred_life_time': 4294967295})
    for cidr in ipv6:
        address, prefix = cidr.split('/')
        addr_info.append({'family': 'inet6', 'local': address, 'prefixlen': int(prefix), 'scope': 'global',
                          'valid_life_time': 4294967295, 'preferred_life_time': 4294967295})
    if operstate != 'DOWN':
        addr_info.append({'family': 'inet6', 'local': str(link_local(MAC[ifname])), 'prefixlen': 64,
                          'scope': 'link', 'valid_life_time': 4294967295, 'preferred_life_time': 4294967295})
    flags = ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'] if operstate == 'UP' else ['BROADCAST', 'MULTICAST']
    return {'ifindex': ifindex, 'ifname': ifname, 'flags': flags, 'mtu': mtu, 'qdisc': 'noqueue',
            'operstate': operstate, 'group': 'default', 'txqlen': 1000, 'link_type': 'ether',
            'address': MAC[ifname], 'broadcast': 'ff:ff:ff:ff:ff:ff',
            'addr_info': addr_info}


LOOPBACK = {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP', 'LOWER_UP'], 'mtu': 65536, 'qdisc': 'noqueue',
            'operstate': 'UNKNOWN', 'group': 'default', 'txqlen': 1000, 'link_type': 'loopback',
            'address': '00:00:00:00:00:00', 'broadcast': '00:00:00:00:00:00',
            'addr_info': [{'family': 'inet', 'local': '127.0.0.1', 'prefixlen': 8, 'scope': 'host', 'label': 'lo',
                           'valid_life_time': 4294967295, 'preferred_life_time': 4294967295},
                          {'family': 'inet6', 'local': '::1', 'prefixlen': 128, 'scope': 'host',
                           'valid_life_time': 4294967295, 'preferred_life_time': 4294967295}]}


# --- the trees the module tests name (sysfs_root: "tree:<name>" in test_connectx_info.yaml) ---
# Plain specs: build_tree() only reads them.

TREES = {
    'spark_healthy': spark_pair(),
    'spark_degraded': spark_pair(netdevs={'enp1s0f1np1': {'speed': 13000}}),
    'spark_twin_down': spark_pair(netdevs={'enP2p1s0f1np1': {'operstate': 'down', 'speed': UNREADABLE}},
                                  rdma={'enP2p1s0f1np1': {'state': '1: DOWN', 'phys_state': '3: Disabled'}}),
    'spark_mtu_1500': spark_pair(netdevs={'enp1s0f1np1': {'mtu': 1500}, 'enP2p1s0f1np1': {'mtu': 1500}}),
    'spark_no_mlx5_ib': spark_pair(rdma={'enp1s0f1np1': None, 'enP2p1s0f1np1': None}),
    'spark_same_subnet': spark_pair(
        rdma={'enP2p1s0f1np1': {'gids': roce_gids(MAC['enP2p1s0f1np1'], ['192.168.100.12'])}}),
    'spark_twin_no_ipv4': spark_pair(rdma={'enP2p1s0f1np1': {'gids': roce_gids(MAC['enP2p1s0f1np1'])}}),
    'lab_veth': veth_pair(),
}
