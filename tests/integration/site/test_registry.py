"""The SGLang image came from the lab's registry, under the pinned Docker Hub name, as a Spark's comes from Docker Hub."""

from __future__ import annotations

import json
import time

import pytest

# One pull per cluster: the source node (the head) pulls, the staging role loads the image into the others over CX7.
SOURCE = "lab-spark-01"
FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"


@pytest.fixture(name="pinned")
def fixture_pinned(lab):
    return lab.image_tag()


@pytest.fixture(name="images")
def fixture_images(lab):
    images = lab.registry_images()
    assert images, "no %s: `lab.py up` pushes the lab's images" % (lab.registry_dir() / "images.json")
    return images


def test_docker_asks_the_labs_registry_for_docker_hub_names(host, lab):
    mirrors = json.loads(host.check_output("docker info --format '{{json .RegistryConfig.Mirrors}}'"))
    assert [m.rstrip("/") for m in mirrors] == [lab.registry_url()]
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["insecure-registries"] == [lab.registry_addr()]


def test_the_nodes_image_is_the_one_the_registry_serves(host, pinned, images):
    got = json.loads(host.check_output("docker image inspect %s", pinned))[0]
    assert got["Id"] == images[pinned]["image_id"] and pinned in got["RepoTags"]
    # Docker records the digest of the manifest it pulled (only the lab's registry has this one) on the node that
    # pulled; `docker load` records none.
    if host.backend.get_hostname() == SOURCE:
        assert images[pinned]["repo_digest"] in got["RepoDigests"]
    else:
        assert got["RepoDigests"] == []


def test_the_registry_counted_one_pull_per_cluster(lab, registry_pulls, pinned):
    assert registry_pulls(pinned) == 1
    assert lab.registry_stats()["pull_clients"][pinned] == {SOURCE: 1}


def stats_once(lab, done):
    """The registry's stats once DONE(stats) holds (it writes a request's log line after its response), or after 10 s."""
    deadline = time.monotonic() + 10
    stats = lab.registry_stats()
    while not done(stats) and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = lab.registry_stats()
    return stats


def test_a_pull_of_the_present_image_asks_for_the_tag_and_fetches_nothing(host, lab, pinned):
    if host.backend.get_hostname() != SOURCE:
        pytest.skip("the node that pulled it knows its registry digest")
    before = lab.registry_stats()
    out = host.check_output("docker pull %s", pinned)
    assert "Image is up to date" in out, out
    heads = before["manifest_heads"].get(pinned, 0)
    after = stats_once(lab, lambda stats: stats["manifest_heads"].get(pinned, 0) > heads)
    assert after["manifest_heads"][pinned] == heads + 1
    for key in ("manifest_gets", "blob_gets", "blob_bytes", "pulls"):
        assert after[key] == before[key], key


def test_the_registry_serves_both_tags_to_the_machines(host, lab, pinned, images):
    """The second tag (for upgrade tests) is there with its own image ID, reachable from every machine."""
    upgrade = pinned + lab.IMAGE_UPGRADE_SUFFIX
    assert images[upgrade]["image_id"] != images[pinned]["image_id"]
    url = "%s/v2/%s/tags/list" % (lab.registry_url(), pinned.rsplit(":", 1)[0])
    tags = json.loads(host.check_output("python3 -c %s %s", FETCH, url))
    assert sorted(tags["tags"]) == sorted(ref.rsplit(":", 1)[1] for ref in (pinned, upgrade))


def test_the_upgrade_tag_is_one_pull_that_fetches_only_its_own_layer(host, lab, pinned, images):
    """A node that holds the pinned image pulls the second tag: its config and its one new layer, the shared one not."""
    if host.backend.get_hostname() != lab.node_name(1):
        pytest.skip("one machine shows it")
    upgrade = pinned + lab.IMAGE_UPGRADE_SUFFIX
    before = lab.registry_stats()
    try:
        host.check_output("docker pull %s", upgrade)
        got = json.loads(host.check_output("docker image inspect %s", upgrade))[0]
    finally:
        host.run("docker rmi %s", upgrade)
    assert got["Id"] == images[upgrade]["image_id"] and images[upgrade]["repo_digest"] in got["RepoDigests"]
    after = stats_once(lab, lambda stats: stats["pulls"][upgrade] > before["pulls"][upgrade])
    assert after["pulls"][upgrade] == before["pulls"][upgrade] + 1
    assert after["pull_clients"][upgrade][lab.node_name(1)] == before["pull_clients"][upgrade].get(lab.node_name(1), 0) + 1
    fetched = {d: n - before["blob_gets"].get(d, 0) for d, n in after["blob_gets"].items()}
    assert {d: n for d, n in fetched.items() if n} == {images[upgrade]["image_id"]: 1, images[upgrade]["layers"][1]: 1}
    assert after["pulls"][pinned] == before["pulls"][pinned]
