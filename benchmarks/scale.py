"""Second (idempotent) run of site.yml on 2, 4 and 8 lab machines: wall time and CPU.

    sudo .venv/bin/python benchmarks/scale.py [--native] [--topology switch] [2 4 8]

--native: the native runtime (the lab's torch venv, no image; lighter on a shared host). --topology: the
spark_cx7_topology of every size (default switch: the lab's bridges are a switch, and direct refuses more than two
nodes), so that the 2-node baseline runs the same peer checks (each node pings its ring successor over both twins).
Uses the lab of DGXSPARK_LAB_ID / DGXSPARK_LAB_DIR, as tests/lab/lab.py does.

For each size: the lab is brought up with that many machines (tests/lab/lab.py), site.yml converges
once (not measured), then runs again and is measured: wall time, the controller's CPU seconds (the
ansible-playbook process and every child it waited for: forks, ssh, the ProxyCommand) and the
machines' CPU seconds (the sum of cpuacct.usage over the lab's per-machine cgroups, which counts every
process a machine ran, exited ones included). The second run must report changed=0 on every host.
The lab shares this machine's 2 cores, so wall time grows with the work; CPU per node must stay flat: the table
gives the controller's and the machines' CPU seconds per node, each against the first size's.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAB = ["python3", str(ROOT / "tests/lab/lab.py")]
# tests/lab/lab.py's cgroup of the lab (CGROUP_NAME): one folder per machine.
CPUACCT = pathlib.Path("/sys/fs/cgroup/cpuacct/dgxspark-lab" + os.environ.get("DGXSPARK_LAB_ID", ""))


def machines_cpu_s():
    return sum(int((d / "cpuacct.usage").read_text()) for d in CPUACCT.iterdir() if d.is_dir()) / 1e9


def playbook(inventory, log, extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (ROOT / ".venv/bin", os.environ["PATH"]))
    with open(log, "w") as fh:
        rc = subprocess.call(["ansible-playbook", "site.yml", "-i", inventory] + extra, cwd=ROOT, env=env,
                             stdout=fh, stderr=subprocess.STDOUT)
    text = pathlib.Path(log).read_text()
    if rc != 0:
        sys.exit("site.yml failed (rc %d), see %s:\n%s" % (rc, log, text[-3000:]))
    return text


def site_args(native, topology):
    extra = ["-e", "spark_cx7_topology=%s" % topology,
             "-e", "sglang_server_credentials_dir=%s" % (ROOT / "inventories/credentials/lab")]
    if native:
        extra += ["-e", "sglang_server_runtime=native"]
    return extra


def idle_rate(seconds):
    """The machines' CPU seconds per second while nothing runs on them (their services: systemd, the SGLang
    stand-in, Docker): on this host's shared cores a run on more machines lasts longer, and this background, which
    a real Spark spends on its own cores whether Ansible runs or not, would be counted as the run's."""
    before = machines_cpu_s()
    time.sleep(seconds)
    return (machines_cpu_s() - before) / seconds


def measure(n, native, topology, reuse=False, idle_s=30):
    if not reuse:
        subprocess.run(LAB + ["down"], check=True, capture_output=True)
    env = dict(os.environ, DGXSPARK_LAB_TORCH="1") if native else None
    inventory = subprocess.run(LAB + ["up", str(n)], check=True, capture_output=True, text=True,
                               env=env).stdout.split()[-1]
    extra = site_args(native, topology)
    playbook(inventory, "/tmp/scale-%d-first.log" % n, extra)
    idle = idle_rate(idle_s)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machines = machines_cpu_s()
    t0 = time.monotonic()
    text = playbook(inventory, "/tmp/scale-%d-second.log" % n, extra)
    wall = time.monotonic() - t0
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    machines = machines_cpu_s() - before_machines
    controller = (after_children.ru_utime - before_children.ru_utime) + (after_children.ru_stime - before_children.ru_stime)
    changed = [int(c) for c in re.findall(r"changed=(\d+)", text)]
    if len(changed) != n or any(changed):
        sys.exit("second run on %d nodes was not idempotent: %s" % (n, changed))
    return wall, controller, machines, idle * wall


def table(rows):
    """Markdown rows: per node, the controller's CPU seconds, the machines' (less their idle background over the run's
    wall time) and both, each against the smallest size."""
    rows = sorted(rows)
    first_n, _wall, first_ctl, first_mach, first_idle = rows[0]
    base = (first_ctl / first_n, (first_mach - first_idle) / first_n, (first_ctl + first_mach - first_idle) / first_n)
    lines = ["| nodes | wall s | controller CPU-s | per node | vs %d | machines CPU-s | of it idle | per node, less idle "
             "| vs %d | both per node | vs %d |" % (first_n, first_n, first_n), "| --- " * 11 + "|"]
    for n, wall, controller, machines, idle in rows:
        per = (controller / n, (machines - idle) / n, (controller + machines - idle) / n)
        lines.append("| %d | %.1f | %.1f | %.2f | %.2fx | %.1f | %.1f | %.2f | %.2fx | %.2f | %.2fx |" % (
            n, wall, controller, per[0], per[0] / base[0], machines, idle, per[1], per[1] / base[1], per[2],
            per[2] / base[2]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2, 4, 8])
    parser.add_argument("--native", action="store_true", help="the native runtime (the lab's torch venv)")
    parser.add_argument("--topology", default="switch", choices=["direct", "switch"])
    parser.add_argument("--reuse", action="store_true",
                        help="keep the machines that run (`lab.py up N` stops the extra ones): sizes largest first")
    parser.add_argument("--idle-s", type=float, default=30, help="seconds of idle machines measured before each rerun")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        wall, controller, machines, idle = measure(n, args.native, args.topology, args.reuse, args.idle_s)
        rows.append((n, wall, controller, machines, idle))
        print("measured %d nodes: wall %.1f s, controller %.1f CPU-s, machines %.1f CPU-s (%.1f of it idle)"
              % (n, wall, controller, machines, idle), file=sys.stderr, flush=True)
        print(table(rows), file=sys.stderr, flush=True)
    subprocess.run(LAB + ["down"], check=True, capture_output=True)
    print(table(rows))


if __name__ == "__main__":
    main()
