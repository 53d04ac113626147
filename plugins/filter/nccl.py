# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""NCCL environment filters: thin wrappers around plugins/module_utils/_nccl.py.

The docs of each filter live beside this file in ``<filter>.yml``
(``ansible-doc -t filter dgxspark.sglang.nccl_env``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.dgxspark.sglang.plugins.module_utils._nccl import (
    NcclEnvError,
    build_nccl_env,
    check_nccl_settings,
    rdma_device_names,
    render_env_file,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import warnings

display = Display()


def nccl_env(interfaces, rdma_devices=None, ib_disable=None, debug='WARN', extra=None, deliberate=None):
    """Filter: the validated NCCL environment of one node (an ordered dict of strings)."""
    deliberate = () if deliberate is None else deliberate
    try:
        env = build_nccl_env(interfaces, rdma_devices, ib_disable=ib_disable, debug=debug,
                             extra=extra, deliberate=deliberate)
    except NcclEnvError as exc:
        raise AnsibleFilterError(str(exc))
    # The settings passed every check above; what is left are the warnings (valid, but advised against).
    for item in warnings(check_nccl_settings(extra, deliberate, debug, ib_disable, interfaces,
                                             rdma_device_names(rdma_devices, interfaces))):
        display.warning('dgxspark.sglang.nccl_env [%s]: %s' % (item['code'], item['message']))
    return env


def nccl_env_file(mapping):
    """Filter: the text of the environment file (header comment, one NAME=value line per variable)."""
    if not isinstance(mapping, dict):
        raise AnsibleFilterError('nccl_env_file: expected the dict that dgxspark.sglang.nccl_env returns, got %s'
                                 % type(mapping).__name__)
    try:
        return render_env_file(mapping)
    except NcclEnvError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule:
    """dgxspark.sglang NCCL environment."""

    def filters(self):
        return {
            'nccl_env': nccl_env,
            'nccl_env_file': nccl_env_file,
        }
