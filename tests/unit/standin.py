"""The lab's SGLang stand-in (tests/lab/sglang_standin) run as a local process, for the unit tests that talk to it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from ansible_collections.dgxspark.sglang.plugins.module_utils import _staging

STANDIN = pathlib.Path(__file__).resolve().parents[1] / "lab" / "sglang_standin"
LAB = pathlib.Path(__file__).resolve().parents[1] / "lab"


def lab_module(name):
    """A module of tests/lab (hub_standin, hub_model, ...), which is no package: loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, LAB / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_model(cache_dir, repo_id):
    """Put the lab's tiny model into a Hugging Face cache under REPO_ID, as the staging role leaves it on a node
    (blobs named by their checksums, the snapshot's links, refs/main); returns the commit."""
    hub_model = lab_module("hub_model")
    files_dir = pathlib.Path(cache_dir) / "files"
    hub_model.write_model(files_dir)
    blobs = pathlib.Path(_staging.repo_dir(str(cache_dir), repo_id)) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(files_dir.iterdir()):
        lfs = path.suffix == ".safetensors"
        blob = _staging.digest_file(str(path), lfs)
        path.replace(blobs / blob)
        files.append({"path": path.name, "size": (blobs / blob).stat().st_size, "blob": blob, "lfs": lfs})
    commit = hashlib.sha1(repr(files).encode()).hexdigest()
    _staging.write_links(str(cache_dir), repo_id, commit, files)
    ref = pathlib.Path(_staging.repo_dir(str(cache_dir), repo_id)) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    files_dir.rmdir()
    return commit


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandIn(object):
    """One stand-in process; its stdout/stderr go to a file read on failure."""

    def __init__(self, tmp_path, name, *args, env=None, staged=True):
        """``staged``: the model of --model-path (a Hugging Face id) is in an offline cache of its own, as on a node
        after the staging role; otherwise the cache is empty (and offline)."""
        self.log = tmp_path / ("%s.log" % name)
        cache = tmp_path / ("%s-hf" % name)
        cache.mkdir(exist_ok=True)
        model = list(args)[list(args).index("--model-path") + 1] if "--model-path" in args else None
        if staged and model and not os.path.isdir(model):
            stage_model(cache, model)
        full_env = dict(os.environ, PYTHONPATH=str(STANDIN), SGLANG_STANDIN_TOKEN_DELAY="0.01", HF_HOME=str(cache),
                        HF_HUB_OFFLINE="1")
        full_env.update(env or {})
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server"] + list(args),
                                         stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=str(tmp_path))

    def output(self):
        return self.log.read_text()

    def wait_listening(self, port, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("stand-in exited %s:\n%s" % (self.proc.returncode, self.output()))
            with contextlib.closing(socket.socket()) as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("stand-in not listening on %d:\n%s" % (port, self.output()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
