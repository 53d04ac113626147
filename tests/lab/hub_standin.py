# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Hugging Face hub stand-in that the real ``huggingface_hub`` client downloads from.

    python3 tests/lab/hub_standin.py --root DIR [--host H] [--port P] [--token T] [--lfs-threshold BYTES]

Point the client at it with ``HF_ENDPOINT=http://H:P`` (or ``endpoint=``). It serves the repositories
found under ``--root``, one folder per repo id (``DIR/org/name``), files as they are, at one fixed
commit per repository: the sha1 of its sorted (path, blob id) list, so changing a file changes the
commit. ``main`` and that commit are the only revisions.

What it speaks is what ``snapshot_download(repo_id, revision=...)`` of huggingface_hub 2.4 uses
(read in its ``_snapshot_download.py``, ``hf_api.py``, ``file_download.py``, ``utils/_http.py``):

- ``GET /api/models/{repo_id}[/revision/{rev}]``: the model info, ``sha`` and ``siblings``
  (with ``size``, ``blobId`` and ``lfs`` when asked ``?blobs=true``).
- ``GET /api/models/{repo_id}/tree/{rev}[/{path}]``: the tree listing (``?recursive=true``), one
  page, no ``Link`` header: file entries carry ``oid`` (git blob id), ``size`` and, for LFS files,
  ``lfs`` = ``{oid: sha256, size, pointerSize}``. No ``xetHash``, so the client downloads over HTTP.
- ``HEAD``/``GET /{repo_id}/resolve/{rev}/{filename}``: ``X-Repo-Commit``, a quoted ``ETag`` (the
  git blob id; the sha256 for LFS files, which also get ``X-Linked-Etag`` and ``X-Linked-Size``),
  ``Content-Length``, ``Accept-Ranges``; a single ``Range: bytes=a-[b]`` answers 206. No redirect:
  the real hub sends LFS files to a CDN, which the client does not need to download.
- Errors carry ``X-Error-Code``, which the client maps to its exceptions: ``RepoNotFound`` (404),
  ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with ``X-Repo-Commit``), ``GatedRepo``.
- Gated repositories (a ``.gated`` file in the repo folder; it is not served): with ``--token``,
  their files answer 401 ``GatedRepo`` without ``Authorization: Bearer``, 403 ``GatedRepo`` with a
  wrong token; metadata stays public, as on the hub. Without ``--token`` nothing is gated.
- ``GET /_stats``: JSON ``{"total_bytes", "files": {"repo_id/path": bytes}, "requests": {...}}``,
  the file content bytes sent in GET bodies (HEAD sends none). ``POST /_stats/reset`` zeroes it.

LFS files are those of ``LFS_SUFFIXES`` or larger than ``--lfs-threshold`` (default 10 MiB, the
hub's own limit for plain git files). Importable: ``make_server(root, ...)`` returns the server,
``serve_in_thread(server)`` runs it. Standard library only (Python 3.9+).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

GATED_MARKER = ".gated"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".msgpack", ".h5")
LFS_THRESHOLD = 10 * 1024 * 1024
DEFAULT_BRANCH = "main"
CHUNK = 1024 * 1024
REPO_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?"
API_PATH = re.compile(r"^/api/models/(?P<repo>" + REPO_ID + r")"
                      r"(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+)(?:/(?P<path>.+))?)?/?$")
RESOLVE_PATH = re.compile(r"^/(?P<repo>" + REPO_ID + r")/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def git_blob_id(data):
    """The id git gives a blob: sha1 of ``blob <len>\\0`` and the content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256, size):
    """The git-lfs pointer file that stands in the git tree for an LFS file."""
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha256, size)).encode()


def file_digests(path):
    """(sha1 git blob id, sha256, size) of a file, read in chunks."""
    size = path.stat().st_size
    blob = hashlib.sha1(b"blob %d\0" % size)
    sha256 = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            blob.update(chunk)
            sha256.update(chunk)
    return blob.hexdigest(), sha256.hexdigest(), size


def parse_range(header, size):
    """(start, end inclusive) of a single ``bytes=`` range, None to send it all, "bad" when unsatisfiable."""
    match = RANGE.match((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":             # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), (int(last) if last else size - 1)
    end = min(end, size - 1)
    if start > end or start >= size:
        return "bad"
    return start, end


class Repo:
    """One repository folder: its files, their ids, and its commit."""

    def __init__(self, repo_id, folder, lfs_threshold):
        self.repo_id = repo_id
        self.folder = folder
        self.gated = (folder / GATED_MARKER).is_file()
        self.files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if rel == GATED_MARKER or rel.startswith(".git/"):
                continue
            blob_id, sha256, size = file_digests(path)
            lfs = path.suffix in LFS_SUFFIXES or size > lfs_threshold
            entry = {"path": rel, "size": size, "sha256": sha256, "lfs": lfs, "blob_id": blob_id}
            if lfs:   # in git the tree holds the pointer, and its blob id is the file's oid
                pointer = lfs_pointer(sha256, size)
                entry["blob_id"] = git_blob_id(pointer)
                entry["pointer_size"] = len(pointer)
            entry["etag"] = sha256 if lfs else blob_id
            self.files[rel] = entry
        listing = "".join("%s\0%s\n" % (rel, e["blob_id"]) for rel, e in sorted(self.files.items()))
        self.commit = hashlib.sha1(listing.encode()).hexdigest()

    def knows(self, revision):
        return revision in (DEFAULT_BRANCH, self.commit)

    def tree_entry(self, entry):
        out = {"type": "file", "oid": entry["blob_id"], "size": entry["size"], "path": entry["path"]}
        if entry["lfs"]:
            out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointer_size"]}
        return out

    def tree(self, prefix, recursive):
        """Tree entries under ``prefix`` (a folder path or ""), folders first as git lists them."""
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        folders, files = set(), []
        for rel, entry in self.files.items():
            if not rel.startswith(base):
                continue
            parts = rel[len(base):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                files.append(self.tree_entry(entry))
        return [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)] + files

    def info(self, blobs):
        siblings = []
        for rel, entry in self.files.items():
            sibling = {"rfilename": rel}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["blob_id"])
                if entry["lfs"]:
                    sibling["lfs"] = {"sha256": entry["sha256"], "size": entry["size"],
                                      "pointerSize": entry["pointer_size"]}
            siblings.append(sibling)
        return {"_id": self.commit[:24], "id": self.repo_id, "modelId": self.repo_id,
                "author": self.repo_id.split("/")[0] if "/" in self.repo_id else None,
                "sha": self.commit, "private": False, "gated": "manual" if self.gated else False,
                "disabled": False, "tags": [], "siblings": siblings}


class HubStandin(ThreadingHTTPServer):
    """The server: repositories from ``root``, counters of what it sent."""

    daemon_threads = True

    def __init__(self, address, root, token=None, lfs_threshold=LFS_THRESHOLD):
        super().__init__(address, Handler)
        self.root = Path(root)
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.lock = threading.Lock()
        self.repos = {}
        self.counts = {}
        self.reset_stats()

    @property
    def endpoint(self):
        host, port = self.server_address[:2]
        return "http://%s:%d" % (host, port)

    def repo(self, repo_id):
        """The Repo of ``repo_id``, indexed once per folder state (files added later are seen)."""
        folder = self.root / repo_id
        if ".." in repo_id.split("/") or not folder.is_dir():
            return None
        stamp = tuple(sorted((p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                             for p in folder.rglob("*") if p.is_file()))
        with self.lock:
            cached = self.repos.get(repo_id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, Repo(repo_id, folder, self.lfs_threshold))
                self.repos[repo_id] = cached
            return cached[1]

    def reset_stats(self):
        with self.lock:
            self.counts = {"total_bytes": 0, "files": {}, "requests": {}}

    def count(self, kind):
        with self.lock:
            self.counts["requests"][kind] = self.counts["requests"].get(kind, 0) + 1

    def add_bytes(self, key, nbytes):
        with self.lock:
            self.counts["files"][key] = self.counts["files"].get(key, 0) + nbytes
            self.counts["total_bytes"] += nbytes

    def stats(self):
        with self.lock:
            return json.loads(json.dumps(self.counts))


class Handler(BaseHTTPRequestHandler):
    """One request: routes on the path, answers what the client checks."""

    protocol_version = "HTTP/1.1"
    server_version = "dgxspark-hub-standin/1"

    def log_message(self, format, *args):   # pylint: disable=redefined-builtin
        if os.environ.get("HUB_STANDIN_LOG"):
            sys.stderr.write("hub-standin: %s %s\n" % (self.address_string(), format % args))

    def send(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, data, headers=None):
        self.send(200, json.dumps(data).encode(), headers)

    def fail(self, status, code, message, headers=None):
        headers = dict(headers or {}, **{"X-Error-Code": code, "X-Error-Message": message})
        self.send(status, json.dumps({"error": message}).encode(), headers)

    def do_HEAD(self):   # pylint: disable=invalid-name
        self.route()

    def do_GET(self):   # pylint: disable=invalid-name
        self.route()

    def do_POST(self):   # pylint: disable=invalid-name
        if urlsplit(self.path).path == "/_stats/reset":
            self.server.reset_stats()
            self.send_json(self.server.stats())
        else:
            self.fail(405, "MethodNotAllowed", "only GET and HEAD are served")

    def route(self):
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path == "/_stats":
            self.send_json(self.server.stats())
            return
        match = API_PATH.match(path)
        if match:
            self.server.count("api")
            self.api(match, query)
            return
        match = RESOLVE_PATH.match(path)
        if match:
            self.server.count("resolve_" + self.command.lower())
            self.resolve(match)
            return
        self.fail(404, "NotFound", "no such route: %s" % path)

    def find(self, repo_id, revision):
        """The Repo, or None after answering the error."""
        repo = self.server.repo(repo_id)
        if repo is None:
            self.fail(404, "RepoNotFound", "Repository not found")
            return None
        if not repo.knows(revision):
            self.fail(404, "RevisionNotFound", "Invalid rev id: %s" % revision)
            return None
        return repo

    def api(self, match, query):
        repo = self.find(match["repo"], match["rev"] or DEFAULT_BRANCH)
        if repo is None:
            return
        if match["kind"] == "tree":
            recursive = query.get("recursive", "").lower() in ("1", "true")
            entries = repo.tree(match["path"] or "", recursive)
            if match["path"] and not entries:
                self.fail(404, "EntryNotFound", "%s does not exist on %s" % (match["path"], match["rev"]))
                return
            self.send_json(entries)
        elif match["path"]:
            self.fail(404, "NotFound", "no such route")
        else:
            self.send_json(repo.info(query.get("blobs", "").lower() in ("1", "true")))

    def refuse_gated(self, repo):
        """Answer 401/403 for a gated repo without the right token; True when refused."""
        if not (repo.gated and self.server.token):
            return False
        auth = self.headers.get("Authorization", "")
        message = "Access to model %s is restricted. You must have access to it and be authenticated." % repo.repo_id
        if not auth.lower().startswith("bearer "):
            self.fail(401, "GatedRepo", message)
            return True
        if not hmac.compare_digest(auth[7:].strip().encode(), self.server.token.encode()):
            self.fail(403, "GatedRepo", message)
            return True
        return False

    def resolve(self, match):
        repo = self.find(match["repo"], match["rev"])
        if repo is None or self.refuse_gated(repo):
            return
        entry = repo.files.get(match["path"])
        headers = {"X-Repo-Commit": repo.commit}
        if entry is None:
            self.fail(404, "EntryNotFound", "Entry not found", headers)
            return
        headers.update({"ETag": '"%s"' % entry["etag"], "Accept-Ranges": "bytes"})
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": '"%s"' % entry["sha256"], "X-Linked-Size": str(entry["size"])})
        size = entry["size"]
        span = parse_range(self.headers.get("Range"), size)
        if span == "bad":
            headers["Content-Range"] = "bytes */%d" % size
            self.fail(416, "RangeNotSatisfiable", "Range not satisfiable", headers)
            return
        status, (start, end) = (200, (0, size - 1)) if span is None else (206, span)
        if status == 206:
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command == "HEAD":
            return
        key = "%s/%s" % (repo.repo_id, entry["path"])
        with (repo.folder / entry["path"]).open("rb") as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.server.add_bytes(key, len(chunk))
                left -= len(chunk)


def make_server(root, host="127.0.0.1", port=0, token=None, lfs_threshold=LFS_THRESHOLD):
    """A HubStandin bound to (host, port); port 0 takes a free one (see ``.endpoint``)."""
    return HubStandin((host, port), root, token=token, lfs_threshold=lfs_threshold)


def serve_in_thread(server):
    """Serve in a daemon thread; stop with ``server.shutdown(); server.server_close()``."""
    thread = threading.Thread(target=server.serve_forever, name="hub-standin", daemon=True)
    thread.start()
    return thread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", required=True, help="folder of repositories, one subfolder per repo id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=os.environ.get("HUB_STANDIN_TOKEN"),
                        help="bearer token the gated repositories ask for (default: $HUB_STANDIN_TOKEN)")
    parser.add_argument("--lfs-threshold", type=int, default=LFS_THRESHOLD,
                        help="files larger than this many bytes are served as LFS files")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        parser.error("--root %s is not a folder" % args.root)
    server = make_server(args.root, args.host, args.port, args.token, args.lfs_threshold)
    print("hub stand-in serving %s at %s" % (args.root, server.endpoint), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
