# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health check of an SGLang server (rank 0), without Ansible objects.

What SGLang does at its edges (checked against sgl-project/sglang):

* ``/health`` and ``/health_generate`` answer 503 while the server is starting and 200 once it
  serves (``entrypoints/http_server.py``); ranks >= 1 of a multi-node group only run a dummy
  server that always answers 200 (``launch_dummy_health_check_server``), so only rank 0 tells
  the truth.
* With ``--api-key`` every path except ``/health*``, ``/ready*`` and ``/metrics*`` needs
  ``Authorization: Bearer <key>``; a wrong or missing key gets 401 (``srt/utils/auth.py``,
  ``decide_request_auth``; ``add_api_key_middleware`` reads only the ``Authorization`` header, so
  an ``x-api-key`` header is ignored). The key comes from ``--api-key`` (or ``api-key`` in the
  ``--config`` file); SGLang reads it from no environment variable.
* ``/v1/models`` lists one entry whose ``id`` and ``root`` are both the served model name:
  ``--served-model-name``, else ``--model-path`` (``available_models`` in
  ``srt/entrypoints/http_server.py``; the default in ``handle_missing_default_values``,
  ``srt/arg_groups/serving_hook.py``).
* ``/metrics`` exists only with ``--enable-metrics`` and speaks the Prometheus text format; the
  names carry the ``sglang:`` prefix (``srt/metrics/collector.py``).

The module glue builds a ``HealthCheck`` around ``UrllibTransport`` (standard library only: it
runs on the target); tests hand it a fake transport, clock and sleep.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time

import http.client as _http_client
import urllib.error as _urllib_error
import urllib.request as _urllib_request

DEFAULT_URL = "http://127.0.0.1:30000"

# Gauges and counters reported by the module (gauges for the whole server, see whole_gauge; counters summed over
# their label sets). Names from sglang srt/observability/metrics_collector.py.
KEY_GAUGES = (
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "sglang:token_usage",
    "sglang:gen_throughput",
    "sglang:cache_hit_rate",
)
KEY_COUNTERS = (
    "sglang:prompt_tokens_total",
    "sglang:generation_tokens_total",
    "sglang:num_requests_total",
)
# Histograms whose _count and _sum are reported too.
KEY_HISTOGRAMS = (
    "sglang:time_to_first_token_seconds",
    "sglang:e2e_request_latency_seconds",
    "sglang:inter_token_latency_seconds",
)

API_KEY_HINT = "set sglang_server_api_key / api_key"


class HealthCheckError(Exception):
    """A check failed; ``result`` holds what was learned up to then (returned with the failure)."""

    def __init__(self, msg, result=None):
        super(HealthCheckError, self).__init__(msg)
        self.msg = msg
        self.result = result or {}


class TransportError(Exception):
    """The request did not produce an HTTP answer (refused, reset, timed out, TLS failure)."""

    def __init__(self, msg, retryable=True):
        super(TransportError, self).__init__(msg)
        self.msg = msg
        self.retryable = retryable


class MetricsParseError(ValueError):
    """A line of /metrics output is not Prometheus text format."""


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------

def normalize_base_url(url):
    """Return ``scheme://host:port[/prefix]`` without a trailing slash; raise ValueError if unusable."""
    if not url or not isinstance(url, str):
        raise ValueError("url is empty: give the address of SGLang rank 0, e.g. %s" % DEFAULT_URL)
    url = url.strip()
    match = re.match(r"^(https?)://([^/?#]+)(/[^?#]*)?$", url, re.IGNORECASE)
    if not match:
        raise ValueError(
            "url %r is not an http:// or https:// address of SGLang rank 0 (e.g. %s)" % (url, DEFAULT_URL))
    scheme, netloc, path = match.group(1).lower(), match.group(2), (match.group(3) or "")
    return "%s://%s%s" % (scheme, netloc, path.rstrip("/"))


def build_url(base, path):
    """Join a normalized base URL and an absolute endpoint path (``/health``)."""
    return normalize_base_url(base) + "/" + path.lstrip("/")


def auth_headers(api_key):
    """Headers that SGLang's API key middleware accepts (``Authorization: Bearer <key>``)."""
    return {"Authorization": "Bearer %s" % api_key} if api_key else {}


# --------------------------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------------------------

def backoff_delay(attempt, first=1.0, factor=2.0, cap=10.0):
    """Seconds to wait after failed attempt number ``attempt`` (1-based): 1, 2, 4, 8, 10, 10 ..."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    delay = first * (factor ** (attempt - 1))
    return min(delay, cap)


def backoff_schedule(timeout, first=1.0, factor=2.0, cap=10.0):
    """The waits that fit in ``timeout`` seconds (the last one shortened to end at the deadline)."""
    waits = []
    total = 0.0
    attempt = 1
    while total < timeout:
        wait = min(backoff_delay(attempt, first, factor, cap), timeout - total)
        waits.append(wait)
        total += wait
        attempt += 1
    return waits


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------

def decode_json(body, what):
    """Parse a JSON body, raising HealthCheckError that names the endpoint when it is not JSON."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body)
    except ValueError:
        raise HealthCheckError("%s did not return JSON: %s" % (what, shorten(body)))


def shorten(text, limit=300):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def evaluate_models(payload, expected=None):
    """From a /v1/models answer return ``(ids, model_ok, served_id)``.

    SGLang 0.5.23 lists one entry for the base model whose ``id`` and ``root`` are both the served
    model name, ``--served-model-name`` or, without it, ``--model-path`` (``available_models`` in
    ``srt/entrypoints/http_server.py`` builds ``ModelCard(id=served_model_name,
    root=served_model_name)``; ``handle_missing_default_values`` in
    ``srt/arg_groups/serving_hook.py`` sets the default). The model path is not listed when a
    served name is set, so ``expected`` (the served name) is compared with ``id`` only; a LoRA
    adapter's entry has its own name as ``id`` (its ``root`` is the adapter path). Without
    ``expected`` the check passes when at least one model is listed and ``served_id`` is the first.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise HealthCheckError("/v1/models did not return an OpenAI model list: %s" % shorten(json.dumps(payload)))
    entries = [entry for entry in payload["data"] if isinstance(entry, dict) and entry.get("id")]
    ids = [str(entry["id"]) for entry in entries]
    if expected:
        for entry in entries:
            if entry.get("id") == expected:
                return ids, True, str(entry["id"])
        return ids, False, None
    return ids, bool(ids), (ids[0] if ids else None)


def chat_payload(model, prompt, max_tokens, stream):
    """A deterministic (temperature 0) OpenAI chat completion request."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": bool(stream),
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


def _message_text(message):
    """Text of a chat message or delta: ``content``, else ``reasoning_content`` (reasoning parsers)."""
    if not isinstance(message, dict):
        return ""
    for key in ("content", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def parse_chat_completion(payload):
    """Return ``(text, completion_tokens)`` from a non-streamed chat completion."""
    if not isinstance(payload, dict):
        raise HealthCheckError("/v1/chat/completions returned no JSON object: %s" % shorten(json.dumps(payload)))
    if payload.get("error") or payload.get("object") == "error":
        raise HealthCheckError("/v1/chat/completions returned an error: %s" % shorten(json.dumps(payload)))
    choices = payload.get("choices") or []
    text = _message_text(choices[0].get("message")) if choices and isinstance(choices[0], dict) else ""
    usage = payload.get("usage") or {}
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return text, tokens


def parse_sse_line(line):
    """One line of a ``text/event-stream`` body -> ``("data", obj)``, ``("done", None)`` or ``(None, None)``.

    Blank lines, comments (``:``) and other fields (``event:``, ``id:``) are ``(None, None)``.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    if not line.startswith("data:"):
        return None, None
    data = line[5:].strip()
    if data == "[DONE]":
        return "done", None
    try:
        return "data", json.loads(data)
    except ValueError:
        raise HealthCheckError("/v1/chat/completions streamed a chunk that is not JSON: %s" % shorten(data))


class StreamAccumulator(object):
    """Collects a streamed chat completion; ``feed(line, now)`` records when content first arrived."""

    def __init__(self, started):
        self.started = started
        self.first_content_at = None
        self.parts = []
        self.completion_tokens = None
        self.done = False
        self.chunks = 0

    def feed(self, line, now):
        kind, obj = parse_sse_line(line)
        if kind == "done":
            self.done = True
            return
        if kind != "data":
            return
        self.chunks += 1
        if isinstance(obj, dict) and (obj.get("error") or obj.get("object") == "error"):
            raise HealthCheckError("/v1/chat/completions streamed an error: %s" % shorten(json.dumps(obj)))
        for choice in (obj.get("choices") or []) if isinstance(obj, dict) else []:
            text = _message_text(choice.get("delta")) if isinstance(choice, dict) else ""
            if text:
                if self.first_content_at is None:
                    self.first_content_at = now
                self.parts.append(text)
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.completion_tokens = usage["completion_tokens"]

    @property
    def text(self):
        return "".join(self.parts)

    @property
    def ttft(self):
        return None if self.first_content_at is None else self.first_content_at - self.started


# --------------------------------------------------------------------------------------------
# Prometheus text format
# --------------------------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(r"^(%s)\s*(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$" % _NAME)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape_label(value):
    out = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            nxt = value[index + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _parse_labels(text, lineno):
    labels = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _LABEL_RE.match(text, pos)
        if not match:
            raise MetricsParseError("line %d: bad label set {%s}" % (lineno, text))
        labels[match.group(1)] = _unescape_label(match.group(2))
        pos = match.end()
    return labels


def _parse_value(text, lineno):
    special = {"+inf": float("inf"), "inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
    if text.lower() in special:
        return special[text.lower()]
    try:
        return float(text)
    except ValueError:
        raise MetricsParseError("line %d: %r is not a number" % (lineno, text))


def parse_prometheus_text(text):
    """Parse Prometheus text exposition format into ``{"samples": [...], "types": {...}}``.

    ``samples`` is a list of ``(name, labels, value)``; histogram series keep their
    ``_bucket``/``_sum``/``_count`` (and ``_created``) names. ``types`` maps a metric family to
    the type its ``# TYPE`` line declares. Raises MetricsParseError naming the bad line.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    samples = []
    types = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            raise MetricsParseError("line %d: not a metric sample: %s" % (lineno, shorten(line, 120)))
        labels = _parse_labels(match.group(2), lineno) if match.group(2) else {}
        samples.append((match.group(1), labels, _parse_value(match.group(3), lineno)))
    return {"samples": samples, "types": types}


def sum_samples(samples, name):
    """Sum of every sample called ``name`` over its label sets; None when there is none."""
    values = [value for sample_name, _labels, value in samples if sample_name == name]
    return sum(values) if values else None


# Scheduler gauges are exported once per scheduler (metrics_collector.py, SchedulerMetricsCollector): labels tp_rank,
# pp_rank, moe_ep_rank (only rank 0 of each logs, unless --enable-metrics-for-all-schedulers), dp_rank with data-parallel
# attention, and with priority scheduling a total under priority="" beside a breakdown under priority="<int>".
# Every pipeline stage sees the same requests. The whole: tp/pp/ep rank 0, priority "", summed over dp_rank;
# a ratio is the largest over dp_rank (adding ratios means nothing).
RATIO_GAUGES = ("sglang:token_usage", "sglang:cache_hit_rate")
_WHOLE_LABELS = {"tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0", "priority": ""}


def whole_gauge(samples, name):
    """The value of a scheduler gauge for the whole server (see _WHOLE_LABELS); None when there is none."""
    values = [value for sample_name, labels, value in samples if sample_name == name
              and all(labels.get(label, whole) == whole for label, whole in _WHOLE_LABELS.items())]
    if not values:
        return None
    return max(values) if name in RATIO_GAUGES else sum(values)


def histogram_summary(samples, family):
    """``{"count", "sum", "buckets": [(le, cumulative)]}`` of a histogram, summed over label sets."""
    buckets = {}
    for name, labels, value in samples:
        if name == family + "_bucket" and "le" in labels:
            upper = _parse_value(labels["le"], 0)
            buckets[upper] = buckets.get(upper, 0.0) + value
    return {
        "count": sum_samples(samples, family + "_count"),
        "sum": sum_samples(samples, family + "_sum"),
        "buckets": sorted(buckets.items()),
    }


def summarize_metrics(text):
    """The module's ``metrics`` dict from /metrics text: key gauges, counters, histogram count/sum.

    Gauges are read for the whole server (``whole_gauge``); the tokenizer's counters and histograms are summed over
    their label sets (each request lands in one series: model_name, engine_type, its priority). A metric the server
    does not print is left out.
    """
    parsed = parse_prometheus_text(text)
    samples = parsed["samples"]
    out = {}
    for name in KEY_GAUGES:
        value = whole_gauge(samples, name)
        if value is not None:
            out[name] = value
    for name in KEY_COUNTERS:
        value = sum_samples(samples, name)
        if value is not None:
            out[name] = value
    for family in KEY_HISTOGRAMS:
        for suffix in ("_count", "_sum"):
            value = sum_samples(samples, family + suffix)
            if value is not None:
                out[family + suffix] = value
    return out


# --------------------------------------------------------------------------------------------
# Transport (standard library)
# --------------------------------------------------------------------------------------------

class HttpResponse(object):
    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class UrllibTransport(object):
    """HTTP(S) with urllib: TLS verification on by default, proxies from the environment off."""

    def __init__(self, request_timeout=30, validate_certs=True, ca_path=None, use_proxy=False):
        self.request_timeout = request_timeout
        context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        handlers = [_urllib_request.HTTPSHandler(context=context)]
        if not use_proxy:
            handlers.append(_urllib_request.ProxyHandler({}))
        self._opener = _urllib_request.build_opener(*handlers)

    def _open(self, method, url, headers, body):
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        req = _urllib_request.Request(url, data=data, headers=headers, method=method)
        try:
            return self._opener.open(req, timeout=self.request_timeout)
        except _urllib_error.HTTPError as err:
            return err  # an HTTP answer (4xx/5xx) is a response, not a transport failure
        except _urllib_error.URLError as err:
            raise _transport_error(err.reason, url)
        except (socket.timeout, OSError, _http_client.HTTPException) as err:
            raise _transport_error(err, url)

    def request(self, method, url, headers=None, body=None):
        resp = self._open(method, url, headers, body)
        try:
            payload = resp.read()
        except (socket.timeout, OSError, _http_client.HTTPException) as err:
            raise _transport_error(err, url)
        finally:
            resp.close()
        return HttpResponse(resp.getcode() if hasattr(resp, "getcode") else resp.code, payload,
                            dict(resp.headers.items()) if resp.headers else {})

    def stream(self, method, url, headers=None, body=None):
        """Open a streamed request: returns ``(status, lines, close)``; ``lines`` yields raw lines."""
        resp = self._open(method, url, headers, body)
        status = resp.getcode() if hasattr(resp, "getcode") else resp.code

        def lines():
            try:
                yield from resp
            except (socket.timeout, OSError, _http_client.HTTPException) as err:
                raise _transport_error(err, url)

        return status, lines(), resp.close


def _transport_error(reason, url):
    if isinstance(reason, ssl.SSLCertVerificationError):
        return TransportError(
            "TLS certificate of %s not accepted (%s): give ca_path (the CA that signed SGLang's "
            "--ssl-certfile) or set validate_certs=false" % (url, reason), retryable=False)
    if isinstance(reason, ssl.SSLError):
        return TransportError("TLS error talking to %s: %s (is the server started with --ssl-certfile? "
                              "use http:// if not)" % (url, reason), retryable=False)
    if isinstance(reason, ConnectionRefusedError):
        return TransportError("connection refused by %s (server not listening yet)" % url)
    if isinstance(reason, socket.timeout):
        return TransportError("no answer from %s within the request timeout" % url)
    return TransportError("%s: %s" % (url, reason))


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------

class HealthCheck(object):
    """Runs the checks against rank 0 and returns the module result.

    ``transport`` has ``request(method, url, headers, body) -> HttpResponse`` and
    ``stream(method, url, headers, body) -> (status, lines, close)``; both raise TransportError.
    """

    def __init__(self, transport, url=DEFAULT_URL, api_key=None, model=None, prompt="Say hello in one word.",
                 max_tokens=8, timeout=600, check_generate=True, check_metrics=True, stream=True,
                 clock=time.monotonic, sleep=time.sleep):
        self.transport = transport
        self.base = normalize_base_url(url)
        self.headers = auth_headers(api_key)
        self.api_key_given = bool(api_key)
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.check_generate = check_generate
        self.check_metrics = check_metrics
        self.stream = stream
        self.clock = clock
        self.sleep = sleep
        self.result = {
            "url": self.base, "healthy": False, "health_status": None, "attempts": 0, "elapsed_s": 0.0,
            "models": [], "model_ok": False, "served_model": None, "completion_text": None,
            "completion_tokens": None, "ttft_s": None, "total_s": None, "metrics": {},
            "metrics_available": False,
        }

    def url(self, path):
        return self.base + path

    def _fail(self, msg):
        self.result["elapsed_s"] = round(self.clock() - self.started, 3)
        raise HealthCheckError(msg, dict(self.result))

    def _check_auth(self, resp, url):
        if resp.status in (401, 403):
            sent = "the key sent was refused" if self.api_key_given else "no key was sent"
            self._fail("API key rejected by %s (HTTP %d, %s): %s" % (url, resp.status, sent, API_KEY_HINT))

    def run(self):
        self.started = self.clock()
        self.wait_healthy()
        self.check_models()
        self.check_completion()
        if self.check_metrics:
            self.read_metrics()
        self.result["elapsed_s"] = round(self.clock() - self.started, 3)
        return self.result

    def _probe(self, path):
        """One GET of a health path: (ok, error text). Raises HealthCheckError for auth / TLS."""
        url = self.url(path)
        try:
            resp = self.transport.request("GET", url, self.headers)
        except TransportError as err:
            if not err.retryable:
                self._fail(err.msg)
            return None, err.msg
        self._check_auth(resp, url)
        return resp.status, ("HTTP %d from %s" % (resp.status, url) if resp.status != 200 else None)

    def wait_healthy(self):
        deadline = self.started + self.timeout
        last_error = None
        while True:
            self.result["attempts"] += 1
            status, last_error = self._probe("/health")
            self.result["health_status"] = status
            if status == 200 and self.check_generate:
                gen_status, last_error = self._probe("/health_generate")
                if gen_status != 200:
                    status = None
            if status == 200:
                self.result["healthy"] = True
                return
            remaining = deadline - self.clock()
            if remaining <= 0:
                self._fail(
                    "SGLang at %s not healthy after %ss (%d attempts); last error: %s. Check rank 0's journal "
                    "(model still loading? all ranks started and reachable on the dist-init address?) or raise "
                    "timeout" % (self.base, self.timeout, self.result["attempts"], last_error))
            self.sleep(min(backoff_delay(self.result["attempts"]), remaining))

    def _request_json(self, method, path, body=None):
        url = self.url(path)
        try:
            resp = self.transport.request(method, url, self.headers, body)
        except TransportError as err:
            self._fail(err.msg)
        self._check_auth(resp, url)
        if resp.status == 404 and path == "/v1/models":
            self._fail("%s answered HTTP 404 although /health answered 200: this looks like rank >= 1 of a "
                       "multi-node group, which serves only a dummy /health; point url at rank 0 (the head "
                       "node)" % url)
        if resp.status != 200:
            self._fail("%s %s answered HTTP %d: %s" % (method, url, resp.status, shorten(resp.body)))
        try:
            return decode_json(resp.body, url)
        except HealthCheckError as err:
            self._fail(err.msg)

    def check_models(self):
        payload = self._request_json("GET", "/v1/models")
        try:
            ids, ok, served = evaluate_models(payload, self.model)
        except HealthCheckError as err:
            self._fail(err.msg)
        self.result.update(models=ids, model_ok=ok, served_model=served)
        if not ok:
            if self.model:
                self._fail("model %r is not served by %s; /v1/models lists %s: check sglang_server_model / model"
                           % (self.model, self.base, ids))
            self._fail("%s/v1/models lists no model" % self.base)

    def check_completion(self):
        body = chat_payload(self.result["served_model"], self.prompt, self.max_tokens, self.stream)
        path = "/v1/chat/completions"
        started = self.clock()
        try:
            if self.stream:
                text, tokens, ttft = self._stream_completion(path, body, started)
            else:
                payload = self._request_json("POST", path, body)
                text, tokens = parse_chat_completion(payload)
                ttft = None
        except HealthCheckError as err:
            self._fail(err.msg)
        total = self.clock() - started
        self.result.update(completion_text=text, completion_tokens=tokens, total_s=round(total, 4),
                           ttft_s=None if ttft is None else round(ttft, 4))
        if not text:
            self._fail("chat completion from %s returned no text (model %s)" % (self.base, self.result["served_model"]))

    def _stream_completion(self, path, body, started):
        url = self.url(path)
        try:
            status, lines, close = self.transport.stream("POST", url, self.headers, body)
        except TransportError as err:
            raise HealthCheckError(err.msg)
        try:
            if status != 200:
                self._check_auth(HttpResponse(status), url)
                raise HealthCheckError("POST %s answered HTTP %d: %s" % (url, status, shorten(b"".join(lines))))
            acc = StreamAccumulator(started)
            try:
                for line in lines:
                    acc.feed(line, self.clock())
                    if acc.done:
                        break
            except TransportError as err:
                raise HealthCheckError(err.msg)
        finally:
            close()
        if not acc.done:
            raise HealthCheckError("stream from %s ended without [DONE] after %d chunks" % (url, acc.chunks))
        return acc.text, acc.completion_tokens, acc.ttft

    def read_metrics(self):
        url = self.url("/metrics")
        try:
            resp = self.transport.request("GET", url, self.headers)
        except TransportError as err:
            self._fail(err.msg)
        if resp.status == 404:
            return  # started without --enable-metrics: nothing to read, not a failure
        self._check_auth(resp, url)
        if resp.status != 200:
            self._fail("GET %s answered HTTP %d: %s" % (url, resp.status, shorten(resp.body)))
        try:
            self.result["metrics"] = summarize_metrics(resp.body)
        except MetricsParseError as err:
            self._fail("%s is not Prometheus text: %s" % (url, err))
        self.result["metrics_available"] = True


# --------------------------------------------------------------------------------------------
# The address each rank advertises (what a group that never forms is waiting for)
# --------------------------------------------------------------------------------------------

# get_local_ip_auto() in sglang/srt/utils/network.py (0.5.23): these variables first, then the NIC named in
# SGLANG_LOCAL_IP_NIC (needs netifaces, which the images lack), then the source address of the route to 8.8.8.8.
HOST_IP_VARS = ("SGLANG_HOST_IP", "HOST_IP")


def environ_vars(raw):
    """The variables of a process environment: ``/proc/PID/environ`` text (NUL-separated) or a list of ``K=V``."""
    items = raw.split("\0") if isinstance(raw, str) else list(raw or [])
    found = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if sep:
            found[name] = value
    return found


def advertised_address_problems(expected, environs):
    """Why ranks cannot reach each other, from the environment of each node's running SGLang process.

    ``expected``: host -> ``{node_rank, host_ip}`` (the cluster plan's CX7 address of the node).
    ``environs``: host -> the process's variables (``environ_vars``), or None when no SGLang process runs there.
    Returns one message per node whose rank advertises another address than the plan's, or does not run.
    """
    problems = []
    for host in sorted(expected, key=lambda h: (expected[h]["node_rank"], h)):
        node = expected[host]
        where = "%s (rank %d)" % (host, node["node_rank"])
        env = environs.get(host)
        if env is None:
            problems.append("%s: no SGLang process runs there, so its rank never joins the group. Fix: read "
                            "`journalctl -u <service>` there." % where)
            continue
        name = next((var for var in HOST_IP_VARS if env.get(var)), None)
        if name is None:
            problems.append(
                "%s: its running SGLang has no SGLANG_HOST_IP, so SGLang advertises the source address of its "
                "route to 8.8.8.8 (get_local_ip_auto), the management port on a Spark, for the cross-node message "
                "queue; ranks on other nodes reach it only over the CX7 link, and the group hangs in "
                "shm_broadcast wait_until_ready. The unit sets SGLANG_HOST_IP=%s: something overrides it (a drop-in "
                "under /etc/systemd/system/<service>.service.d/, see `systemctl cat <service>`). Fix: on %s run "
                "`systemctl revert <service>` (removes drop-ins) and `systemctl stop <service>`, then run site.yml "
                "again: it restarts the whole group." % (where, node["host_ip"], host))
        elif env[name] != node["host_ip"]:
            problems.append(
                "%s: its running SGLang advertises %s=%s, not the node's CX7 address %s from the cluster plan, so "
                "the other ranks may not reach it. Fix: remove what sets %s there, stop <service> on %s, then run "
                "site.yml again: it restarts the whole group." % (where, name, env[name], node["host_ip"], name, host))
    return problems
