"""Bad cluster descriptions fail in preflight, before the first connection: the real site.yml, run for real.

Every case runs `ansible-playbook site.yml` against an inventory whose hosts sit at unreachable addresses (loopback,
SSH port 1): a check that needed a connection would show up as UNREACHABLE instead of the problem. Each case is a
value SGLang, NCCL or the network really rejects, or a conflict; the run must fail naming the variable, the problem's
[code] and a Fix. Where SGLang 0.5.23's own parser (from its wheel in the test venv) can judge a case, it must reject
the case too.
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / 'ansible-playbook'
GOOD_GROUP_VARS = {
    'spark_cx7_interfaces': ['enp1s0f1np1', 'enP2p1s0f1np1'],
    'spark_cx7_subnets': ['192.168.100.0/24', '192.168.101.0/24'],
    'sglang_server_model': 'Qwen/Qwen2.5-0.5B-Instruct',
    'sglang_server_args': {'mem-fraction-static': 0.8},
    # The lab's credentials folder is never written: a case that got past preflight would fail UNREACHABLE first.
    'ansible_port': 1,
    'ansible_ssh_common_args': '-o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
}
HOSTS = {'spark-01': {'ansible_host': '127.0.0.1'}, 'spark-02': {'ansible_host': '127.0.0.2'}}


def args(**flags):
    return {'sglang_server_args': dict(GOOD_GROUP_VARS['sglang_server_args'], **flags)}


def nccl(**extra):
    return {'nccl_env_extra': extra}


# (id, group vars to merge, host vars to merge {host: {...}}, [codes], variable named, SGLang args its parser must reject)
CASES = [
    # -- the CX7 network ----------------------------------------------------------------------------------
    ('same-subnet-twice', {'spark_cx7_subnets': ['192.168.100.0/24', '192.168.100.0/24']}, {}, ['cx7-subnet-twice'], 'spark_cx7_subnets'),
    ('overlapping-subnets', {'spark_cx7_subnets': ['192.168.100.0/24', '192.168.100.0/23']}, {}, ['cx7-subnet-overlap'], 'spark_cx7_subnets'),
    ('ipv6-subnet', {'spark_cx7_subnets': ['fd00:100::/64', '192.168.101.0/24']}, {}, ['cx7-subnet-ipv6'], 'spark_cx7_subnets'),
    ('subnet-host-bits', {'spark_cx7_subnets': ['192.168.100.5/24', '192.168.101.0/24']}, {}, ['cx7-subnet-host-bits'], 'spark_cx7_subnets'),
    ('subnet-without-prefix', {'spark_cx7_subnets': ['192.168.100.0', '192.168.101.0/24']}, {}, ['cx7-subnet-invalid'], 'spark_cx7_subnets'),
    ('subnet-not-an-address', {'spark_cx7_subnets': ['192.168.300.0/24', '192.168.101.0/24']}, {}, ['cx7-subnet-invalid'], 'spark_cx7_subnets'),
    ('one-subnet-two-twins', {'spark_cx7_subnets': ['192.168.100.0/24']}, {}, ['cx7-subnets-count'], 'spark_cx7_subnets'),
    ('subnets-unset', {'spark_cx7_subnets': None}, {}, ['cx7-subnets-not-list'], 'spark_cx7_subnets'),
    ('subnets-a-string', {'spark_cx7_subnets': '192.168.100.0/24'}, {}, ['cx7-subnets-not-list'], 'spark_cx7_subnets'),
    ('subnet-too-small-for-rank-addresses', {'spark_cx7_subnets': ['192.168.100.0/29', '192.168.101.0/24']}, {},
     ['cx7-subnet-too-small'], 'spark_cx7_subnets'),
    ('management-port-as-twin', {'spark_cx7_interfaces': ['enp1s0f1np1', 'enP7s7']}, {}, ['cx7-interface-not-cx7'], 'spark_cx7_interfaces'),
    ('wifi-as-twin', {'spark_cx7_interfaces': ['wlP9s9', 'enP2p1s0f1np1']}, {}, ['cx7-interface-not-cx7'], 'spark_cx7_interfaces'),
    ('twin-listed-twice', {'spark_cx7_interfaces': ['enp1s0f1np1', 'enp1s0f1np1']}, {}, ['cx7-interface-twice'], 'spark_cx7_interfaces'),
    ('interfaces-a-string', {'spark_cx7_interfaces': 'enp1s0f1np1'}, {}, ['cx7-interfaces-not-list'], 'spark_cx7_interfaces'),
    ('interface-name-too-long', {'spark_cx7_interfaces': ['enp1s0f1np1', 'enP2p1s0f1np1abcdef']}, {}, ['cx7-interface-not-cx7'],
     'spark_cx7_interfaces'),
    ('address-outside-subnet', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.100.12', '192.168.102.12']}},
     ['cx7-address-outside-subnet'], 'spark_cx7_addresses'),
    ('addresses-swapped', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.101.12', '192.168.100.12']}},
     ['cx7-addresses-order'], 'spark_cx7_addresses'),
    ('network-address', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.100.0', '192.168.101.12']}},
     ['cx7-address-reserved'], 'spark_cx7_addresses'),
    ('broadcast-address', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.100.12', '192.168.101.255']}},
     ['cx7-address-reserved'], 'spark_cx7_addresses'),
    ('address-on-two-hosts', {}, {'spark-01': {'spark_cx7_addresses': ['192.168.100.30', '192.168.101.30']},
                                  'spark-02': {'spark_cx7_addresses': ['192.168.100.30', '192.168.101.31']}},
     ['cx7-address-twice'], 'spark_cx7_addresses'),
    ('computed-address-taken', {}, {'spark-01': {'spark_cx7_addresses': ['192.168.100.12', '192.168.101.12']}},
     ['cx7-address-clash'], 'spark_cx7_addresses'),
    ('one-address-two-twins', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.100.12']}}, ['cx7-addresses-count'],
     'spark_cx7_addresses'),
    ('address-a-host-name', {}, {'spark-02': {'spark_cx7_addresses': ['spark-02', '192.168.101.12']}}, ['cx7-address-invalid'],
     'spark_cx7_addresses'),
    ('address-with-other-prefix', {}, {'spark-02': {'spark_cx7_addresses': ['192.168.100.12/16', '192.168.101.12']}},
     ['cx7-address-prefix'], 'spark_cx7_addresses'),
    ('management-address-twice', {}, {'spark-02': {'ansible_host': '127.0.0.1'}}, ['management-address-twice'], 'ansible_host'),
    ('host-vars-override-of-subnets', {}, {'spark-02': {'spark_cx7_subnets': ['192.168.200.0/24', '192.168.201.0/24']}},
     ['host-vars-disagree'], 'spark_cx7_subnets'),
    ('host-vars-override-of-mtu', {}, {'spark-02': {'cx7_network_mtu': 1500}}, ['host-vars-disagree'], 'cx7_network_mtu'),
    ('mtu-too-large', {'cx7_network_mtu': 16000}, {}, ['mtu-invalid'], 'cx7_network_mtu'),
    ('mtu-quoted', {'cx7_network_mtu': '9000'}, {}, ['mtu-invalid'], 'cx7_network_mtu'),
    ('mtu-zero', {'cx7_network_mtu': 0}, {}, ['mtu-invalid'], 'cx7_network_mtu'),
    ('speed-negative', {'spark_cx7_expected_speed_mbps': -1}, {}, ['speed-invalid'], 'spark_cx7_expected_speed_mbps'),
    ('topology-ring', {'spark_cx7_topology': 'ring'}, {}, ['topology-invalid'], 'spark_cx7_topology'),
    ('allowed-cidr-invalid', {'spark_allowed_cidrs': ['10.0.0.0/33']}, {}, ['cidr-invalid'], 'spark_allowed_cidrs'),
    # -- ranks and ports ----------------------------------------------------------------------------------
    ('rank-on-one-host', {}, {'spark-01': {'spark_node_rank': 0}}, ['rank-partial'], 'spark_node_rank'),
    ('rank-twice', {}, {'spark-01': {'spark_node_rank': 0}, 'spark-02': {'spark_node_rank': 0}}, ['rank-twice'], 'spark_node_rank'),
    ('rank-quoted', {}, {'spark-01': {'spark_node_rank': '0'}, 'spark-02': {'spark_node_rank': 1}}, ['rank-invalid'], 'spark_node_rank'),
    ('rank-gap', {}, {'spark-01': {'spark_node_rank': 0}, 'spark-02': {'spark_node_rank': 2}}, ['rank-invalid'], 'spark_node_rank'),
    ('rank-negative', {}, {'spark-01': {'spark_node_rank': -1}, 'spark-02': {'spark_node_rank': 0}}, ['rank-invalid'], 'spark_node_rank'),
    ('dist-init-port-privileged', {'spark_dist_init_port': 80}, {}, ['port-invalid'], 'spark_dist_init_port'),
    ('dist-init-port-quoted', {'spark_dist_init_port': '20000'}, {}, ['port-invalid'], 'spark_dist_init_port'),
    ('http-port-70000', {'sglang_server_port': 70000}, {}, ['port-invalid'], 'sglang_server_port'),
    ('dist-init-port-is-http-port', {'spark_dist_init_port': 30000}, {}, ['port-clash'], 'spark_dist_init_port'),
    # -- parallelism ---------------------------------------------------------------------------------------
    ('tp-3-on-2-gpus', args(**{'tp-size': 3}), {}, ['tp-size-too-large'], "sglang_server_args['tp-size']"),
    ('tp-not-divisible-by-nodes', dict(args(**{'tp-size': 3}), preflight_expected_gpus_per_node=2), {},
     ['tp-size-not-divisible'], "sglang_server_args['tp-size']"),
    ('tp-larger-than-gpus', {'sglang_server_tp_size': 4}, {}, ['tp-size-too-large'], 'sglang_server_tp_size'),
    ('pp-larger-than-gpus', args(**{'pp-size': 4}), {}, ['pp-size-too-large'], "sglang_server_args['pp-size']"),
    ('tp-a-word', {'sglang_server_tp_size': 'two'}, {}, ['tp-size-invalid'], 'sglang_server_tp_size'),
    ('tp-set-twice', dict(args(**{'tp-size': 2}), sglang_server_tp_size=2), {}, ['tp-size-twice'], 'sglang_server_tp_size'),
    ('gpus-per-node-zero', {'preflight_expected_gpus_per_node': 0}, {}, ['gpus-per-node-invalid'], 'preflight_expected_gpus_per_node'),
    # -- the model and the secrets -------------------------------------------------------------------------------
    ('model-empty', {'sglang_server_model': ''}, {}, ['model-missing'], 'sglang_server_model'),
    ('model-unset', {'sglang_server_model': None}, {}, ['model-missing'], 'sglang_server_model'),
    ('model-with-a-space', {'sglang_server_model': 'Qwen/Qwen 2.5'}, {}, ['model-invalid'], 'sglang_server_model'),
    ('model-revision-with-a-space', {'sglang_server_model_revision': 'main branch'}, {}, ['model-revision-invalid'],
     'sglang_server_model_revision'),
    ('model-size-negative', {'sglang_server_model_size_gb': -5}, {}, ['model-size-invalid'], 'sglang_server_model_size_gb'),
    ('memory-reserve-not-a-number', {'sglang_server_memory_reserve_gib': '16 GiB'}, {}, ['memory-reserve-invalid'],
     'sglang_server_memory_reserve_gib'),
    ('model-source-unknown', {'spark_model_source_host': 'spark-09'}, {}, ['model-source-unknown'], 'spark_model_source_host'),
    ('hf-token-placeholder', {'sglang_server_hf_token': '<your-hf-token>'}, {}, ['secret-placeholder'], 'sglang_server_hf_token'),
    ('hf-token-with-a-space', {'sglang_server_hf_token': 'hf_abc def'}, {}, ['secret-invalid'], 'sglang_server_hf_token'),
    ('api-key-placeholder', {'sglang_server_api_key': '<your-api-key>'}, {}, ['secret-placeholder'], 'sglang_server_api_key'),
    ('api-key-short', {'sglang_server_api_key': 'abc123'}, {}, ['secret-too-short'], 'sglang_server_api_key'),
    ('runtime-podman', {'sglang_server_runtime': 'podman'}, {}, ['runtime-invalid'], 'sglang_server_runtime'),
    ('service-name-with-suffix', {'sglang_server_service_name': 'sglang.service'}, {}, ['service-name-invalid'],
     'sglang_server_service_name'),
    ('nccl-env-file-relative', {'nccl_env_file': 'nccl.env'}, {}, ['path-invalid'], 'nccl_env_file'),
    ('listen-address-with-port', {'sglang_server_host': '0.0.0.0:30000'}, {}, ['listen-address-invalid'], 'sglang_server_host'),
    # -- SGLang flags and values (SGLang's own parser judges these too) -------------------------------------------
    ('mem-fraction-85', args(**{'mem-fraction-static': 85}), {}, ['sglang-out-of-range'], "sglang_server_args['mem-fraction-static']"),
    ('log-level-trace', args(**{'log-level': 'trace'}), {}, ['sglang-bad-value'], "sglang_server_args['log-level']"),
    ('schedule-heuristic', args(**{'schedule-heuristic': 'lpm'}), {}, ['sglang-renamed-flag'], "sglang_server_args['schedule-heuristic']"),
    ('max-num-reqs', args(**{'max-num-reqs': 256}), {}, ['sglang-renamed-flag'], "sglang_server_args['max-num-reqs']"),
    ('kv-cache-dtype-fp8', args(**{'kv-cache-dtype': 'fp8'}), {}, ['sglang-bad-choice'], "sglang_server_args['kv-cache-dtype']"),
    ('unknown-flag', args(**{'enable-turbo': True}), {}, ['sglang-unknown-flag'], "sglang_server_args['enable-turbo']"),
    ('tokenizer-workers-with-api-key', args(**{'tokenizer-worker-num': 2}), {}, ['sglang-crashes-with-api-key'],
     "sglang_server_args['tokenizer-worker-num']"),
    ('grpc-port-with-api-key', args(**{'grpc-port': 50051}), {}, ['sglang-crashes-with-api-key'], "sglang_server_args['grpc-port']"),
    ('owned-port-flag', args(port=31000), {}, ['sglang-owned-flag'], "sglang_server_args['port']"),
    ('api-key-on-the-command-line', args(**{'api-key': 'k' * 32}), {}, ['sglang-owned-flag'], "sglang_server_args['api-key']"),
    ('chunked-prefill-a-word', args(**{'chunked-prefill-size': 'big'}), {}, ['sglang-bad-type'], "sglang_server_args['chunked-prefill-size']"),
    ('server-args-a-list', {'sglang_server_args': ['--mem-fraction-static', '0.8']}, {}, ['sglang-args-not-dict'], 'sglang_server_args'),
    # -- NCCL extras (the function the nccl_env role uses) ----------------------------------------------------------
    ('nccl-tree-threshold', nccl(NCCL_TREE_THRESHOLD=0), {}, ['nccl-dead-variable'], 'nccl_env_extra'),
    ('nccl-timeout', nccl(NCCL_TIMEOUT=1800), {}, ['nccl-dead-variable'], 'nccl_env_extra'),
    ('cuda-managed-memory', nccl(CUDA_MANAGED_MEMORY=1), {}, ['nccl-dead-variable'], 'nccl_env_extra'),
    ('nccl-misspelt', nccl(NCCL_IB_HCAA='=rocep1s0f1'), {}, ['nccl-unknown-variable'], 'nccl_env_extra'),
    ('nccl-lower-case', nccl(nccl_debug='INFO'), {}, ['nccl-lowercase-name'], 'nccl_env_extra'),
    ('nccl-over-the-management-port', nccl(NCCL_SOCKET_IFNAME='enP7s7'), {}, ['nccl-not-cx7-interface'], 'nccl_env_extra'),
    ('nccl-exclude-list', nccl(NCCL_SOCKET_IFNAME='^docker,lo'), {}, ['nccl-exclude-list'], 'nccl_env_extra'),
    ('nccl-debug-loud', nccl(NCCL_DEBUG='LOUD'), {}, ['nccl-debug-level'], 'nccl_env_extra'),
    ('nccl-env-debug-loud', {'nccl_env_debug': 'LOUD'}, {}, ['nccl-debug-level'], 'nccl_env_debug'),
    ('nccl-ib-disable-2', nccl(NCCL_IB_DISABLE=2), {}, ['nccl-ib-disable-value'], 'nccl_env_extra'),
]

# Cases whose sglang_server_args SGLang 0.5.23's own parser and checks must reject as well.
# (mem-fraction-static 85 and tokenizer-worker-num 2 SGLang accepts at start-up and fails on a GPU node; test__sglang.py
# says where.)
SGLANG_JUDGES = {'log-level-trace', 'schedule-heuristic', 'max-num-reqs', 'kv-cache-dtype-fp8', 'unknown-flag',
                 'chunked-prefill-a-word', 'grpc-port-with-api-key'}


def inventory(group_vars, host_vars):
    hosts = copy.deepcopy(HOSTS)
    for name, more in host_vars.items():
        hosts[name].update(more)
    merged = dict(GOOD_GROUP_VARS)
    merged.update(group_vars)
    return {'all': {'children': {'spark': {'hosts': hosts, 'vars': merged}}}}


def run_site(inv):
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp)
        (path / 'hosts.yml').write_text(yaml.safe_dump(inv))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
                   ANSIBLE_LOCAL_TEMP=str(path / 'tmp'), ANSIBLE_HOME=str(path / 'home'))
        proc = subprocess.run([str(PLAYBOOK_BIN), '-i', str(path / 'hosts.yml'), 'site.yml',
                               '-e', 'sglang_server_credentials_dir=%s' % (path / 'credentials')],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def results():
    """Every case's (rc, output), two ansible-playbook runs at a time."""
    if not PLAYBOOK_BIN.exists():
        pytest.skip('ansible-playbook not next to %s' % sys.executable)
    work = {case[0]: inventory(case[1], case[2]) for case in CASES}
    work['good'] = inventory({}, {})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(work, pool.map(run_site, work.values())))
    return done


def test_the_table_is_large_and_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


def test_a_good_description_passes_preflight_and_only_then_meets_the_unreachable_hosts(results):
    rc, out = results['good']
    assert rc != 0
    assert 'UNREACHABLE' in out, out
    assert 'Publish the cluster plan to every host of the play' in out, out


@pytest.mark.parametrize('case_id, group_vars, host_vars, codes, variable', CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_before_the_first_connection(results, case_id, group_vars, host_vars, codes, variable):
    rc, out = results[case_id]
    assert rc != 0, out
    assert 'UNREACHABLE' not in out, out
    for code in codes:
        assert '[%s]' % code in out, '%s: [%s] not in output:\n%s' % (case_id, code, out)
    assert variable in out, out
    assert 'Fix:' in out, out
    for never in ('_Ansible', 'Tagged', 'Lazy', ' 1 .. 0', 'subnet(s) for 0'):
        assert never not in out, out
    for secret in ('sglang_server_hf_token', 'sglang_server_api_key'):
        if group_vars.get(secret):
            assert group_vars[secret] not in out, out


@pytest.fixture(scope='module')
def sglang():
    """SGLang 0.5.23's own parser and start-up checks, from its wheel in the test venv."""
    from ansible_collections.dgxspark.sglang.tests.unit import sglang_parser
    if sglang_parser.unavailable():
        pytest.fail('SGLang 0.5.23 is not importable in the test venv: %s (make venv installs it)' % sglang_parser.unavailable())
    return sglang_parser


@pytest.mark.parametrize('case_id', sorted(SGLANG_JUDGES))
def test_sglang_own_parser_rejects_the_same_flags(sglang, case_id):
    case = next(c for c in CASES if c[0] == case_id)
    with pytest.raises(sglang.Rejected):
        sglang.check_hand_written(case[1]['sglang_server_args'])


def test_sglang_own_parser_accepts_the_good_args(sglang):
    sglang.check(GOOD_GROUP_VARS['sglang_server_args'])
