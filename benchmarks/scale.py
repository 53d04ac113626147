"""Second (idempotent) run of site.yml on 2, 4 and 8 lab machines: wall time and CPU.

    sudo .venv/bin/python benchmarks/scale.py [2 4 8]

For each size: the lab is brought up with that many machines (tests/lab/lab.py), site.yml converges
once (not measured), then runs again and is measured: wall time, the controller's CPU seconds (the
ansible-playbook process and every child it waited for: forks, ssh, the ProxyCommand) and the
machines' CPU seconds (the sum of cpuacct.usage over the lab's per-machine cgroups, which counts every
process a machine ran, exited ones included). The second run must report changed=0 on every host.
The lab shares this machine's 2 cores, so wall time grows with the work; CPU per node must stay flat.
"""

from __future__ import annotations

import os
import pathlib
import re
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAB = ["python3", str(ROOT / "tests/lab/lab.py")]
CPUACCT = pathlib.Path("/sys/fs/cgroup/cpuacct/dgxspark-lab")


def machines_cpu_s():
    return sum(int((d / "cpuacct.usage").read_text()) for d in CPUACCT.iterdir() if d.is_dir()) / 1e9


def playbook(inventory, log):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (ROOT / ".venv/bin", os.environ["PATH"]))
    with open(log, "w") as fh:
        rc = subprocess.call(["ansible-playbook", "site.yml", "-i", inventory], cwd=ROOT, env=env,
                             stdout=fh, stderr=subprocess.STDOUT)
    text = pathlib.Path(log).read_text()
    if rc != 0:
        sys.exit("site.yml failed (rc %d), see %s:\n%s" % (rc, log, text[-3000:]))
    return text


def measure(n):
    subprocess.run(LAB + ["down"], check=True, capture_output=True)
    inventory = subprocess.run(LAB + ["up", str(n)], check=True, capture_output=True, text=True).stdout.split()[-1]
    playbook(inventory, "/tmp/scale-%d-first.log" % n)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machines = machines_cpu_s()
    t0 = time.monotonic()
    text = playbook(inventory, "/tmp/scale-%d-second.log" % n)
    wall = time.monotonic() - t0
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    machines = machines_cpu_s() - before_machines
    controller = (after_children.ru_utime - before_children.ru_utime) + (after_children.ru_stime - before_children.ru_stime)
    changed = [int(c) for c in re.findall(r"changed=(\d+)", text)]
    if len(changed) != n or any(changed):
        sys.exit("second run on %d nodes was not idempotent: %s" % (n, changed))
    return wall, controller, machines


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [2, 4, 8]
    rows = []
    for n in sizes:
        wall, controller, machines = measure(n)
        rows.append((n, wall, controller, machines))
        print("measured %d nodes: wall %.1f s, controller %.1f CPU-s, machines %.1f CPU-s" % (n, wall, controller, machines),
              file=sys.stderr, flush=True)
    subprocess.run(LAB + ["down"], check=True, capture_output=True)
    base = (rows[0][2] + rows[0][3]) / rows[0][0]
    print("| nodes | wall s | controller CPU-s | machines CPU-s | CPU-s per node | per node vs %d nodes |" % rows[0][0])
    print("| --- | --- | --- | --- | --- | --- |")
    for n, wall, controller, machines in rows:
        per_node = (controller + machines) / n
        print("| %d | %.1f | %.1f | %.1f | %.2f | %.2fx |" % (n, wall, controller, machines, per_node, per_node / base))


if __name__ == "__main__":
    main()
