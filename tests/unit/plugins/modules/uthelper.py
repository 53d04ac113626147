# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table-driven module tests: YAML cases in, one pytest test per case out.

Usage, in ``tests/unit/plugins/modules/test_<module>.py``::

    from ansible_collections.dgxspark.sglang.plugins.modules import gpu_info
    from .uthelper import UTHelper

    UTHelper.from_module(gpu_info, __file__)

``from_module`` reads ``test_<module>.yaml`` next to the given file and defines a parametrized
``test_module`` function (one pytest id per case) in the calling test module's namespace.

Each YAML case (a list of mappings at the top level)::

    - id: gb10_unified_memory              # pytest id; required, unique
      input: {expected_count: 1}           # module arguments
      flags: {check: true, diff: false}    # optional: sets _ansible_check_mode / _ansible_diff
      files:                               # optional: OPTION -> fixture path
        meminfo_path: nvidia-smi/meminfo-gb10.txt
      mocks:
        get_bin_path:                      # optional: name -> path, null = "not found"
          nvidia-smi: /usr/bin/nvidia-smi  #   names not listed resolve to /usr/bin/<name>
        run_command:                       # the exact calls expected, in order
          - command: [/usr/bin/nvidia-smi, --query-gpu=..., --format=csv,nounits]
            environ_update: {LC_ALL: C, LANG: C}   # optional: checked when given
            rc: 0
            out_file: nvidia-smi/gb10-query.csv    # or `out: "..."`; err_file / err alike
            err: ""
      output: {gpu_count: 1}               # subset match of the module's result
      failed: false                        # true => fail_json expected
      msg_contains: [reboot]               # optional: substrings of result["msg"]

How it works (nothing inside the module is patched):

* Arguments go in through ``ansible.module_utils.testing.patch_module_args`` (ansible-core 2.19),
  falling back to ``ansible.module_utils.basic._ANSIBLE_ARGS`` on older cores.
* ``files:`` maps a module OPTION to a fixture path (relative to ``tests/unit/fixtures/``); the
  harness puts the absolute path of that fixture into that option. Paths a module reads must
  therefore be options with real defaults (``meminfo_path: /proc/meminfo``); a key that is not an
  option name (e.g. ``/proc/meminfo``) is rejected with a message saying so.
* ``AnsibleModule.run_command`` is replaced by a mock that pops the expected calls in order,
  compares argv exactly (and ``environ_update`` when the case gives it), returns
  ``(rc, out, err)``, fails on an unexpected extra call, and after the module finished checks
  that every expected call was made.
* ``AnsibleModule.get_bin_path`` resolves ``name`` to ``/usr/bin/<name>`` unless the case maps it
  (``null`` = not found; with ``required=True`` that fails like the real method).
* ``exit_json`` / ``fail_json`` raise ``AnsibleExitJson`` / ``AnsibleFailJson`` carrying the
  result dict (``fail_json`` adds ``failed: true``), so the harness sees exactly what the module
  returned.
* ``output`` is compared as a subset: every key given must be present and equal; nested dicts
  are compared the same way; lists must have the same length and are compared element-wise
  (dict elements as subsets).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
from unittest import mock

import pytest
import yaml

from ansible.module_utils import basic
from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    import contextlib

    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield


FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures"

_CASE_KEYS = {"id", "input", "flags", "files", "mocks", "output", "failed", "msg_contains"}
_CALL_KEYS = {"command", "environ_update", "rc", "out", "out_file", "err", "err_file"}


class AnsibleExitJson(Exception):
    """Raised by the patched exit_json; ``.result`` is what the module returned."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):
    """Raised by the patched fail_json; ``.result`` is what the module returned."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs["msg"] = msg
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


def _read_fixture(rel):
    path = FIXTURES / rel
    if not path.is_file():
        raise AssertionError("fixture %s not found (paths are relative to %s)" % (rel, FIXTURES))
    return path.read_text()


class RunCommandMock:
    """Stands in for AnsibleModule.run_command: each call must match an expected one by its command
    line; call count checked. Order is not: a module may run independent commands concurrently."""

    def __init__(self, calls):
        self.expected = list(calls or [])
        for call in self.expected:
            unknown = set(call) - _CALL_KEYS
            if unknown:
                raise AssertionError("unknown run_command mock keys %s" % sorted(unknown))
            if "command" not in call:
                raise AssertionError("run_command mock without `command`: %r" % (call,))
        self.made = []
        self.used = set()
        self.lock = threading.Lock()

    @staticmethod
    def _want(call):
        return [str(a) for a in call["command"]] if isinstance(call["command"], list) else call["command"]

    def __call__(self, module, args, **kwargs):
        argv = list(args) if isinstance(args, (list, tuple)) else args
        with self.lock:
            self.made.append(argv)
            index = next((i for i, call in enumerate(self.expected)
                          if i not in self.used and self._want(call) == argv), None)
            if index is None:
                raise AssertionError("unexpected run_command call #%d: %r\n  expected (unused): %r" % (
                    len(self.made), argv, [self._want(c) for i, c in enumerate(self.expected) if i not in self.used]))
            self.used.add(index)
        call = self.expected[index]
        if "environ_update" in call:
            got_env = kwargs.get("environ_update")
            assert got_env == call["environ_update"], "run_command call #%d environ_update: got %r, want %r" % (
                index + 1,
                got_env,
                call["environ_update"],
            )
        out = _read_fixture(call["out_file"]) if "out_file" in call else call.get("out", "")
        err = _read_fixture(call["err_file"]) if "err_file" in call else call.get("err", "")
        return call.get("rc", 0), out, err

    def check_all_made(self):
        assert len(self.made) == len(self.expected), "run_command called %d times, expected %d; calls made: %r" % (
            len(self.made),
            len(self.expected),
            self.made,
        )


def _make_get_bin_path(mapping):
    mapping = dict(mapping or {})

    def get_bin_path(self, arg, required=False, opt_dirs=None):
        path = mapping[arg] if arg in mapping else "/usr/bin/%s" % arg
        if path is None and required:
            self.fail_json(msg="Failed to find required executable %r" % arg)
        return path

    return get_bin_path


def assert_subset(expected, actual, where="result"):
    """Every key of ``expected`` is in ``actual`` with an equal value (recursively)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), "%s: expected a dict, got %r" % (where, actual)
        for key, value in expected.items():
            assert key in actual, "%s: key %r missing (keys: %s)" % (where, key, sorted(actual))
            assert_subset(value, actual[key], "%s.%s" % (where, key))
    elif isinstance(expected, list):
        assert isinstance(actual, list), "%s: expected a list, got %r" % (where, actual)
        assert len(actual) == len(expected), "%s: %d items, expected %d: %r" % (where, len(actual), len(expected), actual)
        for i, (want, got) in enumerate(zip(expected, actual)):
            assert_subset(want, got, "%s[%d]" % (where, i))
    else:
        # 1 == 1.0 is fine, True == 1 is not: a bool must match a bool.
        assert isinstance(expected, bool) == isinstance(actual, bool) and expected == actual, "%s: got %r, want %r" % (
            where,
            actual,
            expected,
        )


class UTHelper:
    """Turns the YAML cases of one module into pytest tests (see the module docstring)."""

    def __init__(self, module, cases):
        self.module = module
        self.cases = cases

    @classmethod
    def from_module(cls, module, test_file, namespace=None):
        yaml_path = pathlib.Path(test_file).with_suffix(".yaml")
        cases = yaml.safe_load(yaml_path.read_text())
        if not isinstance(cases, list) or not cases:
            raise ValueError("%s: expected a non-empty list of cases" % yaml_path)
        ids = [case.get("id") for case in cases]
        if None in ids or len(set(ids)) != len(ids):
            raise ValueError("%s: every case needs a unique `id` (got %r)" % (yaml_path, ids))
        for case in cases:
            unknown = set(case) - _CASE_KEYS
            if unknown:
                raise ValueError("%s: case %s has unknown keys %s" % (yaml_path, case["id"], sorted(unknown)))
        helper = cls(module, cases)

        @pytest.mark.parametrize("case", cases, ids=ids)
        def test_module(case):
            helper.run_case(case)

        if namespace is None:
            namespace = sys._getframe(1).f_globals  # the test module that called from_module
        namespace["test_module"] = test_module
        return helper

    def _module_args(self, case):
        args = dict(case.get("input") or {})
        options = self._options()
        for option, rel in (case.get("files") or {}).items():
            if option not in options:
                raise AssertionError(
                    "files: %r is not an option of %s; map a module OPTION (e.g. meminfo_path) to a fixture"
                    % (option, self.module.__name__)
                )
            args[option] = str(FIXTURES / rel)
        flags = case.get("flags") or {}
        if flags.get("check"):
            args["_ansible_check_mode"] = True
        if flags.get("diff"):
            args["_ansible_diff"] = True
        return args

    def _options(self):
        doc = yaml.safe_load(self.module.DOCUMENTATION)
        return set((doc.get("options") or {}).keys())

    def run_case(self, case):
        mocks = case.get("mocks") or {}
        run_command = RunCommandMock(mocks.get("run_command"))
        args = self._module_args(case)

        def fake_run_command(module, cmd, **kwargs):  # a plain function, so that it binds like a method
            return run_command(module, cmd, **kwargs)

        result, failed = None, None
        with patch_module_args(args), mock.patch.multiple(
            AnsibleModule,
            run_command=fake_run_command,
            get_bin_path=_make_get_bin_path(mocks.get("get_bin_path")),
            exit_json=_exit_json,
            fail_json=_fail_json,
        ):
            try:
                self.module.main()
            except AnsibleExitJson as exc:
                result, failed = exc.result, False
            except AnsibleFailJson as exc:
                result, failed = exc.result, True
            else:
                raise AssertionError("the module returned without calling exit_json or fail_json")
        want_failed = bool(case.get("failed", False))
        assert failed == want_failed, "expected %s, module %s: %s" % (
            "fail_json" if want_failed else "exit_json",
            "failed" if failed else "exited",
            json.dumps(result, indent=2, default=str),
        )
        run_command.check_all_made()
        for text in case.get("msg_contains") or []:
            assert text in str(result.get("msg", "")), "msg %r does not contain %r" % (result.get("msg"), text)
        assert_subset(case.get("output") or {}, result)
        if os.environ.get("UTHELPER_DUMP"):
            print(json.dumps(result, indent=2, default=str))
        return result
