"""sglang_server with the native runtime (molecule/lab passes sglang_server_runtime=native): no Docker."""

from __future__ import annotations

import pytest
from conftest import lab_nodes

# The scenario's machines in rank order: four through a switch, the seed's 4-node example (--nnodes 4, --tp-size 4).
NODES = lab_nodes()
RANK = {node: rank for rank, node in enumerate(NODES)}
# inventories/lab: the lab's venv (in the lab dir), which holds SGLang's wheel for the stand-in
PYTHON = "/torch-venv/bin/python"


@pytest.fixture()
def name(host):
    return host.backend.get_hostname()


def test_unit_runs_the_interpreter_directly_with_the_node_s_rank(host, name):
    assert host.service("sglang").is_running and host.service("sglang").is_enabled
    words = host.check_output("systemctl show -p ExecStart --value sglang").split()
    start = next(i for i, word in enumerate(words) if word.startswith("argv[]="))
    argv = words[start:]
    assert argv[0].endswith(PYTHON) and argv[1:3] == ["-m", "sglang.launch_server"]
    assert argv[argv.index("--node-rank") + 1] == str(RANK[name])
    assert "docker" not in " ".join(words)
    assert not host.exists("docker")


def test_every_rank_runs_the_group_of_n_nodes_with_tensor_parallelism_over_all(host, name):
    """The seed's "Scaling to More Nodes": --nnodes 4 and --tp-size 4 on every node, the head's CX7 rendezvous."""
    words = host.check_output("systemctl show -p ExecStart --value sglang").split()
    argv = words[next(i for i, word in enumerate(words) if word.startswith("argv[]=")):]

    def flag(name):
        return argv[argv.index(name) + 1]

    n = len(NODES)
    assert (flag("--nnodes"), flag("--tp-size")) == (str(n), str(n))
    assert flag("--dist-init-addr") == "192.168.100.11:20000"


def test_unit_reads_nccl_env_and_advertises_the_cx7_address(host, name):
    unit = host.check_output("systemctl cat sglang")
    assert "EnvironmentFile=/etc/sglang/nccl.env" in unit
    assert "Environment=SGLANG_HOST_IP=192.168.100.%d" % (11 + RANK[name]) in unit


def test_rank0_is_healthy(host, name):
    if RANK[name] != 0:
        pytest.skip("only rank 0 serves the API")
    # molecule/lab turns on sglang_server_tls: HTTPS with the group's certificate, verified with its CA.
    out = host.check_output("python3 -c 'import ssl, urllib.request as u; print(u.urlopen(\"https://127.0.0.1:30000/health\", "
                            "context=ssl.create_default_context(cafile=\"/etc/sglang/tls-ca.pem\")).status)'")
    assert out == "200"
