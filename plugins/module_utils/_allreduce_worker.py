# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The all-reduce worker: a stand-alone program that the module ``nccl_allreduce`` runs.

It is not imported by the module's own code path: the module writes this file's source
(``worker_source()``) to a temporary file and runs it with the interpreter that has torch (the
host's, or ``python3`` inside the SGLang image), which is not Ansible's. So this file uses the
standard library and torch only, imports torch inside functions (the collection's sanity tests
import module_utils without torch), and needs nothing else from the collection.

One run = one node: it starts the node's local ranks (one per GPU, or one for gloo), joins the
job's rendezvous at ``tcp://MASTER_ADDR:MASTER_PORT`` with global rank ``node_rank *
local_ranks + local_rank`` of ``nnodes * local_ranks``, and for each message size:

1. fills the buffer with ``rank + 1``, all-reduces once and checks every element equals
   ``1 + 2 + ... + world`` (exact in float32 for any realistic world size);
2. runs ``warmup_iters`` all-reduces, a barrier, then ``iters`` back-to-back all-reduces between
   one pair of CUDA events (wall clock on gloo), like nccl-tests: no synchronize and no
   allocation inside the timed loop (one buffer of the largest size, views for the others). On
   the GPU the timed calls are queued behind a short sleep kernel (see ``measure``), so the time
   is the GPUs', not Python's per-call overhead.

Before any rank starts, ``count_local_ranks`` checks that a ``nccl`` node has a GPU per local rank (it fails at
once, naming both numbers), and a job of one rank in all (one node, one local rank) stops there with
``"applicable": false``: there is no link to measure.

Local rank 0's process prints one JSON line: per size the bytes, the time per all-reduce in
microseconds (the mean over the node's local ranks) and whether the sum was right, or ``{"error": ...}``.
The bandwidth math is the module's (module_utils/_allreduce.py), not the worker's.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import socket
import sys
import time
import traceback


def worker_source():
    """This file's source text, also from inside an AnsiballZ zip (where ``__file__`` is no file)."""
    loader = globals().get("__loader__")
    if loader is not None and hasattr(loader, "get_source"):
        try:
            source = loader.get_source(__name__)
        except ImportError:
            source = None
        if source:
            return source
    with open(__file__) as handle:
        return handle.read()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="all-reduce bandwidth and correctness, one node's ranks")
    parser.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    parser.add_argument("--master-addr", required=True)
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--nnodes", type=int, required=True)
    parser.add_argument("--node-rank", type=int, required=True)
    parser.add_argument("--local-ranks", type=int, default=0, help="0: one per GPU (nccl), 1 (gloo)")
    parser.add_argument("--sizes", required=True, help="comma-separated message sizes in bytes")
    parser.add_argument("--warmup-iters", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--pg-timeout", type=int, default=290, help="torch.distributed timeout, seconds")
    parser.add_argument("--hostname", default=socket.gethostname())
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size]
    return args


def expected_sum(world_size):
    """Sum of (rank + 1) over all ranks."""
    return world_size * (world_size + 1) // 2


def init_method(master_addr, master_port):
    host = master_addr
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    return "tcp://%s:%d" % (host, master_port)


def rendezvous_message(args, rank, world_size, exc):
    """Say which host could not join which address, and what to check."""
    where = "%s:%d" % (args.master_addr, args.master_port)
    text = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    lowered = str(exc).lower()
    if "address already in use" in lowered or "eaddrinuse" in lowered:
        return ("port %d is already in use on %s: choose another master_port or stop what holds it (%s)"
                % (args.master_port, args.hostname, text))
    # A rank on another node that did not get through the handshake with the head's store cannot
    # reach it (refused, timed out, no route, or something else answering on that port).
    if args.node_rank > 0 and not ("waiting for" in lowered or "wait timeout" in lowered or "joined" in lowered):
        return ("cannot reach head at %s from %s: %s; check master_addr (the head's CX7 address), "
                "the route and any firewall between the nodes, and that the head runs this task too"
                % (where, args.hostname, text))
    return ("rendezvous at %s failed on %s (rank %d of %d): %s; check that all %d node(s) run this task "
            "at the same time (forks >= nodes, no serial) and can reach %s"
            % (where, args.hostname, rank, world_size, text, args.nnodes, where))


def run_rank(args, local_rank, local_ranks):
    """One rank's whole run; returns a dict (``rows`` or ``error``), never raises."""
    rank = args.node_rank * local_ranks + local_rank
    world_size = args.nnodes * local_ranks
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        return {"error": "torch cannot be imported by %s on %s: %s" % (sys.executable, args.hostname, exc)}
    try:
        dtype = getattr(torch, args.dtype)
        if args.backend == "nccl":
            gpus = gpu_count(torch)
            if local_rank >= gpus:
                return {"error": "local rank %d needs GPU %d but torch sees %d GPU(s) on %s"
                        % (local_rank, local_rank, gpus, args.hostname)}
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": "cannot set up local rank %d on %s: %s" % (local_rank, args.hostname, exc)}

    kwargs = {
        "backend": args.backend,
        "init_method": init_method(args.master_addr, args.master_port),
        "rank": rank,
        "world_size": world_size,
        "timeout": datetime.timedelta(seconds=args.pg_timeout),
    }
    if args.backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device  # eager NCCL init: communicator errors show up here
    try:
        dist.init_process_group(**kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": rendezvous_message(args, rank, world_size, exc), "stage": "rendezvous"}

    try:
        rows = measure(torch, dist, args, device, dtype, rank, world_size)
        info = {"rows": rows, "world_size": world_size, "torch_version": torch.__version__}
        if args.backend == "nccl":
            info["device_name"] = torch.cuda.get_device_name(device)
            try:
                info["nccl_version"] = ".".join(str(part) for part in torch.cuda.nccl.version())
            except Exception:  # pylint: disable=broad-except
                info["nccl_version"] = None
        return info
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": "all-reduce failed on %s (rank %d of %d): %s: %s"
                % (args.hostname, rank, world_size, type(exc).__name__, exc),
                "stage": "collective", "traceback": traceback.format_exc(limit=4)}
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # pylint: disable=broad-except
            pass


def measure(torch, dist, args, device, dtype, rank, world_size):
    """Correctness, warm-up and timing for every size, on one buffer of the largest size."""
    elem = torch.tensor([], dtype=dtype).element_size()
    counts = [size // elem for size in args.sizes]
    buf = torch.empty(max(counts), dtype=dtype, device=device)
    flag = torch.zeros(1, dtype=dtype, device=device)
    expected = float(expected_sum(world_size))
    on_gpu = device.type == "cuda"

    # On the GPU the timed calls are queued behind a short sleep kernel that starts when the barrier
    # all-reduce ends (at the same moment on every GPU): the host queues all of them while the GPU
    # waits, so neither Python's per-call overhead (tens of microseconds, more than a small NCCL
    # all-reduce takes) nor a host hiccup between the barrier and the first call enters the time,
    # which is then the GPUs' own, as in nccl-tests. 100 us of queueing per call plus 2 ms, counted
    # at 2 GHz (a slower clock only sleeps longer).
    sleep = getattr(torch.cuda, "_sleep", None) if on_gpu else None
    sleep_cycles = int(2e9 * (args.iters * 100e-6 + 2e-3))

    rows = []
    for count in counts:
        view = buf[:count]
        view.fill_(rank + 1)
        dist.all_reduce(view)
        correct = bool(torch.all(view == expected).item())
        view.zero_()  # values stay finite however many iterations follow
        for _iteration in range(args.warmup_iters):
            dist.all_reduce(view)
        if on_gpu:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            dist.all_reduce(flag)  # barrier, on the GPUs' timeline: no host synchronize
            if sleep is not None:
                sleep(sleep_cycles)
            start.record()
            for _iteration in range(args.iters):
                dist.all_reduce(view)
            end.record()
            end.synchronize()
            time_us = start.elapsed_time(end) * 1000.0 / args.iters
        else:
            dist.all_reduce(flag)  # barrier
            began = time.perf_counter()
            for _iteration in range(args.iters):
                dist.all_reduce(view)
            time_us = (time.perf_counter() - began) * 1e6 / args.iters
        rows.append({"bytes": count * elem, "time_us": time_us, "correct": correct})
    return rows


def _child(args, local_rank, local_ranks, queue):
    queue.put((local_rank, run_rank(args, local_rank, local_ranks)))


def run_local_ranks(args, local_ranks):
    """Start local ranks 1.. as spawned processes, run local rank 0 here, collect every result."""
    if local_ranks == 1:
        return [run_rank(args, 0, 1)]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = {}
    for local_rank in range(1, local_ranks):
        proc = ctx.Process(target=_child, args=(args, local_rank, local_ranks, queue), daemon=True)
        proc.start()
        procs[local_rank] = proc
    results = {0: run_rank(args, 0, local_ranks)}
    deadline = time.monotonic() + args.pg_timeout + 30
    while len(results) < local_ranks and time.monotonic() < deadline:
        try:
            local_rank, result = queue.get(timeout=1.0)
            results[local_rank] = result
            continue
        except Exception:  # pylint: disable=broad-except  # queue.Empty
            pass
        for local_rank, proc in procs.items():
            if local_rank not in results and not proc.is_alive() and queue.empty():
                results[local_rank] = {"error": "local rank %d on %s exited with code %s without a result "
                                       "(see stderr)" % (local_rank, args.hostname, proc.exitcode)}
    for local_rank in procs:
        results.setdefault(local_rank, {"error": "local rank %d on %s gave no result in time"
                                        % (local_rank, args.hostname)})
    for proc in procs.values():
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    return [results[local_rank] for local_rank in range(local_ranks)]


def combine(args, local_ranks, results):
    """One node's report: per size the mean of the local ranks' times (nccl-tests averages over its
    ranks too), correct only if every local rank's sum was."""
    report = {
        "hostname": args.hostname, "node_rank": args.node_rank, "nnodes": args.nnodes,
        "local_ranks": local_ranks, "world_size": args.nnodes * local_ranks, "backend": args.backend,
        "dtype": args.dtype,
    }
    errors = [result["error"] for result in results if "error" in result]
    if errors:
        report["error"] = errors[0]
        report["errors"] = errors
        stages = [result.get("stage") for result in results if result.get("stage")]
        if stages:
            report["stage"] = stages[0]
        return report
    first = results[0]
    for key in ("torch_version", "nccl_version", "device_name"):
        if key in first:
            report[key] = first[key]
    raw = []
    for index, row in enumerate(first["rows"]):
        peers = [result["rows"][index] for result in results]
        raw.append({
            "bytes": row["bytes"],
            "time_us": sum(peer["time_us"] for peer in peers) / len(peers),
            "correct": all(peer["correct"] for peer in peers),
        })
    report["raw"] = raw
    return report


def gpu_count(torch):
    """The GPUs this node's ranks can use: ``torch.cuda.device_count()``, the one place the worker reads it."""
    return torch.cuda.device_count()


def plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def count_local_ranks(args):
    """The node's local ranks and None, or 0 and why the run cannot start; judged before any rank starts.

    On ``nccl`` every local rank needs a GPU of its own: asking for more ranks than torch sees GPUs fails here, at
    once, instead of local rank 0 waiting in the rendezvous for ranks that can never join. On ``gloo`` (CPU) GPUs
    do not apply.
    """
    if args.backend == "gloo":
        return (args.local_ranks if args.local_ranks > 0 else 1), None
    try:
        import torch
    except ImportError as exc:
        return 0, "torch cannot be imported by %s on %s: %s" % (sys.executable, args.hostname, exc)
    count = gpu_count(torch)
    if args.local_ranks > 0:
        if args.local_ranks > count:
            fix = ("set local_ranks to at most %d or leave it out" % count if count > 0 else
                   "use backend gloo on CPU-only hosts, or run in the SGLang image with --gpus all")
            return 0, ("local_ranks %d but this node (%s) has %s (nvidia-smi -L / torch.cuda.device_count()); %s"
                       % (args.local_ranks, args.hostname, plural(count, "GPU"), fix))
        return args.local_ranks, None
    if count < 1:
        return 0, ("torch (%s) sees no CUDA GPU on %s: use backend gloo on CPU-only hosts, or run in the "
                   "SGLang image with --gpus all" % (torch.__version__, args.hostname))
    return count, None


def not_applicable(args):
    """The report of a job of one rank in all (one node, one local rank): no link to measure, nothing to run."""
    return {
        "hostname": args.hostname, "node_rank": args.node_rank, "nnodes": args.nnodes, "local_ranks": 1,
        "world_size": 1, "backend": args.backend, "dtype": args.dtype, "applicable": False,
        "reason": "one node with one rank: there is no link between ranks to measure, so the all-reduce does not "
                  "apply (it measures the link between nodes)",
    }


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    local_ranks, error = count_local_ranks(args)
    if error:
        report = {"hostname": args.hostname, "node_rank": args.node_rank, "error": error, "stage": "setup"}
    elif args.nnodes == 1 and local_ranks == 1:
        report = not_applicable(args)
    else:
        report = combine(args, local_ranks, run_local_ranks(args, local_ranks))
    sys.stdout.flush()
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 1 if "error" in report else 0


if __name__ == "__main__":
    os._exit(main())  # pylint: disable=protected-access  # skip torch's slow, noisy teardown
