# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""gpu_info module cases: see test_gpu_info.yaml; the harness is documented in uthelper.py."""

from __future__ import annotations

from ansible_collections.dgxspark.sglang.plugins.modules import gpu_info

from .uthelper import UTHelper

UTHelper.from_module(gpu_info, __file__)
