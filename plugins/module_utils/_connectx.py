# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pure logic behind the connectx_info module: read a ConnectX link from sysfs and `ip -j addr show`.

No Ansible objects in here. Everything that touches the disk takes ``sysfs_root`` so that a host's
sysfs mounted elsewhere, or a tree built by a test, can be read the same way as ``/sys``.

Where the data lives (see FACTS.md):
- ``<root>/class/net/<if>/{operstate,speed,mtu,address}``; ``device`` links to the PCI function,
  ``device/driver`` to the driver (``mlx5_core`` on a ConnectX-7). ``speed`` cannot be read
  (EINVAL) while the interface is administratively down and reads ``-1`` when the driver does not
  know it: both are reported as ``None``.
- ``<root>/class/infiniband/<dev>/device/net/<if>``: the netdev behind an RDMA device;
  ``.../ports/1/{state,link_layer}``, ``.../ports/1/gids/<i>`` and ``.../ports/1/gid_attrs/types/<i>``
  (reading the type of an unused GID entry fails with EINVAL: such entries are skipped).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import (
    DEFAULT_SPEED_MBPS,
    DEFAULT_TWINS,
    MTU_MAX,
    MTU_MIN,
    expected_rdma_name,
    is_ifname,
    twin_name,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import problem

RDMA_PORT = '1'

# The inventory variables a link problem points at (the module's options carry their values).
VAR_INTERFACES = 'spark_cx7_interfaces'
VAR_SPEED = 'spark_cx7_expected_speed_mbps'
VAR_MTU = 'cx7_network_mtu'
VAR_ADDRESSES = 'spark_cx7_addresses'
VAR_SUBNETS = 'spark_cx7_subnets'

_PCI_ADDRESS_RE = re.compile(r'^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$')
# operstate values (RFC 2863 names, as the kernel prints them) that mean the link is down.
_DOWN_STATES = ('down', 'lowerlayerdown', 'notpresent', 'unreadable')


# --- names ---------------------------------------------------------------------------------------
# The naming rules (interface names, twins, RDMA names) live in _cx7; this file only applies them.

def check_options(interfaces, expected_speed_mbps, expected_mtu):
    """Return a list of sentences, one per invalid option value (empty when all are valid)."""
    errors = []
    if not interfaces:
        errors.append('interfaces must name at least one interface, e.g. [%s]' % ', '.join(DEFAULT_TWINS))
    for name in interfaces or []:
        if not is_ifname(name):
            errors.append('interfaces: %r is not a valid interface name (1 to 15 characters from '
                          'letters, digits and _ . : -), e.g. %s' % (name, DEFAULT_TWINS[0]))
    if expected_speed_mbps is not None and expected_speed_mbps < 0:
        errors.append('expected_speed_mbps must be 0 (no speed check) or more, got %d' % expected_speed_mbps)
    if expected_mtu is not None and not MTU_MIN <= expected_mtu <= MTU_MAX:
        errors.append('expected_mtu must be between %d and %d, got %d' % (MTU_MIN, MTU_MAX, expected_mtu))
    return errors


def with_twins(interfaces, include_twins):
    """The interfaces to inspect, in order, each followed by its twin when asked; no duplicates."""
    result = []
    for name in interfaces:
        for candidate in (name, twin_name(name) if include_twins else None):
            if candidate and candidate not in result:
                result.append(candidate)
    return result


# --- sysfs ---------------------------------------------------------------------------------------

def _read(path):
    """Content of a sysfs file without the trailing newline, or None when it cannot be read."""
    try:
        with open(path, 'r') as handle:
            return handle.read().strip()
    except (OSError, IOError, UnicodeDecodeError):
        return None


def _read_int(path):
    text = _read(path)
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _pci_address(device_path, sysfs_root):
    """PCI address of the device behind a netdev (the link may point at e.g. virtio2 under the PCI function)."""
    path = os.path.realpath(device_path)
    stop = os.path.realpath(sysfs_root)
    while path.startswith(stop + os.sep):
        base = os.path.basename(path)
        if _PCI_ADDRESS_RE.match(base):
            return base.lower()
        path = os.path.dirname(path)
    return None


def read_netdev(sysfs_root, ifname):
    """What sysfs says about one network interface."""
    base = os.path.join(sysfs_root, 'class', 'net', ifname)
    info = {
        'name': ifname,
        'present': os.path.isdir(base),
        'operstate': None,
        'speed_mbps': None,
        'mtu': None,
        'mac': None,
        'driver': None,
        'pci_address': None,
    }
    if not info['present']:
        return info
    info['operstate'] = _read(os.path.join(base, 'operstate'))
    speed = _read_int(os.path.join(base, 'speed'))
    info['speed_mbps'] = speed if speed is not None and speed > 0 else None
    info['mtu'] = _read_int(os.path.join(base, 'mtu'))
    info['mac'] = _read(os.path.join(base, 'address'))
    device = os.path.join(base, 'device')
    if os.path.exists(device):  # virtual interfaces (veth, bridges) have no device link
        driver = os.path.join(device, 'driver')
        if os.path.islink(driver):
            info['driver'] = os.path.basename(os.path.realpath(driver))
        info['pci_address'] = _pci_address(device, sysfs_root)
    return info


def find_rdma_devices(sysfs_root):
    """Map netdev name -> RDMA device name, from <root>/class/infiniband/<dev>/device/net/<if>."""
    top = os.path.join(sysfs_root, 'class', 'infiniband')
    mapping = {}
    try:
        devices = sorted(os.listdir(top))
    except OSError:
        return mapping
    for dev in devices:
        try:
            netdevs = sorted(os.listdir(os.path.join(top, dev, 'device', 'net')))
        except OSError:
            continue
        for ifname in netdevs:
            mapping.setdefault(ifname, dev)
    return mapping


def _state_name(text):
    """'4: ACTIVE' -> 'ACTIVE' (the kernel prints the number, a colon and the name)."""
    if text is None:
        return None
    return text.split(':', 1)[-1].strip() or None


def _index_key(name):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def read_gids(port_dir):
    """The port's GID table as a list of {index, gid, type}; unused and unreadable entries skipped."""
    gids_dir = os.path.join(port_dir, 'gids')
    types_dir = os.path.join(port_dir, 'gid_attrs', 'types')
    try:
        names = sorted(os.listdir(gids_dir), key=_index_key)
    except OSError:
        return []
    table = []
    for name in names:
        if not name.isdigit():
            continue
        gid_text = _read(os.path.join(gids_dir, name))
        gid_type = _read(os.path.join(types_dir, name))  # EINVAL for unused entries
        if not gid_text or gid_type is None:
            continue
        try:
            gid = ipaddress.IPv6Address(gid_text)
        except ValueError:
            continue
        if gid.packed == b'\0' * 16:
            continue
        table.append({'index': int(name), 'gid': gid_text, 'type': gid_type})
    return table


def read_rdma_port(sysfs_root, device, port=RDMA_PORT):
    """State, link layer and GID table of one port of an RDMA device."""
    port_dir = os.path.join(sysfs_root, 'class', 'infiniband', device, 'ports', port)
    return {
        'state': _state_name(_read(os.path.join(port_dir, 'state'))),
        'link_layer': _read(os.path.join(port_dir, 'link_layer')),
        'gids': read_gids(port_dir),
    }


def roce_v2_gid_index(gids, ipv4):
    """Index of the RoCE v2 GID that is the IPv4-mapped form of one of the addresses (first address wins)."""
    for cidr in ipv4 or []:
        address = ipaddress.ip_interface(cidr).ip
        for entry in gids:
            if entry['type'] != 'RoCE v2':
                continue
            if ipaddress.IPv6Address(entry['gid']).ipv4_mapped == address:
                return entry['index']
    return None


# --- ip -j addr show -----------------------------------------------------------------------------

def parse_ip_addr_json(text):
    """Map ifname -> {'ipv4': [...], 'ipv6': [...]} from `ip -j addr show` output.

    Addresses are "address/prefix" strings in the order ip lists them. IPv6 keeps global-scope
    addresses only (link-local fe80::/10 ones exist on every up interface and say nothing about
    the setup). Raises ValueError when the text is not the JSON list iproute2 prints.
    """
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError('expected a JSON list of interfaces, got %s' % type(data).__name__)
    result = {}
    for link in data:
        if not isinstance(link, dict) or 'ifname' not in link:
            continue
        entry = result.setdefault(link['ifname'], {'ipv4': [], 'ipv6': []})
        for addr in link.get('addr_info') or []:
            local, prefix = addr.get('local'), addr.get('prefixlen')
            if local is None or prefix is None:
                continue
            if addr.get('family') == 'inet':
                entry['ipv4'].append('%s/%s' % (local, prefix))
            elif addr.get('family') == 'inet6' and addr.get('scope') == 'global':
                entry['ipv6'].append('%s/%s' % (local, prefix))
    return result


# --- the report ----------------------------------------------------------------------------------
# Every problem is a _problems.problem dict with a code; the node does not know its inventory name, so ``where``
# stays None (the caller places it) and the interface is named in ``what``.

def unreadable_addresses(reason, fix=None):
    """The problem reported when the addresses could not be read (``ip`` missing, failing, or not printing JSON)."""
    return problem('cx7-addresses-unreadable', 'iproute2', 'cannot read addresses: %s' % reason,
                   fix or 'check that `ip -j addr show` works on the host')


def _interface_problems(info, expected_speed_mbps, expected_mtu, addresses_known):
    name = info['name']
    if not info['present']:
        return [problem('cx7-interface-missing', VAR_INTERFACES, '%s does not exist on this host' % name,
                        'check the name with `ip -br link` (the twins are listed by `ibdev2netdev`)')]
    problems = []
    up = info['operstate'] == 'up'
    if not up:
        state = info['operstate'] or 'unreadable'
        down = state in _DOWN_STATES
        problems.append(problem('cx7-link-down' if down else 'cx7-link-not-up', VAR_INTERFACES,
                                '%s is %s (operstate %s)' % (name, 'down' if down else 'not up', state),
                                'check the cable and `ip link set %s up`' % name))
    if up and expected_speed_mbps:
        if info['speed_mbps'] is None:
            problems.append(problem('cx7-speed-unknown', VAR_SPEED, '%s reports no link speed, expected %d Mb/s'
                                    % (name, expected_speed_mbps), 'check `ethtool %s`' % name))
        elif info['speed_mbps'] < expected_speed_mbps:
            problems.append(problem('cx7-speed-degraded', VAR_SPEED, '%s runs at %d Mb/s, below the expected %d Mb/s '
                                    '(degraded link)' % (name, info['speed_mbps'], expected_speed_mbps),
                                    'reseat the cable or check the peer'))
    if expected_mtu is not None and info['mtu'] != expected_mtu:
        problems.append(problem('cx7-mtu-mismatch', VAR_MTU, '%s has MTU %s, expected %d'
                                % (name, info['mtu'], expected_mtu),
                                'set the same MTU on both nodes (netplan `mtu: %d`)' % expected_mtu))
    if info['rdma_device'] is None:
        expected = expected_rdma_name(name)
        problems.append(problem('cx7-no-rdma-device', VAR_INTERFACES, '%s has no RDMA device%s'
                                % (name, ' (expected %s)' % expected if expected else ''),
                                'check that mlx5_ib is loaded (`lsmod | grep mlx5_ib`) and `ibdev2netdev`'))
    elif info['rdma_port_state'] != 'ACTIVE':
        problems.append(problem('cx7-rdma-port-down', VAR_INTERFACES, 'RDMA port %s/%s behind %s is %s, expected ACTIVE'
                                % (info['rdma_device'], RDMA_PORT, name, info['rdma_port_state'] or 'unreadable'),
                                'bring the link up and check `rdma link`'))
    if addresses_known and not info['ipv4']:
        problems.append(problem('cx7-no-ipv4', VAR_ADDRESSES, '%s has no IPv4 address' % name,
                                'give it one in its own subnet (the cx7_network role, or /etc/netplan/40-cx7.yaml)'))
    elif info['ipv4'] and info['rdma_device'] and info['rdma_port_state'] == 'ACTIVE' \
            and info['roce_v2_gid_index'] is None:
        problems.append(problem('cx7-no-roce-gid', VAR_INTERFACES, 'no RoCE v2 GID on %s (behind %s) matches %s'
                                % (info['rdma_device'], name, info['ipv4'][0]), 'check `rdma link` and the address'))
    return problems


def _shared_subnet_problems(infos):
    """(first, second, problem) for each pair of interfaces whose IPv4 subnets overlap."""
    found = []
    for i, first in enumerate(infos):
        for second in infos[i + 1:]:
            shared = _shared_network(first['ipv4'] or [], second['ipv4'] or [])
            if shared is None:
                continue
            whom = 'twin' if twin_name(first['name']) == second['name'] else 'interface'
            found.append((first, second, problem(
                'cx7-shared-subnet', VAR_SUBNETS, '%s and %s share subnet %s' % (first['name'], second['name'], shared),
                'give each %s its own subnet' % whom)))
    return found


def _shared_network(first, second):
    for a in first:
        net_a = ipaddress.ip_interface(a).network
        for b in second:
            net_b = ipaddress.ip_interface(b).network
            if net_a.version == net_b.version and net_a.overlaps(net_b):
                return min(net_a, net_b, key=lambda net: net.prefixlen)
    return None


def connectx_report(sysfs_root, interfaces, include_twins=True, expected_speed_mbps=DEFAULT_SPEED_MBPS,
                    expected_mtu=None, addresses=None, address_problem=None):
    """The module's whole result (less `changed`).

    ``addresses`` is the output of parse_ip_addr_json(), or None when it could not be read, in which
    case ``address_problem`` (a problem from unreadable_addresses(), or a sentence) says why and ipv4/ipv6 are None.
    ``problems``, top-level and per interface, are _problems.problem dicts.
    """
    if isinstance(address_problem, str):
        address_problem = unreadable_addresses(address_problem)
    rdma_by_netdev = find_rdma_devices(sysfs_root)
    infos = []
    for name in with_twins(interfaces, include_twins):
        info = read_netdev(sysfs_root, name)
        info['twin'] = twin_name(name)
        if addresses is None:
            info['ipv4'] = info['ipv6'] = None
        else:
            found = addresses.get(name, {})
            info['ipv4'] = list(found.get('ipv4', []))
            info['ipv6'] = list(found.get('ipv6', []))
        device = rdma_by_netdev.get(name) if info['present'] else None
        port = read_rdma_port(sysfs_root, device) if device else {'state': None, 'link_layer': None, 'gids': []}
        info['rdma_device'] = device
        info['rdma_port_state'] = port['state']
        info['link_layer'] = port['link_layer']
        info['roce_v2_gid_index'] = roce_v2_gid_index(port['gids'], info['ipv4'])
        info['problems'] = _interface_problems(info, expected_speed_mbps, expected_mtu, addresses is not None)
        infos.append(info)

    problems = [address_problem] if address_problem else []
    for info in infos:
        problems.extend(info['problems'])
    for first, second, item in _shared_subnet_problems(infos):
        first['problems'].append(item)
        second['problems'].append(item)
        problems.append(item)

    rdma_devices = []
    for info in infos:
        if info['rdma_device'] and info['rdma_device'] not in rdma_devices:
            rdma_devices.append(info['rdma_device'])
    return {
        'interfaces': infos,
        'rdma_devices': rdma_devices,
        'healthy': not problems,
        'problems': problems,
    }
