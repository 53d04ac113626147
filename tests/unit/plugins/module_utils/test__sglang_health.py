# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of plugins/module_utils/_sglang_health.py: URLs, backoff, /v1/models, SSE, Prometheus text,
and the whole check against a scripted fake transport (fake clock, no sleeping)."""

from __future__ import annotations

import json
import math

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _sglang_health as h

# Real SGLang /metrics output, verbatim from sgl-project/sglang docs/references/production_metrics.md
# ("Here is an example of the metrics: $ curl http://localhost:30000/metrics", Llama-3.1-8B-Instruct).
PRODUCTION_DOCS_METRICS = r"""# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:generation_tokens_total Number of generation tokens processed.
# TYPE sglang:generation_tokens_total counter
sglang:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.557572e+06
# HELP sglang:token_usage The token usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
# HELP sglang:cache_hit_rate The cache hit rate
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.007507552643049313
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.3518979474117756e+06
sglang:time_to_first_token_seconds_bucket{le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="0.005",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="0.02",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="0.04",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
sglang:time_to_first_token_seconds_bucket{le="0.06",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
sglang:time_to_first_token_seconds_bucket{le="0.08",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:time_to_first_token_seconds_bucket{le="0.25",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:time_to_first_token_seconds_bucket{le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:time_to_first_token_seconds_bucket{le="0.75",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:time_to_first_token_seconds_bucket{le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 27.0
sglang:time_to_first_token_seconds_bucket{le="2.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 140.0
sglang:time_to_first_token_seconds_bucket{le="5.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 314.0
sglang:time_to_first_token_seconds_bucket{le="7.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 941.0
sglang:time_to_first_token_seconds_bucket{le="10.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1330.0
sglang:time_to_first_token_seconds_bucket{le="15.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1970.0
sglang:time_to_first_token_seconds_bucket{le="20.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2326.0
sglang:time_to_first_token_seconds_bucket{le="25.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2417.0
sglang:time_to_first_token_seconds_bucket{le="30.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2513.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11008.0
sglang:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 11008.0
# HELP sglang:e2e_request_latency_seconds Histogram of End-to-end request latency in seconds
# TYPE sglang:e2e_request_latency_seconds histogram
sglang:e2e_request_latency_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.116093850019932e+06
sglang:e2e_request_latency_seconds_bucket{le="0.3",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:e2e_request_latency_seconds_bucket{le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="0.8",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="1.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="2.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="2.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
sglang:e2e_request_latency_seconds_bucket{le="5.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
sglang:e2e_request_latency_seconds_bucket{le="10.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 10.0
sglang:e2e_request_latency_seconds_bucket{le="15.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11.0
sglang:e2e_request_latency_seconds_bucket{le="20.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 14.0
sglang:e2e_request_latency_seconds_bucket{le="30.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 247.0
sglang:e2e_request_latency_seconds_bucket{le="40.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 486.0
sglang:e2e_request_latency_seconds_bucket{le="50.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 845.0
sglang:e2e_request_latency_seconds_bucket{le="60.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1513.0
sglang:e2e_request_latency_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11228.0
sglang:e2e_request_latency_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 11228.0
# HELP sglang:time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE sglang:time_per_output_token_seconds histogram
sglang:time_per_output_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 866964.5791549598
sglang:time_per_output_token_seconds_bucket{le="0.005",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
sglang:time_per_output_token_seconds_bucket{le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 73.0
sglang:time_per_output_token_seconds_bucket{le="0.015",model_name="meta-llama/Llama-3.1-8B-Instruct"} 382.0
sglang:time_per_output_token_seconds_bucket{le="0.02",model_name="meta-llama/Llama-3.1-8B-Instruct"} 593.0
sglang:time_per_output_token_seconds_bucket{le="0.025",model_name="meta-llama/Llama-3.1-8B-Instruct"} 855.0
sglang:time_per_output_token_seconds_bucket{le="0.03",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1035.0
sglang:time_per_output_token_seconds_bucket{le="0.04",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1815.0
sglang:time_per_output_token_seconds_bucket{le="0.05",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11685.0
sglang:time_per_output_token_seconds_bucket{le="0.075",model_name="meta-llama/Llama-3.1-8B-Instruct"} 433413.0
sglang:time_per_output_token_seconds_bucket{le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.950195e+06
sglang:time_per_output_token_seconds_bucket{le="0.15",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.039435e+06
sglang:time_per_output_token_seconds_bucket{le="0.2",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.171662e+06
sglang:time_per_output_token_seconds_bucket{le="0.3",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.266055e+06
sglang:time_per_output_token_seconds_bucket{le="0.4",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.296752e+06
sglang:time_per_output_token_seconds_bucket{le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.312226e+06
sglang:time_per_output_token_seconds_bucket{le="0.75",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.339675e+06
sglang:time_per_output_token_seconds_bucket{le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.357747e+06
sglang:time_per_output_token_seconds_bucket{le="2.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.389414e+06
sglang:time_per_output_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.400757e+06
sglang:time_per_output_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.400757e+06
# HELP sglang:func_latency_seconds Function latency in seconds
# TYPE sglang:func_latency_seconds histogram
sglang:func_latency_seconds_sum{name="generate_request"} 4.514771912145079
sglang:func_latency_seconds_bucket{le="0.05",name="generate_request"} 14006.0
sglang:func_latency_seconds_bucket{le="0.07500000000000001",name="generate_request"} 14006.0
sglang:func_latency_seconds_bucket{le="4.3248779296875",name="generate_request"} 14007.0
sglang:func_latency_seconds_bucket{le="+Inf",name="generate_request"} 14007.0
sglang:func_latency_seconds_count{name="generate_request"} 14007.0
# HELP sglang:num_running_reqs The number of running requests
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 162.0
# HELP sglang:num_used_tokens The number of used tokens
# TYPE sglang:num_used_tokens gauge
sglang:num_used_tokens{model_name="meta-llama/Llama-3.1-8B-Instruct"} 123859.0
# HELP sglang:gen_throughput The generate throughput (token/s)
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{model_name="meta-llama/Llama-3.1-8B-Instruct"} 86.50814177726902
# HELP sglang:num_queue_reqs The number of requests in the waiting queue
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2826.0
"""
# (The func_latency_seconds histogram is cut to 3 of its 19 buckets; every kept line is verbatim.)

# A newer SGLang with --tp-size 4 (scheduler gauges carry engine_type/pp_rank/tp_rank), verbatim
# from a published capture of `curl /metrics` on Qwen3-14B (served-model-name Qwen3-14B).
TP4_METRICS_EXCERPT = """sglang:prompt_tokens_total{model_name="Qwen3-14B"} 6.0
sglang:generation_tokens_total{model_name="Qwen3-14B"} 8.0
sglang:num_running_reqs{engine_type="unified",model_name="Qwen3-14B",pp_rank="0",tp_rank="0"} 0.0
sglang:num_queue_reqs{engine_type="unified",model_name="Qwen3-14B",pp_rank="0",tp_rank="0"} 0.0
sglang:cache_hit_rate{engine_type="unified",model_name="Qwen3-14B",pp_rank="0",tp_rank="0"} 0.0
"""

# Real /v1/models answers of SGLang (published curl captures): a served-model-name equal to the
# HF id, and a local --model-path with its trailing slash as the id.
MODELS_QWEN3 = ('{"object":"list","data":[{"id":"Qwen/Qwen3-30B-A3B-Instruct-2507","object":"model",'
                '"created":1784008367,"owned_by":"sglang","root":"Qwen/Qwen3-30B-A3B-Instruct-2507",'
                '"parent":null,"max_model_len":262144}]}')
MODELS_LOCAL_PATH = ('{"object":"list","data":[{"id":"/app/models/Deepseek-R1/","object":"model",'
                     '"created":1771492956,"owned_by":"sglang","root":"/app/models/Deepseek-R1/",'
                     '"parent":null,"max_model_len":163840}]}')
MODELS_SERVED_NAME = ('{"object":"list","data":[{"id":"Qwen3-14B","object":"model","owned_by":"sglang",'
                      '"root":"Qwen3-14B","max_model_len":40960}]}')


# --------------------------------------------------------------------------------------------
# URLs and backoff
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("http://127.0.0.1:30000", "http://127.0.0.1:30000"),
    ("http://127.0.0.1:30000/", "http://127.0.0.1:30000"),
    ("HTTPS://spark-01:30000/sglang/", "https://spark-01:30000/sglang"),
    ("  http://[fd00::1]:30000 ", "http://[fd00::1]:30000"),
])
def test_normalize_base_url(given, expected):
    assert h.normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["", "127.0.0.1:30000", "ftp://x:1", "http://", "http://h:1/?q=1"])
def test_normalize_base_url_rejects(bad):
    with pytest.raises(ValueError, match="http"):
        h.normalize_base_url(bad)


def test_build_url_and_auth_headers():
    assert h.build_url("http://h:30000/", "/v1/models") == "http://h:30000/v1/models"
    assert h.build_url("http://h:30000/p", "health") == "http://h:30000/p/health"
    assert h.auth_headers("k3y") == {"Authorization": "Bearer k3y"}
    assert h.auth_headers(None) == {}


def test_backoff_delay_doubles_then_caps():
    assert [h.backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]
    with pytest.raises(ValueError):
        h.backoff_delay(0)


def test_backoff_schedule_fits_the_timeout():
    assert h.backoff_schedule(30) == [1, 2, 4, 8, 10, 5]
    assert sum(h.backoff_schedule(600)) == 600
    assert h.backoff_schedule(0) == []


# --------------------------------------------------------------------------------------------
# /v1/models and chat completions
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, expected, result", [
    (MODELS_QWEN3, "Qwen/Qwen3-30B-A3B-Instruct-2507",
     (["Qwen/Qwen3-30B-A3B-Instruct-2507"], True, "Qwen/Qwen3-30B-A3B-Instruct-2507")),
    (MODELS_QWEN3, None, (["Qwen/Qwen3-30B-A3B-Instruct-2507"], True, "Qwen/Qwen3-30B-A3B-Instruct-2507")),
    (MODELS_QWEN3, "Qwen/Qwen2.5-72B-Instruct", (["Qwen/Qwen3-30B-A3B-Instruct-2507"], False, None)),
    (MODELS_LOCAL_PATH, "/app/models/Deepseek-R1/", (["/app/models/Deepseek-R1/"], True, "/app/models/Deepseek-R1/")),
    (MODELS_SERVED_NAME, "Qwen3-14B", (["Qwen3-14B"], True, "Qwen3-14B")),
    ('{"object":"list","data":[]}', None, ([], False, None)),
])
def test_evaluate_models(body, expected, result):
    assert h.evaluate_models(json.loads(body), expected) == result


# SGLang 0.5.23 with --model-path /models/Qwen2.5-72B-Instruct --served-model-name qwen:
# available_models (srt/entrypoints/http_server.py) builds ModelCard(id=served_model_name,
# root=served_model_name); the model path is not in the answer at all.
MODELS_SERVED_QWEN = {"object": "list", "data": [{"id": "qwen", "object": "model", "owned_by": "sglang",
                                                  "root": "qwen", "parent": None, "max_model_len": 32768}]}


def test_evaluate_models_matches_the_served_name():
    assert h.evaluate_models(MODELS_SERVED_QWEN, "qwen") == (["qwen"], True, "qwen")


def test_evaluate_models_does_not_match_the_model_path_behind_a_served_name():
    # SGLang never reports the model path once --served-model-name is set: asking for it fails.
    assert h.evaluate_models(MODELS_SERVED_QWEN, "/models/Qwen2.5-72B-Instruct") == (["qwen"], False, None)


def test_evaluate_models_ignores_a_lora_adapter_root():
    # With --enable-lora SGLang adds ModelCard(id=lora_name, root=lora_path, parent=served name).
    payload = {"object": "list", "data": [
        {"id": "qwen", "root": "qwen", "parent": None},
        {"id": "sql", "root": "/adapters/sql-lora", "parent": "qwen"}]}
    assert h.evaluate_models(payload, "/adapters/sql-lora") == (["qwen", "sql"], False, None)
    assert h.evaluate_models(payload, "sql") == (["qwen", "sql"], True, "sql")


def test_evaluate_models_rejects_non_list():
    with pytest.raises(h.HealthCheckError, match="model list"):
        h.evaluate_models({"detail": "Not Found"})


def test_chat_payload_asks_usage_only_when_streaming():
    streamed = h.chat_payload("m", "hi", 8, True)
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}
    assert streamed["temperature"] == 0 and streamed["max_tokens"] == 8
    assert "stream_options" not in h.chat_payload("m", "hi", 8, False)


def test_parse_chat_completion():
    # OpenAI chat.completion shape (SGLang's protocol.ChatCompletionResponse).
    payload = {"id": "x", "object": "chat.completion", "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16}}
    assert h.parse_chat_completion(payload) == ("Hello!", 3)
    reasoning = {"choices": [{"message": {"content": None, "reasoning_content": "Thinking"}}]}
    assert h.parse_chat_completion(reasoning) == ("Thinking", None)
    with pytest.raises(h.HealthCheckError, match="error"):
        h.parse_chat_completion({"object": "error", "message": "bad", "code": 400})


def _chunk(delta=None, finish=None, usage=None, choices=True):
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage:
        body["usage"] = usage
    return ("data: %s\n" % json.dumps(body)).encode()


def test_parse_sse_line():
    assert h.parse_sse_line(b"data: [DONE]\n") == ("done", None)
    assert h.parse_sse_line(b"\n") == (None, None)
    assert h.parse_sse_line(": keep-alive\n") == (None, None)
    assert h.parse_sse_line("event: message\n") == (None, None)
    assert h.parse_sse_line(b'data: {"a": 1}\r\n') == ("data", {"a": 1})
    with pytest.raises(h.HealthCheckError, match="not JSON"):
        h.parse_sse_line(b"data: {oops\n")


def test_stream_accumulator_measures_first_content():
    acc = h.StreamAccumulator(started=100.0)
    acc.feed(_chunk({"role": "assistant", "content": ""}), 100.05)  # role chunk: no text yet
    acc.feed(b"\n", 100.06)
    acc.feed(_chunk({"content": "Hel"}), 100.25)
    acc.feed(_chunk({"content": "lo"}, finish="stop"), 100.30)
    acc.feed(_chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}), 100.31)
    assert not acc.done
    acc.feed(b"data: [DONE]\n", 100.32)
    assert acc.done and acc.text == "Hello" and acc.completion_tokens == 2 and acc.chunks == 4
    assert acc.ttft == pytest.approx(0.25)


def test_stream_accumulator_counts_reasoning_and_raises_on_error_chunk():
    acc = h.StreamAccumulator(started=0.0)
    acc.feed(_chunk({"reasoning_content": "Let me"}), 0.5)
    assert acc.ttft == 0.5 and acc.text == "Let me"
    with pytest.raises(h.HealthCheckError, match="streamed an error"):
        acc.feed(b'data: {"object": "error", "message": "boom", "code": 500}\n', 0.6)


# --------------------------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------------------------

def test_parse_production_docs_capture():
    parsed = h.parse_prometheus_text(PRODUCTION_DOCS_METRICS)
    assert parsed["types"]["sglang:time_to_first_token_seconds"] == "histogram"
    assert parsed["types"]["sglang:prompt_tokens_total"] == "counter"
    assert parsed["types"]["sglang:num_queue_reqs"] == "gauge"
    names = [name for name, _labels, _value in parsed["samples"]]
    assert names.count("sglang:time_to_first_token_seconds_bucket") == 21
    first = parsed["samples"][0]
    assert first == ("sglang:prompt_tokens_total", {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}, 8128902.0)
    ttft = h.histogram_summary(parsed["samples"], "sglang:time_to_first_token_seconds")
    assert ttft["count"] == 11008.0 and ttft["sum"] == pytest.approx(2351897.9474117756)
    assert ttft["buckets"][0] == (0.001, 0.0) and ttft["buckets"][-1] == (math.inf, 11008.0)
    func = h.histogram_summary(parsed["samples"], "sglang:func_latency_seconds")
    assert func["buckets"][1] == (0.07500000000000001, 14006.0)


def test_summarize_production_docs_capture():
    metrics = h.summarize_metrics(PRODUCTION_DOCS_METRICS)
    assert metrics == {
        "sglang:num_running_reqs": 162.0,
        "sglang:num_queue_reqs": 2826.0,
        "sglang:token_usage": 0.28,
        "sglang:gen_throughput": 86.50814177726902,
        "sglang:cache_hit_rate": 0.007507552643049313,
        "sglang:prompt_tokens_total": 8128902.0,
        "sglang:generation_tokens_total": 7557572.0,
        # no sglang:num_requests_total and no inter_token_latency histogram in that capture: left out
        "sglang:time_to_first_token_seconds_count": 11008.0,
        "sglang:time_to_first_token_seconds_sum": 2351897.9474117756,
        "sglang:e2e_request_latency_seconds_count": 11228.0,
        "sglang:e2e_request_latency_seconds_sum": 3116093.850019932,
    }


def test_summarize_tp4_capture():
    assert h.summarize_metrics(TP4_METRICS_EXCERPT) == {
        "sglang:num_running_reqs": 0.0, "sglang:num_queue_reqs": 0.0, "sglang:cache_hit_rate": 0.0,
        "sglang:prompt_tokens_total": 6.0, "sglang:generation_tokens_total": 8.0}


def test_summarize_reads_tp_rank_0_of_every_scheduler_series():
    # Two TP ranks each print a series (--enable-metrics-for-all-schedulers): both see the same requests, so the
    # whole is tp_rank 0's, not the sum; counters are per request and summed. Bytes input too.
    text = TP4_METRICS_EXCERPT.replace('tp_rank="0"} 0.0', 'tp_rank="0"} 2.0')
    text += text.replace('tp_rank="0"', 'tp_rank="1"').replace("Qwen3-14B\"} 6.0", "Qwen3-14B\"} 0.0")
    metrics = h.summarize_metrics(text.encode())
    assert metrics["sglang:num_running_reqs"] == 2.0
    assert metrics["sglang:prompt_tokens_total"] == 6.0


def test_parse_labels_escapes_special_values_and_timestamps():
    # Prometheus text-format edge cases (label escapes, spacing, NaN/Inf, an optional timestamp).
    text = ('m{a="x\\"y",b="c\\\\d",c="l\\nm",} 1 1700000000000\n'
            'n +Inf\n'
            'o{} NaN\n'
            'p{le="+Inf"} -Inf\n')
    samples = h.parse_prometheus_text(text)["samples"]
    assert samples[0] == ("m", {"a": 'x"y', "b": "c\\d", "c": "l\nm"}, 1.0)
    assert samples[1] == ("n", {}, math.inf)
    assert math.isnan(samples[2][2]) and samples[2][1] == {}
    assert samples[3][2] == -math.inf


@pytest.mark.parametrize("bad, where", [
    ("sglang:x{model_name=\"a\" 1\n", "line 1"),
    ("# HELP ok\nsglang:x one\n", "line 2"),
    ("sglang:x{model_name=a} 1\n", "line 1"),
    ("<html>502 Bad Gateway</html>\n", "line 1"),
])
def test_parse_rejects_malformed_lines(bad, where):
    with pytest.raises(h.MetricsParseError, match=where):
        h.parse_prometheus_text(bad)


# --------------------------------------------------------------------------------------------
# The whole check, on a fake transport
# --------------------------------------------------------------------------------------------

class FakeClock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class FakeTransport(object):
    """Answers from a script: path -> list of answers (the last one repeats); each answer is an
    HttpResponse, a TransportError to raise, or for streams a (status, [lines]) tuple."""

    def __init__(self, clock, script, step=0.01):
        self.clock = clock
        self.script = script
        self.step = step
        self.calls = []

    def _next(self, method, url, headers, body):
        path = url.split("://", 1)[1].split("/", 1)[1]
        self.calls.append((method, "/" + path, dict(headers or {}), body))
        answers = self.script["/" + path]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        self.clock.now += self.step
        if isinstance(answer, Exception):
            raise answer
        return answer

    def request(self, method, url, headers=None, body=None):
        return self._next(method, url, headers, body)

    def stream(self, method, url, headers=None, body=None):
        status, lines = self._next(method, url, headers, body)

        def gen():
            for line in lines:
                self.clock.now += self.step
                yield line

        return status, gen(), lambda: None


def ok(body=b""):
    return h.HttpResponse(200, body if isinstance(body, bytes) else body.encode())


STREAM_OK = (200, [_chunk({"role": "assistant", "content": ""}), b"\n", _chunk({"content": "Hello"}), b"\n",
                   _chunk({"content": "!"}, finish="stop"), b"\n",
                   _chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
                   b"data: [DONE]\n", b"\n"])


def script(**override):
    base = {
        "/health": [ok()], "/health_generate": [ok()], "/v1/models": [ok(MODELS_QWEN3)],
        "/v1/chat/completions": [STREAM_OK], "/metrics": [ok(TP4_METRICS_EXCERPT)],
    }
    base.update({"/" + k.replace("__", "/").replace("_dot_", "."): v for k, v in override.items()})
    return base


def run_check(answers, **kwargs):
    clock = FakeClock()
    transport = FakeTransport(clock, answers)
    kwargs.setdefault("url", "http://10.0.0.11:30000/")
    check = h.HealthCheck(transport, clock=clock, sleep=clock.sleep, **kwargs)
    return check, transport, clock


def test_check_healthy_server_end_to_end():
    check, transport, clock = run_check(script(), api_key="s3cret", model="Qwen/Qwen3-30B-A3B-Instruct-2507")
    result = check.run()
    assert result["healthy"] and result["health_status"] == 200 and result["attempts"] == 1
    assert result["models"] == ["Qwen/Qwen3-30B-A3B-Instruct-2507"] and result["model_ok"]
    assert result["completion_text"] == "Hello!" and result["completion_tokens"] == 2
    # request sent at t0; chunks arrive one fake step (10 ms) apart; "Hello" is the 3rd line.
    assert result["ttft_s"] == pytest.approx(0.04) and result["total_s"] >= result["ttft_s"]
    assert result["metrics"]["sglang:generation_tokens_total"] == 8.0 and result["metrics_available"]
    assert clock.sleeps == []
    paths = [c[1] for c in transport.calls]
    assert paths == ["/health", "/health_generate", "/v1/models", "/v1/chat/completions", "/metrics"]
    assert all(c[2] == {"Authorization": "Bearer s3cret"} for c in transport.calls)
    chat_body = transport.calls[3][3]
    assert chat_body["model"] == "Qwen/Qwen3-30B-A3B-Instruct-2507" and chat_body["stream"] is True


def test_check_retries_with_backoff_while_loading():
    refused = h.TransportError("connection refused by http://10.0.0.11:30000/health (server not listening yet)")
    answers = script(health=[refused, refused, h.HttpResponse(503), h.HttpResponse(503), ok()])
    check, _transport, clock = run_check(answers)
    result = check.run()
    assert result["attempts"] == 5 and result["healthy"]
    assert clock.sleeps == [1, 2, 4, 8]


def test_check_health_generate_must_pass_too():
    answers = script(health_generate=[h.HttpResponse(503), ok()])
    result = run_check(answers)[0].run()
    assert result["attempts"] == 2
    answers = script(health_generate=[h.HttpResponse(503)])
    check = run_check(answers, check_generate=False)[0]
    assert check.run()["attempts"] == 1


def test_check_times_out_naming_url_and_last_error():
    refused = h.TransportError("connection refused by http://10.0.0.11:30000/health (server not listening yet)")
    check, _transport, clock = run_check(script(health=[refused]), timeout=20)
    with pytest.raises(h.HealthCheckError) as err:
        check.run()
    assert "http://10.0.0.11:30000 not healthy after 20s (6 attempts)" in err.value.msg
    assert "connection refused" in err.value.msg
    assert clock.sleeps[:4] == [1, 2, 4, 8]
    assert clock.sleeps[4] == pytest.approx(4.95)  # the last wait ends at the deadline
    assert err.value.result["healthy"] is False and err.value.result["attempts"] == 6


def test_check_wrong_api_key_fails_at_once():
    answers = script(v1__models=[h.HttpResponse(401, b'{"error":"Unauthorized"}')])
    check, transport, clock = run_check(answers, api_key="wrong")
    with pytest.raises(h.HealthCheckError) as err:
        check.run()
    assert err.value.msg == ("API key rejected by http://10.0.0.11:30000/v1/models (HTTP 401, the key sent was "
                             "refused): set sglang_server_api_key / api_key")
    assert len(transport.calls) == 3 and clock.sleeps == []
    assert err.value.result["healthy"] is True


def test_check_missing_api_key_on_stream_fails_with_hint():
    answers = script(v1__chat__completions=[(401, [b'{"error":"Unauthorized"}'])],
                     v1__models=[ok(MODELS_QWEN3)])
    check = run_check(answers)[0]
    with pytest.raises(h.HealthCheckError, match=r"HTTP 401, no key was sent\): set sglang_server_api_key"):
        check.run()


def test_check_wrong_model_fails_listing_served():
    check = run_check(script(), model="Qwen/Qwen2.5-72B-Instruct")[0]
    with pytest.raises(h.HealthCheckError) as err:
        check.run()
    assert "model 'Qwen/Qwen2.5-72B-Instruct' is not served by http://10.0.0.11:30000" in err.value.msg
    assert "Qwen/Qwen3-30B-A3B-Instruct-2507" in err.value.msg and err.value.result["model_ok"] is False


def test_check_with_served_model_name_passes_and_completes_on_it():
    answers = script(v1__models=[ok(json.dumps(MODELS_SERVED_QWEN))])
    check, transport, _clock = run_check(answers, model="qwen")
    result = check.run()
    assert result["model_ok"] is True and result["served_model"] == "qwen"
    assert transport.calls[3][3]["model"] == "qwen"


def test_check_model_path_behind_served_name_fails_naming_both():
    # The caller names the model path, the server was started with --served-model-name qwen.
    check = run_check(script(v1__models=[ok(json.dumps(MODELS_SERVED_QWEN))]), model="/models/Qwen2.5-72B-Instruct")[0]
    with pytest.raises(h.HealthCheckError) as err:
        check.run()
    assert err.value.msg == ("model '/models/Qwen2.5-72B-Instruct' is not served by http://10.0.0.11:30000; "
                             "/v1/models lists ['qwen']: check sglang_server_model / model")
    assert err.value.result["model_ok"] is False


def test_check_tls_failure_is_not_retried():
    tls = h.TransportError("TLS certificate of https://h:30000/health not accepted", retryable=False)
    check, _transport, clock = run_check(script(health=[tls]), url="https://h:30000")
    with pytest.raises(h.HealthCheckError, match="TLS certificate"):
        check.run()
    assert clock.sleeps == []


def test_check_non_streamed_completion_and_metrics_off():
    plain = ok(json.dumps({"choices": [{"message": {"role": "assistant", "content": "Hi"}}],
                           "usage": {"completion_tokens": 1}}))
    answers = script(v1__chat__completions=[plain], metrics=[h.HttpResponse(404, b'{"detail":"Not Found"}')])
    result = run_check(answers, stream=False)[0].run()
    assert result["completion_text"] == "Hi" and result["ttft_s"] is None and result["total_s"] is not None
    assert result["metrics"] == {} and result["metrics_available"] is False


def test_check_empty_completion_fails():
    empty = (200, [_chunk({"role": "assistant", "content": ""}), _chunk({}, finish="stop"), b"data: [DONE]\n"])
    with pytest.raises(h.HealthCheckError, match="returned no text"):
        run_check(script(v1__chat__completions=[empty]))[0].run()


def test_check_stream_cut_before_done_fails():
    cut = (200, [_chunk({"content": "Hel"})])
    with pytest.raises(h.HealthCheckError, match=r"ended without \[DONE\] after 1 chunks"):
        run_check(script(v1__chat__completions=[cut]))[0].run()


def test_check_metrics_garbage_fails():
    answers = script(metrics=[ok("<html>oops</html>")])
    with pytest.raises(h.HealthCheckError, match="/metrics is not Prometheus text: line 1"):
        run_check(answers)[0].run()


def test_check_skips_metrics_when_asked():
    check, transport, _clock = run_check(script(), check_metrics=False)
    assert check.run()["metrics"] == {}
    assert "/metrics" not in [c[1] for c in transport.calls]


def test_check_pointed_at_a_dummy_rank_says_so():
    # ranks >= 1 answer /health and /health_generate with 200 and nothing else (404 from FastAPI)
    answers = script(v1__models=[h.HttpResponse(404, b'{"detail":"Not Found"}')])
    with pytest.raises(h.HealthCheckError, match=r"rank >= 1 .* point url at rank 0"):
        run_check(answers)[0].run()


# --- the address each rank advertises (get_local_ip_auto in sglang/srt/utils/network.py) ---------------------------

EXPECTED = {"spark-a": {"node_rank": 0, "host_ip": "192.168.100.11"},
            "spark-b": {"node_rank": 1, "host_ip": "192.168.100.12"}}


def test_environ_vars_reads_proc_environ_and_docker_env_lists():
    assert h.environ_vars("A=1\0SGLANG_HOST_IP=10.0.0.1\0B=x=y\0") == {
        "A": "1", "SGLANG_HOST_IP": "10.0.0.1", "B": "x=y"}
    assert h.environ_vars(["PATH=/bin", "HOST_IP=10.0.0.2", "junk"]) == {"PATH": "/bin", "HOST_IP": "10.0.0.2"}
    assert h.environ_vars(None) == {}


def test_advertised_address_problems_name_each_node_and_the_cause():
    good = {"spark-a": {"SGLANG_HOST_IP": "192.168.100.11"}, "spark-b": {"HOST_IP": "192.168.100.12"}}
    assert h.advertised_address_problems(EXPECTED, good) == []
    problems = h.advertised_address_problems(EXPECTED, {"spark-a": {"SGLANG_HOST_IP": ""}, "spark-b": None})
    assert len(problems) == 2
    assert problems[0].startswith("spark-a (rank 0): its running SGLang has no SGLANG_HOST_IP")
    assert "route to 8.8.8.8" in problems[0] and "SGLANG_HOST_IP=192.168.100.11" in problems[0]
    assert "on spark-a run `systemctl revert <service>`" in problems[0]
    assert problems[1].startswith("spark-b (rank 1): no SGLang process runs there")
    wrong = h.advertised_address_problems(EXPECTED, dict(good, **{"spark-b": {"SGLANG_HOST_IP": "172.31.0.2"}}))
    assert wrong == [wrong[0]] and wrong[0].startswith(
        "spark-b (rank 1): its running SGLang advertises SGLANG_HOST_IP=172.31.0.2, not the node's CX7 address "
        "192.168.100.12")


WHOLE = """\
sglang:num_queue_reqs{engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",priority="",tp_rank="0"} 5.0
sglang:num_queue_reqs{engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",priority="1",tp_rank="0"} 3.0
sglang:num_queue_reqs{engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",priority="2",tp_rank="0"} 2.0
sglang:num_running_reqs{engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="0"} 4.0
sglang:num_running_reqs{engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="1",tp_rank="0"} 4.0
sglang:token_usage{dp_rank="0",engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="0"} 0.25
sglang:token_usage{dp_rank="1",engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="0"} 0.75
sglang:gen_throughput{dp_rank="0",engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="0"} 10.0
sglang:gen_throughput{dp_rank="1",engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="0"} 30.0
sglang:num_requests_total{engine_type="unified",model_name="m",priority="1"} 7.0
sglang:num_requests_total{engine_type="unified",model_name="m",priority="2"} 5.0
"""


def test_summarize_metrics_reads_the_series_that_mean_the_whole():
    # metrics_collector.py (SGLang 0.5.23): a queue total under priority="" beside its breakdown, one series per
    # pipeline stage (the same requests), one per DP rank (its own requests); tokenizer counters split by priority.
    got = h.summarize_metrics(WHOLE)
    assert got["sglang:num_queue_reqs"] == 5.0  # not 10: the breakdown is part of the total
    assert got["sglang:num_running_reqs"] == 4.0  # not 8: pp_rank 1 sees the same requests
    assert got["sglang:token_usage"] == 0.75  # a ratio: the fullest DP rank, never 1.0
    assert got["sglang:gen_throughput"] == 40.0  # DP ranks serve different requests
    assert got["sglang:num_requests_total"] == 12.0  # each request counted once, in its priority's series
