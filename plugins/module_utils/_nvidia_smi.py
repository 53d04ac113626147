# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parsing of nvidia-smi output for the gpu_info module (no Ansible objects in here).

Two calls feed it, in this order:

1. ``nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,nounits`` (with its header line): columns
   are mapped BY HEADER NAME (``memory.total [MiB]`` -> ``memory.total``), so output with another
   or partial set of columns still parses; ``[N/A]``, ``N/A``, ``[Not Supported]`` and
   ``Not Supported`` become None.
2. plain ``nvidia-smi``: the banner gives the driver and CUDA versions, the GPU table fills what
   the query lacked (merged per GPU index; query values win).

On a GB10 (DGX Spark) NVML's memory calls return NOT_SUPPORTED: the query prints ``[N/A]`` and the
table ``Not Supported``. Such a GPU is reported with ``unified_memory: true`` and its memory figures
come from /proc/meminfo (see ``apply_meminfo``).
"""

from __future__ import annotations

import csv
import re

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "driver_version",
    "compute_cap",
    "memory.total",
    "memory.used",
    "temperature.gpu",
    "power.draw",
    "persistence_mode",
    "mig.mode.current",
)

# Query field -> (key in a returned GPU dict, converter name).
_FIELD_MAP = {
    "index": ("index", "int"),
    "name": ("name", "str"),
    "uuid": ("uuid", "str"),
    "pci.bus_id": ("pci_bus_id", "str"),
    "compute_cap": ("compute_capability", "str"),
    "memory.total": ("memory_total_mib", "int"),
    "memory.used": ("memory_used_mib", "int"),
    "temperature.gpu": ("temperature_c", "int"),
    "power.draw": ("power_draw_w", "float"),
    "persistence_mode": ("persistence_mode", "bool"),
    "mig.mode.current": ("mig_mode", "str"),
}

# Other spellings nvidia-smi accepts for the same properties.
_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "persistence.mode": "persistence_mode",
}

GPU_KEYS = (
    "index",
    "name",
    "uuid",
    "pci_bus_id",
    "compute_capability",
    "memory_total_mib",
    "memory_used_mib",
    "memory_available_mib",
    "unified_memory",
    "temperature_c",
    "power_draw_w",
    "persistence_mode",
    "mig_mode",
)

_NOT_AVAILABLE = {"[n/a]", "n/a", "[not supported]", "not supported", ""}

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:[A-Za-z%]+)?\s*$")
_HEADER_UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")
_BUS_ID = r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]"
_TABLE_ROW1 = re.compile(
    r"^\|\s*(?P<index>\d+)\s+(?P<name>.*?)\s+(?P<persistence>On|Off)\s*"
    r"\|\s*(?P<bus_id>" + _BUS_ID + r")\s+(?P<disp>\S+)\s*\|(?P<ecc>[^|]*)\|\s*$"
)
_TABLE_ROW2 = re.compile(
    r"^\|\s*(?P<fan>\S+)\s+(?P<temp>\d+C|N/A)\s+(?P<perf>\S+)\s+(?P<power>\S+?)\s*/\s*(?P<cap>\S+)\s*"
    r"\|(?P<memory>[^|]*)\|(?P<util>[^|]*)\|\s*$"
)
_TABLE_ROW3 = re.compile(r"^\|\s*\|[^|]*\|\s*(?P<mig>\S[^|]*?)\s*\|\s*$")
_TABLE_MEMORY = re.compile(r"^\s*(?P<used>\d+)\s*MiB\s*/\s*(?P<total>\d+)\s*MiB\s*$")

# Known failures: (text nvidia-smi prints, driver state for the cluster plan, message with the fix).
_FAILURES = (
    (
        "Driver/library version mismatch",
        "mismatch",
        "NVML driver/library version mismatch: the driver was upgraded without a reboot; reboot the host "
        "(the loaded kernel module is older than the installed NVML library)",
    ),
    (
        "couldn't communicate with the NVIDIA driver",
        "not-loaded",
        "nvidia-smi could not communicate with the NVIDIA driver: the kernel module is not loaded. "
        "Check `lsmod | grep nvidia` and `dmesg`; if the driver was just installed, reboot, otherwise reinstall it "
        "for the running kernel (DKMS, Secure Boot signing)",
    ),
    (
        "No devices were found",
        "no-gpu",
        "no GPU found: nvidia-smi reports 'No devices were found'. Check that the GPU is visible on the bus "
        "(lspci) and supported by the installed driver",
    ),
)


class NvidiaSmiError(Exception):
    """Output that cannot be parsed or that reports a failure; ``str(exc)`` says what to do."""


def query_argv(binary):
    """The query call (with its CSV header: columns are mapped by name)."""
    return [binary, "--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,nounits"]


def table_argv(binary):
    """The plain call: banner (driver and CUDA versions) and the GPU table."""
    return [binary]


def failure_state(rc, stdout, stderr):
    """The driver state a failed nvidia-smi call shows (mismatch, not-loaded, no-gpu, error), or None if it did not fail."""
    text = "%s\n%s" % (stdout or "", stderr or "")
    for needle, state, dummy in _FAILURES:
        if needle.lower() in text.lower():
            return state
    return "error" if rc != 0 else None


def classify_failure(rc, stdout, stderr):
    """Return a message for a failed nvidia-smi call, or None when ``rc`` is 0 and no known error shows."""
    text = "%s\n%s" % (stdout or "", stderr or "")
    for needle, dummy, message in _FAILURES:
        if needle.lower() in text.lower():
            return message
    if rc != 0:
        detail = " ".join((stderr or stdout or "").split())[:300]
        return "nvidia-smi failed with rc %s%s; run it by hand on the host to see why" % (
            rc,
            (": " + detail) if detail else "",
        )
    return None


def _blank(value):
    return value is None or value.strip().lower() in _NOT_AVAILABLE


def _convert(value, kind):
    """Convert one raw value; None stays None, values with a unit (``11.17 W``, ``35C``) lose it."""
    if value is None or _blank(value):
        return None
    value = value.strip()
    if kind == "str":
        return value
    if kind == "bool":
        lowered = value.lower()
        if lowered in ("enabled", "on"):
            return True
        if lowered in ("disabled", "off"):
            return False
        return None
    match = _NUMBER.match(value)
    if not match:
        raise NvidiaSmiError("unexpected value %r where nvidia-smi should print a number" % value)
    number = float(match.group(1))
    if kind == "int":
        return int(round(number))
    return number


def _header_name(cell):
    name = _HEADER_UNIT.sub("", cell.strip()).strip().lower()
    return _ALIASES.get(name, name)


def parse_query_csv(text):
    """Parse ``--query-gpu ... --format=csv[,nounits]`` output.

    Returns a list of dicts, one per GPU, keyed by query field name (``memory.total``); values are the
    raw strings, or None for ``[N/A]`` / ``Not Supported``. A missing column is simply absent, which
    is how the merge tells "not asked" from "asked and not available".
    Output without a header line is accepted only when it has exactly the columns of QUERY_FIELDS.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return []
    rows = list(csv.reader(lines, skipinitialspace=True))
    header = [_header_name(cell) for cell in rows[0]]
    known = set(_FIELD_MAP) | {"driver_version"}
    if any(name in known for name in header) and not rows[0][0].strip()[:1].isdigit():
        body = rows[1:]
    elif len(rows[0]) == len(QUERY_FIELDS):
        header, body = list(QUERY_FIELDS), rows
    else:
        raise NvidiaSmiError("nvidia-smi --query-gpu printed no header line that names its columns: %r" % lines[0])
    gpus = []
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise NvidiaSmiError(
                "nvidia-smi --query-gpu line %d has %d columns, the header %d: %r"
                % (number, len(row), len(header), ", ".join(row))
            )
        gpus.append({name: (None if _blank(value) else value.strip()) for name, value in zip(header, row)})
    return gpus


def parse_table(text):
    """Parse plain ``nvidia-smi`` output: banner versions and one dict per row of the GPU table.

    Returns ``{"driver_version", "cuda_version", "gpus": [...]}``; each GPU has ``index``, ``name``,
    ``persistence_mode`` (bool), ``pci_bus_id``, ``temperature_c``, ``power_draw_w``,
    ``memory_used_mib``/``memory_total_mib`` (None when the table prints ``Not Supported``),
    ``memory_not_supported`` (bool) and ``mig_mode`` (None where the table has no MIG M. line or N/A).
    """
    text = text or ""
    driver = re.search(r"Driver Version:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9][0-9.]*)", text)
    gpus = []
    in_table = False
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if not in_table:
            if stripped.startswith("|===") and gpus == [] and current is None:
                in_table = True
            continue
        if not stripped.startswith(("|", "+")):
            break  # the GPU table ends at the first line that is not part of it
        row1 = _TABLE_ROW1.match(stripped)
        if row1:
            current = {
                "index": int(row1.group("index")),
                "name": row1.group("name").strip(),
                "persistence_mode": row1.group("persistence") == "On",
                "pci_bus_id": row1.group("bus_id"),
                "temperature_c": None,
                "power_draw_w": None,
                "memory_used_mib": None,
                "memory_total_mib": None,
                "memory_not_supported": False,
                "mig_mode": None,
                "_line": 1,
            }
            gpus.append(current)
            continue
        if current is None:
            continue
        if current["_line"] == 1:
            row2 = _TABLE_ROW2.match(stripped)
            if row2:
                current["temperature_c"] = _convert(row2.group("temp"), "int")
                current["power_draw_w"] = _convert(row2.group("power"), "float")
                memory = row2.group("memory").strip()
                match = _TABLE_MEMORY.match(memory)
                if match:
                    current["memory_used_mib"] = int(match.group("used"))
                    current["memory_total_mib"] = int(match.group("total"))
                elif _blank(memory):
                    current["memory_not_supported"] = True
                current["_line"] = 2
                continue
        if current["_line"] == 2:
            row3 = _TABLE_ROW3.match(stripped)
            if row3:
                current["mig_mode"] = _convert(row3.group("mig"), "str")
                current["_line"] = 3
                continue
        if stripped.startswith("+"):
            current["_line"] = 0
    for gpu in gpus:
        del gpu["_line"]
    return {
        "driver_version": driver.group(1) if driver else None,
        "cuda_version": cuda.group(1) if cuda else None,
        "gpus": gpus,
    }


def merge(query_rows, table):
    """Merge query rows and the parsed table into the module's result (without /proc/meminfo yet).

    GPUs are matched by index (by position when the query has no index column); query values win
    where they are not None. ``gpu_count`` is the number of query rows, or of table rows when the
    query had no index column. ``unified_memory`` is true where memory.total is not available and
    nvidia-smi said so (``[N/A]`` in the query or ``Not Supported`` in the table).
    """
    table = table or {"driver_version": None, "cuda_version": None, "gpus": []}
    has_index = any("index" in row for row in query_rows)
    by_index = {}
    for position, row in enumerate(query_rows):
        index = _convert(row.get("index"), "int") if has_index else position
        if index is None:
            raise NvidiaSmiError("nvidia-smi --query-gpu printed a GPU without an index: %r" % (row,))
        by_index[index] = row
    table_by_index = {gpu["index"]: gpu for gpu in table["gpus"]}
    if has_index or not table_by_index:
        indexes = sorted(by_index)
    else:
        indexes = sorted(set(table_by_index) | set(by_index))

    gpus = []
    for index in indexes:
        row = by_index.get(index, {})
        tab = table_by_index.get(index, {})
        gpu = {key: None for key in GPU_KEYS}
        for key in GPU_KEYS:
            if key in tab:
                gpu[key] = tab[key]
        for field, raw in row.items():
            if field not in _FIELD_MAP:
                continue
            key, kind = _FIELD_MAP[field]
            value = _convert(raw, kind)
            if value is not None:
                gpu[key] = value
        gpu["index"] = index
        said_na = ("memory.total" in row and row["memory.total"] is None) or tab.get("memory_not_supported", False)
        gpu["unified_memory"] = gpu["memory_total_mib"] is None and bool(said_na)
        if gpu["memory_total_mib"] is not None and gpu["memory_used_mib"] is not None:
            gpu["memory_available_mib"] = gpu["memory_total_mib"] - gpu["memory_used_mib"]
        gpus.append(gpu)

    drivers = [row.get("driver_version") for row in query_rows if row.get("driver_version")]
    return {
        "gpu_count": len(gpus),
        "driver_version": drivers[0] if drivers else table.get("driver_version"),
        "cuda_version": table.get("cuda_version"),
        "gpus": gpus,
    }


def needs_meminfo(result):
    """True when a GPU shares the host's memory, so its figures must come from /proc/meminfo."""
    return any(gpu["unified_memory"] for gpu in result["gpus"])


def parse_meminfo(text):
    """Parse /proc/meminfo into ``{"MemTotal": kB, ...}`` (ints, kB as the kernel prints them)."""
    values = {}
    for line in (text or "").splitlines():
        match = re.match(r"^(\w[\w()]*):\s+(\d+)(?:\s+kB)?\s*$", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


def apply_meminfo(result, meminfo):
    """Fill the memory figures of unified-memory GPUs from parsed /proc/meminfo.

    memory_total_mib = MemTotal / 1024, memory_used_mib = (MemTotal - MemAvailable) / 1024,
    memory_available_mib = MemAvailable / 1024, rounded to whole MiB.
    """
    missing = [key for key in ("MemTotal", "MemAvailable") if key not in meminfo]
    if missing:
        raise NvidiaSmiError("meminfo has no %s line" % " or ".join(missing))
    total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
    for gpu in result["gpus"]:
        if gpu["unified_memory"]:
            gpu["memory_total_mib"] = int(round(total / 1024.0))
            gpu["memory_used_mib"] = int(round((total - available) / 1024.0))
            gpu["memory_available_mib"] = int(round(available / 1024.0))
    return result


def version_tuple(version):
    """``"580.95.05"`` -> ``(580, 95, 5)``; raises ValueError on anything but dotted numbers."""
    text = str(version).strip()
    if not re.match(r"^\d+(\.\d+)*$", text):
        raise ValueError("%r is not a dotted numeric version" % (version,))
    return tuple(int(part) for part in text.split("."))


def compare_versions(left, right):
    """-1, 0 or 1 as ``left`` is lower than, equal to or higher than ``right`` (numeric, per part)."""
    a, b = version_tuple(left), version_tuple(right)
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def check_expectations(result, expected_count=None, min_driver_version=None):
    """Messages (list of str) for every expectation the result does not meet; empty when all hold."""
    problems = []
    if result["gpu_count"] == 0:
        problems.append("no GPU found: nvidia-smi ran but listed no GPU; check lspci and the driver's supported GPUs")
    if expected_count is not None and result["gpu_count"] != expected_count:
        problems.append(
            "found %d GPU(s), expected_count is %d: check that every GPU is seated, powered and visible to the "
            "driver (nvidia-smi -L), or correct expected_count" % (result["gpu_count"], expected_count)
        )
    if min_driver_version is not None:
        found = result["driver_version"]
        if found is None:
            problems.append(
                "nvidia-smi reported no driver version, min_driver_version is %s: cannot verify the driver"
                % min_driver_version
            )
        elif compare_versions(found, min_driver_version) < 0:
            problems.append(
                "driver %s is older than min_driver_version %s: upgrade the NVIDIA driver (then reboot)"
                % (found, min_driver_version)
            )
    return problems
