# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The environment-file filter: a thin wrapper around plugins/module_utils/_env_file.py.

Its docs live beside this file in ``env_file.yml`` (``ansible-doc -t filter dgxspark.sglang.env_file``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.module_utils._env_file import EnvFileError, render_env_file


def env_file(mapping, header=None, variable='environment'):
    """Filter: the text of an environment file that systemd and docker read the same (bare values only)."""
    if not isinstance(mapping, dict):
        raise AnsibleFilterError('env_file: expected a dict of variable name -> value, got %s' % type(mapping).__name__)
    try:
        return render_env_file(mapping, header=header, variable=variable)
    except EnvFileError as exc:
        raise AnsibleFilterError(str(exc))
    except ValueError as exc:
        raise AnsibleFilterError('env_file: %s' % exc)


class FilterModule:
    """dgxspark.sglang environment files."""

    def filters(self):
        return {'env_file': env_file}
