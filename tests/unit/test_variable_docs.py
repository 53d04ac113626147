"""docs/variables.md is generated from the roles' argument specs and must match them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_variable_docs_are_current():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "variable_docs.py"), "--check"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_every_role_and_variable_has_its_line():
    import yaml

    text = (ROOT / "docs" / "variables.md").read_text()
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        assert "## %s\n" % spec.parents[1].name in text
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            for name in entry.get("options") or {}:
                assert "| `%s` |" % name in text, name
