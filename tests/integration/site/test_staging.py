"""The model and the image, fetched once and shared over the CX7 link (the staging role), after converge and a second
run (Molecule's idempotence): the hub stand-in served one copy, every node holds the pinned commit, verified, and the
units run it offline."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
SOURCE = "lab-spark-01"
CX7 = {"lab-spark-01": "192.168.100.11", "lab-spark-02": "192.168.100.12"}
CACHE = "/var/lib/sglang/huggingface"
REPO_FOLDER = "models--dgxspark-lab--tiny-qwen2"
# Hashes every blob named in the record the way the hub names it (sha256 for LFS files, git blob id otherwise).
VERIFY = r"""
import hashlib, json, os, sys
record = json.load(open('/etc/sglang/pins.json'))['model']
root = os.path.join(sys.argv[1], 'hub', sys.argv[2])
bad = []
for f in record['files']:
    path = os.path.join(root, 'snapshots', record['commit'], f['path'])
    data = open(path, 'rb').read()
    digest = hashlib.sha256(data) if f['lfs'] else hashlib.sha1(b'blob %d\0' % len(data) + data)
    if digest.hexdigest() != f['blob'] or os.path.basename(os.readlink(path)) != f['blob']:
        bad.append(f['path'])
print(json.dumps({'commit': record['commit'], 'bad': bad, 'files': len(record['files'])}))
"""


@pytest.fixture()
def name(host):
    return host.backend.get_hostname()


def record(host):
    return json.loads(host.check_output("cat /etc/sglang/pins.json"))


def hub_stats():
    out = subprocess.run([sys.executable, str(ROOT / "tests/lab/lab.py"), "hub-stats"], capture_output=True, text=True,
                         check=True, env=dict(os.environ))
    return json.loads(out.stdout)


def test_the_hub_served_exactly_one_copy_of_the_model(host):
    files = record(host)["model"]["files"]
    stats = hub_stats()
    served = {path.split("/", 2)[2]: size for path, size in stats["files"].items()
              if path.startswith("dgxspark-lab/tiny-qwen2/")}
    # Converge downloaded each file once, on the source only; the second run (idempotence) downloaded nothing.
    assert served == {f["path"]: f["size"] for f in files}
    assert stats["requests"]["resolve_get"] == len(files), stats


def test_every_node_holds_the_pinned_commit_verified(host):
    result = json.loads(host.check_output("python3 -c %s %s %s", VERIFY, CACHE, REPO_FOLDER))
    assert result["bad"] == [] and result["files"] == 5


def test_every_node_records_the_same_pins(host):
    mine = record(host)
    assert mine["model"]["repo_id"] == "dgxspark-lab/tiny-qwen2" and mine["model"]["requested"] == "main"
    assert len(mine["model"]["commit"]) == 40
    assert mine["image"]["requested"] == "lmsysorg/sglang:v0.5.23-cu130"
    assert mine["image"]["id"].startswith("sha256:")
    # The running container is that image, on every node.
    assert host.check_output("docker inspect --format '{{.Image}}' sglang") == mine["image"]["id"]


def test_the_unit_runs_the_pinned_commit_offline_and_no_node_keeps_a_token(host):
    commit = record(host)["model"]["commit"]
    cmd = host.check_output("systemctl show -p ExecStart --value sglang")
    assert "--revision %s" % commit in cmd and "HF_HUB_OFFLINE=1" in cmd
    env = host.check_output("docker inspect --format '{{json .Config.Env}}' sglang")
    assert "HF_HUB_OFFLINE=1" in json.loads(env)
    assert not host.file("/etc/sglang/secrets.env").exists
    assert host.run("grep -rl HF_TOKEN /etc/sglang /etc/systemd/system").rc == 1


def test_the_copies_went_over_the_cx7_link_once(host, name):
    if name != SOURCE:
        pytest.skip("the source node's staging server logs the copies")
    log = host.check_output("journalctl --no-pager --output cat -u dgxspark-staging")
    starts = [line for line in log.splitlines() if line.startswith("staging server on ")]
    # One server in converge, bound to the source's CX7 address; none in the second run.
    assert len(starts) == 1 and starts[0].startswith("staging server on %s:30090" % CX7[SOURCE]), log
    gets = [line for line in log.splitlines() if '"GET /blobs/' in line]
    assert len(gets) == 5 and all(line.startswith(CX7["lab-spark-02"] + " ") for line in gets), log
    # The image went the same way, unless lab-spark-02 held the very same image ID already.
    images = [line for line in log.splitlines() if '"GET /image/' in line]
    assert len(images) <= 1 and all(line.startswith(CX7["lab-spark-02"] + " ") for line in images)


def test_an_upgrade_stages_the_new_image_everywhere_then_restarts_the_group_once(lab, site_playbook):
    """From the pinned tag to the registry's second tag and back: one registry pull for the new tag (by the source),
    loaded into the other node over CX7, the model not moved again, and each switch one restart of the whole group."""
    pinned = lab.image_tag()
    upgrade = pinned + lab.IMAGE_UPGRADE_SUFFIX
    images = lab.registry_images()
    before = lab.registry_stats()
    hub_before = hub_stats()["total_bytes"]
    starts = {node: lab_ssh(node, "systemctl show -p InvocationID --value sglang") for node in CX7}
    try:
        run = site_playbook("-e", "sglang_server_image=" + upgrade)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-3000:]
        for node in CX7:
            assert json.loads(lab_ssh(node, "cat /etc/sglang/pins.json"))["image"]["id"] == images[upgrade]["image_id"]
            assert lab_ssh(node, "docker inspect --format '{{.Image}}' sglang") == images[upgrade]["image_id"]
            assert lab_ssh(node, "systemctl show -p InvocationID --value sglang") != starts[node]
        after = lab.registry_stats()
        assert after["pulls"][upgrade] - before["pulls"][upgrade] == 1
        assert after["pull_clients"][upgrade][SOURCE] - before["pull_clients"][upgrade].get(SOURCE, 0) == 1
        assert hub_stats()["total_bytes"] == hub_before
        assert "lab-spark-02: image copied over CX7" in out, out[-3000:]
    finally:
        back = site_playbook()
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    for node in CX7:
        assert lab_ssh(node, "docker inspect --format '{{.Image}}' sglang") == images[pinned]["image_id"]
    # The pinned image was still on every node: going back pulls nothing.
    assert lab.registry_stats()["pulls"][pinned] == before["pulls"][pinned]


def lab_ssh(node, command):
    return subprocess.run([sys.executable, str(ROOT / "tests/lab/lab.py"), "ssh", node, command], capture_output=True,
                          text=True, check=True, timeout=180).stdout.strip()


@pytest.mark.parametrize("token, code", [(None, "model-gated"), ("hf_not_the_labs_token", "model-token-refused")])
def test_a_gated_model_without_a_granting_token_fails_in_preflight_before_any_change(site_playbook, token, code):
    """The lab's hub gates a copy of the model (lab.py HUB_GATED_REPO): without a token, or with one it refuses,
    preflight names it from the hub's 401/403, and no task changes anything on any node."""
    extra = ["-e", "sglang_server_model=dgxspark-lab/tiny-qwen2-gated"]
    if token:
        extra += ["-e", "sglang_server_hf_token=" + token]
    run = site_playbook(*extra)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "[%s]" % code in out, out[-3000:]
    assert "changed: [" not in out, out[-3000:]
    if token:
        assert token not in out
