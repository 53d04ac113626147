"""tests/lab/standin_repos.py: docker-ce is Debian's docker.io renamed, as a .deb that dpkg reads."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("standin_repos", ROOT / "tests" / "lab" / "standin_repos.py")
repos = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(repos)

# The head of Debian bookworm's docker.io control file (dpkg-deb -I docker.io_20.10.24+dfsg1-1+deb12u1+b6_amd64.deb).
DOCKER_IO_CONTROL = """\
Package: docker.io
Source: docker.io (20.10.24+dfsg1-1+deb12u1)
Version: 20.10.24+dfsg1-1+deb12u1+b6
Architecture: amd64
Depends: libc6 (>= 2.34), containerd (>= 1.4~), iptables, runc (>= 1.0.0~rc8~), tini
Conflicts: docker-ce, docker-ce-cli, docker-ce-rootless-extras
Built-Using: containerd (= 1.6.20~ds1-1+deb12u3),
 continuity (= 0.3.0-1)
Section: admin
Description: Linux container runtime
 Docker complements kernel namespacing with a high-level API.
"""


def fields(text):
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in text.splitlines() if line[:1].isalpha()}


def test_renamed_control_drops_the_conflict_with_docker_ce():
    out = repos.rename_control(DOCKER_IO_CONTROL, "docker-ce", "~lab", "stand-in")
    got = fields(out)
    assert got["Package"] == "docker-ce"
    assert got["Version"] == "20.10.24+dfsg1-1+deb12u1+b6~lab"
    assert got["Conflicts"] == "docker.io"
    assert got["Depends"] == fields(DOCKER_IO_CONTROL)["Depends"]
    assert "Built-Using" not in got and "continuity" not in out
    assert "Description: stand-in\n .\n Linux container runtime\n Docker complements" in out


def test_ar_round_trip():
    members = [("debian-binary", b"2.0\n"), ("odd", b"abc"), ("data.tar.xz", b"\0" * 10)]
    assert repos.ar_members(repos.ar_archive(members)) == members


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_engine_deb_is_a_package_dpkg_reads(tmp_path):
    cache, pool, work = tmp_path / "cache", tmp_path / "pool", tmp_path / "work"
    for d in (cache, pool, work):
        d.mkdir()
    # A small docker.io in the cache (docker.io_*.deb, as apt-get download names it), built by dpkg-deb.
    deb, _control = repos.build_deb(work, cache, "docker.io", "20.10.24-1", "tini",
                                    {"usr/bin/dockerd": ("#!/bin/sh\n", 0o755)})
    assert deb.name.startswith("docker.io_")
    out, control = repos.engine_deb(cache, pool)
    info = fields(subprocess.run(["dpkg-deb", "-f", str(out)], capture_output=True, text=True, check=True).stdout)
    assert info["Package"] == "docker-ce"
    assert info["Version"] == "20.10.24-1~dgxsparklab1"
    assert info["Depends"] == "tini"
    assert info["Conflicts"] == "docker.io"
    assert fields(control) == info
    listing = subprocess.run(["dpkg-deb", "-c", str(out)], capture_output=True, text=True, check=True).stdout
    assert "./usr/bin/dockerd" in listing
