#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sglang_health
short_description: Prove that an SGLang server answers, serves the expected model and generates text
version_added: 0.1.0
description:
  - Checks SGLang B(rank 0) over HTTP(S). Ranks 1 and up of a multi-node group only run a dummy server
    whose C(/health) always answers 200, so point O(url) at rank 0 (the head node).
  - Waits until C(/health) (and, with O(check_generate), C(/health_generate)) answer 200, retrying with
    exponential backoff (1, 2, 4, 8, then every 10 seconds) while the connection is refused or the server
    answers 503 (model loading, ranks still joining), for at most O(timeout) seconds. Then fails, naming
    the URL and the last error.
  - Then reads C(/v1/models) and checks that it lists O(model); sends one real chat completion to
    C(/v1/chat/completions) (streamed by default, so the time to the first token is measured) and fails
    when no text comes back; and, when the server was started with C(--enable-metrics), reads C(/metrics)
    and returns a few key gauges and counters.
  - A 401 or 403 fails at once (no retry) with a message saying to set the API key.
  - Uses only the Python standard library on the target.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
  - dgxspark.sglang.attributes.info_module
attributes:
  check_mode:
    details:
      - This action does not modify state. It runs one short generation (O(max_tokens) tokens), which
        changes no state on the server beyond its request counters and prefix cache, in check mode too.
  platform:
    platforms: posix
options:
  url:
    description:
      - Base URL of SGLang rank 0, C(http://HOST:PORT) (or C(https://) when SGLang runs with
        C(--ssl-certfile)). A path prefix (behind a reverse proxy) is kept.
    type: str
    default: http://127.0.0.1:30000
    version_added: 0.1.0
  api_key:
    description:
      - The server's C(--api-key), sent in an C(Authorization) header as a bearer token (C(Bearer <key>)), the only
        form SGLang accepts (it ignores an C(x-api-key) header and reads the key from no environment variable). SGLang
        does not ask for it on C(/health*) and C(/metrics).
    type: str
    version_added: 0.1.0
  model:
    description:
      - The served model name that must be listed, compared with the C(id) of the entries of C(/v1/models). SGLang
        reports C(--served-model-name) there, or C(--model-path) when no served name is set (as both C(id) and
        C(root)), so pass the served name, not the model path, when the server has a C(--served-model-name).
      - When not set, the check passes with any model and the first one listed is used for the completion.
    type: str
    version_added: 0.1.0
  prompt:
    description:
      - User message of the chat completion.
    type: str
    default: Say hello in one word.
    version_added: 0.1.0
  max_tokens:
    description:
      - Most tokens the completion may generate.
    type: int
    default: 8
    version_added: 0.1.0
  timeout:
    description:
      - Seconds to keep retrying until the server is healthy. Loading a large model across nodes takes
        minutes.
    type: int
    default: 600
    version_added: 0.1.0
  request_timeout:
    description:
      - Seconds one HTTP request may take (the completion included).
    type: int
    default: 30
    version_added: 0.1.0
  validate_certs:
    description:
      - Verify the server's TLS certificate (C(https://) URLs).
    type: bool
    default: true
    version_added: 0.1.0
  ca_path:
    description:
      - CA certificate file (PEM) to verify the server's certificate with, instead of the system's CAs.
    type: path
    version_added: 0.1.0
  use_proxy:
    description:
      - Use the proxy named by E(http_proxy) / E(https_proxy) on the target. Off by default, as the server
        is normally on the cluster's own network.
    type: bool
    default: false
    version_added: 0.1.0
  check_generate:
    description:
      - Also require C(/health_generate) (which runs a one-token generation) to answer 200.
    type: bool
    default: true
    version_added: 0.1.0
  check_metrics:
    description:
      - Read C(/metrics) when the server serves it (C(--enable-metrics)); a 404 (metrics off) is not an error.
    type: bool
    default: true
    version_added: 0.1.0
  stream:
    description:
      - Stream the completion (server-sent events) and measure the time to the first token (RV(ttft_s)).
        When false, one plain request is sent and RV(ttft_s) is null.
    type: bool
    default: true
    version_added: 0.1.0
notes:
  - Targets rank 0 only; checking a rank 1 or higher proves nothing beyond that its process is up.
seealso:
  - name: SGLang production metrics
    description: The Prometheus metrics SGLang exports.
    link: https://github.com/sgl-project/sglang/blob/main/docs/references/production_metrics.md
"""

EXAMPLES = r"""
- name: Wait for the model to load on the head node and prove it generates
  dgxspark.sglang.sglang_health:
    url: "http://{{ spark_head }}:30000"
    api_key: "{{ sglang_server_api_key }}"
    model: Qwen/Qwen2.5-72B-Instruct
    timeout: 1800
  register: health

- name: Report the time to first token
  ansible.builtin.debug:
    msg: "{{ health.served_model }} answered {{ health.completion_text | to_json }} (TTFT {{ health.ttft_s }} s)"

- name: Check an HTTPS server with a private CA, without generating a stream
  dgxspark.sglang.sglang_health:
    url: https://spark-01.example.com:30000
    ca_path: /etc/sglang/ca.pem
    stream: false
"""

RETURN = r"""
url:
  description: Base URL that was checked.
  returned: always
  type: str
  sample: http://192.168.100.11:30000
healthy:
  description: Whether C(/health) (and C(/health_generate) with O(check_generate)) answered 200.
  returned: always
  type: bool
  sample: true
health_status:
  description: HTTP status of the last C(/health) request; null when the connection failed.
  returned: always
  type: int
  sample: 200
attempts:
  description: Number of health probes made (1 when the server was healthy at once).
  returned: always
  type: int
  sample: 4
elapsed_s:
  description: Seconds the whole check took.
  returned: always
  type: float
  sample: 12.402
models:
  description: Model ids listed by C(/v1/models).
  returned: always
  type: list
  elements: str
  sample: [Qwen/Qwen2.5-72B-Instruct]
model_ok:
  description: Whether O(model) is served (any model when O(model) is not set).
  returned: always
  type: bool
  sample: true
served_model:
  description: The model id the chat completion was sent to.
  returned: always
  type: str
  sample: Qwen/Qwen2.5-72B-Instruct
completion_text:
  description: Text the chat completion returned (C(reasoning_content) when the model only reasoned).
  returned: always
  type: str
  sample: Hello!
completion_tokens:
  description: Tokens generated, from the response's C(usage); null when the server did not report it.
  returned: always
  type: int
  sample: 3
ttft_s:
  description: Seconds from sending the streamed request to the first chunk with text; null with O(stream=false).
  returned: always
  type: float
  sample: 0.184
total_s:
  description: Seconds the whole chat completion took.
  returned: always
  type: float
  sample: 0.412
metrics_available:
  description: Whether C(/metrics) answered (the server runs with C(--enable-metrics)).
  returned: always
  type: bool
  sample: true
metrics:
  description:
    - Key SGLang metrics from C(/metrics), for the whole server; a metric the server does not print is absent. Empty
      when metrics are off.
    - A gauge is exported once per scheduler (labels C(tp_rank), C(pp_rank), C(moe_ep_rank), C(dp_rank)) and, with
      priority scheduling, as a total under C(priority="") beside a per-priority breakdown. The value here is that of
      rank 0 of each kind with C(priority="") (every pipeline stage sees the same requests), summed over C(dp_rank);
      the ratios C(sglang:token_usage) and C(sglang:cache_hit_rate) take the largest instead of a sum.
    - Counters and histograms are summed over their label sets, as each request is counted in one series.
    - Gauges C(sglang:num_running_reqs), C(sglang:num_queue_reqs), C(sglang:token_usage),
      C(sglang:gen_throughput), C(sglang:cache_hit_rate); counters C(sglang:prompt_tokens_total),
      C(sglang:generation_tokens_total), C(sglang:num_requests_total); and C(_count) / C(_sum) of the
      histograms C(sglang:time_to_first_token_seconds), C(sglang:e2e_request_latency_seconds),
      C(sglang:inter_token_latency_seconds).
  returned: always
  type: dict
  sample: {"sglang:num_running_reqs": 0.0, "sglang:token_usage": 0.01, "sglang:num_requests_total": 12.0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang_health import (
    DEFAULT_URL,
    HealthCheck,
    HealthCheckError,
    UrllibTransport,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default=DEFAULT_URL),
            api_key=dict(type="str", no_log=True),
            model=dict(type="str"),
            prompt=dict(type="str", default="Say hello in one word."),
            max_tokens=dict(type="int", default=8, no_log=False),
            timeout=dict(type="int", default=600),
            request_timeout=dict(type="int", default=30),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            use_proxy=dict(type="bool", default=False),
            check_generate=dict(type="bool", default=True),
            check_metrics=dict(type="bool", default=True),
            stream=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for name in ("max_tokens", "timeout", "request_timeout"):
        if params[name] < (0 if name == "timeout" else 1):
            module.fail_json(msg="%s must be a positive number of %s, got %s"
                             % (name, "tokens" if name == "max_tokens" else "seconds", params[name]))
    try:
        transport = UrllibTransport(params["request_timeout"], params["validate_certs"], params["ca_path"],
                                    params["use_proxy"])
        check = HealthCheck(transport, url=params["url"], api_key=params["api_key"], model=params["model"],
                            prompt=params["prompt"], max_tokens=params["max_tokens"], timeout=params["timeout"],
                            check_generate=params["check_generate"], check_metrics=params["check_metrics"],
                            stream=params["stream"])
        result = check.run()
    except (ValueError, IOError) as err:  # bad url, unreadable ca_path
        module.fail_json(msg="cannot check SGLang: %s" % err)
    except HealthCheckError as err:
        module.fail_json(msg=err.msg, **err.result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
