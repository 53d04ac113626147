"""The lab's stand-in nvidia-smi (tests/lab/files/nvidia-smi) answers with the captured GB10 outputs."""

from __future__ import annotations

import filecmp
import os
import pathlib
import subprocess
import sys

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils._nvidia_smi import failure_state

ROOT = pathlib.Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "lab" / "files" / "nvidia-smi"   # sh wrapper around nvidia_smi.py
FIXTURES = ROOT / "tests" / "lab" / "files" / "fixtures"
SHARED = ROOT.parent / "shared" / "fixtures" / "nvidia-smi"


def smi(*args):
    env = {"DGXSPARK_LAB_FIXTURES": str(FIXTURES), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    return subprocess.run([str(STANDIN), *args], capture_output=True, text=True, env=env,
                          check=False)


def test_plain_output_is_the_gb10_capture():
    res = smi()
    assert res.returncode == 0
    assert res.stdout == (FIXTURES / "gb10.txt").read_text()
    assert "NVIDIA GB10" in res.stdout and "Not Supported" in res.stdout


@pytest.mark.parametrize("fixture, fmt, fields", [
    # the exact queries the fixtures' README documents for each capture
    ("gb10-query-gpu.csv", "csv,noheader,nounits", "index,name,memory.total,memory.used,memory.free"),
    ("gb10-query-gpu-with-header.csv", "csv",
     "memory.total,memory.used,memory.free,utilization.gpu,power.draw,temperature.gpu"),
])
def test_documented_queries_reproduce_the_captures(fixture, fmt, fields):
    res = smi("--query-gpu=" + fields, "--format=" + fmt)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (FIXTURES / fixture).read_text()


def test_fields_from_plain_capture_and_facts():
    res = smi("--query-gpu=pci.bus_id,driver_version,compute_cap,persistence_mode,mig.mode.current,uuid",
              "--format=csv,noheader")
    assert res.returncode == 0
    assert res.stdout.strip().split(", ") == ["0000000F:01:00.0", "580.126.09", "12.1", "Enabled", "[N/A]", "[N/A]"]


def test_nounits_keeps_the_unit_in_the_header():
    res = smi("--query-gpu=power.draw,memory.total", "--format=csv,nounits")
    assert res.stdout.splitlines() == ["power.draw [W], memory.total [MiB]", "11.17, [N/A]"]


def test_list_gpus():
    assert smi("-L").stdout == "GPU 0: NVIDIA GB10\n"


@pytest.mark.parametrize("args", [["-q"], ["-q", "-x"], ["--query-gpu=bogus.field", "--format=csv"],
                                  ["--query-gpu=name", "--format=json"], ["--query-gpu=name"]])
def test_uncaptured_requests_fail_with_rc_2(args):
    res = smi(*args)
    assert res.returncode == 2
    assert res.stdout == ""
    assert "stand-in" in res.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/fixtures is not beside this checkout")
def test_lab_fixtures_are_copies_of_the_shared_captures():
    for name in ("gb10.txt", "gb10-query-gpu.csv", "gb10-query-gpu-with-header.csv"):
        assert filecmp.cmp(FIXTURES / name, SHARED / name, shallow=False), name


def smi_installed(tmp_path, loaded, *args):
    """The stand-in as the lab's driver package installs it: with needs-kernel-module in its fixtures."""
    fixtures = tmp_path / "fixtures"
    if not fixtures.is_dir():
        fixtures.mkdir()
        for f in FIXTURES.glob("gb10*"):
            (fixtures / f.name).write_text(f.read_text())
        (fixtures / "needs-kernel-module").write_text("")
    flag = tmp_path / "nvidia-module-loaded"
    if loaded:
        flag.write_text("")
    env = {"DGXSPARK_LAB_FIXTURES": str(fixtures), "DGXSPARK_LAB_NVIDIA_MODULE": str(flag),
           "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    return subprocess.run([str(STANDIN), *args], capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("args", [[], ["-L"], ["--query-gpu=driver_version", "--format=csv,noheader"]])
def test_installed_driver_answers_only_once_its_module_is_loaded(tmp_path, args):
    before = smi_installed(tmp_path, False, *args)
    assert before.returncode == 9
    assert "couldn't communicate with the NVIDIA driver" in before.stdout
    # gpu_info reads this as the driver state the nvidia_driver role reboots for.
    assert failure_state(before.returncode, before.stdout, before.stderr) == "not-loaded"
    after = smi_installed(tmp_path, True, *args)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout == smi(*args).stdout
