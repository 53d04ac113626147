"""Every role's meta/argument_specs.yml documents exactly its defaults/main.yml (house rule 8)."""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROLES = sorted(p for p in (pathlib.Path(__file__).resolve().parents[3] / "roles").iterdir() if (p / "defaults").is_dir())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_equal_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    main = specs["main"]["options"]
    assert {name for name, option in main.items() if option.get("default") is not None} == {
        name for name, value in defaults.items() if value is not None}
    for name, value in defaults.items():
        assert name in main, "%s is in defaults/main.yml but not documented" % name
        assert main[name].get("default") == value, name
        assert name.startswith(role.name + "_"), "%s: role variables carry the role's name as prefix" % name
    for entry in specs.values():
        for name, option in entry["options"].items():
            assert option.get("description"), name
            if name in defaults:
                assert option.get("default") == defaults[name], name


def test_every_role_has_argument_specs():
    roles = [p for p in ROLES[0].parent.iterdir() if p.is_dir()]
    assert roles and all((r / "meta" / "argument_specs.yml").is_file() for r in roles)
