# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""All-reduce check: argument rules, message sizes, nccl-tests' bandwidth math, the bandwidth verdict,
the buffer size a serving node can spare, the worker's and the container's command lines, and a runner that
leaves no process behind.

No Ansible objects in here: the module ``nccl_allreduce`` is the glue, pytest tests this directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from ansible_collections.dgxspark.sglang.plugins.module_utils._rdma import RdmaPlanError, container_rdma_args

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# NVIDIA's multi-Spark setup tool compares the bus bandwidth with 175 Gb/s = 21.875 GB/s (FACTS.md). It only warns
# below it; here a cluster below it fails by default (below_threshold), since a twin missing from NCCL_IB_HCA or a
# container without /dev/infiniband gives about 3 GB/s, far outside any noise.
DEFAULT_MIN_BUSBW_GBPS = 21.875
# The verdict judges the peak bus bandwidth over the sizes of 1 GiB and up, where a CX7 link reaches its plateau.
# NVIDIA's tool judges a 16 GiB all-gather; users report that 16 GiB buffers froze a GB10 (unified memory).
DEFAULT_THRESHOLD_MIN_BYTES = GIB
DEFAULT_MAX_BYTES = GIB
DEFAULT_MASTER_PORT = 29511
BELOW_THRESHOLD_ACTIONS = ("fail", "warn")

# The bandwidth verdicts (the module's bandwidth_verdict).
VERDICT_PASS = "pass"                # peak >= threshold over the sizes >= threshold_min_bytes
VERDICT_FAIL = "fail"                # below it, below_threshold=fail: the run fails
VERDICT_WARN = "warn"                # below it, below_threshold=warn: a warning
VERDICT_PROVISIONAL = "provisional"  # no size reached threshold_min_bytes: the largest judged, a warning at most
VERDICT_NOT_JUDGED = "not-judged"    # gloo (CPU sockets), or min_busbw_gbps 0: the sums only

# A node that serves SGLang keeps this much of MemAvailable free beside the all-reduce's buffers: the worker's CUDA
# context, torch and NCCL (1-2 GiB per rank) and headroom for SGLang's own peaks. GB10 memory is unified: GPU
# buffers come out of MemAvailable, and users report whole-host freezes after running out of it (FACTS.md).
DEFAULT_SERVING_RESERVE_BYTES = 6 * GIB
# Bytes of memory per byte of message on a rank: the buffer, plus the sum check's boolean copy (a quarter), rounded up.
BUFFER_FACTOR = 2

DTYPE_SIZES = {"float32": 4}

# Path of the worker program inside the container (bind-mounted read-only).
CONTAINER_WORKER_PATH = "/tmp/w.py"


class AllReduceError(Exception):
    """A problem with the arguments or the worker's output, with a message that says what to do."""


def forks_problem(forks, nnodes):
    """The message for a play whose forks cannot start every node at once, else None.

    All nodes must run the task at the same time: with fewer forks than nodes, the first batch of
    hosts waits in the rendezvous for hosts that Ansible starts only after the first batch ends.
    """
    if forks is None or forks >= nnodes:
        return None
    return (
        "forks (%d) is below the number of nodes (%d): the all-reduce would deadlock; "
        "run with -f %d or set forks in ansible.cfg" % (forks, nnodes, nnodes)
    )


def message_sizes(min_bytes, max_bytes, step_factor, dtype="float32"):
    """Message sizes in bytes, like nccl-tests' ``-b MIN -e MAX -f FACTOR``.

    Starts at ``min_bytes``, multiplies by ``step_factor`` while the size stays <= ``max_bytes``.
    Each size is rounded down to a whole number of elements of ``dtype``.
    """
    elem = DTYPE_SIZES[dtype]
    if min_bytes < elem:
        raise AllReduceError("min_bytes (%d) is below the size of one %s element (%d bytes)" % (min_bytes, dtype, elem))
    if max_bytes < min_bytes:
        raise AllReduceError("max_bytes (%d) is below min_bytes (%d)" % (max_bytes, min_bytes))
    if step_factor < 2:
        raise AllReduceError("step_factor (%d) must be 2 or more" % step_factor)
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        rounded = size - size % elem
        if not sizes or sizes[-1] != rounded:
            sizes.append(rounded)
        size *= step_factor
    return sizes


def check_args(params):
    """Every rule across the module's options; returns a list of messages (empty: all good)."""
    problems = []
    nnodes = params["nnodes"]
    if nnodes < 1:
        problems.append("nnodes (%d) must be 1 or more" % nnodes)
    elif not 0 <= params["node_rank"] < nnodes:
        problems.append("node_rank (%d) must be between 0 and nnodes - 1 (%d)" % (params["node_rank"], nnodes - 1))
    forks = forks_problem(params.get("forks"), nnodes)
    if forks:
        problems.append(forks)
    local_ranks = params.get("local_ranks")
    if local_ranks is not None and local_ranks < 1:
        problems.append("local_ranks (%d) must be 1 or more; leave it out to use one rank per GPU" % local_ranks)
    if not 1 <= params["master_port"] <= 65535:
        problems.append("master_port (%d) is not a TCP port" % params["master_port"])
    if not params["master_addr"]:
        problems.append("master_addr is empty: give the head's CX7 address")
    if params["iters"] < 1:
        problems.append("iters (%d) must be 1 or more" % params["iters"])
    if params["warmup_iters"] < 0:
        problems.append("warmup_iters (%d) must be 0 or more" % params["warmup_iters"])
    if params["timeout"] < 20:
        problems.append("timeout (%d) must be 20 seconds or more" % params["timeout"])
    if params["min_busbw_gbps"] < 0:
        problems.append("min_busbw_gbps (%s) must be 0 or more" % params["min_busbw_gbps"])
    try:
        message_sizes(params["min_bytes"], params["max_bytes"], params["step_factor"], params["dtype"])
    except AllReduceError as exc:
        problems.append(str(exc))
    if params.get("below_threshold", "fail") not in BELOW_THRESHOLD_ACTIONS:
        problems.append("below_threshold (%s) must be one of %s" % (params["below_threshold"], ", ".join(BELOW_THRESHOLD_ACTIONS)))
    if params["runtime"] == "container" and not params.get("image"):
        problems.append("runtime is container but no image is given: set image to the pinned SGLang image")
    if params["runtime"] == "container":
        try:
            container_rdma_args(params.get("rdma_devices"), params.get("ulimits"))
        except RdmaPlanError as exc:
            problems.append("runtime is container: %s" % exc)
    return problems


def process_group_timeout(timeout):
    """torch.distributed's timeout, below the module's, so that torch reports first.

    The margin covers starting Python and importing torch (seconds) before the rendezvous begins.
    """
    return max(5, min(timeout - 15, int(timeout * 0.9)))


def algbw_gbps(nbytes, time_us):
    """Algorithm bandwidth in GB/s (1e9 bytes per second, as nccl-tests counts)."""
    if time_us <= 0:
        return 0.0
    return nbytes / (time_us * 1e-6) / 1e9


def busbw(algbw, nranks):
    """nccl-tests' bus bandwidth of an all-reduce: algbw x 2(n-1)/n (doc/PERFORMANCE.md)."""
    if nranks < 1:
        raise AllReduceError("the number of ranks must be 1 or more, got %d" % nranks)
    return algbw * 2.0 * (nranks - 1) / nranks


def build_table(raw, world_size):
    """The worker's per-size rows (bytes, time_us, correct) with algbw and busbw added."""
    rows = []
    for item in raw:
        alg = algbw_gbps(item["bytes"], item["time_us"])
        rows.append({
            "bytes": int(item["bytes"]),
            "time_us": round(float(item["time_us"]), 2),
            "algbw_gbps": round(alg, 6),
            "busbw_gbps": round(busbw(alg, world_size), 6),
            "correct": bool(item["correct"]),
        })
    return rows


def human_bytes(count):
    """A size in words: 8 -> '8 B', 65536 -> '64 KiB', 3 * 2**20 -> '3 MiB', 1536 -> '1536 B'."""
    count = int(count)
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return "%d %s" % (count >> shift, unit)
    return "%d B" % count


LINK_HINT = ("check that NCCL uses the CX7 link's RDMA devices (NCCL_IB_HCA naming both twins, /dev/infiniband in "
             "the container, MTU, link speed; NCCL_DEBUG=INFO in env shows the transport)")


def evaluate(results, min_busbw_gbps, threshold_min_bytes, backend, below_threshold="fail"):
    """Judge a table of sizes; returns a dict.

    Keys: ``passed``, ``peak_busbw_gbps`` (over all sizes), ``threshold_applied``, ``bandwidth_verdict`` (one of
    the ``VERDICT_*``), ``judged_bytes`` (the sizes the verdict looked at), ``judged_busbw_gbps`` (their peak),
    ``problems`` (what fails the run) and ``warnings`` (what does not).

    Every size must have summed correctly. The bandwidth verdict, on ``nccl`` runs with ``min_busbw_gbps`` > 0:

    - the peak bus bandwidth over the sizes of at least ``threshold_min_bytes`` must reach ``min_busbw_gbps``
      (the peak, not every size nor the mean: one slow size among healthy ones is noise, a missing twin or a
      socket fallback is slow at every size); below it the run fails, or only warns with ``below_threshold=warn``;
    - when no size reaches ``threshold_min_bytes`` (a small ``max_bytes``, a serving node with little free
      memory) the largest size is judged and the verdict is provisional: a warning, never a failure, since
      smaller messages do not reach the link's plateau.

    On ``gloo`` runs (CPU, the lab, CI) the threshold is not applied (verdict ``not-judged``): gloo moves the data
    through the CPUs over sockets, and its bandwidth says nothing about NCCL over RDMA. The sums are still checked.
    """
    out = {"passed": False, "peak_busbw_gbps": 0.0, "threshold_applied": False,
           "bandwidth_verdict": VERDICT_NOT_JUDGED, "judged_bytes": [], "judged_busbw_gbps": None,
           "problems": [], "warnings": []}
    problems, warnings = out["problems"], out["warnings"]
    if not results:
        problems.append("the worker reported no message sizes")
        return out
    out["peak_busbw_gbps"] = max(row["busbw_gbps"] for row in results)
    wrong = [row["bytes"] for row in results if not row["correct"]]
    if wrong:
        problems.append(
            "wrong sums at %d size(s) (bytes: %s): the all-reduce returned wrong data; "
            "check the NCCL version and the GPUs (nvidia-smi -q for ECC errors)"
            % (len(wrong), ", ".join(str(size) for size in wrong))
        )
    if backend == "nccl" and min_busbw_gbps > 0:
        out["threshold_applied"] = True
        largest = max(row["bytes"] for row in results)
        provisional = largest < threshold_min_bytes
        judged = [row for row in results if row["bytes"] == largest] if provisional else \
            [row for row in results if row["bytes"] >= threshold_min_bytes]
        best = max(judged, key=lambda row: row["busbw_gbps"])
        out["judged_bytes"] = sorted(row["bytes"] for row in judged)
        out["judged_busbw_gbps"] = best["busbw_gbps"]
        below = best["busbw_gbps"] < min_busbw_gbps
        if provisional:
            out["bandwidth_verdict"] = VERDICT_PROVISIONAL
            warnings.append(
                "provisional bandwidth verdict: the largest size run, %s, is below threshold_min_bytes (%s), where "
                "a CX7 link reaches its plateau; its bus bandwidth %.3f GB/s is %s min_busbw_gbps %s. Run sizes up "
                "to %s for a verdict%s"
                % (human_bytes(largest), human_bytes(threshold_min_bytes), best["busbw_gbps"],
                   "below" if below else "at or above", min_busbw_gbps, human_bytes(threshold_min_bytes),
                   "; " + LINK_HINT if below else ""))
        elif not below:
            out["bandwidth_verdict"] = VERDICT_PASS
        else:
            sentence = ("peak bus bandwidth %.3f GB/s (at %s) over the sizes from %s on is below min_busbw_gbps %s: %s"
                        % (best["busbw_gbps"], human_bytes(best["bytes"]), human_bytes(threshold_min_bytes),
                           min_busbw_gbps, LINK_HINT))
            if below_threshold == "warn":
                out["bandwidth_verdict"] = VERDICT_WARN
                warnings.append(sentence)
            else:
                out["bandwidth_verdict"] = VERDICT_FAIL
                problems.append(sentence)
    out["passed"] = not problems
    return out


def memory_capped_max_bytes(max_bytes, available_bytes, reserve_bytes, ranks=1, min_bytes=8):
    """The largest message size a serving node can spare: ``max_bytes``, halved until the buffers of its ``ranks``
    (``ranks`` x size x ``BUFFER_FACTOR``) fit in ``available_bytes`` (MemAvailable) less ``reserve_bytes``.

    None when not even ``min_bytes`` fits (the node is too close to running out of memory to run the check).
    """
    room = available_bytes - reserve_bytes
    size = int(max_bytes)
    while size >= min_bytes:
        if size * BUFFER_FACTOR * max(1, int(ranks)) <= room:
            return size
        size //= 2
    return None


def parse_worker_output(stdout):
    """The last line of the worker's stdout that parses as a JSON object (torch may print warnings)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    raise AllReduceError("the worker printed no JSON result line")


def worker_args(params, sizes, worker_path, hostname):
    """The worker program's own arguments (after ``python3 PATH``)."""
    args = [
        "--backend", params["backend"],
        "--master-addr", params["master_addr"],
        "--master-port", str(params["master_port"]),
        "--nnodes", str(params["nnodes"]),
        "--node-rank", str(params["node_rank"]),
        "--local-ranks", str(params.get("local_ranks") or 0),
        "--sizes", ",".join(str(size) for size in sizes),
        "--warmup-iters", str(params["warmup_iters"]),
        "--iters", str(params["iters"]),
        "--dtype", params["dtype"],
        "--pg-timeout", str(process_group_timeout(params["timeout"])),
        "--hostname", hostname,
    ]
    return [worker_path] + args


def worker_argv(params, sizes, worker_path, hostname):
    """Command line of the worker run by the given Python (runtime ``python``)."""
    return [params["python"]] + worker_args(params, sizes, worker_path, hostname)


def container_name(node_rank, pid):
    """A name for the container, so that a timeout can stop it (killing ``docker run`` does not)."""
    return "dgxspark-allreduce-%d-%d" % (node_rank, pid)


def container_argv(params, sizes, worker_path, hostname, name):
    """Command line of the worker inside the SGLang image (runtime ``container``).

    The NCCL inside the image is the one SGLang will use. The ulimits (``params["ulimits"]``, default
    ``memlock=-1``) and ``--device /dev/infiniband`` (when ``params["rdma_devices"]`` is not empty) come from
    ``_rdma``, as the SGLang unit's do. ``NCCL_NVLS_ENABLE=0``: NVLink multicast stays off (nothing to gain on a Spark, harmful on shared
    multi-GPU hosts).
    """
    argv = [
        params["docker_path"], "run", "--rm", "--name", name,
        "--gpus", "all", "--network", "host", "--ipc", "host",
    ] + container_rdma_args(params.get("rdma_devices"), params.get("ulimits"))
    if params.get("env_file"):
        argv += ["--env-file", params["env_file"]]
    for key in sorted(params.get("env") or {}):
        argv += ["-e", "%s=%s" % (key, params["env"][key])]
    argv += [
        "-e", "NCCL_NVLS_ENABLE=0",
        "-v", "%s:%s:ro" % (worker_path, CONTAINER_WORKER_PATH),
    ]
    for volume in params.get("volumes") or []:
        argv += ["-v", volume]
    argv += [params["image"], "python3"]
    return argv + worker_args(params, sizes, CONTAINER_WORKER_PATH, hostname)


def run_group(argv, timeout, env=None, on_timeout=None):
    """Run ``argv`` in a session of its own; on timeout end the whole process group.

    Returns ``(rc, stdout, stderr, timed_out, left_running)``; ``left_running`` is True when a
    process of the group was still alive after SIGTERM, 5 s, and SIGKILL. ``on_timeout`` (a
    callable) runs after the group is ended, e.g. to stop a container that ``docker run`` left.
    """
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True, universal_newlines=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False, False
    except subprocess.TimeoutExpired:
        pass
    left = _end_group(proc)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        out, err = "", ""
    if on_timeout is not None:
        on_timeout()
    return proc.returncode, out or "", err or "", True, left


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_group(proc):
    """SIGTERM the process group, give it 5 s, then SIGKILL; True if anything of it is still alive."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or killpg(0) keeps finding its zombie
            if not _group_alive(pgid):
                return False
            time.sleep(0.1)
    return _group_alive(pgid)
