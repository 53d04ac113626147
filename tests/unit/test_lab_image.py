"""tests/lab/lab.py's image recipe: which packages and which paths go into the lab's SGLang image."""

from __future__ import annotations

import importlib.util
import pathlib
import tarfile

import pytest

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


def test_build_image_writes_a_tarball_with_the_tag_and_changes(root, tmp_path, monkeypatch):
    rootfs = root
    monkeypatch.setattr(lab, "LAB_DIR", tmp_path / "labdir")
    monkeypatch.setattr(lab, "rootfs_path", lambda: rootfs)
    monkeypatch.setattr(lab, "rootfs_ready", lambda: True)
    monkeypatch.setattr(lab, "IMAGE_ROOTS", ("python3",))
    assert lab.build_image() is True
    d = tmp_path / "labdir" / "sglang-image"
    assert (d / "tag").read_text().strip() == lab.image_tag() and ":" in lab.image_tag()
    assert "ENV PYTHONPATH=/opt/dgxspark-sglang/tests/lab/sglang_standin" in (d / "changes").read_text()
    with tarfile.open(d / "rootfs.tar") as tar:
        names = tar.getnames()
        assert "usr/bin/python3.11" in names and tar.getmember("bin").issym() and tar.getmember("tmp").mode == 0o1777
    assert lab.build_image() is False   # built once
