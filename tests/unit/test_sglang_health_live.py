# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sglang_health against the lab's SGLang stand-in, over real sockets on 127.0.0.1.

The stand-in (tests/lab/sglang_standin, ``python3 -m sglang.launch_server``) runs in subprocesses
with free ports. Covered: the module through ``ansible localhost -m dgxspark.sglang.sglang_health``
(one CLI run) and through its ``main()`` (wrong API key, TLS with a CA file and without);
the stand-in's argv parsing (unknown flag, bad choice, --config file), its API key (Bearer only,
no environment variable) and /v1/models (id and root are the served name); and a two-rank group
(rank 0 answers 503 until rank 1 joined over the dist-init address, rank 1 serves only a dummy
/health, rank 0 exits 1 when rank 1 leaves).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.dgxspark.sglang.plugins.module_utils import _sglang_health as health_utils
from ansible_collections.dgxspark.sglang.plugins.modules import sglang_health
from ansible_collections.dgxspark.sglang.tests.unit.standin import STANDIN, StandIn, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
KEY = "lab-key-0123"


def http_status(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def run_main(capsys, args):
    """Run the module's main() in-process; return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            sglang_health.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def rank0(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rank0")
    port = free_port()
    server = StandIn(tmp, "rank0", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
                     "--enable-metrics", "--api-key", KEY, "--tp-size", "1", "--nnodes", "1", "--node-rank", "0")
    server.wait_listening(port)
    yield "http://127.0.0.1:%d" % port, server
    assert server.stop() == 0, server.output()


def test_cli_run_is_healthy_with_text_ttft_and_metrics(rank0):
    url, server = rank0
    args = {"url": url, "api_key": KEY, "model": MODEL, "timeout": 10, "max_tokens": 6}
    proc = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", "ansible_python_interpreter=%s" % sys.executable,
         "-m", "dgxspark.sglang.sglang_health", "-a", json.dumps(args)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    match = re.search(r"localhost \| (\w+)!? => (\{.*\})\s*$", proc.stdout, re.S)
    assert match, proc.stdout + proc.stderr
    result = json.loads(match.group(2))
    assert match.group(1) == "SUCCESS", result
    assert result["healthy"] is True and result["health_status"] == 200 and result["changed"] is False
    assert result["models"] == [MODEL] and result["model_ok"] is True
    assert result["completion_text"] == "Hello from the lab stand-in (rank"  # max_tokens=6 words
    assert result["completion_tokens"] == 6
    assert 0 < result["ttft_s"] <= result["total_s"]
    metrics = result["metrics"]
    assert metrics["sglang:num_requests_total"] >= 1 and metrics["sglang:generation_tokens_total"] >= 6
    assert metrics["sglang:num_running_reqs"] == 0 and metrics["sglang:time_to_first_token_seconds_count"] >= 1
    assert KEY not in proc.stdout  # no_log
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in server.output()


def test_main_wrong_api_key_fails_with_the_message(rank0, capsys):
    url, _server = rank0
    result = run_main(capsys, {"url": url, "api_key": "wrong", "timeout": 5})
    assert result["failed"] is True and result["healthy"] is True and result["attempts"] == 1
    assert result["msg"] == ("API key rejected by %s/v1/models (HTTP 401, the key sent was refused): "
                             "set sglang_server_api_key / api_key" % url)


def test_main_plain_completion_without_key_on_open_paths(rank0, capsys):
    url, _server = rank0
    # /health* and /metrics need no key (SGLang's auth exemptions); /v1/models does.
    assert http_status(url + "/health") == 200 and http_status(url + "/metrics") == 200
    assert http_status(url + "/v1/models") == 401 and http_status(url + "/nowhere") == 401
    assert http_status(url + "/v1/models", {"Authorization": "Bearer " + KEY}) == 200
    result = run_main(capsys, {"url": url + "/", "api_key": KEY, "stream": False, "check_metrics": False})
    assert result["completion_text"].startswith("Hello from the lab stand-in") and result["ttft_s"] is None
    assert result["metrics"] == {} and result["served_model"] == MODEL


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_main_tls_with_ca_path_and_untrusted(tmp_path, capsys):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = free_port()
    server = StandIn(tmp_path, "tls", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
                     "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    try:
        server.wait_listening(port)
        url = "https://127.0.0.1:%d" % port
        result = run_main(capsys, {"url": url, "ca_path": str(cert), "timeout": 5})
        assert result["healthy"] is True and result["completion_text"] and result["metrics_available"] is False
        result = run_main(capsys, {"url": url, "timeout": 30})
        assert result["failed"] is True and result["attempts"] == 1  # not retried for 30 s
        assert "TLS certificate of %s/health not accepted" % url in result["msg"] and "ca_path" in result["msg"]
    finally:
        assert server.stop() == 0, server.output()


def test_standin_rejects_flags_like_sglang(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(STANDIN))
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", MODEL]
    bad = subprocess.run(cmd + ["--schedule-heuristic", "lpm"], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("launch_server.py: error: unrecognized arguments: --schedule-heuristic lpm")
    bad = subprocess.run(cmd + ["--kv-cache-dtype", "fp8"], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "argument --kv-cache-dtype: invalid choice: 'fp8'" in bad.stderr
    # --config FILE.yaml is merged like SGLang's ConfigArgumentMerger: a bad key in it fails the same way.
    config = tmp_path / "server.yaml"
    config.write_text("api-key: from-file\nenable-metrics: true\nmax-num-reqs: 8\n")
    bad = subprocess.run(cmd + ["--config", str(config)], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --max-num-reqs 8" in bad.stderr


def test_standin_reads_api_key_from_config_file(tmp_path):
    config = tmp_path / "server.yaml"
    config.write_text("# written by the sglang_server role, mode 0600\napi-key: 'from-file'\nenable-metrics: true\n")
    port = free_port()
    server = StandIn(tmp_path, "config", "--model-path", MODEL, "--port", str(port), "--config", str(config))
    try:
        server.wait_listening(port)
        url = "http://127.0.0.1:%d" % port
        assert http_status(url + "/v1/models") == 401
        assert http_status(url + "/v1/models", {"Authorization": "Bearer from-file"}) == 200
        assert http_status(url + "/metrics") == 200
    finally:
        assert server.stop() == 0, server.output()


def http_json(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
        return json.loads(resp.read().decode("utf-8"))


def test_standin_accepts_only_a_bearer_key(rank0):
    # sglang srt/utils/auth.py: add_api_key_middleware passes only the Authorization header to
    # decide_request_auth, which wants "Bearer <key>"; x-api-key is never read.
    url, _server = rank0
    assert http_status(url + "/v1/models", {"x-api-key": KEY}) == 401
    assert http_status(url + "/v1/models", {"Authorization": KEY}) == 401
    assert http_status(url + "/v1/models", {"Authorization": "bearer " + KEY}) == 200


def test_standin_ignores_sglang_api_key_in_the_environment(tmp_path):
    # SGLang 0.5.23 takes the key from --api-key (or the --config file) only: with SGLANG_API_KEY
    # set and no flag, the server runs without a key.
    port = free_port()
    server = StandIn(tmp_path, "envkey", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
                     env={"SGLANG_API_KEY": "from-env"})
    try:
        server.wait_listening(port)
        url = "http://127.0.0.1:%d" % port
        assert wait_status(url + "/health", 200) == 200, server.output()
        assert http_status(url + "/v1/models") == 200
        assert http_status(url + "/v1/models", {"Authorization": "Bearer from-env"}) == 200
    finally:
        assert server.stop() == 0, server.output()


def test_standin_models_and_health_with_served_model_name(tmp_path, capsys):
    # sglang srt/entrypoints/http_server.py available_models: ModelCard(id=served_model_name,
    # root=served_model_name); the model path is not reported.
    port = free_port()
    server = StandIn(tmp_path, "served", "--model-path", MODEL, "--served-model-name", "qwen-small",
                     "--host", "127.0.0.1", "--port", str(port))
    try:
        server.wait_listening(port)
        url = "http://127.0.0.1:%d" % port
        assert wait_status(url + "/health", 200) == 200, server.output()
        entries = http_json(url + "/v1/models")["data"]
        assert [(e["id"], e["root"], e["parent"], e["owned_by"]) for e in entries] == [
            ("qwen-small", "qwen-small", None, "sglang")]
        result = run_main(capsys, {"url": url, "model": "qwen-small", "timeout": 5, "check_metrics": False})
        assert result.get("failed") is not True and result["model_ok"] is True
        assert result["served_model"] == "qwen-small" and result["completion_text"]
        result = run_main(capsys, {"url": url, "model": MODEL, "timeout": 5, "check_metrics": False})
        assert result["failed"] is True and result["model_ok"] is False
        assert result["msg"] == ("model %r is not served by %s; /v1/models lists ['qwen-small']: "
                                 "check sglang_server_model / model" % (MODEL, url))
    finally:
        assert server.stop() == 0, server.output()


def test_standin_models_without_served_model_name_reports_the_path(rank0):
    url, _server = rank0
    entries = http_json(url + "/v1/models", {"Authorization": "Bearer " + KEY})["data"]
    assert [(e["id"], e["root"]) for e in entries] == [(MODEL, MODEL)]


def wait_status(url, expected, timeout=5.0):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status = http_status(url)
        except OSError:
            status = None
        if status == expected:
            return status
        time.sleep(0.05)
    return status


def test_two_ranks_rank0_healthy_only_after_rank1_joined(tmp_path):
    dist, port0, port1 = free_port(), free_port(), free_port()
    common = ["--model-path", MODEL, "--host", "127.0.0.1", "--nnodes", "2", "--tp-size", "2",
              "--dist-init-addr", "127.0.0.1:%d" % dist]
    rank0 = StandIn(tmp_path, "r0", *(common + ["--node-rank", "0", "--port", str(port0)]))
    rank1 = None
    try:
        rank0.wait_listening(port0)
        rank0.wait_listening(dist)  # rank 0 owns the dist-init address
        url0, url1 = "http://127.0.0.1:%d" % port0, "http://127.0.0.1:%d" % port1
        assert http_status(url0 + "/health") == 503
        assert http_status(url0 + "/health_generate") == 503
        rank1 = StandIn(tmp_path, "r1", *(common + ["--node-rank", "1", "--port", str(port1)]))
        assert wait_status(url0 + "/health", 200) == 200, rank0.output() + rank1.output()
        assert wait_status(url1 + "/health", 200) == 200, rank1.output()
        # rank 1 is a dummy: /health and /health_generate only, nothing else
        assert http_status(url1 + "/health_generate") == 200 and http_status(url1 + "/v1/models") == 404
        with pytest.raises(health_utils.HealthCheckError, match="rank >= 1"):
            health_utils.HealthCheck(health_utils.UrllibTransport(5), url=url1, timeout=2).run()
        assert "rank 1 joined from 127.0.0.1" in rank0.output()
        # rank 1 leaves: the group is broken and rank 0 exits non-zero (systemd restarts it)
        assert rank1.stop() == 0
        rank0.proc.wait(5)
        assert rank0.proc.returncode == 1, rank0.output()
        assert "rank 1 left the group" in rank0.output()
    finally:
        if rank1 is not None:
            rank1.stop()
        rank0.stop()


def load_standin_module():
    spec = importlib.util.spec_from_file_location("standin_launch_server", str(STANDIN / "sglang" / "launch_server.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_helpers_match_sglang():
    standin = load_standin_module()
    # prometheus_client's number format, as in SGLang's published /metrics sample ("8.128902e+06")
    assert standin.go_float(8128902.0) == "8.128902e+06" and standin.go_float(0.28) == "0.28"
    assert standin.go_float(float("inf")) == "+Inf" and standin.go_float(3) == "3.0"
    # auth exemptions of sglang srt/utils/auth.py decide_request_auth
    allowed = standin.auth_allowed
    assert allowed("GET", "/health_generate", {}, "k") and allowed("GET", "/metrics", {}, "k")
    assert allowed("OPTIONS", "/v1/models", {}, "k") and allowed("GET", "/v1/models", {}, None)
    assert not allowed("GET", "/v1/models", {"Authorization": "Bearer x"}, "k")
    assert allowed("GET", "/v1/models", {"Authorization": "bearer k"}, "k")
    # only "Authorization: Bearer <key>" counts: add_api_key_middleware reads no other header
    assert not allowed("POST", "/generate", {"x-api-key": "k"}, "k")
    assert not allowed("GET", "/v1/models", {"Authorization": "k"}, "k")
    assert not allowed("GET", "/v1/models", {"Authorization": "Basic k"}, "k")
    # every metric the module reports is rendered by the stand-in and parses with the module's parser
    metrics = standin.Metrics("m", 1, 1000)
    metrics.start(10)
    metrics.finish(10, 4, 0.05, 0.2, [0.05, 0.05, 0.05])
    summary = health_utils.summarize_metrics(metrics.render())
    expected = set(health_utils.KEY_GAUGES + health_utils.KEY_COUNTERS)
    expected |= {family + suffix for family in health_utils.KEY_HISTOGRAMS for suffix in ("_count", "_sum")}
    assert set(summary) == expected
    assert summary["sglang:generation_tokens_total"] == 4 and summary["sglang:inter_token_latency_seconds_count"] == 3
