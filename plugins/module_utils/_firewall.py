# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The nftables table of the firewall role, rendered from the cluster plan: one table, never the whole ruleset.

What it does to traffic that reaches a node (the ``input`` hook; Docker's forwarded traffic is left to Docker):

- loopback and replies to connections the node opened: accepted;
- everything from the cluster's CX7 subnets on the twins: accepted (NCCL and SGLang open dynamic ports there, and
  RoCE traffic never passes netfilter anyway);
- SSH (its ports) and ICMP: accepted, from anywhere;
- each exposed port of the plan (``exposed_ports``: the SGLang API to ``spark_allowed_cidrs``, and whatever another
  role adds there with one entry): accepted from its sources only, dropped from every other source, on any interface;
- traffic on a trusted interface (``docker0``): accepted; everything else: dropped and counted.

The text loads atomically (``add table`` then ``delete table`` then the table, in one ``nft -f`` transaction) and
touches no other table: Debian's and Ubuntu's ``/etc/nftables.conf`` starts with ``flush ruleset``, which would
delete Docker's tables too, so it is never used.

Pure Python (stdlib and netaddr); the filter ``dgxspark.sglang.firewall_ruleset`` wraps ``render_ruleset``.
"""

from __future__ import annotations

import re

try:
    import netaddr
except ImportError:  # pragma: no cover - the controller's requirements pin it
    netaddr = None

from ansible_collections.dgxspark.sglang.plugins.module_utils._cx7 import is_ifname

FAMILY = 'inet'
DEFAULT_TABLE = 'dgxspark'
PROTOCOLS = ('tcp', 'udp')
# An nft identifier (table name) and an entry's name (used in comments): plain, no quoting needed.
_TABLE = re.compile(r'^[A-Za-z][A-Za-z0-9_]{0,31}$')
_NAME = re.compile(r'^[a-z0-9][a-z0-9-]{0,31}$')


class FirewallError(ValueError):
    """A value the table cannot be rendered from; the message names the value and the fix."""


def _networks(sources, where):
    """(ipv4 networks, ipv6 networks) as normalised strings, for one entry's sources."""
    v4, v6 = [], []
    for text in sources:
        try:
            net = netaddr.IPNetwork(str(text)).cidr
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise FirewallError('%s: source %r is not a network. Fix: write it as network/prefix, e.g. 10.0.0.0/24'
                                % (where, text))
        (v4 if net.version == 4 else v6).append(net)
    # Merged (no network inside another): nft refuses overlapping intervals in some versions and merges them in others.
    return [str(n) for n in netaddr.cidr_merge(v4)], [str(n) for n in netaddr.cidr_merge(v6)]


def _port(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise FirewallError('%s: port %r is not a port number. Fix: write an integer from 1 to 65535' % (where, value))
    return value


def _set(items, quote=False):
    items = ['"%s"' % i for i in items] if quote else [str(i) for i in items]
    return items[0] if len(items) == 1 else '{ %s }' % ', '.join(items)


def exposed_rules(exposed):
    """The accept rules of the exposed ports, then the drop of those ports for every other source."""
    lines, closed = [], []
    for entry in exposed:
        name = entry.get('name', '')
        if not isinstance(name, str) or not _NAME.match(name):
            raise FirewallError('exposed port %r: its name must be lower-case letters, digits and dashes' % (name,))
        where = 'exposed port %s' % name
        port = _port(entry.get('port'), where)
        proto = entry.get('protocol', 'tcp')
        if proto not in PROTOCOLS:
            raise FirewallError('%s: protocol %r is not one of %s' % (where, proto, ', '.join(PROTOCOLS)))
        sources = entry.get('sources')
        if not isinstance(sources, (list, tuple)):
            raise FirewallError('%s: sources must be a list of networks (empty: nobody)' % where)
        v4, v6 = _networks(sources, where)
        match = '%s dport %d' % (proto, port)
        comment = 'comment "%s from its sources only"' % name
        if v4:
            lines.append('%s ip saddr %s accept %s' % (match, _set(v4), comment))
        if v6:
            lines.append('%s ip6 saddr %s accept %s' % (match, _set(v6), comment))
        closed.append((proto, port))
    for proto in PROTOCOLS:
        ports = sorted({port for p, port in closed if p == proto})
        if ports:
            lines.append('%s dport %s counter drop comment "exposed ports, any other source"' % (proto, _set(ports)))
    return lines


def render_ruleset(interfaces, subnets, exposed, ssh_ports=(22,), trusted_interfaces=(), table=DEFAULT_TABLE):
    """The text for ``nft -f``: replaces the table ``inet TABLE`` in one transaction and touches nothing else.

    ``interfaces``/``subnets``: the CX7 twins and their subnets (the plan's ``interfaces``, ``subnets``);
    ``exposed``: the plan's ``exposed_ports`` (``name``, ``port``, ``protocol``, ``sources``; no sources: closed);
    ``ssh_ports``: left open to everyone; ``trusted_interfaces``: names (or ``prefix*``) accepted whole.
    """
    if netaddr is None:  # pragma: no cover
        raise FirewallError('the Python library netaddr is missing on the controller. Fix: pip install -r requirements.txt')
    if not isinstance(table, str) or not _TABLE.match(table):
        raise FirewallError('firewall_table: %r is not an nftables table name. Fix: write letters, digits and _ '
                            '(at most 32), starting with a letter, e.g. %s' % (table, DEFAULT_TABLE))
    for name in list(interfaces) + list(trusted_interfaces):
        # A trailing * is nft's wildcard for a prefix of the name.
        if not is_ifname(name[:-1] if isinstance(name, str) and name.endswith('*') else name):
            raise FirewallError('interface %r is not an interface name. Fix: write a name of at most 15 letters, '
                                'digits and _.:- (a trailing * matches a prefix), e.g. docker0' % (name,))
    ssh = sorted({_port(p, 'firewall_ssh_ports') for p in ssh_ports})
    cx7_v4, cx7_v6 = _networks(subnets, 'the CX7 subnets')
    rules = ['iif "lo" accept comment "loopback"',
             'ct state established,related accept comment "replies to what this node opened"']
    twins = list(interfaces)
    if twins and cx7_v4:
        rules.append('iifname %s ip saddr %s accept comment "the cluster\'s CX7 subnets: NCCL and SGLang use dynamic '
                     'ports"' % (_set(twins, quote=True), _set(cx7_v4)))
    if twins and cx7_v6:
        rules.append('iifname %s ip6 saddr %s accept comment "the cluster\'s CX7 subnets"'
                     % (_set(twins, quote=True), _set(cx7_v6)))
    if ssh:
        rules.append('tcp dport %s accept comment "SSH, untouched"' % _set(ssh))
    rules += ['meta l4proto icmp accept comment "ping, unreachable, fragmentation needed"',
              'meta l4proto ipv6-icmp accept comment "IPv6 neighbour discovery, ping"',
              'ip6 saddr fe80::/10 udp dport 546 accept comment "DHCPv6 replies"']
    rules += exposed_rules(exposed)
    rules += ['iifname "%s" accept comment "trusted interface"' % name for name in trusted_interfaces]
    rules.append('counter drop comment "every other port: closed"')
    body = ''.join('    %s\n' % rule for rule in rules)
    return ('# Written by the dgxspark.sglang.firewall role: the table %(family)s %(table)s, nothing else. Loaded by\n'
            '# dgxspark-firewall.service at boot, never by nftables.service (its /etc/nftables.conf flushes the whole\n'
            '# ruleset, Docker\'s tables too). Add, delete, define: one transaction that replaces this table only.\n'
            'table %(family)s %(table)s\n'
            'delete table %(family)s %(table)s\n'
            'table %(family)s %(table)s {\n'
            '  chain input {\n'
            '    type filter hook input priority 0; policy accept;\n'
            '%(body)s'
            '  }\n'
            '}\n') % {'family': FAMILY, 'table': table, 'body': body}


def ruleset_from_plan(plan, ssh_ports=(22,), trusted_interfaces=(), table=DEFAULT_TABLE, open_ports=()):
    """``render_ruleset`` for the cluster plan (``spark_cluster_plan``): its twins, subnets and exposed ports, then
    ``open_ports`` (``firewall_open_ports``: more entries of the same shape, e.g. the router's ports)."""
    if not isinstance(plan, dict) or 'exposed_ports' not in plan:
        raise FirewallError('the cluster plan has no exposed_ports. Fix: run the dgxspark.sglang.preflight role first '
                            '(site.yml does), from this version of the collection')
    if not isinstance(open_ports, (list, tuple)) or not all(isinstance(e, dict) for e in open_ports):
        raise FirewallError('firewall_open_ports: %r is not a list of {name, port, protocol, sources}. Fix: write e.g. '
                            '[{name: router, port: 8000, sources: [10.0.0.0/24]}]' % (open_ports,))
    return render_ruleset(plan['interfaces'], plan['subnets'], list(plan['exposed_ports']) + list(open_ports),
                          ssh_ports=ssh_ports,
                          trusted_interfaces=trusted_interfaces, table=table)
