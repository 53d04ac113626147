"""Every role's meta/argument_specs.yml documents exactly its defaults/main.yml (house rule 8).

The one exception: the preflight role also documents the cluster plan's inputs, whose defaults live once in
plugins/module_utils/_cluster.py (DEFAULTS); test__cluster.py checks those documented defaults against DEFAULTS.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import DEFAULTS as PLAN_DEFAULTS

ROLES = sorted(p for p in (pathlib.Path(__file__).resolve().parents[3] / "roles").iterdir() if (p / "defaults").is_dir())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_equal_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    main = specs["main"]["options"]
    plan_inputs = set(PLAN_DEFAULTS) if role.name == "preflight" else set()
    assert {name for name, option in main.items() if option.get("default") is not None} - plan_inputs == {
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
