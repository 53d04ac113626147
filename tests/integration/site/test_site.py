"""site.yml on the lab: every node serves its rank of one SGLang group, secrets stay secret."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
RANK = {"lab-spark-01": 0, "lab-spark-02": 1}
DIST_INIT = "192.168.100.11:20000"
API = "http://127.0.0.1:30000"


def api_key():
    return (ROOT / "inventories" / "credentials" / "lab" / "spark-api-key").read_text().split()[0]


def flags(cmdline):
    words = cmdline.split()
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


@pytest.fixture()
def name(host):
    return host.backend.get_hostname()


def test_unit_is_active_with_its_own_rank_and_the_group_flags(host, name):
    assert host.service("sglang").is_running
    assert host.service("sglang").is_enabled
    cmd = host.check_output("systemctl show -p ExecStart --value sglang")
    got = flags(cmd)
    assert got["--node-rank"] == str(RANK[name])
    assert got["--nnodes"] == "2"
    assert got["--dist-init-addr"] == DIST_INIT
    assert got["--config"] == "/etc/sglang/server.yaml"


def test_secrets_are_0600_and_appear_in_no_unit_and_no_command_line(host):
    key = api_key()
    f = host.file("/etc/sglang/server.yaml")
    assert f.exists and f.user == "root" and f.mode == 0o600
    assert key in host.file("/etc/sglang/server.yaml").content_string
    units = host.check_output("systemctl cat sglang")
    assert key not in units
    assert key not in host.check_output("ps -eo args")
    assert key not in host.check_output("cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '")


def test_rank0_answers_a_chat_completion_with_the_key_and_refuses_it_without(host, name):
    if RANK[name] != 0:
        pytest.skip("only rank 0 serves the API (ranks >= 1 answer a dummy /health)")
    body = json.dumps({"model": "Qwen/Qwen2.5-0.5B-Instruct", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "Say hello"}]})
    curl = ("python3 -c 'import sys,urllib.request as u; "
            "r=u.Request(sys.argv[1], data=sys.argv[2].encode(), headers=dict(h.split(\": \",1) for h in sys.argv[3:])); "
            "print(u.urlopen(r).read().decode())' ")
    ok = host.run(curl + "%s %s %s %s", API + "/v1/chat/completions", body,
                  "Content-Type: application/json", "Authorization: Bearer " + api_key())
    assert ok.rc == 0, ok.stderr
    assert json.loads(ok.stdout)["choices"][0]["message"]["content"]
    refused = host.run(curl + "%s %s %s", API + "/v1/chat/completions", body, "Content-Type: application/json")
    assert refused.rc != 0 and "401" in refused.stderr


def test_rerun_changes_nothing_and_prints_no_secret(lab, site_playbook, extra_vars_file):
    """At -vvv, with a Hugging Face token that the run really sends: the refresh asks the hub for the model's commit
    and checks the token against its files (the same commit: nothing changes). test_tokens does it with a gated model."""
    before = lab.hub_request("/_stats")["requests"]
    with extra_vars_file({"sglang_server_hf_token": lab.HUB_TOKEN, "sglang_server_model_refresh": True}) as secrets:
        run = site_playbook("-vvv", "-e", secrets)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert api_key() not in out and lab.HUB_TOKEN not in out
    after = lab.hub_request("/_stats")["requests"]
    assert [after.get(k, 0) - before.get(k, 0) for k in ("api", "resolve_head", "resolve_get")] == [1, 1, 0], after
    recap = [line for line in out.splitlines() if line.startswith("lab-spark-")]
    assert recap and all("changed=0" in line for line in recap), recap


@pytest.mark.parametrize("bad,named", [
    ({"schedule-heuristic": "lpm"}, "schedule-policy"),
    ({"kv-cache-dtype": "fp8"}, "fp8_e4m3"),
])
def test_bad_flags_fail_before_any_host_changes(bad, named, site_playbook):
    before = subprocess.run(["python3", str(ROOT / "tests/lab/lab.py"), "ssh", "lab-spark-01",
                             "stat -c %Y /etc/systemd/system/sglang.service"],
                            capture_output=True, text=True, check=True).stdout
    run = site_playbook("-e", json.dumps({"sglang_server_args": bad}))
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert named in out, out[-3000:]
    assert not [line for line in out.splitlines() if line.startswith("changed: [")], out[-3000:]
    after = subprocess.run(["python3", str(ROOT / "tests/lab/lab.py"), "ssh", "lab-spark-01",
                            "stat -c %Y /etc/systemd/system/sglang.service"],
                           capture_output=True, text=True, check=True).stdout
    assert before == after


def lab_ssh(node, command, check=True, stdin=None):
    return subprocess.run(["python3", str(ROOT / "tests/lab/lab.py"), "ssh", node, command], input=stdin,
                          capture_output=True, text=True, check=check, timeout=180)


# A stale override, as a user or an older tool leaves one: a drop-in that runs the unit's own command line without
# SGLANG_HOST_IP (the container runtime passes it as `--env`, the native one as Environment=). site.yml cannot see it.
STALE_DROPIN = r"""
import os
lines = open("/etc/systemd/system/sglang.service").read().splitlines()
start = next(i for i, line in enumerate(lines) if line.startswith("ExecStart="))
end = start
while lines[end].endswith("\\"):
    end += 1
command = [line for line in lines[start:end + 1] if "SGLANG_HOST_IP=" not in line]
command[-1] = command[-1].rstrip(" \\")
os.makedirs("/etc/systemd/system/sglang.service.d", exist_ok=True)
with open("/etc/systemd/system/sglang.service.d/stale.conf", "w") as out:
    out.write("[Service]\nUnsetEnvironment=SGLANG_HOST_IP\nExecStart=\n" + "\n".join(command) + "\n")
"""


def test_without_sglang_host_ip_the_group_never_forms_and_the_health_step_names_the_cause(lab, site_playbook):
    """SGLang advertises get_local_ip_auto(): without SGLANG_HOST_IP, the route to 8.8.8.8, i.e. the management
    address, which the lab (like a Spark's LAN) does not carry between machines. A stale drop-in that drops the
    variable on the head is a change site.yml does not see: its health step must name the node and the cause."""
    lab_ssh("lab-spark-01", "python3 - && systemctl daemon-reload", stdin=STALE_DROPIN)
    try:
        for node in ("lab-spark-01", "lab-spark-02"):  # the group restarts as a whole, as the role does it
            lab_ssh(node, "systemctl stop sglang")
        for node in ("lab-spark-01", "lab-spark-02"):
            lab_ssh(node, "systemctl start sglang")
        run = site_playbook("--tags", "sglang_server", "-e", "sglang_server_health_timeout_s=30")
        out = run.stdout + run.stderr
        assert run.returncode != 0, out[-3000:]
        journal = lab_ssh("lab-spark-01", "journalctl -u sglang -o cat --no-pager").stdout
        # The writer of SGLang's message queue bound the management address, and nobody reached it.
        assert "SGLang's get_local_ip_auto() chose %s" % lab.node_ip(1) in journal, journal[-2000:]
        assert "The server is fired up" not in journal.rsplit("get_local_ip_auto() chose", 1)[1]
        assert "CAUSE: lab-spark-01 (rank 0): its running SGLang has no SGLANG_HOST_IP" in out, out[-3000:]
        assert "CAUSE: lab-spark-02" not in out, out[-3000:]
    finally:
        # The fix the message gives: revert the override, stop the rank, and site.yml restarts the whole group.
        lab_ssh("lab-spark-01", "systemctl revert sglang && systemctl stop sglang")
    run = site_playbook("--tags", "sglang_server")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    journal = lab_ssh("lab-spark-01", "journalctl -u sglang -o cat --no-pager -n 40").stdout
    assert "SGLang's get_local_ip_auto() chose 192.168.100.11" in journal, journal[-2000:]
