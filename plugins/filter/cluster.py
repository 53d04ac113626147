# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Cluster math for dgxspark.sglang: node ranks, head, --nnodes, --dist-init-addr, CX7 address plan.

Everything here is a pure function over plain dicts and lists; only the thin filter wrappers at the
bottom know about Ansible (they turn a list of problems into one AnsibleFilterError). The docs of each
filter live beside this file in ``<filter>.yml`` (``ansible-doc -t filter dgxspark.sglang.<filter>``).
"""

from __future__ import annotations

import math
import re

try:
    import netaddr
except ImportError:  # pragma: no cover - reported when a filter is called
    netaddr = None

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - the pure functions work without Ansible
    AnsibleFilterError = ValueError


DEFAULT_INTERFACES = ('enp1s0f1np1', 'enP2p1s0f1np1')
DEFAULT_DIST_INIT_PORT = 20000
# Host part of a computed CX7 address: 10 + rank + 1 (rank 0 -> .11, rank 1 -> .12), as in DESIGN.md.
HOST_PART_BASE = 11

# ConnectX netdevs named by systemd/udev carry the physical port name: enp1s0f1np1, enP2p1s0f1np1.
_CX7_NAME = re.compile(r'^en(P\d+)?p\d+s\d+(f\d+)?np\d+$')
# The first half (PCI domain 0) and the second half (domain 2) of the same physical port.
_TWIN_A = re.compile(r'^enp(\d+s\d+f\d+np\d+)$')
_TWIN_B = re.compile(r'^enP2p(\d+s\d+f\d+np\d+)$')
_KNOWN_NOT_CX7 = {
    'enP7s7': 'enP7s7 is the 10 GbE management port, not a CX7 twin',
    'wlP9s9': 'wlP9s9 is the Wi-Fi interface, not a CX7 twin',
    'lo': 'lo is the loopback interface, not a CX7 twin',
}

VAR_HOSTS = 'spark (inventory group)'
VAR_INTERFACES = 'spark_cx7_interfaces'
VAR_SUBNETS = 'spark_cx7_subnets'
VAR_ADDRESSES = 'spark_cx7_addresses'
VAR_RANK = 'spark_node_rank'
VAR_MGMT = 'ansible_host'
VAR_PORT = 'spark_dist_init_port'
VAR_TP = "sglang_server_args['tp-size']"
VAR_TP_SIZE = 'sglang_server_tp_size'
VAR_PP = "sglang_server_args['pp-size']"
VAR_GPUS = 'preflight_expected_gpus_per_node'


class ClusterPlanError(ValueError):
    """Raised with every problem found in a cluster description, not only the first."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems):
    """One message for a list of problems, numbered, one per line."""
    if len(problems) == 1:
        return 'The cluster description has a problem:\n  1. ' + problems[0]
    lines = ['The cluster description has %d problems:' % len(problems)]
    lines.extend('  %d. %s' % (i, p) for i, p in enumerate(problems, 1))
    return '\n'.join(lines)


def problem(variable, where, what, fix):
    """A problem line that names the variable, the host(s) and the fix."""
    return '%s (%s): %s. Fix: %s' % (variable, where, what.rstrip('.'), fix.rstrip('.') + '.')


def _hosts_text(names):
    names = [n for n in names if n]
    if not names:
        return 'no hosts'
    if len(names) == 1:
        return 'host ' + names[0]
    return 'hosts ' + ', '.join(names)


def _effective(value, default):
    """A list-valued variable as a host sees it: None means the default."""
    if value is None:
        return list(default) if default is not None else None
    return list(value) if isinstance(value, (list, tuple)) else value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def cx7_twin(interface):
    """The other half of the same CX7 port: enp1s0f1np1 <-> enP2p1s0f1np1 (None if no rule applies)."""
    if not isinstance(interface, str):
        return None
    match = _TWIN_A.match(interface)
    if match:
        return 'enP2p' + match.group(1)
    match = _TWIN_B.match(interface)
    if match:
        return 'enp' + match.group(1)
    return None


def is_cx7_interface_name(interface):
    """True for names of the shape ConnectX netdevs get (``en[P<domain>]p<bus>s<slot>[f<fn>]np<port>``)."""
    return isinstance(interface, str) and bool(_CX7_NAME.match(interface))


def _parse_ip(value):
    """An IPAddress from 'a.b.c.d' or 'a.b.c.d/len' (returns (ip, prefixlen or None)), or (None, None)."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    text = value.strip()
    prefix = None
    if '/' in text:
        text, prefix_text = text.partition('/')[::2]
        if not prefix_text.isdigit():
            return None, None
        prefix = int(prefix_text)
    try:
        ip = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None, None
    if prefix is not None and prefix > (32 if ip.version == 4 else 128):
        return None, None
    return ip, prefix


def _parse_management(value):
    """The management address as an IPAddress, or None when it is a DNS name (then it can't be compared)."""
    return _parse_ip(value)[0] if isinstance(value, str) else None


def _check_interfaces(interfaces, all_hosts):
    problems = []
    where = 'group vars of ' + _hosts_text(all_hosts)
    if not isinstance(interfaces, (list, tuple)) or not interfaces:
        problems.append(problem(
            VAR_INTERFACES, where, 'must be a non-empty list of interface names, got %r' % (interfaces,),
            'write spark_cx7_interfaces: [enp1s0f1np1, enP2p1s0f1np1] (the twins of the cabled CX7 port)'))
        return problems, []
    seen = set()
    for name in interfaces:
        if not isinstance(name, str) or not name:
            problems.append(problem(
                VAR_INTERFACES, where, 'entry %r is not an interface name' % (name,),
                'list interface names as strings, e.g. [enp1s0f1np1, enP2p1s0f1np1]'))
            continue
        if name in seen:
            problems.append(problem(
                VAR_INTERFACES, where, '%s is listed twice' % name,
                'list each twin once; the twin of %s is %s' % (name, cx7_twin(name) or 'its enP2p... half')))
            continue
        seen.add(name)
        if not is_cx7_interface_name(name):
            why = _KNOWN_NOT_CX7.get(name, '%s is not a ConnectX-7 interface name (expected en[P<n>]p<bus>s<slot>f<fn>np<port>)' % name)
            problems.append(problem(
                VAR_INTERFACES, where, why,
                'use the CX7 twins of the cabled port, e.g. [enp1s0f1np1, enP2p1s0f1np1] (see ibdev2netdev on a host)'))
    return problems, [n for n in interfaces if isinstance(n, str)]


def _check_subnets(subnets, interfaces, all_hosts):
    """Returns (problems, [IPNetwork or None per twin])."""
    problems = []
    where = 'group vars of ' + _hosts_text(all_hosts)
    if not isinstance(subnets, (list, tuple)) or not subnets:
        problems.append(problem(
            VAR_SUBNETS, where, 'must be a non-empty list of subnets, one per twin, got %r' % (subnets,),
            'write spark_cx7_subnets: [192.168.100.0/24, 192.168.101.0/24] (one per entry of spark_cx7_interfaces)'))
        return problems, [None] * len(interfaces)
    if len(subnets) != len(interfaces):
        problems.append(problem(
            VAR_SUBNETS, where,
            '%d subnet(s) for %d interface(s) in spark_cx7_interfaces %s' % (len(subnets), len(interfaces), list(interfaces)),
            'give exactly one subnet per twin, in the same order as spark_cx7_interfaces'))
    nets = []
    for index, text in enumerate(subnets):
        net = None
        if not isinstance(text, str) or '/' not in text:
            problems.append(problem(
                VAR_SUBNETS, where, 'entry %r is not a subnet in CIDR notation' % (text,),
                'write it as network/prefix, e.g. 192.168.%d.0/24' % (100 + index)))
        else:
            try:
                addr_text, prefix_text = text.strip().partition('/')[::2]
                netaddr.IPAddress(addr_text, flags=netaddr.INET_PTON)
                if not prefix_text.isdigit():
                    raise ValueError(prefix_text)
                net = netaddr.IPNetwork(text.strip())
            except (netaddr.AddrFormatError, ValueError, TypeError):
                problems.append(problem(
                    VAR_SUBNETS, where, '%r is not a valid subnet' % (text,),
                    'write it as network/prefix, e.g. 192.168.%d.0/24' % (100 + index)))
            else:
                if net.ip != net.network:
                    problems.append(problem(
                        VAR_SUBNETS, where, '%s has host bits set' % text,
                        'write %s' % net.cidr))
                    net = net.cidr
        nets.append(net)
    for i, a in enumerate(nets):
        for j in range(i + 1, len(nets)):
            b = nets[j]
            if a is None or b is None or a.version != b.version:
                continue
            twin_a = interfaces[i] if i < len(interfaces) else 'entry %d' % i
            twin_b = interfaces[j] if j < len(interfaces) else 'entry %d' % j
            if a == b:
                problems.append(problem(
                    VAR_SUBNETS, where, 'the same subnet %s on both twins (%s and %s)' % (a, twin_a, twin_b),
                    'never use one subnet on both twins: give each its own, e.g. 192.168.100.0/24 and 192.168.101.0/24'))
            elif a in b or b in a:
                problems.append(problem(
                    VAR_SUBNETS, where, 'subnets %s (%s) and %s (%s) overlap' % (a, twin_a, b, twin_b),
                    'give each twin a separate, non-overlapping subnet, e.g. 192.168.100.0/24 and 192.168.101.0/24'))
    # Leave out of the address plan the later twin of a clashing pair: it was reported above.
    for i, a in enumerate(nets):
        for j in range(i + 1, len(nets)):
            b = nets[j]
            if a is not None and b is not None and a.version == b.version and (a in b or b in a):
                nets[j] = None
    return problems, nets


def _check_ranks(hosts):
    """Returns (problems, [names in rank order] or None when ranks can't be decided)."""
    problems = []
    names = [h['name'] for h in hosts]
    given = [h for h in hosts if h.get('node_rank') is not None]
    if not given:
        return problems, names
    missing = [h['name'] for h in hosts if h.get('node_rank') is None]
    if missing:
        problems.append(problem(
            VAR_RANK, _hosts_text(missing),
            'set on %s but not on %s' % (_hosts_text([h['name'] for h in given]), ', '.join(missing)),
            'set spark_node_rank on every host of the group (0 .. %d) or on none (then the inventory order is the rank)'
            % (len(hosts) - 1)))
    ranks = {}
    for h in given:
        rank = h['node_rank']
        if isinstance(rank, str):
            hint = 'write spark_node_rank: %s without quotes (an integer)' % rank.strip() if rank.strip().isdigit() \
                else 'write an integer from 0 to %d' % (len(hosts) - 1)
            problems.append(problem(VAR_RANK, 'host ' + h['name'], 'is the string %r, not an integer' % rank, hint))
            continue
        if not _is_int(rank):
            problems.append(problem(
                VAR_RANK, 'host ' + h['name'], 'is %r, not an integer' % (rank,),
                'write an integer from 0 to %d' % (len(hosts) - 1)))
            continue
        if rank < 0:
            problems.append(problem(
                VAR_RANK, 'host ' + h['name'], 'is negative (%d)' % rank,
                'ranks run from 0 (the head) to %d' % (len(hosts) - 1)))
            continue
        ranks.setdefault(rank, []).append(h['name'])
    for rank, owners in sorted(ranks.items()):
        if len(owners) > 1:
            problems.append(problem(
                VAR_RANK, _hosts_text(owners), 'rank %d is given to %d hosts' % (rank, len(owners)),
                'give each host its own rank from 0 to %d' % (len(hosts) - 1)))
    if not problems:
        expected = set(range(len(hosts)))
        if set(ranks) != expected:
            gaps = sorted(expected - set(ranks))
            extra = sorted(set(ranks) - expected)
            problems.append(problem(
                VAR_RANK, _hosts_text([ranks[r][0] for r in extra] or names),
                'ranks %s leave a gap (missing %s) for %d hosts' % (
                    sorted(ranks), ', '.join(str(g) for g in gaps), len(hosts)),
                'number the hosts 0 .. %d without gaps; rank 0 is the head' % (len(hosts) - 1)))
    if problems:
        return problems, None
    return problems, [ranks[r][0] for r in sorted(ranks)]


TP_KEYS = ('tp-size', 'tp', 'tensor-parallel-size')
PP_KEYS = ('pp-size', 'pp', 'pipeline-parallel-size')


def _from_server_args(description, key, flag_keys):
    """(value, variable name for messages): the explicit key first, else the first flag found in server_args."""
    if description.get(key) is not None:
        return description[key], VAR_TP if key == 'tp_size' else VAR_PP
    args = description.get('server_args') or {}
    if isinstance(args, dict):
        for flag in flag_keys:
            for spelled in (flag, flag.replace('-', '_'), '--' + flag):
                if spelled in args and args[spelled] is not None:
                    return args[spelled], "sglang_server_args['%s']" % spelled
    return None, VAR_TP if key == 'tp_size' else VAR_PP


def _without_tp(args):
    """The launch_server flags less the tp size, which the plan owns."""
    return {k: v for k, v in args.items() if k not in TP_KEYS} if isinstance(args, dict) else args


def _check_parallel(description, nnodes, all_hosts):
    problems = []
    where = 'group vars of ' + _hosts_text(all_hosts)
    tp, var_tp = _from_server_args(description, 'tp_size', TP_KEYS)
    pp, var_pp = _from_server_args(description, 'pp_size', PP_KEYS)
    args = description.get('server_args') or {}
    both = [k for k in args if k in TP_KEYS] if isinstance(args, dict) and description.get('tp_size') is not None else []
    if both:
        problems.append(problem(
            VAR_TP_SIZE, where, "sglang_server_tp_size and sglang_server_args['%s'] both set --tp-size" % both[0],
            'keep sglang_server_tp_size and remove it from sglang_server_args'))
    gpus = description.get('gpus_per_node', 1)
    if gpus is None:
        gpus = 1
    if not _is_int(gpus) or gpus < 1:
        problems.append(problem(
            VAR_GPUS, where, 'is %r, not a positive integer' % (gpus,), 'write the number of GPUs per node, e.g. 1 on a DGX Spark'))
        gpus = None
    if pp is None:
        pp = 1
    if not _is_int(pp) or pp < 1:
        hint = 'write %s without quotes' % pp if isinstance(pp, str) and pp.strip().isdigit() else 'write a positive integer'
        problems.append(problem(var_pp, where, 'is %r, not a positive integer' % (pp,), hint))
        pp = None
    total = nnodes * gpus if gpus else None
    if tp is None:
        if total and pp:
            tp = max(total // pp, 1)
    elif not _is_int(tp) or tp < 1:
        hint = 'write %s without quotes' % tp if isinstance(tp, str) and tp.strip().isdigit() else \
            'write a positive integer or leave it out (it defaults to the total GPU count)'
        problems.append(problem(var_tp, where, 'is %r, not a positive integer' % (tp,), hint))
        tp = None
    if tp and pp and nnodes:
        if (tp * pp) % nnodes:
            choices = sorted({k * nnodes for k in range(1, 5)})
            problems.append(problem(
                var_tp, where,
                'tp x pp = %d x %d = %d is not divisible by the node count %d (%s)' % (tp, pp, tp * pp, nnodes, ', '.join(all_hosts)),
                'use a tp-size whose product with pp-size is a multiple of %d, e.g. %s, or leave tp-size out'
                % (nnodes, ' or '.join(str(c) for c in choices[:2]))))
        if total and tp * pp > total:
            problems.append(problem(
                var_tp, where,
                'tp x pp = %d needs more GPUs than the cluster has (%d nodes x %d GPU(s) = %d)' % (tp * pp, nnodes, gpus, total),
                'lower tp-size to at most %d, or add nodes to the group' % (total // pp if pp else total)))
    return problems, tp, pp, gpus


def _check_port(port, all_hosts):
    where = 'group vars of ' + _hosts_text(all_hosts)
    if port is None:
        return [], DEFAULT_DIST_INIT_PORT
    if not _is_int(port) or not 1024 <= port <= 65535:
        hint = 'write %s without quotes' % port if isinstance(port, str) and port.strip().isdigit() else \
            'use an unprivileged TCP port from 1024 to 65535 that is free on the head, e.g. 20000'
        if isinstance(port, str) and port.strip().isdigit() and 1024 <= int(port) <= 65535:
            what = 'is the string %r, not an integer' % port
        else:
            what = 'is %r, not a port from 1024 to 65535' % (port,)
        return [problem(VAR_PORT, where, what, hint)], None
    return [], port


def _format_host(ip):
    return '[%s]' % ip if ip.version == 6 else str(ip)


def plan_cluster(description):
    """Validate a cluster description and compute the plan; raise ClusterPlanError listing every problem.

    See ``cluster_plan.yml`` beside this file for the input and output shapes.
    """
    if netaddr is None:  # pragma: no cover
        raise ClusterPlanError([problem('netaddr', 'the controller', 'the Python library netaddr is missing',
                                        'pip install netaddr on the controller (it is in requirements.txt)')])
    if not isinstance(description, dict):
        raise ClusterPlanError([problem('cluster_plan input', 'the controller', 'expected a dict, got %r' % type(description).__name__,
                                        'pass the description built by the preflight role')])
    group = description.get('group') or 'spark'
    hosts = description.get('hosts') or []
    if not isinstance(hosts, list) or not hosts:
        raise ClusterPlanError([problem(
            '%s (inventory group)' % group, 'no hosts', 'the group %r has no hosts' % group,
            'add the Sparks under all.children.%s.hosts in the inventory, or set spark_group to the group that holds them' % group)])
    hosts = [dict(h) for h in hosts]
    for index, h in enumerate(hosts):
        if not h.get('name'):
            h['name'] = 'host #%d' % index
    all_hosts = [h['name'] for h in hosts]
    problems = []

    # Per-host copies of group-wide variables must agree (a host_vars override is a classic slip).
    interfaces = description.get('interfaces')
    if interfaces is None:
        interfaces = list(DEFAULT_INTERFACES)
    subnets = description.get('subnets')
    for key, var, default in (('interfaces', VAR_INTERFACES, DEFAULT_INTERFACES), ('subnets', VAR_SUBNETS, None)):
        reference = _effective(description.get(key), default)
        seen = [(h['name'], _effective(h[key], default) if key in h else reference) for h in hosts]
        if any(value != reference for _name, value in seen):
            groups_of = []   # [(value, [names])] in first-seen order
            for name, value in seen:
                for known, names in groups_of:
                    if known == value:
                        names.append(name)
                        break
                else:
                    groups_of.append((value, [name]))
            problems.append(problem(
                var, _hosts_text([name for name, value in seen if value != reference] + [n for n, v in seen if v == reference][:1]),
                'hosts disagree (a host_vars override?): %s' % '; '.join('%s: %r' % (', '.join(names), value) for value, names in groups_of),
                'set %s once in the group vars of %s, not per host' % (var, group)))

    iface_problems, interfaces = _check_interfaces(interfaces, all_hosts)
    problems.extend(iface_problems)
    subnet_problems, nets = _check_subnets(subnets, interfaces, all_hosts)
    problems.extend(subnet_problems)
    nets = (list(nets) + [None] * len(interfaces))[:len(interfaces)]

    port_problems, port = _check_port(description.get('dist_init_port'), all_hosts)
    problems.extend(port_problems)

    rank_problems, order = _check_ranks(hosts)
    problems.extend(rank_problems)
    rank_of = {name: r for r, name in enumerate(order)} if order else {h['name']: i for i, h in enumerate(hosts)}

    nnodes = len(hosts)
    par_problems, tp, pp, gpus = _check_parallel(description, nnodes, all_hosts)
    problems.extend(par_problems)

    # Management addresses: parse those that are IPs (ansible_host may be a DNS name).
    mgmt = {h['name']: _parse_management(h.get('management_address')) for h in hosts}

    # CX7 addresses: explicit ones first, then computed ones.
    addresses = {}   # name -> [IPAddress or None per twin]
    explicit = {}    # name -> bool
    for h in hosts:
        name = h['name']
        given = h.get('cx7_addresses')
        if given is None or given == []:
            explicit[name] = False
            continue
        explicit[name] = True
        if not isinstance(given, (list, tuple)):
            problems.append(problem(
                VAR_ADDRESSES, 'host ' + name, 'must be a list (one address per twin), got %r' % (given,),
                'write spark_cx7_addresses: [192.168.100.%d, 192.168.101.%d] or leave it out to compute them'
                % (HOST_PART_BASE + rank_of[name], HOST_PART_BASE + rank_of[name])))
            addresses[name] = [None] * len(interfaces)
            continue
        if len(given) != len(interfaces):
            problems.append(problem(
                VAR_ADDRESSES, 'host ' + name,
                '%d address(es) for %d interface(s) in spark_cx7_interfaces %s' % (len(given), len(interfaces), list(interfaces)),
                'give exactly one address per twin, in the order of spark_cx7_interfaces, or leave it out to compute them'))
        ips = []
        parsed = [_parse_ip(text) for text in given[:len(interfaces)]]
        ok_parsed = [item[0] for item in parsed if item[0] is not None]
        swapped = (len(ok_parsed) == len(interfaces) > 1 and None not in nets
                   and any(ip not in net for ip, net in zip(ok_parsed, nets))
                   and all(any(ip in net for ip in ok_parsed) for net in nets)
                   and all(sum(ip in net for net in nets) == 1 for ip in ok_parsed))
        if swapped:
            fixed = [next(str(ip) for ip in ok_parsed if ip in net) for net in nets]
            problems.append(problem(
                VAR_ADDRESSES, 'host ' + name,
                '%s are in the wrong order for spark_cx7_interfaces %s (subnets %s)' % (
                    [str(ip) for ip in ok_parsed], list(interfaces), [str(n) for n in nets]),
                'write spark_cx7_addresses: [%s] (one per twin, in the order of spark_cx7_interfaces)' % ', '.join(fixed)))
        for index, (ip, prefix) in enumerate(parsed):
            text = given[index]
            net = nets[index]
            twin = interfaces[index]
            if ip is None:
                if net is None:
                    example = '192.168.%d.%d' % (100 + index, HOST_PART_BASE + rank_of[name])
                elif net.size - 2 > HOST_PART_BASE + rank_of[name]:
                    example = net[HOST_PART_BASE + rank_of[name]]
                else:
                    example = net[1]
                problems.append(problem(
                    VAR_ADDRESSES, 'host ' + name, 'entry %r (for %s) is not an IP address' % (text, twin),
                    'write a plain address inside %s, e.g. %s' % (net or 'the twin\'s subnet', example)))
                ips.append(None)
                continue
            if net is not None:
                if ip not in net:
                    if not swapped:
                        problems.append(problem(
                            VAR_ADDRESSES, 'host ' + name, '%s (for %s) is outside that twin\'s subnet %s' % (ip, twin, net),
                            'use an address inside %s for %s (addresses follow the order of spark_cx7_interfaces)' % (net, twin)))
                elif net.size > 2 and ip in (net.network, net.broadcast) and net.version == 4:
                    problems.append(problem(
                        VAR_ADDRESSES, 'host ' + name,
                        '%s (for %s) is the %s address of %s' % (ip, twin, 'network' if ip == net.network else 'broadcast', net),
                        'use a host address between %s and %s' % (net[1], net[-2])))
                if prefix is not None and prefix != net.prefixlen:
                    problems.append(problem(
                        VAR_ADDRESSES, 'host ' + name, '%s/%d (for %s) has a prefix other than its subnet %s' % (ip, prefix, twin, net),
                        'write the plain address %s; the prefix comes from spark_cx7_subnets' % ip))
            ips.append(ip)
        addresses[name] = (ips + [None] * len(interfaces))[:len(interfaces)]

    taken = {}  # IPAddress -> host name (explicit addresses)
    for h in hosts:
        name = h['name']
        for ip in addresses.get(name, []):
            if ip is None:
                continue
            if ip in taken and taken[ip] != name:
                problems.append(problem(
                    VAR_ADDRESSES, _hosts_text([taken[ip], name]), '%s is given to both %s and %s' % (ip, taken[ip], name),
                    'give every host its own CX7 addresses (or leave spark_cx7_addresses out to compute them from the subnets)'))
            elif ip in taken:
                problems.append(problem(
                    VAR_ADDRESSES, 'host ' + name, '%s is listed twice' % ip,
                    'give each twin its own address, one in each subnet'))
            else:
                taken[ip] = name

    too_small = {}   # twin index -> [(name, rank)] whose computed host part does not fit
    collisions = {}  # (computed host, explicit owner) -> [(twin, ip)]
    for h in hosts:
        name = h['name']
        if explicit[name]:
            continue
        ips = []
        rank = rank_of[name]
        host_part = HOST_PART_BASE + rank
        for index, net in enumerate(nets):
            if net is None:
                ips.append(None)
                continue
            last = net.size - 2 if net.version == 4 else net.size - 1
            if host_part > last:
                too_small.setdefault(index, []).append((name, rank))
                ips.append(None)
                continue
            ip = net[host_part]
            if ip in taken and taken[ip] != name:
                collisions.setdefault((name, taken[ip]), []).append((interfaces[index], ip))
            else:
                taken[ip] = name
            ips.append(ip)
        addresses[name] = ips
    for index, misfits in sorted(too_small.items()):
        net = nets[index]
        last = net.size - 2 if net.version == 4 else net.size - 1
        problems.append(problem(
            VAR_SUBNETS, _hosts_text([misfit[0] for misfit in misfits]),
            '%s (%s) is too small for %d nodes: computed addresses use host parts %d .. %d, the subnet has 1 .. %d'
            % (net, interfaces[index], nnodes, HOST_PART_BASE, HOST_PART_BASE + nnodes - 1, max(last, 0)),
            'use a /24 per twin (e.g. 192.168.%d.0/24), or set spark_cx7_addresses on %s'
            % (100 + index, ', '.join(misfit[0] for misfit in misfits))))
    for (name, owner), clashes in collisions.items():
        problems.append(problem(
            VAR_ADDRESSES, _hosts_text([name, owner]),
            'the address(es) computed for %s (rank %d): %s are already set in spark_cx7_addresses of %s'
            % (name, rank_of[name], ', '.join('%s on %s' % (ip, twin) for twin, ip in clashes), owner),
            'set spark_cx7_addresses on %s too, or pick addresses for %s outside the computed .%d-.%d range'
            % (name, owner, HOST_PART_BASE, HOST_PART_BASE + nnodes - 1)))

    # Two hosts on one management address: a copy-paste slip that makes Ansible configure one box twice.
    by_mgmt = {}
    for h in hosts:
        address = h.get('management_address')
        if isinstance(address, str) and address:
            by_mgmt.setdefault(str(mgmt[h['name']] or address.lower()), []).append(h['name'])
    for address, owners in by_mgmt.items():
        if len(owners) > 1:
            problems.append(problem(
                VAR_MGMT, _hosts_text(owners), '%s is the management address of %s' % (address, ' and '.join(owners)),
                'give each host its own ansible_host (the address of its management port)'))

    # Management addresses must stay off the CX7 plan.
    for h in hosts:
        name = h['name']
        ip = mgmt[name]
        if ip is None:
            continue
        owner = taken.get(ip)
        if owner is not None:
            problems.append(problem(
                VAR_MGMT, _hosts_text([name] if owner == name else [name, owner]),
                'the management address %s of %s is also %s CX7 address' % (
                    ip, name, 'its own' if owner == name else '%s\'s' % owner),
                'keep ansible_host on the management port (enP7s7 or Wi-Fi) and give the CX7 twins addresses from spark_cx7_subnets'))
            continue
        for index, net in enumerate(nets):
            if net is not None and ip.version == net.version and ip in net:
                problems.append(problem(
                    VAR_MGMT, 'host ' + name,
                    'the management address %s lies inside the CX7 subnet %s of %s' % (ip, net, interfaces[index]),
                    'pick CX7 subnets apart from the management network (e.g. 192.168.100.0/24, 192.168.101.0/24), '
                    'or point ansible_host at the management port'))

    if problems:
        raise ClusterPlanError(problems)

    ordered = order or all_hosts
    head = ordered[0]
    nodes = {}
    for name in ordered:
        host = next(h for h in hosts if h['name'] == name)
        ips = addresses[name]
        nodes[name] = {
            'node_rank': rank_of[name],
            'management_address': host.get('management_address') or name,
            'cx7_addresses': [str(ip) for ip in ips],
            'cx7_interfaces': [
                {'name': iface, 'address': '%s/%d' % (ip, net.prefixlen), 'ip': str(ip), 'subnet': str(net)}
                for iface, ip, net in zip(interfaces, ips, nets)],
            'cx7_addresses_from': 'spark_cx7_addresses' if explicit[name] else 'spark_cx7_subnets',
            'next': ordered[(rank_of[name] + 1) % nnodes],
        }
    peers = {
        name: [{'name': other, 'node_rank': nodes[other]['node_rank'], 'cx7_addresses': nodes[other]['cx7_addresses']}
               for other in ordered if other != name]
        for name in ordered
    }
    head_ip = addresses[head][0]
    return {
        'group': group,
        'nnodes': nnodes,
        'head': head,
        'hosts': list(ordered),
        'dist_init_port': port,
        'dist_init_addr': '%s:%d' % (_format_host(head_ip), port),
        'tp_size': tp,
        'pp_size': pp,
        'gpus_per_node': gpus,
        'total_gpus': nnodes * gpus,
        'interfaces': list(interfaces),
        'subnets': [str(n) for n in nets],
        'nodes': nodes,
        'peers': peers,
        'server_args': _without_tp(description.get('server_args') or {}),
    }


def _version_key(version):
    return tuple(int(p) if p.isdigit() else p for p in re.split(r'[.-]', str(version)))


def consistency_problems(gpu_infos, expected_gpus_per_node=None):
    """Problems across the hosts' gpu_info results: driver versions that differ, GPU counts or models off.

    ``gpu_infos`` maps host name -> the registered gpu_info result (``driver_version``, ``gpu_count``,
    ``gpus`` with ``name`` per GPU). Returns a list of problem strings (empty when all agree).
    """
    problems = []
    if not isinstance(gpu_infos, dict) or not gpu_infos:
        return [problem('gpu_info results', 'no hosts', 'nothing to compare', 'run dgxspark.sglang.gpu_info on every host first')]
    drivers = {}
    models = {}
    for host in sorted(gpu_infos):
        info = gpu_infos[host] or {}
        gpus = info.get('gpus') or []
        driver = info.get('driver_version')
        if driver is None and gpus and isinstance(gpus[0], dict):
            driver = gpus[0].get('driver_version')
        if driver is not None:
            drivers.setdefault(str(driver), []).append(host)
        count = info.get('gpu_count', len(gpus) if isinstance(gpus, list) else None)
        if expected_gpus_per_node is not None and count is not None and count != expected_gpus_per_node:
            problems.append(problem(
                VAR_GPUS, 'host ' + host, '%s GPU(s) found, %d expected' % (count, expected_gpus_per_node),
                'check nvidia-smi -L on %s, or set preflight_expected_gpus_per_node to the real count' % host))
        names = sorted({g.get('name') for g in gpus if isinstance(g, dict) and g.get('name')})
        if names:
            models.setdefault(', '.join(names), []).append(host)
    if len(drivers) > 1:
        newest = sorted(drivers, key=_version_key)[-1]
        problems.append(problem(
            'NVIDIA driver version', _hosts_text(sorted(h for hs in drivers.values() for h in hs)),
            'hosts disagree on the driver version: %s' % '; '.join(
                '%s on %s' % (v, ', '.join(hs)) for v, hs in sorted(drivers.items(), key=lambda kv: _version_key(kv[0]))),
            'install the same driver on all nodes (e.g. %s) and reboot them' % newest))
    if len(models) > 1:
        problems.append(problem(
            'GPU model', _hosts_text(sorted(h for hs in models.values() for h in hs)),
            'hosts have different GPUs: %s' % '; '.join('%s on %s' % (m, ', '.join(hs)) for m, hs in sorted(models.items())),
            'put one model on one kind of GPU: split the hosts into separate groups'))
    return problems


GB = 1000 ** 3
MIB = 1024 ** 2


def plan_memory_fit(weights_bytes, gpu_infos, fraction):
    """Whether a model's weights fit in the nodes' memory at SGLang's ``--mem-fraction-static``.

    ``weights_bytes``: the size of the weights (bytes). ``gpu_infos``: host name -> that host's ``gpu_info``
    result (``gpus`` with ``memory_total_mib`` each). ``fraction``: the share of each GPU's memory SGLang takes
    for weights and KV cache. A node's memory is the sum of its GPUs' ``memory_total_mib`` (on a GB10 with
    unified memory that is MemTotal, as gpu_info reports it: a figure that does not shrink while SGLang
    itself runs, unlike MemAvailable). Tensor parallelism splits the weights evenly, so the smallest node
    bounds every rank: capacity = nodes x smallest node x fraction. Returns a dict (sizes in GB = 10^9 bytes):
    fits, weights_gb, node_gb, per_node_gb, capacity_gb, nnodes, nodes_needed, fraction, smallest_node,
    message. Raises ValueError for input it cannot use.
    """
    if isinstance(weights_bytes, bool) or not isinstance(weights_bytes, (int, float)) or weights_bytes < 0:
        raise ValueError('memory_fit: the weights\' size must be a number of bytes >= 0, got %r' % (weights_bytes,))
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError("memory_fit: mem-fraction-static must be a number in (0, 1], got %r. Fix: set "
                         "sglang_server_args['mem-fraction-static'] to e.g. 0.75" % (fraction,))
    if not isinstance(gpu_infos, dict) or not gpu_infos:
        raise ValueError('memory_fit: no gpu_info results to compare with (run dgxspark.sglang.gpu_info on every node)')
    node_mib = {}
    for host in sorted(gpu_infos):
        gpus = (gpu_infos[host] or {}).get('gpus') or []
        sizes = [g.get('memory_total_mib') for g in gpus if isinstance(g, dict)]
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in sizes):
            raise ValueError('memory_fit: host %s reports no usable GPU memory figure (%r); check nvidia-smi and '
                             '/proc/meminfo there' % (host, sizes))
        node_mib[host] = sum(sizes)
    smallest = min(node_mib, key=lambda h: (node_mib[h], h))
    node_bytes = node_mib[smallest] * MIB
    per_node = node_bytes * fraction
    nnodes = len(node_mib)
    capacity = per_node * nnodes
    needed = max(1, int(math.ceil(weights_bytes / per_node))) if weights_bytes else 1
    fits = weights_bytes <= capacity
    result = {
        'fits': fits,
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
    if fits:
        result['message'] = 'The weights (%.1f GB) fit: %s.' % (result['weights_gb'], sums)
    else:
        result['message'] = (
            'The weights (%.1f GB) do not fit: %s. SGLang would run out of memory while loading. Fix: run it on '
            '%d nodes like these (tensor parallel over %d), or pick a smaller or quantized model, or raise '
            "sglang_server_args['mem-fraction-static'] if the KV cache can make do with less"
            % (result['weights_gb'], sums, needed, needed))
    return result


# ---- thin Ansible wrappers -------------------------------------------------------------------------

def cluster_plan(description):
    """Filter: the cluster plan, or AnsibleFilterError listing every problem."""
    try:
        return plan_cluster(description)
    except ClusterPlanError as exc:
        raise AnsibleFilterError(str(exc))


def cluster_problems(description):
    """Filter: the problems cluster_plan would raise, as a list of strings (empty when the description is good)."""
    try:
        plan_cluster(description)
    except ClusterPlanError as exc:
        return exc.problems
    return []


def cluster_consistency(gpu_infos, expected_gpus_per_node=None):
    """Filter: list of problems across hosts' gpu_info results (empty when consistent)."""
    if expected_gpus_per_node is not None and not _is_int(expected_gpus_per_node):
        raise AnsibleFilterError('cluster_consistency: expected_gpus_per_node must be an integer, got %r' % (expected_gpus_per_node,))
    return consistency_problems(gpu_infos, expected_gpus_per_node)


def cx7_twin_filter(interface):
    """Filter: the other twin's name (enp1s0f1np1 <-> enP2p1s0f1np1)."""
    twin = cx7_twin(interface)
    if twin is None:
        raise AnsibleFilterError(
            'cx7_twin: %r is not a CX7 twin name (expected enp<bus>s<slot>f<fn>np<port> or enP2p<bus>s<slot>f<fn>np<port>)' % (interface,))
    return twin


def memory_fit(weights_bytes, gpu_infos, fraction=0.75):
    """Filter: whether the weights fit in the nodes' memory at mem-fraction-static (see plan_memory_fit)."""
    try:
        return plan_memory_fit(weights_bytes, gpu_infos, fraction)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule:
    """dgxspark.sglang cluster math."""

    def filters(self):
        return {
            'cluster_plan': cluster_plan,
            'cluster_consistency': cluster_consistency,
            'cluster_problems': cluster_problems,
            'cx7_twin': cx7_twin_filter,
            'memory_fit': memory_fit,
        }
