# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A memory hog for the memory test, run inside a memory-limited lab machine only (``lab.py up --memory-max``).

``memhog.py server``: shaped like SGLang's ``launch_server``, the unit's main process (``python3``) starts one child
that names itself as SGLang's scheduler does (``setproctitle("sglang::scheduler_TP0")``, which on Linux also sets the
name the kernel keeps, ``prctl(PR_SET_NAME)``, cut to 15 characters: ``sglang::schedul``) and grows by ``--step-mib``
every ``--interval-s`` until ``--max-mib``, touching every page. When the child dies the parent exits with status 1,
as SGLang's subprocess watchdog ends the whole server when a scheduler dies.

``memhog.py hold --name NAME --mib N``: one process named NAME that takes N MiB and holds it (a bystander).

Standard library only (the lab machines' python3).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time

PR_SET_NAME = 15
MIB = 1024 * 1024
PAGE = 4096


def set_name(name):
    """prctl(PR_SET_NAME): what /proc/PID/comm shows and earlyoom matches (the kernel keeps 15 bytes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def take(mib):
    """N MiB of anonymous memory, every page written (so that it is resident, not just reserved)."""
    block = bytearray(mib * MIB)
    for offset in range(0, len(block), PAGE):
        block[offset] = 1
    return block


def grow(step_mib, interval_s, max_mib, ready_file=None):
    held, total = [], 0
    while total < max_mib:
        held.append(take(step_mib))
        total += step_mib
        if ready_file and total == step_mib:
            with open(ready_file, "w") as fh:
                fh.write("%d\n" % os.getpid())
        print("%s holds %d MiB" % (open("/proc/self/comm").read().strip(), total), flush=True)
        time.sleep(interval_s)
    while True:
        time.sleep(3600)


def cmd_server(args):
    child = os.fork()
    if child == 0:
        set_name(args.name)
        grow(args.step_mib, args.interval_s, args.max_mib, args.pid_file)
        os._exit(0)
    _pid, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        print("scheduler %d died of signal %d (%s): ending the server" % (
            child, os.WTERMSIG(status), signal.Signals(os.WTERMSIG(status)).name), flush=True)
    return 1


def cmd_hold(args):
    set_name(args.name)
    grow(args.mib, 0, args.mib, args.pid_file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("server")
    p.add_argument("--name", default="sglang::scheduler_TP0")
    p.add_argument("--step-mib", type=int, default=16)
    p.add_argument("--interval-s", type=float, default=0.1)
    p.add_argument("--max-mib", type=int, default=4096)
    p.add_argument("--pid-file", default=None, help="the child writes its PID here once it holds memory")
    p.set_defaults(func=cmd_server)
    p = sub.add_parser("hold")
    p.add_argument("--name", required=True)
    p.add_argument("--mib", type=int, required=True)
    p.add_argument("--pid-file", default=None)
    p.set_defaults(func=cmd_hold)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
