# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster plan of dgxspark.sglang: one home for every cluster-wide value, made in two steps.

1. ``plan_cluster(description)``, on the controller before any host is contacted: ranks, head, ``--nnodes``,
   ``--dist-init-addr``, ``--tp-size``, the CX7 address plan, each node's ``SGLANG_HOST_IP``, interfaces, MTU,
   expected speed, ports, the NCCL env file, the rank-0 URL; and every check that needs no host: the plan itself,
   SGLang's flags and values (``_sglang``), the NCCL extras (``_nccl``, the function the nccl_env role uses), the
   model and the secrets' form. Every problem of every stage is raised at once (``ProblemsError``).
2. ``complete_plan(plan, probes, ...)``, once every node is probed: each node's GPUs, driver state, RDMA devices
   and the addresses found, checked again (nodes that disagree, missing twins, NCCL devices that do not exist).

The shape of the result is documented key by key in ``roles/preflight/meta/spark_cluster_plan.yml``.
Pure Python (stdlib and netaddr): the filters in ``plugins/filter/cluster.py`` only wrap these functions.
"""

from __future__ import annotations

import copy
import math
import re

try:
    import netaddr
except ImportError:  # pragma: no cover - reported by plan_cluster
    netaddr = None

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core requires PyYAML on the controller
    yaml = None

from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import (
    DEFAULT_SPEED_MBPS,
    DEFAULT_TWINS,
    MTU_MAX,
    MTU_MIN,
    not_cx7_reason,
    twin_name,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import (
    build_nccl_env,
    check_nccl_settings,
    nccl_env_warnings,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import (
    ProblemsError,
    errors,
    kind,
    located,
    problem,
    warning,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._rdma import DEFAULT_ULIMITS
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import (
    _var as sglang_args_variable,
    lookup as sglang_flag,
    validate_server_args,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._staging import RECORD_NAME, probed, read_hub, stage_model

SCHEMA = 1

# The file of each node that SGLang reads with --config: the API key (sglang_server role), read back by the router role.
SERVER_CONFIG_NAME = 'server.yaml'

# Host part of a computed CX7 address: 10 + rank + 1 (rank 0 -> .11, rank 1 -> .12), as in DESIGN.md.
HOST_PART_BASE = 11

# Per-host inputs of the plan (inventory variables read for each host).
HOST_INPUTS = ('ansible_host', 'spark_cx7_addresses', 'spark_node_rank')

# Cluster-wide inputs of the plan and their defaults: the one place these defaults are written. The roles read the
# values from the plan; the preflight role's argument spec documents them (a test keeps the two equal).
DEFAULTS = {
    'spark_cx7_interfaces': list(DEFAULT_TWINS),
    'spark_cx7_subnets': None,
    'spark_cx7_topology': 'direct',
    'spark_cx7_expected_speed_mbps': DEFAULT_SPEED_MBPS,
    'spark_dist_init_port': 20000,
    'spark_allowed_cidrs': [],
    'spark_model_source_host': None,
    'spark_hf_endpoint': 'https://huggingface.co',
    'spark_http_proxy': None,
    'spark_https_proxy': None,
    'spark_no_proxy': None,
    'cx7_network_mtu': 9000,
    'nccl_env_file': '/etc/sglang/nccl.env',
    'sglang_server_model': None,
    'sglang_server_model_revision': None,
    'sglang_server_model_size_gb': None,
    'sglang_server_model_refresh': False,
    'sglang_server_cache_dir': '/var/lib/sglang/huggingface',
    # GiB of each node's memory that SGLang's static pool (mem-fraction-static) must leave to everything else: SGLang's
    # own activations and CUDA graphs (SGLang 0.5.23 keeps at least 10 GiB for them on a GPU of more than 60 GiB when it
    # picks the fraction itself), the OS's growth, and earlyoom's margin (memory_guard: 5% of a GB10's 121.7 GiB, 6.1
    # GiB). 16 allows mem-fraction-static up to 0.86 on a GB10, the 0.80-0.85 that community tools keep (FACTS.md).
    'sglang_server_memory_reserve_gib': 16,
    'sglang_server_args': {},
    'sglang_server_args_override': None,
    'sglang_server_tp_size': None,
    'sglang_server_host': '0.0.0.0',
    'sglang_server_port': 30000,
    # --enable-metrics on every rank: rank 0 serves the group's Prometheus /metrics (the plan's groups.*.metrics).
    'sglang_server_enable_metrics': True,
    'sglang_server_runtime': 'container',
    'sglang_server_image': 'lmsysorg/sglang:v0.5.23-cu130',
    'sglang_server_image_size_gb': 40,
    'sglang_server_container_volumes': [],
    'sglang_server_container_ulimits': dict(DEFAULT_ULIMITS),
    'sglang_server_native_python': '/opt/sglang/venv/bin/python',
    'sglang_server_service_name': 'sglang',
    'sglang_server_config_dir': '/etc/sglang',
    # HTTPS on rank 0's API with a certificate the sglang_server role installs (the user's, or a self-signed one made
    # once on the controller). Off by default: every client of the API then needs the CA (sglang_server README).
    'sglang_server_tls': False,
}

# Where the sglang_server role puts the TLS files on every node (inside sglang_server_config_dir); the verify role
# checks rank 0 with the CA file.
TLS_FILES = {'certfile': 'tls-cert.pem', 'keyfile': 'tls-key.pem', 'cafile': 'tls-ca.pem'}

# Cluster-wide inputs that are checked but not carried: the roles that own them keep their defaults (None here means
# "not set", which is always valid). The secrets are checked for their form only and never copied into the plan.
CHECKED_INPUTS = ('nccl_env_extra', 'nccl_env_deliberate', 'nccl_env_debug', 'nccl_env_ib_disable',
                  'sglang_server_hf_token', 'sglang_server_api_key', 'sglang_server_shm_size')

# Variables that no longer do anything: name -> why, and what to do instead (reported as a warning when set).
REMOVED_INPUTS = {
    'sglang_server_shm_size': ('has no effect: the container runs with --ipc host, which uses the host\'s /dev/shm '
                               '(Docker ignores --shm-size then)', 'remove it from the inventory'),
}
SECRET_INPUTS = ('sglang_server_hf_token', 'sglang_server_api_key')

CLUSTER_INPUTS = tuple(DEFAULTS) + CHECKED_INPUTS
INPUTS = HOST_INPUTS + CLUSTER_INPUTS

TOPOLOGIES = ('direct', 'switch')
# node_exporter's port (Debian's and Ubuntu's prometheus-node-exporter package): the monitoring role scrapes it.
NODE_EXPORTER_PORT = 9100
RUNTIMES = ('container', 'native')
TP_KEYS = ('tp-size', 'tp', 'tensor-parallel-size')
PP_KEYS = ('pp-size', 'pipeline-parallel-size')
WILDCARDS = ('0.0.0.0', '::', '')

VAR_GROUP = 'preflight_group'
VAR_GPUS = 'preflight_expected_gpus_per_node'
VAR_TP_SIZE = 'sglang_server_tp_size'

# Secrets: a Hugging Face token or API key never holds these (a placeholder, a quote, a line break, a space).
_SECRET_OK = re.compile(r'^[A-Za-z0-9_.~+/=-]+$')
_PLACEHOLDER = re.compile(r'^<.*>$|^(your|my|insert|changeme|xxx|todo)', re.IGNORECASE)
_UNIT_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.@-]{0,200}$')
# docker run --volume SRC:DEST[:OPTIONS]: SRC an absolute path or a named volume, DEST an absolute path.
_VOLUME = re.compile(r'^(/[^:\s]*|[A-Za-z0-9][A-Za-z0-9_.-]*):/[^:\s]*(:[a-zA-Z,]+)?$')
# docker run --ulimit NAME=SOFT[:HARD] (Docker's names; -1: unlimited).
ULIMIT_NAMES = ('core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss',
                'rtprio', 'rttime', 'sigpending', 'stack')
_ULIMIT_VALUE = re.compile(r'^-?[0-9]+(:-?[0-9]+)?$')
_URL = re.compile(r'^https?://[^\s/]+(/\S*)?$')
_HF_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$')


# ---- small helpers ------------------------------------------------------------------------------------

def hosts_text(names):
    names = [n for n in names if n]
    if not names:
        return 'no hosts'
    if len(names) == 1:
        return 'host ' + names[0]
    return 'hosts ' + ', '.join(names)


def _count(number, noun, plural=None):
    """'1 subnet', '2 subnets'."""
    return '%d %s' % (number, noun if number == 1 else (plural or noun + 's'))


def _range_text(lowest, highest):
    return str(lowest) if lowest == highest else '%d .. %d' % (lowest, highest)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _quoted_int(value):
    return isinstance(value, str) and value.strip().isdigit()


def _int_problem(code, variable, value, where, hosts, lowest, highest, example):
    """A problem when ``value`` is not an integer in [lowest, highest] (None when it is)."""
    if _is_int(value) and lowest <= value <= highest:
        return None
    if _quoted_int(value):
        return problem(code, variable, 'is the string %r, not an integer' % value,
                       'write %s without quotes' % value.strip(), where, hosts)
    span = str(lowest) if lowest == highest else 'from %d to %d' % (lowest, highest)
    if _is_int(value):
        what = 'is %d, outside %s' % (value, _range_text(lowest, highest))
    else:
        what = 'is %s (%r), not an integer %s' % (kind(value), value, span)
    return problem(code, variable, what, 'use an integer %s, e.g. %s' % (span, example), where, hosts)


def _parse_ip(value):
    """(IPAddress, prefix or None) from 'a.b.c.d' or 'a.b.c.d/len', or (None, None)."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    text, _sep, prefix_text = value.strip().partition('/')
    if prefix_text and not prefix_text.isdigit():
        return None, None
    try:
        ip = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None, None
    prefix = int(prefix_text) if prefix_text else None
    if prefix is not None and prefix > (32 if ip.version == 4 else 128):
        return None, None
    return ip, prefix


def _parse_network(text):
    """An IPNetwork from 'a.b.c.d/len' (None when it is not one)."""
    if not isinstance(text, str) or '/' not in text:
        return None
    ip, prefix = _parse_ip(text)
    if ip is None or prefix is None:
        return None
    return netaddr.IPNetwork('%s/%d' % (ip, prefix))


def _url_host(address):
    text = str(address)
    return '[%s]' % text if ':' in text else text


# ---- step 1: the description -----------------------------------------------------------------------------

class Context:
    """What every check of one description shares: the hosts in inventory order and the group-wide values."""

    def __init__(self, cluster, hosts, values, where):
        self.cluster = cluster
        self.hosts = hosts            # [{'name': ..., 'vars': {...}}] in inventory order
        self.names = [h['name'] for h in hosts]
        self.values = values          # cluster-wide input -> value (default applied where DEFAULTS has one)
        self.where = where            # "group vars of hosts a, b"
        self.problems = []
        self.override_keys = ()       # the keys of sglang_server_args that sglang_server_args_override set

    def add(self, item):
        if item:
            self.problems.append(item)

    def extend(self, items):
        self.problems.extend(items)

    def host_var(self, name, var):
        return next(h for h in self.hosts if h['name'] == name)['vars'].get(var)


def _normalise_hosts(description):
    hosts = []
    for index, entry in enumerate(description.get('hosts') or []):
        entry = entry if isinstance(entry, dict) else {}
        hosts.append({'name': str(entry.get('name') or 'host #%d' % index), 'vars': dict(entry.get('vars') or {})})
    return hosts


def _cluster_values(ctx_hosts, cluster, where, problems):
    """The group-wide value of every cluster-wide input; hosts that disagree (a host_vars override?) are a problem."""
    values = {}
    for var in CLUSTER_INPUTS:
        seen = []   # [(value, [names])] in first-seen order
        for h in ctx_hosts:
            value = h['vars'].get(var, DEFAULTS.get(var))
            for known, names in seen:
                if known == value:
                    names.append(h['name'])
                    break
            else:
                seen.append((value, [h['name']]))
        if len(seen) > 1:
            shown = ('%s: %s' % (', '.join(names), '(hidden)' if var in SECRET_INPUTS else repr(value))
                     for value, names in seen)
            # The value most hosts share is the group's; the others are the overrides (the first wins a tie).
            common = max(range(len(seen)), key=lambda i: (len(seen[i][1]), -i))
            odd = [n for i, (_value, names) in enumerate(seen) if i != common for n in names]
            problems.append(problem(
                'host-vars-disagree', var, 'hosts disagree (a host_vars override?): %s' % '; '.join(shown),
                'set %s once in the group vars of %s, not per host' % (var, cluster), hosts_text(odd), odd))
        values[var] = max(seen, key=lambda item: len(item[1]))[0] if seen else DEFAULTS.get(var)
    return values


def _check_interfaces(ctx):
    interfaces = ctx.values['spark_cx7_interfaces']
    var = 'spark_cx7_interfaces'
    example = 'write %s: [%s] (the twins of the cabled CX7 port, see ibdev2netdev on a host)' % (var, ', '.join(DEFAULT_TWINS))
    if not isinstance(interfaces, (list, tuple)) or not interfaces:
        ctx.add(problem('cx7-interfaces-not-list', var, 'must be a non-empty list of interface names, got %s' % kind(interfaces),
                        example, ctx.where, ctx.names))
        return []
    names = []
    for name in interfaces:
        if not isinstance(name, str) or not name:
            ctx.add(problem('cx7-interface-not-name', var, 'entry %r is not an interface name' % (name,), example,
                            ctx.where, ctx.names))
            continue
        if name in names:
            ctx.add(problem('cx7-interface-twice', var, '%s is listed twice' % name,
                            'list each twin once; the twin of %s is %s' % (name, twin_name(name) or 'its enP2p... half'),
                            ctx.where, ctx.names))
            continue
        names.append(name)
        reason = not_cx7_reason(name)
        if reason:
            ctx.add(problem('cx7-interface-not-cx7', var, reason, example, ctx.where, ctx.names))
    return names


def _check_subnets(ctx, interfaces):
    """[IPNetwork or None per twin]."""
    subnets = ctx.values['spark_cx7_subnets']
    written = ctx.values['spark_cx7_interfaces']
    expected = len(written) if isinstance(written, (list, tuple)) else len(interfaces)
    var = 'spark_cx7_subnets'
    if not isinstance(subnets, (list, tuple)) or not subnets:
        ctx.add(problem('cx7-subnets-not-list', var, 'must be a non-empty list of IPv4 subnets, one per twin, got %s' % kind(subnets),
                        'write %s: [192.168.100.0/24, 192.168.101.0/24] (one per entry of spark_cx7_interfaces)' % var,
                        ctx.where, ctx.names))
        return [None] * len(interfaces)
    if interfaces and len(subnets) != expected:
        ctx.add(problem('cx7-subnets-count', var, '%s for the %s %s' % (_count(len(subnets), 'subnet'),
                                                                        _count(expected, 'twin'), interfaces),
                        'give exactly one subnet per twin, in the order of spark_cx7_interfaces', ctx.where, ctx.names))
    nets = []
    for index, text in enumerate(subnets):
        example = '192.168.%d.0/24' % (100 + index)
        net = _parse_network(text)
        if net is None:
            ctx.add(problem('cx7-subnet-invalid', var, 'entry %r is not a subnet in CIDR notation' % (text,),
                            'write it as network/prefix, e.g. %s' % example, ctx.where, ctx.names))
        elif net.version != 4:
            ctx.add(problem('cx7-subnet-ipv6', var, '%s is an IPv6 subnet; the CX7 network is configured with IPv4 only '
                            '(RoCE v2 GIDs, NCCL_IB_ADDR_FAMILY and the guides use IPv4)' % text,
                            'use a private IPv4 /24 per twin, e.g. %s' % example, ctx.where, ctx.names))
            net = None
        elif net.ip != net.network:
            ctx.add(problem('cx7-subnet-host-bits', var, '%s has host bits set' % text, 'write %s' % net.cidr,
                            ctx.where, ctx.names))
            net = net.cidr
        elif net.prefixlen > 30:
            ctx.add(problem('cx7-subnet-too-small', var, '%s has no room for two hosts' % text,
                            'use a /24 per twin, e.g. %s' % example, ctx.where, ctx.names))
            net = None
        nets.append(net)
    _check_subnet_overlaps(ctx, nets, interfaces)
    return (nets + [None] * len(interfaces))[:len(interfaces)]


def _check_subnet_overlaps(ctx, nets, interfaces):
    var = 'spark_cx7_subnets'
    for i, a in enumerate(nets):
        for j in range(i + 1, len(nets)):
            b = nets[j]
            if a is None or b is None or not (a in b or b in a):
                continue
            twin_a = interfaces[i] if i < len(interfaces) else 'entry %d' % i
            twin_b = interfaces[j] if j < len(interfaces) else 'entry %d' % j
            if a == b:
                ctx.add(problem('cx7-subnet-twice', var, 'the same subnet %s on both twins (%s and %s)' % (a, twin_a, twin_b),
                                'never use one subnet on both twins: give each its own, e.g. 192.168.100.0/24 and '
                                '192.168.101.0/24', ctx.where, ctx.names))
            else:
                ctx.add(problem('cx7-subnet-overlap', var, 'subnets %s (%s) and %s (%s) overlap' % (a, twin_a, b, twin_b),
                                'give each twin a separate, non-overlapping subnet, e.g. 192.168.100.0/24 and '
                                '192.168.101.0/24', ctx.where, ctx.names))
            nets[j] = None   # left out of the address plan: reported above


def _check_ranks(ctx):
    """[names in rank order], or the inventory order when the ranks cannot be decided (a problem says why)."""
    var = 'spark_node_rank'
    given = {h['name']: h['vars']['spark_node_rank'] for h in ctx.hosts if h['vars'].get('spark_node_rank') is not None}
    if not given:
        return list(ctx.names)
    top = len(ctx.names) - 1
    missing = [n for n in ctx.names if n not in given]
    if missing:
        ctx.add(problem('rank-partial', var, 'set on %s but not on %s' % (hosts_text(list(given)), ', '.join(missing)),
                        'set spark_node_rank on every host of the group (0 .. %d) or on none (then the inventory order '
                        'is the rank)' % top, hosts_text(missing), missing))
    ranks = {}
    bad = False
    for name, rank in given.items():
        item = _int_problem('rank-invalid', var, rank, 'host ' + name, [name], 0, top, '0 for the head')
        if item:
            ctx.add(item)
            bad = True
            continue
        ranks.setdefault(rank, []).append(name)
    for rank, owners in sorted(ranks.items()):
        if len(owners) > 1:
            bad = True
            ctx.add(problem('rank-twice', var, 'rank %d is given to %d hosts' % (rank, len(owners)),
                            'give each host its own rank from 0 to %d' % top, hosts_text(owners), owners))
    if missing or bad:
        return list(ctx.names)
    return [ranks[r][0] for r in sorted(ranks)]


def _from_server_args(args, explicit, explicit_var, flag_keys):
    """(value, variable for messages): the explicit variable first, else the first flag found in server_args."""
    if explicit is not None:
        return explicit, explicit_var
    if isinstance(args, dict):
        for flag in flag_keys:
            for spelled in (flag, flag.replace('-', '_'), '--' + flag):
                if args.get(spelled) is not None:
                    return args[spelled], "sglang_server_args['%s']" % spelled
    return None, explicit_var


def _check_parallel(ctx, nnodes, gpus):
    """(tp, pp): --tp-size and --pp-size, checked against the node and GPU counts."""
    args = ctx.values['sglang_server_args']
    tp, var_tp = _from_server_args(args, ctx.values['sglang_server_tp_size'], VAR_TP_SIZE, TP_KEYS)
    pp, var_pp = _from_server_args(args, None, "sglang_server_args['pp-size']", PP_KEYS)
    if ctx.values['sglang_server_tp_size'] is not None and isinstance(args, dict):
        twice = [k for k in args if k in TP_KEYS]
        if twice:
            ctx.add(problem('tp-size-twice', VAR_TP_SIZE, "sglang_server_tp_size and sglang_server_args['%s'] both set --tp-size" % twice[0],
                            'keep sglang_server_tp_size and remove it from sglang_server_args', ctx.where, ctx.names))
    total = nnodes * gpus if gpus else None
    tp_given = tp is not None
    pp = 1 if pp is None else pp
    item = _int_problem('pp-size-invalid', var_pp, pp, ctx.where, ctx.names, 1, 1024, '1')
    if item:
        ctx.add(item)
        pp = None
    if tp is None:
        tp = max(total // pp, 1) if total and pp else None
    else:
        item = _int_problem('tp-size-invalid', var_tp, tp, ctx.where, ctx.names, 1, 4096, total or 1)
        if item:
            ctx.add(item)
            tp = None
    if not (tp and pp and total):
        return tp, pp
    if pp > total:
        ctx.add(problem('pp-size-too-large', var_pp,
                        'pp-size %d needs at least %d GPUs; the group has %d nodes x %d GPU = %d' % (pp, pp, nnodes, gpus, total),
                        'lower pp-size to at most %d, or add nodes to the group' % total, ctx.where, ctx.names))
    elif tp * pp > total:
        ctx.add(problem('tp-size-too-large', var_tp,
                        'tp x pp = %d x %d = %d needs more GPUs than the group has (%d nodes x %d GPU = %d)'
                        % (tp, pp, tp * pp, nnodes, gpus, total),
                        'lower tp-size to at most %d, or add nodes to the group' % (total // pp), ctx.where, ctx.names))
    elif (tp * pp) % nnodes and not tp_given:
        ctx.add(problem('pp-size-not-divisible', var_pp,
                        'pp-size %d leaves tp-size %d (the %d GPUs divided by pp-size), and tp x pp = %d is not divisible '
                        'by the node count %d' % (pp, tp, total, tp * pp, nnodes),
                        'use a pp-size that divides the %d GPUs of the group, e.g. 1 or %d' % (total, nnodes),
                        ctx.where, ctx.names))
    elif (tp * pp) % nnodes:
        multiples = [k * nnodes for k in range(1, 3)]
        ctx.add(problem('tp-size-not-divisible', var_tp,
                        'tp x pp = %d x %d = %d is not divisible by the node count %d' % (tp, pp, tp * pp, nnodes),
                        'use a tp-size whose product with pp-size is a multiple of %d, e.g. %s, or leave tp-size out'
                        % (nnodes, ' or '.join(str(m) for m in multiples)), ctx.where, ctx.names))
    return tp, pp


def _check_ports(ctx):
    """The dist-init port; it and the API's port must lie in range and differ."""
    dist = ctx.values['spark_dist_init_port']
    http = ctx.values['sglang_server_port']
    item = _int_problem('port-invalid', 'spark_dist_init_port', dist, ctx.where, ctx.names, 1024, 65535, '20000')
    if item:
        ctx.add(item)
        dist = None
    item = _int_problem('port-invalid', 'sglang_server_port', http, ctx.where, ctx.names, 1, 65535, '30000')
    if item:
        ctx.add(item)
        http = None
    if dist is not None and http is not None and dist == http:
        ctx.add(problem('port-clash', 'spark_dist_init_port',
                        'is the same port (%d) as sglang_server_port: the rendezvous and the API cannot share it' % dist,
                        'keep spark_dist_init_port at 20000 and sglang_server_port at 30000, or pick two free ports',
                        ctx.where, ctx.names))
    return dist


# Sparks cabled back to back: exactly two. Rings and meshes of 3-4 Sparks without a switch are not supported: the stock
# NCCL fails on them (community reports run them with NCCL_IB_SUBNET_AWARE_ROUTING and a patched NCCL, FACTS.md).
DIRECT_MAX_NODES = 2


def _check_topology(ctx, topology, nnodes):
    """The rules of spark_cx7_topology: direct joins two Sparks; switch takes any number (same two subnets for all)."""
    if topology == 'direct' and nnodes > DIRECT_MAX_NODES:
        ctx.add(problem('topology-direct-too-many', 'spark_cx7_topology',
                        'is direct, but group %s has %d nodes: a direct cable joins exactly two Sparks. Rings and meshes '
                        'of 3-4 Sparks without a switch are not supported: the stock NCCL fails on them, and the users '
                        'who run them build a patched NCCL' % (ctx.cluster, nnodes),
                        'connect the Sparks through a switch (its ports forced to 200G, auto-negotiation off) and set '
                        'spark_cx7_topology: switch, or split the hosts into groups of two', ctx.where, ctx.names))


def _check_link_settings(ctx):
    """(mtu, expected speed, topology)."""
    mtu = ctx.values['cx7_network_mtu']
    item = _int_problem('mtu-invalid', 'cx7_network_mtu', mtu, ctx.where, ctx.names, MTU_MIN, MTU_MAX, '9000')
    if item:
        ctx.add(item)
        mtu = None
    speed = ctx.values['spark_cx7_expected_speed_mbps']
    item = _int_problem('speed-invalid', 'spark_cx7_expected_speed_mbps', speed, ctx.where, ctx.names, 0, 800000,
                        str(DEFAULT_SPEED_MBPS))
    if item:
        ctx.add(item)
        speed = None
    topology = ctx.values['spark_cx7_topology']
    if topology not in TOPOLOGIES:
        ctx.add(problem('topology-invalid', 'spark_cx7_topology', 'is %r, not one of %s' % (topology, ', '.join(TOPOLOGIES)),
                        'write direct for Sparks cabled back to back, switch for Sparks behind a switch',
                        ctx.where, ctx.names))
    else:
        _check_topology(ctx, topology, len(ctx.names))
    return mtu, speed, topology


def _check_cidrs(ctx):
    cidrs = ctx.values['spark_allowed_cidrs']
    var = 'spark_allowed_cidrs'
    if cidrs is None:
        return []
    if not isinstance(cidrs, (list, tuple)):
        ctx.add(problem('cidrs-not-list', var, 'must be a list of networks, got %s' % kind(cidrs),
                        'write e.g. [10.0.0.0/24], or [] for no restriction', ctx.where, ctx.names))
        return []
    out = []
    for text in cidrs:
        net = _parse_network(text) if isinstance(text, str) and '/' in text else None
        if net is None and isinstance(text, str):
            ip, _prefix = _parse_ip(text)
            net = netaddr.IPNetwork('%s/%d' % (ip, 32 if ip.version == 4 else 128)) if ip is not None else None
        if net is None:
            ctx.add(problem('cidr-invalid', var, 'entry %r is not an address or network' % (text,),
                            'write networks as network/prefix, e.g. 10.0.0.0/24', ctx.where, ctx.names))
            continue
        out.append(str(net.cidr))
    return out


def _check_paths_and_names(ctx):
    for var in ('nccl_env_file', 'sglang_server_config_dir', 'sglang_server_native_python', 'sglang_server_cache_dir'):
        value = ctx.values[var]
        if not isinstance(value, str) or not value.startswith('/') or '\n' in value:
            ctx.add(problem('path-invalid', var, 'is %r, not an absolute path' % (value,),
                            'write an absolute path, e.g. %s' % DEFAULTS[var], ctx.where, ctx.names))
    service = ctx.values['sglang_server_service_name']
    if not isinstance(service, str) or not _UNIT_NAME.match(service) or service.endswith('.service'):
        ctx.add(problem('service-name-invalid', 'sglang_server_service_name',
                        'is %r, not a systemd unit name without .service' % (service,),
                        'write a plain name such as sglang', ctx.where, ctx.names))
    runtime = ctx.values['sglang_server_runtime']
    if runtime not in RUNTIMES:
        ctx.add(problem('runtime-invalid', 'sglang_server_runtime', 'is %r, not one of %s' % (runtime, ', '.join(RUNTIMES)),
                        'write container (the pinned image through Docker) or native (a virtualenv)',
                        ctx.where, ctx.names))
    image = ctx.values['sglang_server_image']
    if runtime == 'container' and (not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image)):
        ctx.add(problem('image-invalid', 'sglang_server_image', 'is %r, not an image reference' % (image,),
                        'write e.g. %s' % DEFAULTS['sglang_server_image'], ctx.where, ctx.names))
    _check_volumes(ctx)
    _check_ulimits(ctx)
    host = ctx.values['sglang_server_host']
    if not isinstance(host, str) or (host not in WILDCARDS and _parse_ip(host)[0] is None):
        ctx.add(problem('listen-address-invalid', 'sglang_server_host', 'is %r, not an address to listen on' % (host,),
                        'write 0.0.0.0 (every address) or one address of the node', ctx.where, ctx.names))


def _check_metrics(ctx):
    if not isinstance(ctx.values['sglang_server_enable_metrics'], bool):
        ctx.add(problem('metrics-switch-invalid', 'sglang_server_enable_metrics',
                        'is %r, not a boolean' % (ctx.values['sglang_server_enable_metrics'],),
                        'write true (rank 0 serves /metrics for Prometheus) or false', ctx.where, ctx.names))


def metrics_target(values, scheme, head_address):
    """Where Prometheus scrapes the group (rank 0's /metrics, through the head's management address when SGLang
    listens on every address), or None when neither sglang_server_enable_metrics nor the flag in sglang_server_args
    turns SGLang's metrics on."""
    server_args = values['sglang_server_args'] or {}
    if not (values['sglang_server_enable_metrics'] is True
            or any(server_args.get(k) is True for k in ('enable-metrics', 'enable_metrics'))):
        return None
    host = values['sglang_server_host']
    address = _url_host(head_address if host in WILDCARDS else host)
    target = '%s:%s' % (address, values['sglang_server_port'])
    return {'target': target, 'scheme': scheme, 'path': '/metrics', 'url': '%s://%s/metrics' % (scheme, target)}


def _check_staging_inputs(ctx):
    """The hub's address, the proxies (URLs or unset), the refresh switch and the image size estimate."""
    for var in ('spark_hf_endpoint', 'spark_http_proxy', 'spark_https_proxy'):
        value = ctx.values[var]
        if value is None and var != 'spark_hf_endpoint':
            continue
        if not isinstance(value, str) or not _URL.match(value):
            ctx.add(problem('url-invalid', var, 'is %r, not an http(s) URL' % (value,),
                            'write e.g. %s' % ('https://huggingface.co' if var == 'spark_hf_endpoint'
                                               else 'http://proxy.example.com:3128'), ctx.where, ctx.names))
    no_proxy = ctx.values['spark_no_proxy']
    if no_proxy is not None and not (isinstance(no_proxy, str) or (
            isinstance(no_proxy, list) and all(isinstance(x, str) for x in no_proxy))):
        ctx.add(problem('no-proxy-invalid', 'spark_no_proxy', 'is %r, not a list of hosts or domains' % (no_proxy,),
                        'write e.g. [.example.com, 10.0.0.0/8]', ctx.where, ctx.names))
    tls = ctx.values['sglang_server_tls']
    if not isinstance(tls, bool):
        ctx.add(problem('tls-invalid', 'sglang_server_tls', 'is %r, not true or false' % (tls,),
                        'write true for HTTPS with the role\'s certificate, false (default) for HTTP', ctx.where,
                        ctx.names))
    elif tls and isinstance(ctx.values['sglang_server_args'], dict) and any(
            str(k).lstrip('-').replace('_', '-') in ('ssl-certfile', 'ssl-keyfile')
            for k in ctx.values['sglang_server_args']):
        ctx.add(problem('tls-twice', 'sglang_server_tls', 'is true while sglang_server_args sets ssl-certfile or '
                        'ssl-keyfile as well', 'remove ssl-certfile and ssl-keyfile from sglang_server_args (the role '
                        'passes its own), or set sglang_server_tls: false to keep yours', ctx.where, ctx.names))
    if not isinstance(ctx.values['sglang_server_model_refresh'], bool):
        ctx.add(problem('refresh-invalid', 'sglang_server_model_refresh', 'is %r, not true or false'
                        % (ctx.values['sglang_server_model_refresh'],), 'write true to ask the hub for the newest commit '
                        'of the branch again, false (default) to keep the recorded one', ctx.where, ctx.names))
    size = ctx.values['sglang_server_image_size_gb']
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
        ctx.add(problem('image-size-invalid', 'sglang_server_image_size_gb', 'is %r, not a size in GB' % (size,),
                        'write the size the image takes on disk, e.g. 40', ctx.where, ctx.names))


def proxy_env(values, subnets=()):
    """The proxy variables for what reaches the internet (the hub, a registry), both spellings that tools read;
    the CX7 subnets and loopback are never proxied."""
    env = {}
    for var, name in (('spark_http_proxy', 'http_proxy'), ('spark_https_proxy', 'https_proxy')):
        if values.get(var):
            env[name] = env[name.upper()] = values[var]
    if env:
        extra = values.get('spark_no_proxy') or []
        extra = [x.strip() for x in extra.split(',')] if isinstance(extra, str) else list(extra)
        skip = ','.join(x for x in ['localhost', '127.0.0.1'] + list(subnets) + extra if x)
        env['no_proxy'] = env['NO_PROXY'] = skip
    return env


def _check_volumes(ctx):
    var = 'sglang_server_container_volumes'
    volumes = ctx.values[var]
    fix = 'write a list of SRC:DEST[:OPTIONS] with absolute paths, e.g. [/data/models:/data/models:ro]'
    if not isinstance(volumes, list):
        ctx.add(problem('volumes-invalid', var, 'is %r, not a list' % (volumes,), fix, ctx.where, ctx.names))
        return
    for entry in volumes:
        if not isinstance(entry, str) or not _VOLUME.match(entry):
            ctx.add(problem('volumes-invalid', var, 'entry %r is not a docker --volume SRC:DEST[:OPTIONS]' % (entry,),
                            fix, ctx.where, ctx.names))


def _check_ulimits(ctx):
    var = 'sglang_server_container_ulimits'
    ulimits = ctx.values[var]
    fix = 'write a mapping of ulimit name to SOFT or SOFT:HARD, e.g. {memlock: -1, stack: 67108864} (-1: unlimited)'
    if not isinstance(ulimits, dict):
        ctx.add(problem('ulimits-invalid', var, 'is %r, not a mapping' % (ulimits,), fix, ctx.where, ctx.names))
        return
    for name, value in ulimits.items():
        if name not in ULIMIT_NAMES:
            ctx.add(problem('ulimits-invalid', var, 'names %r, not one of %s' % (name, ', '.join(ULIMIT_NAMES)), fix,
                            ctx.where, ctx.names))
        elif isinstance(value, bool) or not _ULIMIT_VALUE.match(str(value)):
            ctx.add(problem('ulimits-invalid', var, '%s is %r, not SOFT or SOFT:HARD' % (name, value), fix,
                            ctx.where, ctx.names))


def _check_model(ctx):
    """The model part of the plan (None when the model is unusable)."""
    var = 'sglang_server_model'
    model = ctx.values[var]
    fix = 'set it in the group vars of %s to a Hugging Face id (e.g. Qwen/Qwen2.5-72B-Instruct) or the absolute path ' \
          'of a model folder present on every node' % ctx.cluster
    if model is None or (isinstance(model, str) and not model.strip()):
        ctx.add(problem('model-missing', var, 'is not set' if model is None else 'is empty', fix, ctx.where, ctx.names))
        return None
    if not isinstance(model, str):
        ctx.add(problem('model-invalid', var, 'is %s, not a model id or path' % kind(model), fix, ctx.where, ctx.names))
        return None
    path = model.strip()
    local = path.startswith('/')
    if not local and not _HF_ID.match(path):
        ctx.add(problem('model-invalid', var, '%r is neither a Hugging Face id (org/name) nor an absolute path' % path, fix,
                        ctx.where, ctx.names))
    revision = ctx.values['sglang_server_model_revision']
    if revision is not None and (not isinstance(revision, str) or not re.match(r'^[A-Za-z0-9._/-]{1,200}$', revision)):
        ctx.add(problem('model-revision-invalid', 'sglang_server_model_revision',
                        'is %r, not a branch, tag or commit hash' % (revision,), 'write e.g. main or a 40-character commit hash',
                        ctx.where, ctx.names))
        revision = None
    size = ctx.values['sglang_server_model_size_gb']
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0):
        ctx.add(problem('model-size-invalid', 'sglang_server_model_size_gb',
                        'is %r, not a size in GB' % (size,), 'write the size of the weights in GB, e.g. 145, or leave it out',
                        ctx.where, ctx.names))
        size = None
    source = ctx.values['spark_model_source_host']
    if source is not None and source not in ctx.names:
        ctx.add(problem('model-source-unknown', 'spark_model_source_host', '%r is not a host of group %s' % (source, ctx.cluster),
                        'name one of %s, or leave it out (then the head fetches the model)' % ', '.join(ctx.names),
                        ctx.where, ctx.names))
        source = None
    args = ctx.values['sglang_server_args'] if isinstance(ctx.values['sglang_server_args'], dict) else {}
    served = args.get('served-model-name', args.get('served_model_name'))
    return {
        'path': path,
        'local': local,
        'revision': None if local else revision,
        'served_name': served if isinstance(served, str) and served.strip() else path,
        'source_host': source,
        'size_gb': size,
        # Pinned at stage probed (plugins/module_utils/_staging.py): from the nodes' record or the hub's answer.
        'requested': None,
        'commit': None,
        'files': None,
        'bytes': None,
        'weights_bytes': None,
        'pinned_by': None,
    }


def _check_secrets(ctx):
    for var, what in (('sglang_server_hf_token', 'a Hugging Face token'), ('sglang_server_api_key', 'an API key')):
        value = ctx.values[var]
        if value is None or value == '':
            continue
        if not isinstance(value, str):
            ctx.add(problem('secret-invalid', var, 'is %s, not %s' % (kind(value), what),
                            'quote it as a string (the value is never shown)', ctx.where, ctx.names))
        elif _PLACEHOLDER.match(value.strip()):
            ctx.add(problem('secret-placeholder', var, 'is still the placeholder of the example inventory, not %s' % what,
                            'put the real value in Ansible Vault or an AWX credential, or remove the variable',
                            ctx.where, ctx.names))
        elif not _SECRET_OK.match(value):
            ctx.add(problem('secret-invalid', var, 'has characters %s never has (a space, a quote or a line break?)' % what,
                            'paste the value alone (the value is never shown)', ctx.where, ctx.names))
        elif var == 'sglang_server_api_key' and len(value) < 16:
            ctx.add(problem('secret-too-short', var, 'is shorter than 16 characters',
                            'use a long random key, or leave it out and one is generated', ctx.where, ctx.names))


def _check_removed(ctx):
    for var, (why, fix) in REMOVED_INPUTS.items():
        if ctx.values.get(var) is not None:
            ctx.add(warning('variable-removed', var, why, fix, ctx.where, ctx.names))


def _check_flags(ctx, server_args):
    if not isinstance(server_args, dict):
        ctx.add(problem('sglang-args-not-dict', 'sglang_server_args', 'must be a dict of flag -> value, got %s' % kind(server_args),
                        'write e.g. {mem-fraction-static: 0.8}', ctx.where, ctx.names))
        return
    ctx.extend(located(validate_server_args(server_args), ctx.where, ctx.names))


# ---- sglang_server_args_override: flags for one run, merged over sglang_server_args -------------------------
# An extra var (an AWX survey answer, -e) replaces a whole dict, so flags for one run come in through this one
# variable and are merged over the inventory's sglang_server_args, flag by flag:
#   - a flag of the override replaces the inventory's value of the same flag, whatever the spelling of either key
#     (dashes, underscores, a leading --, an alias such as tensor-parallel-size for tp-size, --no-X for X);
#   - null removes the inventory's flag (SGLang's own default applies again);
#   - the inventory's other flags stay; {} , '' and null change nothing.
# A string is YAML text (a survey's textarea): it must hold a mapping. The merged dict is what every check of the
# plan judges and what the units get; problems of a flag the override set name sglang_server_args_override.
VAR_ARGS_OVERRIDE = 'sglang_server_args_override'


def flag_identity(key):
    """The flag a key of sglang_server_args sets, whatever its spelling (dashes, underscores, --, an alias, no-X)."""
    name = str(key).strip().lstrip('-')
    if name.replace('_', '-') in TP_KEYS:
        return 'tp-size'
    for spelled in (name, name.replace('_', '-')):
        canonical = sglang_flag(spelled)[0]
        if canonical is not None:
            return canonical
    return name.replace('_', '-')


def parse_args_override(value):
    """(dict, problem or None): sglang_server_args_override as a dict; YAML text is parsed, '' and null are {}."""
    fix = ('write flag: value pairs, one per line (YAML), e.g. "mem-fraction-static: 0.8", or a dict such as '
           '{mem-fraction-static: 0.8}')
    if value is None:
        return {}, None
    if isinstance(value, str):
        if not value.strip():
            return {}, None
        if yaml is None:  # pragma: no cover
            return {}, problem('sglang-args-override-invalid', VAR_ARGS_OVERRIDE, 'is text and PyYAML is missing on the '
                               'controller', 'pip install -r requirements.txt, or give a dict')
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, 'problem_mark', None)
            at = ' at line %d' % (mark.line + 1) if mark is not None else ''
            return {}, problem('sglang-args-override-invalid', VAR_ARGS_OVERRIDE, 'is not YAML%s (%s)' % (
                at, str(getattr(exc, 'problem', None) or exc).splitlines()[0]), fix)
        if parsed is None:
            return {}, None
        value = parsed
    if not isinstance(value, dict):
        return {}, problem('sglang-args-override-invalid', VAR_ARGS_OVERRIDE,
                           'must be a dict of flag -> value or YAML text of one, got %s' % kind(value), fix)
    return value, None


def merge_server_args(args, override):
    """sglang_server_args with the override merged over it, by the rule above (neither input is changed)."""
    replaced = {flag_identity(key) for key in override}
    merged = {key: value for key, value in args.items() if flag_identity(key) not in replaced}
    merged.update((key, value) for key, value in override.items() if value is not None)
    return merged


def _apply_args_override(ctx):
    """Merge sglang_server_args_override into the group's sglang_server_args (ctx.values), noting its keys."""
    override, item = parse_args_override(ctx.values[VAR_ARGS_OVERRIDE])
    if item:
        ctx.add(located([item], ctx.where, ctx.names)[0])
        return
    args = ctx.values['sglang_server_args']
    if not override or not isinstance(args, (dict, type(None))):
        return   # a sglang_server_args that is no dict is reported by _check_flags
    ctx.values['sglang_server_args'] = merge_server_args(args or {}, override)
    ctx.override_keys = tuple(key for key, value in override.items() if value is not None)


def _named_for_override(problems, keys):
    """The problems of flags the override set, naming sglang_server_args_override['<key>'] as their variable."""
    names = {sglang_args_variable(key): '%s[%r]' % (VAR_ARGS_OVERRIDE, key) for key in keys}
    return [problem(p['code'], names[p['variable']], p['what'], p['fix'], p['where'], p['hosts'], p['severity'])
            if p['variable'] in names else p for p in problems]


def _check_nccl(ctx, interfaces):
    ctx.extend(located(check_nccl_settings(
        ctx.values['nccl_env_extra'], ctx.values['nccl_env_deliberate'], ctx.values['nccl_env_debug'],
        ctx.values['nccl_env_ib_disable'], interfaces or list(DEFAULT_TWINS), None), ctx.where, ctx.names))


def _explicit_addresses(ctx, h, rank, interfaces, nets):
    """[IPAddress or None per twin] from spark_cx7_addresses of one host."""
    name = h['name']
    var = 'spark_cx7_addresses'
    given = h['vars']['spark_cx7_addresses']
    where = 'host ' + name
    example = ', '.join(str(net[HOST_PART_BASE + rank]) if net is not None and net.size > HOST_PART_BASE + rank + 1
                        else '192.168.%d.%d' % (100 + i, HOST_PART_BASE + rank) for i, net in enumerate(nets))
    if not isinstance(given, (list, tuple)):
        ctx.add(problem('cx7-addresses-not-list', var, 'must be a list (one address per twin), got %s' % kind(given),
                        'write spark_cx7_addresses: [%s] or leave it out to compute them' % example, where, [name]))
        return [None] * len(interfaces)
    if len(given) != len(interfaces):
        ctx.add(problem('cx7-addresses-count', var, '%s for the %s %s' % (_count(len(given), 'address', 'addresses'),
                                                                          _count(len(interfaces), 'twin'), interfaces),
                        'give exactly one address per twin, in the order of spark_cx7_interfaces, or leave it out to compute them',
                        where, [name]))
    parsed = [_parse_ip(text) for text in given[:len(interfaces)]]
    ips = [ip for ip, _prefix in parsed]
    if _swapped(ips, nets):
        fixed = [next(str(ip) for ip in ips if ip in net) for net in nets]
        ctx.add(problem('cx7-addresses-order', var, '%s are in the wrong order for the twins %s (subnets %s)'
                        % ([str(ip) for ip in ips], interfaces, [str(n) for n in nets]),
                        'write spark_cx7_addresses: [%s] (one per twin, in the order of spark_cx7_interfaces)' % ', '.join(fixed),
                        where, [name]))
        return ips + [None] * (len(interfaces) - len(ips))
    for index, (ip, prefix) in enumerate(parsed):
        net = nets[index]
        twin = interfaces[index]
        if ip is None:
            ctx.add(problem('cx7-address-invalid', var, 'entry %r (for %s) is not an IPv4 address' % (given[index], twin),
                            'write a plain address inside %s, e.g. %s' % (net or "the twin's subnet", example.split(', ')[index]),
                            where, [name]))
            continue
        if net is None:
            continue
        if ip not in net:
            ctx.add(problem('cx7-address-outside-subnet', var, "%s (for %s) is outside that twin's subnet %s" % (ip, twin, net),
                            'use an address inside %s for %s (addresses follow the order of spark_cx7_interfaces)' % (net, twin),
                            where, [name]))
            ips[index] = None
        elif ip in (net.network, net.broadcast):
            ctx.add(problem('cx7-address-reserved', var, '%s (for %s) is the %s address of %s'
                            % (ip, twin, 'network' if ip == net.network else 'broadcast', net),
                            'use a host address between %s and %s' % (net[1], net[-2]), where, [name]))
            ips[index] = None
        elif prefix is not None and prefix != net.prefixlen:
            ctx.add(problem('cx7-address-prefix', var, '%s/%d (for %s) has a prefix other than its subnet %s' % (ip, prefix, twin, net),
                            'write the plain address %s; the prefix comes from spark_cx7_subnets' % ip, where, [name]))
    return (ips + [None] * len(interfaces))[:len(interfaces)]


def _swapped(ips, nets):
    """True when every address fits exactly one subnet but they are listed in another order than the twins."""
    if len(ips) != len(nets) or len(ips) < 2 or None in ips or None in nets:
        return False
    return (any(ip not in net for ip, net in zip(ips, nets))
            and all(sum(ip in net for net in nets) == 1 for ip in ips)
            and all(any(ip in net for ip in ips) for net in nets))


def _plan_addresses(ctx, order, interfaces, nets):
    """{name: [IPAddress or None per twin]}: given addresses first, then the computed ones, with every clash."""
    rank_of = {name: r for r, name in enumerate(order)}
    addresses, taken = {}, {}
    for h in ctx.hosts:
        if h['vars'].get('spark_cx7_addresses') not in (None, []):
            addresses[h['name']] = _explicit_addresses(ctx, h, rank_of[h['name']], interfaces, nets)
            _claim(ctx, taken, h['name'], addresses[h['name']])
    too_small, clashes = {}, {}
    for h in ctx.hosts:
        name = h['name']
        if name in addresses:
            continue
        host_part = HOST_PART_BASE + rank_of[name]
        ips = []
        for index, net in enumerate(nets):
            if net is None or host_part > net.size - 2:
                if net is not None:
                    too_small.setdefault(index, []).append(name)
                ips.append(None)
                continue
            ip = net[host_part]
            if ip in taken:
                clashes.setdefault((name, taken[ip]), []).append('%s on %s' % (ip, interfaces[index]))
            else:
                taken[ip] = name
            ips.append(ip)
        addresses[name] = ips
    for (name, owner), where in clashes.items():
        ctx.add(problem('cx7-address-clash', 'spark_cx7_addresses',
                        'the addresses computed for %s (rank %d), %s, are already set in spark_cx7_addresses of %s'
                        % (name, rank_of[name], ', '.join(where), owner),
                        'set spark_cx7_addresses on %s too, or pick addresses for %s outside the computed .%d-.%d range'
                        % (name, owner, HOST_PART_BASE, HOST_PART_BASE + len(order) - 1),
                        hosts_text(sorted([name, owner])), sorted([name, owner])))
    for index, misfits in sorted(too_small.items()):
        net = nets[index]
        ctx.add(problem('cx7-subnet-too-small', 'spark_cx7_subnets',
                        '%s (%s) is too small for %d nodes: computed addresses use host parts %d .. %d, the subnet has 1 .. %d'
                        % (net, interfaces[index], len(order), HOST_PART_BASE, HOST_PART_BASE + len(order) - 1, net.size - 2),
                        'use a /24 per twin (e.g. 192.168.%d.0/24), or set spark_cx7_addresses on %s'
                        % (100 + index, ', '.join(misfits)), hosts_text(misfits), misfits))
    return addresses, taken


def _claim(ctx, taken, name, ips):
    for ip in ips:
        if ip is None:
            continue
        if ip in taken:
            owner = taken[ip]
            what = '%s is listed twice' % ip if owner == name else '%s is given to both %s and %s' % (ip, owner, name)
            ctx.add(problem('cx7-address-twice', 'spark_cx7_addresses', what,
                            'give every host and twin its own CX7 address (or leave spark_cx7_addresses out to compute them)',
                            hosts_text(sorted({owner, name})), sorted({owner, name})))
        else:
            taken[ip] = name


def _check_management(ctx, taken, nets, interfaces):
    """Management addresses: one per host, never a CX7 address, never inside a CX7 subnet."""
    var = 'ansible_host'
    by_address = {}
    for h in ctx.hosts:
        address = h['vars'].get('ansible_host') or h['name']
        if not isinstance(address, str):
            ctx.add(problem('management-address-invalid', var, 'is %s, not an address or DNS name' % kind(address),
                            'write the address of the management port, e.g. 10.0.0.11', 'host ' + h['name'], [h['name']]))
            continue
        ip = _parse_ip(address)[0]
        by_address.setdefault(str(ip) if ip is not None else address.lower(), []).append(h['name'])
        if ip is None:
            continue
        owner = taken.get(ip)
        if owner is not None:
            ctx.add(problem('management-address-is-cx7', var, 'the management address %s of %s is also %s CX7 address'
                            % (ip, h['name'], 'its own' if owner == h['name'] else "%s's" % owner),
                            'keep ansible_host on the management port (enP7s7 or Wi-Fi) and give the CX7 twins addresses '
                            'from spark_cx7_subnets', hosts_text(sorted({h['name'], owner})), sorted({h['name'], owner})))
            continue
        for index, net in enumerate(nets):
            if net is not None and ip.version == net.version and ip in net:
                ctx.add(problem('management-address-in-cx7-subnet', var, 'the management address %s lies inside the CX7 subnet '
                                '%s of %s' % (ip, net, interfaces[index]),
                                'pick CX7 subnets apart from the management network (e.g. 192.168.100.0/24, '
                                '192.168.101.0/24), or point ansible_host at the management port', 'host ' + h['name'],
                                [h['name']]))
    for address, owners in by_address.items():
        if len(owners) > 1:
            ctx.add(problem('management-address-twice', var, '%s is the management address of %s' % (address, ' and '.join(owners)),
                            'give each host its own ansible_host (the address of its management port)',
                            hosts_text(owners), owners))


def _urls(values, scheme, head_address):
    host = values['sglang_server_host']
    port = values['sglang_server_port']
    local = '127.0.0.1' if host in WILDCARDS else host
    return ('%s://%s:%s' % (scheme, _url_host(local), port),
            '%s://%s:%s' % (scheme, _url_host(head_address if host in WILDCARDS else host), port))


def _description_context(description):
    if not isinstance(description, dict):
        raise ProblemsError([problem('plan-input-invalid', 'cluster_plan input', 'expected a dict, got %s' % kind(description),
                                     'pass the description built by the preflight role', 'the controller')])
    cluster = str(description.get('cluster') or 'spark')
    hosts = _normalise_hosts(description)
    if not hosts:
        raise ProblemsError([problem('group-empty', VAR_GROUP, 'the inventory group %r has no hosts' % cluster,
                                     'add the Sparks under all.children.%s.hosts in the inventory, or set spark_group to the '
                                     'group that holds them' % cluster, 'inventory')])
    problems = []
    for h in hosts:
        for var, message in (h['vars'].pop('__errors__', None) or {}).items():
            problems.append(problem('variable-undefined', var, 'cannot be read: %s' % message,
                                    'define what it refers to, or remove it', 'host ' + h['name'], [h['name']]))
    outside = [str(n) for n in description.get('play_hosts') or [] if str(n) not in [h['name'] for h in hosts]]
    if outside:
        problems.append(problem('play-host-outside-group', VAR_GROUP,
                                '%s %s in the play but not in the inventory group %s' % (
                                    hosts_text(outside), 'is' if len(outside) == 1 else 'are', cluster),
                                'run the play on the group %s (hosts: %s), or set spark_group to the group of these hosts'
                                % (cluster, cluster), 'inventory', outside))
    where = 'group vars of ' + hosts_text([h['name'] for h in hosts])
    values = _cluster_values(hosts, cluster, where, problems)
    ctx = Context(cluster, hosts, values, where)
    ctx.extend(problems)
    return ctx


VAR_SGLANG_GROUPS = 'preflight_sglang_groups'


def group_overlap_problems(sglang_groups, inventory_groups, cluster=None):
    """A node in two SGLang groups, and a listed group the inventory lacks: problems, each with the fix.

    ``sglang_groups``: the inventory groups that each run one SGLang instance (preflight_sglang_groups; the planned
    group ``cluster`` is always one of them); ``inventory_groups``: Ansible's ``groups`` (group -> host names). A node
    runs one SGLang unit under one name, with one NCCL file and one CX7 address plan: in two groups, each group's run
    would rewrite what the other's serves with.
    """
    names = [] if sglang_groups is None else sglang_groups
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        return [problem('sglang-groups-invalid', VAR_SGLANG_GROUPS, 'is %s, not a list of inventory groups' % kind(names),
                        'write e.g. [spark_a, spark_b], the groups that each serve one SGLang instance', 'inventory')]
    inventory_groups = inventory_groups if isinstance(inventory_groups, dict) else {}
    names = ([cluster] if cluster and cluster not in names else []) + [str(n) for n in names]
    problems, member_of = [], {}
    for name in names:
        if name not in inventory_groups:
            problems.append(problem('sglang-group-unknown', VAR_SGLANG_GROUPS, 'names %r, which is no group of the '
                                    'inventory' % name, 'list only inventory groups that each serve one SGLang '
                                    'instance, or add group %s to the inventory' % name, 'inventory'))
            continue
        for host in inventory_groups[name] or []:
            owners = member_of.setdefault(str(host), [])
            if name not in owners:
                owners.append(name)
    for host, owners in member_of.items():
        if len(owners) > 1:
            problems.append(problem(
                'node-in-two-groups', VAR_SGLANG_GROUPS,
                '%s is in the SGLang groups %s: a node runs one SGLang unit, with one NCCL file and one CX7 address '
                "plan, and each group's run would rewrite what the other serves with" % (host, ' and '.join(owners)),
                'keep %s in one of %s and remove it from the other%s (a node serves one group; groups behind one '
                'router are separate nodes)' % (host, ', '.join(owners), 's' if len(owners) > 2 else ''),
                'host ' + host, [host]))
    return problems


def _check_group_overlap(ctx, description):
    if 'sglang_groups' in description or 'inventory_groups' in description:
        ctx.extend(group_overlap_problems(description.get('sglang_groups'), description.get('inventory_groups'),
                                          ctx.cluster))


def _gpus_per_node(ctx, description):
    gpus = description.get('gpus_per_node', 1)
    gpus = 1 if gpus is None else gpus
    item = _int_problem('gpus-per-node-invalid', VAR_GPUS, gpus, ctx.where, ctx.names, 1, 64, '1 on a DGX Spark')
    if item:
        ctx.add(item)
        return None
    return gpus


def check_description(description):
    """(problems, plan or None): every problem of a cluster description, and the plan when there is none."""
    if netaddr is None:  # pragma: no cover
        return [problem('netaddr-missing', 'netaddr', 'the Python library netaddr is missing on the controller',
                        'pip install -r requirements.txt (it pins netaddr)', 'the controller')], None
    try:
        ctx = _description_context(description)
    except ProblemsError as exc:
        return exc.problems, None
    _apply_args_override(ctx)
    _check_group_overlap(ctx, description)
    interfaces = _check_interfaces(ctx)
    nets = _check_subnets(ctx, interfaces)
    order = _check_ranks(ctx)
    gpus = _gpus_per_node(ctx, description)
    tp, pp = _check_parallel(ctx, len(order), gpus)
    dist_port = _check_ports(ctx)
    mtu, speed, topology = _check_link_settings(ctx)
    cidrs = _check_cidrs(ctx)
    _check_paths_and_names(ctx)
    _check_metrics(ctx)
    _check_staging_inputs(ctx)
    model = _check_model(ctx)
    _check_memory_reserve(ctx)
    _check_secrets(ctx)
    _check_removed(ctx)
    server_args = ctx.values['sglang_server_args']
    server_args = {} if server_args is None else server_args
    _check_flags(ctx, {k: v for k, v in server_args.items() if k not in TP_KEYS} if isinstance(server_args, dict) else server_args)
    _check_nccl(ctx, interfaces)
    addresses, taken = _plan_addresses(ctx, order, interfaces, nets)
    _check_management(ctx, taken, nets, interfaces)
    ctx.problems = _named_for_override(ctx.problems, ctx.override_keys)
    if errors(ctx.problems):
        return ctx.problems, None
    plan = _assemble(ctx, order, interfaces, nets, addresses, model, gpus, tp, pp, dist_port, mtu, speed, topology, cidrs)
    return ctx.problems, plan


def _assemble(ctx, order, interfaces, nets, addresses, model, gpus, tp, pp, dist_port, mtu, speed, topology, cidrs):
    values = ctx.values
    head = order[0]
    nnodes = len(order)
    explicit = {h['name']: h['vars'].get('spark_cx7_addresses') not in (None, []) for h in ctx.hosts}
    nodes = {}
    for rank, name in enumerate(order):
        ips = addresses[name]
        nodes[name] = {
            'group': ctx.cluster,
            'node_rank': rank,
            'management_address': str(ctx.host_var(name, 'ansible_host') or name),
            'cx7_addresses': [str(ip) for ip in ips],
            'cx7_interfaces': [{'name': iface, 'address': '%s/%d' % (ip, net.prefixlen), 'ip': str(ip), 'subnet': str(net)}
                               for iface, ip, net in zip(interfaces, ips, nets)],
            'cx7_addresses_from': 'spark_cx7_addresses' if explicit[name] else 'spark_cx7_subnets',
            'host_ip': str(ips[0]),
            'next': order[(rank + 1) % nnodes],
            'probe': None,
            'nccl_env': None,
            'staging': None,
        }
    server_args = values['sglang_server_args'] or {}
    config_dir = values['sglang_server_config_dir'].rstrip('/') or ''
    tls = dict((name, '%s/%s' % (config_dir, base)) for name, base in TLS_FILES.items()) \
        if values['sglang_server_tls'] else None
    scheme = 'https' if tls or 'ssl-certfile' in server_args or 'ssl_certfile' in server_args else 'http'
    url, head_url = _urls(values, scheme, nodes[head]['management_address'])
    model = dict(model, source_host=model['source_host'] or head)
    group = {
        'name': ctx.cluster,
        'hosts': list(order),
        'head': head,
        'nnodes': nnodes,
        'tp_size': tp,
        'pp_size': pp,
        'gpus_per_node': gpus,
        'total_gpus': nnodes * gpus,
        'dist_init_port': dist_port,
        'dist_init_addr': '%s:%d' % (addresses[head][0], dist_port),
        'port': values['sglang_server_port'],
        'host': values['sglang_server_host'],
        'scheme': scheme,
        'tls': tls,
        'url': url,
        'head_url': head_url,
        'metrics': metrics_target(values, scheme, nodes[head]['management_address']),
        'service': values['sglang_server_service_name'],
        'config_dir': values['sglang_server_config_dir'].rstrip('/') or '/',
        'record': (values['sglang_server_config_dir'].rstrip('/') or '') + '/' + RECORD_NAME,
        'config_file': (values['sglang_server_config_dir'].rstrip('/') or '') + '/' + SERVER_CONFIG_NAME,
        'cache_dir': values['sglang_server_cache_dir'].rstrip('/') or '/',
        'image_size_gb': values['sglang_server_image_size_gb'],
        'model_refresh': values['sglang_server_model_refresh'],
        'runtime': values['sglang_server_runtime'],
        'image': values['sglang_server_image'],
        'container_volumes': list(values['sglang_server_container_volumes']),
        'container_ulimits': dict(values['sglang_server_container_ulimits']),
        'python': values['sglang_server_native_python'],
        'model': model,
        'image_pin': None,
        'memory_reserve_gib': values['sglang_server_memory_reserve_gib'],
        'server_args': {k: v for k, v in server_args.items() if k not in TP_KEYS},
    }
    return {
        'schema': SCHEMA,
        'stage': 'description',
        'cluster': ctx.cluster,
        'topology': topology,
        'interfaces': list(interfaces),
        'subnets': [str(n) for n in nets],
        'mtu': mtu,
        'expected_speed_mbps': speed,
        'nccl_env_file': values['nccl_env_file'],
        'allowed_cidrs': cidrs,
        'exposed_ports': exposed_ports(values, cidrs),
        'hf_endpoint': values['spark_hf_endpoint'].rstrip('/'),
        'proxy_env': proxy_env(values, [str(n) for n in nets]),
        'groups': {ctx.cluster: group},
        'nodes': nodes,
        'problems': [p for p in ctx.problems if p['severity'] == 'warning'],
    }


# Every source, for a port whose sources are not restricted.
ANYWHERE = ('0.0.0.0/0', '::/0')


def exposed_ports(values, cidrs):
    """The ports of a node that the firewall role opens beyond the CX7 link and SSH, each to its sources only.

    One entry per service (``name``, ``port``, ``protocol``, ``sources``, ``variable``: the input that sets its
    sources); every other port of the management network is closed (the firewall role's firewall_open_ports adds
    more, e.g. the router's). ``spark_allowed_cidrs`` empty means no restriction: every source.
    """
    sources = list(cidrs) or list(ANYWHERE)
    return [
        {'name': 'sglang-api', 'port': values['sglang_server_port'], 'protocol': 'tcp',
         'sources': sources, 'variable': 'spark_allowed_cidrs'},
        # The monitoring host scrapes SGLang's /metrics on the API port and node_exporter here: the same clients.
        {'name': 'node-exporter', 'port': NODE_EXPORTER_PORT, 'protocol': 'tcp',
         'sources': sources, 'variable': 'spark_allowed_cidrs'},
    ]


def plan_cluster(description):
    """The plan at stage ``description``; raises ProblemsError listing every problem of every controller-side check.

    ``description``: ``cluster`` (the group's name), ``hosts`` (``[{'name': ..., 'vars': {input: value}}]`` in
    inventory order, with the inputs of ``INPUTS`` that are defined for that host; ``vars.__errors__`` may map an
    input to the reason it could not be read) and ``gpus_per_node``.
    """
    problems, plan = check_description(description)
    if plan is None:
        raise ProblemsError(errors(problems) or problems)
    return plan


def nccl_settings(description):
    """The NCCL inputs of a description (group-wide, from its first host), for the check against the RDMA devices."""
    hosts = _normalise_hosts(description) if isinstance(description, dict) else []
    first = hosts[0]['vars'] if hosts else {}
    return {key: first.get('nccl_env_' + key) for key in ('extra', 'deliberate', 'debug', 'ib_disable')}


# ---- step 2: the probes ------------------------------------------------------------------------------------

def _version_key(version):
    return tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in re.split(r'[.-]', str(version)))


# What to do about a GPU driver that is not ready, by the probe's driver state (the plan's problems and verify's
# report both say it).
DRIVER_FIX = {
    'absent': ('on DGX OS the driver comes with the OS: reboot or repair it; elsewhere run site.yml, whose '
               'nvidia_driver role installs it (nvidia_driver_mode: auto)'),
    'not-loaded': 'reboot the node, or load the kernel module (`modprobe nvidia`) and read `dmesg` if it fails',
    'not-probed': 'run the preflight role on this host in the same play (playbooks/verify.yml does)',
    'mismatch': 'reboot the node: the loaded kernel module is older than the driver libraries',
    'no-gpu': 'check that the GPU is seated and seen (`lspci | grep -i nvidia`, `nvidia-smi`)',
    'error': 'run `nvidia-smi` on the node and read what it says',
}

NOT_PROBED = 'not probed: the host is not in this run (left out by --limit, or unreachable)'


def node_probe(gpu, cx7):
    """One node's probe as the plan holds it, from the registered results of gpu_info and connectx_info
    (registered with ``failed_when: false``, so ``failed`` says nothing: ``driver_state`` does)."""
    gpu = gpu or {}
    cx7 = cx7 or {}
    gpus = gpu.get('gpus') if isinstance(gpu.get('gpus'), list) else []
    if not gpu:
        state = 'not-probed'
    else:
        state = re.sub(r'[^a-z0-9]+', '-', str(gpu.get('driver_state') or 'error').lower()).strip('-') or 'error'
    ready = state == 'ready' and not gpu.get('msg')
    if state == 'ready' and not ready:
        state = 'error'
    if not cx7 and gpu:
        cx7 = {'msg': 'connectx_info returned nothing (the probe did not run on this host)'}
    return {
        'dgx_os': bool(gpu.get('dgx_os')),
        'driver': {
            'state': state,
            'version': gpu.get('driver_version'),
            'message': None if ready else (gpu.get('msg') or NOT_PROBED),
        },
        'gpu_count': gpu.get('gpu_count', len(gpus)) if ready else 0,
        'gpus': gpus,
        'cuda_version': gpu.get('cuda_version'),
        'interfaces': cx7.get('interfaces') or [],
        'rdma_devices': [d if isinstance(d, str) else d.get('name') for d in cx7.get('rdma_devices') or []],
        'link_problems': [p for p in cx7.get('problems') or [] if isinstance(p, dict)]
        + ([problem('cx7-probe-failed', 'spark_cx7_interfaces', cx7['msg'])] if cx7.get('msg') else []),
    }


def _driver_problems(plan, allow_missing_driver, expected):
    problems = []
    ready = {}
    for name, node in plan['nodes'].items():
        probe = node['probe']
        driver = probe['driver']
        where = 'host ' + name
        if driver['state'] == 'ready':
            ready[name] = probe
            if expected is not None and probe['gpu_count'] != expected:
                problems.append(problem('gpu-count', VAR_GPUS, '%d GPU(s) found, %d expected' % (probe['gpu_count'], expected),
                                        'check nvidia-smi -L on %s, or set preflight_expected_gpus_per_node to the real count'
                                        % name, where, [name]))
        elif driver['state'] in ('absent', 'not-loaded') and allow_missing_driver and not probe['dgx_os']:
            problems.append(warning('gpu-driver-to-install', 'nvidia_driver_mode',
                                    'no NVIDIA driver answers yet (%s); the nvidia_driver role installs it' % driver['message'],
                                    None, where, [name]))
        elif driver['state'] == 'not-probed':
            problems.append(problem('node-not-probed', VAR_GROUP, driver['message'],
                                    'run on every host of group %s once each is reachable' % node['group'], where, [name]))
        else:
            problems.append(problem('gpu-driver-' + driver['state'], 'NVIDIA driver', driver['message'] or driver['state'],
                                    DRIVER_FIX.get(driver['state'], DRIVER_FIX['error']), where, [name]))
    versions = {}
    models = {}
    for name, probe in sorted(ready.items()):
        if probe['driver']['version'] is not None:
            versions.setdefault(str(probe['driver']['version']), []).append(name)
        names = sorted({g.get('name') for g in probe['gpus'] if isinstance(g, dict) and g.get('name')})
        if names:
            models.setdefault(', '.join(names), []).append(name)
    if len(versions) > 1:
        everyone = sorted(h for hs in versions.values() for h in hs)
        newest = sorted(versions, key=_version_key)[-1]
        problems.append(problem('gpu-driver-versions-differ', 'NVIDIA driver version',
                                'nodes disagree on the driver version: %s' % '; '.join(
                                    '%s on %s' % (v, ', '.join(hs)) for v, hs in sorted(versions.items(), key=lambda kv: _version_key(kv[0]))),
                                'install the same driver on all nodes (e.g. %s) and reboot them' % newest,
                                hosts_text(everyone), everyone))
    if len(models) > 1:
        everyone = sorted(h for hs in models.values() for h in hs)
        problems.append(problem('gpu-models-differ', 'GPU model', 'nodes have different GPUs: %s' % '; '.join(
            '%s on %s' % (m, ', '.join(hs)) for m, hs in sorted(models.items())),
            'put one model on one kind of GPU: split the hosts into separate groups', hosts_text(everyone), everyone))
    return problems


def _link_problems(plan, fail_on_missing_interface):
    problems = []
    for name, node in plan['nodes'].items():
        probe = node['probe']
        if probe['driver']['state'] == 'not-probed':
            continue
        missing = [i['name'] for i in probe['interfaces'] if not i.get('present', True)]
        if missing:
            present = [i['name'] for i in probe['interfaces'] if i.get('present', True)]
            problems.append((problem if fail_on_missing_interface else warning)(
                'cx7-interface-missing', 'spark_cx7_interfaces',
                'no such interface %s (present: %s)' % (', '.join(missing), ', '.join(present) or 'none'),
                'list the twins of the cabled CX7 port as `ibdev2netdev` shows them on this host, e.g. [%s]'
                % ', '.join(DEFAULT_TWINS), 'host ' + name, [name]))
        for item in probe['link_problems']:
            if item.get('code') == 'cx7-interface-missing':
                continue
            make = problem if item.get('code') == 'cx7-probe-failed' else warning
            problems.append(make(item.get('code') or 'cx7-link', item.get('variable') or 'spark_cx7_interfaces',
                                 item.get('what') or item.get('message') or 'link problem', item.get('fix'),
                                 'host ' + name, [name]))
    return problems


def _speed_problems(plan):
    """Through a switch, every twin of every node must have negotiated the same speed: NCCL's ring runs at the pace of
    its slowest link. Only twins that are up and report a speed are compared (before cx7_network's first run they are
    down: the next run, or verify, compares them)."""
    if plan.get('topology') != 'switch':
        return []
    speeds = {}   # speed -> ['node:twin']
    for name, node in sorted(plan['nodes'].items()):
        for iface in node['probe']['interfaces']:
            speed = iface.get('speed_mbps')
            if iface.get('present', True) and iface.get('operstate') == 'up' and _is_int(speed) and speed > 0:
                speeds.setdefault(speed, []).append((name, iface.get('name')))
    if len(speeds) < 2:
        return []
    fastest = max(speeds)
    slow = sorted({host for speed, twins in speeds.items() if speed != fastest for host, _twin in twins})
    found = '; '.join('%d Mb/s on %s' % (speed, ', '.join('%s %s' % twin for twin in twins))
                      for speed, twins in sorted(speeds.items(), reverse=True))
    return [problem('cx7-speeds-differ', 'spark_cx7_topology',
                    'is switch, and the twins negotiated different speeds: %s. NCCL runs every ring at the pace of its '
                    'slowest link' % found,
                    'force the switch ports of %s to %d Mb/s with auto-negotiation off (NVIDIA\'s multi-Spark switch '
                    'guide), and reseat or replace their cables' % (', '.join(slow), fastest), hosts_text(slow), slow)]


def _readdress_problems(plan):
    """A node whose twins already carry another address of the planned subnet would be readdressed (and restarted)."""
    problems = []
    for name, node in plan['nodes'].items():
        if node['cx7_addresses_from'] != 'spark_cx7_subnets':
            continue
        found = {i.get('name'): i.get('ipv4') or [] for i in node['probe']['interfaces']}
        for twin in node['cx7_interfaces']:
            net = netaddr.IPNetwork(twin['subnet'])
            others = [a for a in found.get(twin['name'], [])
                      if _parse_ip(a)[0] is not None and _parse_ip(a)[0] in net and _parse_ip(a)[0] != netaddr.IPAddress(twin['ip'])]
            if others:
                kept = _found_in_plan(found, node)
                problems.append(problem('cx7-readdress', 'spark_cx7_addresses',
                                        '%s has %s on %s, but the plan gives it %s (rank %d): a host inserted before it in the '
                                        'group, or a reordered group, would readdress and restart every node after it'
                                        % (name, ', '.join(others), twin['name'], twin['address'], node['node_rank']),
                                        'add new Sparks at the end of the group, or pin spark_cx7_addresses on every host '
                                        '(e.g. %s keeps [%s])' % (name, ', '.join(a.split('/')[0] for a in kept)),
                                        'host ' + name, [name]))
                break
    return problems


def _found_in_plan(found, node):
    out = []
    for twin in node['cx7_interfaces']:
        net = netaddr.IPNetwork(twin['subnet'])
        match = [a for a in found.get(twin['name'], []) if _parse_ip(a)[0] is not None and _parse_ip(a)[0] in net]
        out.append(match[0] if match else twin['address'])
    return out


def _nccl_envs(plan, nccl_settings):
    """(problems, {node: NCCL environment or None}): each probed node's environment, built by the function the
    nccl_env role's file comes from, against the RDMA devices found there; and nodes that disagree on RDMA."""
    settings = nccl_settings or {}
    kwargs = {key: settings[key] for key in ('ib_disable', 'debug', 'extra', 'deliberate') if settings.get(key) is not None}
    problems, envs = [], {}
    for name, node in sorted(plan['nodes'].items()):
        probe = node['probe']
        envs[name] = None
        if probe['driver']['state'] == 'not-probed':
            continue
        try:
            envs[name] = build_nccl_env(plan['interfaces'], probe['rdma_devices'], **kwargs)
        except ProblemsError as exc:
            problems.extend(located(exc.problems, 'host ' + name, [name]))
            continue
        problems.extend(located(nccl_env_warnings(envs[name], settings.get('deliberate') or (), plan['interfaces'],
                                                  probe['rdma_devices']), 'host ' + name, [name]))
    with_rdma = sorted(n for n, node in plan['nodes'].items() if node['probe']['rdma_devices'])
    without = sorted(n for n, node in plan['nodes'].items()
                     if not node['probe']['rdma_devices'] and node['probe']['driver']['state'] != 'not-probed'
                     and not any(p.get('code') == 'cx7-probe-failed' for p in node['probe']['link_problems']))
    if with_rdma and without:
        problems.append(problem('rdma-mixed', 'spark_cx7_interfaces',
                                'RDMA devices were found behind the twins of %s but not of %s: NCCL would use RDMA on '
                                'some nodes and sockets on the others, and the group fails or crawls'
                                % (', '.join(with_rdma), ', '.join(without)),
                                'check `ibdev2netdev` and that mlx5_ib is loaded on %s' % ', '.join(without),
                                hosts_text(without), without))
    return _dedupe(problems), envs


def _dedupe(problems):
    """One problem per (code, what), with the hosts of all its copies."""
    merged = {}
    for item in problems:
        key = (item['code'], item['what'])
        if key not in merged:
            merged[key] = dict(item, hosts=list(item['hosts']))
            continue
        hosts = merged[key]['hosts'] + [h for h in item['hosts'] if h not in merged[key]['hosts']]
        merged[key] = located([dict(merged[key], where=None)], hosts_text(hosts), hosts)[0]
    return list(merged.values())


def complete_plan(plan, probes, allow_missing_driver=False, fail_on_missing_interface=True, expected_gpus=None,
                  nccl_settings=None, strict=True, staging=None, hub=None, has_token=False):
    """The plan at stage ``probed``: every node's probe added, and the checks that need the nodes run.

    ``probes`` maps each host of the plan to ``{'gpu': gpu_info result, 'cx7': connectx_info result}``
    (results registered with ``failed_when: false``). ``staging``: host -> staging_info result, ``hub``: preflight's
    hub answers (None when the record pinned the model), ``has_token``: whether a Hugging Face token is set; with
    them the model and image are pinned and what each node lacks is planned. ``allow_missing_driver``: the run installs the driver
    (nvidia_driver in install mode), so "no driver yet" is a node state, not a problem. ``nccl_settings``:
    ``{'extra', 'deliberate', 'debug', 'ib_disable'}`` to check against the RDMA devices found. With ``strict``,
    errors raise ProblemsError; otherwise they are kept in ``problems`` (verify reports them).
    """
    plan = copy.deepcopy(plan)
    probes = probes or {}
    for name, node in plan['nodes'].items():
        raw = probes.get(name) or {}
        node['probe'] = node_probe(raw.get('gpu'), raw.get('cx7'))
    expected = expected_gpus
    if expected is None:
        expected = next(iter(plan['groups'].values()))['gpus_per_node']
    nccl_problems, envs = _nccl_envs(plan, nccl_settings)
    problems = (_driver_problems(plan, allow_missing_driver, expected) + _link_problems(plan, fail_on_missing_interface)
                + _speed_problems(plan) + _readdress_problems(plan) + nccl_problems)
    if staging is not None:
        problems += _staging_problems(plan, staging, hub, has_token)
    if strict and errors(problems):
        raise ProblemsError(errors(problems), 'The probed cluster')
    for name, node in plan['nodes'].items():
        node['nccl_env'] = envs[name]
    plan['stage'] = 'probed'
    plan['problems'] = plan.get('problems', []) + problems
    return plan


def _staging_problems(plan, staging, hub, has_token):
    """Pin the group's model and image, note what each node lacks (``node['staging']``) and check the disks."""
    group = next(iter(plan['groups'].values()))
    infos = probed(staging)
    source = group['model']['source_host']
    manifest, problems = read_hub(group['model'], hub, has_token, source)
    model, image, needs, more = stage_model(group, infos, manifest, group['model_refresh'],
                                            group['image_size_gb'] * GB)
    if problems:
        more = [p for p in more if p['code'] != 'model-not-pinned']
    group['model'] = model
    group['image_pin'] = image
    for name in group['hosts']:
        plan['nodes'][name]['staging'] = needs.get(name)
    return problems + more


# ---- memory fit --------------------------------------------------------------------------------------------

GB = 1000 ** 3
MIB = 1024 ** 2
GIB = 1024 ** 3


def _node_memory_mib(gpu_infos, caller):
    """host -> the node's memory in MiB (the sum of its GPUs' ``memory_total_mib``); ValueError for unusable input."""
    if not isinstance(gpu_infos, dict) or not gpu_infos:
        raise ValueError('%s: no gpu_info results to compare with (run dgxspark.sglang.gpu_info on every node)' % caller)
    node_mib = {}
    for host in sorted(gpu_infos):
        gpus = (gpu_infos[host] or {}).get('gpus') or []
        sizes = [g.get('memory_total_mib') for g in gpus if isinstance(g, dict)]
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in sizes):
            raise ValueError('%s: host %s reports no usable GPU memory figure (%r); check nvidia-smi and '
                             '/proc/meminfo there' % (caller, host, sizes))
        node_mib[host] = sum(sizes)
    return node_mib


def plan_memory_fit(weights_bytes, gpu_infos, fraction):
    """Whether a model's weights fit in the nodes' memory at SGLang's ``--mem-fraction-static``.

    ``gpu_infos``: host name -> a dict with ``gpus`` (each with ``memory_total_mib``), as gpu_info returns it or as
    the plan's node probe holds it. A node's memory is the sum of its GPUs' ``memory_total_mib`` (on a GB10 with
    unified memory, MemTotal). Tensor parallelism splits the weights evenly, so the smallest node bounds every
    rank: capacity = nodes x smallest node x fraction. Sizes in GB (10^9 bytes). Raises ValueError for input it
    cannot use.
    """
    if isinstance(weights_bytes, bool) or not isinstance(weights_bytes, (int, float)) or weights_bytes < 0:
        raise ValueError("memory_fit: the weights' size must be a number of bytes >= 0, got %r" % (weights_bytes,))
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError("memory_fit: mem-fraction-static must be a number in (0, 1], got %r. Fix: set "
                         "sglang_server_args['mem-fraction-static'] to e.g. 0.75" % (fraction,))
    node_mib = _node_memory_mib(gpu_infos, 'memory_fit')
    smallest = min(node_mib, key=lambda h: (node_mib[h], h))
    node_bytes = node_mib[smallest] * MIB
    per_node = node_bytes * fraction
    nnodes = len(node_mib)
    capacity = per_node * nnodes
    needed = max(1, int(math.ceil(weights_bytes / per_node))) if weights_bytes else 1
    result = {
        'fits': weights_bytes <= capacity,
        'weights_gb': round(weights_bytes / GB, 1),
        'node_gb': round(node_bytes / GB, 1),
        'per_node_gb': round(per_node / GB, 1),
        'capacity_gb': round(capacity / GB, 1),
        'nnodes': nnodes,
        'nodes_needed': needed,
        'fraction': fraction,
        'smallest_node': smallest,
    }
    sums = '%d node(s) x %.1f GB (%s, the smallest) x mem-fraction-static %s = %.1f GB' % (
        nnodes, result['node_gb'], smallest, fraction, result['capacity_gb'])
    if result['fits']:
        result['message'] = 'The weights (%.1f GB) fit: %s.' % (result['weights_gb'], sums)
    else:
        result['message'] = (
            'The weights (%.1f GB) do not fit: %s. SGLang would run out of memory while loading. Fix: run it on '
            '%d nodes like these (tensor parallel over %d), or pick a smaller or quantized model, or raise '
            "sglang_server_args['mem-fraction-static'] if the KV cache can make do with less"
            % (result['weights_gb'], sums, needed, needed))
    return result


# ---- memory reserve ---------------------------------------------------------------------------------------------

RESERVE_VAR = 'sglang_server_memory_reserve_gib'
FRACTION_VAR = "sglang_server_args['mem-fraction-static']"
# SGLang 0.5.23 picks mem-fraction-static itself when none is set: (GPU memory - reserved) / GPU memory, reserved being
# at least 10 GiB on a GPU of more than 60 GiB (handle_gpu_memory_settings in sglang/srt/arg_groups/memory_hook.py).
SGLANG_AUTO_LEAVES_GIB = 10
SGLANG_AUTO_FLOOR_ABOVE_GIB = 60


def _check_memory_reserve(ctx):
    """The form of sglang_server_memory_reserve_gib, before any host is contacted (its fit needs the probes)."""
    value = ctx.values[RESERVE_VAR]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        ctx.add(problem('memory-reserve-invalid', RESERVE_VAR, 'is %r, not a number of GiB (0 or more)' % (value,),
                        'write the GiB of each node that SGLang must leave to everything else, e.g. %s'
                        % DEFAULTS[RESERVE_VAR], ctx.where, ctx.names))


def plan_memory_reserve(gpu_infos, fraction, reserve_gib):
    """Whether SGLang's static pool, ``mem-fraction-static`` x node memory, leaves ``reserve_gib`` on every node.

    ``gpu_infos`` as for plan_memory_fit; ``fraction`` None when sglang_server_args sets none (SGLang then picks one,
    which leaves at least 10 GiB on a node of more than 60 GiB: a warning when that is below the reserve). Returns
    ``{'nodes': {host: {node_gib, static_gib, left_gib, max_fraction}}, 'reserve_gib', 'fraction', 'problems'}``: one
    error naming the hosts that the fraction leaves short, with the highest fraction that fits them all. Raises
    ValueError for input it cannot use.
    """
    if isinstance(reserve_gib, bool) or not isinstance(reserve_gib, (int, float)) or reserve_gib < 0:
        raise ValueError('memory_reserve: %s must be a number of GiB >= 0, got %r' % (RESERVE_VAR, reserve_gib))
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction <= 1):
        raise ValueError('memory_reserve: mem-fraction-static must be a number in (0, 1], got %r' % (fraction,))
    gib = {host: mib * MIB / GIB for host, mib in _node_memory_mib(gpu_infos, 'memory_reserve').items()}
    # Floored to 2 decimals: a fraction written with 2 decimals at or below it leaves the reserve.
    most = {host: max(0.0, math.floor((1 - reserve_gib / size) * 100 + 1e-9) / 100) for host, size in gib.items()}
    nodes = {host: {'node_gib': round(size, 1),
                    'static_gib': None if fraction is None else round(size * fraction, 1),
                    'left_gib': None if fraction is None else round(size * (1 - fraction), 1),
                    'max_fraction': most[host]} for host, size in gib.items()}
    result = {'nodes': nodes, 'reserve_gib': reserve_gib, 'fraction': fraction, 'problems': []}
    highest = min(most.values())
    if fraction is None:
        big = [h for h in gib if gib[h] > SGLANG_AUTO_FLOOR_ABOVE_GIB]
        unsure = sorted(h for h in gib if h not in big or reserve_gib > SGLANG_AUTO_LEAVES_GIB)
        if unsure:
            leaves = 'as little as %d GiB' % SGLANG_AUTO_LEAVES_GIB if set(unsure) <= set(big) else 'an amount it sizes'
            result['problems'].append(warning(
                'memory-fraction-auto', FRACTION_VAR,
                'is not set: SGLang 0.5.23 then picks one from the GPU memory, which leaves %s beside its weights and '
                'KV cache, less than %s (%s GiB)' % (leaves, RESERVE_VAR, reserve_gib),
                'set mem-fraction-static to %.2f or less in sglang_server_args' % highest, hosts_text(unsure), unsure))
        return result
    short = sorted(h for h in gib if gib[h] * (1 - fraction) < reserve_gib - 1e-9)
    if short:
        worst = min(short, key=lambda h: (gib[h], h))
        fix = ('lower mem-fraction-static to %.2f or less' % highest if highest > 0
               else 'run SGLang on nodes with more than %s GiB of memory' % reserve_gib)
        figures = (fraction, gib[worst], worst, gib[worst] * fraction, gib[worst] * (1 - fraction), RESERVE_VAR,
                   reserve_gib)
        result['problems'].append(problem(
            'memory-reserve-short', FRACTION_VAR,
            '%s x %.1f GiB (%s) = %.1f GiB for SGLang\'s weights and KV cache leaves %.2f GiB, less than %s (%s GiB) '
            'for SGLang\'s activations, the OS and earlyoom\'s margin; a GB10 that runs out of its unified memory can '
            'freeze until a hard reset' % figures,
            '%s, or lower %s to %.1f (and give up that headroom)' % (
                fix, RESERVE_VAR, math.floor(gib[worst] * (1 - fraction) * 10) / 10),
            hosts_text(short), short))
    return result
