"""The execution environment (meta/execution-environment.yml) holds what the controller side needs, and stays so.

- ``ansible-builder create`` makes a valid build context from it: the base image as the build argument EE_BASE_IMAGE,
  ansible-core and ansible-runner at the project's pins, the Python pins of meta/requirements.txt, the system packages
  of meta/bindep.txt, the collections of collections/requirements.yml.
- Every third-party Python import of the controller side (the filters, the module_utils they import, the scripts the
  roles run on the controller) is pinned there, or comes with ansible-core; every collection the roles and playbooks
  use is listed in collections/requirements.yml. So a later issue's dependency lands in the EE or fails here.
- Installed from the tarball, the collection tells ansible-builder's introspection (what runs when another EE installs
  it) the same pins and packages.
- requires_ansible (meta/runtime.yml) claims what is tested: the oldest ansible-core it allows is the line of the pin
  that the unit tests and ansible-test sanity run on.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[2]
EE_FILE = ROOT / 'meta' / 'execution-environment.yml'
BIN = pathlib.Path(sys.executable).parent
PLUGINS = ROOT / 'plugins'
FQCN = r'[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z_][a-z0-9_]*'
OWN = ('ansible.builtin', 'ansible.legacy', 'dgxspark.sglang')


def ee():
    return yaml.safe_load(EE_FILE.read_text())


def pins(path):
    """name -> Requirement of a pip requirements file, following -r includes."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split(' #', 1)[0].strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('-r '):
            found.update(pins(path.parent / line.split(None, 1)[1]))
            continue
        req = Requirement(line)
        found[canonical(req.name)] = req
    return found


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def ee_dependency_path(entry):
    """A dependency file of the EE definition, as ansible-builder create reads it (relative to meta/)."""
    return (EE_FILE.parent / ee()['dependencies'][entry]).resolve()


# ---- ansible-builder create ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def context(tmp_path_factory):
    out = tmp_path_factory.mktemp('ee') / 'context'
    proc = subprocess.run([str(BIN / 'ansible-builder'), 'create', '-f', str(EE_FILE), '-c', str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_definition_is_version_3(context):
    assert ee()['version'] == 3
    assert (context / 'Dockerfile').is_file() or (context / 'Containerfile').is_file()


def containerfile(context):
    path = context / 'Dockerfile' if (context / 'Dockerfile').is_file() else context / 'Containerfile'
    return path.read_text()


def test_the_base_image_is_a_build_argument(context):
    text = containerfile(context)
    assert 'ARG EE_BASE_IMAGE="%s"' % ee()['images']['base_image']['name'] in text
    assert 'FROM $EE_BASE_IMAGE AS base' in text


def test_ansible_core_and_runner_at_the_projects_pins(context):
    core = pins(ROOT / 'meta' / 'requirements.txt')['ansible-core']
    runner = pins(ROOT / 'requirements-dev.txt')['ansible-runner']
    deps = ee()['dependencies']
    assert deps['ansible_core']['package_pip'] == str(core)
    assert deps['ansible_runner']['package_pip'] == str(runner)
    assert 'ARG ANSIBLE_INSTALL_REFS="%s %s"' % (core, runner) in containerfile(context)


def test_the_context_holds_the_pins_the_packages_and_the_collections(context):
    build = context / '_build'
    assert ee_dependency_path('python') == (ROOT / 'meta' / 'requirements.txt').resolve()
    assert ee_dependency_path('system') == (ROOT / 'meta' / 'bindep.txt').resolve()
    assert ee_dependency_path('galaxy') == (ROOT / 'collections' / 'requirements.yml').resolve()
    # Real files in the context (a link would point out of it).
    for name, source in (('requirements.txt', 'meta/requirements.txt'), ('bindep.txt', 'meta/bindep.txt')):
        assert not (build / name).is_symlink() and (build / name).read_text() == (ROOT / source).read_text()
    assert yaml.safe_load((build / 'requirements.yml').read_text()) == yaml.safe_load(
        (ROOT / 'collections' / 'requirements.yml').read_text())
    assert '--user-pip=requirements.txt --user-bindep=bindep.txt' in containerfile(context)


def test_the_ssh_client_is_a_system_package():
    lines = [line for line in (ROOT / 'meta' / 'bindep.txt').read_text().splitlines() if line and not line.startswith('#')]
    assert 'openssh-clients [platform:rpm]' in lines and 'openssh-client [platform:dpkg]' in lines


# ---- every import and collection of the controller side is covered ------------------------------------------

def imports_of(path):
    """Top-level module names a Python file imports (anywhere in it, guarded imports included), and the collection's own
    modules it imports (as paths)."""
    tree = ast.parse(path.read_text(), str(path))
    third, own = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.startswith('ansible_collections.dgxspark.sglang.'):
                own.add(ROOT.joinpath(*name.split('.')[3:]).with_suffix('.py'))
            else:
                third.add(name.split('.')[0])
    return third, own


def controller_python_files():
    """The Python the controller runs: plugins other than modules (and the module_utils they import, followed), and the
    role scripts that tasks run from {{ role_path }}/files on the controller."""
    start = [p for p in PLUGINS.glob('*/*.py') if p.parent.name not in ('modules', 'module_utils', 'doc_fragments')]
    for tasks in ROOT.glob('roles/*/tasks/*.yml'):
        for script in re.findall(r'\{\{ *role_path *\}\}/files/([\w.-]+\.py)', tasks.read_text()):
            start.append(tasks.parents[1] / 'files' / script)
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        todo.extend(imports_of(path)[1])
    return seen


def controller_imports():
    found = {}
    for path in controller_python_files():
        for name in imports_of(path)[0]:
            if name in sys.stdlib_module_names or name in ('__future__', 'ansible', 'ansible_collections'):
                continue
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def ansible_core_requirements():
    """The distributions ansible-core itself requires (they come with it)."""
    return {canonical(Requirement(r).name) for r in importlib.metadata.requires('ansible-core') or ()
            if 'extra ==' not in r}


def test_the_walk_finds_the_controller_side():
    files = {str(p.relative_to(ROOT)) for p in controller_python_files()}
    assert 'plugins/filter/cluster.py' in files and 'plugins/module_utils/_cluster.py' in files
    assert 'roles/verify/files/busbw_svg.py' in files
    # Target-side code is not the controller's: the all-reduce worker imports torch on the nodes.
    assert 'plugins/module_utils/_allreduce_worker.py' not in files
    assert {'netaddr', 'matplotlib', 'yaml'} <= set(controller_imports())


def test_every_controller_import_is_pinned_for_the_ee_or_comes_with_ansible_core():
    pinned = set(pins(ee_dependency_path('python')))
    provided = pinned | ansible_core_requirements()
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in sorted(controller_imports().items()):
        dists = {canonical(d) for d in distributions.get(module, [module])}
        if not dists & provided:
            missing[module] = (sorted(dists), where)
    assert not missing, 'imported on the controller but not in meta/requirements.txt (the EE): %s' % missing


def collections_used():
    """ns.name of every module, action, role, filter, test and lookup named by FQCN in the roles and playbooks."""
    found = set()
    files = list(ROOT.glob('roles/*/tasks/*.yml')) + list(ROOT.glob('roles/*/handlers/*.yml')) + \
        list(ROOT.glob('roles/*/meta/main.yml')) + list(ROOT.glob('playbooks/*.yml')) + [ROOT / 'site.yml']

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and re.fullmatch(FQCN, key):
                    found.add(key.rsplit('.', 1)[0])
                if key in ('role', 'name') and isinstance(value, str) and re.fullmatch(FQCN, value) and (
                        'role' in node or node.get('ansible.builtin.include_role') or node.get('ansible.builtin.import_role')):
                    found.add(value.rsplit('.', 1)[0])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, str) and re.fullmatch(FQCN, item):
                    found.add(item.rsplit('.', 1)[0])   # roles: [ns.coll.role], collections: lists
                walk(item)
        elif isinstance(node, str):
            for name in re.findall(r'(?:\|\s*|\bis\s+(?:not\s+)?|lookup\(\s*[\'"]|query\(\s*[\'"])(' + FQCN + r')', node):
                found.add(name.rsplit('.', 1)[0])
    for path in files:
        walk(yaml.safe_load(path.read_text()))
    return found


def test_the_collection_scan_sees_fqcns_in_tasks_roles_and_jinja():
    used = collections_used()
    assert {'ansible.builtin', 'dgxspark.sglang'} <= used


def test_every_collection_used_is_in_the_requirements_of_a_project_sync_and_the_ee():
    listed = {entry['name'] if isinstance(entry, dict) else entry
              for entry in (yaml.safe_load((ROOT / 'collections' / 'requirements.yml').read_text()) or {}).get(
                  'collections') or []}
    missing = sorted(collections_used() - set(OWN) - listed)
    assert not missing, 'used by the roles or playbooks, not in collections/requirements.yml: %s' % missing


# ---- the installed collection, as ansible-builder's introspection reads it ---------------------------------

def test_ansible_builders_introspection_of_the_installed_collection_finds_the_same_pins(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / 'collections'))
    env.pop('ANSIBLE_CONFIG', None)
    build = subprocess.run([str(BIN / 'ansible-galaxy'), 'collection', 'build', '--output-path', str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300, check=False, env=env)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(tmp_path.glob('dgxspark-sglang-*.tar.gz'))
    install = subprocess.run([str(BIN / 'ansible-galaxy'), 'collection', 'install', '-p', str(tmp_path / 'collections'),
                              str(tarball)], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    import ansible_builder
    script = pathlib.Path(ansible_builder.__file__).parent / '_target_scripts' / 'introspect.py'
    proc = subprocess.run([sys.executable, str(script), 'introspect', str(tmp_path / 'collections')],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = yaml.safe_load(proc.stdout)
    python = {line.split('  #')[0] for line in found['python']}
    expected = {str(r) for name, r in pins(ROOT / 'meta' / 'requirements.txt').items() if name != 'ansible-core'}
    assert python == expected
    system = {line.split('  #')[0] for line in found['system']}
    assert system == {line for line in (ROOT / 'meta' / 'bindep.txt').read_text().splitlines()
                      if line and not line.startswith('#')}


# ---- requires_ansible ------------------------------------------------------------------------------------

def test_requires_ansible_claims_the_ansible_core_that_is_tested():
    claim = SpecifierSet(yaml.safe_load((ROOT / 'meta' / 'runtime.yml').read_text())['requires_ansible'])
    pinned = Version(next(iter(pins(ROOT / 'meta' / 'requirements.txt')['ansible-core'].specifier)).version)
    running = Version(importlib.metadata.version('ansible-core'))
    assert running == pinned, 'the tests run on ansible-core %s, the pin is %s' % (running, pinned)
    lowest = [Version(s.version) for s in claim if s.operator in ('>=', '==', '~=')]
    assert lowest, 'requires_ansible %s names no lowest version' % claim
    # The oldest ansible-core claimed is the line the unit tests and ansible-test sanity run on, and the pin satisfies it.
    assert (min(lowest).major, min(lowest).minor) == (pinned.major, pinned.minor) and pinned in claim
