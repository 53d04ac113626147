# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Prometheus's files from cluster plans: a thin wrapper over ``plugins/module_utils/_monitoring.py``. The docs live
beside this file in ``monitoring_files.yml``."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter.cluster import plain
from ansible_collections.dgxspark.sglang.plugins.module_utils._monitoring import monitoring_files as _files
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, format_problems


def monitoring_files(plans, config_dir, node_exporter_port=9100, thresholds=None, scrape_interval='15s', sglang_tls=None):
    """Filter: prometheus.yml, the rule file and the file_sd targets of every cluster whose plan is in PLANS."""
    try:
        return _files(plain(plans), str(config_dir), int(node_exporter_port), plain(thresholds), str(scrape_interval),
                      plain(sglang_tls))
    except ProblemsError as exc:
        raise AnsibleFilterError(format_problems(exc.problems, 'The monitoring set-up')) from exc


class FilterModule:
    """dgxspark.sglang monitoring."""

    def filters(self):
        return {'monitoring_files': monitoring_files}
