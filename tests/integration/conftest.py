"""How the testinfra checks reach the lab: paramiko, one SSH connection per machine for the whole run.

With ``--connection=paramiko`` (molecule/{lab,site}/molecule.yml's verifier options) and no
``--ssh-config``, the hosts and their SSH settings come from the Ansible inventory: the one Molecule
hands over with ``--ansible-inventory``, else the one ansible.cfg names (inventories/lab). Each host
keeps its inventory name (``host.backend.get_hostname()`` is ``lab-spark-01``, ...) and gets an
ssh_config entry, written for this run into a temporary folder and removed after it:
``HostName`` from ``ansible_host``, ``User`` from ``ansible_user``, ``IdentityFile`` from
``ansible_ssh_private_key_file``, and every ``-o`` / ``-i`` / ``-p`` / ``-l`` of
``ansible_ssh_common_args`` and ``ansible_ssh_extra_args``, among them the lab's
``ProxyCommand ip netns exec dgxlab<ID>-ctl nc %h %p``. A lab started with ``DGXSPARK_LAB_ID`` /
``DGXSPARK_LAB_DIR`` writes an inventory with its own names (``lab.py up`` prints its path): pass that
one as ``--ansible-inventory``. ``--hosts`` still picks hosts; ``--ssh-config`` turns all this off.

Any other ``--connection`` (testinfra's ``ansible`` backend included) is left alone.

A lab of a test module's own (``own_lab``): the targets that break a machine or a cluster (memory-test, reboot-test,
fault-test) bring up their own lab with ``lab.py up`` and the module's ``LAB_UP`` arguments (e.g. ``("1",
"--memory-max", "1536M")``), in the lab that ``DGXSPARK_LAB_ID`` / ``DGXSPARK_LAB_DIR`` name, and take it down after the
module; the fixture is the inventory ``lab.py up`` printed. ``lab_sh(node, command)`` runs a command on a machine over
SSH (the lab's key and ProxyCommand).

The lab's registry: the fixture ``lab`` is tests/lab/lab.py as a module (for the lab that ``DGXSPARK_LAB_ID`` /
``DGXSPARK_LAB_DIR`` name), and the fixture ``registry_pulls`` the function ``registry_pulls(reference)``: how many
pulls of it the registry served since it started (one pull: one GET of the image's config blob; tests/lab/README.md).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
_TMPDIRS: list[str] = []
LAB_PY = Path(__file__).resolve().parents[1] / "lab" / "lab.py"
ROOT = Path(__file__).resolve().parents[2]
# A lab started with DGXSPARK_LAB_ID / DGXSPARK_LAB_DIR has its own inventory (`lab.py up` prints its path).
INVENTORY = Path(os.environ.get("DGXSPARK_LAB_INVENTORY") or ROOT / "inventories" / "lab")


def lab_nodes(inventory=None):
    """The hosts of group spark in the lab inventory's hosts.yml, in order (rank order: lab.py sets no spark_node_rank)."""
    import yaml

    hosts = yaml.safe_load((ROOT / (inventory or INVENTORY) / "hosts.yml").read_text())
    return list(hosts["all"]["children"]["spark"]["hosts"])


def site_playbook(*extra):
    """Run site.yml on the lab with EXTRA arguments; the API key where molecule's scenarios keep it."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    creds = "sglang_server_credentials_dir=%s" % (ROOT / "inventories" / "credentials" / "lab")
    return subprocess.run(["ansible-playbook", "site.yml", "-i", str(INVENTORY), "-e", creds, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(name="site_playbook")
def fixture_site_playbook():
    """site_playbook(*extra): site.yml on the lab, as a subprocess result."""
    return site_playbook


def lab_sh(node, command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """COMMAND on lab machine NODE (1, 2, ... or its name) over SSH, as ``lab.py ssh`` runs it."""
    return subprocess.run([sys.executable, str(LAB_PY), "ssh", str(node), command], capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextlib.contextmanager
def extra_vars_file(values):
    """VALUES as a 0600 YAML file for ``-e @FILE``, as secrets come from a vault: never on the command line."""
    handle, path = tempfile.mkstemp(prefix="dgxspark-vars-", suffix=".yml")
    try:
        with os.fdopen(handle, "w") as out:
            yaml.safe_dump(values, out)
        yield "@" + path
    finally:
        os.unlink(path)


@pytest.fixture(name="extra_vars_file")
def fixture_extra_vars_file():
    """extra_vars_file(values): a context manager giving ``@FILE`` for ``-e``, the file removed afterwards."""
    return extra_vars_file


@functools.lru_cache(maxsize=None)
def load_lab():
    """tests/lab/lab.py as a module: the lab's own functions (registry_stats, image_references, node_name, ...)."""
    spec = importlib.util.spec_from_file_location("dgxspark_lab", str(LAB_PY))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registry_pulls(reference: str) -> int:
    """Pulls of REFERENCE (e.g. ``lmsysorg/sglang:v0.5.23-cu130``) that the lab's registry served since it started."""
    pulls = load_lab().registry_stats()["pulls"]
    if reference not in pulls:
        raise KeyError("the lab's registry does not serve %s (it serves %s)" % (reference, ", ".join(pulls) or "nothing"))
    return pulls[reference]


@pytest.fixture(name="lab", scope="session")  # one module, shared (module-scoped fixtures use it too)
def fixture_lab():
    return load_lab()


@contextlib.contextmanager
def own_lab(*up_args, env=None):
    """A lab of a test's own for the ``with`` block: ``lab.py up UP_ARGS`` (the lab ids of the environment), yielding
    the inventory it printed; ``lab.py down`` afterwards, whatever happened (for tests that must break a cluster)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (namespaces, mounts, cgroups)")
    lab = [sys.executable, str(LAB_PY)]
    up = subprocess.run(lab + ["up", *up_args], capture_output=True, text=True, check=False,
                        env=dict(os.environ, **(env or {})))
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        yield Path(up.stdout.strip().splitlines()[-1])
    finally:
        down = subprocess.run(lab + ["down"], capture_output=True, text=True, check=False)
        assert down.returncode == 0, down.stderr


@pytest.fixture(name="own_lab", scope="module")
def fixture_own_lab(request):
    """A lab of the test module's own: ``lab.py up`` with its ``LAB_UP`` arguments; yields the inventory's path (a str);
    ``lab.py down`` after the module."""
    with own_lab(*request.module.LAB_UP) as inventory:
        yield str(inventory)


@pytest.fixture(name="registry_pulls")
def fixture_registry_pulls():
    return registry_pulls


def ssh_config_entry(name: str, hostvars: dict) -> str:
    """One ``Host`` block for an inventory host, from the variables Ansible's ssh connection reads."""
    connection = hostvars.get("ansible_connection", "ssh")
    if connection not in SSH_CONNECTIONS:
        raise pytest.UsageError(
            "%s: ansible_connection=%s, not SSH; run these checks with --connection=ansible" % (name, connection))
    options: list[tuple[str, str]] = [("HostName", str(hostvars.get("ansible_host", name)))]
    user = hostvars.get("ansible_user") or hostvars.get("ansible_ssh_user")
    if user:
        options.append(("User", str(user)))
    if hostvars.get("ansible_port"):
        options.append(("Port", str(hostvars["ansible_port"])))
    key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if key:
        options.append(("IdentityFile", str(key)))
    args = shlex.split(" ".join(str(hostvars.get(v) or "")
                                for v in ("ansible_ssh_common_args", "ansible_ssh_extra_args")))
    flags = {"-i": "IdentityFile", "-p": "Port", "-l": "User"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags or arg == "-o":
            if i + 1 == len(args):
                raise pytest.UsageError("%s: %s without a value in its ssh args" % (name, arg))
            value, i = args[i + 1], i + 2
        elif arg[:2] in flags or arg[:2] == "-o":
            arg, value, i = arg[:2], arg[2:], i + 1
        else:
            raise pytest.UsageError("%s: ssh argument %r has no ssh_config equivalent here" % (name, arg))
        if arg == "-o":  # -o Key=value, or -o "Key value"
            pair = re.split(r"\s*=\s*|\s+", value.strip(), maxsplit=1)
            if len(pair) != 2:
                raise pytest.UsageError("%s: ssh option -o %r has no value" % (name, value))
            options.append((pair[0], pair[1].strip()))
        else:
            options.append((flags[arg], value))
    return "Host %s\n" % name + "".join("  %s %s\n" % kv for kv in options)


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if getattr(opt, "connection", None) != "paramiko" or getattr(opt, "ssh_config", None):
        return
    from testinfra.utils.ansible_runner import AnsibleRunner

    runner = AnsibleRunner.get_runner(opt.ansible_inventory)
    names = opt.hosts.split(",") if opt.hosts else runner.get_hosts("all")
    names = [n.split("://", 1)[-1].rsplit("@", 1)[-1] for n in names]
    if not opt.hosts:  # the lab's monitoring host is the controller itself (ansible_connection local): no SSH there
        names = [n for n in names if runner.get_variables(n).get("ansible_connection") != "local"]
    text = "# Written by tests/integration/conftest.py from the Ansible inventory %s\n" % (
        opt.ansible_inventory or "(ansible.cfg's)")
    text += "".join(ssh_config_entry(n, runner.get_variables(n)) for n in names)
    folder = tempfile.mkdtemp(prefix="dgxspark-testinfra-")
    _TMPDIRS.append(folder)
    path = Path(folder) / "ssh_config"
    path.write_text(text)
    path.chmod(0o600)
    opt.ssh_config = str(path)
    opt.hosts = ",".join("paramiko://" + n for n in names)


def pytest_report_header(config: pytest.Config) -> str | None:
    if _TMPDIRS:
        return "testinfra: %s through paramiko, ssh_config %s" % (config.option.hosts, config.option.ssh_config)
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the SSH connections (this ends each ProxyCommand's nc), then drop the ssh_config."""
    try:
        from testinfra.host import Host
    except ImportError:
        return
    hosts = [h for group in getattr(Host, "_hosts_cache", {}).values() for h in group]
    for host in hosts + list(getattr(Host, "_host_cache", {}).values()):
        client = vars(host.backend).get("client")  # paramiko's, only once a command has run
        if client is not None:
            client.close()
    while _TMPDIRS:
        shutil.rmtree(_TMPDIRS.pop(), ignore_errors=True)
