# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ``nvidia-smi`` on the lab's simulated DGX Sparks (one NVIDIA GB10 each).

Run through the ``nvidia-smi`` shell wrapper beside it (``/usr/bin/nvidia-smi`` in each machine).

It answers only with values that were captured on a real GB10 (files in ``fixtures/``, copied
from ``shared/fixtures/nvidia-smi/``; see the README there for where each came from):

- no arguments: prints ``gb10.txt`` verbatim (plain ``nvidia-smi`` on a DGX Spark, driver
  580.126.09).
- ``--query-gpu=FIELDS --format=csv[,noheader][,nounits]``: one line for GPU 0, each field from
  ``FIELD_SOURCES`` below; fields that no capture shows print ``[N/A]``.
- ``-L``: ``GPU 0: NVIDIA GB10``. A real one appends ``(UUID: GPU-...)``; no GB10 UUID was
  captured, so none is printed.

Anything else (``-q``, ``-x``, other options) exits 2 with a message on stderr: there is no capture
to answer from.

Installed by the lab's stand-in driver packages (``tests/lab/standin_repos.py``, for machines made
with ``lab.py up --driverless``), the fixture folder also holds ``needs-kernel-module``: then every
call answers as a real ``nvidia-smi`` does while the kernel module is not loaded (the message on
stdout, exit 9) until ``/run/dgxspark-lab/nvidia-module-loaded`` exists, which the stand-in kernel
module package's unit writes at boot. ``/run`` is emptied by every boot, so the driver answers
after the reboot that follows its installation, not before. The fixture folder is ``$DGXSPARK_LAB_FIXTURES`` when set, else
``/usr/share/dgxspark-lab/nvidia-smi`` (where ``tests/lab/lab.py`` installs it inside each
machine), else ``fixtures/`` beside this file.
"""

from __future__ import annotations

import os
import sys

NA = "[N/A]"

# field -> (header unit, value with units, value with nounits, where the value comes from)
FIELD_SOURCES = {
    "index": (None, "0", "0", "gb10-query-gpu.csv (first column)"),
    "count": (None, "1", "1", "one GPU per DGX Spark (FACTS.md); gb10.txt lists GPU 0 only"),
    "name": (None, "NVIDIA GB10", "NVIDIA GB10", "gb10-query-gpu.csv, gb10.txt"),
    "pci.bus_id": (None, "0000000F:01:00.0", "0000000F:01:00.0", "gb10.txt Bus-Id"),
    "driver_version": (None, "580.126.09", "580.126.09", "gb10.txt header"),
    "persistence_mode": (None, "Enabled", "Enabled", "gb10.txt Persistence-M On"),
    "pstate": (None, "P8", "P8", "gb10.txt Perf"),
    "display_active": (None, "Disabled", "Disabled", "gb10.txt Disp.A Off"),
    "compute_mode": (None, "Default", "Default", "gb10.txt Compute M."),
    "mig.mode.current": (None, NA, NA, "gb10.txt MIG M. N/A"),
    "compute_cap": (None, "12.1", "12.1", "FACTS.md: compute capability 12.1 (sm_121)"),
    "memory.total": ("MiB", NA, NA, "gb10-query-gpu.csv, gb10-query-gpu-with-header.csv"),
    "memory.used": ("MiB", NA, NA, "gb10-query-gpu.csv, gb10-query-gpu-with-header.csv"),
    "memory.free": ("MiB", NA, NA, "gb10-query-gpu.csv, gb10-query-gpu-with-header.csv"),
    "utilization.gpu": ("%", "0 %", "0", "gb10-query-gpu-with-header.csv"),
    "power.draw": ("W", "11.17 W", "11.17", "gb10-query-gpu-with-header.csv"),
    "temperature.gpu": (None, "35", "35", "gb10-query-gpu-with-header.csv"),
}
# Fields a real nvidia-smi knows but no GB10 capture shows a value for: answered "[N/A]".
UNCAPTURED = {
    "uuid": None,
    "serial": None,
    "vbios_version": None,
    "fan.speed": "%",
    "power.limit": "W",
    "clocks.sm": "MHz",
    "clocks.mem": "MHz",
    "clocks.gr": "MHz",
    "clocks.max.sm": "MHz",
    "utilization.memory": "%",
    "ecc.errors.uncorrected.volatile.total": None,
}
ALIASES = {"gpu_name": "name", "gpu_bus_id": "pci.bus_id", "gpu_uuid": "uuid", "persistence-mode": "persistence_mode"}


def fixtures_dir():
    env = os.environ.get("DGXSPARK_LAB_FIXTURES")
    if env:
        return env
    installed = "/usr/share/dgxspark-lab/nvidia-smi"
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


# What nvidia-smi prints (stdout) and its exit code while the kernel module is not loaded.
NOT_LOADED = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.")
NOT_LOADED_RC = 9
NEEDS_MODULE = "needs-kernel-module"
MODULE_LOADED = "/run/dgxspark-lab/nvidia-module-loaded"


def module_loaded():
    """False only where the stand-in driver package is installed and its kernel module is not 'loaded'."""
    if not os.path.exists(os.path.join(fixtures_dir(), NEEDS_MODULE)):
        return True
    return os.path.exists(os.environ.get("DGXSPARK_LAB_NVIDIA_MODULE") or MODULE_LOADED)


def fail(msg):
    sys.stderr.write("nvidia-smi (dgxspark lab stand-in): %s\n" % msg)
    return 2


def query_gpu(fields, fmt):
    opts = [o.strip() for o in fmt.split(",") if o.strip()]
    if not opts or opts[0] != "csv" or any(o not in ("csv", "noheader", "nounits") for o in opts):
        return fail("only --format=csv[,noheader][,nounits] is answered, got %r" % fmt)
    names = [f.strip() for f in fields.split(",") if f.strip()]
    if not names:
        return fail("--query-gpu needs at least one field")
    header, values = [], []
    for raw in names:
        key = ALIASES.get(raw, raw)
        if key in FIELD_SOURCES:
            unit, with_units, no_units, _src = FIELD_SOURCES[key]
            values.append(no_units if "nounits" in opts else with_units)
        elif key in UNCAPTURED:
            unit = UNCAPTURED[key]
            values.append(NA)
        else:
            return fail('field "%s" is not answered by the lab stand-in (no GB10 capture shows it)' % raw)
        # nvidia-smi keeps the unit in the header even with nounits (gb10-query-gpu-with-header.csv).
        header.append("%s [%s]" % (raw, unit) if unit else raw)
    if "noheader" not in opts:
        sys.stdout.write(", ".join(header) + "\n")
    sys.stdout.write(", ".join(values) + "\n")
    return 0


def main(argv):
    if not module_loaded():
        sys.stdout.write(NOT_LOADED + "\n")
        return NOT_LOADED_RC
    if not argv:
        with open(os.path.join(fixtures_dir(), "gb10.txt")) as fh:
            sys.stdout.write(fh.read())
        return 0
    fields = fmt = None
    listing = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-L", "--list-gpus"):
            listing = True
        elif arg.startswith("--query-gpu="):
            fields = arg.split("=", 1)[1]
        elif arg == "--query-gpu" and args:
            fields = args.pop(0)
        elif arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        elif arg == "--format" and args:
            fmt = args.pop(0)
        elif arg in ("-i", "--id") and args and args[0] == "0":
            args.pop(0)
        elif arg == "--id=0":
            pass
        else:
            return fail("argument %r is not answered (no GB10 capture for it)" % arg)
    if listing and fields is None:
        sys.stdout.write("GPU 0: NVIDIA GB10\n")
        return 0
    if fields is not None and fmt is not None and not listing:
        return query_gpu(fields, fmt)
    return fail("use no arguments, -L, or --query-gpu=FIELDS --format=csv[,noheader][,nounits]")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
