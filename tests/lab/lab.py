# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab: N simulated DGX Sparks on this machine, as systemd-nspawn machines.

Each machine boots systemd as PID 1 from a Debian bookworm rootfs (built once with debootstrap,
cached, one overlay per machine), lives in its own network namespace and is reached over real SSH
from the controller namespace ``dgxlab-ctl``. Nothing is added to the host's own network
namespace. See tests/lab/README.md.

    python3 tests/lab/lab.py up N [--inventory PATH]   start N machines (idempotent), write the inventory
    python3 tests/lab/lab.py down [--purge]            stop everything; --purge also drops the rootfs cache
    python3 tests/lab/lab.py status                    one line per machine
    python3 tests/lab/lab.py ssh NODE [CMD...]         SSH into a machine (NODE: lab-spark-01 or 1)
    python3 tests/lab/lab.py reboot NODE               reboot a machine, wait until SSH answers again
    python3 tests/lab/lab.py rootfs                    build the rootfs cache only
    python3 tests/lab/lab.py torch                     build the torch virtualenv only
    python3 tests/lab/lab.py image                     build the SGLang image only (up builds it too)
    python3 tests/lab/lab.py registry                  start the lab's registry and push the images (up does it too)
    python3 tests/lab/lab.py registry-stats [--reset]  pulls counted by the registry, as JSON
    python3 tests/lab/lab.py serve DIR                 serve DIR over HTTP to the machines (until `down`)
    python3 tests/lab/lab.py hub-stats [--reset]       what the Hugging Face hub stand-in served, as JSON

`up --driverless` makes machines without the stand-in nvidia-smi: hosts with no NVIDIA driver, for the
install paths of the driver and container runtime roles (tests/lab/standin_repos.py builds the apt
repositories they install from; `serve` hands them to the machines).

`up --with-torch` (or DGXSPARK_LAB_TORCH=1) also builds, once, a virtualenv with the CPU torch wheel
in the lab dir with the host's /usr/bin/python3 (Debian bookworm's 3.11, the machines' too) and
bind-mounts it read-only into every machine at the same path: the gloo all-reduce of verify.yml.

A machine that reboots (`systemctl reboot` inside it, Ansible's reboot module) comes back: a
supervisor runs its nspawn again, on the same disk, with a network namespace made anew.
`up --network-manager`: the management port belongs to the machine's own NetworkManager, as on DGX OS.
`up --memory-max SIZE`: each machine gets a hard memory limit (a cgroup of its own) and sees it as its memory
(/proc/meminfo from lxcfs, run by lab.py under the lab dir): memory-pressure tests that cannot touch the host.

The lab's registry (Debian's docker-registry) runs in the controller namespace and stands in for Docker Hub: `up`
pushes the lab's SGLang image into it under the pinned name, and the machines' Docker pulls it through its
`registry-mirrors` (tests/lab/lab_registry.py; the README says how pulls are counted).

Run as root; standard library only. State lives in $DGXSPARK_LAB_DIR (default
/var/lib/dgxspark-lab), never in the checkout.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:   # lab.py's sibling modules, also when lab.py is loaded from its path (tests)
    sys.path.insert(0, str(HERE))
import hub_model  # noqa: E402
import hub_standin  # noqa: E402
import lab_registry  # noqa: E402
REPO = HERE.parent.parent
DEFAULT_LAB_DIR = "/var/lib/dgxspark-lab"
LAB_DIR = Path(os.environ.get("DGXSPARK_LAB_DIR") or DEFAULT_LAB_DIR)

SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "sudo", "iproute2",
    "iputils-ping", "openssh-server", "netplan.io", "ca-certificates", "procps",
    # `netplan apply` calls udevadm (udevd itself does not run in a container: /sys is read-only).
    "udev",
]
# Bump when the recipe in build_rootfs() changes; the package list is hashed in as well.
ROOTFS_RECIPE = "4"
ROOTFS_STAMP = hashlib.sha256(("%s %s %s" % (ROOTFS_RECIPE, SUITE, " ".join(PACKAGES))).encode()).hexdigest()[:16]

# A second lab can run beside the first (e.g. a helper's): DGXSPARK_LAB_ID=2 gives it its own
# namespaces, cgroup and management subnet (set DGXSPARK_LAB_DIR too, for its own state).
LAB_ID = os.environ.get("DGXSPARK_LAB_ID", "")
if not re.match(r"^[0-9]?$", LAB_ID):
    sys.exit("lab: DGXSPARK_LAB_ID must be empty or one digit, not %r" % LAB_ID)
NS_PREFIX = "dgxlab" + LAB_ID
SW_NS = NS_PREFIX + "-sw"
CTL_NS = NS_PREFIX + "-ctl"
CGROUP_NAME = "dgxspark-lab" + LAB_ID
# cpuacct too: its cpuacct.usage counts every process a machine ever ran (benchmarks/scale.sh reads it).
CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/cpuacct")


def mgmt_net(lab_id):
    """The management subnet's first three octets (exists only inside the lab's namespaces)."""
    return "172.31.%d" % (255 - int(lab_id or 0))


MGMT_NET = mgmt_net(LAB_ID)
CTL_IP = MGMT_NET + ".1"
# A second address of the controller's namespace: an API client outside the lab inventory's spark_allowed_cidrs
# (CTL_IP/32), for the firewall's tests (`ip netns exec dgxlab-ctl curl --interface CTL_OUTSIDE_IP ...`).
CTL_OUTSIDE_IP = MGMT_NET + ".2"
PROXY_PORT = 3142                # apt proxy for the machines, listening in dgxlab-ctl
SERVE_PORT = 8080                # `lab.py serve DIR`: a folder over HTTP to the machines, in dgxlab-ctl
REGISTRY_PORT = 5000             # the lab's registry (docker-registry), plain HTTP, in dgxlab-ctl
HUB_PORT = 8090                  # the Hugging Face hub stand-in (spark_hf_endpoint of the lab inventory), in dgxlab-ctl
HUB_TOKEN = "hf_dgxspark_lab_token"   # grants the gated repository below
HUB_GATED_REPO = "dgxspark-lab/tiny-qwen2-gated"
MGMT_BRIDGE = "mgmt"
MGMT_IF = "enP7s7"               # the Spark's 10 GbE management port name (FACTS.md)
CX7_IFS = ("enp1s0f1np1", "enP2p1s0f1np1")
CX7_BRIDGES = ("cx7a", "cx7b")
CX7_MTU = 9000
CLONE_NEWNET = 0x40000000
FIXTURE_DIR_IN_NODE = "/usr/share/dgxspark-lab/nvidia-smi"
STANDIN_MOUNT = "/opt/dgxspark-sglang"
SSH_WAIT_S = 60
# The machines' interpreter is bookworm's /usr/bin/python3 (3.11): a venv built with the host's own
# (the same Debian release) runs inside them unchanged when mounted at the same path.
# The lab's venv: torch for the gloo all-reduce, and SGLang 0.5.23's wheel (--no-deps, as the controller's venv has it,
# Makefile) so that the stand-in for launch_server runs SGLang's own parser, address rule and message queue.
# Pins come from the requirement files, their one home: these packages of requirements-dev.txt (installed with their
# dependencies), then requirements-sglang.txt with --no-deps.
# huggingface_hub: the client SGLang loads a hub model with (and the staging role downloads with), offline in the units.
DEV_PINS_FOR_SGLANG = ("torch", "numpy", "pillow", "pydantic", "attrs", "Pygments", "huggingface_hub")
SGLANG_REQUIREMENTS = REPO / "requirements-sglang.txt"
TORCH_PYTHON = "/usr/bin/python3"
TORCH_STAMP_NAME = ".dgxspark-lab-stamp"
STOP_WAIT_S = 25


# --------------------------------------------------------------------------- helpers

def log(msg):
    sys.stderr.write("lab: %s\n" % msg)
    sys.stderr.flush()


class LabError(Exception):
    pass


def run(argv, check=True, capture=True, **kw):
    res = subprocess.run(argv, check=False, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None, **kw)
    if check and res.returncode != 0:
        raise LabError("command failed (rc=%s): %s\n%s%s" % (
            res.returncode, " ".join(argv), res.stdout or "", res.stderr or ""))
    return res


def node_name(i):
    return "lab-spark-%02d" % i


def node_index(name):
    m = re.fullmatch(r"(?:lab-spark-)?0*(\d+)", name)
    if not m:
        raise LabError("unknown machine %r: use lab-spark-01 or 1" % name)
    return int(m.group(1))


def node_ip(i):
    return "%s.%d" % (MGMT_NET, 10 + i)


def node_ns(i):
    return "%s-node%d" % (NS_PREFIX, i)


def node_dir(i):
    return LAB_DIR / "nodes" / node_name(i)


def mac(i, k):
    return "02:00:5a:%02x:%02x:%02x" % (i // 256, i % 256, k)


def ssh_base(extra_opts=()):
    return ["ssh", "-o", "ProxyCommand=ip netns exec %s nc %%h %%p" % CTL_NS,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-i", str(LAB_DIR / "id_ed25519"), *extra_opts]


def netns_list():
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in (res.stdout or "").splitlines() if line.strip()]


def lab_netns():
    return [n for n in netns_list() if n.startswith(NS_PREFIX + "-")]


def link_exists(ns, dev):
    return run(["ip", "-n", ns, "link", "show", "dev", dev], check=False).returncode == 0


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def proc_cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except OSError:
        return []


def nspawn_pid(i):
    """PID that runs the machine, if it runs: its supervisor (which runs systemd-nspawn again when the
    machine reboots, and passes SIGTERM on to it), else a bare systemd-nspawn (checked against the
    command line of each)."""
    pid = supervisor_pid(i)
    if pid:
        return pid
    pid = read_pid(node_dir(i) / "nspawn.pid")
    if pid and pid_alive(pid) and any(b"systemd-nspawn" in a for a in proc_cmdline(pid)[:1]):
        return pid
    return None


def is_mountpoint(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)


def lab_mounts():
    """Mount points under the lab dir, deepest first."""
    root = os.path.realpath(LAB_DIR)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4].replace("\\040", " ")
            if mp == root or mp.startswith(root + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def cgroup_dirs(i=None):
    sub = CGROUP_NAME if i is None else "%s/%s" % (CGROUP_NAME, node_name(i))
    return [Path(r) / sub for r in CGROUP_ROOTS if Path(r).is_dir()]


def cgroup_pids(dirs):
    pids = set()
    for d in dirs:
        if not d.is_dir():
            continue
        for procs in d.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def rmdir_tree(d):
    if not d.is_dir():
        return
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError as exc:
        log("could not remove cgroup %s: %s" % (d, exc))


def netns_pids(names):
    """PIDs of processes that live in any of the named network namespaces."""
    inodes = set()
    for n in names:
        try:
            st = os.stat("/run/netns/%s" % n)
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    pids = set()
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat("/proc/%s/ns/net" % entry)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            pids.add(int(entry))
    return pids


def kill_all(pids, sig=signal.SIGKILL):
    for pid in pids:
        if pid != os.getpid():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def setns(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- host apt sources

def _parse_one_line(line):
    line = line.split("#", 1)[0].strip()
    if not line.startswith("deb "):
        return None
    parts = line.split()[1:]
    if parts and parts[0].startswith("["):
        while parts and not parts[0].endswith("]"):
            parts.pop(0)
        parts.pop(0)
    if len(parts) < 3:
        return None
    return {"uris": [parts[0]], "suites": [parts[1]], "components": parts[2:]}


def _parse_deb822(text):
    entries = []
    for para in re.split(r"\n\s*\n", text):
        fields = {}
        key = None
        for raw in para.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, val = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        if not fields.get("uris") or not fields.get("suites"):
            continue
        entries.append({"uris": fields["uris"].split(), "suites": fields["suites"].split(),
                        "components": fields.get("components", "main").split()})
    return entries


def host_apt_entries(etc="/etc/apt"):
    """The host's enabled `deb` entries (one-line sources.list and deb822 .sources files)."""
    entries = []
    files = [Path(etc) / "sources.list"] + sorted((Path(etc) / "sources.list.d").glob("*"))
    for f in files:
        if not f.is_file():
            continue
        if f.suffix == ".list" or f.name == "sources.list":
            entries += [e for e in map(_parse_one_line, f.read_text().splitlines()) if e]
        elif f.suffix == ".sources":
            entries += _parse_deb822(f.read_text())
    return [e for e in entries if any(s == SUITE or s.startswith(SUITE + "-") or s.startswith(SUITE + "/")
                                      for s in e["suites"])]


def host_mirror(entries):
    for e in entries:
        if SUITE in e["suites"]:
            return e["uris"][0]
    raise LabError("no `deb ... %s` entry in the host's /etc/apt/sources.list(.d): the lab uses the "
                   "host's Debian mirror; add one" % SUITE)


def render_sources(entries):
    paras = []
    for e in entries:
        paras.append("Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n"
                     "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
                     % (" ".join(e["uris"]), " ".join(e["suites"]), " ".join(e["components"])))
    return "# The host's Debian mirror (tests/lab/lab.py)\n" + "\n".join(paras)


# --------------------------------------------------------------------------- rootfs

SYSFS_NET_UNIT = """\
# tests/lab/lab.py: a lab accommodation, not part of a real Spark.
[Unit]
Description=dgxspark lab: writable /sys/devices/virtual/net for netplan apply (udevadm trigger)
DefaultDependencies=no
ConditionVirtualization=container
Before=systemd-networkd.service network-pre.target sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'd=/run/dgxspark-lab-sysfs; mkdir -p $d; mount -t sysfs sysfs $d; \\
  mount -o remount,rw $d; mount --bind $d/devices/virtual/net /sys/devices/virtual/net; umount $d; rmdir $d'

[Install]
WantedBy=sysinit.target
"""


def rootfs_path():
    return LAB_DIR / ("rootfs-" + SUITE)


def rootfs_ready():
    stamp = rootfs_path() / ".dgxspark-lab-stamp"
    return stamp.is_file() and stamp.read_text().strip() == ROOTFS_STAMP


def chroot_run(root, script):
    """Run a shell script in a chroot inside a private mount namespace (its mounts vanish with it)."""
    wrapper = ("set -e; mount -t proc proc '{r}/proc'; mount -t sysfs sys '{r}/sys'; "
               "mount --bind /dev '{r}/dev'; mount -t devpts devpts '{r}/dev/pts' -o newinstance; "
               "exec chroot '{r}' /bin/sh -ec \"$0\"").format(r=root)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C", LANG="C")
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, script],
                         env=env, check=False, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise LabError("rootfs step failed (rc=%s):\n%s" % (res.returncode, res.stdout[-4000:]))
    return res.stdout


def build_rootfs(force=False):
    if rootfs_ready() and not force:
        return False
    require_tools(["debootstrap", "unshare", "chroot"])
    entries = host_apt_entries()
    mirror = host_mirror(entries)
    final = rootfs_path()
    tmp = LAB_DIR / ("rootfs-%s.tmp" % SUITE)
    if lab_mounts():
        raise LabError("the rootfs must be (re)built, but machines use it (%s): run `lab.py down` first"
                       % ", ".join(lab_mounts()))
    for d in (tmp, final):
        if d.exists():
            shutil.rmtree(d)
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log("debootstrap --variant=minbase %s from %s (once; cached in %s)" % (SUITE, mirror, final))
    res = subprocess.run(["unshare", "--mount", "--propagation", "private",
                          "debootstrap", "--variant=minbase", SUITE, str(tmp), mirror],
                         check=False, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise LabError("debootstrap failed (rc=%s):\n%s" % (res.returncode, res.stdout[-4000:]))
    (tmp / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (tmp / "etc/apt/sources.list.d/debian.sources").write_text(render_sources(entries))
    sl = tmp / "etc/apt/sources.list"
    if sl.exists():
        sl.unlink()
    # No daemon may start inside the chroot (sshd would bind the host's port 22).
    policy = tmp / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    log("installing %s" % " ".join(PACKAGES))
    chroot_run(str(tmp), "apt-get update -q; apt-get install -y -q --no-install-recommends %s; "
               "apt-get clean; rm -rf /var/lib/apt/lists/*" % " ".join(PACKAGES))
    policy.unlink()
    conf = tmp / "etc/systemd/system.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "10-dgxspark-lab.conf").write_text("# tests/lab/lab.py: stops must not hang a test run\n"
                                               "[Manager]\nDefaultTimeoutStopSec=15s\n")
    # systemd-networkd applies what netplan generates (the cx7_network role); wait-online is off
    # because the CX7 stand-ins are down at boot and it would hold boot for two minutes.
    chroot_run(str(tmp), "systemctl enable systemd-networkd.service; "
               "systemctl disable systemd-networkd-wait-online.service || true; "
               "systemctl mask getty@tty1.service serial-getty@console.service || true")
    # netplan apply runs `udevadm trigger`, which writes to /sys/devices/virtual/net/*/uevent; nspawn
    # mounts /sys read-only. This unit makes only that folder writable (/sys itself stays read-only,
    # so systemd-networkd still knows that udevd does not run, as in any container).
    unit = tmp / "etc/systemd/system/dgxspark-lab-sysfs-net.service"
    unit.write_text(SYSFS_NET_UNIT)
    (tmp / "etc/systemd/system/sysinit.target.wants").mkdir(parents=True, exist_ok=True)
    (tmp / "etc/systemd/system/sysinit.target.wants" / unit.name).symlink_to("../" + unit.name)
    sshd_conf = tmp / "etc/ssh/sshd_config.d"
    sshd_conf.mkdir(parents=True, exist_ok=True)
    (sshd_conf / "10-dgxspark-lab.conf").write_text("PermitRootLogin prohibit-password\nUseDNS no\n")
    # Per machine: host keys, machine-id, hostname, resolv.conf are written at `up`.
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc/machine-id").write_text("")
    dbus_id = tmp / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (tmp / "etc/resolv.conf").unlink(missing_ok=True)
    (tmp / "etc/resolv.conf").write_text("# no DNS inside the lab; apt goes through the lab's proxy\n")
    (tmp / ".dgxspark-lab-stamp").write_text(ROOTFS_STAMP + "\n")
    tmp.rename(final)
    log("rootfs ready in %.1f s" % (time.monotonic() - t0))
    return True


# --------------------------------------------------------------------------- torch virtualenv

def torch_venv():
    return LAB_DIR / "torch-venv"


def torch_wanted(args):
    return bool(getattr(args, "with_torch", False)) or os.environ.get("DGXSPARK_LAB_TORCH", "") in ("1", "true", "yes")


def dev_pins():
    """The requirements-dev.txt lines of DEV_PINS_FOR_SGLANG (``name==version``), in that order."""
    found = {}
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        name = re.split(r"[=<>!~ ;\[]", spec, maxsplit=1)[0]
        if name.lower() in (n.lower() for n in DEV_PINS_FOR_SGLANG):
            found[name.lower()] = spec
    missing = [n for n in DEV_PINS_FOR_SGLANG if n.lower() not in found]
    if missing:
        raise LabError("requirements-dev.txt pins no %s: the lab's venv takes their versions from there"
                       % ", ".join(missing))
    return [found[n.lower()] for n in DEV_PINS_FOR_SGLANG]


def torch_stamp():
    """What the venv was built from: the pins, SGLang's requirement file and the exact interpreter."""
    res = run([TORCH_PYTHON, "-c", "import sys; print(sys.version.split()[0])"])
    sglang = hashlib.sha256(SGLANG_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    return "%s sglang-requirements %s python %s" % (" ".join(dev_pins()), sglang, res.stdout.strip())


def torch_ready():
    stamp = torch_venv() / TORCH_STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == torch_stamp()


def build_torch_venv(force=False):
    """<labdir>/torch-venv with torch (pip takes the CPU wheel this machine has on disk), built once."""
    if not Path(TORCH_PYTHON).is_file():
        raise LabError("%s is missing: the torch venv is built with Debian's python3 (the machines' own)" % TORCH_PYTHON)
    if torch_ready() and not force:
        return False
    venv = torch_venv()
    if any(m.startswith(str(venv)) for m in lab_mounts()) or any(
            (node_dir(i) / "torch").exists() and nspawn_pid(i) for i in known_nodes()):
        raise LabError("the torch venv must be (re)built, but machines use it: run `lab.py down` first")
    if venv.exists():
        shutil.rmtree(venv)
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log("building %s: %s -m venv, pip install %s, then SGLang's wheel (once; cached)"
        % (venv, TORCH_PYTHON, " ".join(dev_pins())))
    res = run([TORCH_PYTHON, "-m", "venv", str(venv)], check=False)
    if res.returncode != 0:
        raise LabError("%s -m venv failed (rc=%s): %s\nFix: run tests/lab/install-deps.sh (python3-venv)"
                       % (TORCH_PYTHON, res.returncode, (res.stderr or res.stdout).strip()[-2000:]))
    pip = [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check"]
    for argv in (pip + dev_pins(), pip + ["--no-deps", "-r", str(SGLANG_REQUIREMENTS)]):
        res = run(argv, check=False)
        if res.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise LabError("%s failed (rc=%s):\n%s" % (" ".join(argv[2:]), res.returncode,
                                                       ((res.stdout or "") + (res.stderr or ""))[-4000:]))
    check = run([str(venv / "bin/python"), "-c", "import torch, torch.distributed as d; "
                 "from sglang.srt.server_args import ServerArgs; "
                 "from sglang.srt.distributed.device_communicators.shm_broadcast import MessageQueue; "
                 "print(torch.__version__, d.is_gloo_available())"], check=False)
    if check.returncode != 0 or not check.stdout.strip().endswith("True"):
        raise LabError("torch or SGLang in %s does not import, or torch has no gloo: %s%s"
                       % (venv, check.stdout, check.stderr[-4000:]))
    (venv / TORCH_STAMP_NAME).write_text(torch_stamp() + "\n")
    log("torch venv ready in %.1f s (%s)" % (time.monotonic() - t0, check.stdout.strip()))
    return True


# --------------------------------------------------------------------------- NetworkManager (DGX OS's way)

# `up --network-manager`: machines whose management port belongs to NetworkManager, as on DGX OS
# (Ubuntu): its own package layer, Ubuntu's netplan and NM defaults, a static keyfile profile.
# Normal machines never see any of it (other scenarios rely on networkd alone).
NM_PACKAGES = ["network-manager"]
# Bump when build_nm_layer() changes; the rootfs stamp and the package list are hashed in as well.
NM_LAYER_RECIPE = "1"
# Ubuntu's installer writes this file on desktop installs (DGX OS has it): NetworkManager renders
# every device that no netplan definition gives another renderer.
UBUNTU_NM_NETPLAN = "# Let NetworkManager manage all devices on this system\nnetwork:\n  version: 2\n  renderer: NetworkManager\n"
# Ubuntu's network-manager package ships this file (Debian's does not): NM manages no Ethernet
# device unless netplan, with NetworkManager as the global renderer, shadows it with an empty
# /run/NetworkManager/conf.d/10-globally-managed-devices.conf at each boot.
UBUNTU_NM_MANAGED_DEVICES = "[keyfile]\nunmanaged-devices=*,except:type:wifi,except:type:gsm,except:type:cdma\n"
NM_PROFILE = """\
# tests/lab/lab.py: the management port's profile, applied by the machine's own NetworkManager
[connection]
id=management
uuid={uuid}
type=ethernet
interface-name={ifname}
autoconnect=true

[ipv4]
method=manual
address1={address}/24

[ipv6]
method=disabled
"""


def nm_layer_path():
    return LAB_DIR / "layer-network-manager"


def nm_layer_stamp():
    return hashlib.sha256(("%s %s %s" % (NM_LAYER_RECIPE, ROOTFS_STAMP, " ".join(NM_PACKAGES))).encode()).hexdigest()[:16]


def nm_layer_ready():
    stamp = nm_layer_path() / ".dgxspark-lab-stamp"
    return stamp.is_file() and stamp.read_text().strip() == nm_layer_stamp()


def build_nm_layer():
    """<labdir>/layer-network-manager: an overlay layer above the rootfs with NetworkManager, built once.

    apt installs the packages into an overlay's upper dir over the cached rootfs; that upper dir is
    the layer (lowerdir=layer:rootfs for the machines that ask for it).
    """
    if nm_layer_ready():
        return False
    final, tmp = nm_layer_path(), LAB_DIR / "layer-network-manager.tmp"
    if any(m.startswith(str(final)) or m.startswith(str(tmp)) for m in lab_mounts()) or any(
            (node_dir(i) / "network-manager").exists() and nspawn_pid(i) for i in known_nodes()):
        raise LabError("the NetworkManager layer must be (re)built, but machines use it: run `lab.py down` first")
    for d in (tmp, final):
        if d.exists():
            shutil.rmtree(d)
    for sub in ("upper", "work", "merged"):
        (tmp / sub).mkdir(parents=True)
    t0 = time.monotonic()
    log("building %s: %s (once; cached)" % (final, " ".join(NM_PACKAGES)))
    merged = tmp / "merged"
    run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s" % (
        rootfs_path(), tmp / "upper", tmp / "work"), str(merged)])
    try:
        policy = merged / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # The rootfs has no DNS (its machines have none); apt here runs in the host's namespace.
        shutil.copyfile("/etc/resolv.conf", merged / "etc/resolv.conf")
        chroot_run(str(merged), "apt-get update -q; apt-get install -y -q --no-install-recommends %s; "
                   "apt-get clean; rm -rf /var/lib/apt/lists/*" % " ".join(NM_PACKAGES))
        policy.unlink()
        (merged / "etc/netplan").mkdir(parents=True, exist_ok=True)
        (merged / "etc/netplan/01-network-manager-all.yaml").write_text(UBUNTU_NM_NETPLAN)
        (merged / "etc/netplan/01-network-manager-all.yaml").chmod(0o600)
        conf = merged / "usr/lib/NetworkManager/conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "10-globally-managed-devices.conf").write_text(UBUNTU_NM_MANAGED_DEVICES)
    finally:
        run(["umount", str(merged)], check=False)
    # Out of the upper dir itself (no whiteout): the rootfs's own resolv.conf shows through again.
    (tmp / "upper/etc/resolv.conf").unlink()
    (tmp / "upper").rename(final)
    shutil.rmtree(tmp)
    (final / ".dgxspark-lab-stamp").write_text(nm_layer_stamp() + "\n")
    log("NetworkManager layer ready in %.1f s" % (time.monotonic() - t0))
    return True


def uses_network_manager(i):
    return (node_dir(i) / "network-manager").exists()


def set_network_manager(i, wanted):
    marker = node_dir(i) / "network-manager"
    if wanted:
        node_dir(i).mkdir(parents=True, exist_ok=True)
        marker.write_text("the management port belongs to the machine's NetworkManager\n")
    else:
        marker.unlink(missing_ok=True)


def node_lowerdirs(i):
    """The overlay's lower layers of a machine, top first."""
    if uses_network_manager(i):
        return "%s:%s" % (nm_layer_path(), rootfs_path())
    return str(rootfs_path())


def prepare_node_network_manager(i):
    """The management port's profile, inside the machine: its NetworkManager sets the address at boot."""
    conns = node_dir(i) / "merged/etc/NetworkManager/system-connections"
    conns.mkdir(parents=True, exist_ok=True)
    profile = conns / "management.nmconnection"
    profile.write_text(NM_PROFILE.format(uuid=uuid.uuid5(uuid.NAMESPACE_DNS, node_name(i)), ifname=MGMT_IF,
                                         address=node_ip(i)))
    profile.chmod(0o600)


# --------------------------------------------------------------------------- the SGLang image (Docker in the machines)

# The image that the container runtime runs is made here from the lab rootfs's own files (a rootfs tarball, one gzip
# layer), pushed into the lab's registry under the pinned name (Docker Hub's, as on a Spark) and pulled from there by
# the machines' Docker through its registry mirror (see "the registry" below). It holds Debian's python3 (the
# interpreter the torch venv is built with) and little else: Docker in the machines uses vfs, which copies the whole
# image at every container start. Torch and the stand-in stay out of it: the image's PATH
# and PYTHONPATH point at where the containers mount them read-only (the venv at its own path, the checkout at
# STANDIN_MOUNT), so `python3 -m sglang.launch_server` in the image runs the venv's python with the stand-in.
IMAGE_ROOTS = ("python3", "libstdc++6", "dash")   # the interpreter, torch's C++ runtime, /bin/sh
IMAGE_SKIP = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/",
              "/usr/share/bug/")
IMAGE_SKIP_PARTS = ("/gconv/",)   # glibc's charset converters (iconv); Python brings its own codecs
IMAGE_EXTRA = ("/etc/passwd", "/etc/group", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
IMAGE_RECIPE = "2"
IMAGE_STANDIN_PATH = STANDIN_MOUNT + "/tests/lab/sglang_standin"
# A second tag of the same repository, for upgrade tests: the same layer plus one small layer with this file (it holds
# the reference), so that its image ID differs.
IMAGE_UPGRADE_SUFFIX = "-lab2"
IMAGE_UPGRADE_FILE = "/etc/dgxspark-lab-image"
# Docker's built-in `--gpus` driver (daemon/nvidia_linux.go) exists only when this hook is on dockerd's PATH at start.
GPU_HOOK = "/usr/bin/nvidia-container-runtime-hook"


def image_dir():
    return LAB_DIR / "sglang-image"


def image_tag():
    """The pinned image reference, read from its one home (DEFAULTS in _cluster.py; lab.py imports no collection code)."""
    text = (REPO / "plugins/module_utils/_cluster.py").read_text()
    m = re.search(r"""['"]sglang_server_image['"]\s*:\s*['"]([^'"]+)['"]""", text)
    if not m:
        raise LabError("no sglang_server_image default found in plugins/module_utils/_cluster.py")
    return m.group(1)


def image_references():
    """What the lab's registry serves: the pinned image, and a second tag of it for upgrade tests."""
    return [image_tag(), image_tag() + IMAGE_UPGRADE_SUFFIX]


def image_settings():
    """The image's container config: its environment points at the read-only mounts."""
    path = "%s/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" % torch_venv()
    return {"Env": ["PATH=%s" % path, "PYTHONPATH=%s" % IMAGE_STANDIN_PATH, "PYTHONUNBUFFERED=1"],
            "Cmd": ["python3"], "WorkingDir": "/"}


def image_stamp():
    return hashlib.sha256(json.dumps([IMAGE_RECIPE, IMAGE_ROOTS, IMAGE_SKIP, IMAGE_SKIP_PARTS, IMAGE_EXTRA, ROOTFS_STAMP,
                                      image_references(), IMAGE_UPGRADE_FILE, image_settings()]).encode()).hexdigest()[:16]


def image_ready():
    d, stamp = image_dir(), image_dir() / "stamp"
    return ((d / "rootfs.tar").is_file() and (d / "push.json").is_file() and stamp.is_file()
            and stamp.read_text().strip() == image_stamp())


def _dpkg_status(root):
    """Package name -> (dependency names, installed) from the rootfs's dpkg database."""
    pkgs = {}
    for para in (Path(root) / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, re.M))
        if "Package" not in fields:
            continue
        deps = []
        for key in ("Pre-Depends", "Depends"):
            for alt in fields.get(key, "").split(","):
                names = [a.strip().split()[0].split(":")[0] for a in alt.split("|") if a.strip()]
                if names:
                    deps.append(names)
        pkgs[fields["Package"]] = (deps, fields.get("Status", "").endswith(" installed"))
    return pkgs


def image_packages(root, roots=None):
    """The installed packages that ROOTS need (Depends and Pre-Depends, first installed alternative)."""
    pkgs = _dpkg_status(root)
    provides = {}
    for para in (Path(root) / "var/lib/dpkg/status").read_text().split("\n\n"):
        m_pkg = re.search(r"^Package: (\S+)", para, re.M)
        m_prov = re.search(r"^Provides: (.*)$", para, re.M)
        if m_pkg and m_prov:
            for prov in m_prov.group(1).split(","):
                provides.setdefault(prov.strip().split()[0], m_pkg.group(1))
    seen, todo = set(), list(roots or IMAGE_ROOTS)
    while todo:
        name = todo.pop()
        name = name if name in pkgs else provides.get(name, name)
        if name in seen:
            continue
        if name not in pkgs or not pkgs[name][1]:
            raise LabError("the image needs %s, which the lab rootfs does not have installed" % name)
        seen.add(name)
        for alts in pkgs[name][0]:
            found = [a if a in pkgs else provides.get(a) for a in alts]
            found = [a for a in found if a and pkgs.get(a, ((), False))[1]]
            if found:
                todo.append(found[0])
    return sorted(seen)


def _canonical(root, path):
    """PATH with a usrmerge top-level link (/bin -> usr/bin, /lib -> usr/lib, ...) resolved, as the tarball stores it."""
    parts = path.strip("/").split("/")
    top = Path(root) / parts[0]
    if len(parts) > 1 and top.is_symlink() and not os.readlink(top).startswith("/"):
        return "/" + "/".join([os.readlink(top).strip("/")] + parts[1:])
    return path


def image_paths(root, packages):
    """Every path of the packages' files (dpkg's lists), their Python bytecode caches, and IMAGE_EXTRA."""
    info = Path(root) / "var/lib/dpkg/info"
    paths = set()
    for pkg in packages:
        for lst in (info / ("%s.list" % pkg), *info.glob("%s:*.list" % pkg)):
            if lst.is_file():
                paths.update(line for line in lst.read_text().splitlines() if line.startswith("/"))
    paths = {_canonical(root, p) for p in paths
             if p != "/." and not p.startswith(IMAGE_SKIP) and not any(part in p for part in IMAGE_SKIP_PARTS)}
    for extra in IMAGE_EXTRA:
        full = Path(root) / extra.lstrip("/")
        if full.is_dir():
            paths.update("/" + str(f.relative_to(root)) for f in full.rglob("*"))
        if full.exists():
            paths.add(extra)
    for p in list(paths):
        cache = Path(root) / p.lstrip("/") / "__pycache__"
        if p.startswith("/usr/lib/python3") and cache.is_dir():
            paths.update("/" + str(f.relative_to(root)) for f in cache.iterdir())
    # Parents first; the usrmerge links themselves; the folders every container needs.
    for p in list(paths):
        parent = os.path.dirname(p)
        while parent not in ("/", ""):
            paths.add(parent)
            parent = os.path.dirname(parent)
    for top in ("bin", "sbin", "lib", "lib64"):
        if (Path(root) / top).is_symlink():
            paths.add("/" + top)
    return sorted(paths)


def build_image(force=False):
    """<labdir>/sglang-image/rootfs.tar (+ tag, changes, stamp), from the lab rootfs, built once."""
    if image_ready() and not force:
        return False
    if not rootfs_ready():
        raise LabError("the lab rootfs is not built: run `lab.py rootfs` first")
    t0 = time.monotonic()
    root = rootfs_path()
    packages = image_packages(root)
    d = image_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "rootfs.tar.tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in image_paths(root, packages):
            full = root / p.lstrip("/")
            if not (full.exists() or full.is_symlink()):
                continue
            info = tar.gettarinfo(str(full), arcname=p.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with open(full, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
        for name, mode in (("tmp", 0o1777), ("root", 0o700), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
                           ("etc", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            if name not in tar.getnames():
                tar.addfile(info)
    tmp.rename(d / "rootfs.tar")
    (d / "packages").write_text("".join(p + "\n" for p in packages))
    images = build_image_blobs(d, packages)
    (d / "stamp").write_text(image_stamp() + "\n")
    log("image %s ready in %.1f s: %s, %.1f MB, %d packages (%s); %.1f MB compressed" % (
        image_tag(), time.monotonic() - t0, d / "rootfs.tar", (d / "rootfs.tar").stat().st_size / 1e6,
        len(packages), " ".join(packages), images[image_tag()]["size"] / 1e6))
    return True


def build_image_blobs(d, packages):
    """The images of image_references() as a registry stores them, in D: gzip layers, configs, manifests.

    D/push.json lists them (per reference: repository, tag, manifest and blob files, digests), for the push and for
    <labdir>/registry/images.json. Returns that listing.
    """
    mtime = int((d / "rootfs.tar").stat().st_mtime)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    base = dict(lab_registry.gzip_layer(d / "rootfs.tar", d / "layer-base.tar.gz"), path=str(d / "layer-base.tar.gz"))
    base_line = "tests/lab/lab.py: %d packages of the lab rootfs: %s" % (len(packages), " ".join(IMAGE_ROOTS))
    pinned, upgrade = image_references()
    (d / "layer-upgrade.tar").write_bytes(lab_registry.file_layer_tar(
        {IMAGE_UPGRADE_FILE: (upgrade + "\n").encode()}, mtime))
    extra = dict(lab_registry.gzip_layer(d / "layer-upgrade.tar", d / "layer-upgrade.tar.gz"),
                 path=str(d / "layer-upgrade.tar.gz"))
    recipes = [(pinned, [base], [base_line]),
               (upgrade, [base, extra], [base_line, "tests/lab/lab.py: %s names this tag" % IMAGE_UPGRADE_FILE])]
    images = {}
    for k, (ref, layers, history) in enumerate(recipes):
        config = lab_registry.image_config(layers, image_settings(), created, history)
        manifest = lab_registry.image_manifest(config, layers)
        (d / ("config-%d.json" % k)).write_bytes(config)
        (d / ("manifest-%d.json" % k)).write_bytes(manifest)
        name, tag = lab_registry.split_reference(ref)
        blobs = {lab_registry.digest_of(config): str(d / ("config-%d.json" % k))}
        blobs.update((layer["digest"], layer["path"]) for layer in layers)
        images[ref] = {"name": name, "tag": tag, "manifest": str(d / ("manifest-%d.json" % k)), "blobs": blobs,
                       "manifest_digest": lab_registry.digest_of(manifest), "image_id": lab_registry.digest_of(config),
                       "layers": [layer["digest"] for layer in layers],
                       "size": len(config) + sum(layer["size"] for layer in layers)}
    (d / "push.json").write_text(json.dumps({"images": images}, indent=1) + "\n")
    return images


GPU_HOOK_SCRIPT = """\
#!/bin/sh
# tests/lab/lab.py: GPU stand-in, not part of a real Spark. Docker registers its built-in `--gpus` driver only when
# nvidia-container-runtime-hook is on its PATH, and runs it as the container's OCI prestart hook (the NVIDIA Container
# Toolkit's hook mounts the driver and devices there). The lab has no GPU: this one reads the state and adds nothing.
cat >/dev/null
exit 0
"""


def prepare_node_docker(merged):
    """The Docker piece of a machine, inert until the container_runtime role installs Docker: the GPU hook stand-in."""
    hook = merged / GPU_HOOK.lstrip("/")
    hook.write_text(GPU_HOOK_SCRIPT)
    hook.chmod(0o755)


def cmd_image(args):
    require_root()
    build_rootfs()
    if not build_image(force=args.force):
        log("image is built and current: %s" % (image_dir() / "rootfs.tar"))
    print(image_dir() / "push.json")


# --------------------------------------------------------------------------- network

def ensure_netns(name):
    if name not in netns_list():
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def ensure_switch():
    ensure_netns(SW_NS)
    for br in (MGMT_BRIDGE,) + CX7_BRIDGES:
        if not link_exists(SW_NS, br):
            run(["ip", "-n", SW_NS, "link", "add", br, "type", "bridge"])
        if br != MGMT_BRIDGE:
            run(["ip", "-n", SW_NS, "link", "set", br, "mtu", str(CX7_MTU)])
        run(["ip", "-n", SW_NS, "link", "set", br, "up"])
    ensure_netns(CTL_NS)
    if not link_exists(SW_NS, "ctl-mgmt"):
        run(["ip", "-n", SW_NS, "link", "add", "ctl-mgmt", "type", "veth", "peer", "name", "mgmt0",
             "netns", CTL_NS])
    run(["ip", "-n", SW_NS, "link", "set", "ctl-mgmt", "master", MGMT_BRIDGE, "up"])
    have = run(["ip", "-n", CTL_NS, "-4", "addr", "show", "dev", "mgmt0"]).stdout
    for address in (CTL_IP, CTL_OUTSIDE_IP):
        if address + "/" not in have:
            run(["ip", "-n", CTL_NS, "addr", "add", address + "/24", "dev", "mgmt0"])
    run(["ip", "-n", CTL_NS, "link", "set", "mgmt0", "up"])
    ensure_mgmt_filter()


# The management network of a Spark is the LAN: the controller (Ansible, the apt mirror, later the hub, a registry,
# Prometheus, API clients) reaches every machine there, but cluster traffic between Sparks must never use it.
# The bridge lets only SSH (and SGLang's serving port, client traffic) cross between machines, so that anything of the cluster that picks the management
# address (SGLang without SGLANG_HOST_IP, NCCL or gloo without their *_SOCKET_IFNAME) fails in the lab as it
# would on Sparks whose LAN ports are firewalled or slow. Stateless (the kernel has no bridge conntrack):
# TCP port 22 either way, and SGLang's serving port (SGLANG_SERVING_PORT) for clients such as the router.
# Dropped frames are counted: `lab.py status` prints the counter.
MGMT_FILTER_TABLE = "dgxlab_mgmt"
# SGLang's serving port (sglang_server_port's default) is client traffic, which a Spark's LAN carries: the router on one
# machine asks each group's rank 0 there, as any client would. Rendezvous, the message queue and NCCL stay off it.
SGLANG_SERVING_PORT = 30000
MAX_NODES = 64  # the filter names every possible port of the management bridge


def mgmt_filter_rules():
    return """\
table bridge %(table)s {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname != { %(ports)s } accept
    ether type arp accept
    ip saddr { %(ctl)s } accept
    ip daddr { %(ctl)s } accept
    tcp dport 22 accept
    tcp sport 22 accept
    tcp dport %(serving)d accept
    tcp sport %(serving)d accept
    counter drop comment "between machines, only SSH and SGLang's serving port cross the management network"
  }
}
""" % {"table": MGMT_FILTER_TABLE, "ctl": ", ".join((CTL_IP, CTL_OUTSIDE_IP)),
       "ports": ", ".join('"%s"' % p for p in mgmt_ports()), "serving": SGLANG_SERVING_PORT}


def mgmt_ports():
    """The switch ends of the management bridge's ports (nodes 1..MAX_NODES and the controller)."""
    return ["ctl-mgmt"] + ["n%d-mgmt" % i for i in range(1, MAX_NODES + 1)]


def ensure_mgmt_filter():
    """(Re)load the management bridge's filter in the switch namespace: the machines cannot change it."""
    if not shutil.which("nft"):
        raise LabError("nft is missing: the lab filters its management bridge with nftables.\n"
                       "Fix: run tests/lab/install-deps.sh (nftables)")
    run(["ip", "netns", "exec", SW_NS, "nft", "-f", "-"], input="add table bridge %s\ndelete table bridge %s\n%s"
        % (MGMT_FILTER_TABLE, MGMT_FILTER_TABLE, mgmt_filter_rules()))


def mgmt_filter_drops():
    """Frames the management filter dropped so far (None when the filter is not loaded)."""
    res = run(["ip", "netns", "exec", SW_NS, "nft", "list", "table", "bridge", MGMT_FILTER_TABLE], check=False)
    found = re.search(r"counter packets (\d+)", res.stdout or "")
    return int(found.group(1)) if res.returncode == 0 and found else None


def ensure_node_net(i):
    ns = node_ns(i)
    ensure_netns(ns)
    wires = [("n%d-mgmt" % i, MGMT_IF, MGMT_BRIDGE, None)]
    wires += [("n%d-%s" % (i, br), ifname, br, CX7_MTU) for ifname, br in zip(CX7_IFS, CX7_BRIDGES)]
    for k, (sw_end, node_end, br, mtu) in enumerate(wires):
        if not link_exists(SW_NS, sw_end):
            run(["ip", "-n", SW_NS, "link", "add", sw_end, "type", "veth", "peer", "name", node_end,
                 "netns", ns])
            run(["ip", "-n", ns, "link", "set", node_end, "address", mac(i, k)])
        if mtu:
            run(["ip", "-n", SW_NS, "link", "set", sw_end, "mtu", str(mtu)])
        run(["ip", "-n", SW_NS, "link", "set", sw_end, "master", br, "up"])
    # The management port is configured like the Spark's (static, before boot); the CX7 stand-ins
    # stay down and unconfigured: the cx7_network role brings them up. With --network-manager the
    # machine's own NetworkManager configures the management port.
    if uses_network_manager(i):
        return
    if node_ip(i) not in run(["ip", "-n", ns, "-4", "addr", "show", "dev", MGMT_IF]).stdout:
        run(["ip", "-n", ns, "addr", "add", node_ip(i) + "/24", "dev", MGMT_IF])
    run(["ip", "-n", ns, "link", "set", MGMT_IF, "up"])
    # A Spark's default route leads to its LAN gateway through the management port; software that looks for
    # "its" address by the route to the internet (SGLang's get_local_ip_by_remote: 8.8.8.8) finds the
    # management address there. Nothing is forwarded beyond the controller's namespace.
    if "default" not in run(["ip", "-n", ns, "-4", "route", "show", "default"]).stdout:
        run(["ip", "-n", ns, "route", "add", "default", "via", CTL_IP, "dev", MGMT_IF])


# --------------------------------------------------------------------------- apt proxy

def _relay(src_file, dst, n):
    while n > 0:
        chunk = src_file.read(min(n, 65536))
        if not chunk:
            raise OSError("upstream closed early")
        dst.sendall(chunk)
        n -= len(chunk)


def _tunnel(a, b):
    socks = [a, b]
    while True:
        ready, _w, _x = select.select(socks, [], [], 600)
        if not ready:
            return
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


def _read_head(f):
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue
        lines.append(line)


def _header(lines, name):
    name = name.lower() + b":"
    for line in lines[1:]:
        if line.lower().startswith(name):
            return line.split(b":", 1)[1].strip()
    return None


def _serve_client(client):
    client.settimeout(600)
    cf = client.makefile("rb")
    upstreams = {}
    try:
        while True:
            head = _read_head(cf)
            if head is None:
                return
            method, target, version = head[0].decode("latin-1").split()
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up = socket.create_connection((host, int(port)), timeout=30)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _tunnel(client, up)
                up.close()
                return
            url = urllib.parse.urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            key = (url.hostname, url.port or 80)
            path = (url.path or "/") + ("?" + url.query if url.query else "")
            keep = [h for h in head[1:] if not h.lower().startswith(
                (b"proxy-connection:", b"proxy-authorization:", b"connection:", b"keep-alive:"))]
            if _header(head, b"host") is None:
                keep.insert(0, b"Host: " + url.netloc.encode() + b"\r\n")
            conn_hdr = (_header(head, b"connection") or _header(head, b"proxy-connection") or b"").lower()
            client_close = b"close" in conn_hdr or version == "HTTP/1.0"
            if key not in upstreams:
                s = socket.create_connection(key, timeout=60)
                upstreams[key] = (s, s.makefile("rb"))
            up, uf = upstreams[key]
            up.sendall(("%s %s HTTP/1.1\r\n" % (method, path)).encode() + b"".join(keep)
                       + b"Connection: keep-alive\r\n\r\n")
            body_len = int(_header(head, b"content-length") or 0)
            if body_len:
                _relay(cf, up, body_len)
            resp = _read_head(uf)
            if resp is None:
                raise OSError("upstream closed")
            code = int(resp[0].split()[1])
            client.sendall(b"".join(resp) + b"\r\n")
            up_close = b"close" in (_header(resp, b"connection") or b"").lower()
            if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
                pass
            elif b"chunked" in (_header(resp, b"transfer-encoding") or b"").lower():
                while True:
                    size_line = uf.readline(1024)
                    client.sendall(size_line)
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while True:
                            trailer = uf.readline(65537)
                            client.sendall(trailer)
                            if trailer in (b"\r\n", b"\n", b""):
                                break
                        break
                    _relay(uf, client, size + 2)
            elif _header(resp, b"content-length") is not None:
                _relay(uf, client, int(_header(resp, b"content-length")))
            else:
                while True:
                    chunk = uf.read1(65536)
                    if not chunk:
                        break
                    client.sendall(chunk)
                return
            if up_close:
                up.close()
                del upstreams[key]
            if client_close:
                return
    except (OSError, ValueError, IndexError) as exc:
        try:
            sys.stderr.write("proxy: %s\n" % exc)
        except OSError:
            pass
    finally:
        for s, _f in upstreams.values():
            s.close()
        client.close()


def cmd_proxy(_args):
    """A small HTTP proxy: listens inside dgxlab-ctl, connects out from the host's namespace.

    The machines have no route out of the lab (nothing is added to the host's namespace), so apt
    inside them reaches the host's Debian mirror through this proxy (Acquire::http::Proxy).
    """
    root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    setns("/run/netns/%s" % CTL_NS)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((CTL_IP, PROXY_PORT))
    srv.listen(64)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(root_ns, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns back to the host namespace")
    os.close(root_ns)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stderr.write("proxy: listening on %s:%d in %s\n" % (CTL_IP, PROXY_PORT, CTL_NS))
    sys.stderr.flush()
    while True:
        client, _addr = srv.accept()
        threading.Thread(target=_serve_client, args=(client,), daemon=True).start()


def proxy_pid():
    pid = read_pid(LAB_DIR / "proxy.pid")
    if pid and pid_alive(pid) and b"_proxy" in proc_cmdline(pid):
        return pid
    return None


def ensure_proxy():
    if proxy_pid():
        return
    logf = open(LAB_DIR / "proxy.log", "ab")
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_proxy"], stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    logf.close()
    (LAB_DIR / "proxy.pid").write_text("%d\n" % p.pid)


# --------------------------------------------------------------------------- file server

def start_daemon(argv, pid_file, logf, ready, what, stdout=None):
    """Start ARGV detached (a session of its own), note its PID in PID_FILE, and wait up to 10 s until LOGF (its
    stderr, appended to; stdout too unless STDOUT names another file) shows READY. LabError naming WHAT otherwise."""
    start = logf.stat().st_size if logf.exists() else 0
    with open(stdout or logf, "ab") as out, open(logf, "ab") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                             close_fds=True)
    pid_file.write_text("%d\n" % p.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(logf, "rb") as fh:
            fh.seek(start)
            if ready in fh.read():
                return p.pid
        if p.poll() is not None:
            raise LabError("%s exited (rc=%s); %s ends with:\n%s" % (
                what, p.returncode, logf, logf.read_text(errors="replace")[-2000:]))
        time.sleep(0.05)
    raise LabError("%s did not start within 10 s; see %s" % (what, logf))


def cmd_serve_child(args):
    """Serve a folder over HTTP on the controller's lab address (inside dgxlab-ctl), read-only."""
    import functools
    import http.server
    setns("/run/netns/%s" % CTL_NS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=args.directory)
    srv = http.server.ThreadingHTTPServer((CTL_IP, SERVE_PORT), handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stderr.write("serve: listening on %s:%d in %s: %s\n" % (CTL_IP, SERVE_PORT, CTL_NS, args.directory))
    sys.stderr.flush()
    srv.serve_forever()


def serve_pid():
    pid = read_pid(LAB_DIR / "serve.pid")
    if pid and pid_alive(pid) and b"_serve" in proc_cmdline(pid):
        return pid
    return None


def stop_daemon(pid, pid_file):
    """SIGTERM to a daemon that start_daemon() started (if PID), SIGKILL after 5 s; then drop its PID_FILE.

    Its parent (the lab.py that started it) is gone, so init reaps it: wait for that too, so that no <defunct>
    entry is left when `down` returns.
    """
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            kill_all([pid])
        deadline = time.monotonic() + 3
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def stop_serve():
    stop_daemon(serve_pid(), LAB_DIR / "serve.pid")


def cmd_serve(args):
    """(Re)start the file server for DIR; `down` stops it. Prints its URL (the machines reach it directly)."""
    require_root()
    folder = Path(args.directory).resolve()
    if not folder.is_dir():
        raise LabError("%s is not a folder" % folder)
    if CTL_NS not in netns_list():
        raise LabError("the lab is not up (no %s namespace): run `lab.py up N` first" % CTL_NS)
    stop_serve()
    start_daemon([sys.executable, str(Path(__file__).resolve()), "_serve", str(folder)], LAB_DIR / "serve.pid",
                 LAB_DIR / "serve.log", b"serve: listening", "the file server")
    log("serving %s to the machines" % folder)
    print("http://%s:%d/" % (CTL_IP, SERVE_PORT))


# --------------------------------------------------------------------------- the hub stand-in

# The lab's Hugging Face hub: tests/lab/hub_standin.py (the API huggingface_hub's snapshot_download speaks) on the
# controller's lab address, in dgxlab-ctl, serving <labdir>/hub: the lab's tiny model (tests/lab/hub_model.py) and a
# gated copy of it. It counts the bytes it serves (`lab.py hub-stats`): the staging role must fetch one copy.

def hub_root():
    return LAB_DIR / "hub"


def hub_pid():
    pid = read_pid(LAB_DIR / "hub.pid")
    if pid and pid_alive(pid) and b"_hub" in proc_cmdline(pid):
        return pid
    return None


def cmd_hub_child(_args):
    """The hub stand-in on the controller's lab address, inside dgxlab-ctl."""
    setns("/run/netns/%s" % CTL_NS)
    server = hub_standin.make_server(hub_root(), host=CTL_IP, port=HUB_PORT, token=HUB_TOKEN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stderr.write("hub: listening on %s in %s: %s\n" % (server.endpoint, CTL_NS, hub_root()))
    sys.stderr.flush()
    server.serve_forever()


def ensure_hub():
    """Write the lab's model repositories once, and start the hub stand-in unless it runs."""
    for repo, seed in ((hub_model.REPO_ID, 0), (HUB_GATED_REPO, 1)):
        if not (hub_root() / repo / "config.json").is_file():
            hub_model.write_model(hub_root() / repo, seed=seed)
    (hub_root() / HUB_GATED_REPO / hub_standin.GATED_MARKER).write_text("")
    if not hub_pid():
        start_daemon([sys.executable, str(Path(__file__).resolve()), "_hub"], LAB_DIR / "hub.pid", LAB_DIR / "hub.log",
                     b"hub: listening", "the hub stand-in")


def stop_hub():
    stop_daemon(hub_pid(), LAB_DIR / "hub.pid")


def hub_request(path, method="GET"):
    """A request to the hub stand-in, from a thread of this process that enters dgxlab-ctl (the hub listens there)."""
    result = {}

    def call():
        setns("/run/netns/%s" % CTL_NS)
        req = urllib.request.Request("http://%s:%d%s" % (CTL_IP, HUB_PORT, path), method=method)
        with urllib.request.urlopen(req, timeout=10) as answer:
            result["data"] = json.load(answer)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    if "data" not in result:
        raise LabError("the hub stand-in did not answer %s (is the lab up?)" % path)
    return result["data"]


def cmd_hub_stats(args):
    """Print what the hub stand-in served (total_bytes, bytes per file, requests), as JSON; --reset then zeroes it."""
    require_root()
    print(json.dumps(hub_request("/_stats"), indent=1, sort_keys=True))
    if args.reset:
        hub_request("/_stats/reset", "POST")


# --------------------------------------------------------------------------- the registry

# The lab's Docker Hub: Debian's docker-registry (the CNCF distribution registry) on the controller's lab address, in
# dgxlab-ctl, with its storage under <labdir>/registry/storage (kept across `down`, like the rootfs cache: a second
# `up` pushes nothing). The machines' Docker asks it first for every docker.io name (`registry-mirrors` plus
# `insecure-registries` in daemon.json: the lab inventory's container_runtime_daemon_options), so `docker pull
# lmsysorg/sglang:<tag>` there goes through it, as a Spark's goes to Docker Hub. No DNS in the lab: a name it lacks
# fails, as it would on a Spark without internet. Its access log (stdout) is where pulls are counted; each start of
# the registry begins it anew.

def registry_dir():
    return LAB_DIR / "registry"


def registry_addr():
    return "%s:%d" % (CTL_IP, REGISTRY_PORT)


def registry_url():
    return "http://" + registry_addr()


def registry_pid():
    pid = read_pid(registry_dir() / "registry.pid")
    argv = proc_cmdline(pid) if pid and pid_alive(pid) else []
    if argv and os.path.basename(argv[0]) == b"docker-registry" and str(registry_dir() / "config.yml").encode() in argv:
        return pid
    return None


def ensure_registry():
    """Start the registry in the controller namespace unless it runs (True when started)."""
    if registry_pid():
        return False
    binary = shutil.which("docker-registry")
    if not binary:
        raise LabError("docker-registry is missing: the lab's registry is Debian's docker-registry package.\n"
                       "Fix: run tests/lab/install-deps.sh")
    d = registry_dir()
    (d / "storage").mkdir(parents=True, exist_ok=True)
    (d / "config.yml").write_text(lab_registry.registry_config(registry_addr(), d / "storage"))
    # Each start counts anew; appended to (O_APPEND), so that `registry-stats --reset` can empty it under the registry.
    (d / "access.log").write_bytes(b"")
    start_daemon(["ip", "netns", "exec", CTL_NS, binary, "serve", str(d / "config.yml")], d / "registry.pid",
                 d / "registry.log", b"listening on", "docker-registry on %s" % registry_addr(), stdout=d / "access.log")
    return True


def stop_registry():
    stop_daemon(registry_pid(), registry_dir() / "registry.pid")


def push_images():
    """Push the lab's images (image_dir()/push.json) that the registry lacks; write <labdir>/registry/images.json.

    The push runs inside dgxlab-ctl (`lab.py _registry_push`): the registry listens there only.
    """
    plan = image_dir() / "push.json"
    res = run(["ip", "netns", "exec", CTL_NS, sys.executable, str(Path(__file__).resolve()), "_registry_push",
               registry_url(), str(plan)], check=False)
    if res.returncode != 0:
        raise LabError("pushing the lab's images to %s failed (rc=%s):\n%s" % (
            registry_url(), res.returncode, (res.stderr or res.stdout)[-3000:]))
    done = json.loads(res.stdout.strip().splitlines()[-1])
    images = json.loads(plan.read_text())["images"]
    keep = ("manifest_digest", "image_id", "layers", "size")
    listing = {"registry": registry_url(), "mirror_of": "docker.io",
               "images": {ref: dict({k: images[ref][k] for k in keep},
                                    repo_digest="%s@%s" % (ref.rpartition(":")[0], images[ref]["manifest_digest"]))
                          for ref in images}}
    (registry_dir() / "images.json").write_text(json.dumps(listing, indent=1) + "\n")
    log("registry %s: %s" % (registry_url(), ", ".join("%s %s" % (ref, what) for ref, what in done.items())))
    return done


def cmd_registry_push_child(args):
    """Inside dgxlab-ctl: wait for the registry's /v2/, push what it lacks, print {reference: pushed|present}."""
    client = lab_registry.Registry(args.url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.expect(200, "GET", "/v2/")
            break
        except lab_registry.RegistryError as exc:
            if time.monotonic() > deadline:
                raise LabError("the registry does not answer: %s" % exc) from exc
            time.sleep(0.1)
    images = json.loads(Path(args.plan).read_text())["images"]
    try:
        done = {ref: lab_registry.push(client, image) for ref, image in images.items()}
    except lab_registry.RegistryError as exc:
        raise LabError(str(exc)) from exc
    print(json.dumps(done))


def registry_images():
    """images.json's images: {reference: {manifest_digest, image_id, repo_digest, layers, size}}; {} before a push."""
    try:
        return json.loads((registry_dir() / "images.json").read_text())["images"]
    except (OSError, ValueError, KeyError):
        return {}


def registry_stats():
    """What the registry served the machines since it started (or since `registry-stats --reset`): pulls per reference
    (one pull: one GET of the image's config blob, see tests/lab/lab_registry.py) and per machine, manifest requests,
    blob GETs and bytes."""
    try:
        text = (registry_dir() / "access.log").read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    names = {node_ip(i): node_name(i) for i in range(1, MAX_NODES + 1)}
    # The controller's own requests are the push's (lab.py), not the machines'.
    return lab_registry.pull_stats(lab_registry.parse_access_log(text), registry_images(), names, ignore_clients=(CTL_IP,))


def registry_stats_reset():
    """Count from zero: empties the access log (the registry appends to it)."""
    log_file = registry_dir() / "access.log"
    if log_file.exists():
        os.truncate(log_file, 0)


def cmd_registry(_args):
    """Start the registry unless it runs, push what it lacks; print the path of images.json."""
    require_root()
    if CTL_NS not in netns_list():
        raise LabError("the lab is not up (no %s namespace): run `lab.py up N` first" % CTL_NS)
    build_rootfs()
    build_image()
    ensure_registry()
    push_images()
    print(registry_dir() / "images.json")


def cmd_registry_stats(args):
    if args.reset:
        registry_stats_reset()
    print(json.dumps(registry_stats(), indent=1, sort_keys=True))


# --------------------------------------------------------------------------- driverless machines

def driverless_wanted(args):
    return bool(getattr(args, "driverless", False))


def driverless_differs(i, wanted):
    """Whether machine i was made otherwise than `up` now asks (with or without the GPU stand-in)."""
    return (node_dir(i) / "driverless").exists() != wanted


def driverless_mark(i, wanted):
    marker = node_dir(i) / "driverless"
    if wanted:
        marker.write_text("no /usr/bin/nvidia-smi stand-in: a host with no NVIDIA driver installed\n")
    else:
        marker.unlink(missing_ok=True)


# --------------------------------------------------------------------------- memory-limited machines

# `up --memory-max SIZE`: each machine runs in a memory cgroup of its own (cgroup v1's memory controller, nested under
# the cgroup lab.py runs in) with that hard limit, and sees the limit as its memory: inside nspawn /proc/meminfo is the
# host's, so lxcfs (Debian's package, run by lab.py under the lab dir) serves a meminfo computed from the reader's
# memory cgroup, bind-mounted over the machine's /proc/meminfo. earlyoom, free and gpu_info then read the limit. A
# memory hog in such a machine can never take the host's memory: past the limit the kernel's OOM killer acts inside
# that cgroup only.
MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
MEMCG_PARENT_FILE = "memory-cgroup-parent"
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
MEMORY_MAX_MIN = 256 * 1024 ** 2   # below this a booted machine (systemd, journald, sshd) does not fit


def parse_size(text):
    """Bytes from ``1536M``, ``1.5G``, ``1GiB`` or a plain number of bytes (binary units)."""
    m = _SIZE.match(str(text))
    if not m:
        raise LabError("--memory-max %r: not a size (write e.g. 1536M or 1.5G)" % (text,))
    size = int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))
    if size < MEMORY_MAX_MIN:
        raise LabError("--memory-max %s: below %d MiB, a machine does not boot in it" % (text, MEMORY_MAX_MIN // 1024 ** 2))
    return size


def memory_max(i):
    """The machine's memory limit in bytes, or None (set by `up --memory-max`, kept in <node dir>/memory-max)."""
    return read_pid(node_dir(i) / "memory-max")


def set_memory_max(i, size):
    marker = node_dir(i) / "memory-max"
    if size:
        node_dir(i).mkdir(parents=True, exist_ok=True)
        marker.write_text("%d\n" % size)
    else:
        marker.unlink(missing_ok=True)


def memcg_parent():
    """The v1 memory cgroup the lab's ones nest in: recorded at the first `up --memory-max`, else lab.py's own."""
    recorded = LAB_DIR / MEMCG_PARENT_FILE
    if recorded.is_file():
        return recorded.read_text().strip()
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _num, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return None


def memcg_dirs(i=None):
    """The lab's (or machine i's) v1 memory cgroup, where `up --memory-max` made one."""
    recorded = LAB_DIR / MEMCG_PARENT_FILE
    if not recorded.is_file():
        return []
    base = MEMCG_ROOT / recorded.read_text().strip().lstrip("/") / CGROUP_NAME
    return [base if i is None else base / node_name(i)]


def prepare_memcg(i):
    """Machine i's memory cgroup with its limit (swap included, where the kernel accounts swap)."""
    size = memory_max(i)
    parent = memcg_parent()
    if not (MEMCG_ROOT / "cgroup.procs").is_file() or parent is None:
        raise LabError("--memory-max needs cgroup v1's memory controller at %s (this host has none)" % MEMCG_ROOT)
    recorded = LAB_DIR / MEMCG_PARENT_FILE
    if not recorded.is_file():
        recorded.write_text(parent + "\n")
    d = memcg_dirs(i)[0]
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.limit_in_bytes").write_text("%d\n" % size)
    if (d / "memory.memsw.limit_in_bytes").is_file():
        (d / "memory.memsw.limit_in_bytes").write_text("%d\n" % size)
    return d


def memcg_oom_kills(i):
    """How often the kernel's OOM killer acted in machine i's memory cgroup (None without one)."""
    for d in memcg_dirs(i):
        try:
            text = (d / "memory.oom_control").read_text()
        except OSError:
            return None
        found = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(found.group(1)) if found else None
    return None


def lxcfs_dir():
    return LAB_DIR / "lxcfs"


def lxcfs_pid():
    pid = read_pid(LAB_DIR / "lxcfs.pid")
    if pid and pid_alive(pid) and any(b"lxcfs" in a for a in proc_cmdline(pid)[:1]):
        return pid
    return None


def ensure_lxcfs():
    """lxcfs on <labdir>/lxcfs (its own instance, not the package's), started once; `down` stops it."""
    mount = lxcfs_dir()
    if lxcfs_pid() and (mount / "proc/meminfo").is_file():
        return
    require_tools(["lxcfs"])
    stop_lxcfs()
    mount.mkdir(parents=True, exist_ok=True)
    logf = open(LAB_DIR / "lxcfs.log", "ab")
    # --disable-swap: the machines have no swap of their own (memsw limit = memory limit); lxcfs 5.0.3 computes
    # SwapFree = 0 - (memsw usage - memory usage) there, which wraps around (18446744073709551360 kB, measured), and
    # earlyoom 1.7 exits on it ("get_entry: strtol() failed: Numerical result out of range").
    p = subprocess.Popen(["lxcfs", "--foreground", "--disable-swap", "--pidfile", str(LAB_DIR / "lxcfs.pid"), str(mount)],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    logf.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise LabError("lxcfs exited (rc=%s); %s ends with:\n%s" % (
                p.returncode, LAB_DIR / "lxcfs.log", (LAB_DIR / "lxcfs.log").read_text(errors="replace")[-2000:]))
        if is_mountpoint(mount) and (mount / "proc/meminfo").is_file():
            return
        time.sleep(0.05)
    raise LabError("lxcfs did not mount %s within 10 s; see %s" % (mount, LAB_DIR / "lxcfs.log"))


def stop_lxcfs():
    """SIGTERM (lxcfs unmounts itself), then whatever mount is left is unmounted."""
    stop_daemon(lxcfs_pid(), LAB_DIR / "lxcfs.pid")
    if is_mountpoint(lxcfs_dir()):
        if run(["umount", str(lxcfs_dir())], check=False).returncode != 0:
            run(["umount", "-l", str(lxcfs_dir())], check=False)


LXCFS_IN_NODE = "/usr/share/dgxspark-lab/lxcfs-proc"


def memory_nspawn_args(i):
    """The machine's own /proc/meminfo (lxcfs's view of its memory cgroup), read-only over the host's.

    Two binds: nspawn makes a bind onto /proc inside the machine, after /proc is mounted there, and so resolves its
    source inside the machine too (a host path fails: "Failed to stat ...: No such file or directory"). lxcfs's proc
    folder is bound into the machine first, and /proc/meminfo from there.
    """
    if not memory_max(i):
        return []
    return ["--bind-ro=%s:%s" % (lxcfs_dir() / "proc", LXCFS_IN_NODE),
            "--bind-ro=%s/meminfo:/proc/meminfo" % LXCFS_IN_NODE]


# --------------------------------------------------------------------------- machines

def ensure_key():
    key = LAB_DIR / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dgxspark-lab", "-f", str(key)])
    return (LAB_DIR / "id_ed25519.pub").read_text()


def host_keys(i):
    d = node_dir(i) / "hostkeys"
    if not (d / "etc/ssh/ssh_host_ed25519_key").exists():
        (d / "etc/ssh").mkdir(parents=True, exist_ok=True)
        for kind in ("ed25519", "ecdsa"):
            run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@" + node_name(i),
                 "-f", str(d / ("etc/ssh/ssh_host_%s_key" % kind))])
    return sorted((d / "etc/ssh").glob("ssh_host_*"))


def install_nvidia_smi_standin(merged):
    """The GPU stand-in of every machine but a driverless one: nvidia-smi and its captured outputs."""
    shutil.copyfile(HERE / "files/nvidia-smi", merged / "usr/bin/nvidia-smi")
    (merged / "usr/bin/nvidia-smi").chmod(0o755)
    fx = merged / FIXTURE_DIR_IN_NODE.lstrip("/")
    fx.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "files/nvidia_smi.py", fx / "nvidia_smi.py")
    for f in (HERE / "files/fixtures").glob("gb10*"):
        shutil.copyfile(f, fx / f.name)


def prepare_node(i, n, pubkey, driverless=False):
    d = node_dir(i)
    merged = d / "merged"
    if is_mountpoint(merged):
        run(["umount", str(merged)])
    for sub in ("upper", "work"):
        if (d / sub).exists():
            shutil.rmtree(d / sub)
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         "lowerdir=%s,upperdir=%s,workdir=%s" % (node_lowerdirs(i), d / "upper", d / "work"), str(merged)])
    name = node_name(i)
    (merged / "etc/hostname").write_text(name + "\n")
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += ["%s\t%s" % (node_ip(j), node_name(j)) for j in range(1, n + 1)]
    (merged / "etc/hosts").write_text("\n".join(hosts) + "\n")
    (merged / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    ssh_dir = merged / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    (ssh_dir / "authorized_keys").chmod(0o600)
    for key in host_keys(i):
        dst = merged / "etc/ssh" / key.name
        shutil.copyfile(key, dst)
        dst.chmod(0o644 if key.name.endswith(".pub") else 0o600)
    if not driverless:
        install_nvidia_smi_standin(merged)
    # The controller's own address is reached directly: `lab.py serve` (stand-in apt repositories) listens there.
    (merged / "etc/apt/apt.conf.d/01dgxspark-lab-proxy").write_text(
        "// tests/lab/lab.py: the lab has no route out; apt reaches the host's mirror through this\n"
        'Acquire::http::Proxy "http://%s:%d";\nAcquire::https::Proxy "http://%s:%d";\n'
        'Acquire::http::Proxy::%s "DIRECT";\n'
        % (CTL_IP, PROXY_PORT, CTL_IP, PROXY_PORT, CTL_IP))
    prepare_node_docker(merged)


def start_node(i, torch=False):
    name = node_name(i)
    argv = ["systemd-nspawn", "-D", str(node_dir(i) / "merged"), "-M", name, "-b",
            "--register=no", "--keep-unit", "--console=passive",
            # --private-network with the path: nspawn then grants CAP_NET_ADMIN and mounts /sys
            # from the machine's own namespace (without it /sys/class/net shows the host's links).
            "--network-namespace-path=/run/netns/%s" % node_ns(i), "--private-network",
            "--resolv-conf=off", "--link-journal=no", "--timezone=off",
            # runc joins a session keyring for every container: without these calls a Docker
            # engine inside the machine starts but cannot run any container.
            "--system-call-filter=@keyring bpf", "--capability=CAP_SYS_ADMIN,CAP_BPF,CAP_NET_ADMIN",
            # The checkout, read-only: the lab's SGLang stand-in runs from tests/lab/sglang_standin
            # there, with SGLang's wheel from the torch venv.
            "--bind-ro=%s:%s" % (REPO, STANDIN_MOUNT)] + memory_nspawn_args(i)
    # Not added: CAP_SYS_RESOURCE. The host itself runs without it, so no machine can have it: a container's hard
    # limits cannot be raised here (`docker run --ulimit memlock=-1` fails with `error setting rlimit type 8: operation
    # not permitted`; the machines' memlock hard limit is the host's 8 MiB), hence sglang_server_container_ulimits in
    # the lab inventory.
    marker = node_dir(i) / "torch"
    if torch:
        # Read-only at the same path: the venv's absolute paths hold inside the machine too.
        argv.append("--bind-ro=%s" % torch_venv())
        marker.write_text("%s\n" % torch_venv())
    else:
        marker.unlink(missing_ok=True)
    # A supervisor runs nspawn, and runs it again when the machine reboots (see run_machine).
    (node_dir(i) / "nspawn.json").write_text(json.dumps(argv) + "\n")
    return start_supervisor(i)


def log_tail(i, lines=25):
    try:
        return "\n".join((LAB_DIR / ("%s.log" % node_name(i))).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


WAIT_SSH = r"""
import socket, sys, time
hosts = sys.argv[2:]; deadline = time.time() + float(sys.argv[1]); left = set(hosts)
while left and time.time() < deadline:
    for h in sorted(left):
        try:
            s = socket.create_connection((h, 22), timeout=1); s.settimeout(2)
            if s.recv(64).startswith(b"SSH-"): left.discard(h)
            s.close()
        except OSError: pass
    if left: time.sleep(0.1)
print(" ".join(sorted(left)))
"""


def ssh_banner_missing(indices, timeout):
    res = run(["ip", "netns", "exec", CTL_NS, sys.executable, "-c", WAIT_SSH, str(timeout)]
              + [node_ip(i) for i in indices], check=False)
    missing = set((res.stdout or "").split())
    return [i for i in indices if node_ip(i) in missing]


def wait_ready(indices):
    deadline = time.monotonic() + SSH_WAIT_S
    pending = list(indices)
    while pending and time.monotonic() < deadline:
        dead = [i for i in pending if not nspawn_pid(i)]
        if dead:
            raise LabError("%s exited while booting; its log (%s) ends with:\n%s" % (
                node_name(dead[0]), LAB_DIR / ("%s.log" % node_name(dead[0])), log_tail(dead[0])))
        pending = ssh_banner_missing(pending, 2)
    if pending:
        raise LabError("sshd did not answer within %d s on %s; the log (%s) ends with:\n%s" % (
            SSH_WAIT_S, node_name(pending[0]), LAB_DIR / ("%s.log" % node_name(pending[0])), log_tail(pending[0])))
    procs = {i: subprocess.Popen(ssh_base(["-o", "ConnectTimeout=10"]) + ["root@" + node_ip(i), "true"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in indices}
    for i, p in procs.items():
        _out, err = p.communicate(timeout=30)
        if p.returncode != 0:
            raise LabError("ssh root@%s (%s) failed: %s" % (node_ip(i), node_name(i), err.strip()))


def stop_nodes(indices):
    """Orderly poweroff (SIGTERM to nspawn halts the machine), then SIGKILL whatever is left."""
    waiting = {}
    for i in indices:
        pid = nspawn_pid(i)
        if pid:
            os.kill(pid, signal.SIGTERM)
            waiting[i] = pid
    stopped = dict(waiting)
    deadline = time.monotonic() + STOP_WAIT_S
    while waiting and time.monotonic() < deadline:
        waiting = {i: p for i, p in waiting.items() if pid_alive(p)}
        if waiting:
            time.sleep(0.1)
    for i, pid in waiting.items():
        log("%s did not power off within %d s: killing it" % (node_name(i), STOP_WAIT_S))
        kill_all([pid])
    # The supervisor's parent is gone (up detached it), so init reaps it: give that a moment, so that
    # no <defunct> entry is left when down returns.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p) for p in stopped.values()):
        time.sleep(0.05)
    for i in indices:
        for _round in range(50):
            pids = cgroup_pids(cgroup_dirs(i)) | netns_pids([node_ns(i)])
            if not pids:
                break
            kill_all(pids)
            time.sleep(0.1)
        merged = node_dir(i) / "merged"
        for mp in [m for m in lab_mounts() if m.startswith(str(node_dir(i)))]:
            if run(["umount", mp], check=False).returncode != 0:
                run(["umount", "-l", mp], check=False)
        if merged.exists() and not is_mountpoint(merged):
            for sub in ("upper", "work"):
                shutil.rmtree(node_dir(i) / sub, ignore_errors=True)
        for cg in cgroup_dirs(i) + memcg_dirs(i):
            rmdir_tree(cg)
        for f in ("nspawn.pid", "supervisor.pid", "boots"):
            (node_dir(i) / f).unlink(missing_ok=True)
        delete_node_netns(i)


# --------------------------------------------------------------------------- reboot

# systemd-nspawn's exit status when the machine inside rebooted (`systemctl reboot`, Ansible's reboot
# module, SIGINT to its init); a poweroff exits 0.
NSPAWN_REBOOT_RC = 133
REBOOT_WAIT_S = STOP_WAIT_S + 10


def start_supervisor(i):
    """Start the machine's supervisor (`lab.py _supervise N`), detached, in the lab's own cgroup.

    The lab's cgroup (not the machine's) is where `down` looks for anything left: a supervisor is
    found there even if its pid file is lost. Its output and nspawn's go to <labdir>/<name>.log.
    """
    name = node_name(i)
    cgdirs = cgroup_dirs()
    for cg in cgroup_dirs(i):
        cg.mkdir(parents=True, exist_ok=True)

    def into_lab_cgroup():
        pid = str(os.getpid())
        for cg in cgdirs:
            with open(cg / "cgroup.procs", "w") as fh:
                fh.write(pid)

    (node_dir(i) / "boots").unlink(missing_ok=True)
    logf = open(LAB_DIR / ("%s.log" % name), "ab")
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_supervise", str(i)],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                         preexec_fn=into_lab_cgroup, close_fds=True)
    logf.close()
    (node_dir(i) / "supervisor.pid").write_text("%d\n" % p.pid)
    return p.pid


def supervisor_pid(i):
    pid = read_pid(node_dir(i) / "supervisor.pid")
    if pid and pid_alive(pid) and b"_supervise" in proc_cmdline(pid):
        return pid
    return None


def boots(i):
    """How many times the machine booted since `up` started it (1 before any reboot)."""
    return read_pid(node_dir(i) / "boots") or 0


def delete_node_netns(i):
    """Remove the machine's network namespace (and with it its veths, addresses, routes, netfilter)."""
    kill_all(netns_pids([node_ns(i)]))
    if node_ns(i) in netns_list():
        run(["ip", "netns", "del", node_ns(i)], check=False)
    # Its bridge ports vanish with the namespace, which the kernel tears down asynchronously:
    # wait, or a quick `up` (or a reboot) would find the old ports and then lose them.
    deadline = time.monotonic() + 10
    while (SW_NS in netns_list() and link_exists(SW_NS, "n%d-mgmt" % i)
           and time.monotonic() < deadline):
        time.sleep(0.05)


def drop_proxy_connections(i):
    """End the controller side's `nc` to this machine, as the TCP connection of a real reboot ends.

    The ProxyCommand's nc (netcat-openbsd) does not exit when the machine closes the connection
    (it stays in CLOSE-WAIT), so an SSH client, e.g. the ControlPersist master through which
    Ansible's reboot module ran `shutdown -r`, would wait forever for a machine that has gone.
    """
    target = node_ip(i).encode()
    for pid in netns_pids([CTL_NS]):
        argv = proc_cmdline(pid)
        if argv and os.path.basename(argv[0]) == b"nc" and target in argv:
            kill_all([pid], signal.SIGTERM)


def reset_node_net(i):
    """What a reboot does to a machine's network: its namespace made anew, then its plumbing as at `up`.

    Links come back down with their default MTU and no address (the role under test must bring the
    CX7 twins up again from its own configuration); links, routes, netfilter rules and sysctls made
    inside the machine (Docker's bridge, ...) are gone, as after a power cycle. The management
    address is set from outside again, as at `up`, unless the machine's own NetworkManager owns it.
    """
    drop_proxy_connections(i)
    delete_node_netns(i)
    ensure_node_net(i)


def run_machine(i):
    """The supervisor: run the machine's nspawn; when it exits with 133 (a reboot), run it again.

    Same overlay (disk, machine-id, host keys), same mounts, same namespaces' names; the machine's
    network namespace is made anew (reset_node_net). SIGTERM (from `down`) is passed on to nspawn
    (an orderly poweroff) and ends the loop. Returns nspawn's last exit status.
    """
    argv = json.loads((node_dir(i) / "nspawn.json").read_text())
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    cgdirs = cgroup_dirs(i)
    if memory_max(i):
        # Its limit holds for everything the machine runs: systemd inside cannot move a process out of it (the v1
        # memory hierarchy is not mounted in the machine).
        cgdirs = cgdirs + [prepare_memcg(i)]
    state = {"stopping": False, "child": None}

    def on_term(_sig, _frame):
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def into_cgroup():
        pid = str(os.getpid())
        for cg in cgdirs:
            with open(cg / "cgroup.procs", "w") as fh:
                fh.write(pid)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    boot = 0
    while True:
        boot += 1
        for cg in cgdirs:
            cg.mkdir(parents=True, exist_ok=True)
        print("\n==== %s boot %d: %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), boot, " ".join(argv)), flush=True)
        state["child"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, preexec_fn=into_cgroup,
                                          close_fds=True)
        (node_dir(i) / "nspawn.pid").write_text("%d\n" % state["child"].pid)
        (node_dir(i) / "boots").write_text("%d\n" % boot)
        if state["stopping"]:
            state["child"].send_signal(signal.SIGTERM)
        rc = state["child"].wait()
        if rc != NSPAWN_REBOOT_RC or state["stopping"]:
            suffix = "" if rc != NSPAWN_REBOOT_RC else " (stopping)"
            print("==== %s nspawn exited with %d%s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), rc, suffix), flush=True)
            return rc
        print("==== %s the machine rebooted: new network namespace, then boot again" % time.strftime(
            "%Y-%m-%dT%H:%M:%S"), flush=True)
        for _round in range(50):
            left = cgroup_pids(cgdirs)
            if not left:
                break
            kill_all(left)
            time.sleep(0.1)
        reset_node_net(i)


def cmd_supervise(args):
    try:
        rc = run_machine(args.index)
    except (LabError, OSError) as exc:
        log("supervisor of %s: %s" % (node_name(args.index), exc))
        rc = 1
    sys.exit(rc)


def container_init_pid(i):
    """PID (on the host) of the machine's init: the child of its systemd-nspawn."""
    pid = read_pid(node_dir(i) / "nspawn.pid")
    if not pid or not pid_alive(pid):
        return None
    for task in Path("/proc/%d/task" % pid).glob("*/children"):
        try:
            kids = task.read_text().split()
        except OSError:
            continue
        if kids:
            return int(kids[0])
    return None


def cmd_reboot(args):
    """Reboot a machine as its own `systemctl reboot` would, and wait until SSH answers again.

    The request goes to the machine's init as SIGINT (systemd starts ctrl-alt-del.target, a reboot):
    no SSH needed, so a machine whose network is broken can be rebooted too.
    """
    require_root()
    i = node_index(args.node)
    if not supervisor_pid(i):
        raise LabError("%s is not running (or was started without a supervisor): `lab.py up` first" % node_name(i))
    t0 = time.monotonic()
    before = boots(i)
    init = container_init_pid(i)
    if not init:
        raise LabError("%s: no init process found under its systemd-nspawn" % node_name(i))
    os.kill(init, signal.SIGINT)
    deadline = time.monotonic() + REBOOT_WAIT_S
    while boots(i) <= before and time.monotonic() < deadline:
        if not supervisor_pid(i):
            raise LabError("%s did not come back from its reboot; its log (%s) ends with:\n%s" % (
                node_name(i), LAB_DIR / ("%s.log" % node_name(i)), log_tail(i)))
        time.sleep(0.1)
    if boots(i) <= before:
        raise LabError("%s did not reboot within %d s" % (node_name(i), REBOOT_WAIT_S))
    wait_ready([i])
    log("%s rebooted in %.1f s (boot %d)" % (node_name(i), time.monotonic() - t0, boots(i)))


def switch_port(i, link):
    """The switch end of a machine's LINK (its management port or a CX7 twin, by the name the machine sees)."""
    ports = dict([(MGMT_IF, "n%d-mgmt" % i), ("mgmt", "n%d-mgmt" % i)]
                 + [(ifname, "n%d-%s" % (i, br)) for ifname, br in zip(CX7_IFS, CX7_BRIDGES)])
    if link not in ports:
        raise LabError("no link %r: one of %s" % (link, ", ".join(sorted(ports))))
    port = ports[link]
    if SW_NS not in netns_list() or not link_exists(SW_NS, port):
        raise LabError("%s has no port %s on the lab's switch: `lab.py up` first" % (node_name(i), port))
    return port


def cmd_cut(args):
    """Pull a machine's cable at the switch: its port on the management bridge (or a CX7 bridge) goes down.

    The machine sees no carrier on that interface; connections through it are not closed, they go silent, as when a
    Spark's cable is pulled or its switch port dies: SSH to it hangs until its keepalive gives up. Nothing inside
    the machine changes; `lab.py mend` (or `lab.py up`) plugs it back.
    """
    require_root()
    i = node_index(args.node)
    run(["ip", "-n", SW_NS, "link", "set", switch_port(i, args.link), "down"])
    log("%s: %s cut at the switch" % (node_name(i), args.link))


def cmd_mend(args):
    require_root()
    i = node_index(args.node)
    run(["ip", "-n", SW_NS, "link", "set", switch_port(i, args.link), "up"])
    log("%s: %s plugged back at the switch" % (node_name(i), args.link))


def state_read():
    try:
        return json.loads((LAB_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def state_write(state):
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    (LAB_DIR / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def known_nodes():
    found = set(range(1, state_read().get("nodes", 0) + 1))
    for n in lab_netns():
        m = re.fullmatch(NS_PREFIX + r"-node(\d+)", n)
        if m:
            found.add(int(m.group(1)))
    if (LAB_DIR / "nodes").is_dir():
        for d in (LAB_DIR / "nodes").iterdir():
            m = re.fullmatch(r"lab-spark-(\d+)", d.name)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)


# --------------------------------------------------------------------------- inventory

INVENTORY_HEAD = """\
---
# The lab: simulated DGX Sparks made by tests/lab/lab.py (systemd-nspawn machines, one network
# namespace each), in the shape of inventories/spark. Written by `tests/lab/lab.py up {n}`.
# Cluster settings are in group_vars/spark.yml, SSH through the lab's namespaces in group_vars/all.yml.
all:
  children:
    spark:
      hosts:
"""
INVENTORY_HOST = """\
        {name}:
          # Management address (enP7s7 on the lab's mgmt bridge): SSH goes here, never NCCL.
          ansible_host: {ip}
"""


# The monitoring host (playbooks/monitoring.yml): the controller itself, whose namespace dgxlab-ctl reaches every
# machine's management address (group_vars/spark_monitoring.yml says why there and not on a machine).
INVENTORY_TAIL = """\
    spark_monitoring:
      hosts:
        lab-prometheus:
          # The controller: the monitoring role writes Prometheus's files here; the tests run Prometheus in dgxlab-ctl.
          ansible_connection: local
"""


def render_inventory(n):
    return INVENTORY_HEAD.format(n=n) + "".join(
        INVENTORY_HOST.format(name=node_name(i), ip=node_ip(i)) for i in range(1, n + 1)) + INVENTORY_TAIL


# The committed inventories: two machines cabled back to back, and four through a switch (the bridges cx7a and cx7b;
# its group_vars are the two-machine lab's, linked, plus spark/topology.yml). Any N > 2 takes the switch's group_vars.
COMMITTED_INVENTORIES = {2: "inventories/lab", 4: "inventories/lab-4"}


def write_inventory(n, path):
    """The committed inventory for 2 or 4 machines of the default lab; else a copy with N hosts elsewhere."""
    repo_inv = REPO / COMMITTED_INVENTORIES[2 if n <= 2 else 4]
    text = render_inventory(n)
    if path is None and n in COMMITTED_INVENTORIES and str(LAB_DIR) == DEFAULT_LAB_DIR and not LAB_ID:
        committed = repo_inv / "hosts.yml"
        if not committed.is_file() or committed.read_text() != text:
            committed.write_text(text)
        return repo_inv
    if path is None:
        path = LAB_DIR / ("inventory-%d" % n)
    path = Path(path)
    (path / "group_vars").mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text(text)
    if path.resolve() != repo_inv.resolve():
        for f in sorted((repo_inv / "group_vars").rglob("*.yml")):
            target = path / "group_vars" / f.relative_to(repo_inv / "group_vars")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                f.read_text().replace(DEFAULT_LAB_DIR, str(LAB_DIR)).replace("dgxlab-ctl", CTL_NS)
                .replace("%s.1:%d" % (mgmt_net(""), REGISTRY_PORT), registry_addr())
                .replace("%s.1:%d" % (mgmt_net(""), HUB_PORT), "%s:%d" % (CTL_IP, HUB_PORT))
                .replace("%s.1/32" % mgmt_net(""), "%s/32" % CTL_IP))
    return path


# --------------------------------------------------------------------------- commands

def require_root():
    if os.geteuid() != 0:
        raise LabError("run as root (namespaces, mounts and cgroups need it)")


def require_tools(tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise LabError("missing %s: run tests/lab/install-deps.sh" % ", ".join(missing))


def cmd_rootfs(args):
    require_root()
    if not build_rootfs(force=args.force):
        log("rootfs is cached and current: %s" % rootfs_path())


def cmd_up(args):
    require_root()
    require_tools(["systemd-nspawn", "ip", "nc", "ssh", "ssh-keygen", "unshare"])
    n = args.count
    if n < 1 or n > 200:
        raise LabError("N must be 1..200")
    t0 = time.monotonic()
    build_rootfs()
    build_image()
    torch = torch_wanted(args)
    if torch:
        build_torch_venv()
    network_manager = bool(getattr(args, "network_manager", False))
    if network_manager:
        build_nm_layer()
    mem_max = parse_size(args.memory_max) if getattr(args, "memory_max", None) else None
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    pubkey = ensure_key()
    extra = [i for i in known_nodes() if i > n]
    if extra:
        log("stopping %s (not part of `up %d`)" % (", ".join(map(node_name, extra)), n))
        stop_nodes(extra)
        for i in extra:
            shutil.rmtree(node_dir(i), ignore_errors=True)
    state_write({"nodes": n})
    if not any(Path("/run/netns").glob("*")) and not is_mountpoint("/run/netns"):
        (LAB_DIR / "run-netns-mounted-by-lab").write_text("ip netns add mounts /run/netns\n")
    ensure_switch()
    ensure_proxy()
    ensure_registry()
    push_images()
    ensure_hub()
    started = []
    for i in range(1, n + 1):
        if nspawn_pid(i) and torch and not (node_dir(i) / "torch").exists():
            # A mount cannot be added to a running machine from here: restart it (pristine) with the venv.
            log("%s runs without the torch venv: restarting it with it" % node_name(i))
            stop_nodes([i])
        if nspawn_pid(i) and uses_network_manager(i) != network_manager:
            log("%s: restarting it (pristine) %s NetworkManager" % (node_name(i), "with" if network_manager else "without"))
            stop_nodes([i])
        if nspawn_pid(i) and driverless_differs(i, driverless_wanted(args)):
            log("%s runs %s the GPU stand-in: restarting it (pristine)" % (
                node_name(i), "with" if driverless_wanted(args) else "without"))
            stop_nodes([i])
        if nspawn_pid(i) and memory_max(i) != mem_max:
            log("%s: restarting it (pristine) with memory limit %s" % (node_name(i), mem_max or "none"))
            stop_nodes([i])
        if nspawn_pid(i):
            ensure_node_net(i)
            continue
        stop_nodes([i])        # leftovers of a machine that died: mounts, cgroups, namespace
        set_network_manager(i, network_manager)
        ensure_node_net(i)
        prepare_node(i, n, pubkey, driverless_wanted(args))
        driverless_mark(i, driverless_wanted(args))
        set_memory_max(i, mem_max)
        if mem_max:
            ensure_lxcfs()
        if network_manager:
            prepare_node_network_manager(i)
        start_node(i, torch)
        started.append(i)
    wait_ready(range(1, n + 1))
    inv = write_inventory(n, args.inventory)
    log("%d machine(s) up (%s started) in %.1f s; inventory: %s" % (
        n, ", ".join(map(node_name, started)) or "none", time.monotonic() - t0, inv))
    print(inv)


def cmd_torch(args):
    require_root()
    if not build_torch_venv(force=args.force):
        log("torch venv is built and current: %s" % torch_venv())


def cmd_down(args):
    require_root()
    t0 = time.monotonic()
    nodes = known_nodes()
    stop_nodes(nodes)
    stop_lxcfs()
    pid = proxy_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
    (LAB_DIR / "proxy.pid").unlink(missing_ok=True)
    stop_serve()
    stop_registry()
    stop_hub()
    for _round in range(50):
        pids = netns_pids(lab_netns()) | cgroup_pids(cgroup_dirs())
        if not pids:
            break
        kill_all(pids)
        time.sleep(0.1)
    for ns in lab_netns():
        run(["ip", "netns", "del", ns], check=False)
    for mp in lab_mounts():
        if run(["umount", mp], check=False).returncode != 0:
            run(["umount", "-l", mp], check=False)
    for cg in cgroup_dirs() + memcg_dirs():
        rmdir_tree(cg)
    if not any(c.exists() for c in memcg_dirs()):
        (LAB_DIR / MEMCG_PARENT_FILE).unlink(missing_ok=True)
    flag = LAB_DIR / "run-netns-mounted-by-lab"
    if flag.exists():
        if not any(Path("/run/netns").glob("*")) and is_mountpoint("/run/netns"):
            run(["umount", "/run/netns"], check=False)
        if not is_mountpoint("/run/netns"):
            flag.unlink()
    for i in nodes:
        for sub in ("upper", "work", "merged"):
            p = node_dir(i) / sub
            if p.exists() and not is_mountpoint(p):
                shutil.rmtree(p, ignore_errors=True)
    if LAB_DIR.exists():
        state_write({"nodes": 0})
    if args.purge and LAB_DIR.exists():
        if lab_mounts():
            raise LabError("mounts remain under %s: %s" % (LAB_DIR, lab_mounts()))
        shutil.rmtree(LAB_DIR)
    left = lab_netns() + lab_mounts() + [str(c) for c in cgroup_dirs() + memcg_dirs() if c.exists()]
    if left:
        raise LabError("down left these behind: %s" % ", ".join(left))
    log("down in %.1f s (%d machine(s))%s" % (time.monotonic() - t0, len(nodes), "; cache purged" if args.purge else ""))


def cmd_status(_args):
    nodes = known_nodes()
    if not nodes:
        print("lab: no machines (%s)" % LAB_DIR)
        return
    up = [i for i in nodes if nspawn_pid(i)]
    missing = set(ssh_banner_missing(up, 2)) if up and CTL_NS in netns_list() else set(up)
    print("proxy: %s" % ("running (pid %d)" % proxy_pid() if proxy_pid() else "not running"))
    drops = mgmt_filter_drops() if SW_NS in netns_list() else None
    mgmt = "not loaded" if drops is None else "only SSH and SGLang's serving port between machines (%d frames dropped)" % drops
    print("management filter: %s" % mgmt)
    if serve_pid():
        print("serve: running (pid %d) on http://%s:%d/" % (serve_pid(), CTL_IP, SERVE_PORT))
    if registry_pid():
        pulls = registry_stats()["pulls"]
        print("registry: running (pid %d) on %s; pulls: %s" % (registry_pid(), registry_url(), ", ".join(
            "%s %d" % kv for kv in sorted(pulls.items())) or "none"))
    else:
        print("registry: not running")
    if hub_pid():
        print("hub: the Hugging Face hub stand-in (pid %d) on http://%s:%d/" % (hub_pid(), CTL_IP, HUB_PORT))
    for i in nodes:
        addrs = ""
        if node_ns(i) in netns_list():
            res = run(["ip", "-n", node_ns(i), "-br", "addr", "show"], check=False)
            addrs = "; ".join(" ".join(line.split()) for line in res.stdout.splitlines() if not line.startswith("lo "))
        state = "running" if i in up else "stopped"
        if i in up and (node_dir(i) / "driverless").exists():
            addrs = "driverless; " + addrs
        if i in up and memory_max(i):
            addrs = "memory max %d MiB; %s" % (memory_max(i) // 1024 ** 2, addrs)
        ssh = "ssh ok" if i in up and i not in missing else "ssh down"
        print("%s  %-15s %-8s %-8s %s" % (node_name(i), node_ip(i), state, ssh, addrs))


def cmd_ssh(args):
    i = node_index(args.node)
    os.execvp("ssh", ssh_base(["-t"] if not args.cmd and sys.stdin.isatty() else []) + ["root@" + node_ip(i)] + args.cmd)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start N machines (idempotent)")
    p.add_argument("count", type=int, metavar="N")
    p.add_argument("--with-torch", action="store_true",
                   help="build the torch venv once (cached) and mount it read-only into every machine "
                        "(also DGXSPARK_LAB_TORCH=1)")
    p.add_argument("--network-manager", action="store_true",
                   help="the management port belongs to the machine's own NetworkManager, as on DGX OS "
                        "(a package layer built once, Ubuntu's netplan and NM defaults, a static profile)")
    p.add_argument("--driverless", action="store_true",
                   help="machines without the stand-in nvidia-smi: hosts with no NVIDIA driver installed "
                        "(running machines made otherwise are restarted, pristine)")
    p.add_argument("--memory-max", metavar="SIZE", default=None,
                   help="a hard memory limit per machine (e.g. 1536M), seen as its memory in /proc/meminfo (lxcfs); "
                        "running machines made otherwise are restarted, pristine")
    p.add_argument("--inventory", type=Path, default=None,
                   help="folder to write hosts.yml + group_vars into (default: inventories/lab for N=2, "
                        "inventories/lab-4 for N=4, else $DGXSPARK_LAB_DIR/inventory-N)")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop all machines, remove namespaces, mounts, cgroups")
    p.add_argument("--purge", action="store_true", help="also remove the rootfs cache and the lab dir")
    p.set_defaults(func=cmd_down)
    sub.add_parser("status", help="one line per machine").set_defaults(func=cmd_status)
    p = sub.add_parser("ssh", help="ssh into a machine")
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)
    p = sub.add_parser("rootfs", help="build the rootfs cache only")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_rootfs)
    p = sub.add_parser("image", help="build the lab's SGLang image only (up builds it too)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_image)
    sub.add_parser("registry", help="start the lab's registry and push the lab's images into it (up does it too)"
                   ).set_defaults(func=cmd_registry)
    p = sub.add_parser("registry-stats", help="pulls and downloads counted by the lab's registry, as JSON")
    p.add_argument("--reset", action="store_true", help="count from zero (empties the registry's access log)")
    p.set_defaults(func=cmd_registry_stats)
    p = sub.add_parser("_registry_push")
    p.add_argument("url")
    p.add_argument("plan")
    p.set_defaults(func=cmd_registry_push_child)
    p = sub.add_parser("torch", help="build the torch venv only (see up --with-torch)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_torch)
    p = sub.add_parser("reboot", help="reboot a machine (as `systemctl reboot` inside would); wait for SSH")
    p.add_argument("node")
    p.set_defaults(func=cmd_reboot)
    for name, func, what in (("cut", cmd_cut, "pull a machine's cable at the switch (its port down): links go silent"),
                             ("mend", cmd_mend, "plug a machine's cable back (after cut)")):
        p = sub.add_parser(name, help=what)
        p.add_argument("node")
        p.add_argument("link", nargs="?", default="mgmt",
                       help="mgmt (default, the management port %s) or a CX7 twin: %s" % (MGMT_IF, ", ".join(CX7_IFS)))
        p.set_defaults(func=func)
    p = sub.add_parser("serve", help="serve a folder over HTTP to the machines (e.g. stand-in apt repositories)")
    p.add_argument("directory")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("_serve")
    p.add_argument("directory")
    p.set_defaults(func=cmd_serve_child)
    p = sub.add_parser("hub-stats", help="what the Hugging Face hub stand-in served, as JSON")
    p.add_argument("--reset", action="store_true", help="then zero its counters")
    p.set_defaults(func=cmd_hub_stats)
    sub.add_parser("_hub").set_defaults(func=cmd_hub_child)
    sub.add_parser("_proxy").set_defaults(func=cmd_proxy)
    p = sub.add_parser("_supervise")
    p.add_argument("index", type=int)
    p.set_defaults(func=cmd_supervise)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LabError as exc:
        log("error: %s" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
