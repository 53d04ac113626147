# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's decisions (plugins/module_utils/_doctor.py): redaction, the files of a node, what looks wrong.

The findings are built from the verify role's own judgement (_verify.node_report / group_reports) of the lab's plan,
so that a twin down or a unit stopped is named with the code and fix its check gave, never reworded.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import pathlib

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _doctor as d
from ansible_collections.dgxspark.sglang.plugins.module_utils import _verify as v
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import SGLANG_VERSION, VERSION_PROBE

# The lab's plan, probes and module results, as test__verify.py recorded them (one home).
_SPEC = importlib.util.spec_from_file_location('verify_cases', pathlib.Path(__file__).with_name('test__verify.py'))
CASES = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(CASES)

TOKEN = 'hf_' + 'aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z'   # the shape of a Hugging Face user access token
KEY = 'k3yOfTheGroup0123456789abcdefABCD'               # the shape of the key the sglang_server role generates
# SGLang 0.5.23 logs this line at info through sglang.srt.entrypoints.engine (FACTS.md), key included.
SERVER_ARGS = ("[2026-12-01 22:40:11] server_args=ServerArgs(model_path='dgxspark-lab/tiny-qwen2', "
               "tokenizer_path='dgxspark-lab/tiny-qwen2', host='0.0.0.0', port=30000, skip_tokenizer_init=False, "
               "api_key='%s', admin_api_key=None, max_total_tokens=None, served_model_name='tiny-qwen2-lab')" % KEY)


# --- redaction ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text', [
    SERVER_ARGS,
    'api-key: %s\nmodel-path: dgxspark-lab/tiny-qwen2\n' % KEY,          # server.yaml
    'HF_TOKEN=%s\nNCCL_DEBUG=INFO\n' % TOKEN,                             # an environment file
    '{"api_key": "%s", "hf_token": "%s"}' % (KEY, TOKEN),                  # JSON
    'curl -H "Authorization: Bearer %s" http://127.0.0.1:30000/v1/models' % KEY,
    'python3 -m sglang.launch_server --api-key %s --port 30000' % KEY,
    'python3 -m sglang.launch_server --api-key=%s --port 30000' % KEY,
    'token %s seen in a log line' % TOKEN,                                 # no name: the hf_ shape gives it away
])
def test_secrets_are_redacted_by_their_shape_without_being_told(text):
    out = d.redact(text)
    assert KEY not in out and TOKEN not in out, out
    assert d.REDACTED in out


def test_redaction_keeps_json_yaml_and_reprs_readable():
    assert json.loads(d.redact(json.dumps({'api_key': KEY, 'hf_token': TOKEN, 'n': 1}))) == {
        'api_key': d.REDACTED, 'hf_token': d.REDACTED, 'n': 1}
    assert "api_key='<redacted>', admin_api_key=None" in d.redact(SERVER_ARGS)
    assert d.redact("--api-key '%s' --port 1" % KEY) == "--api-key '<redacted>' --port 1"


def test_known_secrets_are_redacted_wherever_they_are():
    text = 'the key %s is in a sentence, and %s too' % (KEY, KEY[:-1] + 'X')
    out = d.redact(text, [KEY, None, ''])
    assert KEY not in out and KEY[:-1] + 'X' in out   # only the real value: a near miss stays readable
    assert d.secrets_in(out, [KEY]) == [] and d.secrets_in(text, [KEY]) == [KEY]


def test_what_is_no_secret_stays_readable():
    text = ("admin_api_key=None, max_total_tokens=8192, skip_tokenizer_init=False, token_usage=0.25, "
            "sglang:token_usage 0.5, hf_transfer installed, NCCL_IB_HCA==rocep1s0f1,roceP2p1s0f1")
    assert d.redact(text) == text
    # Too short to be a secret: replacing it would blank out ordinary words.
    assert d.redact('the lab', ['lab']) == 'the lab'
    assert d.redact(None) == ''


# --- the versions probe ---------------------------------------------------------------------------------------------

def test_versions_probe_prints_one_json_line_here():
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    run = subprocess.run([sys.executable, '-c', d.VERSIONS_PROBE], capture_output=True, text=True, check=True)
    found = d.parse_versions(run.stdout)
    assert set(found) >= {'sglang', 'torch', 'nccl'}
    assert d.parse_versions('noise\nTraceback ...') == {} and d.parse_versions('{broken') == {}


def test_versions_problems_are_the_sglang_server_roles():
    ok = d.node_versions('h1', 'container', json.dumps({'sglang': SGLANG_VERSION}))
    other = d.node_versions('h2', 'container', json.dumps({'sglang': '0.5.3'}))
    none = d.node_versions('h3', 'native', 'Traceback: no module named sglang')
    problems = d.versions_problems([ok, other, none, d.node_versions('h4', None, '')])
    assert [(p['code'], p['hosts']) for p in problems] == [('sglang-version-mismatch', ['h2']),
                                                           ('sglang-version-unknown', ['h3'])]
    assert 'Fix:' in problems[0]['message']


# --- a node's files ------------------------------------------------------------------------------------------------

def _slurped(path, text):
    return {'item': path, 'content': base64.b64encode(text.encode()).decode(), 'source': path}


def test_node_files_are_redacted_and_say_what_could_not_be_read():
    commands = [
        {'item': {'name': 'unit-journal'}, 'cmd': ['journalctl', '-u', 'sglang.service', '-n', '200'], 'rc': 0,
         'stdout': SERVER_ARGS, 'stderr': ''},
        {'item': {'name': 'nvidia-smi'}, 'cmd': 'nvidia-smi', 'rc': 2, 'stdout': '', 'stderr': '',
         'msg': '[Errno 2] No such file or directory', 'failed': True},
        {'item': {'name': 'versions'}, 'skipped': True, 'skip_reason': 'Conditional result was False'},
    ]
    files = [_slurped('/etc/sglang/nccl.env', 'NCCL_DEBUG=WARN\n# planted HF_TOKEN=%s\n' % TOKEN),
             {'item': '/etc/dgx-release', 'failed': False, 'msg': 'file not found: /etc/dgx-release'}]
    allreduce = {'cmd': ['python3', 'w.py'], 'rc': 0, 'stdout': '{"raw": []}',
                 'stderr': 'lab-spark-01:1:1 [0] NCCL INFO NET/Socket : Using [0]enp1s0f1np1:192.168.100.11<0>',
                 'passed': True, 'invocation': {'module_args': {'env': {'X': KEY}}}}
    out = d.node_files(commands, files, {'gpu_info': {'driver_state': 'ready', 'changed': False},
                                         'nccl_allreduce': allreduce, 'sglang_health': None}, [KEY], host='h1')
    names = [f['name'] for f in out]
    assert names == sorted(names) == ['etc-dgx-release', 'etc-sglang-nccl.env', 'gpu_info.json',
                                      'nccl_allreduce-output.txt', 'nccl_allreduce.json', 'nvidia-smi.txt',
                                      'unit-journal.txt', 'versions.txt']
    text = {f['name']: f['text'] for f in out}
    assert all(f['host'] == 'h1' for f in out)
    assert all(KEY not in t and TOKEN not in t for t in text.values())
    assert "api_key='<redacted>'" in text['unit-journal.txt'] and text['unit-journal.txt'].startswith('$ journalctl')
    assert 'No such file' in text['nvidia-smi.txt'] and '# rc 2' in text['nvidia-smi.txt']
    assert 'not read (file not found' in text['etc-dgx-release']
    assert 'NCCL INFO NET/Socket' in text['nccl_allreduce-output.txt']
    assert 'invocation' not in json.loads(text['nccl_allreduce.json'])
    assert text['versions.txt'].startswith('# skipped')


# --- what looks wrong ----------------------------------------------------------------------------------------------

def _lab_reports(twin_down=False, unit=None, reached=(CASES.H1, CASES.H2)):
    plan = CASES.lab_plan()
    if twin_down:
        plan['nodes'][CASES.H2]['probe'] = CASES.probe(('192.168.100.12', '192.168.101.12'), down=True)
    nodes = {}
    for host in reached:
        blockers = v.allreduce_blockers(plan, host, list(reached))
        nodes[host] = CASES.report(plan, host, allreduce=CASES.SKIPPED if blockers else CASES.ALLREDUCE,
                                   blockers=blockers, **({'unit': unit, 'health': CASES.SKIPPED}
                                                         if unit and host == CASES.H1 else {}))
    return v.group_reports(plan, nodes, '20261201T224000Z')


def test_a_healthy_lab_has_no_findings():
    assert d.findings(_lab_reports()) == []
    assert d.format_findings([], 'reports/doctor-spark-x.tar.gz') == (
        'doctor tarball: reports/doctor-spark-x.tar.gz\nNothing looks wrong.')


def test_a_twin_down_is_named_with_connectx_infos_code_and_fix():
    found = d.findings(_lab_reports(twin_down=True))
    assert [(f['host'], f['code']) for f in found] == [(CASES.H2, 'cx7-link-down'), (CASES.H2, 'cx7-no-ipv4'),
                                                       (CASES.H2, 'allreduce-not-run')]
    # The sentence is the probe's own (connectx_info's problem), fix included.
    assert found[0]['message'] == 'link: ' + CASES.DOWN[0]['message']
    text = d.format_findings(found)
    assert text.splitlines()[0] == '3 things look wrong:'
    assert ('  1. lab-spark-02: link: spark_cx7_interfaces: enp1s0f1np1 is down (operstate down). Fix: check the cable '
            'and `ip link set enp1s0f1np1 up`. [cx7-link-down]') in text.splitlines()


def test_a_stopped_unit_and_a_node_not_reached():
    found = d.findings(_lab_reports(unit=CASES.UNIT_DEAD, reached=(CASES.H1,)), unreached=[CASES.H2])
    pairs = [(f['host'], f['code']) for f in found]
    assert (CASES.H1, 'sglang-unit-not-active') in pairs and (CASES.H2, 'verify-node-not-run') in pairs
    # The node not reached is named once, by the verify report's code, with what to check.
    assert pairs.count((CASES.H2, 'verify-node-not-run')) == 1
    assert 'Fix: check that it is up and answers SSH' in found[pairs.index((CASES.H2, 'verify-node-not-run'))]['message']
    assert 'Fix: read why in `journalctl -u sglang -n 100`' in next(
        f['message'] for f in found if f['code'] == 'sglang-unit-not-active')


def test_without_a_plan_the_preflight_message_and_the_nodes_not_reached_are_the_findings():
    preflight = {'code': 'doctor-preflight-failed', 'hosts': [None],
                 'message': 'The cluster description has 1 problem:\n  1. spark_cx7_subnets: ... [subnet-overlap] '
                            'h2-secret'}
    found = d.findings([], [preflight], unreached=['h2'], secrets=['h2-secret'])
    assert [(f['host'], f['code']) for f in found] == [(None, 'doctor-preflight-failed'), ('h2', 'verify-node-not-run')]
    assert 'Fix: check that it is up and answers SSH' in found[1]['message']
    assert 'h2-secret' not in found[0]['message']
    assert d.format_findings(found).splitlines()[1].startswith('  1. cluster: The cluster description')


def test_the_versions_probe_argv_is_the_version_probes_with_another_program():
    from ansible_collections.dgxspark.sglang.plugins.filter.doctor import doctor_versions_probe  # noqa: E501 pylint: disable=import-outside-toplevel
    from ansible_collections.dgxspark.sglang.plugins.filter.sglang import sglang_version_probe  # pylint: disable=import-outside-toplevel
    group = copy.deepcopy(CASES.lab_plan()['groups']['spark'])
    group.update(runtime='container', container_volumes=['/a:/a:ro'])
    base = sglang_version_probe(group)
    assert base[-1] == VERSION_PROBE
    assert doctor_versions_probe(base) == base[:-1] + [d.VERSIONS_PROBE]


def test_the_pack_script_writes_every_file_under_one_top_folder(tmp_path):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import tarfile  # pylint: disable=import-outside-toplevel
    script = pathlib.Path(__file__).resolve().parents[4] / 'roles' / 'doctor' / 'files' / 'doctor_pack.py'
    files = d.node_files([{'item': {'name': 'kernel'}, 'cmd': ['uname', '-a'], 'rc': 0, 'stdout': 'Linux x'}],
                         host='h1') + [{'path': 'findings.txt', 'text': 'Nothing looks wrong.\n'}]
    tarball = tmp_path / 'out' / 'doctor-spark-20261201T230000Z.tar.gz'
    run = subprocess.run([sys.executable, str(script), str(tarball)], input=json.dumps(files), capture_output=True,
                         text=True, check=True)
    assert run.stdout.strip() == str(tarball) and tarball.stat().st_mode & 0o777 == 0o600
    with tarfile.open(tarball) as tar:
        members = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    assert sorted(members) == ['doctor-spark-20261201T230000Z/findings.txt', 'doctor-spark-20261201T230000Z/h1/kernel.txt']
    assert members['doctor-spark-20261201T230000Z/h1/kernel.txt'] == '$ uname -a\nLinux x\n# rc 0\n'
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / 'bad.tar.gz')],
                         input=json.dumps([{'path': '../escape', 'text': ''}]), capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0 and not (tmp_path / 'bad.tar.gz').exists() and list(tmp_path.glob('.bad*')) == []
