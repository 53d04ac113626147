# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sglang_health against the lab's SGLang stand-in, over real sockets on 127.0.0.1.

The stand-in (tests/lab/sglang_standin, ``python3 -m sglang.launch_server``) runs in subprocesses
with free ports. Covered: the module through ``ansible localhost -m dgxspark.sglang.sglang_health``
(one CLI run) and through its ``main()`` (wrong API key, TLS with a CA file and without);
the stand-in's argv parsing (SGLang's own parser: unknown flag, bad choice, --config file), its API
key (Bearer only, no environment variable) and /v1/models (id and root are the served name); its
start-up (port closed while loading, 503 while warming up, /health a one-token generation) and a
two-rank group (SGLang's message queue on the address of SGLANG_HOST_IP, rank 1's dummy server,
SIGTERM ignored on rank 1 until rank 0's shutdown, a killed rank ending the other at once, a forward pass that hangs
ended by the watchdog). Each expectation cites the SGLang 0.5.23 source it comes from.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import socket
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
    # SGLang's parser (prepare_server_args: argparse.ArgumentParser(prog="sglang serve"))
    assert bad.stderr.strip().endswith("sglang serve: error: unrecognized arguments: --schedule-heuristic lpm")
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


def test_standin_server_info_is_sglangs_resolved_server_args(rank0):
    # srt/entrypoints/http_server.py server_info: build_server_info (ServerArgs.resolved_dict() and launch_command), the
    # scheduler's init info, internal_states per DP rank, version; behind the API key. What SGLang's router (SMG)
    # reads when a worker registers; /get_server_info is its deprecated alias.
    url, _server = rank0
    assert http_status(url + "/server_info") == 401
    info = http_json(url + "/server_info", {"Authorization": "Bearer " + KEY})
    assert (info["model_path"], info["served_model_name"], info["tokenizer_path"]) == (MODEL, MODEL, MODEL)
    assert (info["dp_size"], info["tp_size"], info["nnodes"], info["port"]) == (1, 1, 1, int(url.rsplit(":", 1)[1]))
    assert info["api_key"] == KEY and info["version"] == "0.5.23" and info["frontend"] == "python"
    assert info["status"] == "ready" and info["max_total_num_tokens"] > 0 and info["launch_command"]
    assert len(info["internal_states"]) == 1 and info["internal_states"][0]["world_size"] == 1
    assert set(info["startup_time"]) >= {"load_weight", "scheduler_e2e"}
    assert http_json(url + "/get_server_info", {"Authorization": "Bearer " + KEY})["model_path"] == MODEL


def wait_status(url, expected, timeout=10.0):
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


def port_open(port):
    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def two_ranks(tmp_path, env=None, extra=()):
    dist, port0, port1 = free_port(), free_port(), free_port()
    common = ["--model-path", MODEL, "--host", "127.0.0.1", "--nnodes", "2", "--tp-size", "2", "--enable-metrics",
              "--dist-init-addr", "127.0.0.1:%d" % dist] + list(extra)
    env = dict({"SGLANG_HOST_IP": "127.0.0.1"}, **(env or {}))
    rank0 = StandIn(tmp_path, "r0", *(common + ["--node-rank", "0", "--port", str(port0)]), env=env)
    rank0.wait_listening(dist)  # rank 0 owns the dist-init address
    return rank0, dist, port0, port1, common, env


def test_two_ranks_form_on_the_advertised_address_and_stop_from_rank0(tmp_path):
    rank0, _dist, port0, port1, common, env = two_ranks(tmp_path, env={"SGLANG_HOST_IP": "127.0.0.2"})
    rank1 = None
    try:
        # http_server.py: the HTTP port opens only after the scheduler is ready (group formed, model loaded)
        assert not port_open(port0)
        rank1 = StandIn(tmp_path, "r1", *(common + ["--node-rank", "1", "--port", str(port1)]), env=env)
        rank0.wait_listening(port0)
        url0, url1 = "http://127.0.0.1:%d" % port0, "http://127.0.0.1:%d" % port1
        assert wait_status(url0 + "/health", 200, timeout=30) == 200, rank0.output() + rank1.output()
        # shm_broadcast.MessageQueue binds on get_local_ip_auto(): SGLANG_HOST_IP first (srt/utils/network.py)
        assert re.search(r"message queue \(shm_broadcast\) bound on tcp://127\.0\.0\.2:\d+", rank0.output())
        # health_generate: a one-token generation, checked after a first sleep of one second
        started = time.monotonic()
        assert http_status(url0 + "/health") == 200 and time.monotonic() - started >= 0.9
        # launch_dummy_health_check_server (srt/utils/common.py): /ping, /health, /health_generate, /metrics
        rank1.wait_listening(port1)
        assert [http_status(url1 + p) for p in ("/health", "/health_generate", "/ping", "/metrics")] == [200] * 4
        assert http_status(url1 + "/v1/models") == 404
        with pytest.raises(health_utils.HealthCheckError, match="rank >= 1"):
            health_utils.HealthCheck(health_utils.UrllibTransport(5), url=url1, timeout=2).run()
        # engine.py: SIGTERM on node_rank >= 1 is logged and ignored; rank 0's ShutdownReq stops it
        rank1.proc.send_signal(signal.SIGTERM)
        assert wait_exit(rank1.proc, 2) is None, rank1.output()
        assert "SIGTERM received on node_rank 1; waiting for the rank-0 ShutdownReq broadcast" in rank1.output()
        assert rank0.stop() == 0, rank0.output()
        assert wait_exit(rank1.proc, 10) == 0, rank1.output()
    finally:
        for rank in (rank1, rank0):
            if rank is not None and rank.proc.poll() is None:
                rank.proc.kill()


@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_rank_ends_the_other_at_once_as_sglangs_scheduler(tmp_path, killed):
    # request_receiver.py: every scheduler loop broadcasts over the gloo CPU group; a peer that died closed its
    # sockets: "Connection closed by peer", scheduler.py sends SIGQUIT, kill_process_tree kills the parent (SIGKILL)
    rank0, _dist, port0, port1, common, env = two_ranks(tmp_path, extra=["--watchdog-timeout", "300"])
    rank1 = StandIn(tmp_path, "r1", *(common + ["--node-rank", "1", "--port", str(port1)]), env=env)
    ranks = {0: rank0, 1: rank1}
    try:
        rank0.wait_listening(port0)
        assert wait_status("http://127.0.0.1:%d/health" % port0, 200, timeout=30) == 200, rank0.output()
        ranks[killed].proc.kill()
        ranks[killed].proc.wait()
        other = ranks[1 - killed]
        assert wait_exit(other.proc, 10) == -signal.SIGKILL, other.output()  # long before the watchdog's 300 s
        log = other.output()
        assert "Scheduler hit an exception" in log
        assert re.search(r"RuntimeError: \[\S+pair\.cc:\d+\] Connection closed by peer \[127\.0\.0\.1\]:\d+", log), log
        assert "Received sigquit from a child process. It usually means the child failed." in log
    finally:
        for rank in (rank1, rank0):
            if rank.proc.poll() is None:
                rank.proc.kill()


def test_a_silent_peer_hangs_the_forward_pass_until_the_watchdog_kills_the_rank(tmp_path):
    # watchdog.py: a forward pass without progress for --watchdog-timeout: the error, 5 s, then SIGQUIT and the tree
    # dies. A rank whose peer went silent (no FIN: a cut link) reaches it when its next forward pass hangs.
    script = (
        "import sys, threading, time\n"
        "import sglang_startup\n"
        "from sglang import launch_server as m\n"
        "args = sglang_startup.startup_checks(sys.argv[1:])\n"
        "app = m.Server(args, None)\n"
        "assert m.peer_went_silent(TimeoutError()) and not m.peer_went_silent(None)\n"
        "assert not m.peer_went_silent(ConnectionResetError())\n"
        "threading.Thread(target=app.forward, daemon=True).start()  # group_ok not set: a rank is missing\n"
        "m.watchdog(app, float(args.watchdog_timeout))\n")
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-c", script, "--model-path", MODEL, "--watchdog-timeout", "1"],
                         env=dict(os.environ, PYTHONPATH=str(STANDIN)), capture_output=True, text=True, timeout=60,
                         check=False, cwd=str(tmp_path))
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert "Scheduler watchdog timeout (self.watchdog_timeout=1.0, self.soft=False)" in res.stdout
    assert time.monotonic() - started >= 5  # WATCHDOG_GRACE_S: "so that the parent process can print the error"


def test_port_closed_while_loading_then_503_while_warming_up(tmp_path):
    port = free_port()
    server = StandIn(tmp_path, "warm", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
                     env={"SGLANG_STANDIN_LOAD_SECONDS": "2", "SGLANG_STANDIN_WARMUP_SECONDS": "3"})
    try:
        deadline = time.monotonic() + 60
        while "loading" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open(port), server.output()
        server.wait_listening(port)
        url = "http://127.0.0.1:%d" % port
        assert http_status(url + "/health") == 503 and http_status(url + "/ping") == 503
        assert wait_status(url + "/health", 200, timeout=10) == 200, server.output()
        assert http_status(url + "/ping") == 200
    finally:
        assert server.stop() == 0, server.output()


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
    metrics = standin.Metrics("m", 1000)
    metrics.start(10)
    metrics.finish(10, 4, 0.05, 0.2, [0.05, 0.05, 0.05])
    summary = health_utils.summarize_metrics(metrics.render())
    expected = set(health_utils.KEY_GAUGES + health_utils.KEY_COUNTERS)
    expected |= {family + suffix for family in health_utils.KEY_HISTOGRAMS for suffix in ("_count", "_sum")}
    assert set(summary) == expected
    assert summary["sglang:generation_tokens_total"] == 4 and summary["sglang:inter_token_latency_seconds_count"] == 3


@pytest.mark.parametrize("staged, revision", [(False, None), (True, "0" * 40)])
def test_a_rank_without_the_staged_model_dies_as_sglangs_scheduler(tmp_path, staged, revision):
    """Offline (HF_HUB_OFFLINE=1, as the units run), a model or commit that is not in the node's cache ends the rank."""
    port = free_port()
    extra = ["--revision", revision] if revision else []
    server = StandIn(tmp_path, "unstaged", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port), *extra,
                     staged=staged)
    try:
        assert server.proc.wait(60) == 1
    finally:
        server.stop()
    out = server.output()
    assert "Scheduler hit an exception while loading %s (revision %s)" % (MODEL, revision) in out, out
    assert "LocalEntryNotFoundError" in out or "EntryNotFound" in out, out
