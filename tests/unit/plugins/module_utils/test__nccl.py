# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_nccl.py: the NCCL environment's rules, from FACTS.md and NCCL's env docs."""

from __future__ import annotations

import ast
import inspect
import re

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cx7, _nccl, _nccl_catalog
from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import (
    DEAD_VARS,
    KNOWN_NCCL_VARS,
    NcclEnvError,
    build_nccl_env,
    check_name,
    check_nccl_settings,
    nccl_env_warnings,
    rdma_device_names,
    render_env_file,
    render_value,
    validate_nccl_env,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, codes, errors, warnings

# The twins of the cabled CX7 port and the RDMA devices behind them (FACTS.md, ibdev2netdev on a Spark).
TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SPARK_RDMA = ['rocep1s0f1', 'roceP2p1s0f1']


def build_error(**kwargs):
    args = dict(interfaces=TWINS, rdma_devices=[])
    args.update(kwargs)
    with pytest.raises(NcclEnvError) as info:
        build_nccl_env(**args)
    return info.value


def pairs(problems):
    """(code, variable) of each problem: what the tests compare, never the wording."""
    return [(p['code'], p['variable']) for p in problems]


# ---- what the role writes --------------------------------------------------------------------------

def test_lab_without_rdma_uses_sockets_over_the_cx7_veths():
    env = build_nccl_env(TWINS, [])
    assert env == {
        'NCCL_SOCKET_IFNAME': '=enp1s0f1np1,enP2p1s0f1np1',
        'GLOO_SOCKET_IFNAME': 'enp1s0f1np1',
        'NCCL_IB_DISABLE': '1',
        'UCX_NET_DEVICES': 'enp1s0f1np1,enP2p1s0f1np1',
        'NCCL_DEBUG': 'WARN',
    }
    assert 'NCCL_IB_HCA' not in env
    assert 'enP7s7' not in render_env_file(env)


def test_spark_pins_both_rdma_devices_exactly():
    env = build_nccl_env(TWINS, SPARK_RDMA)
    assert env['NCCL_IB_HCA'] == '=rocep1s0f1,roceP2p1s0f1'
    assert env['NCCL_IB_DISABLE'] == '0'
    assert env['UCX_NET_DEVICES'] == 'rocep1s0f1:1,roceP2p1s0f1:1'
    assert 'NCCL_IB_HCA==rocep1s0f1,roceP2p1s0f1\n' in render_env_file(env)


def test_rdma_devices_as_dicts_keep_only_those_behind_the_configured_twins():
    devices = [
        {'name': 'rocep1s0f1', 'netdev': 'enp1s0f1np1'},
        {'name': 'rocep1s0f0', 'netdev': 'enp1s0f0np0'},   # the other, uncabled port
        {'name': 'roceP2p1s0f1', 'netdev': 'enP2p1s0f1np1'},
    ]
    assert rdma_device_names(devices, TWINS) == SPARK_RDMA
    assert build_nccl_env(TWINS, devices)['NCCL_IB_HCA'] == '=rocep1s0f1,roceP2p1s0f1'


def test_forced_ib_disable_drops_the_hca_and_warns_about_bandwidth():
    env = build_nccl_env(TWINS, SPARK_RDMA, ib_disable=True)
    assert env['NCCL_IB_DISABLE'] == '1'
    assert 'NCCL_IB_HCA' not in env
    found = nccl_env_warnings(env, (), TWINS, SPARK_RDMA)
    assert codes(found) == ['nccl-ib-disabled-with-rdma']
    assert found[0]['severity'] == 'warning' and '3 GB/s' in found[0]['what']
    assert pairs(check_nccl_settings(None, None, None, True, TWINS, SPARK_RDMA)) == [
        ('nccl-ib-disabled-with-rdma', 'nccl_env_ib_disable')]


def test_ib_required_but_no_rdma_device_fails():
    err = build_error(ib_disable=False)
    assert pairs(err.problems) == [('nccl-ib-disable-no-rdma', 'nccl_env_ib_disable')]
    assert 'ibdev2netdev' in err.problems[0]['fix']


def test_extras_override_computed_values_and_new_ones_follow_sorted():
    env = build_nccl_env(TWINS, SPARK_RDMA, extra={
        'NCCL_DEBUG': 'INFO', 'TORCH_NCCL_ASYNC_ERROR_HANDLING': 1, 'NCCL_DEBUG_SUBSYS': 'INIT,NET'})
    assert env['NCCL_DEBUG'] == 'INFO'
    assert list(env)[-2:] == ['NCCL_DEBUG_SUBSYS', 'TORCH_NCCL_ASYNC_ERROR_HANDLING']
    assert env['TORCH_NCCL_ASYNC_ERROR_HANDLING'] == '1'


# ---- dead, unknown and deliberate names ------------------------------------------------------------

@pytest.mark.parametrize('name, replacement', [
    ('NCCL_TREE_THRESHOLD', 'NCCL_ALGO / NCCL_PROTO'),
    ('NCCL_TIMEOUT', '--dist-timeout'),
    ('CUDA_MANAGED_MEMORY', 'unified'),
    ('NCCL_ASYNC_ERROR_HANDLING', 'TORCH_NCCL_ASYNC_ERROR_HANDLING'),
    ('NCCL_IB_GDR_LEVEL', 'NCCL_NET_GDR_LEVEL'),
    ('NCCL_WORK_FIFO_DEPTH', 'NCCL_WORK_FIFO_BYTES'),
])
def test_dead_variables_are_rejected_with_the_replacement_named(name, replacement):
    problems = validate_nccl_env({name: 1})
    assert pairs(problems) == [('nccl-dead-variable', 'nccl_env_extra')]
    assert name in problems[0]['what'] and replacement in problems[0]['message']


def test_dead_variables_stay_dead_even_when_marked_deliberate():
    assert codes(validate_nccl_env({'NCCL_TIMEOUT': 600}, deliberate=['NCCL_TIMEOUT'])) == ['nccl-dead-variable']


def test_unknown_nccl_variable_is_rejected_with_the_closest_real_name():
    [problem] = validate_nccl_env({'NCCL_SOCKET_IFNAMES': 'x'})
    assert (problem['code'], problem['variable']) == ('nccl-unknown-variable', 'nccl_env_extra')
    assert 'NCCL_SOCKET_IFNAME?' in problem['what']  # the closest real name
    assert 'nccl_env_deliberate' in problem['fix']


def test_unknown_nccl_variable_marked_deliberate_is_accepted():
    assert validate_nccl_env({'NCCL_FUTURE_KNOB': 1}, deliberate=['NCCL_FUTURE_KNOB']) == []
    env = build_nccl_env(TWINS, [], extra={'NCCL_FUTURE_KNOB': 1}, deliberate=['NCCL_FUTURE_KNOB'])
    assert env['NCCL_FUTURE_KNOB'] == '1'


def test_lower_case_nccl_name_is_rejected():
    [problem] = validate_nccl_env({'nccl_debug': 'INFO'})
    assert problem['code'] == 'nccl-lowercase-name'
    assert 'NCCL_DEBUG' in problem['fix']


def test_other_names_are_the_users_business_but_near_misses_are_typos():
    assert validate_nccl_env({'HF_HUB_OFFLINE': 1, 'TORCH_NCCL_DUMP_ON_TIMEOUT': 1}) == []
    [problem] = validate_nccl_env({'GLOO_SOCKET_IFNAMES': 'enp1s0f1np1'})
    assert problem['code'] == 'nccl-misspelt-variable'
    assert 'GLOO_SOCKET_IFNAME ' in problem['what'] + ' '
    assert validate_nccl_env({'GLOO_SOCKET_IFNAMES': 'x'}, deliberate=['GLOO_SOCKET_IFNAMES']) == []


@pytest.mark.parametrize('name', ['1NCCL', 'NCCL-DEBUG', 'A B', ''])
def test_invalid_names_are_rejected(name):
    assert pairs(check_name(name)) == [('nccl-bad-name', 'nccl_env_extra')]


def test_gid_index_is_valid_but_warned_about():
    env = {'NCCL_IB_GID_INDEX': 3}
    assert validate_nccl_env(env) == []
    [warning] = nccl_env_warnings(env)
    assert (warning['code'], warning['severity']) == ('nccl-discouraged-variable', 'warning')
    assert '2.21' in warning['what'] and 'NCCL_IB_ADDR_FAMILY' in warning['what']


def test_subnet_aware_routing_and_its_prefix_length_are_accepted_with_their_release():
    """NVIDIA's switch tool sets NCCL_IB_SUBNET_AWARE_ROUTING=1; both exist since NCCL 2.30.7 (not in 2.28.9)."""
    env = {'NCCL_IB_SUBNET_AWARE_ROUTING': 1, 'NCCL_IB_SUBNET_PREFIX_LEN': 24}
    assert validate_nccl_env(env) == []
    for name in env:
        assert _nccl.nccl_since(name) == '2.30.7'
    found = nccl_env_warnings(env)
    assert codes(found) == ['nccl-newer-variable'] * 2
    for item, name in zip(found, env):
        assert name in item['what'] and 'NCCL 2.30.7' in item['what'] and '2.30.7 or newer' in item['fix']
    built = build_nccl_env(TWINS, SPARK_RDMA, extra=env)
    assert (built['NCCL_IB_SUBNET_AWARE_ROUTING'], built['NCCL_IB_SUBNET_PREFIX_LEN']) == ('1', '24')


def test_newer_variable_warning_follows_the_assumed_release_and_deliberate_silences_it():
    assert _nccl.newer_variable_warning('NCCL_IB_SUBNET_AWARE_ROUTING', assumed='2.30.7') is None
    assert _nccl.newer_variable_warning('NCCL_IB_HCA') is None  # as old as the oldest tag read
    assert nccl_env_warnings({'NCCL_IB_SUBNET_AWARE_ROUTING': 1}, deliberate=['NCCL_IB_SUBNET_AWARE_ROUTING']) == []


@pytest.mark.parametrize('typo, real', [
    ('NCCL_IB_SUBNET_AWARE_ROUTNG', 'NCCL_IB_SUBNET_AWARE_ROUTING'),
    ('NCCL_IB_SUBNET_PREFIX_LENGTH', 'NCCL_IB_SUBNET_PREFIX_LEN'),
])
def test_misspelt_new_variable_is_refused_naming_the_real_one(typo, real):
    [problem] = validate_nccl_env({typo: 1})
    assert problem['code'] == 'nccl-unknown-variable'
    assert '%s?' % real in problem['what']


def test_variable_only_older_nccl_read_is_refused_with_its_last_release():
    [problem] = validate_nccl_env({'NCCL_RINGS': '0 1'})
    assert problem['code'] == 'nccl-removed-variable'
    assert '2.4.8' in problem['what'] and 'nccl_env_deliberate' in problem['fix']
    assert validate_nccl_env({'NCCL_RINGS': '0_1'}, deliberate=['NCCL_RINGS']) == []


def test_the_catalog_is_the_one_home_of_nccl_names():
    """_nccl keeps no list of NCCL variable names of its own besides the dead and discouraged ones."""
    assert KNOWN_NCCL_VARS == frozenset(_nccl_catalog.NCCL_VARS)
    assert not hasattr(_nccl, '_DOCUMENTED') and not hasattr(_nccl, '_READ_BUT_UNDOCUMENTED')
    assert set(_nccl.DISCOURAGED_VARS) <= KNOWN_NCCL_VARS
    assert not set(DEAD_VARS) & KNOWN_NCCL_VARS
    assert not {n for n in _nccl.OTHER_KNOWN_VARS if n.startswith('NCCL_')}


def _release(text):
    assert re.match(r'^2\.\d+\.\d+$', text), text
    return tuple(int(part) for part in text.split('.'))


def test_catalog_sanity():
    cat = _nccl_catalog
    newest = _release(cat.NCCL_RELEASE)
    assert cat.NCCL_TAG == 'v%s-1' % cat.NCCL_RELEASE or cat.NCCL_TAG.startswith('v%s-' % cat.NCCL_RELEASE)
    oldest = _release(cat.OLDEST_RELEASE_READ)
    assert len(cat.NCCL_VARS) > 200
    for name, since in cat.NCCL_VARS.items():
        assert re.match(r'^NCCL_[A-Z0-9_]+$', name), name
        assert oldest <= _release(since) <= newest, (name, since)
    for name, (first, last) in cat.REMOVED_VARS.items():
        assert name not in cat.NCCL_VARS
        assert oldest <= _release(first) <= _release(last) < newest, name
    assert cat.DOCUMENTED <= set(cat.NCCL_VARS)
    # old, well known variables carry the oldest release read; later ones the release FACTS.md gives
    for name in ('NCCL_IB_HCA', 'NCCL_SOCKET_IFNAME', 'NCCL_DEBUG', 'NCCL_IB_DISABLE', 'NCCL_IB_GID_INDEX'):
        assert cat.NCCL_VARS[name] == cat.OLDEST_RELEASE_READ, name
    assert _release(cat.NCCL_VARS['NCCL_IB_MERGE_NICS'])[:2] == (2, 20)
    assert _release(cat.NCCL_VARS['NCCL_IB_ADDR_RANGE'])[:2] == (2, 21)
    assert _release(cat.NCCL_VARS['NCCL_IB_SUBNET_AWARE_ROUTING']) > (2, 28, 9)
    # the removed ones that DEAD_VARS explains agree with it: NCCL_TREE_THRESHOLD went in 2.5
    assert _release(cat.REMOVED_VARS['NCCL_TREE_THRESHOLD'][1])[:2] == (2, 4)
    assert _release(cat.REMOVED_VARS['NCCL_WORK_FIFO_DEPTH'][1])[:2] == (2, 21)


def test_known_variables_include_the_common_ones_and_no_dead_one():
    for name in ('NCCL_SOCKET_IFNAME', 'NCCL_IB_HCA', 'NCCL_IB_DISABLE', 'NCCL_DEBUG', 'NCCL_DEBUG_SUBSYS',
                 'NCCL_IB_ADDR_RANGE', 'NCCL_IB_MERGE_NICS', 'NCCL_NET_GDR_LEVEL', 'NCCL_P2P_LEVEL',
                 'NCCL_CROSS_NIC', 'NCCL_CUMEM_ENABLE', 'NCCL_IB_USE_INLINE', 'NCCL_GRAPH_FILE'):
        assert name in KNOWN_NCCL_VARS, name
    assert not set(DEAD_VARS) & KNOWN_NCCL_VARS


# ---- the interfaces NCCL may use ---------------------------------------------------------------------

def test_management_interface_in_extras_is_rejected():
    err = build_error(extra={'NCCL_SOCKET_IFNAME': 'enP7s7'})
    assert pairs(err.problems) == [('nccl-not-cx7-interface', 'nccl_env_extra')]
    assert _cx7.NOT_CX7['enP7s7'] in err.problems[0]['what']  # says what the interface is


@pytest.mark.parametrize('value, code', [
    ('^docker,lo', 'nccl-exclude-list'), ('=enp1s0f1np1,enP7s7', 'nccl-not-cx7-interface'),
    ('en', 'nccl-not-cx7-interface')])
def test_socket_ifname_extras_must_name_only_cx7_twins(value, code):
    err = build_error(extra={'NCCL_SOCKET_IFNAME': value})
    assert codes(err.problems) == [code]
    assert 'NCCL_SOCKET_IFNAME' in err.problems[0]['what']


@pytest.mark.parametrize('name, value, code', [
    ('TP_SOCKET_IFNAME', 'enp1s0f1np1,enP2p1s0f1np1', 'nccl-single-interface'),
    ('OMPI_MCA_btl_tcp_if_include', '^lo', 'nccl-list-marker'),
    ('OMPI_MCA_btl_tcp_if_include', 'enP7s7', 'nccl-not-cx7-interface'),
])
def test_other_interface_lists(name, value, code):
    assert codes(build_error(extra={name: value}).problems) == [code]


def test_a_cidr_in_ompi_include_is_left_to_the_subnet_checks():
    assert build_nccl_env(TWINS, [], extra={'OMPI_MCA_btl_tcp_if_include': '192.168.100.0/24'})


def test_socket_ifname_extra_with_one_twin_is_accepted():
    env = build_nccl_env(TWINS, [], extra={'NCCL_SOCKET_IFNAME': '=enp1s0f1np1'})
    assert env['NCCL_SOCKET_IFNAME'] == '=enp1s0f1np1'


def test_gloo_does_not_understand_nccl_markers():
    err = build_error(extra={'GLOO_SOCKET_IFNAME': '=enp1s0f1np1'})
    assert pairs(err.problems) == [('nccl-list-marker', 'nccl_env_extra')]


def test_ib_hca_and_ucx_extras_must_name_found_devices():
    err = build_error(rdma_devices=SPARK_RDMA, extra={'NCCL_IB_HCA': '=mlx5_0', 'UCX_NET_DEVICES': 'all'})
    assert pairs(err.problems) == [('nccl-ib-hca-unknown-device', 'nccl_env_extra'),
                                   ('nccl-ucx-device', 'nccl_env_extra')]
    assert 'mlx5_0' in err.problems[0]['what'] and 'rocep1s0f1, roceP2p1s0f1' in err.problems[0]['what']
    assert 'UCX_NET_DEVICES=all' in err.problems[1]['what']
    env = build_nccl_env(TWINS, SPARK_RDMA, extra={'NCCL_IB_HCA': '=rocep1s0f1:1'})
    assert env['NCCL_IB_HCA'] == '=rocep1s0f1:1'


def test_ib_hca_exclusion_list_is_rejected_with_the_devices_to_pin():
    [problem] = build_error(rdma_devices=SPARK_RDMA, extra={'NCCL_IB_HCA': '^mlx5_0'}).problems
    assert problem['code'] == 'nccl-exclude-list' and '=rocep1s0f1,roceP2p1s0f1' in problem['fix']


# ---- before any node is probed: rdma_devices=None --------------------------------------------------

def test_device_names_wait_for_the_probe_but_their_form_does_not():
    extra = {'NCCL_IB_HCA': '=mlx5_0,rocep1s0f1:1', 'UCX_NET_DEVICES': 'mlx5_0:1,enp1s0f1np1'}
    assert validate_nccl_env(extra, (), TWINS, None) == []  # plausible: checked again once the devices are known
    assert codes(validate_nccl_env(extra, (), TWINS, SPARK_RDMA)) == ['nccl-ib-hca-unknown-device', 'nccl-ucx-device']


@pytest.mark.parametrize('extra, code', [
    ({'NCCL_IB_HCA': '=rocep1s0f1,'}, 'nccl-bad-device-name'),
    ({'NCCL_IB_HCA': '=rocep1s0f1:x'}, 'nccl-bad-device-name'),
    ({'NCCL_IB_HCA': 'roce p1'}, 'nccl-bad-device-name'),
    ({'NCCL_IB_HCA': '^rocep1s0f0'}, 'nccl-exclude-list'),
    ({'UCX_NET_DEVICES': 'all'}, 'nccl-ucx-device'),
    ({'UCX_NET_DEVICES': 'enP7s7'}, 'nccl-ucx-device'),          # the management port, whatever the probe finds
    ({'UCX_NET_DEVICES': 'enp1s0f0np0'}, 'nccl-ucx-device'),     # a CX7 netdev, but not one of the twins
    ({'UCX_NET_DEVICES': 'mlx5 0'}, 'nccl-ucx-device'),
])
def test_device_lists_before_the_probe_are_checked_for_form(extra, code):
    assert codes(validate_nccl_env(extra, (), TWINS, None)) == [code]


def test_rdma_dependent_checks_wait_for_the_probe():
    assert check_nccl_settings(None, None, None, False, TWINS, None) == []     # no devices known yet
    assert check_nccl_settings({'NCCL_IB_DISABLE': 1}, None, None, None, TWINS, None) == []
    assert codes(check_nccl_settings(None, None, None, False, TWINS, [])) == ['nccl-ib-disable-no-rdma']
    assert codes(check_nccl_settings({'NCCL_IB_DISABLE': 1}, None, None, None, TWINS, SPARK_RDMA)) == [
        'nccl-ib-disabled-with-rdma']


# ---- the four settings together ------------------------------------------------------------------

def test_check_nccl_settings_defaults_are_valid():
    assert check_nccl_settings(None, None, None, None, TWINS) == []
    assert check_nccl_settings({}, [], 'WARN', None, TWINS, SPARK_RDMA) == []


def test_check_nccl_settings_reports_every_setting_with_its_variable():
    found = check_nccl_settings({'NCCL_TIMEOUT': 1, 'NCCL_IB_GID_INDEX': 3}, 'NCCL_X', 'LOUD', 'yes', TWINS, SPARK_RDMA)
    assert sorted(pairs(errors(found))) == sorted([
        ('nccl-ib-disable-value', 'nccl_env_ib_disable'), ('nccl-debug-level', 'nccl_env_debug'),
        ('nccl-deliberate-not-list', 'nccl_env_deliberate'), ('nccl-dead-variable', 'nccl_env_extra')])
    assert pairs(warnings(found)) == [('nccl-discouraged-variable', 'nccl_env_extra')]
    assert all(p['where'] is None and p['hosts'] == [] for p in found)  # the caller places them


def test_check_nccl_settings_checks_extras_without_a_broken_interface_list():
    # The interface list's own problems are check_interfaces()'s (and the cluster plan's); the extras are still checked.
    assert codes(check_nccl_settings({'NCCL_TIMEOUT': 1, 'NCCL_SOCKET_IFNAME': 'enP7s7'}, None, None, None,
                                     'enp1s0f1np1')) == ['nccl-dead-variable']


def test_check_nccl_settings_and_build_agree():
    extra = {'NCCL_TIMEOUT': 1, 'NCCL_SOCKET_IFNAME': 'enP7s7', 'NCCL_IB_HCA': '=mlx5_0'}
    err = build_error(rdma_devices=SPARK_RDMA, extra=extra, debug='LOUD', ib_disable='no')
    assert err.problems == errors(check_nccl_settings(extra, (), 'LOUD', 'no', TWINS, SPARK_RDMA))


def test_extra_not_a_dict_is_a_problem():
    assert pairs(validate_nccl_env(['NCCL_DEBUG=INFO'])) == [('nccl-extra-not-dict', 'nccl_env_extra')]


class _AnsibleLazyTemplateList(list):
    """Stands in for Ansible's lazy list, whose type name a message must never show."""


@pytest.mark.parametrize('extra, words', [
    (None, 'got null'), (_AnsibleLazyTemplateList(['x']), 'got a list'), ('NCCL_DEBUG=INFO', 'got a string'),
    ({'NCCL_DEBUG_SUBSYS': None}, 'null is not'), ({'NCCL_DEBUG_SUBSYS': _AnsibleLazyTemplateList()}, 'a list is not'),
])
def test_messages_speak_of_kinds_not_python_types(extra, words):
    [item] = validate_nccl_env(extra)
    assert words in item['what']
    for word in ('_Ansible', 'Lazy', 'NoneType', '<class'):
        assert word not in item['message'], item['message']


@pytest.mark.parametrize('interfaces', [
    ['enP7s7'], ['enp1s0f1np1', 'enp1s0f1np1'], [], 'enp1s0f1np1', ['a,b'], [{'name': 'enp1s0f1np1'}], None])
def test_bad_interface_lists_are_rejected(interfaces):
    with pytest.raises(NcclEnvError) as info:
        build_nccl_env(interfaces, [])
    assert info.value.problems
    assert {p['variable'] for p in info.value.problems} == {'spark_cx7_interfaces'}


@pytest.mark.parametrize('interfaces, code', [
    (None, 'nccl-interfaces'), ([], 'nccl-interfaces'), ('enp1s0f1np1', 'nccl-interfaces'),
    (['a,b'], 'nccl-interface-bad-name'), ([{'name': 'enp1s0f1np1'}], 'nccl-interface-bad-name'),
    (['enP7s7'], 'nccl-not-cx7-interface'), (['lo', 'enp1s0f1np1'], 'nccl-not-cx7-interface'),
    (['enp1s0f1np1', 'enp1s0f1np1'], 'nccl-interface-twice')])
def test_bad_interface_lists_codes(interfaces, code):
    with pytest.raises(NcclEnvError) as info:
        build_nccl_env(interfaces, [])
    assert codes(info.value.problems) == [code]


# ---- values and the file -------------------------------------------------------------------------

@pytest.mark.parametrize('value, text', [(True, '1'), (False, '0'), (4, '4'), (0.5, '0.5'), ('INFO', 'INFO')])
def test_values_render_as_strings_with_bools_as_1_and_0(value, text):
    assert render_value(value) == text


def test_bool_extras_are_written_as_1_and_0():
    env = build_nccl_env(TWINS, SPARK_RDMA, extra={'NCCL_IB_MERGE_NICS': False, 'NCCL_CROSS_NIC': True})
    assert (env['NCCL_IB_MERGE_NICS'], env['NCCL_CROSS_NIC']) == ('0', '1')


@pytest.mark.parametrize('value', ['INFO\nNCCL_IB_HCA=mlx5_0', 'a\rb', 'a\x00b'])
def test_values_with_line_breaks_are_rejected(value):
    [problem] = validate_nccl_env({'NCCL_DEBUG_SUBSYS': value})
    assert problem['code'] == 'env-value-control'
    with pytest.raises(NcclEnvError) as info:
        render_env_file({'NCCL_DEBUG_SUBSYS': value})
    assert codes(info.value.problems) == ['env-value-control']


@pytest.mark.parametrize('value, code', [
    ('"INIT,NET"', 'env-value-quote'), ("'INIT'", 'env-value-quote'), ('a\\b', 'env-value-backslash'),
    ('$HOME/topo.xml', 'env-value-expansion'), (' INIT', 'env-value-edge-space'), ('INIT ', 'env-value-edge-space'),
    ('caf\u00e9', 'env-value-non-ascii'), ('a\tb', 'env-value-control')])
def test_values_outside_the_env_file_format_are_refused_not_quoted(value, code):
    [problem] = validate_nccl_env({'NCCL_DEBUG_SUBSYS': value})
    assert (problem['code'], problem['variable']) == (code, 'nccl_env_extra')
    assert 'NCCL_DEBUG_SUBSYS' in problem['what'] and 'bare' in problem['fix']
    with pytest.raises(NcclEnvError) as info:
        render_env_file({'NCCL_DEBUG_SUBSYS': value})
    assert codes(info.value.problems) == [code]


def test_a_refused_value_reaches_preflight_with_the_host():
    """check_nccl_settings (what preflight runs per host) reports the format problem, so preflight stops first."""
    problems = check_nccl_settings({'NCCL_DEBUG_SUBSYS': '"INIT"'}, None, None, None, TWINS, SPARK_RDMA)
    assert codes(errors(problems)) == ['env-value-quote']


def test_render_env_file_rejects_bad_names_and_values_by_code():
    with pytest.raises(NcclEnvError) as info:
        render_env_file({'1X': 'a', 'NCCL_DEBUG': None, 'OK': 'fine'})
    assert codes(info.value.problems) == ['nccl-bad-name', 'nccl-bad-value']


@pytest.mark.parametrize('value', [None, ['a'], {'a': 1}])
def test_values_that_are_not_scalars_are_rejected(value):
    [problem] = validate_nccl_env({'NCCL_DEBUG_SUBSYS': value})
    assert (problem['code'], problem['variable']) == ('nccl-bad-value', 'nccl_env_extra')


def test_the_file_holds_bare_values_only():
    text = render_env_file({'NCCL_SOCKET_IFNAME': '=enp1s0f1np1,enP2p1s0f1np1', 'NCCL_DEBUG_FILE': '/tmp/nccl.%h.%p',
                            'NCCL_DEBUG_TIMESTAMP_FORMAT': '[%F %T]', 'NCCL_ALGO': 'allreduce:tree;allgather:ring',
                            'NCCL_COMM_ID': ''})
    assert text.endswith('NCCL_SOCKET_IFNAME==enp1s0f1np1,enP2p1s0f1np1\nNCCL_DEBUG_FILE=/tmp/nccl.%h.%p\n'
                         'NCCL_DEBUG_TIMESTAMP_FORMAT=[%F %T]\nNCCL_ALGO=allreduce:tree;allgather:ring\n'
                         'NCCL_COMM_ID=\n')
    assert '"' not in text


def test_nccl_debug_value_is_checked():
    assert validate_nccl_env({'NCCL_DEBUG': 'info'}) == []
    assert pairs(validate_nccl_env({'NCCL_DEBUG': 'LOUD'})) == [('nccl-debug-level', 'nccl_env_extra')]
    assert pairs(build_error(debug='LOUD').problems) == [('nccl-debug-level', 'nccl_env_debug')]
    assert pairs(validate_nccl_env({'NCCL_IB_DISABLE': 2})) == [('nccl-ib-disable-value', 'nccl_env_extra')]
    assert pairs(build_error(ib_disable='yes').problems) == [('nccl-ib-disable-value', 'nccl_env_ib_disable')]


def test_debug_none_is_the_role_default():
    assert build_nccl_env(TWINS, [], debug=None)['NCCL_DEBUG'] == 'WARN'


def test_every_problem_is_reported_not_only_the_first():
    err = build_error(extra={
        'NCCL_TREE_THRESHOLD': 0, 'NCCL_TIMEOUT': 1800, 'CUDA_MANAGED_MEMORY': 1,
        'NCCL_SOCKET_IFNAME': 'enP7s7', 'NCCL_BOGUS': 1, 'NCCL_DEBUG_SUBSYS': 'a\nb'})
    assert codes(err.problems) == ['nccl-dead-variable'] * 3 + [
        'nccl-not-cx7-interface', 'nccl-unknown-variable', 'env-value-control']
    assert str(err).startswith('The NCCL environment has 6 problems:')
    assert isinstance(err, ProblemsError) and err.subject == 'The NCCL environment'
    for number, item in enumerate(err.problems, 1):
        assert '  %d. %s' % (number, item['message']) in str(err)


def test_naming_rules_come_from_cx7():
    """One home for each naming rule: _nccl uses _cx7's, and keeps no interface-name regex or list of its own."""
    for name in ('NOT_CX7_INTERFACES', '_IFNAME', 'format_problems'):
        assert not hasattr(_nccl, name), name
    assert _nccl.NOT_CX7 is _cx7.NOT_CX7 and _nccl.is_ifname is _cx7.is_ifname
    for node in ast.walk(ast.parse(inspect.getsource(_nccl))):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'compile':
            pattern = node.args[0].value
            assert not any(part in pattern for part in ('A-Za-z0-9_.:-', '{1,15}', 'np', '(?:P')), pattern


def test_rendered_file_has_a_header_and_one_line_per_variable():
    text = render_env_file(build_nccl_env(TWINS, []))
    lines = text.splitlines()
    assert lines[0].startswith('# ')
    body = [line for line in lines if not line.startswith('#')]
    assert body == [
        'NCCL_SOCKET_IFNAME==enp1s0f1np1,enP2p1s0f1np1',
        'GLOO_SOCKET_IFNAME=enp1s0f1np1',
        'NCCL_IB_DISABLE=1',
        'UCX_NET_DEVICES=enp1s0f1np1,enP2p1s0f1np1',
        'NCCL_DEBUG=WARN',
    ]
    assert text.endswith('\n')
