# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""RDMA access of a container: a thin wrapper around plugins/module_utils/_rdma.py.

The docs of the filter live beside this file in ``container_rdma_args.yml``
(``ansible-doc -t filter dgxspark.sglang.container_rdma_args``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._rdma import (
    RdmaPlanError,
    container_rdma_args as _container_rdma_args,
    node_rdma_devices,
)


def container_rdma_args(plan, host):
    """Filter: the ``docker run`` flags for RDMA of the host's container (devices, ulimits), from the probed plan."""
    try:
        devices = node_rdma_devices(plan, host)
        group = plan.get('groups', {}).get(plan['nodes'][host].get('group'), {})
        return _container_rdma_args(devices, group.get('container_ulimits'))
    except RdmaPlanError as exc:
        raise AnsibleFilterError('container_rdma_args: %s' % exc)


class FilterModule:
    """dgxspark.sglang RDMA."""

    def filters(self):
        return {'container_rdma_args': container_rdma_args}
