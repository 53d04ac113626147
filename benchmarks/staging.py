"""How much the staging role moves, from where, and how fast: site.yml on a lab of N machines, twice.

    sudo .venv/bin/python benchmarks/staging.py [--nodes 2 4] [--size-mb 1024] [--lab-id 2]

For each N: `lab.py up N` (the machines restart pristine when N changes), a model repository of SIZE MB (the lab's
tiny model plus one shard of random bytes) put into the lab's hub stand-in, then site.yml with that model, then
site.yml again. Reports, per run: the bytes the hub stand-in served (one copy of the model is the goal), the pulls
the lab's registry served when it has one, the copy over the CX7 veths per receiving node (size, seconds, MB/s, from
the staging role's report), and the changed count of the second run (0 is the goal). Prints a markdown table.
The lab machines share this host's CPU and disk: the rates are the lab's, not a CX7 link's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "tests" / "lab" / "lab.py"
REPO_ID = "dgxspark-lab/tiny-qwen2-bench"
COPY = re.compile(r"(\S+): model files copied over CX7, ([0-9.]+) GB in ([0-9.]+) s")


def lab(env, *args):
    out = subprocess.run([sys.executable, str(LAB)] + list(args), env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit("lab.py %s failed:\n%s%s" % (" ".join(args), out.stdout, out.stderr))
    return out.stdout


def write_repo(lab_dir, size_mb):
    sys.path.insert(0, str(ROOT / "tests" / "lab"))
    import hub_model  # pylint: disable=import-outside-toplevel
    repo = Path(lab_dir) / "hub" / REPO_ID
    written = hub_model.write_model(repo, seed=7)
    shard = repo / "extra-00001-of-00001.safetensors"
    want = size_mb * 1024 * 1024 - sum(written.values())
    if not shard.is_file() or shard.stat().st_size != want:
        with open(shard, "wb") as handle:
            left = want
            while left > 0:
                chunk = os.urandom(min(left, 16 * 1024 * 1024))
                handle.write(chunk)
                left -= len(chunk)
    return sum(f.stat().st_size for f in repo.iterdir() if f.is_file() and not f.name.startswith("."))


def site(env, inventory):
    t0 = time.monotonic()
    out = subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "site.yml", "-i", str(inventory),
                          "-e", "sglang_server_model=" + REPO_ID], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit("site.yml failed (rc=%d):\n%s" % (out.returncode, out.stdout[-6000:]))
    changed = sum(int(m) for m in re.findall(r"changed=(\d+)", out.stdout.split("PLAY RECAP")[-1]))
    copies = [(h, float(gb), float(s)) for h, gb, s in COPY.findall(out.stdout)]
    return {"seconds": seconds, "changed": changed, "copies": copies, "log": out.stdout}


def registry_pulls(env):
    """Image pulls the lab's registry served since this lab size's `up` (all tags), or '-' without a registry."""
    try:
        return sum(json.loads(lab(env, "registry-stats")).get("pulls", {}).values())
    except SystemExit:
        return "-"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--lab-id", default="2")
    args = parser.parse_args(argv)
    lab_dir = "/var/lib/dgxspark-lab%s" % args.lab_id
    env = dict(os.environ, DGXSPARK_LAB_ID=args.lab_id, DGXSPARK_LAB_DIR=lab_dir, DGXSPARK_LAB_TORCH="1",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (ROOT / ".venv/bin", os.environ["PATH"]))
    rows = []
    for n in args.nodes:
        lab(env, "down")
        inventory = lab(env, "up", str(n)).strip().splitlines()[-1]
        size = write_repo(lab_dir, args.size_mb)
        for run in ("first", "second"):
            before = json.loads(lab(env, "hub-stats"))["total_bytes"]
            result = site(env, inventory)
            served = json.loads(lab(env, "hub-stats"))["total_bytes"] - before
            copied = sum(gb for _h, gb, _s in result["copies"])
            slowest = max((s for _h, _gb, s in result["copies"]), default=0)
            rate = ", ".join("%.0f" % (gb * 1000 / s) for _h, gb, s in result["copies"] if s) or "-"
            rows.append((n, run, size / 1e9, served / 1e9, registry_pulls(env), len(result["copies"]), copied,
                         slowest, rate, result["changed"], result["seconds"]))
            print("# %d nodes, %s run done in %.0f s" % (n, run, result["seconds"]), file=sys.stderr)
    lab(env, "down")
    print("| nodes | run | model GB | hub served GB | registry pulls since up | receivers | copied GB | copy s (slowest) "
          "| MB/s per receiver | changed | site.yml s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| %d | %s | %.3f | %.3f | %s | %d | %.3f | %.2f | %s | %d | %.0f |" % row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
