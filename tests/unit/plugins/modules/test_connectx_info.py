# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""connectx_info: the cases live in test_connectx_info.yaml.

A case names a sysfs tree as ``sysfs_root: tree:<name>``; it is built once per run from
``sysfs.TREES[<name>]`` (tests/unit/sysfs.py) in a temporary directory and its path passed in.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from ansible_collections.dgxspark.sglang.plugins.modules import connectx_info
from ansible_collections.dgxspark.sglang.tests.unit import sysfs

from .uthelper import UTHelper

_TREES = {}


def _tree(name):
    if name not in _TREES:
        if not _TREES:
            top = tempfile.mkdtemp(prefix='connectx-sysfs-')
            atexit.register(shutil.rmtree, top, True)
            _TREES[None] = top
        _TREES[name] = sysfs.build_tree(os.path.join(_TREES[None], name), sysfs.TREES[name])
    return _TREES[name]


class SysfsTreeHelper(UTHelper):
    """UTHelper that turns ``sysfs_root: tree:<name>`` into the path of a built tree."""

    def _module_args(self, case):
        args = super()._module_args(case)
        root = args.get('sysfs_root')
        if isinstance(root, str) and root.startswith('tree:'):
            args['sysfs_root'] = _tree(root[len('tree:'):])
        return args


SysfsTreeHelper.from_module(connectx_info, __file__)
