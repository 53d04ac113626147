"""tests/lab/lab.py's image recipe: which packages and paths go into the lab's SGLang image, and its registry blobs."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import pathlib
import tarfile

import pytest
import yaml

LAB_PY = pathlib.Path(__file__).resolve().parents[1] / "lab" / "lab.py"
spec = importlib.util.spec_from_file_location("lab", str(LAB_PY))
lab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab)

STATUS = """\
Package: app
Status: install ok installed
Pre-Depends: libc6
Depends: python3 (>= 3.11), libmissing | libalt, perl-base | awk

Package: python3
Status: install ok installed
Depends: python3.11

Package: python3.11
Status: install ok installed

Package: libc6
Status: install ok installed

Package: libalt
Status: install ok installed

Package: mawk
Status: install ok installed
Provides: awk

Package: libmissing
Status: deinstall ok config-files

Package: unrelated
Status: install ok installed
"""


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "var/lib/dpkg/info").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(STATUS)
    (tmp_path / "usr/lib/python3.11/__pycache__").mkdir(parents=True)
    (tmp_path / "usr/lib/python3.11/os.py").write_text("")
    (tmp_path / "usr/lib/python3.11/__pycache__/os.cpython-311.pyc").write_text("")
    (tmp_path / "usr/share/doc/python3.11").mkdir(parents=True)
    (tmp_path / "usr/share/doc/python3.11/copyright").write_text("")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3.11").write_text("")
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "var/lib/dpkg/info/python3.11.list").write_text(
        "/.\n/usr\n/usr/lib/python3.11\n/usr/lib/python3.11/os.py\n/bin/python3.11\n/usr/share/doc/python3.11/copyright\n")
    return tmp_path


def test_packages_follow_depends_first_installed_alternative_and_provides(root):
    # libmissing is not installed: its alternative libalt is taken; awk is provided by mawk.
    assert lab.image_packages(root, ["app"]) == ["app", "libalt", "libc6", "mawk", "python3", "python3.11"]


def test_a_needed_package_that_is_not_installed_is_an_error(root):
    with pytest.raises(lab.LabError, match="libmissing"):
        lab.image_packages(root, ["libmissing"])


def test_paths_resolve_the_usrmerge_link_keep_bytecode_and_skip_docs(root):
    paths = lab.image_paths(root, ["python3.11"])
    assert "/usr/bin/python3.11" in paths and "/bin/python3.11" not in paths
    assert "/bin" in paths   # the link itself
    assert "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc" in paths
    assert "/etc/passwd" in paths
    assert not [p for p in paths if p.startswith("/usr/share/doc")]
    assert paths == sorted(paths)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_build_image_writes_the_tarball_and_both_images_as_the_registry_stores_them(root, tmp_path, monkeypatch):
    rootfs = root
    monkeypatch.setattr(lab, "LAB_DIR", tmp_path / "labdir")
    monkeypatch.setattr(lab, "rootfs_path", lambda: rootfs)
    monkeypatch.setattr(lab, "rootfs_ready", lambda: True)
    monkeypatch.setattr(lab, "IMAGE_ROOTS", ("python3",))
    assert lab.build_image() is True
    d = tmp_path / "labdir" / "sglang-image"
    with tarfile.open(d / "rootfs.tar") as tar:
        names = tar.getnames()
        assert "usr/bin/python3.11" in names and tar.getmember("bin").issym() and tar.getmember("tmp").mode == 0o1777

    images = json.loads((d / "push.json").read_text())["images"]
    pinned, upgrade = lab.image_references()
    assert list(images) == [pinned, upgrade] and pinned == lab.image_tag() and upgrade == pinned + "-lab2"
    assert images[pinned]["name"] == pinned.rsplit(":", 1)[0] and images[pinned]["tag"] == pinned.rsplit(":", 1)[1]
    for image in images.values():   # every file holds the blob its digest names
        for digest, path in image["blobs"].items():
            assert sha(pathlib.Path(path).read_bytes()) == digest
        assert sha(pathlib.Path(image["manifest"]).read_bytes()) == image["manifest_digest"]
        assert set(image["blobs"]) == {image["image_id"], *image["layers"]}
    config = json.loads(pathlib.Path(images[pinned]["blobs"][images[pinned]["image_id"]]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [sha((d / "rootfs.tar").read_bytes())]
    assert "PYTHONPATH=/opt/dgxspark-sglang/tests/lab/sglang_standin" in config["config"]["Env"]
    assert config["config"]["Cmd"] == ["python3"] and config["config"]["WorkingDir"] == "/"
    # The upgrade tag: the same first layer, then one with the file that names it; another image ID.
    assert images[upgrade]["layers"][0] == images[pinned]["layers"][0] and len(images[upgrade]["layers"]) == 2
    assert images[upgrade]["image_id"] != images[pinned]["image_id"]
    extra = pathlib.Path(images[upgrade]["blobs"][images[upgrade]["layers"][1]]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(extra))) as tar:
        assert tar.extractfile(lab.IMAGE_UPGRADE_FILE.lstrip("/")).read() == (upgrade + "\n").encode()
    assert lab.build_image() is False   # built once


def test_another_labs_inventory_names_its_own_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "LAB_DIR", tmp_path / "labdir")
    monkeypatch.setattr(lab, "CTL_NS", "dgxlab4-ctl")
    monkeypatch.setattr(lab, "CTL_IP", lab.mgmt_net("4") + ".1")
    inv = lab.write_inventory(2, tmp_path / "inv")
    text = (inv / "group_vars" / "spark.yml").read_text()
    assert 'registry-mirrors: ["http://172.31.251.1:5000"]' in text
    assert 'insecure-registries: ["172.31.251.1:5000"]' in text
    assert "172.31.255.1" not in text
    committed = (lab.REPO / "inventories/lab/group_vars/spark.yml").read_text()
    assert 'registry-mirrors: ["http://%s.1:%d"]' % (lab.mgmt_net(""), lab.REGISTRY_PORT) in committed


@pytest.mark.parametrize("n", [3, 4, 8])
def test_more_than_two_machines_are_joined_through_a_switch(tmp_path, monkeypatch, n):
    """N > 2: the twins hang on the bridges cx7a and cx7b (a switch), and the inventory says switch; 2 stays direct."""
    monkeypatch.setattr(lab, "LAB_DIR", tmp_path / "labdir")
    monkeypatch.setattr(lab, "CTL_NS", "dgxlab4-ctl")
    monkeypatch.setattr(lab, "CTL_IP", lab.mgmt_net("4") + ".1")
    inv = lab.write_inventory(n, tmp_path / "inv")
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())["all"]["children"]["spark"]["hosts"]
    assert list(hosts) == [lab.node_name(i) for i in range(1, n + 1)]
    group_vars = {}
    for f in sorted((inv / "group_vars" / "spark").glob("*.yml")):
        group_vars.update(yaml.safe_load(f.read_text()))
    assert group_vars["spark_cx7_topology"] == "switch"
    assert group_vars["spark_cx7_subnets"] == ["192.168.100.0/24", "192.168.101.0/24"]
    assert "dgxlab4-ctl" in (inv / "group_vars" / "all.yml").read_text()
    two = lab.write_inventory(2, tmp_path / "inv2")
    assert "spark_cx7_topology" not in yaml.safe_load((two / "group_vars" / "spark.yml").read_text())   # direct
    # the committed four-machine inventory is what `up 4` writes
    assert (lab.REPO / "inventories/lab-4/hosts.yml").read_text() == lab.render_inventory(4)
