"""HTTPS on rank 0 (molecule/lab sets sglang_server_tls: true), on the lab's converge.

The role made the group's self-signed certificate once on the controller, installed it with its key (the service
user's, 0600) on every node, and started SGLang with --ssl-certfile/--ssl-keyfile; the converge's own health check
already verified it with the CA. Here: the plan's URL really is HTTPS (plain HTTP gets no answer from it), and
dgxspark.sglang.sglang_health, run by Ansible as a user runs it, accepts the certificate with the group's CA and
refuses it with another CA.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAD = "lab-spark-01"
URL = "https://127.0.0.1:30000"
CA = "/etc/sglang/tls-ca.pem"
WRONG_CA = "/tmp/dgxlab-wrong-ca.pem"


@pytest.fixture()
def head(host):
    if host.backend.get_hostname() != HEAD:
        pytest.skip("only rank 0 serves the API")
    return host


def sglang_health(inventory, **args):
    """The module on the head through `ansible` (ad hoc), as a playbook would run it; its result as a dict."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible", HEAD, "-i", inventory, "-m", "dgxspark.sglang.sglang_health", "-a", json.dumps(args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    try:
        plays = json.loads(proc.stdout)["plays"]
    except (ValueError, KeyError):
        raise AssertionError("ansible printed no JSON (rc %d): %s %s" % (proc.returncode, proc.stdout, proc.stderr))
    return plays[0]["tasks"][0]["hosts"][HEAD]


@pytest.fixture(name="inventory")
def fixture_inventory(request):
    inventory = request.config.option.ansible_inventory or os.environ.get("DGXSPARK_LAB_INVENTORY")
    if not inventory:
        pytest.skip("needs the lab's inventory (--ansible-inventory, as Molecule passes it)")
    return inventory


def test_rank0_serves_https_with_the_group_s_certificate(head):
    unit = head.check_output("systemctl show -p ExecStart --value sglang")
    assert "--ssl-certfile /etc/sglang/tls-cert.pem" in unit and "--ssl-keyfile /etc/sglang/tls-key.pem" in unit
    key = head.file("/etc/sglang/tls-key.pem")
    assert (key.user, key.mode) == ("sglang", 0o600)
    # Plain HTTP on the port gets no HTTP answer.
    plain = head.run("python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:30000/health\", timeout=5)'")
    assert plain.rc != 0


def test_sglang_health_accepts_the_ca_and_refuses_another(head, inventory):
    key = head.check_output("sed -n 's/^api-key: *//p' /etc/sglang/server.yaml")
    good = sglang_health(inventory, url=URL, ca_path=CA, api_key=json.loads(key), timeout=30)
    assert good.get("healthy") is True, good
    # Another CA: a certificate made for the same names, which did not sign the server's.
    wrong = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-days", "1", "-subj", "/CN=spark SGLang", "-addext",
                            "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", "/dev/null", "-out", "-"],
                           capture_output=True, text=True, check=True).stdout
    head.run_test("printf '%%s' %s > %s" % (shlex.quote(wrong), WRONG_CA))
    try:
        bad = sglang_health(inventory, url=URL, ca_path=WRONG_CA, timeout=30)
    finally:
        head.run("rm -f %s" % WRONG_CA)
    assert bad.get("failed") is True and bad.get("healthy") is not True, bad
    assert "TLS certificate of %s/health not accepted" % URL in bad["msg"], bad["msg"]
    assert bad.get("attempts") == 1  # refused at once, not retried for the timeout
