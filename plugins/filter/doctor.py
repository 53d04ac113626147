# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters of the doctor role: thin wrappers around plugins/module_utils/_doctor.py.

The docs of each filter live beside this file in ``<filter>.yml``
(``ansible-doc -t filter dgxspark.sglang.doctor_node_files``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._doctor import (
    VERSIONS_PROBE,
    findings,
    format_findings,
    node_files,
    node_versions,
    redact,
    versions_problems,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import VERSION_PROBE


def _list(value, name):
    if value is None:
        return []
    if isinstance(value, dict) and 'results' in value:
        return list(value['results'])
    if not isinstance(value, (list, tuple)):
        raise AnsibleFilterError('%s: expected a list (or a loop\'s registered result), got %s'
                                 % (name, type(value).__name__))
    return list(value)


def _secrets(secrets):
    return [s for s in _list(secrets, 'secrets') if isinstance(s, str) and s]


def doctor_redact(text, secrets=None):
    """Filter: the text with every secret replaced by <redacted> (the values given, and what looks like a secret)."""
    return redact(text, _secrets(secrets))


def doctor_node_files(commands, files=None, modules=None, secrets=None, host=None):
    """Filter: one node's files of the doctor's tarball ({host, name, text}, redacted) from its registered results."""
    if modules is not None and not isinstance(modules, dict):
        raise AnsibleFilterError('doctor_node_files: modules must be a dict name -> registered result, got %s'
                                 % type(modules).__name__)
    return node_files(_list(commands, 'commands'), _list(files, 'files'), modules, _secrets(secrets), host)


def doctor_versions(stdout, host, runtime=None):
    """Filter: what a node runs, {host, runtime, versions}, from the output of doctor_versions_probe's command."""
    return node_versions(host, runtime, stdout if isinstance(stdout, str) else '')


def doctor_version_problems(nodes):
    """Filter: the SGLang version problems of the nodes (each the output of doctor_versions)."""
    return versions_problems(_list(nodes, 'nodes'))


def doctor_findings(group_reports, problems=None, unreached=None, secrets=None):
    """Filter: what looks wrong, once each, from the verify role's group reports and other checks' problems."""
    return findings(_list(group_reports, 'group_reports'), _list(problems, 'problems'), _list(unreached, 'unreached'),
                    _secrets(secrets))


def doctor_findings_text(items, tarball=None):
    """Filter: the short numbered list of what looks wrong (or a line saying nothing does)."""
    return format_findings(_list(items, 'findings'), tarball)


def doctor_versions_probe(argv):
    """Filter: the argv of dgxspark.sglang.sglang_version_probe, made to print the runtime's versions as JSON."""
    argv = _list(argv, 'argv')
    if not argv or argv[-1] != VERSION_PROBE:
        raise AnsibleFilterError('doctor_versions_probe: expected the output of dgxspark.sglang.sglang_version_probe')
    return argv[:-1] + [VERSIONS_PROBE]


class FilterModule:
    """dgxspark.sglang doctor."""

    def filters(self):
        return {
            'doctor_findings': doctor_findings,
            'doctor_findings_text': doctor_findings_text,
            'doctor_node_files': doctor_node_files,
            'doctor_redact': doctor_redact,
            'doctor_version_problems': doctor_version_problems,
            'doctor_versions': doctor_versions,
            'doctor_versions_probe': doctor_versions_probe,
        }
