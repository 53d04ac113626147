# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster plan as Kubernetes objects: a thin wrapper around plugins/module_utils/_kubernetes.py.

The docs of the filter live beside this file in ``kubernetes_manifests.yml``
(``ansible-doc -t filter dgxspark.sglang.kubernetes_manifests``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._kubernetes import render_manifests
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError


def kubernetes_manifests(plan, settings=None, api_key=None, hf_token=None):
    """Filter: ``{'objects': [...], 'secrets': [...]}`` of a probed plan; fails listing every problem."""
    if not isinstance(plan, dict) or 'groups' not in plan or 'nodes' not in plan:
        raise AnsibleFilterError('kubernetes_manifests: expected spark_cluster_plan (run the dgxspark.sglang.preflight '
                                 'role first), got %s' % type(plan).__name__)
    try:
        return render_manifests(plan, settings=dict(settings or {}), api_key=api_key, hf_token=hf_token)
    except ProblemsError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    """dgxspark.sglang Kubernetes objects."""

    def filters(self):
        return {'kubernetes_manifests': kubernetes_manifests}
