# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_nccl.py: the NCCL environment's rules, from FACTS.md and NCCL's env docs."""

from __future__ import annotations

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import (
    DEAD_VARS,
    KNOWN_NCCL_VARS,
    NcclEnvError,
    build_nccl_env,
    check_name,
    nccl_env_warnings,
    quote_value,
    rdma_device_names,
    render_env_file,
    render_value,
    validate_nccl_env,
)

# The twins of the cabled CX7 port and the RDMA devices behind them (FACTS.md, ibdev2netdev on a Spark).
TWINS = ['enp1s0f1np1', 'enP2p1s0f1np1']
SPARK_RDMA = ['rocep1s0f1', 'roceP2p1s0f1']


def build_error(**kwargs):
    args = dict(interfaces=TWINS, rdma_devices=[])
    args.update(kwargs)
    with pytest.raises(NcclEnvError) as info:
        build_nccl_env(**args)
    return info.value


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
    warnings = nccl_env_warnings(env, (), TWINS, SPARK_RDMA)
    assert any('3 GB/s' in w for w in warnings)


def test_ib_required_but_no_rdma_device_fails():
    err = build_error(ib_disable=False)
    assert 'nccl_env_ib_disable is false' in str(err)
    assert 'ibdev2netdev' in str(err)


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
    assert len(problems) == 1
    assert name in problems[0] and replacement in problems[0]
    assert 'nccl_env_extra' in problems[0]


def test_dead_variables_stay_dead_even_when_marked_deliberate():
    assert validate_nccl_env({'NCCL_TIMEOUT': 600}, deliberate=['NCCL_TIMEOUT'])


def test_unknown_nccl_variable_is_rejected_with_the_closest_real_name():
    [problem] = validate_nccl_env({'NCCL_SOCKET_IFNAMES': 'x'})
    assert 'not an NCCL variable' in problem
    assert 'did you mean NCCL_SOCKET_IFNAME?' in problem
    assert 'nccl_env_deliberate' in problem


def test_unknown_nccl_variable_marked_deliberate_is_accepted():
    assert validate_nccl_env({'NCCL_FUTURE_KNOB': 1}, deliberate=['NCCL_FUTURE_KNOB']) == []
    env = build_nccl_env(TWINS, [], extra={'NCCL_FUTURE_KNOB': 1}, deliberate=['NCCL_FUTURE_KNOB'])
    assert env['NCCL_FUTURE_KNOB'] == '1'


def test_lower_case_nccl_name_is_rejected():
    [problem] = validate_nccl_env({'nccl_debug': 'INFO'})
    assert 'use NCCL_DEBUG' in problem


def test_other_names_are_the_users_business_but_near_misses_are_typos():
    assert validate_nccl_env({'HF_HUB_OFFLINE': 1, 'TORCH_NCCL_DUMP_ON_TIMEOUT': 1}) == []
    [problem] = validate_nccl_env({'GLOO_SOCKET_IFNAMES': 'enp1s0f1np1'})
    assert 'misspelt GLOO_SOCKET_IFNAME' in problem
    assert validate_nccl_env({'GLOO_SOCKET_IFNAMES': 'x'}, deliberate=['GLOO_SOCKET_IFNAMES']) == []


@pytest.mark.parametrize('name', ['1NCCL', 'NCCL-DEBUG', 'A B', ''])
def test_invalid_names_are_rejected(name):
    assert 'not a valid environment variable name' in check_name(name)[0]


def test_gid_index_is_valid_but_warned_about():
    env = {'NCCL_IB_GID_INDEX': 3}
    assert validate_nccl_env(env) == []
    [warning] = nccl_env_warnings(env)
    assert '2.21' in warning and 'NCCL_IB_ADDR_FAMILY' in warning


def test_known_variables_include_the_common_ones_and_no_dead_one():
    for name in ('NCCL_SOCKET_IFNAME', 'NCCL_IB_HCA', 'NCCL_IB_DISABLE', 'NCCL_DEBUG', 'NCCL_DEBUG_SUBSYS',
                 'NCCL_IB_ADDR_RANGE', 'NCCL_IB_MERGE_NICS', 'NCCL_NET_GDR_LEVEL', 'NCCL_P2P_LEVEL',
                 'NCCL_CROSS_NIC', 'NCCL_CUMEM_ENABLE', 'NCCL_IB_USE_INLINE', 'NCCL_GRAPH_FILE'):
        assert name in KNOWN_NCCL_VARS, name
    assert not set(DEAD_VARS) & KNOWN_NCCL_VARS


# ---- the interfaces NCCL may use ---------------------------------------------------------------------

def test_management_interface_in_extras_is_rejected():
    err = build_error(extra={'NCCL_SOCKET_IFNAME': 'enP7s7'})
    assert 'would route NCCL over the management network' in str(err)
    assert 'the 10 GbE management port' in str(err)


@pytest.mark.parametrize('value', ['^docker,lo', '=enp1s0f1np1,enP7s7', 'en'])
def test_socket_ifname_extras_must_name_only_cx7_twins(value):
    err = build_error(extra={'NCCL_SOCKET_IFNAME': value})
    assert 'NCCL_SOCKET_IFNAME' in str(err)


def test_socket_ifname_extra_with_one_twin_is_accepted():
    env = build_nccl_env(TWINS, [], extra={'NCCL_SOCKET_IFNAME': '=enp1s0f1np1'})
    assert env['NCCL_SOCKET_IFNAME'] == '=enp1s0f1np1'


def test_gloo_does_not_understand_nccl_markers():
    err = build_error(extra={'GLOO_SOCKET_IFNAME': '=enp1s0f1np1'})
    assert 'does not understand' in str(err)


def test_ib_hca_and_ucx_extras_must_name_found_devices():
    err = build_error(rdma_devices=SPARK_RDMA, extra={'NCCL_IB_HCA': '=mlx5_0', 'UCX_NET_DEVICES': 'all'})
    assert len(err.problems) == 2
    assert 'mlx5_0' in err.problems[0] and 'rocep1s0f1, roceP2p1s0f1' in err.problems[0]
    assert 'UCX_NET_DEVICES=all' in err.problems[1]
    env = build_nccl_env(TWINS, SPARK_RDMA, extra={'NCCL_IB_HCA': '=rocep1s0f1:1'})
    assert env['NCCL_IB_HCA'] == '=rocep1s0f1:1'


@pytest.mark.parametrize('interfaces', [
    ['enP7s7'], ['enp1s0f1np1', 'enp1s0f1np1'], [], 'enp1s0f1np1', ['a,b'], [{'name': 'enp1s0f1np1'}], None])
def test_bad_interface_lists_are_rejected(interfaces):
    with pytest.raises(NcclEnvError) as info:
        build_nccl_env(interfaces, [])
    assert 'spark_cx7_interfaces' in str(info.value)


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
    assert 'line break or control character' in problem
    with pytest.raises(NcclEnvError):
        render_env_file({'NCCL_DEBUG_SUBSYS': value})


@pytest.mark.parametrize('value', [None, ['a'], {'a': 1}])
def test_values_that_are_not_scalars_are_rejected(value):
    [problem] = validate_nccl_env({'NCCL_DEBUG_SUBSYS': value})
    assert 'not a value an environment variable can take' in problem


def test_values_needing_quotes_are_quoted_for_systemd():
    assert quote_value('=enp1s0f1np1,enP2p1s0f1np1') == '=enp1s0f1np1,enP2p1s0f1np1'
    assert quote_value('/tmp/nccl.%h.%p') == '/tmp/nccl.%h.%p'
    assert quote_value('a b') == '"a b"'
    assert quote_value('say "hi" $HOME `x` \\') == '"say \\"hi\\" \\$HOME \\`x\\` \\\\"'
    assert quote_value('') == ''


def test_nccl_debug_value_is_checked():
    assert validate_nccl_env({'NCCL_DEBUG': 'info'}) == []
    assert 'not one of VERSION, WARN, INFO, TRACE' in validate_nccl_env({'NCCL_DEBUG': 'LOUD'})[0]
    assert 'nccl_env_debug must be one of' in str(build_error(debug='LOUD'))


def test_every_problem_is_reported_not_only_the_first():
    err = build_error(extra={
        'NCCL_TREE_THRESHOLD': 0, 'NCCL_TIMEOUT': 1800, 'CUDA_MANAGED_MEMORY': 1,
        'NCCL_SOCKET_IFNAME': 'enP7s7', 'NCCL_BOGUS': 1, 'NCCL_DEBUG_SUBSYS': 'a\nb'})
    assert len(err.problems) == 6
    assert str(err).startswith('The NCCL environment has 6 problems:')


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
