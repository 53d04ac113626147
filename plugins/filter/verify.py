# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters of the verify role: thin wrappers around plugins/module_utils/_verify.py.

The docs of each filter live beside this file in ``<filter>.yml``
(``ansible-doc -t filter dgxspark.sglang.verify_node_report``).
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._env_file import parse_env_file
from ansible_collections.dgxspark.sglang.plugins.module_utils._verify import (
    allreduce_blockers,
    allreduce_sizing,
    default_report_dir,
    group_reports,
    node_report,
)


def _plan(plan, host, name):
    if not isinstance(plan, dict) or 'nodes' not in plan or 'groups' not in plan:
        raise AnsibleFilterError('%s: expected spark_cluster_plan (the preflight role publishes it), got %s'
                                 % (name, type(plan).__name__))
    if host is not None and host not in plan['nodes']:
        raise AnsibleFilterError('%s: %s is not a node of spark_cluster_plan (nodes: %s)'
                                 % (name, host, ', '.join(plan['nodes']) or 'none'))
    return plan


def env_file_vars(text):
    """Filter: the variables of an environment file written by dgxspark.sglang.nccl_env_file, name -> value."""
    if text is not None and not isinstance(text, str):
        raise AnsibleFilterError('env_file_vars: expected the text of an environment file, got %s' % type(text).__name__)
    return parse_env_file(text)


def verify_allreduce_blockers(plan, host, play_hosts, skip_on_link_down=True):
    """Filter: why the all-reduce of the host's group cannot start (a list of {host, code, reason})."""
    return allreduce_blockers(_plan(plan, host, 'verify_allreduce_blockers'), host, play_hosts, skip_on_link_down)


def verify_allreduce_sizing(plan, host, memories, max_bytes=None, reserve_bytes=None):
    """Filter: the largest all-reduce size of the host's group, capped where SGLang serves (MemAvailable less a reserve)."""
    if not isinstance(memories, (list, tuple)):
        raise AnsibleFilterError('verify_allreduce_sizing: memories must be a list of {host, serving, meminfo}, got %s'
                                 % type(memories).__name__)
    try:
        return allreduce_sizing(_plan(plan, host, 'verify_allreduce_sizing'), host, memories, max_bytes, reserve_bytes)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError('verify_allreduce_sizing: %s' % exc)


def verify_node_report(plan, host, **results):
    """Filter: one node's verify report, with its failures, from the plan and the node's raw results."""
    try:
        return node_report(_plan(plan, host, 'verify_node_report'), host, **results)
    except TypeError as exc:
        raise AnsibleFilterError('verify_node_report: %s' % exc)


def verify_reports(plan, node_reports, timestamp, report_dir=None, hosts=None):
    """Filter: the report of each group of the plan, with its verdict and failures."""
    if isinstance(node_reports, (list, tuple)):
        node_reports = {report['host']: report for report in node_reports}
    if not isinstance(node_reports, dict):
        raise AnsibleFilterError('verify_reports: node_reports must be the list of the nodes\' verify_node_report, '
                                 'or a dict host -> verify_node_report; got %s' % type(node_reports).__name__)
    return group_reports(_plan(plan, None, 'verify_reports'), node_reports, timestamp, report_dir, hosts)


def verify_default_report_dir(playbook_dir, artifact_dir=None):
    """Filter: where verify's reports go when verify_report_dir is not set (ansible-runner's artifacts, the current
    folder for an installed collection, reports/ of a checkout)."""
    if not isinstance(playbook_dir, str) or not playbook_dir:
        raise AnsibleFilterError('verify_default_report_dir: expected playbook_dir, got %r' % (playbook_dir,))
    return default_report_dir(playbook_dir, os.getcwd(), artifact_dir or None)


class FilterModule:
    """dgxspark.sglang verify."""

    def filters(self):
        return {
            'env_file_vars': env_file_vars,
            'verify_allreduce_blockers': verify_allreduce_blockers,
            'verify_allreduce_sizing': verify_allreduce_sizing,
            'verify_default_report_dir': verify_default_report_dir,
            'verify_node_report': verify_node_report,
            'verify_reports': verify_reports,
        }
