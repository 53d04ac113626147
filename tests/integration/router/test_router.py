"""SGLang's router (SMG, the real binary from its wheel) in front of three one-node SGLang groups on a lab of its own.

``lab.py up 3`` with the torch venv (the native runtime's interpreter, for the SGLang stand-in); an inventory of three
one-node groups made from the one the lab wrote: ``replica_a`` (lab-spark-01) and ``replica_b`` (lab-spark-02) serve
the lab's model, ``other_model`` (lab-spark-03) serves it under another name; every group has the same API key. The
router runs on lab-spark-01 and is installed from a wheelhouse that ``lab.py serve`` hands to the machines, which reach
no PyPI (tests/integration/router/wheelhouse.txt, downloaded once into the lab folder).

Then, through the router only: requests for the lab's model are spread over both of its groups and never reach the
other model's group; requests naming the other model reach only that group; with replica_b stopped every request still
succeeds. The router's role: --check on the fresh host, a run, a second run that changes nothing, the API key on no
command line. verify.yml on one group checks that group and the router. A lab of its own (three machines, a group
stopped); it takes the lab ids of the environment, as the scenarios do (``DGXSPARK_LAB_ID``, ``DGXSPARK_LAB_DIR``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
PIP = str(Path(sys.executable).parent / "pip")
KEY = "router-lab-key-0123456789abcdef"
ROUTER_PORT = 8000
GROUPS = {"replica_a": "lab-spark-01", "replica_b": "lab-spark-02", "other_model": "lab-spark-03"}
OTHER = "tiny-qwen2-other"
REQUESTS = 40
CHAT = "POST /v1/chat/completions"
LAB_UP = ("3", "--with-torch")   # the own_lab fixture (tests/integration/conftest.py)


def lab_cmd(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "tests/lab/lab.py"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def sh(node, cmd, timeout=120):
    """A command on lab machine NODE (1-based) over SSH."""
    return lab_cmd("ssh", str(node), cmd, timeout=timeout)


def playbook_argv(inventory, play, *extra):
    return [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(play), *extra]


ENV = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def playbook(inventory, play, *extra):
    return subprocess.run(playbook_argv(inventory, play, *extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=900, check=False)


def groups_deployed(inventory):
    """The three groups deployed at once, one ansible-playbook each (as `site.yml -e spark_group=GROUP` would be run)."""
    runs = {group: subprocess.Popen(playbook_argv(inventory, HERE / "converge.yml", "-e", "spark_group=" + group),
                                    cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for group in GROUPS}
    outputs = {group: run.communicate(timeout=900)[0] for group, run in runs.items()}
    for group, run in runs.items():
        assert run.returncode == 0, "%s:\n%s" % (group, outputs[group][-6000:])


def recap(res, host="lab-spark-01"):
    found = re.search(r"%s\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % host, res.stdout)
    assert found, res.stdout[-4000:] + res.stderr[-2000:]
    return {k: int(v) for k, v in zip(("ok", "changed", "unreachable", "failed"), found.groups())}


def wheelhouse(lab):
    """The pinned wheels for the lab machines (CPython 3.11, x86_64), downloaded once into the lab folder."""
    folder = lab.LAB_DIR / "router-wheelhouse"
    pins = [line for line in (HERE / "wheelhouse.txt").read_text().splitlines() if line and not line.startswith("#")]
    have = {p.name.split("-")[0].lower().replace("_", "-") for p in folder.glob("*.whl")} if folder.is_dir() else set()
    if {pin.split("==")[0].lower().replace("_", "-") for pin in pins} - have:
        folder.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([PIP, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
                              "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                              "-d", str(folder), *pins], capture_output=True, text=True, check=False, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return folder


def write_inventory(lab_inventory: Path, folder: Path, wheels_url: str) -> Path:
    """Three one-node groups and the router, from the inventory `lab.py up 3` wrote (its hosts and group_vars)."""
    hosts = yaml.safe_load((lab_inventory / "hosts.yml").read_text())["all"]["children"]["spark"]["hosts"]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(lab_inventory / "group_vars", folder / "group_vars", dirs_exist_ok=True)
    # The lab's cluster settings (group_vars/spark.yml) for the parent of the three groups, with the native runtime and
    # one API key for all of them (a group_vars file: it outranks the hosts file's group vars).
    # group_vars/spark.yml (a 2-machine lab), or group_vars/spark/*.yml (more: the switch's settings beside it, which
    # one-node groups do not need).
    spark_vars = folder / "group_vars" / "spark.yml"
    spark_dir = folder / "group_vars" / "spark"
    shared = {}
    for part in [spark_vars] if spark_vars.exists() else sorted(spark_dir.glob("*.yml")):
        shared.update(yaml.safe_load(part.read_text()) or {})
    shared.pop("spark_cx7_topology", None)
    if spark_vars.exists():
        spark_vars.unlink()
    else:
        shutil.rmtree(spark_dir)
    shared.update(sglang_server_runtime="native", sglang_server_api_key=KEY,
                  sglang_server_credentials_dir=str(folder / "credentials"))
    (folder / "group_vars" / "replicas.yml").write_text(yaml.safe_dump(shared, sort_keys=False))
    inventory = {"all": {"children": {
        "replicas": {
            "children": {group: {"hosts": {host: dict(hosts[host])}} for group, host in GROUPS.items()},
        },
        "sglang_router": {
            "hosts": {"lab-spark-01": {}},
            "vars": {"sglang_router_groups": list(GROUPS), "sglang_router_port": ROUTER_PORT,
                     "sglang_router_pip_find_links": wheels_url, "sglang_router_health_timeout_s": 120,
                     # SMG checks a worker that is not up yet every 30 s by default: 5 here.
                     "sglang_router_extra_args": {"worker-startup-check-interval": 5}},
        },
    }}}
    # One CX7 address plan per group: each one-node group is rank 0 of its own plan, so the nodes (on the lab's shared
    # CX7 bridges) get their addresses pinned apart.
    for i, host in enumerate(GROUPS.values()):
        node = inventory["all"]["children"]["replicas"]["children"][list(GROUPS)[i]]["hosts"][host]
        node["spark_cx7_addresses"] = ["192.168.100.%d" % (11 + i), "192.168.101.%d" % (11 + i)]
    (folder / "group_vars" / "other_model.yml").write_text(yaml.safe_dump(
        {"sglang_server_args": dict(shared["sglang_server_args"], **{"served-model-name": OTHER})}))
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def inventory(tmp_path_factory, lab, own_lab):
    served = lab_cmd("serve", str(wheelhouse(lab)))
    assert served.returncode == 0, served.stderr
    return write_inventory(Path(own_lab), tmp_path_factory.mktemp("inventory"), served.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def deployed(inventory):
    """The three groups, then the router: --check on the fresh router host, a run, a second run."""
    groups_deployed(inventory)
    router = REPO / "playbooks" / "router.yml"
    runs = [playbook(inventory, router, "--check"), playbook(inventory, router), playbook(inventory, router)]
    for res in runs:
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    return runs


def model_of(group):
    return OTHER if group == "other_model" else "tiny-qwen2-lab"


def chat_counts():
    """Chat completions each group's rank 0 served so far (its journal: one line per HTTP request)."""
    counts = {}
    for i, group in enumerate(GROUPS, 1):
        res = sh(i, "journalctl -u sglang -o cat --no-pager | grep -c '%s' || true" % CHAT)
        counts[group] = int(res.stdout.strip() or 0)
    return counts


CLIENT = r"""
import json, sys, urllib.request, urllib.error
model, count, key, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
codes = []
for i in range(count):
    body = json.dumps({"model": model, "max_tokens": 3,
                       "messages": [{"role": "user", "content": "request %d: a prompt of its own, %s" % (i, i * 7919)}]})
    req = urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % port, body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key} if key else
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.load(resp)
            codes.append(resp.status if answer.get("model") == model and answer.get("choices") else -1)
    except urllib.error.HTTPError as err:
        codes.append(err.code)
print(json.dumps(codes))
"""


def through_router(model, count, key=KEY):
    """COUNT chat completions naming MODEL, sent to the router from its host; the HTTP status of each."""
    res = sh(1, "python3 - %s %d %s %d <<'EOF'\n%sEOF" % (model, count, key or "''", ROUTER_PORT, CLIENT), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_check_mode_on_the_fresh_router_host_then_a_second_run_changes_nothing(deployed):
    check, first, second = deployed
    assert recap(check)["changed"] > 0 and recap(first)["changed"] > 0
    assert recap(second)["changed"] == 0, second.stdout[-4000:]
    assert "every group healthy" in first.stdout


def test_the_unit_runs_the_pinned_smg_with_no_key_on_any_command_line(deployed):
    unit = sh(1, "systemctl cat sglang-router").stdout
    assert "--worker-urls" in unit and "--policy cache_aware" in unit and "--disable-tokenizer-autoload" in unit
    assert KEY not in unit
    assert sh(1, "/opt/sglang-router/venv/bin/python -c 'import importlib.metadata as m; print(m.version(\"smg\"))'"
              ).stdout.strip() == "1.13.0"
    cmdlines = sh(1, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert KEY not in cmdlines
    env = sh(1, "stat -c '%a %U' /etc/sglang-router/router.env").stdout.split()
    assert env == ["600", "root"]
    assert sh(1, "ps -o user= -p $(systemctl show -p MainPID --value sglang-router)").stdout.strip() != "root"


def test_requests_spread_over_the_groups_of_their_model_only(deployed):
    before = chat_counts()
    assert through_router("tiny-qwen2-lab", REQUESTS) == [200] * REQUESTS
    assert through_router(OTHER, 6) == [200] * 6
    after = chat_counts()
    served = {group: after[group] - before[group] for group in GROUPS}
    assert served["replica_a"] + served["replica_b"] == REQUESTS, served
    assert served["replica_a"] >= REQUESTS // 8 and served["replica_b"] >= REQUESTS // 8, served
    assert served["other_model"] == 6, served


def test_without_the_key_the_router_refuses(deployed):
    assert through_router("tiny-qwen2-lab", 1, key=None) == [401]


def test_the_router_keeps_serving_with_one_group_stopped(deployed):
    stop = sh(2, "systemctl stop sglang")
    assert stop.returncode == 0, stop.stderr
    try:
        before = chat_counts()
        assert through_router("tiny-qwen2-lab", 20) == [200] * 20
        after = chat_counts()
        assert after["replica_a"] - before["replica_a"] == 20
        assert after["replica_b"] == before["replica_b"]
    finally:
        sh(2, "systemctl start sglang")


def test_verify_checks_a_group_and_the_router(inventory, deployed):
    res = playbook(inventory, REPO / "playbooks" / "verify.yml", "-e", "spark_group=other_model")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "Check SGLang's router, every group behind it and each model through it" in res.stdout
    assert "every group healthy" in res.stdout
