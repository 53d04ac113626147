# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's container registry: Debian's docker-registry (the CNCF distribution registry), fed from Python.

tests/lab/lab.py runs the registry and calls this module; nothing here starts a process. Standard library only.

- The image, as Docker's image spec has it: a gzip layer made from a tarball (its digest is the sha256 of the
  compressed bytes, its diff_id the sha256 of the tar), an image config whose digest is the image ID Docker shows,
  and a schema2 manifest (``application/vnd.docker.distribution.manifest.v2+json``) whose digest is the one in
  ``RepoDigests``.
- The push, over the registry's HTTP API v2: blobs by ``POST /v2/<name>/blobs/uploads/`` then ``PUT <location>&digest=``,
  the manifest by ``PUT /v2/<name>/manifests/<tag>``; what the registry already holds is not sent again.
- The counts, from the registry's access log (Apache's combined format, one line per request, on its stdout).

What one pull is: one successful ``GET`` of the image's config blob (``/v2/<name>/blobs/<image ID>``). Docker 20.10
(Debian's docker.io, the lab's) pulls ``name:tag`` as ``HEAD`` of the manifest by tag, ``GET`` of the manifest by its
digest, then ``GET`` of the config and of each layer it lacks (a layer another image brought is not fetched again).
For an image it already holds it sends the ``HEAD`` only: no manifest ``GET``, no blob. So the config ``GET`` is there
exactly once for each pull that transfers the image, whatever layers it shares; a ``HEAD`` or a manifest request alone
is never a pull.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import platform
import re
import tarfile
import urllib.parse

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHUNK = 1 << 20


class RegistryError(Exception):
    pass


# --------------------------------------------------------------------------- the image

def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_layer(tar_path, out_path):
    """Write TAR_PATH gzip-compressed to OUT_PATH, byte for byte the same every time (no name, mtime 0).

    Returns the layer's descriptor as the manifest and config need it: ``digest`` (of the gzip bytes), ``size``
    (of the gzip bytes) and ``diff_id`` (the sha256 of the uncompressed tar).
    """
    plain, packed = hashlib.sha256(), hashlib.sha256()

    class Tee(io.RawIOBase):
        def __init__(self, out):
            super().__init__()
            self.out, self.size = out, 0

        def writable(self):
            return True

        def write(self, b):
            packed.update(b)
            self.size += len(b)
            return self.out.write(b)

    with open(tar_path, "rb") as src, open(out_path, "wb") as raw:
        tee = Tee(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=tee, mtime=0, compresslevel=6) as gz:
            for block in iter(lambda: src.read(CHUNK), b""):
                plain.update(block)
                gz.write(block)
    return {"digest": "sha256:" + packed.hexdigest(), "size": tee.size, "diff_id": "sha256:" + plain.hexdigest()}


def file_layer_tar(files, mtime):
    """A tar (bytes) that holds FILES ({path: bytes}, owned by root, mode 0644) and their folders."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({"/".join(p.strip("/").split("/")[:k]) for p in files for k in range(1, p.strip("/").count("/") + 1)})
        for name in folders:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_arch(machine=None):
    """Docker's name for this machine's architecture (the lab's machines run on it)."""
    machine = machine or platform.machine()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image_config(layers, settings, created, created_by, arch=None):
    """The image config (bytes): its sha256 is the image ID.

    LAYERS are descriptors from gzip_layer() (their diff_ids, in order); SETTINGS the container config (``Env``,
    ``Cmd``, ``WorkingDir``, ...); CREATED an RFC 3339 time; CREATED_BY one history line per layer.
    """
    if len(created_by) != len(layers):
        raise ValueError("one history line per layer: %d lines for %d layers" % (len(created_by), len(layers)))
    return canonical_json({
        "architecture": docker_arch(arch),
        "os": "linux",
        "created": created,
        "config": dict(settings),
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
        "history": [{"created": created, "created_by": line} for line in created_by],
    })


def image_manifest(config, layers):
    """The schema2 manifest (bytes) of CONFIG (the config's bytes) and LAYERS (gzip_layer() descriptors)."""
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": digest_of(config)},
        "layers": [{"mediaType": LAYER_GZIP, "size": layer["size"], "digest": layer["digest"]} for layer in layers],
    })


def split_reference(reference):
    """``lmsysorg/sglang:v1`` -> (``lmsysorg/sglang``, ``v1``): the repository as Docker Hub names it (no registry)."""
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag or not name:
        raise ValueError("%r is not NAME:TAG" % reference)
    if "." in name.split("/")[0] or ":" in name.split("/")[0]:
        raise ValueError("%r names a registry; the lab's registry stands in for Docker Hub: give the Hub name" % reference)
    if "/" not in name:
        name = "library/" + name
    return name, tag


# --------------------------------------------------------------------------- the registry's configuration

def registry_config(addr, rootdirectory):
    """docker-registry's config.yml: plain HTTP on ADDR, filesystem storage, the access log on stdout."""
    return """\
# tests/lab/lab.py: the lab's registry (Debian's docker-registry), plain HTTP inside the controller namespace.
version: 0.1
log:
  level: info
  formatter: text
  # One line per request on stdout, Apache's combined format: lab.py counts pulls from it.
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %(root)s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %(addr)s
  # One registry process: a fixed secret only silences the warning about a generated one.
  secret: dgxspark-lab
health:
  storagedriver:
    enabled: false
""" % {"root": json.dumps(str(rootdirectory)), "addr": json.dumps(addr)}


# --------------------------------------------------------------------------- the push

class Registry:
    """A client of the registry HTTP API v2 (plain HTTP, no auth: the lab's registry)."""

    def __init__(self, url, timeout=60):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("%r is not an http:// URL" % url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except OSError as exc:
            raise RegistryError("%s http://%s:%d%s: %s" % (method, self.host, self.port, path, exc)) from exc
        finally:
            conn.close()

    def expect(self, want, method, path, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        if status != want:
            raise RegistryError("%s %s answered %d (expected %d): %s" % (
                method, path, status, want, data[:500].decode("utf-8", "replace")))
        return hdrs

    def manifest_digest(self, name, reference):
        """The digest of the manifest the registry serves for NAME:REFERENCE (schema2), or None."""
        status, hdrs, _body = self.request("HEAD", "/v2/%s/manifests/%s" % (name, reference), headers={"Accept": MANIFEST_V2})
        return hdrs.get("docker-content-digest") if status == 200 else None

    def has_blob(self, name, digest):
        return self.request("HEAD", "/v2/%s/blobs/%s" % (name, digest))[0] == 200

    def upload_blob(self, name, digest, path):
        """A monolithic upload: POST for an upload location, then one PUT of the whole blob with its digest."""
        hdrs = self.expect(202, "POST", "/v2/%s/blobs/uploads/" % name, headers={"Content-Length": "0"})
        location = urllib.parse.urlsplit(urllib.parse.urljoin("http://%s:%d/" % (self.host, self.port), hdrs["location"]))
        query = (location.query + "&" if location.query else "") + urllib.parse.urlencode({"digest": digest})
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            got = self.expect(201, "PUT", "%s?%s" % (location.path, query), body=fh, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if got.get("docker-content-digest", digest) != digest:
            raise RegistryError("blob %s stored as %s" % (digest, got["docker-content-digest"]))

    def put_manifest(self, name, tag, manifest):
        got = self.expect(201, "PUT", "/v2/%s/manifests/%s" % (name, tag), body=manifest,
                          headers={"Content-Type": MANIFEST_V2, "Content-Length": str(len(manifest))})
        return got.get("docker-content-digest")


def push(registry, image):
    """Push IMAGE unless the registry serves it already: ``present`` or ``pushed``.

    IMAGE: ``name`` and ``tag`` (the repository, the tag), ``manifest`` (the path of its bytes), ``blobs`` ({digest:
    path}: the config and every layer). Blobs the registry holds already are not sent again.
    """
    with open(image["manifest"], "rb") as fh:
        manifest = fh.read()
    want = digest_of(manifest)
    if registry.manifest_digest(image["name"], image["tag"]) == want:
        return "present"
    for digest, path in image["blobs"].items():
        if not registry.has_blob(image["name"], digest):
            registry.upload_blob(image["name"], digest, path)
    got = registry.put_manifest(image["name"], image["tag"], manifest)
    if got != want:
        raise RegistryError("%s:%s: the registry stored the manifest as %s, not %s" % (image["name"], image["tag"], got, want))
    return "pushed"


# --------------------------------------------------------------------------- the counts

ACCESS_LINE = re.compile(r'^(?P<client>\S+) \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" '
                         r'(?P<status>\d{3}) (?P<size>\d+|-)')
API_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/?]+)$")


def parse_access_log(text):
    """The requests of an access log: dicts with ``client``, ``method``, ``name``, ``kind`` (``manifests`` or
    ``blobs``), ``ref`` (tag or digest), ``status`` and ``size``. Lines that are no API request of a manifest or a
    blob (``/v2/``, uploads, the registry's own messages) are left out."""
    found = []
    for line in text.splitlines():
        m = ACCESS_LINE.match(line)
        if not m:
            continue
        api = API_PATH.match(urllib.parse.urlsplit(m.group("path")).path)
        if not api:
            continue
        found.append({"client": m.group("client"), "method": m.group("method"), "name": api.group("name"),
                      "kind": api.group("kind"), "ref": urllib.parse.unquote(api.group("ref")),
                      "status": int(m.group("status")), "size": 0 if m.group("size") == "-" else int(m.group("size"))})
    return found


def _bump(counts, key, by=1):
    counts[key] = counts.get(key, 0) + by


def pull_stats(requests, images, client_names=None, ignore_clients=()):
    """Counts from parse_access_log()'s REQUESTS (successful ones only; none from IGNORE_CLIENTS, e.g. the push's).

    IMAGES: {reference: {"image_id": config digest, "manifest_digest": ...}}. ``pulls``: per reference, the GETs of
    its config blob (the module's docstring says why that is one pull); ``pull_clients``: the same per client, named
    by CLIENT_NAMES ({address: name}) where it knows the address; ``manifest_heads`` and ``manifest_gets``: manifest
    requests, under the reference they name (by its tag or its manifest digest), else as ``name:tag`` or
    ``name@digest``; ``blob_gets``: GETs per blob digest; ``blob_bytes``: the bytes those sent.
    """
    client_names = client_names or {}
    by_manifest = {}
    for ref, image in images.items():
        name, tag = split_reference(ref)
        by_manifest[(name, tag)] = by_manifest[(name, image.get("manifest_digest"))] = ref
    configs = {(split_reference(ref)[0], image["image_id"]): ref for ref, image in images.items()}
    stats = {"pulls": {ref: 0 for ref in images}, "pull_clients": {ref: {} for ref in images},
             "manifest_heads": {}, "manifest_gets": {}, "blob_gets": {}, "blob_bytes": 0}
    for req in requests:
        if req["client"] in ignore_clients or req["method"] not in ("GET", "HEAD") or not 200 <= req["status"] < 300:
            continue
        if req["kind"] == "manifests":
            key = by_manifest.get((req["name"], req["ref"]))
            key = key or req["name"] + ("@" if req["ref"].startswith("sha256:") else ":") + req["ref"]
            _bump(stats["manifest_gets" if req["method"] == "GET" else "manifest_heads"], key)
        elif req["method"] == "GET":
            _bump(stats["blob_gets"], req["ref"])
            stats["blob_bytes"] += req["size"]
            ref = configs.get((req["name"], req["ref"]))
            if ref:
                stats["pulls"][ref] += 1
                _bump(stats["pull_clients"][ref], client_names.get(req["client"], req["client"]))
    return stats
