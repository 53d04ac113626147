# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The DGX Spark's ConnectX-7 naming rules, in one place (FACTS.md, "DGX Spark hardware and OS").

``_connectx`` (the probe on the node), ``_nccl`` (the NCCL environment) and ``_cluster`` (the plan) import
these; none of them keeps a regex or a list of its own.

- Each physical QSFP port shows up as two netdevs, the "twins", one per PCIe x4 half:
  ``enp1s0f1np1`` (PCI domain 0) and ``enP2p1s0f1np1`` (domain 2).
- Their RDMA devices are ``rocep1s0f1`` and ``roceP2p1s0f1`` (the real mapping is read from sysfs).
- The 10 GbE management port (``enP7s7``), Wi-Fi (``wlP9s9``) and loopback are never CX7 twins.
"""

from __future__ import annotations

import re

# The twins of the port NVIDIA's "connect two Sparks" guide cables.
DEFAULT_TWINS = ('enp1s0f1np1', 'enP2p1s0f1np1')

# A healthy CX7 link reports 200000 Mb/s in /sys/class/net/<if>/speed (a degraded one about 13000).
DEFAULT_SPEED_MBPS = 200000

# MTUs a CX7 netdev takes: IPv4's minimum up to the largest jumbo frame the Spark's switches and guides use.
MTU_MIN = 68
MTU_MAX = 9216

# Linux interface names: at most 15 characters (IFNAMSIZ - 1); this set keeps them safe in paths and lists
# (no '/', whitespace, ',' or NCCL's list markers).
IFNAME_RE = re.compile(r'^[A-Za-z0-9_.:-]{1,15}$')

# Predictable PCI names as systemd gives them to the CX7 twins: en[P<domain>]p<bus>s<slot>f<fn>np<port>.
_CX7_NAME_RE = re.compile(r'^en(?:P(?P<domain>[0-9]+))?p(?P<rest>[0-9]+s[0-9]+f[0-9]+)(?P<port>np[0-9]+)$')
_TWIN_DOMAIN = '2'

# Interfaces that are never CX7 twins on a DGX Spark, with what they are.
NOT_CX7 = {
    'enP7s7': 'the 10 GbE management port',
    'wlP9s9': 'the Wi-Fi interface',
    'lo': 'the loopback interface',
}

# RDMA device names as the kernel gives them (rocep1s0f1, roceP2p1s0f1, mlx5_0): no list markers, no spaces.
_RDMA_NAME_RE = re.compile(r'^[A-Za-z0-9_.-]{1,63}$')

CX7_NAME_SHAPE = 'en[P<domain>]p<bus>s<slot>f<fn>np<port>'


def is_ifname(name):
    """True for a syntactically valid Linux interface name."""
    return isinstance(name, str) and bool(IFNAME_RE.match(name))


def is_rdma_name(name):
    """True for a syntactically valid RDMA device name."""
    return isinstance(name, str) and bool(_RDMA_NAME_RE.match(name))


def is_cx7_name(name):
    """True for names of the shape ConnectX netdevs get (``enp1s0f1np1``, ``enP2p1s0f1np1``)."""
    return isinstance(name, str) and bool(_CX7_NAME_RE.match(name))


def not_cx7_reason(name):
    """Why ``name`` is not a CX7 twin (management port, Wi-Fi, loopback, other shape), or None if it may be one."""
    if name in NOT_CX7:
        return '%s is %s, not a CX7 twin' % (name, NOT_CX7[name])
    if not is_ifname(name):
        return '%r is not an interface name (1 to 15 characters from letters, digits and _ . : -)' % (name,)
    if not is_cx7_name(name):
        return '%s is not a ConnectX-7 interface name (expected %s)' % (name, CX7_NAME_SHAPE)
    return None


def twin_name(name):
    """The other PCIe half of the same CX7 port: enp1s0f1np1 <-> enP2p1s0f1np1; None if the name has no twin."""
    match = _CX7_NAME_RE.match(name) if isinstance(name, str) else None
    if not match:
        return None
    tail = match.group('rest') + match.group('port')
    if match.group('domain') is None:
        return 'enP%sp%s' % (_TWIN_DOMAIN, tail)
    if match.group('domain') == _TWIN_DOMAIN:
        return 'enp%s' % tail
    return None


def expected_rdma_name(name):
    """The RDMA device name that goes with a netdev name (enp1s0f1np1 -> rocep1s0f1); None if unknown.

    For messages only: the real mapping is read from sysfs on the node.
    """
    match = _CX7_NAME_RE.match(name) if isinstance(name, str) else None
    if not match:
        return None
    domain = match.group('domain')
    return 'roce%sp%s' % ('P%s' % domain if domain is not None else '', match.group('rest'))
