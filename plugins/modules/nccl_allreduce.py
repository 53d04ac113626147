#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nccl_allreduce
short_description: Measure all-reduce bus bandwidth across the cluster and check the sums
version_added: 0.1.0
description:
  - Runs one C(torch.distributed) all-reduce job across all nodes. Run the task on every node at
    once; each node starts its local ranks (one per GPU, so one on a DGX Spark; one for C(gloo)) and
    joins the rendezvous at O(master_addr):O(master_port), the head's CX7 address.
  - For every message size from O(min_bytes) to O(max_bytes) (multiplied by O(step_factor)), it
    all-reduces once and checks the sum, runs O(warmup_iters) warm-up calls, then times O(iters)
    back-to-back calls between one pair of CUDA events (wall clock on C(gloo)), like nccl-tests.
  - On the GPU the timed calls are queued behind a short sleep kernel that starts, on every GPU at
    once, when a barrier all-reduce ends, so the time is the GPUs' own; Python's per-call overhead
    (tens of microseconds) and host hiccups do not count. Large messages come out as in nccl-tests
    (within 1-2% on 2x H200 from 128 MiB to 1 GiB); small ones come out below nccl-tests' time,
    which includes its host's launch cost (about 7 us against 13-21 us on 2x H200, NVLink).
  - Reports per size the time per call, the algorithm bandwidth and nccl-tests' bus bandwidth
    (busbw = algbw x 2(n-1)/n; for 2 ranks busbw = algbw), and fails when a sum is wrong.
  - "The bandwidth verdict (RV(bandwidth_verdict)), on C(nccl) runs: the B(peak) bus bandwidth over the sizes of at
    least O(threshold_min_bytes) (1 GiB) must reach O(min_busbw_gbps), else the run fails (or only warns with
    O(below_threshold=warn)). The peak, because a CX7 link reaches its plateau at large sizes and one slow size
    among healthy ones is noise, while what this check is for (a twin missing from C(NCCL_IB_HCA), a container
    without C(/dev/infiniband), NCCL on sockets) gives about 3 GB/s against 22-24 at every size, far below the
    threshold."
  - NVIDIA's multi-Spark setup tool judges the average bus bandwidth of a 16 GiB all-gather and only warns; users
    report that 16 GiB test buffers froze a GB10, whose memory is shared with the CPU. This module stops at 1 GiB by
    default and fails below the threshold, since the gap it looks for is far outside any noise.
  - When the largest size run is below O(threshold_min_bytes) (a small O(max_bytes); a node that serves SGLang and
    has little memory free), the largest size is judged and the verdict is C(provisional) - a warning, never a
    failure, since smaller messages do not reach the link's plateau.
  - "On C(gloo) runs (CPU, the lab, CI) the threshold is not applied (verdict C(not-judged)): gloo moves the data
    through the CPUs over sockets, and its bandwidth says nothing about NCCL over RDMA. The sums are still checked."
  - Uses the NCCL that SGLang will use when O(runtime=container) (the worker runs inside the
    pinned SGLang image), or the torch of the interpreter given in O(python).
  - All nodes must run the task at the same time. A play with fewer forks than nodes, or with
    C(serial) smaller than the number of nodes, deadlocks in the rendezvous until O(timeout). Pass
    O(forks) so that the first case fails at once; C(serial) cannot be seen from a module.
  - On C(nccl) every local rank needs a GPU of its own, so O(local_ranks) above the number of GPUs that torch sees
    on the node fails at once, before any rendezvous, naming both numbers.
  - A job of one rank in all (O(nnodes=1) and one local rank) has no link between ranks to measure; the module
    returns RV(applicable=false) and RV(reason) without running an all-reduce, and does not fail.
  - The worker runs in a process session of its own; on timeout the module ends the whole group
    (and the container) and says whether anything was left running.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
  - dgxspark.sglang.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  master_addr:
    description:
      - The head's (node rank 0's) CX7 address, the same on every node. Not the management address.
    type: str
    required: true
  master_port:
    description: TCP port of the rendezvous on the head.
    type: int
    default: 29511
  nnodes:
    description: Number of nodes in the job, the same on every node.
    type: int
    required: true
  node_rank:
    description: This node's rank, 0 on the head, up to O(nnodes) - 1.
    type: int
    required: true
  local_ranks:
    description:
      - Ranks started on this node. Every node must start the same number.
      - Left out, the worker starts one per GPU that torch sees for C(nccl), one for C(gloo).
      - On C(nccl), more than the GPUs that torch sees on the node (C(torch.cuda.device_count())) fails at once.
    type: int
  forks:
    description:
      - The play's forks, passed as C("{{ ansible_forks }}"). When below O(nnodes) the module fails
        at once instead of deadlocking.
    type: int
  backend:
    description: C(nccl) on GPU hosts; C(gloo) on CPU-only hosts (the lab, CI), where no bandwidth threshold applies.
    type: str
    choices: [nccl, gloo]
    default: nccl
  runtime:
    description:
      - C(python) runs the worker with O(python) on the host.
      - C(container) runs it with C(python3) inside O(image) through C(docker run --rm --gpus all
        --network host --ipc host), one C(--ulimit) per O(ulimits), C(--device /dev/infiniband) when O(rdma_devices)
        is not empty, O(env_file) and C(NCCL_NVLS_ENABLE=0). The RDMA and ulimit flags come from the same function as
        the SGLang unit's (P(dgxspark.sglang.container_rdma_args#filter)).
    type: str
    choices: [python, container]
    default: python
  rdma_devices:
    description:
      - The RDMA devices of this node, from the cluster plan (C(spark_cluster_plan.nodes[inventory_hostname].probe.rdma_devices)),
        C([]) for none. Required with O(runtime=container).
      - Not empty, the container gets C(--device /dev/infiniband). Without those device nodes rdma-core drops every
        RDMA device, NCCL falls back to sockets (about 3 GB/s), and the check fails a healthy link.
    type: list
    elements: str
  python:
    description: Interpreter that has torch (not necessarily Ansible's), for O(runtime=python).
    type: str
    default: python3
  image:
    description: The pinned SGLang image, for O(runtime=container).
    type: str
  docker_path:
    description: The docker client, for O(runtime=container).
    type: str
    default: docker
  env_file:
    description: An environment file passed to C(docker run --env-file), e.g. the C(nccl.env) that the nccl_env role writes.
    type: path
  ulimits:
    description:
      - C(docker run --ulimit NAME=VALUE) for O(runtime=container); the verify role passes the group's
        C(sglang_server_container_ulimits), as the SGLang unit gets them.
      - Omitted, C(memlock=-1) (RDMA pins the memory it sends from).
    type: dict
  volumes:
    description:
      - Extra C(docker run --volume) entries (C(SRC:DEST[:OPTIONS])) for O(runtime=container), e.g. what the image needs
        mounted (the verify role passes the group's C(sglang_server_container_volumes)).
    type: list
    elements: str
    default: []
  env:
    description:
      - Extra environment for the worker, e.g. C(NCCL_SOCKET_IFNAME), C(GLOO_SOCKET_IFNAME), C(NCCL_IB_HCA), C(NCCL_DEBUG).
    type: dict
    default: {}
  dtype:
    description: Element type of the all-reduce.
    type: str
    choices: [float32]
    default: float32
  min_bytes:
    description: Smallest message size in bytes.
    type: int
    default: 8
  max_bytes:
    description: Largest message size in bytes (1 GiB by default).
    type: int
    default: 1073741824
  step_factor:
    description: Each size is the previous one times this, like nccl-tests' C(-f).
    type: int
    default: 2
  warmup_iters:
    description: Untimed all-reduces before each size's timed loop.
    type: int
    default: 5
  iters:
    description: Timed all-reduces per size.
    type: int
    default: 20
  min_busbw_gbps:
    description:
      - Lowest acceptable peak bus bandwidth in GB/s (1e9 bytes/s) over the sizes of at least O(threshold_min_bytes),
        on C(nccl) runs.
      - The default is the 175 Gb/s that NVIDIA's multi-Spark setup tool compares with. C(0) checks the sums only.
    type: float
    default: 21.875
  threshold_min_bytes:
    description:
      - Smallest message size the verdict judges (1 GiB by default). When the largest size run is smaller, the
        largest is judged and the verdict is provisional (a warning).
    type: int
    default: 1073741824
  below_threshold:
    description:
      - What a peak below O(min_busbw_gbps) does. C(fail) fails the task; C(warn) only warns, as NVIDIA's tool does.
    type: str
    choices: [fail, warn]
    default: fail
  timeout:
    description:
      - Seconds before the module ends the worker and fails, at least 20. torch's own timeout is set 15 s or 10% below it.
    type: int
    default: 300
  return_output:
    description:
      - Return the worker's RV(stdout) and RV(stderr) also when it passes (they are always returned when it fails), e.g.
        the lines of C(NCCL_DEBUG=INFO) given in O(env); the doctor playbook keeps them.
    type: bool
    default: false
    version_added: 0.1.0
notes:
  - Run with the C(linear) or C(free) strategy and forks >= nodes, never with C(serial) below the node count.
  - On a multi-GPU host, NVLink multicast (NVLS) may have to stay off; pass C(NCCL_NVLS_ENABLE=0) in O(env)
    (the container runtime always does).
"""

EXAMPLES = r"""
- name: All-reduce across all Sparks over the CX7 link, inside the SGLang image
  dgxspark.sglang.nccl_allreduce:
    runtime: container
    image: lmsysorg/sglang:v0.5.3-cu130  # pin yours
    rdma_devices: "{{ spark_cluster_plan.nodes[inventory_hostname].probe.rdma_devices }}"
    env_file: /etc/sglang/nccl.env
    master_addr: "{{ hostvars[groups['spark'][0]].spark_cx7_addresses[0] }}"
    nnodes: "{{ groups['spark'] | length }}"
    node_rank: "{{ groups['spark'].index(inventory_hostname) }}"
    forks: "{{ ansible_forks }}"
  register: allreduce

- name: Show the peak bus bandwidth
  ansible.builtin.debug:
    msg: "{{ allreduce.peak_busbw_gbps }} GB/s"

- name: Two CPU-only lab nodes with gloo over their veth link
  dgxspark.sglang.nccl_allreduce:
    backend: gloo
    python: /opt/torch/bin/python3
    master_addr: 192.168.100.11
    nnodes: 2
    node_rank: "{{ groups['lab'].index(inventory_hostname) }}"
    max_bytes: 1048576
    env:
      GLOO_SOCKET_IFNAME: enp1s0f1np1
    forks: "{{ ansible_forks }}"
"""

RETURN = r"""
stdout:
  description: What the worker printed (its JSON report).
  returned: when the run failed, or with O(return_output)
  type: str
stderr:
  description: The worker's standard error, e.g. NCCL's C(NCCL_DEBUG) lines.
  returned: when the run failed, or with O(return_output)
  type: str
applicable:
  description:
    - Whether the all-reduce applies. V(false) for a job of one rank in all (O(nnodes=1) and one local rank, e.g.
      a one-node cluster of one GPU). There is no link to measure, nothing ran, and the keys returned "when the
      worker ran to the end" (RV(results), RV(passed), and the others) are absent.
  returned: when the worker ran
  type: bool
  sample: true
reason:
  description: Why the all-reduce does not apply.
  returned: when RV(applicable) is V(false)
  type: str
  sample: "one node with one rank: there is no link between ranks to measure, so the all-reduce does not apply (it measures the link between nodes)"
results:
  description: One entry per message size.
  returned: when the worker ran to the end
  type: list
  elements: dict
  sample:
    - {bytes: 134217728, time_us: 5631.2, algbw_gbps: 23.835, busbw_gbps: 23.835, correct: true}
  contains:
    bytes:
      description: Message size in bytes.
      type: int
      sample: 134217728
    time_us:
      description: Time per all-reduce in microseconds, the mean over this node's local ranks (as nccl-tests averages).
      type: float
      sample: 5631.2
    algbw_gbps:
      description: Algorithm bandwidth, bytes / time, in GB/s (1e9 bytes/s).
      type: float
      sample: 23.835
    busbw_gbps:
      description: Bus bandwidth, algbw x 2(n-1)/n with n the number of ranks (nccl-tests' definition).
      type: float
      sample: 23.835
    correct:
      description: Whether every element of the all-reduced buffer held the expected sum.
      type: bool
      sample: true
peak_busbw_gbps:
  description: Highest bus bandwidth over all sizes.
  returned: when the worker ran to the end
  type: float
  sample: 23.9
passed:
  description: Every sum right and RV(bandwidth_verdict) not C(fail).
  returned: when the worker ran to the end
  type: bool
  sample: true
threshold_applied:
  description: Whether O(min_busbw_gbps) was applied (C(nccl) runs with a threshold above 0).
  returned: when the worker ran to the end
  type: bool
  sample: true
bandwidth_verdict:
  description:
    - C(pass) (the peak over the sizes >= O(threshold_min_bytes) reaches O(min_busbw_gbps)); C(fail) (below it);
      C(warn) (below it, with O(below_threshold=warn)); C(provisional) (no size reached O(threshold_min_bytes), so
      the largest was judged, a warning at most); C(not-judged) (C(gloo), or O(min_busbw_gbps=0)).
  returned: when the worker ran to the end
  type: str
  sample: pass
judged_bytes:
  description: The sizes the verdict judged (empty when not judged).
  returned: when the worker ran to the end
  type: list
  elements: int
  sample: [1073741824]
judged_busbw_gbps:
  description: The peak bus bandwidth over RV(judged_bytes), the figure compared with O(min_busbw_gbps); null when not judged.
  returned: when the worker ran to the end
  type: float
  sample: 23.74
bandwidth_warnings:
  description: Why the verdict is provisional, or below the threshold with O(below_threshold=warn); also issued as warnings.
  returned: when the worker ran to the end
  type: list
  elements: str
  sample: []
min_busbw_gbps:
  description: The threshold the run was judged by (O(min_busbw_gbps)), for reports that must not re-type it.
  returned: when the worker ran to the end
  type: float
  sample: 21.875
threshold_min_bytes:
  description: The smallest size the verdict judges (O(threshold_min_bytes)).
  returned: when the worker ran to the end
  type: int
  sample: 1073741824
problems:
  description: What made the check fail.
  returned: when the worker ran to the end
  type: list
  elements: str
  sample: []
world_size:
  description: Number of ranks in the job (nodes x local ranks).
  returned: when the worker ran
  type: int
  sample: 2
local_ranks:
  description: Ranks this node started (would start, when RV(applicable) is V(false)).
  returned: when the worker ran
  type: int
  sample: 1
torch_version:
  description: torch version the worker ran with.
  returned: when the worker ran to the end
  type: str
  sample: 2.9.1+cu130
nccl_version:
  description: NCCL version torch reported (C(nccl) runs).
  returned: when the worker ran to the end on nccl
  type: str
  sample: 2.28.9
device_name:
  description: GPU name of local rank 0 (C(nccl) runs).
  returned: when the worker ran to the end on nccl
  type: str
  sample: NVIDIA GB10
cmd:
  description: The command line that ran the worker.
  returned: always
  type: list
  elements: str
  sample: [python3, /tmp/dgxspark-allreduce-x/w.py, --backend, nccl]
"""

import os
import shutil
import socket
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (
    BELOW_THRESHOLD_ACTIONS,
    DEFAULT_MASTER_PORT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MIN_BUSBW_GBPS,
    DEFAULT_THRESHOLD_MIN_BYTES,
    AllReduceError,
    build_table,
    check_args,
    container_argv,
    container_name,
    evaluate,
    message_sizes,
    parse_worker_output,
    run_group,
    worker_argv,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce_worker import worker_source


def run_worker(module, params, sizes):
    """Write the worker, run it under the timeout; returns (hostname, argv, rc, stdout, stderr, timed_out, left).

    Not through module.run_command: it has no timeout, and a rank stuck in a collective must be ended
    with its whole process group (run_group), then the container stopped.
    """
    hostname = socket.gethostname()
    workdir = tempfile.mkdtemp(prefix="dgxspark-allreduce-")
    try:
        worker = os.path.join(workdir, "w.py")
        with open(worker, "w") as handle:
            handle.write(worker_source())
        os.chmod(worker, 0o644)
        env = dict(os.environ)
        env.update({str(key): str(value) for key, value in params["env"].items()})
        on_timeout = None
        if params["runtime"] == "container":
            params = dict(params, docker_path=module.get_bin_path(params["docker_path"], required=True))
            name = container_name(params["node_rank"], os.getpid())
            argv = container_argv(params, sizes, worker, hostname, name)

            def on_timeout():
                module.run_command([params["docker_path"], "kill", name], environ_update={"LC_ALL": "C", "LANG": "C"})
        else:
            python = module.get_bin_path(params["python"]) if "/" not in params["python"] else params["python"]
            if not python or not os.access(python, os.X_OK):
                module.fail_json(msg="python %r not found on %s: set python to an interpreter that has torch"
                                 % (params["python"], hostname), cmd=[params["python"]], rc=None, stdout="", stderr="")
            argv = worker_argv(dict(params, python=python), sizes, worker, hostname)
        rc, out, err, timed_out, left = run_group(argv, params["timeout"], env=env, on_timeout=on_timeout)
        return hostname, argv, rc, out, err, timed_out, left
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            master_addr=dict(type="str", required=True),
            master_port=dict(type="int", default=DEFAULT_MASTER_PORT),
            nnodes=dict(type="int", required=True),
            node_rank=dict(type="int", required=True),
            local_ranks=dict(type="int"),
            forks=dict(type="int"),
            backend=dict(type="str", choices=["nccl", "gloo"], default="nccl"),
            runtime=dict(type="str", choices=["python", "container"], default="python"),
            rdma_devices=dict(type="list", elements="str"),
            python=dict(type="str", default="python3"),
            image=dict(type="str"),
            docker_path=dict(type="str", default="docker"),
            env_file=dict(type="path"),
            volumes=dict(type="list", elements="str", default=[]),
            ulimits=dict(type="dict"),
            env=dict(type="dict", default={}),
            dtype=dict(type="str", choices=["float32"], default="float32"),
            min_bytes=dict(type="int", default=8),
            max_bytes=dict(type="int", default=DEFAULT_MAX_BYTES),
            step_factor=dict(type="int", default=2),
            warmup_iters=dict(type="int", default=5),
            iters=dict(type="int", default=20),
            min_busbw_gbps=dict(type="float", default=DEFAULT_MIN_BUSBW_GBPS),
            threshold_min_bytes=dict(type="int", default=DEFAULT_THRESHOLD_MIN_BYTES),
            below_threshold=dict(type="str", choices=list(BELOW_THRESHOLD_ACTIONS), default="fail"),
            timeout=dict(type="int", default=300),
            return_output=dict(type="bool", default=False),
        ),
        required_if=[("runtime", "container", ["image", "rdma_devices"])],
        supports_check_mode=True,
    )
    params = module.params
    problems = check_args(params)
    if problems:
        module.fail_json(msg="; ".join(problems))
    sizes = message_sizes(params["min_bytes"], params["max_bytes"], params["step_factor"], params["dtype"])

    hostname, argv, rc, out, err, timed_out, left = run_worker(module, params, sizes)
    facts = dict(cmd=argv, rc=rc, stdout=out, stderr=err)
    if timed_out:
        if left:
            module.fail_json(msg="timed out after %d s on %s, and processes of the worker's group are still running "
                             "there: end them by hand (ps -eo pid,pgid,cmd | grep w.py)" % (params["timeout"], hostname),
                             **facts)
        module.fail_json(msg="timed out after %d s; no rank left running on %s. Check that every node ran this task "
                         "at the same time and reaches %s:%d, or raise timeout"
                         % (params["timeout"], hostname, params["master_addr"], params["master_port"]), **facts)
    try:
        report = parse_worker_output(out)
    except AllReduceError as exc:
        module.fail_json(msg="%s on %s (rc %s): see stderr; check that %s has torch%s"
                         % (exc, hostname, rc, argv[0], " with CUDA" if params["backend"] == "nccl" else ""), **facts)
    if "error" in report:
        module.fail_json(msg=report["error"], errors=report.get("errors") or [report["error"]], stage=report.get("stage"),
                         **facts)
    if report.get("applicable") is False:
        module.exit_json(changed=False, cmd=argv, applicable=False, reason=report["reason"],
                         world_size=report["world_size"], local_ranks=report["local_ranks"])

    results = build_table(report["raw"], report["world_size"])
    verdict = evaluate(results, params["min_busbw_gbps"], params["threshold_min_bytes"], params["backend"],
                       params["below_threshold"])
    for text in verdict["warnings"]:
        module.warn(text)
    result = dict(
        changed=False, cmd=argv, applicable=True, results=results, peak_busbw_gbps=verdict["peak_busbw_gbps"],
        passed=verdict["passed"], threshold_applied=verdict["threshold_applied"],
        bandwidth_verdict=verdict["bandwidth_verdict"], judged_bytes=verdict["judged_bytes"],
        judged_busbw_gbps=verdict["judged_busbw_gbps"], bandwidth_warnings=verdict["warnings"],
        min_busbw_gbps=params["min_busbw_gbps"], threshold_min_bytes=params["threshold_min_bytes"],
        problems=verdict["problems"], world_size=report["world_size"],
        local_ranks=report["local_ranks"], torch_version=report.get("torch_version"),
    )
    for key in ("nccl_version", "device_name"):
        if key in report:
            result[key] = report[key]
    if not verdict["passed"] or params["return_output"]:
        result.update(rc=rc, stdout=out, stderr=err)
        module.fail_json(msg="; ".join(verdict["problems"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
