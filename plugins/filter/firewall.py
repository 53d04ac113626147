# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Firewall filter: a thin wrapper around plugins/module_utils/_firewall.py.

The docs of the filter live beside this file in ``firewall_ruleset.yml``
(``ansible-doc -t filter dgxspark.sglang.firewall_ruleset``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._firewall import (
    DEFAULT_TABLE,
    FirewallError,
    ruleset_from_plan,
)


def firewall_ruleset(plan, ssh_ports=(22,), trusted_interfaces=(), table=DEFAULT_TABLE, open_ports=()):
    """Filter: the nft text that replaces the firewall's own table, from the cluster plan."""
    try:
        return ruleset_from_plan(plan, ssh_ports=list(ssh_ports), trusted_interfaces=list(trusted_interfaces), table=table,
                                 open_ports=open_ports)
    except FirewallError as exc:
        raise AnsibleFilterError('dgxspark.sglang.firewall_ruleset: %s' % exc)


class FilterModule:
    """dgxspark.sglang firewall."""

    def filters(self):
        return {
            'firewall_ruleset': firewall_ruleset,
        }
