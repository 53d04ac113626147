# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""RDMA access of a container, decided from the cluster plan: the one home of the ``docker run`` flags that let
NCCL inside a container use the CX7's RDMA devices.

NVIDIA's multi-node container guides (FACTS.md, "NCCL") run with ``--ulimit memlock=-1`` and
``--device /dev/infiniband``. Without the device nodes rdma-core drops every device whose uverbs node is missing,
NCCL finds none and falls back to sockets (about 3 GB/s against 22-24). Both containers that run NCCL across the
nodes take their flags from here: the SGLang unit (through the filter ``container_rdma_args``) and the all-reduce
of the verify role (the module ``nccl_allreduce`` imports ``container_rdma_args``).

Whether a node has RDMA devices comes from the plan (``spark_cluster_plan.nodes[host].probe.rdma_devices``, what
preflight's probe found behind the twins), never from a default: a plan without the node's probe is an error here,
so that no tag or switch renders a container from missing facts. Standard library only (modules import this).
"""

from __future__ import annotations

# The device nodes of rdma-core (uverbs, rdma_cm); docker passes the whole folder.
INFINIBAND_DEVICE_DIR = '/dev/infiniband'

# RDMA registers (pins) the memory it sends from; NCCL's host buffers are pinned too. Harmless without RDMA.
# The default of sglang_server_container_ulimits (plugins/module_utils/_cluster.py DEFAULTS names the same).
DEFAULT_ULIMITS = {'memlock': -1}


class RdmaPlanError(ValueError):
    """The plan cannot say whether a node has RDMA devices; the message says what to do."""


def node_rdma_devices(plan, host):
    """The RDMA devices that the plan's probe found on ``host`` (a list, maybe empty).

    Raises RdmaPlanError when the plan is not at stage ``probed``, has no such node, or did not probe it (the host
    was not in the run): the answer would be a guess.
    """
    if not isinstance(plan, dict) or not isinstance(plan.get('nodes'), dict):
        raise RdmaPlanError('expected spark_cluster_plan (the preflight role publishes it), got %s'
                            % type(plan).__name__)
    node = plan['nodes'].get(host)
    if node is None:
        raise RdmaPlanError('%s is not a node of spark_cluster_plan (nodes: %s)'
                            % (host, ', '.join(sorted(plan['nodes'])) or 'none'))
    probe = node.get('probe')
    state = ((probe or {}).get('driver') or {}).get('state')
    if plan.get('stage') != 'probed' or not probe or state == 'not-probed' or probe.get('rdma_devices') is None:
        raise RdmaPlanError(
            'spark_cluster_plan (stage %s) holds no probe of %s, so whether its container gets the RDMA devices is '
            'unknown. Fix: run the dgxspark.sglang.preflight role first in the same play, with preflight_probe: true, '
            'on every node of the group' % (plan.get('stage'), host))
    return [str(device) for device in probe['rdma_devices']]


def container_rdma_args(rdma_devices, ulimits=None):
    """The ``docker run`` flags of a container that runs NCCL across nodes, from a node's RDMA devices.

    ``--ulimit NAME=VALUE`` for each of ``ulimits`` (the group's ``container_ulimits`` in the plan,
    ``sglang_server_container_ulimits``; default ``memlock=-1``), sorted; then ``--device /dev/infiniband`` when
    ``rdma_devices`` is not empty. ``None`` devices (not known) raise RdmaPlanError: pass the plan's list, ``[]`` for
    a node without RDMA (the lab's veths).
    """
    if rdma_devices is None:
        raise RdmaPlanError('the RDMA devices of the node are not given: pass spark_cluster_plan.nodes[host]'
                            '.probe.rdma_devices ([] for none)')
    if isinstance(rdma_devices, str) or not isinstance(rdma_devices, (list, tuple)):
        raise RdmaPlanError('the RDMA devices must be a list of names, got %r' % (rdma_devices,))
    if ulimits is None:
        ulimits = dict(DEFAULT_ULIMITS)
    args = []
    for name in sorted(ulimits):
        args += ['--ulimit', '%s=%s' % (name, ulimits[name])]
    if rdma_devices:
        args += ['--device', INFINIBAND_DEVICE_DIR]
    return args
