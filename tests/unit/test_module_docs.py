"""docs/modules.md is generated from the modules' documentation and must match it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_module_docs_are_current():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "module_docs.py"), "--check"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_every_module_has_a_section():
    text = (ROOT / "docs" / "modules.md").read_text()
    for path in (ROOT / "plugins" / "modules").glob("*.py"):
        assert "## %s\n" % path.stem in text, path.stem
