"""The sglang_server role and the SGLang checks of preflight, run for real by ansible-playbook on this machine.

1. The role in check mode with --diff on two 2-node groups of local hosts (one per runtime): the unit each rank
   would get is read back from the diff. Same flags in both runtimes (only the runner differs), one flag per line,
   each rank its own --node-rank, --config present, no secret value anywhere in the output.
   Preflight runs first, as in site.yml: this machine has no GPU and no CX7 twins, so the run allows a missing driver
   and missing interfaces (both are reported in the plan's problems).
   With RDMA devices (the probe reads a sysfs tree shaped like a Spark's): the unit gets --device /dev/infiniband,
   the same flags as the all-reduce's container, and a run with --tags sglang_server renders the very same unit;
   with preflight_probe false it fails before any unit is written.
2. preflight's memory fit, with a model folder of sparse *.safetensors files (140 GB, a 70B model in bf16) and
   gpu_info results from the GB10 capture: fits two Sparks, fails one naming the node count it needs.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster, _staging
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, codes
from ansible_collections.dgxspark.sglang.plugins.module_utils._allreduce import container_argv
from ansible_collections.dgxspark.sglang.plugins.module_utils._rdma import container_rdma_args
from ansible_collections.dgxspark.sglang.tests.unit import sysfs
from ansible_collections.dgxspark.sglang.tests.unit.standin import lab_module

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / 'roles' / 'sglang_server'
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'
HF_TOKEN = 'hf_TESTtokenNEVERshown0123456789'
MODEL = 'Qwen/Qwen2.5-72B-Instruct'
API_KEY = 'sk-test-key-NEVER-shown-4242'
# gpu_info's result for a DGX Spark (GB10): memory_total_mib from MemTotal 127600748 kB
# (shared/fixtures/nvidia-smi/README.md), as gpu_info computes it.
GB10_INFO = {'gpu_count': 1, 'driver_version': '580.95.05',
             'gpus': [{'name': 'NVIDIA GB10', 'unified_memory': True, 'memory_total_mib': 124610,
                       'memory_available_mib': 115787}]}


@pytest.fixture(scope='module', autouse=True)
def _have_ansible_playbook():
    if not PLAYBOOK_BIN.exists():
        pytest.skip('ansible-playbook not next to %s' % sys.executable)


def run(tmp_path, inventory, play, *args):
    (tmp_path / 'hosts.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(play)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_CALLBACK_RESULT_FORMAT='json',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'), ANSIBLE_REMOTE_TEMP=str(tmp_path / 'rtmp'))
    proc = subprocess.run([str(PLAYBOOK_BIN), '-i', str(tmp_path / 'hosts.yml'), str(tmp_path / 'play.yml')] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def local_group(tmp_path, names, **group_vars):
    group_vars.setdefault('spark_cx7_subnets', ['192.168.100.0/24', '192.168.101.0/24'])
    return {'hosts': {name: {'ansible_host': '192.0.2.%d' % (11 + i)} for i, name in enumerate(names)},
            'vars': group_vars}


# ---- 1. the role, check mode --------------------------------------------------------------------------

@pytest.fixture(name='hub', scope='module')
def fixture_hub(tmp_path_factory):
    """The lab's hub stand-in, serving the lab's tiny model under the id these tests deploy."""
    standin = lab_module('hub_standin')
    repos = tmp_path_factory.mktemp('hub')
    lab_module('hub_model').write_model(repos / MODEL)
    server = standin.make_server(repos)
    standin.serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def role_vars(tmp_path, group, **extra):
    common = {
        'preflight_group': group,
        'sglang_server_model': MODEL,
        'sglang_server_args': {'mem-fraction-static': 0.75, 'chunked-prefill-size': 8192, 'schedule-policy': 'lpm',
                               'json-model-override-args': {'rope_scaling': {'type': 'yarn', 'factor': 4.0}},
                               'trust-remote-code': True, 'tp-size': 2},
        'sglang_server_hf_token': HF_TOKEN,
        'sglang_server_credentials_dir': str(tmp_path / 'credentials'),
        'sglang_server_config_dir': str(tmp_path / 'etc'),
        'sglang_server_cache_dir': str(tmp_path / 'cache'),
    }
    common.update(extra)
    return common


def units_by_host(output):
    """{host: unit text} from the --diff of the template task (one such task per play)."""
    units = {}
    for task in output.split('TASK [dgxspark.sglang.sglang_server : Write the systemd unit of this rank]')[1:]:
        parts = re.split(r'\n(?:changed|ok): \[([^\]]+)\]', task.split('TASK [', 1)[0])
        for text, host in zip(parts[0::2], parts[1::2]):
            lines = [line[1:] for line in text.splitlines() if line.startswith('+') and not line.startswith('+++')]
            units[host] = '\n'.join(lines) + '\n'
    return units


def exec_start(unit):
    """The ExecStart= lines of a unit, one entry per line, continuations stripped."""
    block = unit.split('ExecStart=', 1)[1]
    lines = []
    for line in block.splitlines():
        lines.append(line.strip().rstrip('\\').strip())
        if not line.endswith('\\'):
            break
    return lines


@pytest.fixture(scope='module')
def rendered(tmp_path_factory, hub):
    tmp_path = tmp_path_factory.mktemp('render')
    inventory = {'all': {
        'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
        'children': {
            'ctr': local_group(tmp_path, ['ctr-1', 'ctr-2'], **role_vars(
                tmp_path, 'ctr', sglang_server_api_key=API_KEY, spark_hf_endpoint=hub.endpoint,
                sglang_server_container_volumes=['/var/lib/venv:/var/lib/venv:ro', '/opt/x:/opt/x'])),
            # The test venv's Python has SGLang's wheel: the role's version probe reads it there.
            'nat': local_group(tmp_path, ['nat-1', 'nat-2'], **role_vars(
                tmp_path, 'nat', spark_hf_endpoint=hub.endpoint, sglang_server_runtime='native', sglang_server_native_python=sys.executable,
                sglang_server_native_pythonpath='/opt/sglang-standin')),
        }}}
    play = ''.join("""
- name: The role on group {0}
  hosts: {0}
  gather_facts: false
  roles:
    - role: dgxspark.sglang.preflight
      preflight_allow_missing_driver: true
      preflight_fail_on_missing_interface: false
    - dgxspark.sglang.sglang_server
""".format(group) for group in ('ctr', 'nat'))
    rc, out = run(tmp_path, inventory, play, '--check', '--diff')
    generated = (tmp_path / 'credentials' / 'nat-api-key')
    return rc, out, units_by_host(out), generated


def test_check_mode_run_succeeds_for_both_runtimes(rendered):
    rc, out, units, _generated = rendered
    assert rc == 0, out
    assert sorted(units) == ['ctr-1', 'ctr-2', 'nat-1', 'nat-2'], out
    assert 'would restart with the whole group; changed here: unit, server.yaml' in out


def test_each_rank_gets_its_own_node_rank_and_the_same_group_flags(rendered):
    _rc, out, units, _generated = rendered
    for group in ('ctr', 'nat'):
        for rank in (0, 1):
            lines = exec_start(units['%s-%d' % (group, rank + 1)])
            assert '--node-rank %d' % rank in lines, out
            assert '--nnodes 2' in lines and '--dist-init-addr 192.168.100.11:20000' in lines
            assert '--tp-size 2' in lines and '--host 0.0.0.0' in lines and '--port 30000' in lines
            assert '--model-path Qwen/Qwen2.5-72B-Instruct' in lines


def test_same_flags_in_both_runtimes_only_the_runner_differs(rendered):
    _rc, _out, units, _generated = rendered
    for rank in (1, 2):
        ctr, nat = exec_start(units['ctr-%d' % rank]), exec_start(units['nat-%d' % rank])
        ctr_flags = ctr[ctr.index('python3 -m sglang.launch_server') + 1:]
        assert nat[0] == '%s -m sglang.launch_server' % sys.executable
        # --config differs only by the folder given to each group in this test.
        assert [f.replace('/nat/', '/x/') for f in nat[1:]] == [f.replace('/ctr/', '/x/') for f in ctr_flags] or \
            [re.sub(r'--config \S+', '--config X', f) for f in nat[1:]] == \
            [re.sub(r'--config \S+', '--config X', f) for f in ctr_flags]
    ctr = exec_start(units['ctr-1'])
    for part in ('/usr/bin/docker run --rm --name sglang', '--gpus all', '--network host', '--ipc host',
                 '--ulimit memlock=-1', 'lmsysorg/sglang:v0.5.23-cu130'):
        assert part in ctr
    # --shm-size does nothing beside --ipc host (the host's /dev/shm): one of them only.
    assert not any(line.startswith('--shm-size') for line in ctr)
    # No node keeps the Hugging Face token: the unit runs offline, at the commit preflight pinned.
    assert not any('secrets.env' in line for line in ctr) and '--env HF_HUB_OFFLINE=1' in ctr
    assert any(line.endswith('server.yaml:ro') for line in ctr)
    # sglang_server_container_volumes: one --volume each, in order, before the image.
    image = ctr.index('lmsysorg/sglang:v0.5.23-cu130')
    assert ctr[image - 2:image] == ['--volume /var/lib/venv:/var/lib/venv:ro', '--volume /opt/x:/opt/x']


def test_one_flag_per_line_config_first_extras_sorted(rendered):
    _rc, _out, units, _generated = rendered
    lines = exec_start(units['nat-1'])[1:]
    assert all(line.startswith('--') and line.count(' --') == 0 for line in lines), lines
    names = [line.split()[0] for line in lines]
    assert names[:9] == ['--model-path', '--revision', '--tp-size', '--nnodes', '--node-rank', '--dist-init-addr',
                         '--host', '--port', '--config']
    # The commit preflight pinned from the hub's answer (no record on these nodes yet).
    assert re.fullmatch(r'--revision [0-9a-f]{40}', lines[1])
    extras = names[9:]
    assert extras == sorted(extras) == ['--chunked-prefill-size', '--enable-metrics', '--json-model-override-args',
                                        '--mem-fraction-static', '--schedule-policy', '--trust-remote-code']
    # JSON is passed compact, quoted for systemd.
    assert '--json-model-override-args "{\\"rope_scaling\\":{\\"factor\\":4.0,\\"type\\":\\"yarn\\"}}"' in lines


def test_both_runtimes_advertise_the_node_s_cx7_address(rendered):
    # SGLang's get_local_ip_auto() takes SGLANG_HOST_IP first; without it, the route to 8.8.8.8 (the management port).
    _rc, _out, units, _generated = rendered
    for rank in (1, 2):
        address = '192.168.100.%d' % (10 + rank)
        assert '--env SGLANG_HOST_IP=%s' % address in exec_start(units['ctr-%d' % rank])
        assert 'Environment=SGLANG_HOST_IP=%s' % address in units['nat-%d' % rank].splitlines()


def test_native_unit_environment_and_hardening(rendered):
    _rc, _out, units, _generated = rendered
    unit = units['nat-2']
    for line in ('Environment=PYTHONPATH=/opt/sglang-standin', 'NoNewPrivileges=yes', 'ProtectSystem=strict',
                 'User=sglang', 'Group=sglang', 'CapabilityBoundingSet=', 'PrivateTmp=yes', 'ProtectHome=yes',
                 'Restart=always', 'KillMode=mixed'):
        assert line in unit.splitlines(), unit
    # The model cache is the one folder outside the state folder that SGLang may write.
    assert re.search(r'^ReadWritePaths=\S+/cache$', unit, re.M)
    assert re.search(r'^Environment=SGLANG_LOGGING_CONFIG_PATH=\S+/etc/logging\.json$', unit, re.M)
    # What CUDA, Triton and NCCL need (the lab has no GPU to show it): reasons beside each in the template.
    assert 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK' in unit.splitlines()
    for directive in ('MemoryDenyWriteExecute', 'DeviceAllow', 'DevicePolicy', 'ProtectClock', 'SystemCallFilter=@'):
        assert not re.search(r'^%s' % directive, unit, re.M), directive
    assert re.search(r'^EnvironmentFile=\S+/nccl\.env$', unit, re.M)
    assert 'secrets.env' not in unit and 'Environment=HF_HUB_OFFLINE=1' in unit.splitlines()
    assert not re.search(r"^PrivateDevices=", unit, re.M)
    assert unit.startswith('#\n# Ansible managed')


def test_container_is_not_privileged_and_reads_the_logging_config(rendered):
    _rc, _out, units, _generated = rendered
    for rank in (1, 2):
        unit = units['ctr-%d' % rank]
        lines = exec_start(unit)
        assert not any('--privileged' in line or '--cap-add' in line for line in lines)
        assert '--security-opt no-new-privileges' in lines
        assert any(line.startswith('--env SGLANG_LOGGING_CONFIG_PATH=') and line.endswith('/logging.json')
                   for line in lines)
        assert any(line.startswith('--volume ') and line.endswith('/logging.json:ro') for line in lines)
        # The container runs as root inside Docker: no User= on the unit.
        assert not re.search(r'^User=', unit, re.M)


def test_no_secret_in_any_unit_or_in_the_output(rendered):
    _rc, out, units, generated = rendered
    assert generated.exists() and oct(generated.stat().st_mode & 0o777) == '0o600'
    key = generated.read_text().strip()
    assert re.fullmatch(r'[A-Za-z0-9]{48}', key)
    for secret in (HF_TOKEN, API_KEY, key):
        assert secret not in out
        for unit in units.values():
            assert secret not in unit
    assert '--api-key' not in out


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='systemd-analyze not installed')
def test_native_unit_passes_systemd_analyze_verify(rendered, tmp_path):
    _rc, _out, units, _generated = rendered
    path = tmp_path / 'source'
    path.write_text(units['nat-1'])
    proc = subprocess.run(['systemd-analyze', 'verify', '%s:sglang.service' % path], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_container_without_rdma_devices_gets_memlock_but_no_device(rendered):
    # This machine has no CX7: the plan's probe found no RDMA device, and docker would refuse a missing device.
    _rc, _out, units, _generated = rendered
    for rank in (1, 2):
        lines = exec_start(units['ctr-%d' % rank])
        assert '--ulimit memlock=-1' in lines
        assert not any('/dev/infiniband' in line for line in lines)


# ---- 1b. the role with RDMA devices in the plan, under --tags and with the probe switched off ------------------

RDMA_DEVICES = ['rocep1s0f1', 'roceP2p1s0f1']

RDMA_PLAY = """
- name: The role on a group whose probe finds RDMA devices
  hosts: rdma
  gather_facts: false
  module_defaults:
    dgxspark.sglang.connectx_info:
      sysfs_root: {sysfs}
  roles:
    - role: dgxspark.sglang.preflight
      preflight_allow_missing_driver: true
      preflight_fail_on_missing_interface: false
    - dgxspark.sglang.sglang_server
"""


@pytest.fixture(scope='module')
def rdma_runs(tmp_path_factory, hub):
    """The same play three times: full, --tags sglang_server, and --tags sglang_server with preflight_probe false."""
    tmp_path = tmp_path_factory.mktemp('rdma')
    tree = sysfs.build_tree(str(tmp_path / 'sys'), sysfs.spark_pair())
    inventory = {'all': {
        'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
        'children': {'rdma': local_group(tmp_path, ['rdma-1', 'rdma-2'],
                                         **role_vars(tmp_path, 'rdma', sglang_server_api_key=API_KEY,
                                                     spark_hf_endpoint=hub.endpoint))}}}
    play = RDMA_PLAY.format(sysfs=tree)
    runs = {}
    for name, args in (('full', ()), ('tags', ('--tags', 'sglang_server')),
                       ('no-probe', ('--tags', 'sglang_server', '-e', '{"preflight_probe": false}'))):
        (tmp_path / name).mkdir()
        rc, out = run(tmp_path / name, inventory, play, '--check', '--diff', *args)
        runs[name] = (rc, out, units_by_host(out))
    return runs


def rdma_lines(lines):
    """The RDMA flags among a unit's ExecStart lines, as tokens."""
    return [token for line in lines if line.split()[0] in ('--ulimit', '--device') for token in line.split()]


def test_plan_with_rdma_devices_gives_the_container_dev_infiniband(rdma_runs):
    rc, out, units = rdma_runs['full']
    assert rc == 0, out[-4000:]
    assert sorted(units) == ['rdma-1', 'rdma-2'], out[-4000:]
    for host in units:
        lines = exec_start(units[host])
        assert '--device /dev/infiniband' in lines and '--ulimit memlock=-1' in lines
        # the flags are the one function's, from the devices the probe put in the plan
        assert rdma_lines(lines) == container_rdma_args(RDMA_DEVICES)


def test_the_allreduce_container_gets_the_same_rdma_flags_as_the_sglang_unit(rdma_runs):
    _rc, _out, units = rdma_runs['full']
    unit_flags = rdma_lines(exec_start(units['rdma-1']))
    params = {'docker_path': 'docker', 'image': 'img', 'env_file': None, 'env': {}, 'rdma_devices': RDMA_DEVICES,
              'backend': 'nccl', 'master_addr': '192.168.100.11', 'master_port': 29511, 'nnodes': 2, 'node_rank': 0,
              'local_ranks': None, 'warmup_iters': 1, 'iters': 1, 'dtype': 'float32', 'timeout': 60}
    argv = container_argv(params, [8], '/tmp/w.py', 'rdma-1', 'n')
    start = argv.index('--ulimit')
    assert argv[start:start + len(unit_flags)] == unit_flags == ['--ulimit', 'memlock=-1', '--device', '/dev/infiniband']
    assert '--device' not in container_argv(dict(params, rdma_devices=[]), [8], '/tmp/w.py', 'rdma-1', 'n')


def test_tags_sglang_server_renders_the_same_unit_as_a_full_run(rdma_runs):
    # preflight's plan and probe are tagged always: --tags sglang_server still probes, so the unit is the same.
    rc, out, units = rdma_runs['tags']
    assert rc == 0, out[-4000:]
    assert units == rdma_runs['full'][2]
    assert '--device /dev/infiniband' in exec_start(units['rdma-2'])


def test_without_the_probe_the_role_fails_before_writing_a_unit(rdma_runs):
    rc, out, units = rdma_runs['no-probe']
    assert rc != 0
    assert units == {}
    assert 'Write the systemd unit of this rank' not in out
    assert 'spark_cluster_plan is at stage description' in out


# ---- 2. memory fit --------------------------------------------------------------------------------------

FIT_PLAY = """
- name: Memory fit of group {0}
  hosts: {0}
  gather_facts: false
  tasks:
    - name: Take the probed plan that the test built (a GB10 on every node)
      ansible.builtin.set_fact:
        spark_cluster_plan: "{{{{ plans[preflight_group] }}}}"
    - name: Check the memory fit
      block:
        - name: Run preflight's memory fit
          ansible.builtin.include_role:
            name: dgxspark.sglang.preflight
            tasks_from: memory_fit
      rescue:
        - name: Print why it failed
          ansible.builtin.debug:
            msg: "FAILED {{{{ inventory_hostname }}}}: {{{{ ansible_failed_result.msg }}}}"
"""


def probed_plan(group, names, model):
    """The plan of a group of GB10 nodes at stage probed, as preflight would publish it (each node's staging probe
    lists the model folder)."""
    hosts = [{'name': name, 'vars': {'ansible_host': '192.0.2.%d' % (11 + i), 'sglang_server_model': model,
                                     'spark_cx7_subnets': ['192.168.100.0/24', '192.168.101.0/24']}}
             for i, name in enumerate(names)]
    plan = _cluster.plan_cluster({'cluster': group, 'hosts': hosts, 'gpus_per_node': 1})
    gpu = dict(GB10_INFO, driver_state='ready', dgx_os=True)
    return _cluster.complete_plan(plan, {name: {'gpu': gpu, 'cx7': {'interfaces': []}} for name in names},
                                  staging={name: {'local': _staging.scan_local(model)} for name in names})


def test_memory_fit_of_a_local_70b_model(tmp_path):
    model = tmp_path / 'Llama-70B'
    model.mkdir()
    for i in range(4):  # 4 x 35 GB, sparse: no disk used
        with open(model / ('model-%05d-of-00004.safetensors' % (i + 1)), 'wb') as handle:
            handle.truncate(35 * 1000 ** 3)
    (model / 'config.json').write_text('{}')
    groups = {'pair': (['pair-1', 'pair-2'], str(model)), 'solo': (['solo-1'], str(model))}
    plans = {group: probed_plan(group, names, path) for group, (names, path) in groups.items()}
    assert plans['pair']['groups']['pair']['model']['weights_bytes'] == 140 * 1000 ** 3
    inventory = {'all': {
        'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'plans': plans},
        'children': {group: {'hosts': {name: {} for name in names}, 'vars': {'preflight_group': group}}
                     for group, (names, _path) in groups.items()}}}
    rc, out = run(tmp_path, inventory, ''.join(FIT_PLAY.format(g) for g in groups))
    assert rc == 0, out
    assert 'The weights (140.0 GB) fit: 2 node(s) x 130.7 GB (pair-1, the smallest) x mem-fraction-static 0.75 = 196.0 GB' in out
    assert 'FAILED solo-1: sglang_server_model %s does not fit group solo' % model in out
    assert 'run it on 2 nodes' in out
    assert 'FAILED pair' not in out
    # A folder missing on a node is a problem of the probed plan, before any memory is counted.
    with pytest.raises(ProblemsError) as exc:
        probed_plan('gone', ['gone-1'], str(tmp_path / 'missing'))
    assert codes(exc.value.problems) == ['model-path-missing']
    assert '%s does not exist on gone-1' % (tmp_path / 'missing') in exc.value.problems[0]['message']


# ---- argument specs -------------------------------------------------------------------------------------

def test_argument_specs_hide_the_secrets():
    # The generic specs-equal-defaults check is tests/unit/roles/test_argument_specs.py.
    options = yaml.safe_load((ROLE / 'meta' / 'argument_specs.yml').read_text())['argument_specs']['main']['options']
    assert 'sglang_server_model' in options
    assert options['sglang_server_api_key'].get('no_log') and options['sglang_server_hf_token'].get('no_log')
