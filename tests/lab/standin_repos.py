# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in apt repositories for a lab machine with no driver (`lab.py up --driverless`).

    python3 tests/lab/standin_repos.py [--cache DIR] OUTDIR   build them into OUTDIR (emptied first); print what to pin

Built at test time on this host with `dpkg-deb` and `gpg` (a throw-away keyring, one test key per
repository), served to the machines by `lab.py serve OUTDIR`. Each repository carries the package
names the roles install, so the roles run their real install path against them:

- ``debian/``: the distribution's archive (suite bookworm, component non-free), where the
  nvidia_driver role's Debian packages come from: ``nvidia-driver`` (depends on the two others),
  ``nvidia-open-kernel-dkms`` (a unit that marks the "kernel module" loaded at boot, in /run) and
  ``nvidia-smi`` (the lab's stand-in nvidia-smi, tests/lab/files/, which answers only once the
  module is loaded). The test key of this archive is ``debian/archive-key.asc``; a machine trusts
  it the way it trusts Debian's (a sources entry with Signed-By).
- ``docker/linux/debian/``: Docker's repository, in its real layout (key at ``.../debian/gpg``,
  suite bookworm, component stable): ``docker-ce``, ``docker-ce-cli``, ``containerd.io``,
  ``docker-buildx-plugin``. They bring the real engine: ``docker-ce`` is Debian's ``docker.io``
  renamed (its control file rewritten, its files and maintainer scripts as they are; Debian's
  ``docker.io`` conflicts with ``docker-ce``, so depending on it cannot work), fetched once with
  ``apt-get download docker.io`` into the cache folder (``--cache``, default
  ``$DGXSPARK_LAB_DIR/standin-cache``); ``containerd.io`` depends on Debian's ``containerd``,
  which the machine takes from the host's mirror through the lab's proxy.
- ``libnvidia-container/``: NVIDIA's toolkit repository, in its real flat layout (key at
  ``gpgkey``, packages in ``stable/deb/<arch>/``): ``nvidia-container-toolkit``, whose
  ``nvidia-container-runtime`` hands every container to runc (there is no GPU to hook in).

What it prints (and writes to OUTDIR/standin.json): each repository's path under OUTDIR and its key's
fingerprint, for the roles' URL and fingerprint variables. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
DRIVER_VERSION = "580.126.09-1~dgxsparklab1"   # the branch and version the stand-in nvidia-smi reports
RUNTIME_VERSION = "1.0~dgxsparklab1"
SMI_DIR = "usr/share/dgxspark-lab/nvidia-smi"
MODULE_UNIT = "dgxspark-lab-nvidia-module.service"

MODULE_UNIT_TEXT = """\
# tests/lab/standin_repos.py: the stand-in for the NVIDIA kernel module, "loaded" at every boot.
# /run is emptied by each boot, so nvidia-smi answers after the reboot that follows the install.
# Pulled in at boot by its link in /lib/systemd/system/sysinit.target.wants (shipped in the package).
[Unit]
Description=dgxspark lab stand-in: NVIDIA kernel module loaded
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /run/dgxspark-lab && : > /run/dgxspark-lab/nvidia-module-loaded'
"""

RUNTIME_TEXT = """\
#!/bin/sh
# tests/lab/standin_repos.py: stand-in for the NVIDIA Container Toolkit's OCI runtime. There is no GPU
# to hook into the container here, so every container goes to runc unchanged.
exec runc "$@"
"""


def package_specs():
    """Per repository: (name, version, depends, {path in package: (source file or text, mode)})."""
    smi_files = {"usr/bin/nvidia-smi": (HERE / "files/nvidia-smi", 0o755),
                 SMI_DIR + "/nvidia_smi.py": (HERE / "files/nvidia_smi.py", 0o644),
                 SMI_DIR + "/needs-kernel-module": ("", 0o644)}
    for f in sorted((HERE / "files/fixtures").glob("gb10*")):
        smi_files[SMI_DIR + "/" + f.name] = (f, 0o644)
    return {
        "archive": [
            ("nvidia-smi", DRIVER_VERSION, "python3", smi_files),
            ("nvidia-open-kernel-dkms", DRIVER_VERSION, "", {
                "lib/systemd/system/" + MODULE_UNIT: (MODULE_UNIT_TEXT, 0o644),
                "lib/systemd/system/sysinit.target.wants/" + MODULE_UNIT: ("->../" + MODULE_UNIT, 0)}),
            ("nvidia-driver", DRIVER_VERSION,
             "nvidia-open-kernel-dkms (= %s), nvidia-smi (= %s)" % (DRIVER_VERSION, DRIVER_VERSION), {}),
        ],
        "docker": [
            # docker-ce itself is Debian's docker.io renamed: engine_deb().
            ("docker-ce-cli", RUNTIME_VERSION, "docker-ce", {}),
            ("containerd.io", RUNTIME_VERSION, "containerd", {}),
            ("docker-buildx-plugin", RUNTIME_VERSION, "", {}),
        ],
        "nvidia": [
            ("nvidia-container-toolkit", RUNTIME_VERSION, "runc",
             {"usr/bin/nvidia-container-runtime": (RUNTIME_TEXT, 0o755)}),
        ],
    }


def run(argv, env=None, stdin=None):
    res = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit("standin_repos: %s failed (rc=%s): %s%s" % (" ".join(argv), res.returncode,
                                                                     res.stdout, res.stderr))
    return res.stdout


def build_deb(workdir, outdir, name, version, depends, files):
    root = Path(workdir) / ("%s_%s" % (name, version))
    (root / "DEBIAN").mkdir(parents=True)
    for rel, (src, mode) in files.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str) and src.startswith("->"):
            dst.symlink_to(src[2:])
            continue
        dst.write_bytes(src.read_bytes() if isinstance(src, Path) else src.encode())
        dst.chmod(mode)
    control = ("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: dgxspark.sglang lab <lab@dgxspark.invalid>\n"
               "Section: misc\nPriority: optional\n" % (name, version))
    if depends:
        control += "Depends: %s\n" % depends
    control += ("Description: dgxspark lab stand-in for %s\n"
                " Built by tests/lab/standin_repos.py for the lab's driverless machines; not the real package.\n" % name)
    (root / "DEBIAN/control").write_text(control)
    deb = Path(outdir) / ("%s_%s_all.deb" % (name, version))
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)])
    return deb, control


# ---- docker-ce: Debian's engine under Docker's package name

def ar_members(data):
    """The members of an ar archive (a .deb): [(name, bytes)]."""
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit("standin_repos: not an ar archive (a .deb)")
    pos, members = 8, []
    while pos < len(data):
        head = data[pos:pos + 60]
        name, size = head[:16].decode().strip().rstrip("/"), int(head[48:58].decode())
        members.append((name, data[pos + 60:pos + 60 + size]))
        pos += 60 + size + (size % 2)
    return members


def ar_archive(members):
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(("%-16s%-12d%-6d%-6d%-8s%-10d`\n" % (name, int(time.time()), 0, 0, "100644", len(data))).encode())
        out.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def rename_control(text, name, version_suffix, note):
    """A control file with another package name and version, without Conflicts/Built-Using, noting the stand-in."""
    fields, key = [], None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1].append(line)
            continue
        key, _sep, value = line.partition(":")
        fields.append((key, [line]))
    out = []
    for key, lines in fields:
        if key in ("Conflicts", "Built-Using", "Source"):
            continue
        if key == "Package":
            lines = ["Package: %s" % name]
        elif key == "Version":
            lines = [lines[0] + version_suffix]
        elif key == "Description":
            lines = ["Description: %s" % note, " ."] + [" " + lines[0].split(":", 1)[1].strip()] + lines[1:]
        out += lines
    return "\n".join(out) + "\nConflicts: docker.io\n"


def engine_deb(cache, outdir):
    """docker-ce: Debian's docker.io (fetched once into ``cache``), its control file rewritten, the rest as is."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("docker.io_*.deb"))
    if not found:
        res = subprocess.run(["apt-get", "download", "docker.io"], cwd=str(cache), capture_output=True, text=True,
                             check=False)
        found = sorted(cache.glob("docker.io_*.deb"))
        if res.returncode != 0 or not found:
            raise SystemExit("standin_repos: `apt-get download docker.io` failed (rc=%s): %s%s\nFix: run `apt-get update` "
                             "on this host (Debian bookworm), or put docker.io_*.deb into %s"
                             % (res.returncode, res.stdout, res.stderr, cache))
    members = ar_members(found[-1].read_bytes())
    fixed = []
    control_text = None
    for name, data in members:
        if name.startswith("control.tar"):
            mode = {"control.tar.xz": "xz", "control.tar.gz": "gz"}.get(name)
            if not mode:
                raise SystemExit("standin_repos: %s has %s; only xz or gz control archives are read" % (found[-1], name))
            src = tarfile.open(fileobj=io.BytesIO(data), mode="r:" + mode)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:" + mode, format=tarfile.GNU_FORMAT) as dst:
                for info in src.getmembers():
                    content = src.extractfile(info).read() if info.isfile() else None
                    if info.name in ("./control", "control"):
                        control_text = rename_control(content.decode(), "docker-ce", "~dgxsparklab1",
                                                      "dgxspark lab stand-in for docker-ce: Debian's docker.io, renamed")
                        content = control_text.encode()
                        info.size = len(content)
                    dst.addfile(info, io.BytesIO(content) if content is not None else None)
            data = buf.getvalue()
        fixed.append((name, data))
    if control_text is None:
        raise SystemExit("standin_repos: %s has no control file" % found[-1])
    version = next(line.split(":", 1)[1].strip() for line in control_text.splitlines() if line.startswith("Version:"))
    arch = next(line.split(":", 1)[1].strip() for line in control_text.splitlines() if line.startswith("Architecture:"))
    deb = Path(outdir) / ("docker-ce_%s_%s.deb" % (version, arch))
    deb.write_bytes(ar_archive(fixed))
    return deb, control_text


def packages_entry(control, deb, filename):
    data = deb.read_bytes()
    return control.replace("Description:", "Filename: %s\nSize: %d\nSHA256: %s\nDescription:" % (
        filename, len(data), hashlib.sha256(data).hexdigest()), 1)


def release_text(label, base, files, components=None, arch=None):
    """A Release file over the index files in ``files`` (paths relative to ``base``)."""
    head = ["Origin: dgxspark-lab", "Label: %s" % label, "Suite: %s" % SUITE if components else "Suite: stable",
            "Codename: %s" % SUITE if components else None,
            "Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()),
            "Architectures: %s" % arch if components else None,
            "Components: %s" % components if components else None, "SHA256:"]
    lines = [h for h in head if h]
    for rel in files:
        data = (Path(base) / rel).read_bytes()
        lines.append(" %s %d %s" % (hashlib.sha256(data).hexdigest(), len(data), rel))
    return "\n".join(lines) + "\n"


def write_index(folder, entries):
    text = "\n".join(entries)
    (folder / "Packages").write_text(text)
    with gzip.open(folder / "Packages.gz", "wt") as fh:
        fh.write(text)


class Keyring:
    """A throw-away GnuPG home: one signing key per repository, its agent stopped at the end."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="dgxspark-lab-gpg-")
        os.chmod(self.home, 0o700)
        self.env = dict(os.environ, GNUPGHOME=self.home, LC_ALL="C")

    def new_key(self, label):
        uid = "dgxspark lab %s repository (test key) <lab@dgxspark.invalid>" % label
        run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], env=self.env)
        for line in run(["gpg", "--batch", "--with-colons", "--list-keys", uid], env=self.env).splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise SystemExit("standin_repos: no fingerprint for %s" % uid)

    def export(self, fpr, path):
        path.write_text(run(["gpg", "--batch", "--armor", "--export", fpr], env=self.env))

    def sign(self, fpr, release):
        run(["gpg", "--batch", "--yes", "--local-user", fpr, "--digest-algo", "SHA256", "--clearsign",
             "--output", str(release.parent / "InRelease"), str(release)], env=self.env)

    def close(self):
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def build(outdir, cache):
    outdir = Path(outdir).resolve()
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    arch = run(["dpkg", "--print-architecture"]).strip()
    specs = package_specs()
    keys = Keyring()
    work = tempfile.mkdtemp(prefix="dgxspark-lab-debs-")
    found = {}
    try:
        # The distribution's archive: dists/SUITE/non-free/binary-ARCH, pool/non-free.
        base = outdir / "debian"
        fpr = keys.new_key("archive")
        pool, index = base / "pool/non-free", base / ("dists/%s/non-free/binary-%s" % (SUITE, arch))
        pool.mkdir(parents=True)
        index.mkdir(parents=True)
        entries = []
        for spec in specs["archive"]:
            deb, control = build_deb(work, pool, *spec)
            entries.append(packages_entry(control, deb, str(deb.relative_to(base))))
        write_index(index, entries)
        dist = base / "dists" / SUITE
        rel = ["non-free/binary-%s/Packages" % arch, "non-free/binary-%s/Packages.gz" % arch]
        (dist / "Release").write_text(release_text("archive", dist, rel, "non-free", arch))
        keys.sign(fpr, dist / "Release")
        keys.export(fpr, base / "archive-key.asc")
        found["archive"] = {"path": "debian", "suite": SUITE, "component": "non-free",
                            "key": "debian/archive-key.asc", "fingerprint": fpr}

        # Docker's repository: linux/debian/{gpg,dists/SUITE/stable/binary-ARCH,pool/stable}.
        base = outdir / "docker/linux/debian"
        fpr = keys.new_key("docker")
        pool, index = base / "pool/stable", base / ("dists/%s/stable/binary-%s" % (SUITE, arch))
        pool.mkdir(parents=True)
        index.mkdir(parents=True)
        entries = []
        for deb, control in [engine_deb(Path(cache), pool)] + [build_deb(work, pool, *spec) for spec in specs["docker"]]:
            entries.append(packages_entry(control, deb, str(deb.relative_to(base))))
        write_index(index, entries)
        dist = base / "dists" / SUITE
        rel = ["stable/binary-%s/Packages" % arch, "stable/binary-%s/Packages.gz" % arch]
        (dist / "Release").write_text(release_text("docker", dist, rel, "stable", arch))
        keys.sign(fpr, dist / "Release")
        keys.export(fpr, base / "gpg")
        found["docker"] = {"path": "docker/linux", "fingerprint": fpr}

        # NVIDIA's toolkit repository, flat: libnvidia-container/{gpgkey,stable/deb/ARCH/}.
        base = outdir / "libnvidia-container"
        fpr = keys.new_key("nvidia")
        flat = base / "stable/deb" / arch
        flat.mkdir(parents=True)
        entries = []
        for spec in specs["nvidia"]:
            deb, control = build_deb(work, flat, *spec)
            entries.append(packages_entry(control, deb, "./" + deb.name))
        write_index(flat, entries)
        (flat / "Release").write_text(release_text("nvidia", flat, ["Packages", "Packages.gz"]))
        keys.sign(fpr, flat / "Release")
        keys.export(fpr, base / "gpgkey")
        found["nvidia"] = {"path": "libnvidia-container/stable/deb", "key": "libnvidia-container/gpgkey",
                           "fingerprint": fpr}
    finally:
        keys.close()
        shutil.rmtree(work, ignore_errors=True)
    found["arch"] = arch
    found["driver_version"] = DRIVER_VERSION
    (outdir / "standin.json").write_text(json.dumps(found, indent=1) + "\n")
    return found


def main(argv):
    parser = argparse.ArgumentParser(prog="standin_repos.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("outdir")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where docker.io's .deb is kept between builds (default: $DGXSPARK_LAB_DIR/standin-cache)")
    args = parser.parse_args(argv)
    cache = args.cache or Path(os.environ.get("DGXSPARK_LAB_DIR") or "/var/lib/dgxspark-lab") / "standin-cache"
    t0 = time.monotonic()
    found = build(args.outdir, cache)
    sys.stderr.write("standin_repos: built in %.1f s: %s\n" % (time.monotonic() - t0, args.outdir))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
