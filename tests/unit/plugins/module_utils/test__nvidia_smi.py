# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure nvidia-smi parser, fed with the real captures in tests/unit/fixtures/nvidia-smi/."""

from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _nvidia_smi as smi

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "nvidia-smi"


def fixture(name):
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def h200_xml():
    return ET.fromstring(fixture("h200x2-q.xml"))


# --- the plain table -------------------------------------------------------------------------------


def test_h200x2_table_rows():
    table = smi.parse_table(fixture("h200x2.txt"))
    assert table["driver_version"] == "580.159.04"
    assert table["cuda_version"] == "13.0"
    assert [gpu["index"] for gpu in table["gpus"]] == [0, 1]
    first, second = table["gpus"]
    assert first == {
        "index": 0,
        "name": "NVIDIA H200",
        "persistence_mode": True,
        "pci_bus_id": "00000000:00:06.0",
        "temperature_c": 38,
        "power_draw_w": 78.0,
        "memory_used_mib": 0,
        "memory_total_mib": 143771,
        "memory_not_supported": False,
        "mig_mode": "Disabled",
    }
    assert (second["pci_bus_id"], second["temperature_c"], second["power_draw_w"]) == ("00000000:00:07.0", 37, 80.0)


def test_h200x2_table_agrees_with_the_xml_capture(h200_xml):
    table = smi.parse_table(fixture("h200x2.txt"))
    assert table["driver_version"] == h200_xml.findtext("driver_version")
    assert table["cuda_version"] == h200_xml.findtext("cuda_version")
    xml_gpus = h200_xml.findall("gpu")
    assert len(table["gpus"]) == int(h200_xml.findtext("attached_gpus")) == len(xml_gpus)
    for gpu, node in zip(table["gpus"], xml_gpus):
        assert gpu["pci_bus_id"] == node.findtext("pci/pci_bus_id") == node.get("id")
        assert gpu["name"] == node.findtext("product_name")
        assert gpu["persistence_mode"] == (node.findtext("persistence_mode") == "Enabled")
        assert gpu["mig_mode"] == node.findtext("mig_mode/current_mig")
        assert "%d MiB" % gpu["memory_total_mib"] == node.findtext("fb_memory_usage/total")
        assert "%d C" % gpu["temperature_c"] == node.findtext("temperature/gpu_temp")


def test_gb10_table_memory_not_supported():
    table = smi.parse_table(fixture("gb10.txt"))
    assert (table["driver_version"], table["cuda_version"]) == ("580.126.09", "13.0")
    (gpu,) = table["gpus"]
    assert gpu["name"] == "NVIDIA GB10"
    assert gpu["pci_bus_id"] == "0000000F:01:00.0"  # domain 000f, not 00000000
    assert gpu["memory_not_supported"] is True
    assert gpu["memory_total_mib"] is None and gpu["memory_used_mib"] is None
    assert (gpu["temperature_c"], gpu["power_draw_w"], gpu["persistence_mode"]) == (36, 3.0, True)
    assert gpu["mig_mode"] is None  # the MIG M. cell says N/A


def test_table_stops_at_the_processes_table():
    # h200x2.txt goes on with a "Processes" table whose rows must not be read as GPUs.
    assert len(smi.parse_table(fixture("h200x2.txt"))["gpus"]) == 2


def test_table_of_nothing():
    assert smi.parse_table("") == {"driver_version": None, "cuda_version": None, "gpus": []}


# --- the query CSV ---------------------------------------------------------------------------------


def test_query_with_header_maps_columns_by_name():
    rows = smi.parse_query_csv(fixture("h200x2-query-gpu-derived-header.csv"))
    assert len(rows) == 2
    assert rows[0]["memory.total"] == "143771"  # " [MiB]" stripped from the header name
    assert rows[0]["power.draw"] == "78.80"
    assert rows[1]["uuid"] == "GPU-e4ae618d-1aa6-dc4f-d6d8-63fab7915547"
    assert rows[1]["clocks.sm"] == "345"


def test_query_uuids_agree_with_the_xml_capture(h200_xml):
    rows = smi.parse_query_csv(fixture("h200x2-query-gpu-derived-header.csv"))
    assert [row["uuid"] for row in rows] == [node.findtext("uuid") for node in h200_xml.findall("gpu")]
    assert {row["driver_version"] for row in rows} == {h200_xml.findtext("driver_version")}


def test_real_capture_of_the_module_query():
    # Captured on a real H200 host with exactly query_argv(): every field the module asks for, by name.
    (row,) = smi.parse_query_csv(fixture("h200x1-query-gpu-module-fields.csv"))
    assert set(row) == set(smi.QUERY_FIELDS)
    assert (row["persistence_mode"], row["mig.mode.current"], row["compute_cap"]) == ("Enabled", "Disabled", "9.0")
    result = smi.merge([row], smi.parse_table(fixture("h200x1.txt")))
    (gpu,) = result["gpus"]
    assert (gpu["persistence_mode"], gpu["mig_mode"], gpu["power_draw_w"]) == (True, "Disabled", 79.0)
    assert (result["driver_version"], result["cuda_version"]) == ("580.159.04", "13.0")


def test_gb10_query_na_becomes_none():
    (row,) = smi.parse_query_csv(fixture("gb10-query-gpu-derived-header.csv"))
    assert row == {"index": "0", "name": "NVIDIA GB10", "memory.total": None, "memory.used": None, "memory.free": None}


def test_gb10_query_with_units_and_no_index():
    (row,) = smi.parse_query_csv(fixture("gb10-query-gpu-with-header.csv"))
    assert row["memory.total"] is None
    assert row["power.draw"] == "11.17 W"
    assert "index" not in row


@pytest.mark.parametrize("value", ["[N/A]", "N/A", "[Not Supported]", "Not Supported"])
def test_not_available_spellings(value):
    (row,) = smi.parse_query_csv("index, memory.total [MiB]\n0, %s\n" % value)
    assert row["memory.total"] is None


def test_noheader_with_other_columns_is_refused():
    with pytest.raises(smi.NvidiaSmiError, match="no header line"):
        smi.parse_query_csv(fixture("h200x2-query-gpu.csv"))


def test_noheader_with_the_module_columns_is_accepted():
    line = "0, NVIDIA H200, GPU-e4e580be-0d3f-e3b4-f9cf-e490971cd5d9, 00000000:00:06.0, 580.159.04, 9.0, 143771, 0, 38, 78.80, Enabled, Disabled"
    (row,) = smi.parse_query_csv(line)
    assert (row["index"], row["persistence_mode"], row["mig.mode.current"]) == ("0", "Enabled", "Disabled")


def test_ragged_line_is_refused():
    with pytest.raises(smi.NvidiaSmiError, match="columns"):
        smi.parse_query_csv("index, name\n0, NVIDIA GB10, extra\n")


def test_query_argv_asks_for_every_field_with_a_header():
    argv = smi.query_argv("/usr/bin/nvidia-smi")
    assert argv[0] == "/usr/bin/nvidia-smi"
    assert argv[1] == "--query-gpu=" + ",".join(smi.QUERY_FIELDS)
    assert argv[2] == "--format=csv,nounits"  # no "noheader": columns are mapped by name
    assert smi.table_argv("/x/nvidia-smi") == ["/x/nvidia-smi"]


# --- merge and meminfo -----------------------------------------------------------------------------


def test_merge_h200x2_query_wins_table_fills():
    result = smi.merge(
        smi.parse_query_csv(fixture("h200x2-query-gpu-derived-header.csv")),
        smi.parse_table(fixture("h200x2.txt")),
    )
    assert (result["gpu_count"], result["driver_version"], result["cuda_version"]) == (2, "580.159.04", "13.0")
    first = result["gpus"][0]
    assert first["power_draw_w"] == 78.8  # query 78.80, table 78W
    assert first["compute_capability"] == "9.0"
    assert first["persistence_mode"] is True and first["mig_mode"] == "Disabled"  # only the table has them
    assert first["unified_memory"] is False
    assert first["memory_available_mib"] == 143771
    assert set(first) == set(smi.GPU_KEYS)
    assert not smi.needs_meminfo(result)


def test_merge_gb10_is_unified_and_meminfo_fills_it():
    result = smi.merge(
        smi.parse_query_csv(fixture("gb10-query-gpu-derived-header.csv")),
        smi.parse_table(fixture("gb10.txt")),
    )
    (gpu,) = result["gpus"]
    assert gpu["unified_memory"] is True and gpu["memory_total_mib"] is None
    assert smi.needs_meminfo(result)
    meminfo = smi.parse_meminfo(fixture("meminfo-gb10.txt"))
    assert meminfo == {"MemTotal": 127600748, "MemAvailable": 118566368}
    smi.apply_meminfo(result, meminfo)
    assert (gpu["memory_total_mib"], gpu["memory_used_mib"], gpu["memory_available_mib"]) == (124610, 8823, 115787)


def test_unified_from_the_query_alone():
    result = smi.merge(smi.parse_query_csv(fixture("gb10-query-gpu-derived-header.csv")), None)
    assert result["gpus"][0]["unified_memory"] is True
    assert result["driver_version"] is None and result["cuda_version"] is None


def test_memory_column_not_asked_is_not_unified():
    # No memory column and no table: unknown memory, not evidence of unified memory.
    result = smi.merge(smi.parse_query_csv("index, name\n0, NVIDIA H200\n"), None)
    assert result["gpus"][0]["unified_memory"] is False


def test_count_from_table_when_query_has_no_index():
    result = smi.merge(smi.parse_query_csv(fixture("gb10-query-gpu-with-header.csv")), smi.parse_table(fixture("gb10.txt")))
    assert result["gpu_count"] == 1
    assert result["gpus"][0]["name"] == "NVIDIA GB10"  # from the table
    assert result["gpus"][0]["temperature_c"] == 35  # the query's 35 over the table's 36C


def test_apply_meminfo_needs_both_lines():
    result = smi.merge(smi.parse_query_csv(fixture("gb10-query-gpu-derived-header.csv")), None)
    with pytest.raises(smi.NvidiaSmiError, match="MemAvailable"):
        smi.apply_meminfo(result, {"MemTotal": 127600748})


# --- failures and expectations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "rc, out, expected",
    [
        (18, "Failed to initialize NVML: Driver/library version mismatch\n", "reboot"),
        # Example (newer drivers add this line), not a capture:
        (18, "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95\n", "reboot"),
        (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "kernel module is not loaded"),
        (6, "No devices were found\n", "no GPU found"),
        (15, "", "rc 15"),
    ],
)
def test_classify_failure(rc, out, expected):
    assert expected in smi.classify_failure(rc, out, "")


def test_classify_success():
    assert smi.classify_failure(0, fixture("h200x2.txt"), "") is None


def test_nvml_mismatch_is_not_reported_as_no_gpu():
    message = smi.classify_failure(18, "Failed to initialize NVML: Driver/library version mismatch\n", "")
    assert "no GPU" not in message and "upgraded without a reboot" in message


@pytest.mark.parametrize(
    "left, right, expected",
    [
        ("580.95.05", "580.126.09", -1),  # 95 < 126 numerically, although "9" > "1" as text
        ("580.159.04", "580.95.05", 1),
        ("580.126.09", "580.126.09", 0),
        ("580", "580.0.0", 0),
        ("575.57.08", "580", -1),
    ],
)
def test_compare_versions(left, right, expected):
    assert smi.compare_versions(left, right) == expected


def test_version_tuple_rejects_words():
    with pytest.raises(ValueError):
        smi.version_tuple("latest")


def test_check_expectations():
    ok = {"gpu_count": 2, "driver_version": "580.159.04"}
    assert smi.check_expectations(ok, 2, "580.95.05") == []
    assert "found 2 GPU(s), expected_count is 1" in smi.check_expectations(ok, 1)[0]
    assert "older than min_driver_version 580.159.05" in smi.check_expectations(ok, None, "580.159.05")[0]
    assert "no GPU found" in smi.check_expectations({"gpu_count": 0, "driver_version": None})[0]
    assert "no driver version" in smi.check_expectations({"gpu_count": 1, "driver_version": None}, None, "580")[0]
