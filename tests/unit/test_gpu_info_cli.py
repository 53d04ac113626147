# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""gpu_info end to end through the real `ansible` CLI, with stand-in nvidia-smi scripts.

Each stand-in in tests/unit/stand-ins/ prints real captures from tests/unit/fixtures/nvidia-smi/.
The result is read from the default callback with ``callback_result_format=json``
(``localhost | SUCCESS => {...}``): ansible-core 2.19 no longer ships the ``json`` stdout callback
(it lives in ansible.posix, which the project does not install).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE = pathlib.Path(sys.executable).parent / "ansible"
STAND_INS = ROOT / "tests" / "unit" / "stand-ins"
MEMINFO = ROOT / "tests" / "unit" / "fixtures" / "nvidia-smi" / "meminfo-gb10.txt"

pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="the ansible CLI is not next to this Python")


def run_gpu_info(*args):
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    argv = [
        str(ANSIBLE),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter=%s" % sys.executable,
        "-m",
        "dgxspark.sglang.gpu_info",
        "-a",
        " ".join(args),
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r"^localhost \| (\S+) => ", proc.stdout, re.M)
    assert match, "no result in ansible's output:\nstdout:\n%s\nstderr:\n%s" % (proc.stdout, proc.stderr)
    result = json.JSONDecoder().raw_decode(proc.stdout[match.end():])[0]
    return proc.returncode, match.group(1), result


def test_h200x2():
    rc, status, result = run_gpu_info("nvidia_smi_path=%s" % (STAND_INS / "nvidia-smi-h200x2"), "expected_count=2",
                                      "min_driver_version=580.95.05")
    assert (rc, status) == (0, "SUCCESS"), result
    assert result["changed"] is False
    assert (result["gpu_count"], result["driver_version"], result["cuda_version"]) == (2, "580.159.04", "13.0")
    assert [gpu["pci_bus_id"] for gpu in result["gpus"]] == ["00000000:00:06.0", "00000000:00:07.0"]
    assert [gpu["uuid"] for gpu in result["gpus"]] == [
        "GPU-e4e580be-0d3f-e3b4-f9cf-e490971cd5d9",
        "GPU-e4ae618d-1aa6-dc4f-d6d8-63fab7915547",
    ]
    first = result["gpus"][0]
    assert first["unified_memory"] is False
    assert (first["memory_total_mib"], first["memory_used_mib"]) == (143771, 0)
    assert (first["compute_capability"], first["persistence_mode"], first["mig_mode"]) == ("9.0", True, "Disabled")
    assert (first["temperature_c"], first["power_draw_w"]) == (38, 78.8)


def test_gb10_unified_memory_from_meminfo():
    rc, status, result = run_gpu_info("nvidia_smi_path=%s" % (STAND_INS / "nvidia-smi-gb10"), "meminfo_path=%s" % MEMINFO,
                                      "expected_count=1")
    assert (rc, status) == (0, "SUCCESS"), result
    assert (result["gpu_count"], result["driver_version"], result["cuda_version"]) == (1, "580.126.09", "13.0")
    (gpu,) = result["gpus"]
    assert gpu["name"] == "NVIDIA GB10" and gpu["pci_bus_id"] == "0000000F:01:00.0"
    assert gpu["unified_memory"] is True
    # MemTotal 127600748 kB, MemAvailable 118566368 kB
    assert (gpu["memory_total_mib"], gpu["memory_used_mib"], gpu["memory_available_mib"]) == (124610, 8823, 115787)


def test_nvml_mismatch_says_reboot():
    rc, status, result = run_gpu_info("nvidia_smi_path=%s" % (STAND_INS / "nvidia-smi-nvml-mismatch"))
    assert rc != 0 and status == "FAILED!", result
    assert "reboot" in result["msg"] and "version mismatch" in result["msg"]
    assert result["rc"] == 18
    assert "gpu_count" not in result  # never "0 GPUs" when nvidia-smi failed
