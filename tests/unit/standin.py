"""The lab's SGLang stand-in (tests/lab/sglang_standin) run as a local process, for the unit tests that talk to it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

STANDIN = pathlib.Path(__file__).resolve().parents[1] / "lab" / "sglang_standin"


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandIn(object):
    """One stand-in process; its stdout/stderr go to a file read on failure."""

    def __init__(self, tmp_path, name, *args, env=None):
        self.log = tmp_path / ("%s.log" % name)
        full_env = dict(os.environ, PYTHONPATH=str(STANDIN), SGLANG_STANDIN_TOKEN_DELAY="0.01")
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
