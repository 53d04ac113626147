# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_cx7.py: the DGX Spark's ConnectX-7 naming rules (FACTS.md)."""

from __future__ import annotations

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cx7

A, B = 'enp1s0f1np1', 'enP2p1s0f1np1'


def test_defaults_are_the_cabled_port_and_a_healthy_link():
    assert _cx7.DEFAULT_TWINS == (A, B)
    assert _cx7.DEFAULT_SPEED_MBPS == 200000
    assert (_cx7.MTU_MIN, _cx7.MTU_MAX) == (68, 9216)
    assert _cx7.MTU_MIN <= 1500 < 9000 <= _cx7.MTU_MAX


@pytest.mark.parametrize('name, valid', [
    (A, True), (B, True), ('enP7s7', True), ('lo', True), ('eth0.100', True), ('veth-a:1', True), ('a' * 15, True),
    ('a' * 16, False), ('', False), ('en p1', False), ('a,b', False), ('../../etc', False), ('a/b', False),
    ('=enp1s0f1np1', False), ('^lo', False), (None, False), (7, False), (['lo'], False),
])
def test_is_ifname(name, valid):
    assert _cx7.is_ifname(name) is valid


@pytest.mark.parametrize('name, cx7', [
    (A, True), (B, True), ('enp1s0f0np0', True), ('enP2p1s0f0np0', True), ('enP3p1s0f1np1', True),
    ('enP7s7', False), ('wlP9s9', False), ('lo', False), ('eth0', False),
    ('enp1s0f0', False),  # a PCI name without the port suffix: not how the CX7 netdevs are named
    (None, False),
])
def test_is_cx7_name(name, cx7):
    assert _cx7.is_cx7_name(name) is cx7


@pytest.mark.parametrize('name, twin, rdma', [
    (A, B, 'rocep1s0f1'),
    (B, A, 'roceP2p1s0f1'),
    ('enp1s0f0np0', 'enP2p1s0f0np0', 'rocep1s0f0'),
    ('enP2p1s0f0np0', 'enp1s0f0np0', 'roceP2p1s0f0'),
    ('enP3p1s0f1np1', None, 'roceP3p1s0f1'),  # only domain 2 is the other half
    ('enP7s7', None, None),
    ('eth0', None, None),
    (None, None, None),
])
def test_twin_and_rdma_names(name, twin, rdma):
    assert _cx7.twin_name(name) == twin
    assert _cx7.expected_rdma_name(name) == rdma


def test_twins_are_each_others_twin():
    for name in _cx7.DEFAULT_TWINS + ('enp1s0f0np0',):
        assert _cx7.twin_name(_cx7.twin_name(name)) == name


@pytest.mark.parametrize('name, reason', [
    ('enP7s7', 'management port'),
    ('wlP9s9', 'Wi-Fi'),
    ('lo', 'loopback'),
    ('a,b', 'not an interface name'),
    ('eth0', 'not a ConnectX-7 interface name'),
])
def test_not_cx7_reason(name, reason):
    text = _cx7.not_cx7_reason(name)
    assert text and reason in text


@pytest.mark.parametrize('name', [A, B, 'enp1s0f0np0'])
def test_cx7_names_have_no_reason_against_them(name):
    assert _cx7.not_cx7_reason(name) is None


def test_never_cx7_names_are_valid_interface_names_of_another_shape():
    for name in _cx7.NOT_CX7:
        assert _cx7.is_ifname(name) and not _cx7.is_cx7_name(name) and _cx7.twin_name(name) is None
