"""A job as AWX runs it: a private data dir laid out as AWX lays it out, run by ansible-runner, AWX's engine.

What AWX's task code (awx/main/tasks/jobs.py and awx/main/models/credential.py) writes before it hands the folder to
ansible-runner, and what these helpers write the same way:

- ``project/``: the project's files; the job's working directory. Its ``ansible.cfg`` ``collections_path`` is read
  and put behind ``requirements_collections`` (where a project sync installs ``collections/requirements.yml``);
- ``inventory/hosts``: an executable script that prints the inventory as JSON (what an SCM inventory source imported:
  ``ansible-inventory --list --export`` of the inventory folder);
- ``env/extravars``: the extra vars, survey answers among them, every value that the job template did not set itself
  tagged ``!unsafe`` (AWX's ``safe_dump``), with AWX's ``awx_*`` meta vars;
- a credential type's ``extra_vars`` injector: a file of its own under ``env/`` (``!unsafe`` too), passed as
  ``-e @file`` through ``env/cmdline``;
- ``env/envvars``: ``ANSIBLE_COLLECTIONS_PATH(S)``, ``ANSIBLE_ROLES_PATH``, ``ANSIBLE_SSH_CONTROL_PATH_DIR``, ``JOB_ID``;
- ``env/ssh_key``: the machine credential's key, which ansible-runner hands to an ssh-agent.

ansible-runner then writes ``artifacts/<ident>/`` (``status``, ``rc``, ``stdout``, ``job_events/``) and sets
``AWX_ISOLATED_DATA_DIR`` to that folder for the play.
"""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import subprocess
import sys

import yaml

BIN = pathlib.Path(sys.executable).parent


class UnsafeDumper(yaml.SafeDumper):
    """YAML whose strings are all tagged !unsafe, as AWX's safe_dump writes what users typed."""


UnsafeDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar('!unsafe', value))


def exported_inventory(path, **hostvars):
    """What an SCM inventory source imports from an inventory folder (ansible-inventory --list --export), with
    ``hostvars`` (host -> vars) laid over the imported host variables."""
    env = dict(os.environ)
    env.pop('ANSIBLE_CONFIG', None)
    proc = subprocess.run([str(BIN / 'ansible-inventory'), '-i', str(path), '--list', '--export'],
                          capture_output=True, text=True, timeout=120, check=True, env=env)
    data = json.loads(proc.stdout)
    for host, extra in hostvars.items():
        data.setdefault('_meta', {}).setdefault('hostvars', {}).setdefault(host, {}).update(extra)
    return data


def _collections_paths(project):
    """AWX's path for collections: requirements_collections, then the project's ansible.cfg collections_path, then
    the defaults (awx/main/tasks/jobs.py, build_env)."""
    paths = ['~/.ansible/collections', '/usr/share/ansible/collections']
    cfg = pathlib.Path(project) / 'ansible.cfg'
    if cfg.is_file():
        parser = configparser.ConfigParser()
        parser.read(cfg)
        for key in ('collections_path', 'collections_paths'):
            value = parser.get('defaults', key, fallback=None)
            if value:
                paths = [value] + paths
                break
    return paths


def private_data_dir(root, project, inventory, extra_vars=None, credential_vars=None, ssh_key=None, job_id=1,
                     job_template='Deploy SGLang cluster'):
    """Lay out ``root`` as AWX does for one job; ``project`` is linked in as ``project/``. Returns ``root``."""
    root = pathlib.Path(root)
    for sub in ('env', 'inventory', 'requirements_collections', 'requirements_roles', 'cp'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not (root / 'project').exists():
        (root / 'project').symlink_to(pathlib.Path(project).resolve())
    hosts = root / 'inventory' / 'hosts'
    hosts.write_text('#! %s\n# -*- coding: utf-8 -*-\nprint(%r)\n' % (sys.executable, json.dumps(inventory)))
    hosts.chmod(0o700)
    meta = {'awx_job_id': job_id, 'tower_job_id': job_id, 'awx_job_template_name': job_template,
            'awx_job_launch_type': 'manual', 'awx_user_name': 'admin'}
    (root / 'env' / 'extravars').write_text(yaml.dump(dict(extra_vars or {}, **meta), Dumper=UnsafeDumper))
    set_credential_vars(root, credential_vars)
    paths = _collections_paths(root / 'project')
    collections = ':'.join([str(root / 'requirements_collections')] + paths)
    envvars = {
        'ANSIBLE_COLLECTIONS_PATHS': collections,
        'ANSIBLE_COLLECTIONS_PATH': collections,
        'ANSIBLE_ROLES_PATH': '%s:~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles' % (
            root / 'requirements_roles'),
        'ANSIBLE_SSH_CONTROL_PATH_DIR': str(root / 'cp'),
        'JOB_ID': str(job_id),
        'AWX_HOST': 'https://awx.example.com',
        'PATH': '%s:%s' % (BIN, os.environ.get('PATH', '/usr/bin:/bin')),
    }
    (root / 'env' / 'envvars').write_text(yaml.safe_dump(envvars))
    if ssh_key:
        (root / 'env' / 'ssh_key').write_text(pathlib.Path(ssh_key).read_text())
    return root


def set_credential_vars(root, credential_vars):
    """The extra vars a credential type's injector gives the job (a file of their own, -e @file), or none."""
    root = pathlib.Path(root)
    injected = root / 'env' / 'tmp_sglang_secrets'
    cmdline = []
    if credential_vars is not None:
        if injected.exists():
            injected.chmod(0o600)
        injected.write_text(yaml.dump(credential_vars, Dumper=UnsafeDumper))
        injected.chmod(0o400)
        cmdline += ['-e', '@%s' % injected]
    (root / 'env' / 'cmdline').write_text(' '.join(cmdline))


class Job:
    """The outcome of one ansible-runner run: status, rc, the events, the artifact folder."""

    def __init__(self, runner, artifact_dir):
        self.status = runner.status
        self.rc = runner.rc
        self.artifact_dir = pathlib.Path(artifact_dir)
        files = sorted((self.artifact_dir / 'job_events').glob('*.json'), key=lambda p: int(p.name.split('-', 1)[0]))
        self.events = [json.loads(p.read_text()) for p in files]
        self.stdout = (self.artifact_dir / 'stdout').read_text() if (self.artifact_dir / 'stdout').exists() else ''

    def events_text(self):
        return '\n'.join(json.dumps(e) for e in self.events)

    def tasks_started(self):
        return [e['event_data'].get('task') for e in self.events if e.get('event') == 'playbook_on_task_start']

    def host_events(self, *kinds):
        return [e for e in self.events if e.get('event') in kinds]

    def __repr__(self):
        return 'Job(status=%r, rc=%r, artifacts=%s)\n%s' % (self.status, self.rc, self.artifact_dir, self.stdout[-8000:])


def run_job(root, playbook, ident, timeout=1800):
    """ansible-runner's run of ``playbook`` in the private data dir ``root`` (AWX passes the ident, the job id)."""
    import ansible_runner

    runner = ansible_runner.run(private_data_dir=str(root), playbook=playbook, ident=str(ident), quiet=True,
                                timeout=timeout, suppress_env_files=True)
    return Job(runner, pathlib.Path(root) / 'artifacts' / str(ident))
