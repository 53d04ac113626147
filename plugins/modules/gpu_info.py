#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_info
short_description: Read the NVIDIA GPUs of a host with nvidia-smi
version_added: 0.1.0
description:
  - Runs C(nvidia-smi --query-gpu=... --format=csv,nounits) and plain C(nvidia-smi), and returns the GPU count,
    the driver and CUDA versions and one entry per GPU.
  - On a DGX Spark (NVIDIA GB10) the GPU has no memory of its own, so nvidia-smi prints C([N/A]) or
    C(Not Supported) for memory. Such a GPU is returned with RV(gpus[].unified_memory=true) and its memory
    figures come from O(meminfo_path) (the host's unified memory).
  - Fails, saying what to do, when nvidia-smi is missing, when the driver was upgraded without a reboot
    (NVML driver/library version mismatch), when the driver is not loaded, when no GPU is found, and when
    O(expected_count) or O(min_driver_version) is not met. It never reports zero GPUs as a success.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
  - dgxspark.sglang.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  nvidia_smi_path:
    description:
      - Path of the nvidia-smi binary.
      - When not set, C(nvidia-smi) is looked up on E(PATH) (and the usual sbin directories).
    type: path
    version_added: 0.1.0
  expected_count:
    description:
      - Fail unless exactly this many GPUs are found.
    type: int
    version_added: 0.1.0
  min_driver_version:
    description:
      - Fail when the driver version is lower than this, compared numerically part by part
        (V(580.95.05) is lower than V(580.126.09)).
    type: str
    version_added: 0.1.0
  meminfo_path:
    description:
      - File with the host's memory figures, read only for GPUs with unified memory (GB10).
    type: path
    default: /proc/meminfo
    version_added: 0.1.0
notes:
  - Both nvidia-smi calls run with C(LC_ALL=C).
"""

EXAMPLES = r"""
- name: Read the GPUs
  dgxspark.sglang.gpu_info:
  register: gpu

- name: Require one GPU and a recent driver (a DGX Spark)
  dgxspark.sglang.gpu_info:
    expected_count: 1
    min_driver_version: "580.95.05"

- name: Show how much memory the first GPU can use
  ansible.builtin.debug:
    msg: "{{ gpu.gpus[0].memory_available_mib }} MiB available on {{ gpu.gpus[0].name }}"
"""

RETURN = r"""
driver_state:
  description:
    - V(ready) when nvidia-smi answered; on failure V(absent) (no nvidia-smi), V(not-loaded) (no kernel module),
      V(mismatch) (NVML driver/library mismatch, reboot), V(no-gpu) or V(error).
  returned: always
  type: str
  sample: ready
dgx_os:
  description: Whether C(/etc/dgx-release) exists (DGX OS, whose driver is never reinstalled).
  returned: always
  type: bool
  sample: true
gpu_count:
  description: Number of GPUs nvidia-smi lists.
  returned: success
  type: int
  sample: 2
driver_version:
  description: NVIDIA driver version.
  returned: success
  type: str
  sample: "580.159.04"
cuda_version:
  description: Highest CUDA version the driver supports, from the nvidia-smi banner; null if not printed.
  returned: success
  type: str
  sample: "13.0"
gpus:
  description:
    - One entry per GPU, ordered by index. A figure nvidia-smi does not report (C([N/A])) is null.
  returned: success
  type: list
  elements: dict
  contains:
    index:
      description: GPU index as nvidia-smi numbers it.
      type: int
      sample: 0
    name:
      description: Product name.
      type: str
      sample: NVIDIA GB10
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-e4e580be-0d3f-e3b4-f9cf-e490971cd5d9
    pci_bus_id:
      description: PCI bus id (domain C(0000000F) on a GB10).
      type: str
      sample: "0000000F:01:00.0"
    compute_capability:
      description: CUDA compute capability.
      type: str
      sample: "12.1"
    memory_total_mib:
      description: Total memory in MiB; for unified memory, C(MemTotal) of O(meminfo_path).
      type: int
      sample: 124610
    memory_used_mib:
      description: Used memory in MiB; for unified memory, C(MemTotal - MemAvailable) of O(meminfo_path).
      type: int
      sample: 8823
    memory_available_mib:
      description:
        - Memory available for a new process in MiB. For unified memory C(MemAvailable) of O(meminfo_path)
          (memory shared with the CPU); otherwise RV(gpus[].memory_total_mib) minus RV(gpus[].memory_used_mib).
      type: int
      sample: 115787
    unified_memory:
      description: True when the GPU shares the host's memory (nvidia-smi reports no memory of its own, GB10).
      type: bool
      sample: true
    temperature_c:
      description: GPU temperature in degrees Celsius.
      type: int
      sample: 36
    power_draw_w:
      description: Power draw in watts.
      type: float
      sample: 11.17
    persistence_mode:
      description: Whether persistence mode is on.
      type: bool
      sample: true
    mig_mode:
      description: Current MIG mode (V(Enabled), V(Disabled)); null where the GPU has none.
      type: str
      sample: Disabled
"""

import os
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._nvidia_smi import (
    NvidiaSmiError,
    apply_meminfo,
    check_expectations,
    classify_failure,
    failure_state,
    merge,
    needs_meminfo,
    parse_meminfo,
    parse_query_csv,
    parse_table,
    query_argv,
    table_argv,
    version_tuple,
)

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}
# Present on DGX OS only, where the driver comes with the OS and is never reinstalled.
DGX_RELEASE = "/etc/dgx-release"


def find_nvidia_smi(module):
    path = module.params["nvidia_smi_path"]
    if path:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        where = "at nvidia_smi_path=%s" % path
    else:
        path = module.get_bin_path("nvidia-smi")
        if path:
            return path
        where = "on PATH"
    module.fail_json(
        driver_state="absent",
        dgx_os=os.path.exists(DGX_RELEASE),
        msg="nvidia-smi not found %s (driver not installed?): install the NVIDIA driver (on DGX OS it comes "
        "preinstalled), or set nvidia_smi_path to the nvidia-smi binary" % where
    )


def run_both(module, *argvs):
    """Run the nvidia-smi calls at the same time: each spends most of its time waiting on the
    driver, so together they take as long as the slower one (about 0.2 s on a 2-GPU host)."""
    with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
        futures = [pool.submit(module.run_command, argv, environ_update=C_LOCALE) for argv in argvs]
        results = [future.result() for future in futures]
    for argv, (rc, out, err) in zip(argvs, results):
        failure = classify_failure(rc, out, err)
        if failure:
            module.fail_json(msg=failure, driver_state=failure_state(rc, out, err), dgx_os=os.path.exists(DGX_RELEASE),
                             cmd=argv, rc=rc, stdout=out, stderr=err)
    return [(out, err) for rc, out, err in results]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="path"),
            expected_count=dict(type="int"),
            min_driver_version=dict(type="str"),
            meminfo_path=dict(type="path", default="/proc/meminfo"),
        ),
        supports_check_mode=True,
    )
    wanted_driver = module.params["min_driver_version"]
    if wanted_driver is not None:
        try:
            version_tuple(wanted_driver)
        except ValueError as exc:
            module.fail_json(msg="min_driver_version: %s; write it like 580.95.05" % exc)

    binary = find_nvidia_smi(module)
    argv = query_argv(binary)
    (query_out, query_err), (table_out, dummy) = run_both(module, argv, table_argv(binary))
    try:
        rows = parse_query_csv(query_out)
    except NvidiaSmiError as exc:
        module.fail_json(msg="cannot parse nvidia-smi output: %s" % exc, cmd=argv, rc=0, stdout=query_out, stderr=query_err)
    try:
        result = merge(rows, parse_table(table_out))
    except NvidiaSmiError as exc:
        module.fail_json(msg="cannot parse nvidia-smi output: %s" % exc, cmd=argv, rc=0, stdout=query_out, stderr=query_err)

    if needs_meminfo(result):
        path = module.params["meminfo_path"]
        try:
            with open(path) as handle:
                apply_meminfo(result, parse_meminfo(handle.read()))
        except (OSError, NvidiaSmiError) as exc:
            module.fail_json(
                msg="the GPU uses unified memory but %s cannot be read: %s; point meminfo_path at /proc/meminfo" % (path, exc),
                **result
            )

    problems = check_expectations(result, module.params["expected_count"], wanted_driver)
    if problems:
        module.fail_json(msg="; ".join(problems), cmd=argv, rc=0, stdout=query_out, stderr=query_err, **result)
    module.exit_json(changed=False, driver_state="ready", dgx_os=os.path.exists(DGX_RELEASE), **result)


if __name__ == "__main__":
    main()
