# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generate plugins/module_utils/_sglang_catalog.py from SGLang's own argument parser.

The catalog is read, not written by hand: this script installs the pinned sglang release in a
throwaway virtualenv, builds ``argparse.ArgumentParser()`` + ``ServerArgs.add_cli_args()`` exactly
as ``python -m sglang.launch_server`` does, and dumps every action (option strings, dest, whether
it takes a value, choices, default, type, first sentence of the help).

SGLang's parser module imports torch and a handful of small packages at import time, but needs no
GPU: ``torch==2.13.0`` (the CPU build), ``triton``, ``sglang==<version> --no-deps`` and the packages
in SMALL_DEPS are enough. That is about 2.3 GB in the venv and a few minutes.

Usage (from the repository root)::

    python3 scripts/sglang_flag_catalog.py                   # install, read, write, delete the venv
    python3 scripts/sglang_flag_catalog.py --keep-venv       # keep .tmp/sglang-catalog-venv for reuse
    python3 scripts/sglang_flag_catalog.py --venv DIR --reuse-venv   # use an existing venv as is
    python3 scripts/sglang_flag_catalog.py --check           # fail if the committed catalog differs

The venv lives under .tmp/ (git-ignored) by default and is removed afterwards unless --keep-venv.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pprint
import re
import shutil
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_VERSION = "0.5.23"
DEFAULT_VENV = ROOT / ".tmp" / "sglang-catalog-venv"
DEFAULT_OUTPUT = ROOT / "plugins" / "module_utils" / "_sglang_catalog.py"
TORCH = "torch==2.13.0"  # the CPU build; the parser never touches a GPU
# What `import sglang.srt.server_args` needs besides torch and triton (sglang itself goes in --no-deps).
SMALL_DEPS = (
    "msgspec", "numpy", "orjson", "psutil", "pybase64", "requests", "packaging", "pillow",
    "starlette", "pydantic", "pyzmq", "tqdm", "ipython", "aiohttp", "pyyaml",
)
WIDTH = 120  # columns of the generated file
HELP_MAX = 160  # characters of help kept per flag (first sentence, trimmed)

# Runs inside the throwaway venv: prints one JSON document describing the parser.
CHILD = r'''
import argparse, json, re, sys
import sglang
from sglang.srt.server_args import ServerArgs

parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)


def jsonable(value):
    if value is argparse.SUPPRESS:
        return None
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, (set, frozenset, tuple)):
            return [jsonable(v) for v in value]
        return repr(value)


def type_name(t):
    if t is None:
        return None
    return getattr(t, "__name__", None) or type(t).__name__


actions = []
for action in parser._actions:
    if isinstance(action, argparse._HelpAction):
        continue
    actions.append({
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "action": type(action).__name__,
        "nargs": action.nargs if action.nargs is None or isinstance(action.nargs, (int, str)) else repr(action.nargs),
        "const": jsonable(action.const),
        "default": jsonable(action.default),
        # a set of choices (sampling-backend's is one) is sorted, so that the output is stable
        "choices": None if action.choices is None else [jsonable(c) for c in (
            sorted(action.choices, key=str) if isinstance(action.choices, (set, frozenset)) else action.choices)],
        "type": type_name(action.type),
        "required": bool(action.required),
        "help": None if action.help in (None, argparse.SUPPRESS) else str(action.help),
        # SGLang's Deprecated*Action classes name the flag that replaces them.
        "new_flag": getattr(action, "new_flag", None),
    })

print(json.dumps({
    "sglang_version": getattr(sglang, "__version__", None),
    "parser_actions": len(parser._actions),
    "parser_option_strings": sum(len(a.option_strings) for a in parser._actions),
    "actions": actions,
}))
'''


def run(cmd: list[str], **kwargs) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def venv_python(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


def create_venv(venv: pathlib.Path, version: str) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    run(pip + [TORCH, "triton"] + list(SMALL_DEPS))
    # pip then warns that sglang's other requirements are missing: expected, the parser needs none of them.
    run(pip + ["--no-deps", "sglang==" + version])


def read_parser(venv: pathlib.Path) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore", PYTHONHASHSEED="0")
    proc = subprocess.run([str(venv_python(venv)), "-c", CHILD], check=False, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        sys.exit("reading the parser failed (rc %d):\n%s" % (proc.returncode, proc.stderr[-4000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)[.?!]\s+(?=[A-Z`'\"(-])")


def first_sentence(text: str | None) -> str | None:
    """The help's first sentence (more while it is shorter than 40 characters), at most HELP_MAX."""
    if not text:
        return None
    text = " ".join(text.split())
    end = 0
    for match in SENTENCE_END.finditer(text):
        end = match.start() + 1
        if end >= 40:
            break
    else:
        end = len(text)
    text = text[:end]
    if len(text) > HELP_MAX:
        text = text[:HELP_MAX - 3].rstrip() + "..."
    return text


def value_kind(action: dict) -> str:
    """'none' (a bare switch), 'one' (exactly one value), 'optional' (0 or 1), 'list' (one or more), 'any' (0+)."""
    nargs = action["nargs"]
    if nargs == 0:
        return "none"
    if nargs is None or nargs == 1:
        return "one"
    if nargs == "?":
        return "optional"
    if nargs == "*":
        return "any"
    return "list"  # '+', N > 1, or anything else that takes several tokens


def canonical(action: dict) -> tuple[str, list[str]]:
    """The long option that matches dest (else the first long one), and the other long spellings."""
    names = [o[2:] for o in action["option_strings"] if o.startswith("--")]
    if not names:
        raise SystemExit("action without a long option: %r" % (action,))
    want = action["dest"].replace("_", "-")
    main = want if want in names else names[0]
    return main, [n for n in names if n != main]


def build_catalog(dump: dict) -> tuple[dict, dict]:
    flags: dict = {}
    aliases: dict = {}
    for action in dump["actions"]:
        name, others = canonical(action)
        if name in flags:
            raise SystemExit("two actions share --%s" % name)
        entry = {
            "dest": action["dest"],
            "value": value_kind(action),
            "type": action["type"],
            "choices": action["choices"],
            "default": action["default"],
            "action": action["action"],
            "help": first_sentence(action["help"]),
        }
        negated = []
        if action["action"] == "BooleanOptionalAction":
            negated = [o[2:] for o in action["option_strings"] if o.startswith("--no-")]
            entry["negated"] = negated
        if action.get("new_flag"):
            entry["deprecated_for"] = action["new_flag"]
        flags[name] = entry
        for other in others:
            if other not in negated:  # --no-X of a BooleanOptionalAction is not an alias of X
                aliases[other] = name
    return dict(sorted(flags.items())), dict(sorted(aliases.items()))


def render(dump: dict, version: str, flags: dict, aliases: dict) -> str:
    head = textwrap.dedent('''\
        # -*- coding: utf-8 -*-
        # Copyright: dgxspark.sglang contributors
        # GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
        #
        # GENERATED by scripts/sglang_flag_catalog.py from sglang {version}'s own argument parser
        # (ServerArgs.add_cli_args). Do not edit by hand: rerun the script to change it.
        # Parser read: {actions} actions (help included), {options} option strings.
        #
        # FLAGS: canonical long option without dashes -> dest, value ('none' = bare switch, 'one',
        # 'optional', 'list' = one or more, 'any' = zero or more), type, choices, default, action,
        # help (first sentence); BooleanOptionalAction entries also list their negated forms, and
        # SGLang's deprecated flags name their replacement in deprecated_for. Keys whose value is None
        # (no type, no choices, default None, no help) are left out: read them with .get().
        # ALIASES: other spellings (without dashes) -> canonical name.
        """SGLang {version} launch_server flags, generated from SGLang's parser (do not edit)."""

        from __future__ import annotations

        SGLANG_VERSION = {version!r}
        PARSER_ACTIONS = {actions}
        PARSER_OPTION_STRINGS = {options}

        ''').format(version=version, actions=dump["parser_actions"], options=dump["parser_option_strings"])
    lines = [head, "FLAGS = {\n"]
    for name, entry in flags.items():
        lines.append("    %r: {" % name)
        lines.extend(pack([render_field(k, v) for k, v in entry.items() if v is not None]))
        lines.append("},\n")
    lines.append("}\n\nALIASES = {\n")
    lines.extend("    %r: %r,\n" % item for item in aliases.items())
    lines.append("}\n")
    return "".join(lines)


def render_field(key: str, value) -> str:
    """One 'key': value, item; long strings and lists are wrapped inside the item (newline + indent)."""
    text = "%r: %r" % (key, value)
    room = WIDTH - 8
    if len(text) <= room:
        return text
    lead = "%r: " % key
    if isinstance(value, str):  # implicit concatenation of pieces inside parentheses
        pieces = textwrap.wrap(value, room - len(lead) - 3, drop_whitespace=False, break_on_hyphens=False)
        return lead + "(" + ("\n" + " " * (8 + len(lead) + 1)).join(repr(p) for p in pieces) + ")"
    body = pprint.pformat(value, width=room - len(lead), compact=True)
    return lead + body.replace("\n", "\n" + " " * (8 + len(lead)))


def pack(items: list[str]) -> list[str]:
    """Items after a flag's opening brace, as many per line as fit in WIDTH columns."""
    out: list[str] = []
    indent = " " * 8
    line = indent
    for item in items:
        if line != indent and ("\n" in item or len(line) + len(item) + 2 > WIDTH - 4):
            out.append(line.rstrip() + "\n")
            line = indent
        line += item + ", "
    out.append(line.rstrip().rstrip(","))
    return ["\n"] + out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sglang-version", default=DEFAULT_VERSION)
    ap.add_argument("--venv", type=pathlib.Path, default=DEFAULT_VENV)
    ap.add_argument("--reuse-venv", action="store_true", help="use --venv as it is, install nothing")
    ap.add_argument("--keep-venv", action="store_true", help="do not delete the venv afterwards")
    ap.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--dump-json", type=pathlib.Path, help="also write the raw parser dump here")
    ap.add_argument("--check", action="store_true", help="compare with --output instead of writing it")
    opts = ap.parse_args()

    if not opts.reuse_venv:
        create_venv(opts.venv, opts.sglang_version)
    try:
        dump = read_parser(opts.venv)
    finally:
        if not opts.keep_venv and not opts.reuse_venv:
            shutil.rmtree(opts.venv, ignore_errors=True)
    if dump["sglang_version"] != opts.sglang_version:
        sys.exit("the venv has sglang %s, not %s" % (dump["sglang_version"], opts.sglang_version))
    if opts.dump_json:
        opts.dump_json.write_text(json.dumps(dump, indent=1) + "\n")
    flags, aliases = build_catalog(dump)
    text = render(dump, opts.sglang_version, flags, aliases)
    if opts.check:
        if not opts.output.exists() or opts.output.read_text() != text:
            print("%s is not what sglang %s's parser gives: rerun %s" % (
                opts.output, opts.sglang_version, pathlib.Path(__file__).name))
            return 1
        print("%s matches sglang %s" % (opts.output, opts.sglang_version))
        return 0
    opts.output.write_text(text)
    print("wrote %s: %d flags, %d aliases (parser: %d actions, %d option strings)" % (
        opts.output, len(flags), len(aliases), dump["parser_actions"], dump["parser_option_strings"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
