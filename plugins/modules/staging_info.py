#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: staging_info
short_description: Read what a node holds of the model and the SGLang image, and the pins recorded there
version_added: 0.2.0
description:
  - Reads, without changing anything, the Hugging Face cache of one model repository under O(cache_dir)
    (C(hub/models--ORG--NAME/blobs), C(snapshots), C(refs)), or the files of a model folder given as O(local_path);
    the free bytes of the filesystems that would hold the model and the image; the image as Docker knows it; and the
    record of the pinned model revision and image that the staging role writes (O(record)).
  - With O(verify), hashes the named blobs and returns those whose content does not earn their name (sha256 for LFS
    files, the git blob id for the others), as the hub gives them.
author:
  - dgxspark.sglang contributors (@dgxspark)
extends_documentation_fragment:
  - dgxspark.sglang.attributes
  - dgxspark.sglang.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  cache_dir:
    description:
      - The Hugging Face cache folder (E(HF_HOME)) of the node; it need not exist yet.
    type: path
    required: true
  repo_id:
    description:
      - The model's Hugging Face id (V(ORG/NAME)), whose cache folder is read.
    type: str
  local_path:
    description:
      - A model folder given as a path, listed instead of the cache (file sizes, links followed).
    type: path
  record:
    description:
      - The pins record of the group on the node (JSON); a missing file is no record.
    type: path
    required: true
  image:
    description:
      - The image reference to look up with C(docker image inspect); also looked up by the ID the record holds for it.
      - Not set, or Docker not installed, returns an empty RV(image).
    type: str
  image_dir:
    description:
      - Docker's data root, whose filesystem receives the image.
    type: path
    default: /var/lib/docker
  verify:
    description:
      - Manifest entries (C(path), C(size), C(blob), C(lfs)) whose blobs are hashed; the bad ones are returned in
        RV(bad). Reads every byte of them.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Read what this node holds of the model
  dgxspark.sglang.staging_info:
    cache_dir: /var/lib/sglang/huggingface
    repo_id: Qwen/Qwen2.5-72B-Instruct
    record: /etc/sglang/pins.json
    image: lmsysorg/sglang:v0.5.23-cu130
  register: staged
"""

RETURN = r"""
record:
  description: The pins record (C(schema), C(model), C(image)), or null when there is none.
  returned: always
  type: dict
record_error:
  description: Why the record could not be read (null when it could, or does not exist).
  returned: always
  type: str
model:
  description: The cache of O(repo_id), C(blobs) (name to size), C(snapshots) (commit to path to blob) and C(refs).
  returned: when O(repo_id) is set
  type: dict
local:
  description: The folder O(local_path), C(exists), C(is_dir) and C(files) (relative path to size).
  returned: when O(local_path) is set
  type: dict
cache_free_bytes:
  description: Free bytes where O(cache_dir) is, or would be created.
  returned: always
  type: int
image:
  description: C(id), C(repo_digests), C(bytes) and C(found_as) of the image, or empty when Docker lacks it.
  returned: always
  type: dict
image_free_bytes:
  description: Free bytes of the filesystem of O(image_dir) (null without Docker).
  returned: always
  type: int
bad:
  description: The paths of the O(verify) entries whose blob is missing, short or of other content.
  returned: always
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.sglang.plugins.module_utils._staging import (
    free_bytes, read_record, scan_local, scan_repo, verify_blobs)


def inspect_image(module, refs):
    docker = module.get_bin_path('docker')
    if not docker:
        return None
    for ref in refs:
        rc, out, _err = module.run_command([docker, 'image', 'inspect', '--format', '{{json .}}', ref])
        if rc == 0 and out.strip():
            data = json.loads(out)
            return {'id': data.get('Id'), 'repo_digests': data.get('RepoDigests') or [], 'bytes': data.get('Size'),
                    'found_as': ref}
    return {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type='path', required=True),
            repo_id=dict(type='str'),
            local_path=dict(type='path'),
            record=dict(type='path', required=True),
            image=dict(type='str'),
            image_dir=dict(type='path', default='/var/lib/docker'),
            verify=dict(type='list', elements='dict', default=[]),
        ),
        mutually_exclusive=[('repo_id', 'local_path')],
        supports_check_mode=True,
    )
    p = module.params
    record, record_error = read_record(p['record'])
    result = {'changed': False, 'record': record, 'record_error': record_error,
              'cache_free_bytes': free_bytes(p['cache_dir']), 'image': {}, 'image_free_bytes': None, 'bad': []}
    if p['repo_id']:
        result['model'] = scan_repo(p['cache_dir'], p['repo_id'])
        if p['verify']:
            result['bad'] = verify_blobs(p['cache_dir'], p['repo_id'], p['verify'])
    if p['local_path']:
        result['local'] = scan_local(p['local_path'])
    if p['image']:
        # The recorded ID first: a tag moved on the node since (a manual pull) is not the pinned image.
        rec_image = (record or {}).get('image') or {}
        refs = [rec_image['id']] if rec_image.get('requested') == p['image'] and rec_image.get('id') else []
        refs.append(p['image'])
        found = inspect_image(module, refs)
        if found is not None:
            result['image'] = found
            result['image_free_bytes'] = free_bytes(p['image_dir'])
    module.exit_json(**result)


if __name__ == '__main__':
    main()
