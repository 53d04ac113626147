#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: staging_fetch
short_description: Pull the model's files, or the SGLang image, from another node of the group over the CX7 link
version_added: 0.2.0
description:
  - The receiving half of the staging role's transfer. The source node serves its Hugging Face cache's blobs and
    C(docker save) of the image on its CX7 address (the role's C(staging_server.py), a short-lived transient unit);
    this module, on every other node, pulls what the node lacks, several files at once, straight from that address,
    never through a proxy and with no SSH key between nodes.
  - Model files (O(files), the manifest the hub gave for O(commit)) land in the node's cache in huggingface_hub's
    own layout (C(blobs/<etag>), C(snapshots/<commit>/<path>) links), so that SGLang finds them with
    E(HF_HUB_OFFLINE=1) and C(--revision <commit>). Every file is verified while it streams by, the sha256 for LFS files and the git blob
    id for the others, and only then moved into place; a node that holds every file transfers nothing.
  - The image (O(image_id)) is streamed into C(docker load) and verified by its image ID; a node that already holds
    that ID transfers nothing.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  url:
    description:
      - The source's staging server, V(http://CX7_ADDRESS:PORT).
    type: str
    required: true
  cache_dir:
    description:
      - The Hugging Face cache folder (E(HF_HOME)) of this node.
    type: path
  repo_id:
    description:
      - The model's Hugging Face id.
    type: str
  commit:
    description:
      - The commit whose snapshot is written.
    type: str
  files:
    description:
      - The manifest, each entry with C(path), C(size), C(blob) (the sha256 or git blob id) and C(lfs).
    type: list
    elements: dict
    default: []
  image_id:
    description:
      - Pull the image with this ID (V(sha256:...)) instead of model files.
    type: str
  parallel:
    description:
      - Files transferred at once.
    type: int
    default: 8
  timeout:
    description:
      - Seconds a connection may stay silent before the file is retried once, then the module fails.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Pull the model's files from the source node
  dgxspark.sglang.staging_fetch:
    url: http://192.168.100.11:30090
    cache_dir: /var/lib/sglang/huggingface
    repo_id: Qwen/Qwen2.5-72B-Instruct
    commit: "{{ spark_cluster_plan.groups.spark.model.commit }}"
    files: "{{ spark_cluster_plan.groups.spark.model.files }}"
"""

RETURN = r"""
fetched:
  description: The paths (model) or the image ID that were transferred (or would be, in check mode).
  returned: always
  type: list
  elements: str
transferred_bytes:
  description: Bytes received (0 in check mode).
  returned: always
  type: int
seconds:
  description: Wall time of the transfer.
  returned: always
  type: float
"""

import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._staging import (
    BLOB_NAME, CHUNK, COMMIT, IMAGE_ID, Hasher, missing_files, repo_dir, scan_repo, write_links)

# Straight to the source's CX7 address: a site's proxy (in the environment) is for the internet, never for this.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_blob(url, blob_dir, entry, timeout):
    """Download one blob next to its place, verify it, then move it in. Returns the bytes received."""
    final = os.path.join(blob_dir, entry['blob'])
    part = final + '.incomplete'
    hasher = Hasher(entry)
    received = 0
    with OPENER.open('%s/blobs/%s' % (url, entry['blob']), timeout=timeout) as answer, open(part, 'wb') as out:
        for chunk in iter(lambda: answer.read(CHUNK), b''):
            out.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
    if received != entry['size'] or hasher.hexdigest() != entry['blob']:
        os.unlink(part)
        raise ValueError('%s arrived as %d bytes with %s %s, not %d bytes with %s' % (
            entry['path'], received, 'sha256' if entry['lfs'] else 'git blob id', hasher.hexdigest(), entry['size'],
            entry['blob']))
    os.replace(part, final)
    return received


def with_retry(url, blob_dir, entry, timeout):
    try:
        return fetch_blob(url, blob_dir, entry, timeout)
    except (OSError, ValueError):
        return fetch_blob(url, blob_dir, entry, timeout)


def pull_model(module, p):
    for entry in p['files']:
        if not isinstance(entry.get('path'), str) or not BLOB_NAME.match(str(entry.get('blob'))) \
                or not isinstance(entry.get('size'), int):
            module.fail_json(msg='staging_fetch: manifest entry %r lacks path, size or a blob checksum' % (entry,))
        entry['lfs'] = bool(entry.get('lfs'))
    if not COMMIT.match(p['commit'] or ''):
        module.fail_json(msg='staging_fetch: commit must be a 40-character commit hash, not %r' % (p['commit'],))
    scan = scan_repo(p['cache_dir'], p['repo_id'])
    lacking = missing_files(p['files'], scan, p['commit'])
    todo = {}
    for entry in lacking:
        if scan['blobs'].get(entry['blob']) != entry['size']:
            todo[entry['blob']] = entry
    result = {'fetched': sorted(e['path'] for e in todo.values()), 'transferred_bytes': 0, 'seconds': 0.0,
              'changed': bool(lacking)}
    if module.check_mode or not result['changed']:
        return result
    blob_dir = os.path.join(repo_dir(p['cache_dir'], p['repo_id']), 'blobs')
    os.makedirs(blob_dir, exist_ok=True)
    started = time.monotonic()
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, p['parallel'])) as pool:
        futures = {pool.submit(with_retry, p['url'], blob_dir, e, p['timeout']): e for e in todo.values()}
        for future, entry in futures.items():
            try:
                result['transferred_bytes'] += future.result()
            except (OSError, ValueError) as exc:
                failures.append('%s: %s' % (entry['path'], exc))
    result['seconds'] = round(time.monotonic() - started, 3)
    if failures:
        module.fail_json(msg='staging_fetch: %d file(s) of %s did not arrive intact from %s (each tried twice): %s'
                         % (len(failures), p['repo_id'], p['url'], '; '.join(failures)), **result)
    write_links(p['cache_dir'], p['repo_id'], p['commit'], p['files'])
    return result


def pull_image(module, p):
    if not IMAGE_ID.match(p['image_id']):
        module.fail_json(msg='staging_fetch: image_id must be sha256:<64 hex>, not %r' % (p['image_id'],))
    docker = module.get_bin_path('docker', required=True)
    held = module.run_command([docker, 'image', 'inspect', '--format', '{{.Id}}', p['image_id']])
    result = {'fetched': [], 'transferred_bytes': 0, 'seconds': 0.0, 'changed': False}
    if held[0] == 0 and held[1].strip() == p['image_id']:
        return result
    result.update(fetched=[p['image_id']], changed=True)
    if module.check_mode:
        return result
    started = time.monotonic()
    # Streamed, never stored: the HTTP body goes through a named pipe that `docker load` reads (an image is tens of GB).
    fifo = os.path.join(module.tmpdir, 'image.tar')
    os.mkfifo(fifo, 0o600)
    state = {'error': None}

    def feed():
        try:
            with open(fifo, 'wb') as pipe:  # blocks until docker load opens it
                with OPENER.open('%s/image/%s' % (p['url'], p['image_id']), timeout=p['timeout']) as answer:
                    for chunk in iter(lambda: answer.read(CHUNK), b''):
                        pipe.write(chunk)
                        result['transferred_bytes'] += len(chunk)
        except OSError as exc:
            state['error'] = exc

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    rc, out, err = module.run_command([docker, 'load', '--quiet', '--input', fifo])
    if writer.is_alive():  # docker load never opened the pipe: let the writer's open return, and fail
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    writer.join(30)
    result['seconds'] = round(time.monotonic() - started, 3)
    if state['error'] is not None:
        module.fail_json(msg='staging_fetch: the image %s did not arrive from %s: %s' % (p['image_id'], p['url'],
                                                                                         state['error']), **result)
    if rc != 0:
        module.fail_json(msg='staging_fetch: docker load failed (rc=%d): %s' % (rc, (err or out).strip()[-1000:]),
                         **result)
    found = module.run_command([docker, 'image', 'inspect', '--format', '{{.Id}}', p['image_id']])
    if found[0] != 0 or found[1].strip() != p['image_id']:
        module.fail_json(msg='staging_fetch: after docker load, this node has no image %s (docker load said: %s)'
                         % (p['image_id'], out.strip()), **result)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', required=True),
            cache_dir=dict(type='path'),
            repo_id=dict(type='str'),
            commit=dict(type='str'),
            files=dict(type='list', elements='dict', default=[]),
            image_id=dict(type='str'),
            parallel=dict(type='int', default=8),
            timeout=dict(type='int', default=120),
        ),
        required_one_of=[('repo_id', 'image_id')],
        mutually_exclusive=[('repo_id', 'image_id')],
        required_by={'repo_id': ('cache_dir', 'commit')},
        supports_check_mode=True,
    )
    p = module.params
    p['url'] = p['url'].rstrip('/')
    module.exit_json(**(pull_image(module, p) if p['image_id'] else pull_model(module, p)))


if __name__ == '__main__':
    main()
