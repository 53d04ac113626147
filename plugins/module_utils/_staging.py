# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staging the model and the image on every node: the one home of the Hugging Face cache layout, the hub's answers,
the pins recorded on the nodes, and the checks made before anything is stopped.

Pure Python, standard library only: the controller (the plan) and the nodes (the staging_info and staging_fetch
modules) both import it.

The Hugging Face cache layout (huggingface_hub's ``file_download.py``), under ``<cache>/hub``:
``models--ORG--NAME/blobs/<etag>`` holds each file once, named by its etag: the sha256 of its content for an LFS file,
its git blob id (sha1 of ``blob <size>\\0`` + content) for the others; ``snapshots/<commit>/<path>`` is a relative
symlink to its blob; ``refs/<branch>`` holds the commit a branch resolved to. So every blob names its own checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import problem

# The record of what a group runs, on every node: written by the staging role after every node holds it, read back by
# preflight's probe (the plan pins the same model revision and image on the next run, from a fresh checkout too) and
# by the sglang_server role (the image ID its unit runs).
RECORD_NAME = 'pins.json'
RECORD_SCHEMA = 1
DEFAULT_REVISION = 'main'
COMMIT = re.compile(r'^[0-9a-f]{40}$')
SHA256 = re.compile(r'^[0-9a-f]{64}$')
BLOB_NAME = re.compile(r'^([0-9a-f]{40}|[0-9a-f]{64})$')
IMAGE_ID = re.compile(r'^sha256:[0-9a-f]{64}$')
CHUNK = 4 * 1024 * 1024
GIB = 1024 ** 3
# Free space kept beyond what a transfer needs (logs, Docker's own bookkeeping, a file being replaced).
DISK_MARGIN_BYTES = 2 * GIB


# ---- the cache layout --------------------------------------------------------------------------------------------

def repo_folder(repo_id):
    """``models--ORG--NAME``: huggingface_hub's folder name of a model repository in the cache."""
    return 'models--' + repo_id.replace('/', '--')


def hub_dir(cache_dir):
    """The hub cache of a cache folder (HF_HOME): ``<cache>/hub``."""
    return os.path.join(cache_dir, 'hub')


def repo_dir(cache_dir, repo_id):
    return os.path.join(hub_dir(cache_dir), repo_folder(repo_id))


def link_target(path, blob):
    """The relative symlink huggingface_hub writes at ``snapshots/<commit>/<path>``: up to the repo folder, then
    ``blobs/<blob>``."""
    depth = 2 + path.count('/')
    return '/'.join(['..'] * depth + ['blobs', blob])


def git_blob_id_prefix(size):
    return b'blob %d\0' % size


def digest_file(path, lfs, size=None):
    """The blob name a file's content earns: sha256 (LFS) or git blob id (the others)."""
    if size is None:
        size = os.path.getsize(path)
    digest = hashlib.sha256() if lfs else hashlib.sha1(git_blob_id_prefix(size))
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


class Hasher:
    """Hashes a file as it streams by (staging_fetch verifies while it writes)."""

    def __init__(self, entry):
        self.lfs = entry['lfs']
        self.digest = hashlib.sha256() if self.lfs else hashlib.sha1(git_blob_id_prefix(entry['size']))

    def update(self, data):
        self.digest.update(data)

    def hexdigest(self):
        return self.digest.hexdigest()


# ---- the hub's answers ------------------------------------------------------------------------------------------

def manifest_from_hub(answer):
    """(commit, files) from ``GET /api/models/{repo}/revision/{rev}?blobs=true``: each file as ``{path, size, blob,
    lfs}``, where ``blob`` is the sha256 for LFS files and the git blob id for the others. Raises ValueError for an
    answer without them."""
    if not isinstance(answer, dict):
        raise ValueError('the hub answered %r, not a model info object' % (type(answer).__name__,))
    commit = answer.get('sha')
    if not isinstance(commit, str) or not COMMIT.match(commit):
        raise ValueError('the hub answer has no commit hash (sha): %r' % (commit,))
    files = []
    for sibling in answer.get('siblings') or []:
        path = sibling.get('rfilename')
        lfs = sibling.get('lfs') if isinstance(sibling.get('lfs'), dict) else None
        blob = lfs.get('sha256') if lfs else sibling.get('blobId')
        size = lfs.get('size') if lfs else sibling.get('size')
        if not isinstance(path, str) or not isinstance(blob, str) or not BLOB_NAME.match(blob) or not isinstance(size, int):
            raise ValueError('the hub answer lacks the size or checksum of %r (was it asked with blobs=true?)' % (path,))
        files.append({'path': path, 'size': size, 'blob': blob, 'lfs': lfs is not None})
    if not files:
        raise ValueError('the hub lists no files at commit %s' % commit)
    return commit, sorted(files, key=lambda f: f['path'])


def weights_bytes(files):
    """The bytes of the weights (``*.safetensors``, else ``*.bin``) of a manifest or a local listing."""
    for suffix in ('.safetensors', '.bin'):
        sizes = [f['size'] for f in files if f['path'].endswith(suffix)]
        if sizes:
            return sum(sizes)
    return 0


def hub_problems(model, status, url, has_token, body='', error_code='', where=None):
    """What a failed hub request means, from its status and ``X-Error-Code`` (the codes huggingface_hub maps to its
    exceptions): a gated model without a token or with one that does not grant it, a missing repo or revision, a hub
    that cannot be reached."""
    repo = model['path']
    token_var = 'sglang_server_hf_token'
    code = (error_code or '').strip()
    body = (body or '').strip()[:200]
    if code == 'GatedRepo' or (status in (401, 403) and code != 'RepoNotFound'):
        if has_token:
            return [problem('model-token-refused', token_var, 'the hub refused the token for %s (HTTP %d from %s): it '
                            'does not grant access to this gated or private model' % (repo, status, url),
                            "accept the model's licence on its hub page with the token's account, or use a token with "
                            'read access to it', where)]
        return [problem('model-gated', token_var, '%s is gated or private: the hub answered HTTP %d without a token '
                        '(%s)' % (repo, status, url), 'accept its licence on the hub and set %s (Ansible Vault or an '
                        'AWX credential)' % token_var, where)]
    if code == 'RevisionNotFound':
        return [problem('model-revision-not-found', 'sglang_server_model_revision', 'the hub has no revision %r of %s '
                        '(HTTP %d from %s)' % (model['requested'], repo, status, url),
                        'name a branch, tag or commit of that model', where)]
    if code == 'RepoNotFound' or status == 404:
        return [problem('model-not-found', 'sglang_server_model', 'the hub has no model %s (HTTP %d from %s)'
                        % (repo, status, url), 'check the spelling (org/name); for a private model set %s' % token_var,
                        where)]
    if status in (-1, 0, None):
        return [problem('model-hub-unreachable', 'spark_hf_endpoint', 'the hub at %s could not be reached from %s (%s)'
                        % (url, where or 'the source node', body or 'no answer'),
                        'give that node internet access (spark_https_proxy where a proxy is needed), or pin '
                        'sglang_server_model_revision to a commit already staged on the nodes', where)]
    return [problem('model-hub-error', 'sglang_server_model', 'the hub answered HTTP %s for %s (%s)'
                    % (status, url, body), 'try again later, or read the answer above', where)]


def read_hub(model, hub, has_token, where=None):
    """(``{'commit', 'files'}`` or None, problems) from preflight's two hub requests, registered ``uri`` results:
    ``info`` (the model info of the requested revision, ``?blobs=true``) and ``file`` (a HEAD of its config.json with
    the token, which a gated model answers with 401/403 when the token does not grant it)."""
    if not hub:
        return None, []
    info = hub.get('info') or {}
    if info.get('status') != 200:
        return None, hub_problems(model, info.get('status'), info.get('url'), has_token,
                                  info.get('msg') or info.get('content'), info.get('x_error_code'), where)
    try:
        commit, files = manifest_from_hub(info.get('json'))
    except ValueError as exc:
        return None, [problem('model-hub-error', 'spark_hf_endpoint', 'the answer of %s is not a model info: %s'
                              % (info.get('url'), exc), 'point spark_hf_endpoint at the Hugging Face hub or a mirror '
                              'of its API', where)]
    head = hub.get('file') or {}
    if head and not head.get('skipped') and head.get('status') not in (200, 301, 302, 303, 307, 308):
        return None, hub_problems(model, head.get('status'), head.get('url'), has_token,
                                  head.get('msg'), head.get('x_error_code'), where)
    return {'commit': commit, 'files': files}, []


# ---- the record on the nodes ------------------------------------------------------------------------------------

def read_record(path):
    """(record, error): the pins recorded at ``path``; (None, None) when the file does not exist."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, '%s cannot be read: %s' % (path, exc)
    if not isinstance(record, dict) or record.get('schema') != RECORD_SCHEMA:
        return None, '%s is not a pins record of schema %d' % (path, RECORD_SCHEMA)
    return record, None


def render_record(model=None, image=None):
    """The text of the record: the plan's pinned model (a Hugging Face id's requested revision, commit and files) and
    the staged image (its reference, ID, digest and size)."""
    record = {'schema': RECORD_SCHEMA}
    if model and not model.get('local') and model.get('commit'):
        record['model'] = {'repo_id': model['path'], 'requested': model['requested'], 'commit': model['commit'],
                           'files': model['files']}
    if image:
        record['image'] = {k: image.get(k) for k in ('requested', 'id', 'digest', 'bytes')}
    return json.dumps(record, indent=1, sort_keys=True) + '\n'


# ---- what a node holds -------------------------------------------------------------------------------------------

def scan_repo(cache_dir, repo_id):
    """What a node's cache holds of a repository: ``blobs`` (name -> size), ``snapshots`` (commit -> {path: blob}),
    ``refs`` (name -> commit). Read only; a missing folder is an empty cache."""
    root = repo_dir(cache_dir, repo_id)
    blobs, snapshots, refs = {}, {}, {}
    blob_dir = os.path.join(root, 'blobs')
    if os.path.isdir(blob_dir):
        for name in os.listdir(blob_dir):
            full = os.path.join(blob_dir, name)
            if BLOB_NAME.match(name) and os.path.isfile(full) and not os.path.islink(full):
                blobs[name] = os.path.getsize(full)
    snap_dir = os.path.join(root, 'snapshots')
    if os.path.isdir(snap_dir):
        for commit in os.listdir(snap_dir):
            base = os.path.join(snap_dir, commit)
            links = {}
            for folder, _dirs, names in os.walk(base):
                for name in names:
                    full = os.path.join(folder, name)
                    rel = os.path.relpath(full, base).replace(os.sep, '/')
                    target = os.readlink(full) if os.path.islink(full) else ''
                    links[rel] = os.path.basename(target) if target else ''
            snapshots[commit] = links
    ref_dir = os.path.join(root, 'refs')
    if os.path.isdir(ref_dir):
        for folder, _dirs, names in os.walk(ref_dir):
            for name in names:
                with open(os.path.join(folder, name)) as handle:
                    refs[os.path.relpath(os.path.join(folder, name), ref_dir).replace(os.sep, '/')] = handle.read().strip()
    return {'blobs': blobs, 'snapshots': snapshots, 'refs': refs}


def scan_local(path):
    """A model folder given as a path: whether it exists, its files (relative path -> size, links followed)."""
    if not os.path.isdir(path):
        return {'exists': os.path.exists(path), 'is_dir': False, 'files': {}}
    files = {}
    for folder, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        for name in names:
            if name.startswith('.'):
                continue
            full = os.path.join(folder, name)
            try:
                files[os.path.relpath(full, path).replace(os.sep, '/')] = os.path.getsize(full)
            except OSError:
                files[os.path.relpath(full, path).replace(os.sep, '/')] = -1
    return {'exists': True, 'is_dir': True, 'files': files}


def free_bytes(path):
    """Free bytes (for an unprivileged writer) of the filesystem that holds ``path`` or, when it does not exist yet,
    its nearest existing parent."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def missing_files(files, scan, commit):
    """The manifest entries a node lacks: the blob absent or of another size, or the snapshot link not to it."""
    links = scan['snapshots'].get(commit, {})
    return [f for f in files
            if scan['blobs'].get(f['blob']) != f['size'] or links.get(f['path']) != f['blob']]


def verify_blobs(cache_dir, repo_id, files):
    """The manifest entries whose blob's content does not earn its name (hashes every file: slow for big models)."""
    blob_dir = os.path.join(repo_dir(cache_dir, repo_id), 'blobs')
    bad = []
    for entry in files:
        full = os.path.join(blob_dir, entry['blob'])
        if not os.path.isfile(full) or os.path.getsize(full) != entry['size'] or \
                digest_file(full, entry['lfs'], entry['size']) != entry['blob']:
            bad.append(entry['path'])
    return bad


def write_links(cache_dir, repo_id, commit, files):
    """The snapshot links of ``commit``; returns the paths written (none when all were right already)."""
    root = repo_dir(cache_dir, repo_id)
    written = []
    for entry in files:
        link = os.path.join(root, 'snapshots', commit, *entry['path'].split('/'))
        target = link_target(entry['path'], entry['blob'])
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp = link + '.dgxspark-tmp'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        written.append(entry['path'])
    return written


# ---- the plan: which revision, which files, what each node lacks ---------------------------------------------------

def probed(results):
    """Host -> staging_info result, registered with ``failed_when: false``: a failed or missing probe counts as a node
    that holds nothing."""
    return {name: (info if isinstance(info, dict) and not info.get('failed') else {})
            for name, info in (results or {}).items()}


def requested_revision(model):
    return model.get('revision') or DEFAULT_REVISION


def hub_request(model, infos, refresh=False):
    """The revision preflight must ask the hub about, or None when the plan can pin the model without the hub.

    ``model``: the plan's model; ``infos``: host -> staging_info result. A commit hash in the inventory pins itself;
    the files of that commit, or of a branch recorded on the nodes for the same model, come from the record (so a
    second run, from AWX's fresh checkout too, neither asks the hub nor moves to a newer commit of ``main``), unless
    ``refresh`` (``sglang_server_model_refresh``) asks the hub again.
    """
    if model['local']:
        return None
    requested = requested_revision(model)
    if not refresh and recorded_model(model, infos):
        return None
    return requested


def recorded_model(model, infos, prefer=None):
    """The record of this model and requested revision found on the nodes (the source's first), or None."""
    requested = requested_revision(model)
    order = sorted(infos, key=lambda h: (h != (prefer or model.get('source_host')), h))
    for host in order:
        record = (infos.get(host) or {}).get('record') or {}
        rec = record.get('model') if isinstance(record.get('model'), dict) else None
        if not rec or rec.get('repo_id') != model['path'] or not isinstance(rec.get('files'), list):
            continue
        if rec.get('requested') == requested or rec.get('commit') == requested:
            return rec
    return None


def pin_model(model, infos, hub=None, refresh=False):
    """(model with ``commit``, ``files``, ``bytes``, ``pinned_by``; problems). ``hub``: ``{'commit', 'files'}`` from
    manifest_from_hub when preflight asked the hub (hub_request), else None."""
    model = dict(model)
    model['requested'] = None if model['local'] else requested_revision(model)
    model.update({'commit': None, 'files': None, 'bytes': None, 'weights_bytes': None, 'pinned_by': None})
    if model['local']:
        return model, []
    rec = None if refresh else recorded_model(model, infos)
    if rec:
        model.update(commit=rec['commit'], files=rec['files'], pinned_by='record')
    elif hub:
        model.update(commit=hub['commit'], files=hub['files'], pinned_by='hub')
    else:
        return model, [problem('model-not-pinned', 'sglang_server_model_revision',
                               'revision %r of %s is neither recorded on the nodes nor answered by the hub'
                               % (model['requested'], model['path']),
                               'run preflight with hub access from %s' % model.get('source_host'))]
    model['bytes'] = sum(f['size'] for f in model['files'])
    return model, []


def node_needs(model, info):
    """What one node lacks of a pinned Hugging Face model: ``{'missing': [paths], 'missing_bytes'}``."""
    scan = (info or {}).get('model') or {'blobs': {}, 'snapshots': {}, 'refs': {}}
    lacking = missing_files(model['files'], scan, model['commit'])
    # A blob shared by two paths is fetched once.
    blobs = {f['blob']: f['size'] for f in lacking if scan['blobs'].get(f['blob']) != f['size']}
    return {'missing': [f['path'] for f in lacking], 'missing_bytes': sum(blobs.values())}


def disk_problems(host, free, needed, what, variable, folder):
    if free is None or needed <= 0 or free >= needed + DISK_MARGIN_BYTES:
        return []
    return [problem('disk-full', variable, '%s needs %.1f GB more in %s on %s (with %.1f GB kept free), which has '
                    '%.1f GB free' % (what, needed / 1e9, folder, host, DISK_MARGIN_BYTES / 1e9, free / 1e9),
                    'free space there, or point %s at a larger disk' % variable, host, [host])]


def local_model_problems(model, infos):
    """A model given as a path: it exists on every node, with the same files and sizes, and a config.json."""
    path = model['path']
    var = 'sglang_server_model'
    problems = []
    listings = {}
    for host in sorted(infos):
        local = (infos[host] or {}).get('local') or {}
        if not local.get('is_dir'):
            problems.append(problem('model-path-missing', var, '%s %s on %s' % (
                path, 'is not a folder' if local.get('exists') else 'does not exist', host),
                'copy the model folder to the same path on every node, or give a Hugging Face id instead (the '
                'staging role then copies it over the CX7 link)', host, [host]))
            continue
        listings[host] = local.get('files') or {}
        if 'config.json' not in listings[host]:
            problems.append(problem('model-path-no-config', var, '%s on %s has no config.json: it is not a Hugging '
                                    'Face model folder' % (path, host), 'point it at the folder that holds config.json',
                                    host, [host]))
    if len(listings) > 1:
        reference_host = sorted(listings, key=lambda h: (-len(listings[h]), h))[0]
        reference = listings[reference_host]
        for host, files in sorted(listings.items()):
            if host == reference_host:
                continue
            lacking = sorted(set(reference) - set(files))
            extra = sorted(set(files) - set(reference))
            sizes = sorted(p for p in set(files) & set(reference) if files[p] != reference[p])
            if lacking or extra or sizes:
                parts = []
                for label, names in (('lacks', lacking), ('has extra', extra), ('has other sizes of', sizes)):
                    if names:
                        parts.append('%s %s%s' % (label, ', '.join(names[:5]), ' and %d more' % (len(names) - 5)
                                                  if len(names) > 5 else ''))
                problems.append(problem('model-path-differs', var, '%s on %s differs from %s on %s: it %s' % (
                    path, host, path, reference_host, '; '.join(parts)),
                    'copy the folder again from %s (an interrupted copy leaves files short)' % reference_host,
                    host, [host]))
    return problems


def image_pin(requested, infos, source):
    """The image of the group: the reference asked for, and the ID and digest when a node's record (the source's
    first) or a digest reference already pins them."""
    pin = {'requested': requested, 'id': None, 'digest': requested if '@sha256:' in requested else None, 'bytes': None}
    for host in sorted(infos, key=lambda h: (h != source, h)):
        rec = ((infos.get(host) or {}).get('record') or {}).get('image') or {}
        if rec.get('requested') == requested and IMAGE_ID.match(str(rec.get('id') or '')):
            pin.update(id=rec['id'], digest=rec.get('digest') or pin['digest'], bytes=rec.get('bytes'))
            break
    return pin


def image_facts(inspect, requested, pinned_digest=None):
    """The image as the record holds it, from ``docker image inspect --format '{{json .}}'`` on the source: its ID, its
    size, and the digest of the requested repository (a digest reference, or the registry's digest of the tag)."""
    data = json.loads(inspect) if isinstance(inspect, str) else inspect
    if isinstance(data, list):
        data = data[0]
    repo = requested.split('@')[0]
    if ':' in repo.rsplit('/', 1)[-1]:
        repo = repo.rsplit(':', 1)[0]
    names = (repo, 'docker.io/' + repo, 'docker.io/library/' + repo)
    digest = next((d for d in data.get('RepoDigests') or [] if d.split('@')[0] in names), None)
    return {'requested': requested, 'id': data['Id'], 'digest': digest or pinned_digest, 'bytes': data.get('Size')}


def stage_model(plan_group, infos, hub=None, refresh=False, image_bytes_estimate=None):
    """The staging part of the probed plan for one group: the pinned model and image, what each node lacks, and the
    disk problems found before anything is stopped. Returns (model, image, per-node needs, problems)."""
    model, problems = pin_model(plan_group['model'], infos, hub, refresh)
    needs = {}
    if model['local']:
        problems += local_model_problems(model, infos)
        listing = ((infos.get(plan_group['head']) or {}).get('local') or {}).get('files') or {}
        model['bytes'] = sum(s for s in listing.values() if s > 0) or None
        model['weights_bytes'] = weights_bytes([{'path': p, 'size': s} for p, s in listing.items()]) or None
    elif model['files'] is not None:
        model['weights_bytes'] = weights_bytes(model['files']) or None
        for host in plan_group['hosts']:
            info = infos.get(host) or {}
            needs[host] = node_needs(model, info)
            problems += disk_problems(host, info.get('cache_free_bytes'), needs[host]['missing_bytes'],
                                      'the model %s' % model['path'], 'sglang_server_cache_dir',
                                      plan_group['cache_dir'])
    image = None
    if plan_group['runtime'] == 'container':
        image = image_pin(plan_group['image'], infos, model['source_host'])
        for host in plan_group['hosts']:
            info = infos.get(host) or {}
            present = (info.get('image') or {}).get('id')
            held = bool(present) and (image['id'] is None or present == image['id'])
            needs.setdefault(host, {'missing': [], 'missing_bytes': 0})['image'] = not held
            if not held:
                size = image['bytes'] or image_bytes_estimate or 0
                problems += disk_problems(host, info.get('image_free_bytes'), size, 'the image %s' % image['requested'],
                                          'sglang_server_image_size_gb', '/var/lib/docker')
    return model, image, needs, problems


def transfers(plan, group_name, hosts):
    """Who does what with the model in the staging role, from the probed plan: ``source``; ``download`` (the source
    lacks model files); ``model_to`` (the other nodes among ``hosts`` that lack some); ``others`` (the other nodes among
    ``hosts``); ``blobs`` (the source's folder of the model's blobs); and the bytes involved, for the report. Whether
    a node holds the image is looked up live by the role: only the source's image ID, known once it pulled, says which
    image counts."""
    group = plan['groups'][group_name]
    model = group['model']
    source = model['source_host']
    need = {h: plan['nodes'][h].get('staging') or {} for h in group['hosts']}
    hub = not model['local'] and model.get('files') is not None
    container = group['runtime'] == 'container'
    others = [h for h in group['hosts'] if h != source and h in hosts]
    out = {
        'source': source,
        'download': hub and bool(need[source].get('missing')),
        'download_bytes': need[source].get('missing_bytes', 0) if hub else 0,
        'model_to': [h for h in others if hub and need[h].get('missing')],
        'others': others,
        # What the source's staging server serves: the repository's blobs, named by their checksums.
        'blobs': os.path.join(repo_dir(group['cache_dir'], model['path']), 'blobs') if hub else None,
        'container': container,
    }
    out['copy_bytes'] = sum(need[h].get('missing_bytes', 0) for h in out['model_to'])
    return out
