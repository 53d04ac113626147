"""sglang_server with the native runtime (molecule/lab passes sglang_server_runtime=native): no Docker."""

from __future__ import annotations

import pytest

RANK = {"lab-spark-01": 0, "lab-spark-02": 1}
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
