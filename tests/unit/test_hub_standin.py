"""tests/lab/hub_standin.py: the real huggingface_hub client downloads from it, once."""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct
import urllib.request

import pytest

from ansible_collections.dgxspark.sglang.tests.unit.standin import lab_module

standin = lab_module("hub_standin")
hub_model = lab_module("hub_model")
hf = pytest.importorskip("huggingface_hub")
hf_errors = pytest.importorskip("huggingface_hub.errors")

TOKEN = "hf_labtoken"
GATED = "dgxspark-lab/gated-qwen2"


@pytest.fixture(name="hub")
def fixture_hub(tmp_path):
    """The stand-in on a free port, serving the tiny model and a gated copy of it."""
    repos = tmp_path / "repos"
    hub_model.write_model(repos / hub_model.REPO_ID)
    hub_model.write_model(repos / GATED, seed=1)
    (repos / GATED / standin.GATED_MARKER).write_text("")
    server = standin.make_server(repos, token=TOKEN)
    standin.serve_in_thread(server)
    yield server, repos
    server.shutdown()
    server.server_close()


def stats(server):
    with urllib.request.urlopen(server.endpoint + "/_stats") as answer:
        return json.load(answer)


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def download(server, cache, repo_id=hub_model.REPO_ID, token=False):
    return hf.snapshot_download(repo_id, revision="main", cache_dir=str(cache), endpoint=server.endpoint,
                                token=token, max_workers=2)


def test_model_is_real_safetensors_and_deterministic(tmp_path):
    one = hub_model.write_model(tmp_path / "a")
    hub_model.write_model(tmp_path / "b")
    data = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert data == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert 2_000_000 < one["model.safetensors"] < 8_000_000
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    assert length % 8 == 0
    assert header.pop("__metadata__") == {"format": "pt"}
    spans = sorted(t["data_offsets"] for t in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 8 - length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for tensor in header.values():
        count = 1
        for dim in tensor["shape"]:
            count *= dim
        assert tensor["dtype"] == "BF16" and tensor["data_offsets"][1] - tensor["data_offsets"][0] == 2 * count
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert header["model.embed_tokens.weight"]["shape"] == [config["vocab_size"], config["hidden_size"]]
    assert config["model_type"] == "qwen2"


def test_snapshot_download_gets_every_file_once_into_the_hub_cache(hub, tmp_path):
    server, repos = hub
    source = repos / hub_model.REPO_ID
    cache = tmp_path / "cache"
    folder = pathlib.Path(download(server, cache))

    expected = {p.name: sha256(p) for p in source.iterdir()}
    assert {p.name: sha256(p) for p in folder.iterdir()} == expected
    commit = server.repo(hub_model.REPO_ID).commit
    storage = cache / "models--dgxspark-lab--tiny-qwen2"
    assert folder == storage / "snapshots" / commit
    assert (storage / "refs" / "main").read_text() == commit
    assert all((folder / name).is_symlink() for name in expected)
    # Blobs are named by etag: the sha256 for the LFS file, the git blob id for the others.
    blobs = {p.name for p in (storage / "blobs").iterdir()}
    assert expected["model.safetensors"] in blobs
    config = (source / "config.json").read_bytes()
    assert standin.git_blob_id(config) in blobs and len(blobs) == len(expected)

    sizes = {p.name: p.stat().st_size for p in source.iterdir()}
    got = stats(server)
    assert got["files"] == {"%s/%s" % (hub_model.REPO_ID, name): size for name, size in sizes.items()}
    assert got["total_bytes"] == sum(sizes.values())

    again = download(server, cache)
    assert pathlib.Path(again) == folder
    second = stats(server)
    assert second["total_bytes"] == got["total_bytes"]
    assert second["requests"].get("resolve_get", 0) == got["requests"]["resolve_get"] == len(expected)


def test_range_request_answers_the_asked_bytes(hub):
    server, repos = hub
    url = "%s/%s/resolve/main/model.safetensors" % (server.endpoint, hub_model.REPO_ID)
    request = urllib.request.Request(url, headers={"Range": "bytes=8-15"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 206
        body = answer.read()
    data = (repos / hub_model.REPO_ID / "model.safetensors").read_bytes()
    assert body == data[8:16]
    assert answer.headers["Content-Range"] == "bytes 8-15/%d" % len(data)
    assert answer.headers["X-Linked-Etag"] == '"%s"' % hashlib.sha256(data).hexdigest()


def test_missing_repo_and_file_map_to_the_client_errors(hub, tmp_path):
    server = hub[0]
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        download(server, tmp_path / "c1", repo_id="dgxspark-lab/absent")
    with pytest.raises(hf_errors.EntryNotFoundError):
        hf.hf_hub_download(hub_model.REPO_ID, "absent.json", cache_dir=str(tmp_path / "c2"),
                           endpoint=server.endpoint, token=False)


def test_gated_repo_asks_for_the_token(hub, tmp_path):
    server, repos = hub
    with pytest.raises(hf_errors.GatedRepoError) as missing:
        download(server, tmp_path / "c1", repo_id=GATED)
    assert missing.value.response.status_code == 401
    with pytest.raises(hf_errors.GatedRepoError) as wrong:
        download(server, tmp_path / "c2", repo_id=GATED, token="hf_wrong")
    assert wrong.value.response.status_code == 403
    assert stats(server)["total_bytes"] == 0

    folder = pathlib.Path(download(server, tmp_path / "c3", repo_id=GATED, token=TOKEN))
    assert sha256(folder / "model.safetensors") == sha256(repos / GATED / "model.safetensors")
    assert not (folder / standin.GATED_MARKER).exists()
