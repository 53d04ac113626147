"""The API key rotated and no secret leaked, on the converged lab. Runs after test_staging (the gated model below would
change its hub counts) and before test_verify (which breaks the group on purpose), by file order.

One run of site.yml at -vvv does what an operator does to rotate the key (README, Secrets: a new sglang_server_api_key,
`--tags sglang_server`) together with what a run with a gated model does with the Hugging Face token: the lab's gated
copy of the model, with the token that grants it (lab.py HUB_TOKEN; the source node downloads it with that token,
staging). The output, the unit files and every process's command line hold neither the token nor either key; each
rank restarted once; rank 0 (asked from the controller's allowed address, through the firewall) refuses the old key
and answers the new one. The last step puts the scenario's key and model back (one more restart of the group).
The whole site.yml and verify.yml at -vvv are checked in test_site and test_verify.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
NODES = ("lab-spark-01", "lab-spark-02")
# A request to rank 0's API from the controller's allowed address (the firewall lets it through): the HTTP status.
ASK = r"""
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]} if sys.argv[2] else {})
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def scenario_key():
    return (ROOT / "inventories" / "credentials" / "lab" / "spark-api-key").read_text().split()[0]


def lab_ssh(node, command):
    return subprocess.run([sys.executable, str(ROOT / "tests/lab/lab.py"), "ssh", node, command], capture_output=True,
                          text=True, check=True, timeout=180).stdout.strip()


def status(lab, key):
    """rank 0's answer to GET /v1/models with KEY (a header read from argv, as a client sends it)."""
    url = "http://%s:30000/v1/models" % lab.node_ip(1)
    return subprocess.run(["ip", "netns", "exec", lab.CTL_NS, sys.executable, "-c", ASK, url, key], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def cursor(node):
    return lab_ssh(node, "journalctl -u sglang.service -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")


def starts_since(node, after):
    """Start jobs of sglang.service that systemd finished after the journal cursor AFTER."""
    lines = lab_ssh(node, "journalctl -u sglang.service --after-cursor '%s' -o json --no-pager" % after).splitlines()
    return sum(1 for e in map(json.loads, lines) if e.get("JOB_TYPE") == "start" and e.get("JOB_RESULT") == "done")


def gated_bytes(lab):
    """Bytes of the gated repository's files that the lab's hub stand-in has served."""
    files = lab.hub_request("/_stats")["files"]
    return sum(size for path, size in files.items() if path.startswith(lab.HUB_GATED_REPO + "/"))


def leaks(node, words):
    """The secrets among WORDS that a unit file or a process's command line on NODE holds."""
    units = lab_ssh(node, "systemctl cat sglang.service dgxspark-firewall.service; cat /etc/systemd/system/*.service")
    cmdlines = lab_ssh(node, "ps -eo args; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; "
                             "docker inspect --format '{{json .Config.Cmd}} {{json .Args}}' sglang")
    return [w for w in words if w in units or w in cmdlines]


def test_a_new_key_takes_one_group_restart_the_old_is_refused_and_no_secret_leaks(lab, site_playbook, extra_vars_file):
    old, new, token = scenario_key(), "rotated" + secrets.token_hex(20), lab.HUB_TOKEN
    assert status(lab, old) == "200" and status(lab, "") == "401"
    for node in NODES:  # the gated copy is downloaded in this run, whatever an earlier run left
        lab_ssh(node, "rm -rf /var/lib/sglang/huggingface/hub/models--%s" % lab.HUB_GATED_REPO.replace("/", "--"))
    served = gated_bytes(lab)
    cursors = {node: cursor(node) for node in NODES}
    rotation = {"sglang_server_api_key": new, "sglang_server_hf_token": token, "sglang_server_model": lab.HUB_GATED_REPO}
    try:
        # What an operator runs to rotate the key (README, Secrets); staging for the gated model.
        with extra_vars_file(rotation) as values:
            run = site_playbook("-vvv", "--tags", "staging,sglang_server", "-e", values)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-3000:]
        # The token was really used: the hub served the gated model's files (refused without it: test_staging).
        assert gated_bytes(lab) > served
        assert [w for w in (token, new, old) if w in out] == []
        # One restart of the whole group: one start on each node.
        assert {node: starts_since(node, cursors[node]) for node in NODES} == {node: 1 for node in NODES}
        assert status(lab, old) == "401" and status(lab, new) == "200"
        for node in NODES:
            assert leaks(node, (token, new, old)) == [], node
    finally:
        with extra_vars_file({"sglang_server_api_key": old}) as values:
            back = site_playbook("--tags", "staging,sglang_server", "-e", values)
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert status(lab, new) == "401" and status(lab, old) == "200"
