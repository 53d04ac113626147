"""The stand-in logs like SGLang 0.5.23, and the sglang_server role's logging configuration keeps the API key out.

SGLang's ``_launch_subprocesses`` runs ``configure_logger`` (``srt/utils/common.py``) and then logs
``server_args=...``, the API key included, at info through ``sglang.srt.entrypoints.engine``. The stand-in runs the
wheel's own ``configure_logger``, so ``SGLANG_LOGGING_CONFIG_PATH`` works on it as on SGLang. The configuration is
the role's own template (roles/sglang_server/templates/logging.json.j2), rendered here with Ansible's filter.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.request

import jinja2
import pytest
from ansible.plugins.filter.core import to_nice_json

from ansible_collections.dgxspark.sglang.tests.unit.standin import StandIn, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "sglang_server" / "templates" / "logging.json.j2"
MODEL = "dgxspark-lab/tiny-qwen2"
KEY = "sk-lab-key-in-server-args-4242"


def render(server_args):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_nice_json"] = to_nice_json
    text = env.from_string(TEMPLATE.read_text()).render(__sglang_server_group={"server_args": server_args})
    return json.loads(text)


def up(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run_until_up(tmp_path, name, config=None, extra=()):
    """Start the stand-in (one node) with the key in a --config file, as the role does; its log once it is up."""
    server_yaml = tmp_path / "server.yaml"
    server_yaml.write_text("api-key: %s\n" % KEY)
    env = {}
    if config is not None:
        path = tmp_path / ("%s.json" % name)
        path.write_text(json.dumps(config))
        env["SGLANG_LOGGING_CONFIG_PATH"] = str(path)
    port = free_port()
    server = StandIn(tmp_path, name, "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
                     "--config", str(server_yaml), *extra, env=env)
    try:
        server.wait_listening(port)
        deadline = time.monotonic() + 30
        while not up("http://127.0.0.1:%d/health" % port):  # Up once warm: the line of "fired up" is written then
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        assert server.stop() == 0, server.output()
    return server.output()


def test_without_a_logging_config_the_key_is_logged_at_info_as_by_sglang(tmp_path):
    out = run_until_up(tmp_path, "plain")
    line = next(line for line in out.splitlines() if "server_args=" in line)
    assert line.startswith("[") and "server_args={'model_path': '%s'" % MODEL in line
    assert "'api_key': '%s'" % KEY in line
    assert "The server is fired up and ready to roll!" in out


def test_the_role_s_logging_config_drops_that_line_and_keeps_info(tmp_path):
    out = run_until_up(tmp_path, "role", render({}))
    assert KEY not in out and "server_args=" not in out
    # Other loggers of SGLang stay at info (disable_existing_loggers is false).
    assert "The server is fired up and ready to roll!" in out


@pytest.mark.parametrize("args, root, engine", [
    ({}, "INFO", "WARNING"),
    ({"log-level": "debug"}, "DEBUG", "WARNING"),
    ({"log_level": "warn"}, "WARNING", "WARNING"),
    ({"log-level": "error"}, "ERROR", "ERROR"),
])
def test_the_root_level_follows_log_level_and_the_engine_logger_stays_quiet(args, root, engine):
    config = render(args)
    assert config["root"]["level"] == root
    assert config["loggers"]["sglang.srt.entrypoints.engine"]["level"] == engine
    assert config["disable_existing_loggers"] is False


def test_a_config_that_disables_existing_loggers_silences_sglang_s_own(tmp_path):
    # Why the role's file says disable_existing_loggers: false (dictConfig's default is true): SGLang's modules made
    # their loggers before configure_logger runs.
    config = dict(render({}), disable_existing_loggers=True)
    out = run_until_up(tmp_path, "disabled", config)
    assert "The server is fired up and ready to roll!" not in out and KEY not in out
