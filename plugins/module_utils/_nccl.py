# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one home of NCCL environment knowledge in dgxspark.sglang.

Pure functions, no Ansible objects: build the environment that NCCL (and gloo, UCX) need to talk
over the CX7 twins, check a user's extra variables against NCCL's real variable set, and render the
result as a systemd ``EnvironmentFile=``. The ``dgxspark.sglang.nccl_env`` filters and the
``nccl_env`` role are thin wrappers around this file.

Sources of the variable lists below:

* ``KNOWN_NCCL_VARS``: every variable documented in NCCL's own environment reference
  (``docs/userguide/source/env.rst`` in NVIDIA/nccl at v2.30.7-1) that NCCL 2.30 still reads,
  plus a few that the 2.30.7 sources read but the page does not document (marked below).
* ``DEAD_VARS``: variables that page marks as removed (with the NCCL version), variables that the
  NCCL sources stopped reading (found with ``git log -S`` on NVIDIA/nccl), PyTorch's old
  ``NCCL_*`` spellings of its own ``TORCH_NCCL_*`` variables, and invented names that older
  DGX Spark guides spread (FACTS.md).
"""

from __future__ import annotations

import difflib
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import (
    DEFAULT_TWINS,
    NOT_CX7,
    expected_rdma_name,
    is_cx7_name,
    is_ifname,
    is_rdma_name,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import (
    ProblemsError,
    errors,
    kind,
    problem,
    warning,
    warnings,
)

# Documented in NCCL's env.rst (v2.30.7-1) and still read by NCCL 2.30.
_DOCUMENTED = frozenset((
    'NCCL_ALGO', 'NCCL_ALLOC_P2P_NET_LL_BUFFERS', 'NCCL_BUFFSIZE', 'NCCL_CGA_CLUSTER_SIZE',
    'NCCL_CHECK_MODE', 'NCCL_CHECK_POINTERS', 'NCCL_COLLNET_ENABLE', 'NCCL_COLLNET_NODE_THRESHOLD',
    'NCCL_COMM_BLOCKING', 'NCCL_CONF_FILE', 'NCCL_CROSS_NIC', 'NCCL_CTA_POLICY', 'NCCL_CUMEM_ENABLE',
    'NCCL_CUMEM_HOST_ENABLE', 'NCCL_DEBUG', 'NCCL_DEBUG_FILE', 'NCCL_DEBUG_SUBSYS',
    'NCCL_DEBUG_TIMESTAMP_FORMAT', 'NCCL_DEBUG_TIMESTAMP_LEVELS', 'NCCL_DMABUF_ENABLE', 'NCCL_ENV_PLUGIN',
    'NCCL_GRAPH_MIXING_SUPPORT', 'NCCL_GRAPH_REGISTER', 'NCCL_GRAPH_STREAM_ORDERING',
    'NCCL_IB_ADAPTIVE_ROUTING', 'NCCL_IB_ADDR_FAMILY', 'NCCL_IB_ADDR_RANGE', 'NCCL_IB_AR_THRESHOLD',
    'NCCL_IB_DISABLE', 'NCCL_IB_ECE_ENABLE', 'NCCL_IB_FIFO_TC', 'NCCL_IB_GID_INDEX', 'NCCL_IB_HCA',
    'NCCL_IB_MERGE_NICS', 'NCCL_IB_OOO_RQ', 'NCCL_IB_PCI_RELAXED_ORDERING', 'NCCL_IB_QPS_PER_CONNECTION',
    'NCCL_IB_RETRY_CNT', 'NCCL_IB_RETURN_ASYNC_EVENTS', 'NCCL_IB_ROCE_VERSION_NUM', 'NCCL_IB_SL',
    'NCCL_IB_SPLIT_DATA_ON_QPS', 'NCCL_IB_TC', 'NCCL_IB_TIMEOUT', 'NCCL_IGNORE_COLLNET_MISMATCH',
    'NCCL_IGNORE_CPU_AFFINITY', 'NCCL_IGNORE_NET_MISMATCH', 'NCCL_IPC_USE_ABSTRACT_SOCKET',
    'NCCL_LAUNCH_MODE', 'NCCL_LAUNCH_ORDER_IMPLICIT', 'NCCL_LAUNCH_RACE_FATAL',
    'NCCL_LEGACY_CUDA_REGISTER', 'NCCL_LOCAL_REGISTER', 'NCCL_MAX_CTAS', 'NCCL_MAX_NCHANNELS',
    'NCCL_MEM_SYNC_DOMAIN', 'NCCL_MIN_CTAS', 'NCCL_MIN_NCHANNELS', 'NCCL_MNNVL_CLIQUE_ID',
    'NCCL_MNNVL_ENABLE', 'NCCL_MNNVL_UUID', 'NCCL_MULTI_RANK_GPU_ENABLE', 'NCCL_NET',
    'NCCL_NETDEVS_POLICY', 'NCCL_NET_GDR_C2C', 'NCCL_NET_GDR_LEVEL', 'NCCL_NET_GDR_READ',
    'NCCL_NET_MERGE_POLICY', 'NCCL_NET_PLUGIN', 'NCCL_NET_SHARED_BUFFERS', 'NCCL_NET_SHARED_COMMS',
    'NCCL_NSOCKS_PERTHREAD', 'NCCL_NTHREADS', 'NCCL_NVB_DISABLE', 'NCCL_NVLS_ENABLE',
    'NCCL_OOB_NET_ENABLE', 'NCCL_OOB_NET_IFNAME', 'NCCL_P2P_DIRECT_DISABLE', 'NCCL_P2P_DISABLE',
    'NCCL_P2P_LEVEL', 'NCCL_P2P_LL_THRESHOLD', 'NCCL_P2P_NET_CHUNKSIZE', 'NCCL_P2P_PXN_LEVEL',
    'NCCL_PROFILER_PLUGIN', 'NCCL_PROTO', 'NCCL_PXN_C2C', 'NCCL_PXN_DISABLE', 'NCCL_RAS_ADDR',
    'NCCL_RAS_ENABLE', 'NCCL_RAS_TIMEOUT_FACTOR', 'NCCL_RUNTIME_CONNECT', 'NCCL_SET_STACK_SIZE',
    'NCCL_SET_THREAD_NAME', 'NCCL_SHM_DISABLE', 'NCCL_SOCKET_FAMILY', 'NCCL_SOCKET_IFNAME',
    'NCCL_SOCKET_MAGIC', 'NCCL_SOCKET_NTHREADS', 'NCCL_SOCKET_POLL_TIMEOUT_MSEC',
    'NCCL_SOCKET_RETRY_CNT', 'NCCL_SOCKET_RETRY_SLEEP_MSEC', 'NCCL_SYM_GIN_KERNELS_ENABLE',
    'NCCL_TOPO_DUMP_FILE', 'NCCL_TOPO_FILE', 'NCCL_TUNER_PLUGIN', 'NCCL_UID_STAGGER_RATE',
    'NCCL_UID_STAGGER_THRESHOLD', 'NCCL_WIN_ENABLE',
))

# Read by the NCCL 2.30.7 sources (NCCL_PARAM / ncclGetEnv) but not on the env.rst page; the
# *_NRINGS aliases are mentioned in the text of NCCL_MIN/MAX_NCHANNELS.
_READ_BUT_UNDOCUMENTED = frozenset((
    'NCCL_COMM_ID', 'NCCL_GRAPH_DUMP_FILE', 'NCCL_GRAPH_FILE', 'NCCL_HOSTID', 'NCCL_IB_USE_INLINE',
    'NCCL_MAX_NRINGS', 'NCCL_MIN_NRINGS', 'NCCL_WORK_FIFO_BYTES',
))

KNOWN_NCCL_VARS = _DOCUMENTED | _READ_BUT_UNDOCUMENTED

# Rejected, each with what to do instead.
DEAD_VARS = {
    'NCCL_TREE_THRESHOLD': 'removed in NCCL 2.5; use NCCL_ALGO / NCCL_PROTO',
    'NCCL_LL_THRESHOLD': 'removed in NCCL 2.5; use NCCL_PROTO',
    'NCCL_SINGLE_RING_THRESHOLD': 'removed in NCCL 2.3; remove it (NCCL_MIN_CTAS / NCCL_MAX_CTAS set the channel count)',
    'NCCL_IB_CUDA_SUPPORT': 'removed in NCCL 2.4.0; use NCCL_NET_GDR_LEVEL',
    'NCCL_IB_GDR_LEVEL': 'renamed in NCCL 2.4.0; use NCCL_NET_GDR_LEVEL',
    'NCCL_CHECKS_DISABLE': 'deprecated in NCCL 2.2.12 and no longer read; remove it (argument checks are off by default, see NCCL_CHECK_MODE)',
    'NCCL_WORK_FIFO_DEPTH': 'removed in NCCL 2.22; use NCCL_WORK_FIFO_BYTES',
    'NCCL_TIMEOUT': 'no such variable; the process-group timeout is SGLang\'s --dist-timeout (sglang_server_args: {dist-timeout: 600})',
    'CUDA_MANAGED_MEMORY': 'no such CUDA variable; GB10 memory is unified already, remove it',
    'NCCL_ASYNC_ERROR_HANDLING': 'PyTorch\'s deprecated spelling; use TORCH_NCCL_ASYNC_ERROR_HANDLING',
    'NCCL_BLOCKING_WAIT': 'PyTorch\'s deprecated spelling; use TORCH_NCCL_BLOCKING_WAIT',
    'NCCL_DESYNC_DEBUG': 'PyTorch\'s deprecated spelling; use TORCH_NCCL_DESYNC_DEBUG',
}

# Valid, but NCCL's documentation advises against them: a warning, not an error.
DISCOURAGED_VARS = {
    'NCCL_IB_GID_INDEX': 'since NCCL 2.21 the GID is chosen automatically (NCCL_IB_ADDR_FAMILY, NCCL_IB_ADDR_RANGE, '
                         'NCCL_IB_ROCE_VERSION_NUM); NCCL\'s troubleshooting guide says not to set it on 2.21+',
    'NCCL_CHECK_POINTERS': 'deprecated in NCCL 2.29.7; use NCCL_CHECK_MODE=DEBUG_LOCAL',
    'NCCL_MIN_NCHANNELS': 'deprecated in NCCL 2.17; use NCCL_MIN_CTAS',
    'NCCL_MAX_NCHANNELS': 'deprecated in NCCL 2.17; use NCCL_MAX_CTAS',
    'NCCL_MIN_NRINGS': 'the pre-2.5 alias of NCCL_MIN_NCHANNELS; use NCCL_MIN_CTAS',
    'NCCL_MAX_NRINGS': 'the pre-2.5 alias of NCCL_MAX_NCHANNELS; use NCCL_MAX_CTAS',
}

# Non-NCCL names this collection knows. Any other non-NCCL_ name is the user's business, except a
# near miss of one of these (GLOO_SOCKET_IFNAMES), which is a typo until marked deliberate.
OTHER_KNOWN_VARS = frozenset((
    'GLOO_SOCKET_IFNAME', 'TP_SOCKET_IFNAME', 'UCX_NET_DEVICES', 'OMPI_MCA_btl_tcp_if_include',
    'TORCH_NCCL_ASYNC_ERROR_HANDLING', 'TORCH_NCCL_BLOCKING_WAIT', 'TORCH_NCCL_DESYNC_DEBUG',
    'CUDA_VISIBLE_DEVICES', 'CUDA_DEVICE_MAX_CONNECTIONS',
))

# Values NCCL_DEBUG accepts (env.rst).
NCCL_DEBUG_LEVELS = ('VERSION', 'WARN', 'INFO', 'TRACE')

# Variables whose value selects network interfaces or devices, and how the value is written.
_IFNAME_LIST_VARS = ('NCCL_SOCKET_IFNAME', 'GLOO_SOCKET_IFNAME', 'TP_SOCKET_IFNAME', 'OMPI_MCA_btl_tcp_if_include')

VAR_EXTRA = 'nccl_env_extra'
VAR_DELIBERATE = 'nccl_env_deliberate'
VAR_INTERFACES = 'spark_cx7_interfaces'
VAR_IB_DISABLE = 'nccl_env_ib_disable'
VAR_DEBUG = 'nccl_env_debug'

# The role's default of nccl_env_debug (roles/nccl_env/defaults/main.yml): what None stands for.
DEFAULT_DEBUG = 'WARN'

_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
# RDMA device names (IB_DEVICE_NAME_MAX is 64 with the NUL): rocep1s0f1, roceP2p1s0f1, mlx5_0. Not an interface name:
# those rules live in _cx7.
# Written bare in the file; anything else printable is double-quoted.
_BARE_VALUE = re.compile(r'^[A-Za-z0-9_.,:/=@%+^-]*$')
# Characters that need a backslash inside systemd's double quotes.
_QUOTE_ESCAPE = re.compile(r'(["\\`$])')

HEADER = (
    '# NCCL environment for SGLang, written by the dgxspark.sglang.nccl_env role.\n'
    '# Read by systemd (EnvironmentFile=); edit nccl_env_extra in the inventory, not this file.\n'
)

_TWINS_EXAMPLE = '[%s]' % ', '.join(DEFAULT_TWINS)


class NcclEnvError(ProblemsError):
    """Every problem found in one NCCL environment, not only the first."""

    subject = 'The NCCL environment'


def render_value(value):
    """The string form of a value: bool -> 1/0, numbers as written; None and containers are errors."""
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return str(value)
    raise TypeError('%s is not a value an environment variable can take' % kind(value))


def _split_list(value):
    return [item.strip() for item in value.split(',')]


def rdma_device_names(rdma_devices, interfaces=None):
    """RDMA device names from a list of names or of dicts (``name`` plus an optional ``netdev``).

    With dicts that carry ``netdev``, only the devices behind ``interfaces`` are kept.
    """
    names = []
    for dev in rdma_devices or ():
        if isinstance(dev, dict):
            name = dev.get('name') or dev.get('device')
            netdev = dev.get('netdev')
            if interfaces is not None and netdev is not None and netdev not in interfaces:
                continue
        else:
            name = dev
        if name and str(name) not in names:
            names.append(str(name))
    return names


def check_interfaces(interfaces):
    """Problems with the list of CX7 interfaces itself (``spark_cx7_interfaces``)."""
    if isinstance(interfaces, str) or not isinstance(interfaces, (list, tuple)) or not interfaces:
        return [problem('nccl-interfaces', VAR_INTERFACES, 'must be a non-empty list of the CX7 twins, got %r'
                        % (interfaces,), 'write e.g. %s: %s' % (VAR_INTERFACES, _TWINS_EXAMPLE))]
    problems = []
    for name in interfaces:
        if not is_ifname(name):
            problems.append(problem('nccl-interface-bad-name', VAR_INTERFACES, '%r is not an interface name (at most '
                                    '15 characters, no commas or spaces)' % (name,), 'list the CX7 twins, e.g. %s'
                                    % _TWINS_EXAMPLE))
        elif name in NOT_CX7:
            problems.append(problem('nccl-not-cx7-interface', VAR_INTERFACES, 'names %s, %s, not a CX7 twin: NCCL '
                                    'would run over it' % (name, NOT_CX7[name]), 'list the CX7 twins, e.g. %s'
                                    % _TWINS_EXAMPLE))
    names = [name for name in interfaces if isinstance(name, str)]
    if len(set(names)) != len(names):
        problems.append(problem('nccl-interface-twice', VAR_INTERFACES, 'lists an interface twice: %s'
                                % ', '.join(map(str, interfaces)), 'list each twin once'))
    return problems


def _device_syntax(item):
    """The RDMA device of a ``dev[:port]`` entry, and whether the entry is well formed."""
    dev, _sep, port = item.partition(':')
    return dev, is_rdma_name(dev) and (not _sep or port.isdigit())


def _check_routing(name, value, interfaces, rdma_devices):
    """Problems with a variable that picks interfaces or RDMA devices: only CX7 ones may appear.

    ``rdma_devices`` None means the devices are not known yet (before any node was probed): device names are then
    checked for their form only.
    """
    problems = []
    cx7 = ', '.join(interfaces)
    known = rdma_devices is not None
    rdma = list(rdma_devices or [])
    expected = [dev for dev in (expected_rdma_name(i) for i in interfaces) if dev]
    pin = ','.join(rdma if known else expected) or '<the RDMA devices behind the CX7 twins>'
    mgmt = 'would route %s over the management network (or another non-CX7 interface)' % (
        'NCCL' if name.startswith('NCCL_') else name.split('_')[0].lower())

    def add(code, what, fix=None):
        problems.append(problem(code, VAR_EXTRA, '%s=%s %s' % (name, value, what), fix))

    if name in _IFNAME_LIST_VARS:
        text = value
        if name == 'NCCL_SOCKET_IFNAME':
            if text.startswith('^'):
                add('nccl-exclude-list', 'excludes interfaces instead of naming the CX7 twins and %s' % mgmt,
                    'write NCCL_SOCKET_IFNAME: =%s' % ','.join(interfaces))
                return problems
            text = text[1:] if text.startswith('=') else text
        elif text.startswith('=') or text.startswith('^'):
            add('nccl-list-marker', 'uses NCCL\'s "=" / "^" markers, which %s does not understand' % name,
                'list plain interface names (%s)' % cx7)
            return problems
        items = _split_list(text)
        if name == 'TP_SOCKET_IFNAME' and len(items) > 1:
            add('nccl-single-interface', 'names %d interfaces; TP_SOCKET_IFNAME takes one' % len(items),
                'write TP_SOCKET_IFNAME: %s' % interfaces[0])
        for item in items:
            if name == 'OMPI_MCA_btl_tcp_if_include' and '/' in item:
                continue  # a CIDR; its subnet is checked by preflight against spark_cx7_subnets
            if item not in interfaces:
                what = ' (%s)' % NOT_CX7[item] if item in NOT_CX7 else ''
                add('nccl-not-cx7-interface', 'names %s%s, which is not one of the CX7 interfaces (%s) and %s'
                    % (item or '""', what, cx7, mgmt), 'use %s' % cx7)
    elif name == 'NCCL_IB_HCA':
        text = value[1:] if value.startswith('=') else value
        if text.startswith('^'):
            add('nccl-exclude-list', 'excludes devices instead of pinning the CX7 ones', 'write NCCL_IB_HCA: =%s' % pin)
            return problems
        for item in _split_list(text):
            dev, well_formed = _device_syntax(item)
            if not well_formed:
                add('nccl-bad-device-name', 'has the entry %s, which is not an RDMA device name with an optional '
                    ':port' % (item or '""'), 'write NCCL_IB_HCA: =%s' % pin)
            elif known and dev not in rdma:
                add('nccl-ib-hca-unknown-device', 'names %s, but the RDMA devices behind %s are: %s'
                    % (dev, cx7, ', '.join(rdma) or 'none'), 'remove NCCL_IB_HCA from %s (the role pins the devices '
                    'it found) or name only those' % VAR_EXTRA)
    elif name == 'UCX_NET_DEVICES':
        for item in _split_list(value):
            dev, well_formed = _device_syntax(item)
            if item == 'all' or dev in NOT_CX7 or (is_cx7_name(dev) and dev not in interfaces):
                unknown = True   # never a CX7 twin or its device, whatever the probe finds
            elif dev in interfaces or (known and dev in rdma):
                continue
            else:
                unknown = known or not well_formed
            if unknown:
                add('nccl-ucx-device', 'names %s, which is neither a CX7 interface (%s) nor an RDMA device behind one '
                    '(%s) and %s' % (item or '""', cx7, ', '.join(rdma) if known else 'not probed yet', mgmt),
                    'remove UCX_NET_DEVICES from %s (the role sets it) or name only those' % VAR_EXTRA)
    return problems


def _check_value(name, value, rdma_devices):
    """Problems and warnings about the value of a few variables whose values are well defined."""
    problems = []
    if name == 'NCCL_DEBUG' and value.upper() not in NCCL_DEBUG_LEVELS:
        problems.append(problem('nccl-debug-level', VAR_EXTRA, 'NCCL_DEBUG=%s is not one of %s'
                                % (value, ', '.join(NCCL_DEBUG_LEVELS)), 'use one of them, or set %s' % VAR_DEBUG))
    elif name == 'NCCL_IB_DISABLE':
        if value not in ('0', '1'):
            problems.append(problem('nccl-ib-disable-value', VAR_EXTRA, 'NCCL_IB_DISABLE=%s must be 0 or 1 (or '
                                    'true/false)' % value, 'or leave it out and set %s' % VAR_IB_DISABLE))
        elif value == '1' and rdma_devices:
            problems.append(_ib_disabled_warning(VAR_EXTRA, 'NCCL_IB_DISABLE=1', rdma_devices))
    return problems


def _ib_disabled_warning(variable, setting, rdma_devices):
    return warning('nccl-ib-disabled-with-rdma', variable, '%s although RDMA devices were found (%s): NCCL will use '
                   'sockets, about 3 GB/s instead of 22-24 GB/s' % (setting, ', '.join(rdma_devices)),
                   'leave InfiniBand/RoCE on unless you are debugging')


def _name_syntax_problem(name):
    if isinstance(name, str) and _NAME.match(name):
        return None
    return problem('nccl-bad-name', VAR_EXTRA, '%r is not a valid environment variable name (letters, digits, _; '
                   'not starting with a digit)' % (name,), 'correct or remove it')


def check_name(name, deliberate=()):
    """Problems with one variable name (syntax, dead, unknown NCCL_*, near miss of a known name)."""
    bad = _name_syntax_problem(name)
    if bad:
        return [bad]
    if name in DEAD_VARS:
        return [problem('nccl-dead-variable', VAR_EXTRA, '%s is not a variable to set: %s' % (name, DEAD_VARS[name]),
                        'remove %s' % name)]
    if name in deliberate:
        return []
    upper = name.upper()
    if upper != name and (upper in KNOWN_NCCL_VARS or upper in DEAD_VARS or upper.startswith('NCCL_')):
        return [problem('nccl-lowercase-name', VAR_EXTRA, '%s: environment variable names are case-sensitive and '
                        'NCCL reads only upper case' % name, 'use %s' % upper)]
    if name.startswith('NCCL_'):
        if name in KNOWN_NCCL_VARS:
            return []
        close = difflib.get_close_matches(name, sorted(KNOWN_NCCL_VARS), n=1, cutoff=0.8)
        hint = ' (did you mean %s?)' % close[0] if close else ''
        return [problem('nccl-unknown-variable', VAR_EXTRA, '%s is not an NCCL variable%s; NCCL ignores unknown '
                        'names silently' % (name, hint), 'correct it, or, if it is deliberate (a newer NCCL, a '
                        'plugin), add it to %s' % VAR_DELIBERATE)]
    if name not in OTHER_KNOWN_VARS:
        close = difflib.get_close_matches(name, sorted(OTHER_KNOWN_VARS), n=1, cutoff=0.9)
        if close:
            return [problem('nccl-misspelt-variable', VAR_EXTRA, '%s looks like a misspelt %s' % (name, close[0]),
                            'correct it, or add it to %s if it is deliberate' % VAR_DELIBERATE)]
    return []


def _entry_problem(name, raw):
    """(value, None) for a variable's value as the file holds it, or (None, problem) when it cannot be written."""
    try:
        value = render_value(raw)
    except TypeError as exc:
        return None, problem('nccl-bad-value', VAR_EXTRA, '%s: %s' % (name, exc),
                             'remove the key to leave it unset' if raw is None else 'give it a string, number or bool')
    bad = [c for c in value if c in '\n\r\0' or (ord(c) < 32 and c != '\t') or ord(c) == 127]
    if bad:
        return None, problem('nccl-control-character', VAR_EXTRA, '%s: the value contains a line break or control '
                             'character (%r); an EnvironmentFile line cannot hold it' % (name, bad[0]),
                             'remove it from the value')
    return value, None


def validate_nccl_env(mapping, deliberate=(), interfaces=None, rdma_devices=None):
    """Every error in an environment mapping, as a list of problem dicts (empty when it is fine).

    ``interfaces``, when given, are the only interfaces that variables selecting a network may name
    (``NCCL_SOCKET_IFNAME``, ``UCX_NET_DEVICES``, ...). ``rdma_devices``: the RDMA devices found behind them, or
    None when they are not known yet (before any node was probed): then device names in ``NCCL_IB_HCA`` and
    ``UCX_NET_DEVICES`` are checked for their form only, and again once the devices are known.
    """
    return errors(_validate(mapping, deliberate, interfaces, rdma_devices))


def nccl_env_warnings(mapping, deliberate=(), interfaces=None, rdma_devices=None):
    """Warnings (valid but advised against) about an environment mapping, as problem dicts of severity warning."""
    return warnings(_validate(mapping, deliberate, interfaces, rdma_devices))


def _validate(mapping, deliberate, interfaces, rdma_devices):
    problems = []
    if not isinstance(mapping, dict):
        return [problem('nccl-extra-not-dict', VAR_EXTRA, 'must be a dict of variable name -> value, got %s'
                        % kind(mapping), 'write e.g. %s: {NCCL_DEBUG_SUBSYS: INIT,NET}' % VAR_EXTRA)]
    deliberate = _as_name_list(deliberate, problems)
    rdma = None if rdma_devices is None else rdma_device_names(rdma_devices)
    for name, raw in mapping.items():
        name_problems = check_name(name, deliberate)
        problems.extend(name_problems)
        if name_problems:
            continue
        if name in DISCOURAGED_VARS:
            problems.append(warning('nccl-discouraged-variable', VAR_EXTRA, '%s is set: %s'
                                    % (name, DISCOURAGED_VARS[name])))
        value, bad = _entry_problem(name, raw)
        if bad:
            problems.append(bad)
            continue
        problems.extend(_check_value(name, value, rdma))
        if interfaces is not None:
            problems.extend(_check_routing(name, value, list(interfaces), rdma))
    return problems


def _as_name_list(deliberate, problems):
    if deliberate is None:
        return ()
    if isinstance(deliberate, str) or not isinstance(deliberate, (list, tuple, set, frozenset)):
        problems.append(problem('nccl-deliberate-not-list', VAR_DELIBERATE, 'must be a list of variable names, got %r'
                                % (deliberate,), 'write e.g. %s: [NCCL_FUTURE_KNOB]' % VAR_DELIBERATE))
        return ()
    return tuple(deliberate)


def check_nccl_settings(extra, deliberate, debug, ib_disable, interfaces, rdma_devices=None):
    """Every problem (errors and warnings) of the four NCCL settings of the nccl_env role, together.

    ``extra``, ``deliberate``, ``debug``, ``ib_disable``: ``nccl_env_extra``, ``nccl_env_deliberate``,
    ``nccl_env_debug`` and ``nccl_env_ib_disable``; None for any of them stands for the role's default, which is
    valid. ``interfaces``: the CX7 twins the extras may name (their own problems are check_interfaces()'s; when the
    list is not valid the extras are checked without it). ``rdma_devices``: the RDMA devices found behind the twins
    (names, or dicts with ``name`` and ``netdev``), or None when no node has been probed yet, in which case the checks
    that need them wait for the second call.
    """
    iface_ok = not check_interfaces(interfaces)
    interfaces = list(interfaces) if iface_ok else None
    rdma = None if rdma_devices is None else rdma_device_names(rdma_devices, interfaces)
    problems = []
    if ib_disable is not None and not isinstance(ib_disable, bool):
        problems.append(problem('nccl-ib-disable-value', VAR_IB_DISABLE, 'must be true, false or null (auto), got %r'
                                % (ib_disable,),
                                'write %s: null to pick it from the RDMA devices found' % VAR_IB_DISABLE))
    elif rdma is not None and ib_disable is False and not rdma:
        problems.append(problem('nccl-ib-disable-no-rdma', VAR_IB_DISABLE, 'is false, but no RDMA device was found '
                                'behind %s (%s): NCCL would fall back to sockets' % (VAR_INTERFACES, ', '.join(
                                    interfaces or [])), 'check the RDMA driver (ibdev2netdev, /sys/class/infiniband), '
                                'or set %s to null' % VAR_IB_DISABLE))
    elif rdma and ib_disable is True:
        problems.append(_ib_disabled_warning(VAR_IB_DISABLE, '%s is true' % VAR_IB_DISABLE, rdma))
    if debug is not None and (not isinstance(debug, str) or debug.upper() not in NCCL_DEBUG_LEVELS):
        problems.append(problem('nccl-debug-level', VAR_DEBUG, 'must be one of %s, got %r'
                                % (', '.join(NCCL_DEBUG_LEVELS), debug), 'write e.g. %s: WARN' % VAR_DEBUG))
    problems.extend(_validate({} if extra is None else extra, deliberate, interfaces, rdma))
    return problems


def build_nccl_env(interfaces, rdma_devices, ib_disable=None, debug=DEFAULT_DEBUG, extra=None, deliberate=()):
    """The NCCL environment for one node, as an ordered dict of strings.

    ``interfaces``: the CX7 twins (``spark_cx7_interfaces``); ``rdma_devices``: the RDMA devices that
    ``connectx_info`` found behind them (names, or dicts with ``name`` and ``netdev``; None for none); ``ib_disable``:
    None picks 1 when there is no RDMA device and 0 otherwise; ``debug``: None for the role's default (WARN);
    ``extra``: the user's variables, which override the computed ones after the checks of check_nccl_settings().
    Raises NcclEnvError with every error.
    """
    problems = check_interfaces(interfaces)
    if problems:
        raise NcclEnvError(problems)
    interfaces = list(interfaces)
    rdma = rdma_device_names(rdma_devices, interfaces)
    problems = errors(check_nccl_settings(extra, deliberate, debug, ib_disable, interfaces, rdma))
    if problems:
        raise NcclEnvError(problems)
    ib_off = not rdma if ib_disable is None else ib_disable
    debug = DEFAULT_DEBUG if debug is None else debug

    env = {}
    env['NCCL_SOCKET_IFNAME'] = '=' + ','.join(interfaces)
    # Gloo takes plain names (no '=' marker); one twin is plenty for its CPU-side traffic.
    env['GLOO_SOCKET_IFNAME'] = interfaces[0]
    env['NCCL_IB_DISABLE'] = '1' if ib_off else '0'
    if rdma and not ib_off:
        env['NCCL_IB_HCA'] = '=' + ','.join(rdma)
        env['UCX_NET_DEVICES'] = ','.join('%s:1' % dev for dev in rdma)
    else:
        env['UCX_NET_DEVICES'] = ','.join(interfaces)
    env['NCCL_DEBUG'] = debug.upper()

    extra = {} if extra is None else extra
    for name in extra:
        if name in env:
            env[name] = render_value(extra[name])
    for name in sorted(n for n in extra if n not in env):
        env[name] = render_value(extra[name])
    return env


def quote_value(value):
    """A value as systemd's EnvironmentFile= reads it back unchanged: bare when safe, else double-quoted."""
    if _BARE_VALUE.match(value):
        return value
    return '"%s"' % _QUOTE_ESCAPE.sub(r'\\\1', value)


def render_env_file(mapping, header=HEADER):
    """The text of the environment file: a header comment, then one NAME=value line per variable."""
    problems = []
    lines = []
    for name, raw in mapping.items():
        bad = _name_syntax_problem(name)
        if bad is None:
            value, bad = _entry_problem(name, raw)
        if bad:
            problems.append(bad)
            continue
        lines.append('%s=%s\n' % (name, quote_value(value)))
    if problems:
        raise NcclEnvError(problems)
    return (header or '') + ''.join(lines)
