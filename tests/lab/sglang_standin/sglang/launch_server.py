# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ``python3 -m sglang.launch_server`` on the lab's test hosts (no GPU, no model).

It runs SGLang 0.5.23's own code wherever that code runs without a GPU, and follows SGLang's source
(cited per item, paths under ``sglang/`` of the wheel) where it cannot:

* **argv**: ``prepare_server_args`` of ``srt/server_args.py``, what ``launch_server`` runs first: SGLang's
  parser (``ServerArgs.add_cli_args``), ``--config FILE.yaml`` merged by its ``ConfigArgumentMerger``,
  ``logging.basicConfig`` with ``--log-level``; then the start-up hooks that need no GPU
  (``sglang_startup.startup_checks``, shared with the unit tests). An unknown flag exits 2 with
  argparse's message, a bad ``--config`` file raises, as SGLang does.
* **the address a node advertises**: ``get_local_ip_auto`` of ``srt/utils/network.py`` (``SGLANG_HOST_IP``
  or ``HOST_IP``, else the NIC in ``SGLANG_LOCAL_IP_NIC``, else the source address of the route to
  8.8.8.8), through SGLang's own ``MessageQueue`` of
  ``srt/distributed/device_communicators/shm_broadcast.py``: rank 0 is the writer and binds its ZMQ
  socket on that address; ranks >= 1 connect to it; ``wait_until_ready`` blocks until every reader
  subscribed. On a node without ``SGLANG_HOST_IP`` the writer binds the management address, the lab's
  management network lets only SSH through between machines, and the group hangs there, as on Sparks.
* **rendezvous**: rank 0 listens on ``--dist-init-addr`` (standing in for torch.distributed's store)
  and hands the queue's handle to ranks 1..N-1 once all have connected and said ``rank R of N``.
* **the model**: every rank finds the model's files as SGLang's loader does, with huggingface_hub's
  ``snapshot_download(model, revision=--revision)``, which ``HF_HUB_OFFLINE=1`` keeps to the local
  cache, and reads its ``config.json``; a rank that cannot find them dies, as SGLang's scheduler does.
* **start-up** (``srt/entrypoints/http_server.py``): rank 0 opens its HTTP port only after the
  group formed and the model loaded (``SGLANG_STANDIN_LOAD_SECONDS``); then it warms up
  (``SGLANG_STANDIN_WARMUP_SECONDS``) with ``ServerStatus.Starting``: ``/health`` and
  ``/health_generate`` answer 503; then ``Up``. ``health_generate`` runs a one-token generation and
  answers 200 only once the scheduler answered: never sooner than a second (its loop sleeps 1 s
  first), 503 after ``SGLANG_HEALTH_CHECK_TIMEOUT`` (SGLang's variable, default 20 s).
  ``/ping`` is 200 while healthy, else 503.
* **ranks >= 1** (``_launch_subprocesses`` of ``srt/entrypoints/engine.py``): after their own model
  load, ``launch_dummy_health_check_server`` (``srt/utils/common.py``): ``/ping``, ``/health``,
  ``/health_generate`` always 200, ``/metrics`` with ``--enable-metrics``. From then on SIGTERM is
  logged and ignored: a rank >= 1 exits 0 when rank 0's shutdown broadcast reaches it (before, SIGTERM
  ends it, as SGLang installs that handler only once its schedulers are ready).
* **losing a rank**: how the loss shows up decides what happens, as in SGLang. Every scheduler loop, even idle,
  broadcasts the new requests from tp rank 0 to every rank over the tp group's gloo CPU group
  (``_broadcast_reqs_across_ranks`` of ``srt/managers/scheduler_components/request_receiver.py``, ``broadcast_pyobj``
  of ``srt/utils/common.py``). A peer whose process died (killed, crashed, its machine rebooting) closed its
  sockets: the next broadcast on every other rank raises gloo's ``Connection closed by peer``, the scheduler logs
  ``Scheduler hit an exception`` and sends SIGQUIT to its parent (``run_scheduler_process`` of
  ``srt/managers/scheduler.py``), whose handler kills the process tree, itself included (``kill_process_tree``):
  the rank ends by SIGKILL at once, which systemd restarts. A peer that went silent (its link cut, its power off:
  the stand-in's TCP keepalive of a few seconds stands in for TCP's own timeout) closes nothing: rank 0's next
  forward pass (a request, or the one-token generation of ``/health``) hangs as NCCL would; ``/health`` turns 503
  after the health timeout; the scheduler's watchdog (``srt/utils/watchdog.py``: ``--watchdog-timeout``, default
  300 s) then logs ``watchdog timeout``, waits 5 s and the process tree is killed (SIGKILL). A rank >= 1 whose
  rank 0 went silent blocks in the broadcast (gloo's CPU group waits 120 minutes, ``gloo_timeout`` of
  ``srt/distributed/parallel_state.py``). SIGTERM on rank 0: graceful, the shutdown broadcast goes to every rank,
  which exits 0.
* rank 0 HTTP(S): ``/health``, ``/health_generate``, ``/ping``, ``/v1/models``, ``/v1/chat/completions``
  (plain and ``stream`` server-sent events), ``/generate`` (SGLang's native shape), ``/model_info``,
  ``/server_info`` (and the deprecated ``/get_server_info``; what SGLang's router, SMG, reads when a worker
  registers) and, with ``--enable-metrics``, ``/metrics`` in Prometheus text with SGLang's metric names and
  labels. TLS with ``--ssl-certfile`` / ``--ssl-keyfile``.
* API key (``--api-key``, or ``api-key:`` in the ``--config`` file, nothing else): enforced like
  SGLang's ``decide_request_auth`` in ``srt/utils/auth.py`` (applied by ``add_api_key_middleware``,
  which reads only the ``Authorization`` header): OPTIONS and paths starting with ``/health``,
  ``/ready`` or ``/metrics`` are open; everything else needs ``Authorization: Bearer KEY`` (scheme
  case-insensitive), else 401 ``{"error": "Unauthorized"}`` (checked before routing). An
  ``x-api-key`` header is ignored, and no environment variable carries the key, as in SGLang.
* ``/v1/models``: SGLang's ``available_models`` lists one ``ModelCard`` whose ``id`` and ``root`` are
  both the served model name, which is ``--served-model-name`` or, when that is not given,
  ``--model-path`` (``handle_missing_default_values`` in ``srt/arg_groups/serving_hook.py``).

Environment knobs (lab only, never flags: the unit's flags must stay those of a real Spark):
``SGLANG_STANDIN_LOAD_SECONDS`` (model load after the group formed, default 0),
``SGLANG_STANDIN_WARMUP_SECONDS`` (warm-up with the port open, default 1),
``SGLANG_STANDIN_TOKEN_DELAY`` (seconds per generated token, default 0.005).

Runs with the Python that has SGLang's wheel (the lab's torch venv, or the test venv): this package
is first on PYTHONPATH and lends the rest of ``sglang`` from the wheel (``sglang/__init__.py``). One
line per HTTP request on stdout.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import math
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
# SGLang's module loggers, made at import as SGLang's modules make them, before configure_logger runs: a logging config
# (SGLANG_LOGGING_CONFIG_PATH) without "disable_existing_loggers": false silences them, as it silences SGLang's.
ENGINE_LOGGER = logging.getLogger("sglang.srt.entrypoints.engine")
HTTP_LOGGER = logging.getLogger("sglang.srt.entrypoints.http_server")
# SGLang's own variable (srt/entrypoints/http_server.py: HEALTH_CHECK_TIMEOUT).
HEALTH_CHECK_TIMEOUT = int(os.getenv("SGLANG_HEALTH_CHECK_TIMEOUT", "20"))
WATCHDOG_GRACE_S = 5  # srt/utils/watchdog.py: "Wait for some time so that the parent process can print the error."


def log(level, msg):
    with LOG_LOCK:
        sys.stdout.write("[%s] %s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), level, msg))
        sys.stdout.flush()


def split_host_port(addr):
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", addr) or re.match(r"^([^:]+):(\d+)$", addr)
    if not match:
        raise ValueError("--dist-init-addr %r is not HOST:PORT" % addr)
    return match.group(1), int(match.group(2))


# --------------------------------------------------------------------------------------------
# Metrics (names, buckets, help texts and labels of srt/observability/metrics_collector.py)
# --------------------------------------------------------------------------------------------

def go_float(value):
    """Number formatting of prometheus_client (Go's): 8128902.0 -> 8.128902e+06, inf -> +Inf."""
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6 and "e" not in text:
        mantissa = ("%s.%s%s" % (text[0], text[1:dot], text[dot + 1:])).rstrip("0").rstrip(".")
        return "%se+%02d" % (mantissa, dot - 1)
    return text


TTFT_BUCKETS = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400]
E2E_BUCKETS = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400]
ITL_BUCKETS = [0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
               0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000]


class Histogram(object):
    def __init__(self, buckets):
        self.bounds = [float(b) for b in buckets] + [float("inf")]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.sum += value
        self.count += 1
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1


def _labels(labels):
    return "{%s}" % ",".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"'))
                             for k, v in sorted(labels.items()))


def scheduler_labels(model_name, tp_rank, pp_rank, priority=False):
    """The labels of a scheduler's metrics (``SchedulerMetricsCollector``): model, engine type, ranks; with priority
    scheduling the totals carry ``priority=""``."""
    labels = {"model_name": model_name, "engine_type": "unified", "tp_rank": str(tp_rank), "pp_rank": str(pp_rank),
              "moe_ep_rank": "0"}
    if priority:
        labels["priority"] = ""
    return labels


def node_ranks(args):
    """(tp_rank, pp_rank) of the scheduler on this node, one GPU per node: global rank = node rank."""
    return args.node_rank % args.tp_size, args.node_rank // args.tp_size


class Metrics(object):
    """Rank 0's registry: the tokenizer's counters and histograms (labels ``tokenizer_metric_labels``:
    model_name, engine_type) and the scheduler's gauges of tp_rank 0, pp_rank 0. A scheduler of another
    pipeline stage (tp_rank 0 on a node >= 1) exports its own gauges there: summing a gauge over every
    series counts the same requests once per stage."""

    def __init__(self, model_name, max_total_tokens, priority=False):
        self.lock = threading.Lock()
        self.model = model_name
        self.sched_labels = scheduler_labels(model_name, 0, 0, priority)
        # tokenizer_metric_labels: priority starts "" and each request fills in its own (the stand-in sends none)
        self.tok_labels = {"model_name": model_name, "engine_type": "unified"}
        if priority:
            self.tok_labels["priority"] = ""
        self.running = 0
        self.used_tokens = 0
        self.max_total_tokens = max_total_tokens
        self.gen_throughput = 0.0
        self.counters = {"prompt_tokens": 0, "generation_tokens": 0, "cached_tokens": 0, "num_requests": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)

    def start(self, prompt_tokens):
        with self.lock:
            self.running += 1
            self.used_tokens += prompt_tokens

    def finish(self, prompt_tokens, gen_tokens, ttft, e2e, itls):
        with self.lock:
            self.running -= 1
            self.used_tokens -= prompt_tokens
            self.counters["prompt_tokens"] += prompt_tokens
            self.counters["generation_tokens"] += gen_tokens
            self.counters["num_requests"] += 1
            self.ttft.observe(ttft)
            self.e2e.observe(e2e)
            for value in itls:
                self.itl.observe(value)
            decode = e2e - ttft
            self.gen_throughput = gen_tokens / decode if decode > 0 else 0.0

    def render(self, tokenizer=True):
        out = []
        with self.lock:
            gauges = [
                ("num_running_reqs", "The number of running requests.", self.running),
                ("num_used_tokens", "The number of used tokens.", self.used_tokens),
                ("token_usage", "The token usage.", float(self.used_tokens) / self.max_total_tokens),
                ("gen_throughput", "The generation throughput (token/s).", self.gen_throughput),
                ("num_queue_reqs", "The number of requests in the waiting queue.", 0),
                ("cache_hit_rate", "The prefix cache hit rate.", 0.0),
                ("max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.",
                 self.max_total_tokens),
            ]
            for name, doc, value in gauges:
                out += ["# HELP sglang:%s %s" % (name, doc), "# TYPE sglang:%s gauge" % name,
                        "sglang:%s%s %s" % (name, _labels(self.sched_labels), go_float(value))]
            if not tokenizer:
                return "\n".join(out) + "\n"
            counters = [
                ("prompt_tokens", "Number of prefill tokens processed."),
                ("generation_tokens", "Number of generation tokens processed."),
                ("cached_tokens", "Number of cached prompt tokens."),
                ("num_requests", "Number of requests processed."),
            ]
            for name, doc in counters:
                out += ["# HELP sglang:%s_total %s" % (name, doc), "# TYPE sglang:%s_total counter" % name,
                        "sglang:%s_total%s %s" % (name, _labels(self.tok_labels), go_float(self.counters[name]))]
            hists = [
                ("time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft),
                ("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl),
                ("e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", self.e2e),
            ]
            for name, doc, hist in hists:
                family = "sglang:" + name
                out += ["# HELP %s %s" % (family, doc), "# TYPE %s histogram" % family,
                        "%s_sum%s %s" % (family, _labels(self.tok_labels), go_float(hist.sum))]
                for bound, count in zip(hist.bounds, hist.counts):
                    labels = dict(self.tok_labels, le=go_float(bound))
                    out.append("%s_bucket%s %s" % (family, _labels(labels), go_float(count)))
                out.append("%s_count%s %s" % (family, _labels(self.tok_labels), go_float(hist.count)))
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Server state and generation
# --------------------------------------------------------------------------------------------

class Server(object):
    def __init__(self, args, api_key):
        self.args = args
        self.api_key = api_key
        self.model_path = args.model_path
        # SGLang's handle_missing_default_values (srt/arg_groups/serving_hook.py): served_model_name
        # defaults to model_path only when the flag is not given.
        self.model_id = args.model_path if args.served_model_name is None else args.served_model_name
        self.status = "Starting"  # ServerStatus of srt/managers/tokenizer_manager.py: Starting, Up, UnHealthy
        self.group_ok = threading.Event()  # every rank alive: a forward pass completes
        self.stop = threading.Event()
        self.exit_code = 0
        self.http = None
        self.token_delay = float(os.environ.get("SGLANG_STANDIN_TOKEN_DELAY", "0.005"))
        self.load_seconds = float(os.environ.get("SGLANG_STANDIN_LOAD_SECONDS", "0"))
        self.warmup_seconds = float(os.environ.get("SGLANG_STANDIN_WARMUP_SECONDS", "1"))
        self.metrics = Metrics(self.model_id, args.max_total_tokens or 1048576, args.enable_priority_scheduling)
        self.created = int(time.time())
        self.startup_time = None  # the scheduler's start-up timings, once the model is loaded
        self.started = time.monotonic()
        self.forward_lock = threading.Lock()
        self.hung_since = None  # when the first forward pass that cannot complete started

    def forward(self):
        """One forward pass: returns at once while every rank lives; hangs (until the watchdog) when one is gone."""
        if self.group_ok.is_set():
            return True
        with self.forward_lock:
            if self.hung_since is None:
                self.hung_since = time.monotonic()
        self.stop.wait()
        return False

    def rank_metrics(self):
        """/metrics of a rank >= 1: its scheduler's gauges where it logs stats (tp_rank 0 of a pipeline stage,
        ``is_stats_logging_rank`` in metrics_collector.py), else nothing of SGLang's."""
        tp_rank, pp_rank = node_ranks(self.args)
        if tp_rank != 0:
            return ""
        priority = self.args.enable_priority_scheduling
        rank = Metrics(self.model_id, self.args.max_total_tokens or 1048576, priority)
        rank.sched_labels = scheduler_labels(self.model_id, tp_rank, pp_rank, priority)
        return rank.render(tokenizer=False)

    def shutdown(self, code):
        if not self.stop.is_set():
            self.exit_code = code
            self.stop.set()

    def reply_tokens(self, max_tokens):
        text = "Hello from the lab stand-in (rank 0 of %d)" % self.args.nnodes
        words = text.split(" ")
        tokens = [words[0]] + [" " + w for w in words[1:]]
        if max_tokens is not None and max_tokens < len(tokens):
            return tokens[:max(int(max_tokens), 0)], "length"
        return tokens, "stop"

    def generate(self, prompt_tokens, max_tokens):
        """Yield (token, finish_reason or None) with SGLANG_STANDIN_TOKEN_DELAY between tokens; record metrics."""
        tokens, finish = self.reply_tokens(max_tokens)
        started = time.monotonic()
        self.metrics.start(prompt_tokens)
        ttft = None
        last = started
        itls = []
        try:
            for index, token in enumerate(tokens):
                time.sleep(self.token_delay)
                if not self.forward():
                    return
                now = time.monotonic()
                if ttft is None:
                    ttft = now - started
                else:
                    itls.append(now - last)
                last = now
                yield token, (finish if index == len(tokens) - 1 else None)
            if not tokens:
                yield "", finish
        finally:
            end = time.monotonic()
            self.metrics.finish(prompt_tokens, len(tokens), ttft if ttft is not None else end - started,
                                end - started, itls)


def context_tokens(value, default=4096):
    """--context-length is a human-readable int in SGLang (8192, 32k, 1M)."""
    if not value:
        return default
    match = re.match(r"^(\d+(?:\.\d+)?)\s*([kKmM]?)$", str(value).strip())
    if not match:
        return default
    return int(float(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()])


def count_prompt_tokens(messages):
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(len(str(part.get("text", "")).split()) for part in content if isinstance(part, dict))
    return words + 4 * len(messages)  # the chat template's role markers


def auth_allowed(method, path, headers, api_key):
    """SGLang's decide_request_auth (srt/utils/auth.py) for NORMAL endpoints."""
    if method == "OPTIONS" or not api_key:
        return True
    if path.startswith("/health") or path.startswith("/ready") or path.startswith("/metrics"):
        return True
    # Only the Authorization header counts (add_api_key_middleware reads nothing else).
    authorization = headers.get("Authorization")
    if not authorization:
        return False
    parts = authorization.split(" ", 1)
    return len(parts) == 2 and parts[0].lower() == "bearer" and hmac.compare_digest(parts[1], api_key)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    app = None  # Server, set on the subclass
    dummy = False
    raw_body = b""

    # -- plumbing --
    def log_request(self, code="-", size="-"):
        log("INFO:    ", '%s:%s - "%s" %s' % (self.client_address[0], self.client_address[1], self.requestline, code))

    def log_message(self, fmt, *args):  # errors from the base class
        log("WARNING:", fmt % args)

    def send_body(self, status, body, content_type="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def send_event(self, data):
        payload = ("data: %s\n\n" % (data if isinstance(data, str) else json.dumps(data))).encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_json(self):
        raw = self.raw_body
        try:
            body = json.loads(raw.decode("utf-8") or "null")
        except ValueError as err:
            self.send_body(400, {"object": "error", "message": "Invalid JSON body: %s" % err,
                                 "type": "BadRequestError", "param": None, "code": 400})
            return None
        if not isinstance(body, dict):
            self.send_body(400, {"object": "error", "message": "The request body must be a JSON object",
                                 "type": "BadRequestError", "param": None, "code": 400})
            return None
        return body

    def route(self, method):
        path = self.path.split("?", 1)[0]
        # read the whole request body first, so a refused request leaves the kept-alive connection clean
        length = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(length) if length > 0 else b""
        if self.dummy:  # launch_dummy_health_check_server (srt/utils/common.py)
            if method == "GET" and path in ("/health", "/health_generate", "/ping"):
                return self.send_body(200, b"", "text/plain")
            if method == "GET" and path == "/metrics" and self.app.args.enable_metrics:
                return self.send_body(200, self.app.rank_metrics(), "text/plain; version=0.0.4; charset=utf-8")
            return self.send_body(404, {"detail": "Not Found"})
        if not auth_allowed(method, path, self.headers, self.app.api_key):
            return self.send_body(401, {"error": "Unauthorized"})
        routes = {
            ("GET", "/health"): self.health, ("GET", "/health_generate"): self.health, ("GET", "/ping"): self.ping,
            ("GET", "/v1/models"): self.models, ("GET", "/model_info"): self.model_info,
            ("GET", "/server_info"): self.server_info, ("GET", "/get_server_info"): self.server_info,
            ("GET", "/metrics"): self.metrics, ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/generate"): self.native_generate,
        }
        handler = routes.get((method, path))
        if handler is None:
            known = {p for (_m, p) in routes}
            if path in known and not (path == "/metrics" and not self.app.args.enable_metrics):
                return self.send_body(405, {"detail": "Method Not Allowed"})
            return self.send_body(404, {"detail": "Not Found"})
        return handler()

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_OPTIONS(self):
        self.send_body(200, b"", "text/plain")

    # -- endpoints --
    def health(self):
        """health_generate of srt/entrypoints/http_server.py: 503 while Starting, else a one-token generation."""
        app = self.app
        if app.stop.is_set() or app.status == "Starting":
            return self.send_body(503, b"", "text/plain")
        tic = time.monotonic()
        answered = threading.Event()
        threading.Thread(target=lambda: app.forward() and answered.set(), daemon=True).start()
        while time.monotonic() < tic + HEALTH_CHECK_TIMEOUT:
            time.sleep(1)
            if answered.is_set():
                app.status = "Up"
                return self.send_body(200, b"", "text/plain")
        log("ERROR:   ", "Health check failed. Server couldn't get a response from detokenizer for last %d seconds."
            % HEALTH_CHECK_TIMEOUT)
        app.status = "UnHealthy"
        return self.send_body(503, b"", "text/plain")

    def ping(self):
        self.send_body(200 if self.app.status == "Up" else 503, b"", "text/plain")

    def not_ready(self):
        if self.app.status != "Starting":
            return False
        self.send_body(503, {"object": "error", "message": "The server is not ready yet (model loading)",
                             "type": "ServiceUnavailable", "param": None, "code": 503})
        return True

    def models(self):
        # SGLang's available_models (srt/entrypoints/http_server.py): ModelCard(id=served_model_name,
        # root=served_model_name, max_model_len=...), never the model path as root.
        self.send_body(200, {"object": "list", "data": [{
            "id": self.app.model_id, "object": "model", "created": self.app.created, "owned_by": "sglang",
            "root": self.app.model_id, "parent": None,
            "max_model_len": context_tokens(self.app.args.context_length)}]})

    def model_info(self):
        self.send_body(200, {"model_path": self.app.model_path,
                             "tokenizer_path": self.app.args.tokenizer_path or self.app.model_path,
                             "is_generation": True})

    def server_info(self):
        """server_info of srt/entrypoints/http_server.py (``/get_server_info`` is its deprecated alias): the resolved
        ServerArgs (``build_server_info`` of srt/utils/common.py: ``resolved_dict()``, the API key included, and
        ``launch_command``), the scheduler's init info (``get_init_info`` of srt/managers/scheduler.py), the KV-event
        publisher (None: not enabled), one internal state per DP rank, the version. What SGLang's router (SMG) reads
        when a worker registers (model, tokenizer path, dp_size)."""
        args = self.app.args
        info = dict(args.resolved_dict())
        info["launch_command"] = args.launch_command
        # handle_missing_default_values (srt/arg_groups/serving_hook.py), a hook the stand-in does not run
        info["tokenizer_path"] = args.tokenizer_path or args.model_path
        info["served_model_name"] = self.app.model_id
        total = self.app.metrics.max_total_tokens
        info.update({"status": "ready", "max_total_num_tokens": total,
                     "max_req_input_len": context_tokens(args.context_length) - 1,
                     "startup_time": self.app.startup_time, "kv_events": None})
        state = dict(info, world_size=args.dp_size * args.tp_size * args.pp_size,
                     effective_max_running_requests_per_dp=args.max_running_requests or 2048,
                     last_gen_throughput=0.0)
        from sglang.version import __version__  # pylint: disable=import-outside-toplevel  # the wheel's
        info.update({"internal_states": [state] * args.dp_size, "version": __version__, "frontend": "python"})
        self.send_body(200, info)

    def metrics(self):
        if not self.app.args.enable_metrics:
            return self.send_body(404, {"detail": "Not Found"})
        self.send_body(200, self.app.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def chat(self):
        body = self.read_json()
        if body is None or self.not_ready():
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.send_body(400, {"object": "error", "message": "messages: a non-empty list is required",
                                        "type": "BadRequestError", "param": "messages", "code": 400})
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        prompt_tokens = count_prompt_tokens(messages)
        rid = uuid.uuid4().hex
        model = body.get("model") or self.app.model_id
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self.start_stream()
            base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
            self.send_event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]))
            count = 0
            for token, finish in self.app.generate(prompt_tokens, max_tokens):
                count += 1 if token else 0
                self.send_event(dict(base, choices=[{"index": 0, "delta": {"content": token}, "logprobs": None,
                                                     "finish_reason": finish}]))
            if include_usage:
                self.send_event(dict(base, choices=[], usage={
                    "prompt_tokens": prompt_tokens, "completion_tokens": count,
                    "total_tokens": prompt_tokens + count}))
            self.send_event("[DONE]")
            return self.end_stream()
        parts = []
        finish = "stop"
        for token, reason in self.app.generate(prompt_tokens, max_tokens):
            parts.append(token)
            finish = reason or finish
        count = len([p for p in parts if p])
        self.send_body(200, {
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                      "total_tokens": prompt_tokens + count}})

    def native_generate(self):
        body = self.read_json()
        if body is None or self.not_ready():
            return
        text = body.get("text")
        if not isinstance(text, str):
            return self.send_body(400, {"object": "error", "message": "text: a string is required (stand-in)",
                                        "type": "BadRequestError", "param": "text", "code": 400})
        params = body.get("sampling_params") or {}
        max_new = params.get("max_new_tokens", 128)
        prompt_tokens = len(text.split())
        rid = body.get("rid") or uuid.uuid4().hex
        started = time.monotonic()

        def meta(out, finish):
            info = {"id": rid, "finish_reason": None, "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(out), "cached_tokens": 0,
                    "e2e_latency": round(time.monotonic() - started, 6)}
            if finish == "length":
                info["finish_reason"] = {"type": "length", "length": len(out)}
            elif finish == "stop":
                info["finish_reason"] = {"type": "stop", "matched": None}
            return info

        out = []
        if body.get("stream"):
            self.start_stream()
            for token, finish in self.app.generate(prompt_tokens, max_new):
                if token:
                    out.append(token)
                self.send_event({"text": "".join(out), "meta_info": meta(out, finish)})
            self.send_event("[DONE]")
            return self.end_stream()
        finish = None
        for token, reason in self.app.generate(prompt_tokens, max_new):
            if token:
                out.append(token)
            finish = reason or finish
        self.send_body(200, {"text": "".join(out), "meta_info": meta(out, finish)})


def make_http_server(app, host, port, dummy, tls):
    handler = type("BoundHandler", (Handler,), {"app": app, "dummy": dummy})
    server_class = ThreadingHTTPServer
    if ":" in host:
        server_class = type("V6Server", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    httpd = server_class((host, port), handler)
    httpd.daemon_threads = True
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls[0], tls[1])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    log("INFO:    ", "Uvicorn running on %s://%s:%d%s" % ("https" if tls else "http", host, port,
                                                          " (dummy health server)" if dummy else ""))
    return httpd


# --------------------------------------------------------------------------------------------
# The group: rendezvous on the dist-init address, then SGLang's own message queue
# --------------------------------------------------------------------------------------------

def _keepalive(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _readline(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return None
        data += chunk
    return data.decode("utf-8", "replace").strip()


def message_queue_writer(nnodes):
    """Rank 0: SGLang's MessageQueue with nnodes-1 remote readers; it binds on get_local_ip_auto()."""
    from sglang.srt.distributed.device_communicators.shm_broadcast import MessageQueue
    queue = MessageQueue(n_reader=nnodes - 1, n_local_reader=0)
    handle = queue.export_handle()
    log("INFO:    ", "message queue (shm_broadcast) bound on tcp://%s:%d: SGLang's get_local_ip_auto() chose %s"
        % (handle.connect_ip, handle.remote_subscribe_port, handle.connect_ip))
    return queue, {"connect_ip": handle.connect_ip, "remote_subscribe_port": handle.remote_subscribe_port}


def message_queue_reader(handle, rank):
    """Rank >= 1: SGLang's MessageQueue.create_from_handle, connecting to the writer's advertised address."""
    from sglang.srt.distributed.device_communicators.shm_broadcast import Handle, MessageQueue
    return MessageQueue.create_from_handle(Handle(connect_ip=handle["connect_ip"], local_reader_ranks=[],
                                                  remote_subscribe_port=handle["remote_subscribe_port"]), rank)


def peer_went_silent(error):
    """True when a peer's connection ended without the peer closing it (keepalive or retransmission timeout: its link
    is cut or its machine is off), False when the peer's kernel closed it (end of stream, reset: its process died)."""
    return isinstance(error, TimeoutError) or getattr(error, "errno", None) == errno.EHOSTUNREACH


def scheduler_lost_peer(app, peer):
    """SGLang's scheduler when the gloo broadcast of its loop meets a peer that closed its sockets: the exception is
    logged, the parent gets SIGQUIT and kills the process tree, itself included (SIGKILL)."""
    if app.stop.is_set():
        return
    log("ERROR:   ", "Scheduler hit an exception: Traceback (most recent call last):\n  File \"sglang/srt/managers/"
        "scheduler_components/request_receiver.py\", in _broadcast_reqs_across_ranks\nRuntimeError: [../third_party/"
        "gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [%s]:%d" % (peer[0], peer[1]))
    log("ERROR:   ", "Received sigquit from a child process. It usually means the child failed.")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # kill_process_tree(os.getpid()), parent included


class Rendezvous(object):
    """Rank 0: accept ranks 1..N-1; once all are in, hand them the message queue and wait until it is ready."""

    def __init__(self, app, host, port):
        self.app = app
        self.nnodes = app.args.nnodes
        self.peers = {}
        self.lock = threading.Lock()
        self.all_in = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as err:
            raise RuntimeError("cannot listen on --dist-init-addr %s:%d (%s): rank 0 must own that address"
                               % (host, port, err.strerror or err))
        self.sock.listen(16)
        log("INFO:    ", "rank 0 waiting for %d other rank(s) on %s:%d" % (self.nnodes - 1, host, port))
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.app.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve_peer, args=(conn, peer), daemon=True).start()

    def serve_peer(self, conn, peer):
        _keepalive(conn)
        conn.settimeout(10)
        try:
            line = _readline(conn)
        except OSError:
            line = None
        match = re.match(r"^rank (\d+) of (\d+)$", line or "")
        if not match:
            return self._reject(conn, "expected 'rank R of N', got %r" % line)
        rank, nnodes = int(match.group(1)), int(match.group(2))
        if nnodes != self.nnodes:
            return self._reject(conn, "world size mismatch: rank %d says nnodes=%d, rank 0 has nnodes=%d"
                                % (rank, nnodes, self.nnodes))
        if not 1 <= rank < self.nnodes:
            return self._reject(conn, "rank %d out of range 1..%d" % (rank, self.nnodes - 1))
        with self.lock:
            if self.all_in.is_set():
                return self._reject(conn, "rank %d joined after the group formed (restart all ranks)" % rank)
            old = self.peers.get(rank)
            if old is not None:
                old.close()
            self.peers[rank] = conn
            log("INFO:    ", "rank %d joined from %s:%d (%d/%d)" % (rank, peer[0], peer[1], len(self.peers) + 1,
                                                                    self.nnodes))
            if len(self.peers) == self.nnodes - 1:
                self.all_in.set()
        conn.settimeout(None)
        ended = None
        try:
            while conn.recv(1024):
                pass
        except OSError as err:
            ended = err
        if self.app.stop.is_set():
            return
        with self.lock:
            if self.peers.get(rank) is not conn:
                return
            del self.peers[rank]
            self.app.group_ok.clear()
        if peer_went_silent(ended):
            log("WARNING:", "stand-in: rank %d went silent (%s); the next forward pass hangs, as NCCL's collective "
                "would" % (rank, ended))
            return
        scheduler_lost_peer(self.app, peer)

    def _reject(self, conn, why):
        log("ERROR:   ", "rejected a rank: %s" % why)
        try:
            conn.sendall(("error %s\n" % why).encode("utf-8"))
        except OSError:
            pass
        conn.close()

    def broadcast(self, line):
        with self.lock:
            for conn in self.peers.values():
                try:
                    conn.sendall((line + "\n").encode("utf-8"))
                except OSError:
                    pass

    def form(self):
        """Wait for every rank, hand out the queue, wait until every reader subscribed (may hang, as SGLang's)."""
        while not self.all_in.wait(0.2):
            if self.app.stop.is_set():
                return False
        queue, handle = message_queue_writer(self.nnodes)
        self.broadcast("mq " + json.dumps(handle))
        queue.wait_until_ready()  # shm_broadcast: blocks until every remote reader subscribed
        self.app.queue = queue
        return True

    def close(self):
        self.broadcast("shutdown")  # rank 0's ShutdownReq broadcast: ranks >= 1 exit 0
        self.sock.close()
        with self.lock:
            for conn in self.peers.values():
                conn.close()


def load_model(app):
    """The model's files, found as SGLang finds them (its loader calls huggingface_hub's snapshot_download with
    --revision; HF_HUB_OFFLINE=1 keeps that to the local cache), then its config read; then the load time. False when
    the model cannot be found: SGLang's scheduler dies there, and so does this rank."""
    args = app.args
    path = args.model_path
    try:
        if not os.path.isdir(path):
            import huggingface_hub  # pylint: disable=import-outside-toplevel
            path = huggingface_hub.snapshot_download(args.model_path, revision=args.revision)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except Exception as err:  # pylint: disable=broad-except  # as the real scheduler: any failure ends it
        log("ERROR:   ", "Scheduler hit an exception while loading %s (revision %s): %s: %s"
            % (args.model_path, args.revision, type(err).__name__, err))
        app.shutdown(1)
        return False
    log("INFO:    ", "Load weight begin. model %s from %s (%s)" % (args.model_path, path, config.get("model_type")))
    return not app.stop.wait(app.load_seconds)


def rank0_start(app, rendezvous, tls):
    """Group, model load, then the HTTP port (closed until then), warm-up (503), Up."""
    args = app.args
    if rendezvous is not None and not rendezvous.form():
        return
    app.group_ok.set()
    log("INFO:    ", "all %d rank(s) in the group; loading %s" % (args.nnodes, app.model_path))
    if not load_model(app):
        return
    # The scheduler's start-up timings (srt/observability/startup_time.py), handed over before the HTTP server starts.
    from sglang.srt.observability.startup_time import build_scheduler_startup_time  # pylint: disable=import-outside-toplevel
    app.startup_time = build_scheduler_startup_time(
        target_load_weight=app.load_seconds, draft_load_weight=0.0, kv_cache_allocation=0.0,
        scheduler_e2e=round(time.monotonic() - app.started, 3), target_cuda_graph=None, draft_cuda_graph=None)
    try:
        app.http = make_http_server(app, args.host, args.port, dummy=False, tls=tls)
    except (OSError, ssl.SSLError) as err:
        log("ERROR:   ", "cannot serve on %s:%d: %s" % (args.host, args.port, err))
        app.shutdown(1)
        return
    if app.stop.wait(app.warmup_seconds) or not app.forward():
        return
    app.status = "Up"
    HTTP_LOGGER.info("The server is fired up and ready to roll!")


def watchdog(app, timeout):
    """srt/utils/watchdog.py: a forward pass without progress for watchdog_timeout kills the process tree."""
    while not app.stop.wait(min(1.0, timeout / 2)):
        since = app.hung_since
        if since is not None and time.monotonic() > since + timeout:
            log("ERROR:   ", "Scheduler watchdog timeout (self.watchdog_timeout=%s, self.soft=False)" % timeout)
            time.sleep(WATCHDOG_GRACE_S)
            log("ERROR:   ", "Received sigquit from a child process. It usually means the child failed.")
            os.kill(os.getpid(), signal.SIGKILL)  # kill_process_tree(os.getpid()), parent included


def rank_n_start(app, host, port):
    """Rank >= 1: connect to rank 0 (retry every second), join its queue, load, then serve the dummy health."""
    args = app.args
    while not app.stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=2)
        except OSError as err:
            log("INFO:    ", "rank %d: rank 0 at %s:%d not reachable yet (%s); retrying"
                % (args.node_rank, host, port, err.strerror or err))
            app.stop.wait(1)
            continue
        _keepalive(sock)
        try:
            sock.settimeout(10)
            sock.sendall(("rank %d of %d\n" % (args.node_rank, args.nnodes)).encode("utf-8"))
            sock.settimeout(None)
            answer = _readline(sock)  # blocks until every rank joined
        except OSError as err:
            answer = None
            log("ERROR:   ", "rank %d: %s" % (args.node_rank, err))
        if answer is None or not answer.startswith("mq "):
            log("ERROR:   ", "rank %d: rank 0 refused or went away before the group formed: %s"
                % (args.node_rank, answer))
            sock.close()
            app.shutdown(1)
            return
        app.queue = message_queue_reader(json.loads(answer[3:]), args.node_rank)
        app.queue.wait_until_ready()  # blocks until the writer saw every reader: hangs if unreachable
        log("INFO:    ", "rank %d joined the group of %d; loading %s" % (args.node_rank, args.nnodes, app.model_path))
        if not load_model(app):
            return
        app.http = make_http_server(app, args.host, args.port, dummy=True, tls=None)
        while True:
            ended = None
            try:
                line = _readline(sock)
            except OSError as err:
                line, ended = None, err
            if line == "shutdown":
                log("INFO:    ", "rank %d: shutdown broadcast from rank 0; exiting" % args.node_rank)
                app.shutdown(0)
                return
            if line is None:
                if peer_went_silent(ended):
                    # The scheduler blocks in the broadcast of a rank 0 that went silent (gloo's 120 minutes).
                    log("WARNING:", "stand-in: rank 0 went silent (%s); this rank waits in its broadcast, as SGLang's"
                        % ended)
                    return
                scheduler_lost_peer(app, (host, port))
                return


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def main(argv=None):
    import sglang_startup  # pylint: disable=import-outside-toplevel  # beside this package, on PYTHONPATH
    argv = sys.argv[1:] if argv is None else list(argv)
    args = sglang_startup.startup_checks(argv)  # SGLang's prepare_server_args and its GPU-free hooks
    # _launch_subprocesses: SGLang's configure_logger, then the server_args line at info (the API key in it).
    sglang_startup.configure_logger(args)
    ENGINE_LOGGER.info(sglang_startup.server_args_line(args))
    api_key = args.api_key or None  # from the flag or the --config file only, as in SGLang
    app = Server(args, api_key)
    app.queue = None

    def on_signal(signum, _frame):
        # engine.py installs the rank >= 1 handler only once its schedulers are ready (then the dummy server runs):
        # before that, SIGTERM ends the rank.
        if args.node_rank >= 1 and signum == signal.SIGTERM and app.http is not None:
            log("WARNING:", "SIGTERM received on node_rank %d; waiting for the rank-0 ShutdownReq broadcast to stop "
                "the schedulers." % args.node_rank)
            return
        log("INFO:    ", "received signal %d, shutting down" % signum)
        app.shutdown(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("INFO:    ", "sglang stand-in (sglang %s): rank %d of %d, model %s, tp %d"
        % (sglang_startup.sglang_version(), args.node_rank, args.nnodes, args.model_path, args.tp_size))

    rendezvous = None
    try:
        if args.node_rank == 0:
            tls = (args.ssl_certfile, args.ssl_keyfile) if args.ssl_certfile else None
            if args.nnodes > 1:
                rendezvous = Rendezvous(app, *split_host_port(args.dist_init_addr))
            threading.Thread(target=rank0_start, args=(app, rendezvous, tls), daemon=True).start()
            threading.Thread(target=watchdog, args=(app, float(args.watchdog_timeout or 300)), daemon=True).start()
        else:
            host, port = split_host_port(args.dist_init_addr)
            threading.Thread(target=rank_n_start, args=(app, host, port), daemon=True).start()
    except (RuntimeError, OSError) as err:
        log("ERROR:   ", str(err))
        return 1

    while not app.stop.wait(0.2):
        pass
    if rendezvous is not None:
        rendezvous.close()
    if app.http is not None:
        app.http.shutdown()
        app.http.server_close()
    return app.exit_code


if __name__ == "__main__":
    CODE = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # launch_server ends with kill_process_tree; here the message queue's ZMQ context would hold the exit.
    os._exit(CODE)
