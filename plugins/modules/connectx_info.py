#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: connectx_info
short_description: Report the state of ConnectX (CX7) RoCE links and their RDMA devices
version_added: 0.1.0
description:
  - Reads the network interfaces of a ConnectX link from sysfs and their addresses from C(ip -j addr show),
    finds the RDMA device behind each interface, and reports what is wrong as problems, each with a stable code
    and a sentence.
  - On a DGX Spark every QSFP port shows up as two netdevs ("twins"), one per PCIe x4 half, for example
    C(enp1s0f1np1) and C(enP2p1s0f1np1), with RDMA devices C(rocep1s0f1) and C(roceP2p1s0f1).
    NCCL needs both RDMA devices in C(NCCL_IB_HCA) to reach full bandwidth; O(include_twins) adds the twin of
    each requested interface.
  - Read-only. A missing, down or degraded link is reported in RV(problems) and RV(healthy), never raised;
    the module fails only on invalid options. The caller decides what to do, for example with
    M(ansible.builtin.assert); code that reacts to a problem tests its RV(problems[].code), never its wording.
  - Uses the standard library and C(ip) (iproute2) only; C(ethtool), C(ibdev2netdev) and rdma-core are not needed.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
  - dgxspark.sglang.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  interfaces:
    description:
      - Names of the network interfaces to inspect, in order.
      - Each name has 1 to 15 characters from letters, digits, V(_), V(.), V(:) and V(-).
      - The default is the twins of the port NVIDIA's "connect two Sparks" guide cables.
    type: list
    elements: str
    default: [enp1s0f1np1, enP2p1s0f1np1]
  include_twins:
    description:
      - Also inspect the twin of each interface, derived from its name by rule
        (V(enpXsYfZnpN) <-> V(enP2pXsYfZnpN), both ways). Names without a twin are inspected alone.
      - A twin that does not exist on the host is reported as a problem.
    type: bool
    default: true
  expected_speed_mbps:
    description:
      - Link speed in Mb/s below which a link that is up counts as degraded (a CX7 link can come up at about
        13 Gb/s instead of 200).
      - V(0) disables the speed check, for example on test hosts whose veth stand-ins report V(10000).
    type: int
    default: 200000
  expected_mtu:
    description:
      - MTU every inspected interface should have, for example V(9000). Not checked when omitted.
      - Between 68 and 9216.
    type: int
  sysfs_root:
    description:
      - Where sysfs is mounted. Point it at a host's sysfs mounted elsewhere, or at a tree built by tests.
      - Addresses are not in sysfs and always come from C(ip -j addr show) on the host the module runs on,
        whatever this option says.
    type: path
    default: /sys
notes:
  - O(sysfs_root) must contain C(class/net); otherwise the module fails.
  - When C(ip) is not installed the addresses are reported as V(null) and RV(problems) says so
    (code V(cx7-addresses-unreadable)).
"""

EXAMPLES = r"""
- name: Read the CX7 link of the cabled port and its twin
  dgxspark.sglang.connectx_info:
    interfaces: [enp1s0f1np1]
    expected_mtu: 9000
  register: cx7_link

- name: Stop when the link is not fit for NCCL
  ansible.builtin.assert:
    that: cx7_link.healthy
    fail_msg: "{{ cx7_link.problems | map(attribute='message') | join(' ') }}"

- name: Stop only on a degraded or down link (problems are told apart by their code)
  ansible.builtin.assert:
    that: cx7_link.problems | map(attribute='code') | intersect(['cx7-link-down', 'cx7-speed-degraded']) | length == 0
    fail_msg: "{{ cx7_link.problems | map(attribute='message') | join(' ') }}"

- name: Pin NCCL to exactly the RDMA devices found
  ansible.builtin.set_fact:
    nccl_ib_hca: "={{ cx7_link.rdma_devices | join(',') }}"

- name: On lab hosts whose twins are veths, skip the speed check
  dgxspark.sglang.connectx_info:
    interfaces: [enp1s0f1np1, enP2p1s0f1np1]
    include_twins: false
    expected_speed_mbps: 0
"""

RETURN = r"""
interfaces:
  description: One entry per inspected interface, requested ones in order, each followed by its twin.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Interface name.
      returned: always
      type: str
      sample: enp1s0f1np1
    present:
      description: Whether the interface exists (C(<sysfs_root>/class/net/<name>)).
      returned: always
      type: bool
      sample: true
    twin:
      description: Name of the twin derived from the name, V(null) when the name has none.
      returned: always
      type: str
      sample: enP2p1s0f1np1
    operstate:
      description: Operational state from sysfs (V(up), V(down), V(lowerlayerdown), ...); V(null) if absent.
      returned: always
      type: str
      sample: up
    speed_mbps:
      description: Link speed in Mb/s; V(null) when the kernel does not report one (link down, virtual device).
      returned: always
      type: int
      sample: 200000
    mtu:
      description: MTU of the interface.
      returned: always
      type: int
      sample: 9000
    mac:
      description: MAC address.
      returned: always
      type: str
      sample: 5a:e8:b3:97:c5:33
    driver:
      description: Kernel driver of the device behind the interface; V(null) for virtual interfaces such as veths.
      returned: always
      type: str
      sample: mlx5_core
    pci_address:
      description: PCI address of the device behind the interface; V(null) for virtual interfaces.
      returned: always
      type: str
      sample: "0000:01:00.1"
    ipv4:
      description: IPv4 addresses as V(address/prefix); V(null) when addresses could not be read.
      returned: always
      type: list
      elements: str
      sample: [192.168.100.11/24]
    ipv6:
      description:
        - Global IPv6 addresses as V(address/prefix); link-local ones are left out.
        - V(null) when addresses could not be read.
      returned: always
      type: list
      elements: str
      sample: [fd00:100::11/64]
    rdma_device:
      description: RDMA device whose C(device/net) holds this interface; V(null) if none.
      returned: always
      type: str
      sample: rocep1s0f1
    rdma_port_state:
      description: State of port 1 of the RDMA device.
      returned: always
      type: str
      sample: ACTIVE
    link_layer:
      description: Link layer of port 1 of the RDMA device.
      returned: always
      type: str
      sample: Ethernet
    roce_v2_gid_index:
      description:
        - Index of the RoCE v2 GID that is the IPv4-mapped form of the interface's first matching IPv4 address.
        - The one to pin with C(NCCL_IB_GID_INDEX) on NCCL older than 2.21; newer NCCL picks it itself.
      returned: always
      type: int
      sample: 3
    problems:
      description: What is wrong with this interface, as problems with a code, each shaped like the items of RV(problems).
      returned: always
      type: list
      elements: dict
      sample: []
rdma_devices:
  description: RDMA devices behind the inspected interfaces, in interface order, without duplicates; ready for C(NCCL_IB_HCA).
  returned: always
  type: list
  elements: str
  sample: [rocep1s0f1, roceP2p1s0f1]
healthy:
  description: True when no problem was found.
  returned: always
  type: bool
  sample: true
problems:
  description:
    - A failure to read addresses first, then each interface's own problems in order, then those between interfaces
      (twins on one subnet).
    - Each is a dict; list the codes with C(map(attribute='code')), the sentences with C(map(attribute='message')).
  returned: always
  type: list
  elements: dict
  contains:
    code:
      description:
        - Stable identifier of the problem; test this, never the wording.
        - V(cx7-interface-missing), V(cx7-link-down), V(cx7-link-not-up), V(cx7-speed-unknown), V(cx7-speed-degraded),
          V(cx7-mtu-mismatch), V(cx7-no-rdma-device), V(cx7-rdma-port-down), V(cx7-no-ipv4), V(cx7-no-roce-gid),
          V(cx7-shared-subnet) or V(cx7-addresses-unreadable).
      returned: always
      type: str
      sample: cx7-shared-subnet
    variable:
      description:
        - The setting to look at, one of V(spark_cx7_interfaces), V(spark_cx7_expected_speed_mbps), V(cx7_network_mtu),
          V(spark_cx7_addresses), V(spark_cx7_subnets), or V(iproute2).
      returned: always
      type: str
      sample: spark_cx7_subnets
    where:
      description: Always V(null) here; the node does not know its inventory name, the caller adds it.
      returned: always
      type: str
    hosts:
      description: Always empty here; the node does not know its inventory name.
      returned: always
      type: list
      elements: str
    severity:
      description: Always V(error) here (the link is not healthy).
      returned: always
      type: str
      sample: error
    what:
      description: What is wrong, naming the interface.
      returned: always
      type: str
      sample: "enp1s0f1np1 and enP2p1s0f1np1 share subnet 192.168.100.0/24"
    fix:
      description: What to do about it.
      returned: always
      type: str
      sample: "give each twin its own subnet"
    message:
      description: The whole sentence a user reads, variable, what and fix together.
      returned: always
      type: str
      sample: >-
        spark_cx7_subnets: enp1s0f1np1 and enP2p1s0f1np1 share subnet 192.168.100.0/24.
        Fix: give each twin its own subnet.
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._connectx import (
    check_options,
    connectx_report,
    parse_ip_addr_json,
    unreadable_addresses,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import DEFAULT_SPEED_MBPS, DEFAULT_TWINS


def read_addresses(module):
    """(addresses, problem) from `ip -j addr show`; addresses is None when they could not be read."""
    ip_bin = module.get_bin_path('ip')
    if not ip_bin:
        return None, unreadable_addresses('ip (iproute2) not found', 'install iproute2')
    cmd = [ip_bin, '-j', 'addr', 'show']
    rc, out, err = module.run_command(cmd, environ_update={'LC_ALL': 'C', 'LANG': 'C'})
    if rc != 0:
        return None, unreadable_addresses('`%s` failed (rc %d): %s'
                                          % (' '.join(cmd), rc, err.strip() or out.strip() or 'no output'))
    try:
        return parse_ip_addr_json(out), None
    except ValueError as exc:
        return None, unreadable_addresses('`%s` did not print JSON (%s)' % (' '.join(cmd), exc),
                                          'install a newer iproute2 (one whose ip knows -j)')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type='list', elements='str', default=list(DEFAULT_TWINS)),
            include_twins=dict(type='bool', default=True),
            expected_speed_mbps=dict(type='int', default=DEFAULT_SPEED_MBPS),
            expected_mtu=dict(type='int'),
            sysfs_root=dict(type='path', default='/sys'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    errors = check_options(params['interfaces'], params['expected_speed_mbps'], params['expected_mtu'])
    if not os.path.isdir(os.path.join(params['sysfs_root'], 'class', 'net')):
        errors.append('sysfs_root: %s has no class/net directory; point it at where sysfs is mounted (default /sys)'
                      % params['sysfs_root'])
    if errors:
        module.fail_json(msg='; '.join(errors))

    addresses, address_problem = read_addresses(module)
    result = connectx_report(
        params['sysfs_root'],
        params['interfaces'],
        include_twins=params['include_twins'],
        expected_speed_mbps=params['expected_speed_mbps'],
        expected_mtu=params['expected_mtu'],
        addresses=addresses,
        address_problem=address_problem,
    )
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
