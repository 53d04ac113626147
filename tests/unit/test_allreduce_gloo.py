# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real all-reduce on this machine with torch's gloo backend (no GPU needed).

1. The worker program the module ships, started twice as two nodes (node rank 0 and 1) on
   127.0.0.1 with the command line the module builds: every sum right, nccl-tests' math applied.
2. The module itself through ``ansible localhost``: one node with two local ranks; then its
   failure paths for real: forks below nodes, a head nobody runs, a worker that hangs.

Needs torch (requirements-dev.txt pins the CPU wheel); skipped with the reason when absent.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: make venv (requirements-dev.txt pins torch)")

from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import (  # noqa: E402
    build_table,
    evaluate,
    message_sizes,
    parse_worker_output,
    worker_argv,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce_worker import worker_source  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE = pathlib.Path(sys.executable).parent / "ansible"
SIZES = message_sizes(8, 1024 * 1024, 2)  # 8 B .. 1 MiB: 18 sizes
ENV = dict(os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def params(**overrides):
    base = dict(
        python=sys.executable, backend="gloo", master_addr="127.0.0.1", master_port=free_port(), nnodes=2,
        node_rank=0, local_ranks=None, dtype="float32", warmup_iters=1, iters=3, timeout=60,
    )
    base.update(overrides)
    return base


def test_two_nodes_of_one_rank_each_sum_right(tmp_path):
    worker = tmp_path / "w.py"
    worker.write_text(worker_source())
    port = free_port()
    procs = [
        subprocess.Popen(
            worker_argv(params(master_port=port, node_rank=rank), SIZES, str(worker), "node%d" % rank),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, universal_newlines=True)
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for rank, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, err
        report = parse_worker_output(out)
        assert (report["node_rank"], report["world_size"], report["local_ranks"]) == (rank, 2, 1)
        assert report["hostname"] == "node%d" % rank
        rows = build_table(report["raw"], report["world_size"])
        assert [row["bytes"] for row in rows] == SIZES
        assert all(row["correct"] for row in rows)
        assert all(row["time_us"] > 0 for row in rows)
        for row in rows:  # 2 ranks: bus bandwidth equals algorithm bandwidth
            assert row["busbw_gbps"] == row["algbw_gbps"]
            assert row["algbw_gbps"] == pytest.approx(row["bytes"] / row["time_us"] / 1e3, rel=1e-3, abs=1e-6)
        assert rows[-1]["busbw_gbps"] > 0
        verdict = evaluate(rows, 21.875, 1024 ** 3, "gloo")
        assert (verdict["passed"], verdict["threshold_applied"], verdict["problems"]) == (True, False, [])
        assert verdict["bandwidth_verdict"] == "not-judged"


def run_module(args, timeout=180):
    """``ansible localhost -m dgxspark.sglang.nccl_allreduce``; returns the module's result dict."""
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1")
    cmd = [str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable,
           "-m", "dgxspark.sglang.nccl_allreduce", "-a", json.dumps(args)]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, check=False)
    # the default callback prints "localhost | SUCCESS => {...}" (or FAILED!)
    found = re.search(r"^localhost \| ([A-Z!]+) => ", proc.stdout, re.MULTILINE)
    assert found, proc.stdout + proc.stderr
    result = json.JSONDecoder().raw_decode(proc.stdout[found.end():])[0]
    result["failed"] = found.group(1) == "FAILED!"  # the callback shows this in the status, not the dict
    return result


def module_args(**overrides):
    args = dict(
        backend="gloo", python=sys.executable, master_addr="127.0.0.1", master_port=free_port(), nnodes=1,
        node_rank=0, local_ranks=2, max_bytes=1024 * 1024, warmup_iters=1, iters=3, timeout=60,
        env={"GLOO_SOCKET_IFNAME": "lo"},
    )
    args.update(overrides)
    return args


def test_module_one_node_two_local_ranks():
    result = run_module(module_args())
    assert not result.get("failed"), result.get("msg")
    assert (result["changed"], result["applicable"]) == (False, True)
    assert (result["passed"], result["threshold_applied"], result["problems"]) == (True, False, [])
    # gloo: the CPU over sockets; the threshold does not apply, so no verdict and no warning, at 1 MiB as at 1 GiB.
    assert (result["bandwidth_verdict"], result["bandwidth_warnings"], result["judged_bytes"]) == ("not-judged", [], [])
    assert (result["world_size"], result["local_ranks"]) == (2, 2)
    assert [row["bytes"] for row in result["results"]] == SIZES
    assert all(row["correct"] for row in result["results"])
    assert result["peak_busbw_gbps"] == max(row["busbw_gbps"] for row in result["results"]) > 0
    assert result["torch_version"] == torch.__version__


def test_module_fails_at_once_when_forks_are_below_nodes():
    result = run_module(module_args(nnodes=2, node_rank=0, local_ranks=None, forks=1))
    assert result["failed"]
    assert "forks (1) is below the number of nodes (2): the all-reduce would deadlock; run with -f 2" in result["msg"]


def test_module_names_host_and_address_when_the_head_is_not_there():
    port = free_port()  # nothing listens there
    result = run_module(module_args(nnodes=2, node_rank=1, local_ranks=None, master_port=port, timeout=20))
    assert result["failed"]
    assert result["msg"].startswith("cannot reach head at 127.0.0.1:%d from %s" % (port, socket.gethostname()))
    assert result["stage"] == "rendezvous"


def test_module_timeout_leaves_no_rank_running(tmp_path):
    # Stands in for a worker that hangs (a rank stuck in a collective): a "python" that starts a
    # child and sleeps. The module must end both and say so.
    fake = tmp_path / "hanging-python"
    pids = tmp_path / "pids"
    fake.write_text("#!/bin/sh\nsleep 300 &\necho $$ $! > %s\nwait\n" % pids)
    fake.chmod(0o755)
    result = run_module(module_args(python=str(fake), timeout=20))
    assert result["failed"]
    assert result["msg"].startswith("timed out after 20 s; no rank left running on %s" % socket.gethostname())
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def one_gpu_python(tmp_path, gpus=1):
    """A "python" for the worker whose torch sees ``gpus`` CUDA GPUs: the real torch and the real worker, with
    ``torch.cuda.device_count`` (where the worker reads the count) answering ``gpus``."""
    fake = tmp_path / ("python-with-%d-gpu" % gpus)
    fake.write_text(
        "#!/bin/sh\nexec %s -c 'import runpy, sys, torch\n"
        "torch.cuda.device_count = lambda: %d\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name=\"__main__\")' \"$@\"\n" % (sys.executable, gpus))
    fake.chmod(0o755)
    return str(fake)


def test_module_fails_at_once_with_more_local_ranks_than_gpus(tmp_path):
    # A one-GPU node asked for two ranks: before, local rank 0 waited in the rendezvous until torch's timeout
    # (105 s at timeout 120) for a rank that never came. Now the worker counts the GPUs before any rank starts.
    result = run_module(module_args(backend="nccl", python=one_gpu_python(tmp_path), nnodes=1, local_ranks=2,
                                    timeout=120))
    assert result["failed"]
    assert result["msg"] == (
        "local_ranks 2 but this node (%s) has 1 GPU (nvidia-smi -L / torch.cuda.device_count()); "
        "set local_ranks to at most 1 or leave it out" % socket.gethostname())
    assert result["stage"] == "setup"  # before any rank started: no rendezvous to wait for
    assert result["errors"] == [result["msg"]]


def test_module_one_node_of_one_rank_is_not_applicable():
    result = run_module(module_args(nnodes=1, local_ranks=1))
    assert not result.get("failed"), result.get("msg")
    assert (result["applicable"], result["world_size"], result["local_ranks"]) == (False, 1, 1)
    assert "no link between ranks to measure" in result["reason"]
    assert "results" not in result and "passed" not in result


PLAYBOOK = """
- name: All-reduce on every node at once
  hosts: nodes
  gather_facts: false
  tasks:
    - name: Run the all-reduce
      dgxspark.sglang.nccl_allreduce:
        backend: gloo
        python: "{{ torch_python }}"
        master_addr: 127.0.0.1
        master_port: "{{ port }}"
        nnodes: "{{ groups['nodes'] | length }}"
        node_rank: "{{ groups['nodes'].index(inventory_hostname) }}"
        forks: "{{ ansible_forks }}"
        max_bytes: 65536
        warmup_iters: 1
        iters: 3
        timeout: 60
        env:
          GLOO_SOCKET_IFNAME: lo
      register: allreduce

    - name: Keep each node's result
      ansible.builtin.copy:
        content: "{{ allreduce | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


@pytest.mark.parametrize("forks", [2, 1])
def test_playbook_two_nodes_one_task(tmp_path, forks):
    """The intended shape: one task, two inventory hosts (both local here), node rank from the group.

    With forks 2 both run at once and agree; with forks 1 each fails at once instead of deadlocking.
    """
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.ini").write_text(
        "[nodes]\nnode0\nnode1\n\n[nodes:vars]\nansible_connection=local\nansible_python_interpreter=%s\n"
        % sys.executable)
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    playbook = pathlib.Path(sys.executable).parent / "ansible-playbook"
    proc = subprocess.run(
        [str(playbook), "-i", str(tmp_path / "hosts.ini"), "-f", str(forks), str(tmp_path / "play.yml"),
         "-e", json.dumps({"torch_python": sys.executable, "port": free_port(), "out_dir": str(tmp_path)})],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=180, check=False)
    if forks == 1:
        assert proc.returncode != 0
        assert proc.stdout.count("forks (1) is below the number of nodes (2): the all-reduce would deadlock") >= 2
        assert not list(tmp_path.glob("node*.json"))
        return
    assert proc.returncode == 0, proc.stdout
    results = [json.loads((tmp_path / ("node%d.json" % rank)).read_text()) for rank in (0, 1)]
    for result in results:
        assert result["passed"] and result["world_size"] == 2
        assert all(row["correct"] for row in result["results"])
    assert [row["bytes"] for row in results[0]["results"]] == [row["bytes"] for row in results[1]["results"]]
