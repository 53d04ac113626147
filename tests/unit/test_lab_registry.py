"""tests/lab/lab_registry.py: the image as Docker's image spec has it, the push to Debian's docker-registry, the counts."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import pathlib
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request

import pytest

LAB = pathlib.Path(__file__).resolve().parents[1] / "lab"
spec = importlib.util.spec_from_file_location("lab_registry", str(LAB / "lab_registry.py"))
reg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reg)

SETTINGS = {"Env": ["PATH=/venv/bin:/usr/bin", "PYTHONUNBUFFERED=1"], "Cmd": ["python3"], "WorkingDir": "/"}
CREATED = "2026-12-01T00:00:00Z"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(name="layer")
def fixture_layer(tmp_path):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(reg.file_layer_tar({"/usr/bin/python3": b"#!python\n", "/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"},
                                       mtime=1700000000))
    return tar, reg.gzip_layer(tar, tmp_path / "layer.tar.gz")


def test_the_gzip_layer_carries_the_tars_digest_as_diff_id_and_is_the_same_every_time(tmp_path, layer):
    tar, desc = layer
    packed = (tmp_path / "layer.tar.gz").read_bytes()
    assert desc == {"digest": sha(packed), "size": len(packed), "diff_id": sha(tar.read_bytes())}
    assert gzip.decompress(packed) == tar.read_bytes()
    assert reg.gzip_layer(tar, tmp_path / "again.tar.gz") == desc
    assert (tmp_path / "again.tar.gz").read_bytes() == packed


def test_a_file_layer_holds_its_files_under_their_folders():
    data = reg.file_layer_tar({"/etc/dgxspark-lab-image": b"lab2\n"}, mtime=5)
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        assert tar.getnames() == ["etc", "etc/dgxspark-lab-image"]
        assert tar.getmember("etc").isdir() and tar.extractfile("etc/dgxspark-lab-image").read() == b"lab2\n"
        assert tar.getmember("etc/dgxspark-lab-image").uid == 0


def test_config_and_manifest_follow_the_image_spec(layer):
    _tar, desc = layer
    config = reg.image_config([desc], SETTINGS, CREATED, ["the lab rootfs"], arch="x86_64")
    doc = json.loads(config)
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [desc["diff_id"]]}
    assert doc["config"] == SETTINGS and doc["os"] == "linux" and doc["architecture"] == "amd64"
    assert doc["history"] == [{"created": CREATED, "created_by": "the lab rootfs"}]
    manifest = json.loads(reg.image_manifest(config, [desc]))
    assert manifest == {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config), "digest": sha(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": desc["size"],
                    "digest": desc["digest"]}]}
    with pytest.raises(ValueError, match="one history line per layer"):
        reg.image_config([desc], SETTINGS, CREATED, [])


@pytest.mark.parametrize("machine,arch", [("x86_64", "amd64"), ("aarch64", "arm64"), ("riscv64", "riscv64")])
def test_docker_arch(machine, arch):
    assert reg.docker_arch(machine) == arch


@pytest.mark.parametrize("ref,split", [
    ("lmsysorg/sglang:v0.5.23-cu130", ("lmsysorg/sglang", "v0.5.23-cu130")),
    ("ubuntu:24.04", ("library/ubuntu", "24.04")),
])
def test_split_reference(ref, split):
    assert reg.split_reference(ref) == split


@pytest.mark.parametrize("ref,error", [("lmsysorg/sglang", "not NAME:TAG"),
                                       ("nvcr.io/nvidia/sglang:25.10-py3", "stands in for Docker Hub"),
                                       ("localhost:5000/x:1", "stands in for Docker Hub")])
def test_split_reference_refuses(ref, error):
    with pytest.raises(ValueError, match=error):
        reg.split_reference(ref)


# Captured in the lab: fixtures/registry/README.md says what happened, in order.
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "registry"
ACCESS_LOG = (FIXTURES / "access.log").read_text()
IMAGES = json.loads((FIXTURES / "images.json").read_text())["images"]
PINNED, UPGRADE = "lmsysorg/sglang:v0.5.23-cu130", "lmsysorg/sglang:v0.5.23-cu130-lab2"
CTL, NODE1, NODE2 = "172.31.251.1", "172.31.251.11", "172.31.251.12"


def test_the_access_log_is_parsed_into_manifest_and_blob_requests():
    reqs = reg.parse_access_log(ACCESS_LOG + 'time="2026-12-01T19:41:09Z" level=info msg="not an access line"\n')
    # /v2/, the uploads and tags/list are no request of a manifest or a blob.
    assert len(reqs) == 39 - 6 - 8 - 2   # lines, less /v2/, uploads, tags/list
    assert reqs[0] == {"client": CTL, "method": "HEAD", "name": "lmsysorg/sglang", "kind": "manifests",
                       "ref": "v0.5.23-cu130", "status": 404, "size": 103}
    layer = IMAGES[PINNED]["layers"][0]
    assert {"client": NODE2, "method": "GET", "name": "lmsysorg/sglang", "kind": "blobs", "ref": layer,
            "status": 200, "size": 20653907} in reqs


def test_a_pull_is_one_get_of_the_config_blob_and_a_present_image_is_no_pull():
    stats = reg.pull_stats(reg.parse_access_log(ACCESS_LOG), IMAGES, {NODE1: "lab-spark-01"}, ignore_clients=(CTL,))
    assert stats["pulls"] == {PINNED: 2, UPGRADE: 1}
    assert stats["pull_clients"] == {PINNED: {"lab-spark-01": 1, NODE2: 1}, UPGRADE: {"lab-spark-01": 1}}
    # Docker asks for the tag with HEAD (each pull, also of a present image) and GETs the manifest by digest only
    # when it pulls; the pushes' HEADs (the controller's) are not counted.
    assert stats["manifest_heads"] == {PINNED: 4, UPGRADE: 1}
    assert stats["manifest_gets"] == {PINNED: 2, UPGRADE: 1}
    base, extra = IMAGES[UPGRADE]["layers"]
    assert base == IMAGES[PINNED]["layers"][0]
    # The -lab2 pull fetched its config and its own small layer, not the base layer it shares.
    assert stats["blob_gets"] == {IMAGES[PINNED]["image_id"]: 2, base: 2, IMAGES[UPGRADE]["image_id"]: 1, extra: 1}
    assert stats["blob_bytes"] == 2 * (559 + 20653907) + 740 + 181


def test_without_the_images_every_request_is_counted_under_its_own_name():
    stats = reg.pull_stats(reg.parse_access_log(ACCESS_LOG), {})
    assert stats["pulls"] == {}
    assert stats["manifest_heads"] == {PINNED: 4, UPGRADE: 1}   # the push's HEADs found nothing (404)
    assert stats["manifest_gets"] == {"lmsysorg/sglang@" + IMAGES[PINNED]["manifest_digest"]: 2,
                                      "lmsysorg/sglang@" + IMAGES[UPGRADE]["manifest_digest"]: 1}


# ---- the real registry (Debian's docker-registry), on a loopback port

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(name="registry")
def fixture_registry(tmp_path):
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.skip("Debian's docker-registry is not installed (tests/lab/install-deps.sh installs it)")
    addr = "127.0.0.1:%d" % free_port()
    (tmp_path / "config.yml").write_text(reg.registry_config(addr, tmp_path / "storage"))
    out = open(tmp_path / "access.log", "wb")  # pylint: disable=consider-using-with
    err = open(tmp_path / "registry.log", "wb")  # pylint: disable=consider-using-with
    proc = subprocess.Popen([binary, "serve", str(tmp_path / "config.yml")], stdout=out, stderr=err)
    url = "http://" + addr
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(url + "/v2/", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)
    yield url, tmp_path / "access.log"
    proc.terminate()
    proc.wait(timeout=10)
    out.close()
    err.close()


def write_image(tmp_path, layer, settings, tag):
    _tar, desc = layer
    config = reg.image_config([desc], settings, CREATED, ["the lab rootfs"])
    (tmp_path / ("config-%s.json" % tag)).write_bytes(config)
    (tmp_path / ("manifest-%s.json" % tag)).write_bytes(reg.image_manifest(config, [desc]))
    return {"name": "lmsysorg/sglang", "tag": tag, "manifest": str(tmp_path / ("manifest-%s.json" % tag)),
            "blobs": {reg.digest_of(config): str(tmp_path / ("config-%s.json" % tag)),
                      desc["digest"]: str(tmp_path / "layer.tar.gz")}}, reg.digest_of(config)


def test_push_then_pull_by_the_registry_api_counts_one_pull(tmp_path, layer, registry):
    url, access_log = registry
    client = reg.Registry(url)
    image, image_id = write_image(tmp_path, layer, SETTINGS, "v1")
    other, other_id = write_image(tmp_path, layer, dict(SETTINGS, Env=SETTINGS["Env"] + ["LAB=2"]), "v2")
    assert reg.push(client, image) == "pushed"
    assert reg.push(client, other) == "pushed"           # the shared layer is not sent again
    assert reg.push(client, image) == "present"          # idempotent
    manifest = pathlib.Path(image["manifest"]).read_bytes()
    assert client.manifest_digest("lmsysorg/sglang", "v1") == reg.digest_of(manifest)
    assert image_id != other_id

    # A client pulls v1 as Docker does: the manifest, then the config and the layer it names.
    req = urllib.request.Request(url + "/v2/lmsysorg/sglang/manifests/v1", headers={"Accept": reg.MANIFEST_V2})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Docker-Content-Digest"] == reg.digest_of(manifest)
        served = json.loads(resp.read())
    for blob in [served["config"]] + served["layers"]:
        with urllib.request.urlopen(url + "/v2/lmsysorg/sglang/blobs/" + blob["digest"]) as resp:
            assert sha(resp.read()) == blob["digest"]

    deadline = time.monotonic() + 5   # the access log is written after the response
    while access_log.read_text().count("GET /v2/lmsysorg/sglang/blobs/") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = reg.pull_stats(reg.parse_access_log(access_log.read_text()),
                           {"lmsysorg/sglang:v1": {"image_id": image_id}, "lmsysorg/sglang:v2": {"image_id": other_id}})
    assert stats["pulls"] == {"lmsysorg/sglang:v1": 1, "lmsysorg/sglang:v2": 0}
    assert stats["manifest_gets"] == {"lmsysorg/sglang:v1": 1}   # the push's HEADs are no GETs
    assert stats["blob_bytes"] == len(pathlib.Path(image["blobs"][image_id]).read_bytes()) + layer[1]["size"]


def test_a_rejected_upload_names_the_request(tmp_path, layer, registry):
    url, _log = registry
    bad = tmp_path / "bad"
    bad.write_bytes(b"not the blob")
    with pytest.raises(reg.RegistryError, match=r"PUT /v2/lmsysorg/sglang/blobs/uploads/.* answered 400"):
        reg.Registry(url).upload_blob("lmsysorg/sglang", layer[1]["digest"], str(bad))
