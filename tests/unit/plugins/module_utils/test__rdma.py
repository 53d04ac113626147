# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RDMA access of a container from the cluster plan (plugins/module_utils/_rdma.py and its filter)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter.rdma import container_rdma_args as rdma_filter
from ansible_collections.dgxspark.sglang.plugins.module_utils._rdma import (
    RdmaPlanError,
    container_rdma_args,
    node_rdma_devices,
)


def plan(stage='probed', devices=('rocep1s0f1', 'roceP2p1s0f1'), state='ready'):
    probe = None if stage != 'probed' else {'driver': {'state': state}, 'rdma_devices': list(devices)}
    return {'stage': stage, 'nodes': {'spark-01': {'probe': probe}}}


def test_devices_in_the_plan_give_the_device_folder_and_memlock():
    assert rdma_filter(plan(), 'spark-01') == ['--ulimit', 'memlock=-1', '--device', '/dev/infiniband']


def test_no_devices_in_the_plan_give_memlock_only():
    # the lab's veths: docker refuses a --device that does not exist
    assert rdma_filter(plan(devices=()), 'spark-01') == ['--ulimit', 'memlock=-1']


@pytest.mark.parametrize('broken', [plan(stage='description'), plan(state='not-probed')])
def test_a_plan_without_the_node_s_probe_is_an_error_not_a_guess(broken):
    with pytest.raises(RdmaPlanError, match='holds no probe of spark-01.*preflight_probe: true'):
        node_rdma_devices(broken, 'spark-01')
    with pytest.raises(AnsibleFilterError, match='container_rdma_args: spark_cluster_plan .* holds no probe'):
        rdma_filter(broken, 'spark-01')


def test_a_host_outside_the_plan_and_a_missing_list_are_errors():
    with pytest.raises(RdmaPlanError, match='spark-09 is not a node of spark_cluster_plan'):
        node_rdma_devices(plan(), 'spark-09')
    with pytest.raises(RdmaPlanError, match=r'\[\] for none'):
        container_rdma_args(None)
    with pytest.raises(RdmaPlanError, match='must be a list'):
        container_rdma_args('rocep1s0f1')
