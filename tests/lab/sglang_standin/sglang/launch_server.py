# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ``python3 -m sglang.launch_server`` on the lab's test hosts (no GPU, no torch).

It behaves like SGLang 0.5.23 at the edges the collection touches, and nowhere else:

* argv: parsed by an argparse parser built from the collection's flag catalog
  (``plugins/module_utils/_sglang_catalog.py``, generated from SGLang's own parser): every flag,
  alias, value form and choice list. An unknown flag or a bad choice exits 2 with argparse's
  ``error: unrecognized arguments`` / ``invalid choice``, like SGLang. ``--config FILE.yaml`` is
  merged first, as SGLang's ``ConfigArgumentMerger`` does (file values become flags placed before
  the command line's, so the command line wins).
* ranks: ``--nnodes N --node-rank R --dist-init-addr HOST:PORT``. Rank 0 listens on the dist-init
  address (TCP) and the group is formed once every rank 1..N-1 has connected and said
  ``rank R of N``. Rank 0 answers 503 on ``/health`` until then (plus ``SGLANG_STANDIN_LOAD_SECONDS``
  of simulated model loading), then 200. Ranks >= 1 retry the connection every second, start the
  dummy health server (``/health``, ``/health_generate``, ``/ping`` always 200, plain HTTP) only once
  the group formed (SGLang starts it after the scheduler is ready), and exit 1 when the connection
  to rank 0 drops, as a rank whose NCCL group died does; rank 0 exits 1 when a joined rank leaves.
* rank 0 HTTP(S): ``/health``, ``/health_generate``, ``/v1/models``, ``/v1/chat/completions``
  (plain and ``stream`` server-sent events), ``/generate`` (SGLang's native shape), ``/model_info``
  and, with ``--enable-metrics``, ``/metrics`` in Prometheus text with SGLang's metric names.
  TLS with ``--ssl-certfile`` / ``--ssl-keyfile``.
* API key (``--api-key``, or ``api-key:`` in the ``--config`` file, nothing else): enforced like
  SGLang's ``decide_request_auth`` in sgl-project/sglang ``python/sglang/srt/utils/auth.py`` (applied
  by ``add_api_key_middleware``, which reads only the ``Authorization`` header): OPTIONS and paths
  starting with ``/health``, ``/ready`` or ``/metrics`` are open; everything else needs
  ``Authorization: Bearer KEY`` (scheme case-insensitive), else 401 ``{"error": "Unauthorized"}``
  (checked before routing, so an unknown path without a key is 401 too). An ``x-api-key`` header
  is ignored, as in SGLang. SGLang 0.5.23 reads no environment variable for the key
  (``api_key`` in ``srt/arg_groups/fields/serving.py`` is a plain flag); neither does the stand-in.
* ``/v1/models``: SGLang's ``available_models`` (``srt/entrypoints/http_server.py``) lists one
  ``ModelCard`` whose ``id`` and ``root`` are both the served model name, which is
  ``--served-model-name`` or, when that is not given, ``--model-path``
  (``handle_missing_default_values`` in ``srt/arg_groups/serving_hook.py``). The model path itself
  appears only as ``model_path`` of ``/model_info``.

Environment knobs (lab only, never flags: the unit's flags must stay those of a real Spark):
``SGLANG_STANDIN_LOAD_SECONDS`` (simulated load time after the group formed, default 0),
``SGLANG_STANDIN_TOKEN_DELAY`` (seconds per generated token, default 0.005),
``SGLANG_STANDIN_CATALOG`` (path of the flag catalog; default: ``_sglang_catalog.py`` beside this
file, else the checkout's ``plugins/module_utils/_sglang_catalog.py``).

Standard library only, Python 3.9+ (argparse.BooleanOptionalAction); the lab hosts run 3.11. One line per HTTP request on stdout. SIGTERM/SIGINT: exit 0.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import json
import math
import os
import pathlib
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


def log(level, msg):
    with LOG_LOCK:
        sys.stdout.write("[%s] %s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), level, msg))
        sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Flag catalog -> argparse parser
# --------------------------------------------------------------------------------------------

def catalog_candidates():
    here = pathlib.Path(__file__).resolve().parent
    env = os.environ.get("SGLANG_STANDIN_CATALOG")
    if env:
        return [pathlib.Path(env)]
    return [here / "_sglang_catalog.py", here.parents[3] / "plugins" / "module_utils" / "_sglang_catalog.py"]


def load_catalog():
    for path in catalog_candidates():
        if path.is_file():
            spec = importlib.util.spec_from_file_location("_sglang_catalog", str(path))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    sys.stderr.write("sglang stand-in: flag catalog not found (looked at %s); set SGLANG_STANDIN_CATALOG or copy "
                     "plugins/module_utils/_sglang_catalog.py next to this file\n"
                     % ", ".join(str(p) for p in catalog_candidates()))
    sys.exit(1)


_TYPES = {"int": int, "float": float}


def build_parser(catalog):
    """argparse parser with every flag of the catalog (value form, choices, aliases, --no- forms).

    SGLang builds ``argparse.ArgumentParser()`` (defaults: prefixes of a long flag are accepted
    when unique, ``-h/--help``) and calls ``ServerArgs.add_cli_args`` on it; the same defaults
    are kept here so that the stand-in accepts and rejects the same command lines.
    """
    parser = argparse.ArgumentParser()
    aliases = {}
    for alias, canonical in getattr(catalog, "ALIASES", {}).items():
        aliases.setdefault(canonical, []).append(alias)
    for name in sorted(catalog.FLAGS):
        spec = catalog.FLAGS[name]
        options = ["--" + name] + ["--" + alias for alias in sorted(aliases.get(name, []))]
        kwargs = {"dest": spec.get("dest") or name.replace("-", "_")}
        value = spec.get("value", "one")
        if spec.get("action") == "BooleanOptionalAction":
            kwargs.update(action=argparse.BooleanOptionalAction, default=spec.get("default"))
        elif value == "none":
            kwargs.update(action="store_true", default=bool(spec.get("default")))
        else:
            kwargs["default"] = spec.get("default")
            kwargs["type"] = _TYPES.get(spec.get("type"), str)
            if spec.get("choices"):
                kwargs["choices"] = spec["choices"]
            if value == "list":
                kwargs["nargs"] = "+"
            elif value == "any":
                kwargs["nargs"] = "*"
            elif value == "optional":
                kwargs["nargs"] = "?"
        if name == "model-path":
            kwargs["required"] = True  # ServerArgs.add_cli_args: --model-path/--model is required
        parser.add_argument(*options, **kwargs)
    return parser


# --------------------------------------------------------------------------------------------
# --config FILE.yaml (SGLang: srt/utils/server_args_config_parser.py, ConfigArgumentMerger)
# --------------------------------------------------------------------------------------------

def _yaml_scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else json.loads(text)
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "~", ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _strip_comment(line):
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def read_flat_yaml(path):
    """The flat YAML mapping SGLang's --config takes: ``key: scalar``, ``key: [a, b]`` or a block list.

    (No PyYAML on the lab hosts: this reads the subset such a file uses; anything else is an error.)
    """
    data = {}
    current_list = None
    with open(path) as handle:
        for lineno, raw in enumerate(handle, 1):
            line = _strip_comment(raw.rstrip("\n")).rstrip()
            if not line.strip() or line.strip() == "---":
                continue
            if line.lstrip().startswith("- ") and current_list is not None:
                data[current_list].append(_yaml_scalar(line.lstrip()[2:]))
                continue
            match = re.match(r"^([A-Za-z0-9_-]+)\s*:\s*(.*)$", line)
            if not match or line[0] in " \t":
                raise ValueError("%s line %d: expected 'key: value' (flat mapping)" % (path, lineno))
            key, rest = match.group(1), match.group(2).strip()
            current_list = None
            if rest == "":
                data[key] = []
                current_list = key
            elif rest.startswith("[") and rest.endswith("]"):
                data[key] = [_yaml_scalar(item) for item in rest[1:-1].split(",") if item.strip()]
            else:
                data[key] = _yaml_scalar(rest)
    return data


def merge_config(argv, parser):
    """Same rules as SGLang's ConfigArgumentMerger.merge_config_with_args."""
    indices = [i for i, arg in enumerate(argv) if arg == "--config"]
    if not indices:
        return argv
    if len(indices) > 1:
        raise ValueError("Multiple config files specified! Only one allowed.")
    index = indices[0]
    if index == len(argv) - 1:
        raise ValueError("No config file specified after --config flag!")
    path = argv[index + 1]
    if pathlib.Path(path).suffix.lower() not in (".yaml", ".yml"):
        raise ValueError("Config file must be YAML format, got: %s" % pathlib.Path(path).suffix)
    if not os.path.exists(path):
        raise ValueError("Config file not found: %s" % path)
    store_true = {a.dest for a in parser._actions if isinstance(a, argparse._StoreTrueAction)}
    args = []
    for key, value in read_flat_yaml(path).items():
        if isinstance(value, bool):
            if key.replace("-", "_") in store_true:
                if value:
                    args.append("--" + key)
            else:
                args.extend(["--" + key, str(value).lower()])
        elif isinstance(value, list):
            if value:
                args.append("--" + key)
                args.extend(str(item) for item in value)
        else:
            args.extend(["--" + key, str(value)])
    return args + argv[:index] + argv[index + 2:]


def parse_args(argv, catalog):
    parser = build_parser(catalog)
    try:
        argv = merge_config(list(argv), parser)
    except (ValueError, OSError) as err:
        sys.stderr.write("ValueError: %s\n" % err)
        sys.exit(1)
    return parser.parse_args(argv)


def split_host_port(addr):
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", addr) or re.match(r"^([^:]+):(\d+)$", addr)
    if not match:
        raise ValueError("--dist-init-addr %r is not HOST:PORT" % addr)
    return match.group(1), int(match.group(2))


def check_args(args):
    """The checks of SGLang's ServerArgs that the lab can hit; AssertionError like SGLang."""
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise AssertionError("node_rank %s must be in [0, nnodes=%s)" % (args.node_rank, args.nnodes))
    if (args.tp_size * args.pp_size) % args.nnodes != 0:
        raise AssertionError("tp_size must be divisible by number of nodes")
    if args.nnodes > 1:
        if not args.dist_init_addr:
            raise AssertionError("--dist-init-addr is required when --nnodes > 1")
        split_host_port(args.dist_init_addr)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise AssertionError("--ssl-certfile and --ssl-keyfile must be given together")


# --------------------------------------------------------------------------------------------
# Metrics (names, buckets and help texts of sglang srt/metrics/collector.py)
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


class Metrics(object):
    def __init__(self, model_name, tp_size, max_total_tokens):
        self.lock = threading.Lock()
        self.model = model_name
        self.sched_labels = {"model_name": model_name, "engine_type": "unified", "tp_rank": "0", "pp_rank": "0"}
        self.tok_labels = {"model_name": model_name}
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

    def render(self):
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
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.exit_code = 0
        self.token_delay = float(os.environ.get("SGLANG_STANDIN_TOKEN_DELAY", "0.005"))
        self.load_seconds = float(os.environ.get("SGLANG_STANDIN_LOAD_SECONDS", "0"))
        self.metrics = Metrics(self.model_id, args.tp_size, args.max_total_tokens or 1048576)
        self.created = int(time.time())

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
        if self.dummy:
            if method == "GET" and path in ("/health", "/health_generate", "/ping"):
                return self.send_body(200, b"", "text/plain")
            return self.send_body(404, {"detail": "Not Found"})
        if not auth_allowed(method, path, self.headers, self.app.api_key):
            return self.send_body(401, {"error": "Unauthorized"})
        routes = {
            ("GET", "/health"): self.health, ("GET", "/health_generate"): self.health,
            ("GET", "/v1/models"): self.models, ("GET", "/model_info"): self.model_info,
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
        self.send_body(200 if self.app.ready.is_set() else 503, b"", "text/plain")

    def not_ready(self):
        if self.app.ready.is_set():
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
# Rendezvous over the dist-init address (stands in for torch.distributed + NCCL)
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


class Rendezvous(object):
    """Rank 0: accept ranks 1..N-1; the group forms when all are connected."""

    def __init__(self, app, host, port):
        self.app = app
        self.nnodes = app.args.nnodes
        self.peers = {}
        self.lock = threading.Lock()
        self.formed = False
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
            if self.formed:
                return self._reject(conn, "rank %d joined after the group formed (restart all ranks)" % rank)
            old = self.peers.get(rank)
            if old is not None:
                old.close()
            self.peers[rank] = conn
            log("INFO:    ", "rank %d joined from %s:%d (%d/%d)" % (rank, peer[0], peer[1], len(self.peers) + 1,
                                                                    self.nnodes))
            conn.sendall(b"ok\n")
            if len(self.peers) == self.nnodes - 1:
                self.formed = True
                for other in self.peers.values():
                    other.sendall(b"ready\n")
                threading.Thread(target=self.app_group_formed, daemon=True).start()
        conn.settimeout(None)
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
        if self.app.stop.is_set():
            return  # shutting down: rank 0 closed the connection itself
        with self.lock:
            if self.peers.get(rank) is conn:
                del self.peers[rank]
                if self.formed:
                    log("ERROR:   ", "rank %d left the group: the NCCL group is broken, exiting" % rank)
                    self.app.shutdown(1)
                else:
                    log("WARNING:", "rank %d disconnected before the group formed" % rank)

    def _reject(self, conn, why):
        log("ERROR:   ", "rejected a rank: %s" % why)
        try:
            conn.sendall(("error %s\n" % why).encode("utf-8"))
        except OSError:
            pass
        conn.close()

    def app_group_formed(self):
        group_formed(self.app)

    def close(self):
        self.sock.close()
        with self.lock:
            for conn in self.peers.values():
                conn.close()


def group_formed(app):
    log("INFO:    ", "all %d rank(s) joined; loading %s" % (app.args.nnodes, app.model_path))
    if app.stop.wait(app.load_seconds):
        return
    app.ready.set()
    log("INFO:    ", "The server is fired up and ready to roll!")


def join_group(app, host, port):
    """Rank >= 1: connect to rank 0 (retry every second), wait for the group, then serve dummy health."""
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
            answer = _readline(sock)
            if answer is None or answer.startswith("error"):
                log("ERROR:   ", "rank %d: rank 0 refused: %s" % (args.node_rank, answer))
                sock.close()
                app.shutdown(1)
                return
            sock.settimeout(None)
            answer = _readline(sock)  # blocks until every rank joined
        except OSError as err:
            answer = None
            log("ERROR:   ", "rank %d: %s" % (args.node_rank, err))
        if answer != "ready":
            log("ERROR:   ", "rank %d: lost rank 0 before the group formed" % args.node_rank)
            sock.close()
            app.shutdown(1)
            return
        log("INFO:    ", "rank %d joined the group of %d" % (args.node_rank, args.nnodes))
        app.http = make_http_server(app, args.host, args.port, dummy=True, tls=None)
        try:
            while sock.recv(1024):
                pass
        except OSError:
            pass
        if not app.stop.is_set():
            log("ERROR:   ", "rank %d: connection to rank 0 lost: the NCCL group is broken, exiting"
                % args.node_rank)
            app.shutdown(1)
        return


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def main(argv=None):
    catalog = load_catalog()
    args = parse_args(sys.argv[1:] if argv is None else argv, catalog)
    try:
        check_args(args)
    except AssertionError as err:
        sys.stderr.write("AssertionError: %s\n" % err)
        return 1
    api_key = args.api_key or None  # from the flag or the --config file only, as in SGLang
    app = Server(args, api_key)
    app.http = None

    def on_signal(signum, _frame):
        log("INFO:    ", "received signal %d, shutting down" % signum)
        app.shutdown(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("INFO:    ", "sglang stand-in (catalog of sglang %s): rank %d of %d, model %s, tp %d"
        % (getattr(catalog, "SGLANG_VERSION", "?"), args.node_rank, args.nnodes, args.model_path, args.tp_size))

    rendezvous = None
    try:
        if args.node_rank == 0:
            tls = (args.ssl_certfile, args.ssl_keyfile) if args.ssl_certfile else None
            if args.nnodes > 1:
                rendezvous = Rendezvous(app, *split_host_port(args.dist_init_addr))
            app.http = make_http_server(app, args.host, args.port, dummy=False, tls=tls)
            if args.nnodes == 1:
                threading.Thread(target=group_formed, args=(app,), daemon=True).start()
        else:
            host, port = split_host_port(args.dist_init_addr)
            threading.Thread(target=join_group, args=(app, host, port), daemon=True).start()
    except (RuntimeError, OSError, ssl.SSLError) as err:
        log("ERROR:   ", str(err))
        return 1

    while not app.stop.wait(0.2):
        pass
    if app.http is not None:
        app.http.shutdown()
        app.http.server_close()
    if rendezvous is not None:
        rendezvous.close()
    return app.exit_code


if __name__ == "__main__":
    sys.exit(main())
