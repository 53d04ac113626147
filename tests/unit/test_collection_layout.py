"""The collection's own metadata: what a user and ansible-galaxy rely on."""

from __future__ import annotations

import os
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_galaxy_metadata():
    meta = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert (meta["namespace"], meta["name"], meta["version"]) == ("dgxspark", "sglang", "0.1.0")
    assert meta["license"] and meta["repository"] and meta["tags"]
    for path in ("tests", ".venv", "molecule", "benchmarks", "collections/ansible_collections"):
        assert path in meta["build_ignore"], path
    # collections/requirements.yml ships: the execution environment of an installed copy reads it.
    assert "collections" not in meta["build_ignore"]


def test_checkout_link_points_at_the_repo_root():
    link = ROOT / "collections" / "ansible_collections" / "dgxspark" / "sglang"
    assert link.is_symlink()
    assert os.path.realpath(link) == str(ROOT)


def test_requires_ansible():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"].startswith(">=")
