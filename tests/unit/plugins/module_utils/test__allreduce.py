# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The all-reduce check's pure parts: sizes, nccl-tests' bandwidth math, evaluation, command lines,
argument rules, the output parser, and the runner that must leave no process behind on timeout."""

from __future__ import annotations

import os
import sys
import time

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _allreduce_worker
from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (
    GIB,
    MIB,
    AllReduceError,
    algbw_gbps,
    build_table,
    busbw,
    check_args,
    container_argv,
    evaluate,
    forks_problem,
    memory_capped_max_bytes,
    message_sizes,
    parse_worker_output,
    process_group_timeout,
    run_group,
    worker_argv,
)


def params(**overrides):
    """The module's defaults plus the required options, as AnsibleModule would hand them over."""
    base = dict(
        master_addr="192.168.100.11", master_port=29511, nnodes=2, node_rank=1, local_ranks=None,
        forks=None, backend="nccl", runtime="python", python="python3", image=None, docker_path="docker",
        env_file=None, env={}, dtype="float32", min_bytes=8, max_bytes=GIB, step_factor=2, warmup_iters=5,
        iters=20, min_busbw_gbps=21.875, threshold_min_bytes=GIB, below_threshold="fail", timeout=300,
        rdma_devices=None,
    )
    base.update(overrides)
    return base


# --- sizes -----------------------------------------------------------------------------------------

def test_sizes_8_bytes_to_1_gib_factor_2_are_28_powers_of_two():
    sizes = message_sizes(8, GIB, 2)
    assert len(sizes) == 28
    assert sizes[0] == 8 and sizes[-1] == GIB
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:]))


def test_sizes_stop_at_max_like_nccl_tests_and_round_to_elements():
    # nccl-tests -b 8 -e 100 -f 4: 8, 32, 128 > 100 stops
    assert message_sizes(8, 100, 4) == [8, 32]
    # 6 bytes is not a whole float32: rounded down to 4; 12 stays 12
    assert message_sizes(6, 12, 2) == [4, 12]


@pytest.mark.parametrize("args, text", [
    ((2, 64, 2), "below the size of one float32"),
    ((64, 8, 2), "below min_bytes"),
    ((8, 64, 1), "2 or more"),
])
def test_sizes_refuse_bad_ranges(args, text):
    with pytest.raises(AllReduceError, match=text):
        message_sizes(*args)


# --- bandwidth math (nccl-tests doc/PERFORMANCE.md) --------------------------------------------------

@pytest.mark.parametrize("nranks, factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_busbw_is_algbw_times_2_n_minus_1_over_n(nranks, factor):
    assert busbw(100.0, nranks) == pytest.approx(100.0 * factor)


def test_two_ranks_busbw_equals_algbw():
    assert busbw(23.74, 2) == pytest.approx(23.74)


def test_algbw_counts_1e9_bytes_per_second():
    # 128 MiB in 5631.2 us -> 23.835 GB/s (decimal GB, as nccl-tests prints)
    assert algbw_gbps(128 * MIB, 5631.2) == pytest.approx(134217728 / 5631.2e-6 / 1e9)
    assert algbw_gbps(128 * MIB, 5631.2) == pytest.approx(23.835, abs=1e-3)
    assert algbw_gbps(8, 0) == 0.0


def test_build_table_adds_bandwidths_for_the_world_size():
    rows = build_table([{"bytes": GIB, "time_us": 10000.0, "correct": True}], 4)
    assert rows == [{"bytes": GIB, "time_us": 10000.0, "algbw_gbps": pytest.approx(107.374182, abs=1e-6),
                     "busbw_gbps": pytest.approx(161.061274, abs=1e-6), "correct": True}]


# --- evaluation ----------------------------------------------------------------------------------------

def table(busbws, correct=True, start=MIB):
    """Rows at 1 MiB, 2 MiB, ... with the given bus bandwidths."""
    return [{"bytes": start << i, "time_us": 1.0, "algbw_gbps": bw, "busbw_gbps": bw, "correct": correct}
            for i, bw in enumerate(busbws)]


# 1 MiB .. 2 GiB (12 sizes): a healthy CX7 link, climbing to its plateau.
HEALTHY = [0.5, 1, 2, 4, 8, 12, 16, 19, 21, 22.0, 23.1, 23.7]


def test_pass_judges_the_peak_over_the_sizes_of_1_gib_and_up():
    rows = table(HEALTHY)
    assert rows[10]["bytes"] == GIB and rows[11]["bytes"] == 2 * GIB
    verdict = evaluate(rows, 21.875, GIB, "nccl")
    assert verdict == {"passed": True, "peak_busbw_gbps": 23.7, "threshold_applied": True, "bandwidth_verdict": "pass",
                       "judged_bytes": [GIB, 2 * GIB], "judged_busbw_gbps": 23.7, "problems": [], "warnings": []}


def test_one_slow_size_among_healthy_ones_is_noise_not_a_failure():
    # 2 GiB hiccups, 1 GiB is at the plateau: the peak judges the link, not the noise.
    rows = table(HEALTHY[:11] + [9.0])
    verdict = evaluate(rows, 21.875, GIB, "nccl")
    assert verdict["passed"] and verdict["bandwidth_verdict"] == "pass" and verdict["judged_busbw_gbps"] == 23.1


def test_a_socket_fallback_fails_by_default_and_names_the_link_checks():
    # A twin missing from NCCL_IB_HCA, or no /dev/infiniband in the container: about 3 GB/s at every large size.
    rows = table([0.4, 0.8, 1.2, 1.9, 2.4, 2.8, 3.0, 3.0, 3.1, 3.1, 3.1, 3.0])
    verdict = evaluate(rows, 21.875, GIB, "nccl")
    assert not verdict["passed"] and verdict["bandwidth_verdict"] == "fail" and verdict["warnings"] == []
    assert verdict["problems"] == [verdict["problems"][0]]
    assert "peak bus bandwidth 3.100 GB/s (at 1 GiB) over the sizes from 1 GiB on is below min_busbw_gbps 21.875" \
        in verdict["problems"][0]
    assert "NCCL_IB_HCA" in verdict["problems"][0] and "/dev/infiniband" in verdict["problems"][0]


def test_below_threshold_warn_only_warns():
    rows = table([3.1] * 12)
    verdict = evaluate(rows, 21.875, GIB, "nccl", below_threshold="warn")
    assert verdict["passed"] and verdict["bandwidth_verdict"] == "warn" and verdict["problems"] == []
    assert "below min_busbw_gbps 21.875" in verdict["warnings"][0]


@pytest.mark.parametrize("peak, word", [(3.1, "below"), (22.5, "at or above")])
def test_largest_size_below_1_gib_is_judged_provisionally_a_warning_never_a_failure(peak, word):
    # The lab's runs stop at 64 MiB (1 MiB .. 64 MiB here): the largest size is judged, provisionally.
    rows = table([1, 2, 3, 3, 3, 3, peak])
    assert rows[-1]["bytes"] == 64 * MIB
    verdict = evaluate(rows, 21.875, GIB, "nccl")
    assert verdict["passed"] and verdict["problems"] == []
    assert verdict["bandwidth_verdict"] == "provisional"
    assert verdict["judged_bytes"] == [64 * MIB] and verdict["judged_busbw_gbps"] == peak
    assert len(verdict["warnings"]) == 1
    assert "the largest size run, 64 MiB, is below threshold_min_bytes (1 GiB)" in verdict["warnings"][0]
    assert "is %s min_busbw_gbps 21.875" % word in verdict["warnings"][0]


def test_gloo_reports_but_does_not_judge_the_bandwidth():
    # gloo goes through the CPUs over sockets: 0.1 GB/s says nothing of NCCL over RDMA, at any size.
    for rows in (table([0.1] * 7), table([0.1] * 12)):
        verdict = evaluate(rows, 21.875, GIB, "gloo")
        assert verdict["passed"] and not verdict["threshold_applied"]
        assert verdict["bandwidth_verdict"] == "not-judged"
        assert verdict["problems"] == [] and verdict["warnings"] == [] and verdict["judged_bytes"] == []


def test_zero_threshold_checks_sums_only():
    verdict = evaluate(table([0.1] * 12), 0, GIB, "nccl")
    assert verdict["passed"] and not verdict["threshold_applied"] and verdict["bandwidth_verdict"] == "not-judged"


def test_wrong_sum_fails_even_on_gloo():
    rows = table([5.0, 5.0, 5.0])
    rows[1]["correct"] = False
    verdict = evaluate(rows, 21.875, GIB, "gloo")
    assert not verdict["passed"]
    assert len(verdict["problems"]) == 1 and "wrong sums at 1 size(s) (bytes: 2097152)" in verdict["problems"][0]


def test_empty_table_fails():
    assert evaluate([], 21.875, GIB, "nccl")["passed"] is False


# --- a serving node: buffers from the memory it has free ------------------------------------------------

def test_memory_cap_keeps_max_bytes_when_the_buffers_fit():
    # 14 GiB free less 6 GiB: 8 GiB of room; 1 GiB x 2 fits.
    assert memory_capped_max_bytes(GIB, 14 * GIB, 6 * GIB) == GIB


def test_memory_cap_halves_until_the_buffers_of_every_rank_fit():
    # 7 GiB free less 6: 1 GiB of room; 512 MiB x 2 fits, 1 GiB x 2 does not.
    assert memory_capped_max_bytes(GIB, 7 * GIB, 6 * GIB) == 512 * MIB
    # two ranks on the node need twice as much
    assert memory_capped_max_bytes(GIB, 7 * GIB, 6 * GIB, ranks=2) == 256 * MIB


def test_memory_cap_is_none_without_room():
    assert memory_capped_max_bytes(GIB, 5 * GIB, 6 * GIB) is None


# --- argument rules -------------------------------------------------------------------------------------

def test_forks_below_hosts_names_both_and_the_fix():
    assert forks_problem(1, 2) == (
        "forks (1) is below the number of nodes (2): the all-reduce would deadlock; "
        "run with -f 2 or set forks in ansible.cfg")
    assert forks_problem(2, 2) is None
    assert forks_problem(None, 8) is None


def test_check_args_collects_every_problem():
    problems = check_args(params(nnodes=4, node_rank=4, forks=3, iters=0, min_bytes=2, runtime="container", timeout=10))
    text = "\n".join(problems)
    assert "node_rank (4) must be between 0 and nnodes - 1 (3)" in text
    assert "forks (3) is below the number of nodes (4)" in text
    assert "iters (0)" in text
    assert "min_bytes (2)" in text
    assert "no image" in text
    assert "timeout (10) must be 20 seconds or more" in text
    assert "no RDMA devices" not in text and "rdma_devices" in text
    assert len(problems) == 7


def test_check_args_accepts_the_defaults():
    assert check_args(params()) == []


def test_process_group_timeout_is_below_the_modules():
    assert process_group_timeout(300) == 270
    assert process_group_timeout(60) == 45
    assert process_group_timeout(20) == 5
    for timeout in (20, 30, 300, 3600):
        assert timeout - process_group_timeout(timeout) >= 15


# --- command lines -------------------------------------------------------------------------------------

def test_worker_argv_runs_the_given_python_with_rank_layout_and_sizes():
    argv = worker_argv(params(python="/opt/venv/bin/python3", local_ranks=None), [8, 16], "/tmp/x/w.py", "spark-02")
    assert argv == [
        "/opt/venv/bin/python3", "/tmp/x/w.py", "--backend", "nccl", "--master-addr", "192.168.100.11",
        "--master-port", "29511", "--nnodes", "2", "--node-rank", "1", "--local-ranks", "0",
        "--sizes", "8,16", "--warmup-iters", "5", "--iters", "20", "--dtype", "float32",
        "--pg-timeout", "270", "--hostname", "spark-02",
    ]


def test_container_argv_uses_the_image_python_env_file_and_mounts_the_worker_read_only():
    p = params(runtime="container", image="lmsysorg/sglang:v0.5.3-cu130", docker_path="/usr/bin/docker",
               env_file="/etc/sglang/nccl.env", env={"NCCL_SOCKET_IFNAME": "enp1s0f1np1", "NCCL_DEBUG": "WARN"},
               rdma_devices=["rocep1s0f1", "roceP2p1s0f1"])
    argv = container_argv(p, [8], "/tmp/x/w.py", "spark-02", "dgxspark-allreduce-1-42")
    assert argv[:23] == [
        "/usr/bin/docker", "run", "--rm", "--name", "dgxspark-allreduce-1-42", "--gpus", "all",
        "--network", "host", "--ipc", "host", "--ulimit", "memlock=-1", "--device", "/dev/infiniband",
        "--env-file", "/etc/sglang/nccl.env",
        "-e", "NCCL_DEBUG=WARN", "-e", "NCCL_SOCKET_IFNAME=enp1s0f1np1", "-e", "NCCL_NVLS_ENABLE=0",
    ]
    assert argv[23:27] == ["-v", "/tmp/x/w.py:/tmp/w.py:ro", "lmsysorg/sglang:v0.5.3-cu130", "python3"]
    assert argv[27] == "/tmp/w.py"
    assert argv[argv.index("--hostname") + 1] == "spark-02"


def test_container_argv_without_rdma_devices_has_no_device_but_keeps_memlock():
    # The lab's veths: no RDMA device in the plan, so no /dev/infiniband (docker would refuse a missing device).
    p = params(runtime="container", image="img", docker_path="/usr/bin/docker", rdma_devices=[])
    argv = container_argv(p, [8], "/tmp/x/w.py", "lab-1", "n")
    assert "--device" not in argv and "/dev/infiniband" not in argv
    assert argv[argv.index("--ulimit") + 1] == "memlock=-1"


def test_container_argv_takes_the_group_ulimits_instead_of_memlock_unlimited():
    # The lab cannot raise its locked-memory limit (sglang_server_container_ulimits: {memlock: 8388608}).
    p = params(runtime="container", image="img", rdma_devices=["rocep1s0f1"], ulimits={"memlock": 8388608, "nofile": 1024})
    argv = container_argv(p, [8], "/tmp/x/w.py", "lab-1", "n")
    at = argv.index("--ulimit")
    assert argv[at:at + 6] == ["--ulimit", "memlock=8388608", "--ulimit", "nofile=1024", "--device", "/dev/infiniband"]


def test_container_needs_the_rdma_devices_of_the_plan():
    problems = check_args(params(runtime="container", image="img", rdma_devices=None))
    assert len(problems) == 1 and "spark_cluster_plan.nodes[host].probe.rdma_devices" in problems[0]
    assert check_args(params(runtime="container", image="img", rdma_devices=[])) == []


def test_container_argv_mounts_the_extra_volumes_before_the_image():
    p = params(runtime="container", image="img:1", rdma_devices=[], volumes=["/venv:/venv:ro", "/opt/x:/opt/x:ro"])
    argv = container_argv(p, [8], "/tmp/x/w.py", "spark-02", "n")
    at = argv.index("img:1")
    assert argv[at - 6:at] == ["-v", "/tmp/x/w.py:/tmp/w.py:ro", "-v", "/venv:/venv:ro", "-v", "/opt/x:/opt/x:ro"]


# --- worker output -------------------------------------------------------------------------------------

def test_parse_takes_the_last_json_object_line_after_noise():
    out = ('NCCL INFO Bootstrap : Using enp1s0f1np1:192.168.100.11<0>\n'
           '{"partial": true}\n'
           '/usr/lib/python3/dist-packages/torch/__init__.py: UserWarning: {not json}\n'
           '{"world_size": 2, "raw": []}\n'
           '[1, 2]\n')
    assert parse_worker_output(out) == {"world_size": 2, "raw": []}


def test_parse_without_json_says_so():
    with pytest.raises(AllReduceError, match="no JSON result line"):
        parse_worker_output("Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n")


def test_worker_source_is_the_worker_program():
    source = _allreduce_worker.worker_source()
    assert "def main(" in source and 'if __name__ == "__main__":' in source
    compile(source, "w.py", "exec")


def test_worker_rendezvous_message_names_host_and_address():
    args = _allreduce_worker.parse_args([
        "--master-addr", "192.168.100.11", "--master-port", "29511", "--nnodes", "2", "--node-rank", "1",
        "--sizes", "8", "--hostname", "spark-02"])
    # torch 2.13's text for a client that never got through (seen in tests/unit/test_allreduce_gloo.py)
    exc = RuntimeError("The client socket has timed out after 6000ms while trying to connect to (192.168.100.11, 29511).")
    msg = _allreduce_worker.rendezvous_message(args, 1, 2, exc)
    assert msg.startswith("cannot reach head at 192.168.100.11:29511 from spark-02: RuntimeError")
    assert _allreduce_worker.expected_sum(8) == 36


# --- the worker's checks before any rank starts ------------------------------------------------------------

class FakeCuda:
    """Stands in for ``torch.cuda`` on a node with ``gpus`` GPUs; counts how often the worker asks."""

    def __init__(self, gpus):
        self.gpus = gpus
        self.asked = 0

    def device_count(self):
        self.asked += 1
        return self.gpus


def fake_torch(monkeypatch, gpus):
    """A ``torch`` whose only CUDA answer is the GPU count, seen by the worker's real ``import torch``."""
    torch = type(sys)("torch")
    torch.__version__ = "0.0.0+fake"
    torch.cuda = FakeCuda(gpus)
    monkeypatch.setitem(sys.modules, "torch", torch)
    return torch


def worker_main(monkeypatch, capsys, *extra):
    """Run the worker's main in-process; any rank start (rendezvous) fails the test. Returns (rc, report, seconds)."""
    def no_ranks(*_args, **_kwargs):
        raise AssertionError("the worker started its ranks (and would wait in the rendezvous)")

    monkeypatch.setattr(_allreduce_worker, "run_local_ranks", no_ranks)
    began = time.monotonic()
    rc = _allreduce_worker.main([
        "--master-addr", "127.0.0.1", "--master-port", "29511", "--node-rank", "0", "--sizes", "8,16",
        "--hostname", "spark-01", "--pg-timeout", "285"] + list(extra))
    elapsed = time.monotonic() - began
    return rc, parse_worker_output(capsys.readouterr().out), elapsed


@pytest.mark.parametrize("gpus, local_ranks, text", [
    (1, 2, "local_ranks 2 but this node (spark-01) has 1 GPU (nvidia-smi -L / torch.cuda.device_count()); "
           "set local_ranks to at most 1 or leave it out"),
    (2, 4, "local_ranks 4 but this node (spark-01) has 2 GPUs (nvidia-smi -L / torch.cuda.device_count()); "
           "set local_ranks to at most 2 or leave it out"),
    (0, 1, "local_ranks 1 but this node (spark-01) has 0 GPUs (nvidia-smi -L / torch.cuda.device_count()); "
           "use backend gloo on CPU-only hosts"),
])
def test_worker_fails_at_once_with_more_local_ranks_than_gpus(monkeypatch, capsys, gpus, local_ranks, text):
    torch = fake_torch(monkeypatch, gpus)
    rc, report, _elapsed = worker_main(monkeypatch, capsys, "--backend", "nccl", "--nnodes", "2",
                                       "--local-ranks", str(local_ranks))
    assert rc == 1
    assert report["stage"] == "setup"  # before any rank started: no rendezvous, no timeout to wait for
    assert report["error"].startswith(text)
    assert torch.cuda.asked == 1


def test_worker_takes_as_many_local_ranks_as_gpus(monkeypatch):
    fake_torch(monkeypatch, 2)
    args = _allreduce_worker.parse_args(["--master-addr", "h", "--master-port", "1", "--nnodes", "2",
                                         "--node-rank", "0", "--sizes", "8", "--local-ranks", "2"])
    assert _allreduce_worker.count_local_ranks(args) == (2, None)
    args.local_ranks = 0  # left out: one per GPU
    assert _allreduce_worker.count_local_ranks(args) == (2, None)


def test_worker_on_gloo_does_not_count_gpus(monkeypatch):
    torch = fake_torch(monkeypatch, 0)
    args = _allreduce_worker.parse_args(["--backend", "gloo", "--master-addr", "h", "--master-port", "1",
                                         "--nnodes", "1", "--node-rank", "0", "--sizes", "8", "--local-ranks", "3"])
    assert _allreduce_worker.count_local_ranks(args) == (3, None)
    assert torch.cuda.asked == 0


@pytest.mark.parametrize("backend, local_ranks", [("nccl", []), ("nccl", ["--local-ranks", "1"]), ("gloo", [])])
def test_worker_of_one_rank_in_all_says_not_applicable_and_runs_nothing(monkeypatch, capsys, backend, local_ranks):
    fake_torch(monkeypatch, 1)
    rc, report, _elapsed = worker_main(monkeypatch, capsys, "--backend", backend, "--nnodes", "1", *local_ranks)
    assert rc == 0
    assert (report["applicable"], report["world_size"], report["local_ranks"]) == (False, 1, 1)
    assert "no link between ranks to measure" in report["reason"]
    assert "error" not in report


# --- runner ----------------------------------------------------------------------------------------------

def test_run_group_returns_output_and_rc():
    rc, out, err, timed_out, left = run_group([sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"], 30)
    assert (rc, out, timed_out, left) == (3, "hi\n", False, False)


def test_run_group_timeout_leaves_no_process_of_the_group(tmp_path):
    pidfile = tmp_path / "pids"
    # a parent and a grandchild that ignores SIGTERM: only SIGKILL ends it
    script = (
        "import os, signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "open(%r, 'w').write('%%d %%d' %% (os.getpid(), child.pid))\n"
        "time.sleep(600)\n" % str(pidfile)
    )
    called = []
    began = time.monotonic()
    rc, _out, _err, timed_out, left = run_group([sys.executable, "-c", script], 2, on_timeout=lambda: called.append(1))
    assert timed_out and not left and called == [1]
    assert rc is not None and rc < 0
    assert time.monotonic() - began < 20
    for pid in map(int, pidfile.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
