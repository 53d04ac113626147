# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generate plugins/module_utils/_nccl_catalog.py from NCCL's own sources (NVIDIA/nccl on GitHub).

The catalog is read, not written by hand: this script reads the C/C++ sources under ``src/`` (the library
itself; not the example plugins, contrib/ or the Python build scripts) of one git tag per NCCL release
(one tag per 2.x.y release, the last build of it: v2.5.6-2, not v2.5.6-1) and collects every environment variable
they read. A variable's first release is the oldest release whose tag reads it; the newest release decides which
variables exist today. Variables that an older release read and the newest does not are listed as removed.
About 60 tags; each is read with one ``git grep`` and one ``git cat-file --batch``, so the run takes under a minute.

NCCL reads its variables in these forms, all recognised here (comments are stripped first):

* ``NCCL_PARAM(Name, "ENV", default)``: a cached integer parameter, read as ``NCCL_ENV``;
* ``DEFINE_NCCL_PARAM(name, type, NCCL_ENV, default, flags, parser, desc)``: the typed parameters of 2.29+;
* ``ncclGetEnv("NCCL_X")``, ``getenv("NCCL_X")``, ``std::getenv("NCCL_X")``, ``getEnvFunc("NCCL_X")``;
* ``ncclGetLevel(&level, "NCCL_X_DISABLE", "NCCL_X_LEVEL")``: P2P/GDR levels (both names are read);
* ``getNthreads("NCCL_X", ...)``: thread counts (also an NCCL_PARAM).

The script fails when it meets an ``NCCL_PARAM``/``DEFINE_NCCL_PARAM`` it cannot parse; ``--audit`` lists the
whole-string ``"NCCL_X"`` literals of the newest tag that no form above explains, to spot a new form.

Usage (from the repository root; stdlib and git only)::

    python3 scripts/nccl_var_catalog.py                       # clone NVIDIA/nccl (bare) into .tmp/, write
    python3 scripts/nccl_var_catalog.py --git-dir DIR         # use an existing clone or mirror of NVIDIA/nccl
    python3 scripts/nccl_var_catalog.py --release v2.30.7-1   # read up to this tag instead of the newest
    python3 scripts/nccl_var_catalog.py --check               # fail if the committed catalog differs
    python3 scripts/nccl_var_catalog.py --audit               # print unexplained "NCCL_X" literals
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_GIT_DIR = ROOT / ".tmp" / "nccl.git"
DEFAULT_OUTPUT = ROOT / "plugins" / "module_utils" / "_nccl_catalog.py"
REPO_URL = "https://github.com/NVIDIA/nccl.git"
ENV_DOC = "docs/userguide/source/env.rst"
SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp", ".in")
TAG = re.compile(r"^v2\.(\d+)\.(\d+)-(\d+)$")

NAME = r"NCCL_[A-Z0-9_]+"
# The forms in which NCCL reads a variable; each regex's groups are the names (None for an absent one).
FORMS = (
    ("NCCL_PARAM", re.compile(r'(?<![A-Za-z0-9_])NCCL_PARAM\(\s*\w+\s*,\s*"([A-Z0-9_]+)"\s*,')),
    ("DEFINE_NCCL_PARAM", re.compile(r"(?<![A-Za-z0-9_])DEFINE_NCCL_PARAM\(\s*\w+\s*,\s*[^,()]+?\s*,\s*(%s)\s*," % NAME)),
    ("getenv", re.compile(r'(?<![A-Za-z0-9_])(?:ncclGetEnv|getenv|std::getenv|getEnvFunc)\(\s*"(%s)"\s*\)' % NAME)),
    ("ncclGetLevel", re.compile(r'(?<![A-Za-z0-9_])ncclGetLevel\([^,()]+,\s*(?:NULL|nullptr|"(%s)")\s*,\s*"(%s)"\s*\)'
                                % (NAME, NAME))),
    ("getNthreads", re.compile(r'(?<![A-Za-z0-9_])getNthreads\(\s*"(%s)"\s*,' % NAME)),
)
# Invocations of the two parameter macros (not their #define): each must match its form above.
MACRO_CALLS = (
    ("NCCL_PARAM", re.compile(r"(?<![A-Za-z0-9_#])NCCL_PARAM\((?!\s*name\s*,)")),
    ("DEFINE_NCCL_PARAM", re.compile(r"(?<![A-Za-z0-9_#])DEFINE_NCCL_PARAM\((?!\s*name\s*,)")),
)
LITERAL = re.compile(r'"(%s)"' % NAME)
DOC_HEADING = re.compile(r"^(%s)\b[^\n]*\n[-=~^]{4,}$" % NAME, re.MULTILINE)  # "NCCL_X (formerly NCCL_Y)" too


def git(git_dir: pathlib.Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", "--git-dir", str(git_dir)] + list(args), input=stdin, capture_output=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit("git %s failed (rc %d): %s" % (" ".join(args), proc.returncode, proc.stderr.decode()[-2000:]))
    return proc.stdout


def ensure_clone(git_dir: pathlib.Path) -> None:
    if git_dir.exists():
        return
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    print("+ git clone --bare %s %s" % (REPO_URL, git_dir), file=sys.stderr, flush=True)
    subprocess.run(["git", "clone", "--quiet", "--bare", REPO_URL, str(git_dir)], check=True)


def release_tags(git_dir: pathlib.Path, newest: str | None) -> dict[str, str]:
    """Release ('2.28.9') -> its last tag (v2.28.9-1; v2.5.6-2 over v2.5.6-1), oldest first, up to ``newest``."""
    found = {}
    for tag in git(git_dir, "tag", "--list", "v2.*").decode().split():
        match = TAG.match(tag)
        if match:
            found[tag] = tuple(int(part) for part in match.groups())
    if newest is not None:
        if newest not in found:
            sys.exit("%s is not a v2.X.Y-Z tag of %s" % (newest, git_dir))
        found = {tag: key for tag, key in found.items() if key <= found[newest]}
    releases: dict[tuple, tuple] = {}
    for tag, key in found.items():
        release = key[:2]
        if release not in releases or key > releases[release][1]:
            releases[release] = (tag, key)
    return {"2.%d.%d" % release: releases[release][0] for release in sorted(releases)}


def strip_comments(text: str) -> str:
    """C/C++ text with // and /* */ comments blanked out; string and character literals are kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            out.append(" ")
            i = n if j < 0 else j + 2
        elif c == '"' or (c == "'" and not (i and (text[i - 1].isalnum() or text[i - 1] == "_"))):
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def source_files(git_dir: pathlib.Path, tag: str) -> dict[str, str]:
    """Path -> text of every C/C++ file under src/ at ``tag`` that mentions NCCL_ (one git cat-file run)."""
    names = git(git_dir, "grep", "-l", "-I", "NCCL", tag, "--", "src").decode().splitlines()
    paths = [name.split(":", 1)[1] for name in names if name.endswith(SOURCE_SUFFIXES)]
    blob = git(git_dir, "cat-file", "--batch", stdin="".join("%s:%s\n" % (tag, p) for p in paths).encode())
    files = {}
    pos = 0
    for path in paths:
        header_end = blob.index(b"\n", pos)
        size = int(blob[pos:header_end].split()[2])
        files[path] = blob[header_end + 1:header_end + 1 + size].decode("utf-8", "replace")
        pos = header_end + 1 + size + 1
    return files


def read_vars(files: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables the files read (name -> first file:form seen) and the "NCCL_X" literals none explains."""
    found: dict[str, str] = {}
    unexplained = set()
    for path in sorted(files):
        text = strip_comments(files[path])
        for form, regex in MACRO_CALLS:
            calls = len(regex.findall(text))
            parsed = len(dict(FORMS)[form].findall(text))
            if calls != parsed:
                sys.exit("%s: %d %s( but %d parsed: a form this script does not know" % (path, calls, form, parsed))
        explained = set()
        for form, regex in FORMS:
            for match in regex.finditer(text):
                for name in match.groups():
                    if name is None:
                        continue
                    if form == "NCCL_PARAM":
                        name = "NCCL_" + name
                    explained.add(name)
                    found.setdefault(name, "%s (%s)" % (path, form))
        unexplained.update(set(LITERAL.findall(text)) - explained)
    return found, sorted(unexplained - set(found))


def documented(git_dir: pathlib.Path, tag: str) -> set[str]:
    """The variables with a heading of their own in NCCL's environment reference at ``tag``."""
    listing = git(git_dir, "ls-tree", "--name-only", tag, "--", ENV_DOC).decode().split()
    if not listing:
        return set()
    return set(DOC_HEADING.findall(git(git_dir, "show", "%s:%s" % (tag, ENV_DOC)).decode()))


def build(git_dir: pathlib.Path, tags: dict[str, str]) -> dict:
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    newest = list(tags)[-1]
    unexplained: list[str] = []
    for release, tag in tags.items():
        print("reading %s" % tag, file=sys.stderr, flush=True)
        found, unexplained = read_vars(source_files(git_dir, tag))
        for name in found:
            first.setdefault(name, release)
            last[name] = release
    current = {name: first[name] for name in sorted(first) if last[name] == newest}
    removed = {name: (first[name], last[name]) for name in sorted(first) if last[name] != newest}
    return {
        "tags": tags,
        "release": newest,
        "vars": current,
        "removed": removed,
        "documented": sorted(documented(git_dir, tags[newest]) & set(current)),
        "unexplained": unexplained,  # those of the newest tag
    }


def render(catalog: dict) -> str:
    tags = catalog["tags"]
    names = list(tags.values())
    rows = [names[i:i + 10] for i in range(0, len(names), 10)]
    lines_text = "\n".join("#   " + " ".join(row) for row in rows)
    oldest = list(tags)[0]
    head = textwrap.dedent('''\
        # -*- coding: utf-8 -*-
        # Copyright: dgxspark.sglang contributors
        # GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
        #
        # GENERATED by scripts/nccl_var_catalog.py from NCCL's own sources (NVIDIA/nccl, src/ at each tag below).
        # Do not edit by hand: rerun the script to change it.
        # The tags read, one per 2.x.y release (its last build):
        {lines}
        #
        # NCCL_VARS: every variable NCCL {release} reads -> the first release whose tag above reads it
        # ('{oldest}' means {oldest} or older: no older tag was read).
        # DOCUMENTED: those of NCCL_VARS with a heading in NCCL's {doc} at {newest_tag}.
        # REMOVED_VARS: variables that an older release read and {release} does not -> (first, last release).
        # Found as NCCL_PARAM(Name, "ENV", ...), DEFINE_NCCL_PARAM(name, type, NCCL_ENV, ...), ncclGetEnv/getenv/
        # std::getenv/getEnvFunc("NCCL_X"), ncclGetLevel(&l, "NCCL_X", "NCCL_Y") and getNthreads("NCCL_X", ...).
        """NCCL {release} environment variables and the release each appeared in, generated (do not edit)."""

        from __future__ import annotations

        NCCL_RELEASE = {release!r}
        NCCL_TAG = {newest_tag!r}
        OLDEST_RELEASE_READ = {oldest!r}

        ''').format(lines=lines_text, release=catalog["release"], oldest=oldest, doc=ENV_DOC,
                    newest_tag=tags[list(tags)[-1]])
    out = [head, "NCCL_VARS = {\n"]
    out.extend("    %r: %r,\n" % item for item in catalog["vars"].items())
    out.append("}\n\nDOCUMENTED = frozenset((\n")
    out.extend("    %r,\n" % name for name in catalog["documented"])
    out.append("))\n\nREMOVED_VARS = {\n")
    out.extend("    %r: %r,\n" % item for item in catalog["removed"].items())
    out.append("}\n")
    return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--git-dir", type=pathlib.Path, default=DEFAULT_GIT_DIR,
                    help="a clone or mirror of NVIDIA/nccl with its tags (cloned bare here when absent)")
    ap.add_argument("--release", help="the newest tag to read, e.g. v2.30.7-1 (default: the newest v2 tag)")
    ap.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--check", action="store_true", help="compare with --output instead of writing it")
    ap.add_argument("--audit", action="store_true", help='list "NCCL_X" literals of the newest tag no form explains')
    opts = ap.parse_args()

    ensure_clone(opts.git_dir)
    tags = release_tags(opts.git_dir, opts.release)
    if not tags:
        sys.exit("no v2.X.Y-Z tags in %s" % opts.git_dir)
    catalog = build(opts.git_dir, tags)
    if opts.audit:
        print("\n".join(catalog["unexplained"]) or "(none)")
        return 0
    text = render(catalog)
    if opts.check:
        if not opts.output.exists() or opts.output.read_text() != text:
            print("%s is not what NCCL %s's sources give: rerun %s" % (
                opts.output, catalog["release"], pathlib.Path(__file__).name))
            return 1
        print("%s matches NCCL %s" % (opts.output, catalog["release"]))
        return 0
    opts.output.write_text(text)
    print("wrote %s: %d variables of NCCL %s (%d documented), %d removed; %d tags read" % (
        opts.output, len(catalog["vars"]), catalog["release"], len(catalog["documented"]),
        len(catalog["removed"]), len(tags)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
