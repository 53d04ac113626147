"""plugins/module_utils/_staging.py and the staging modules, against the hub stand-in and the real huggingface_hub.

The source's cache is filled by huggingface_hub's own snapshot_download from the hub stand-in; the role's staging
server serves it; the staging_fetch module (run as Ansible runs it, a process with its arguments file) copies it to a
second cache; and huggingface_hub, offline, finds the model there at the pinned commit, as SGLang does at start-up.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _staging as st
from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import check_description, plan_cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes
from ansible_collections.dgxspark.sglang.tests.unit.standin import lab_module

ROOT = pathlib.Path(__file__).resolve().parents[4]
hf = pytest.importorskip('huggingface_hub')


standin = lab_module('hub_standin')
hub_model = lab_module('hub_model')
REPO = hub_model.REPO_ID
GATED = 'dgxspark-lab/gated-qwen2'
TOKEN = 'hf_labtoken'


@pytest.fixture(name='hub', scope='module')
def fixture_hub(tmp_path_factory):
    repos = tmp_path_factory.mktemp('repos')
    hub_model.write_model(repos / REPO)
    hub_model.write_model(repos / GATED, seed=1)
    (repos / GATED / standin.GATED_MARKER).write_text('')
    server = standin.make_server(repos, token=TOKEN)
    standin.serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def stats(server):
    with urllib.request.urlopen(server.endpoint + '/_stats') as answer:
        return json.load(answer)


def answer(server, repo=REPO, revision='main'):
    url = '%s/api/models/%s/revision/%s?blobs=true' % (server.endpoint, repo, revision)
    with urllib.request.urlopen(url) as reply:
        return json.load(reply)


@pytest.fixture(name='source', scope='module')
def fixture_source(hub, tmp_path_factory):
    """A source node's cache, filled by the real client at the commit the hub's answer pinned."""
    commit, files = st.manifest_from_hub(answer(hub))
    cache = tmp_path_factory.mktemp('source')
    hf.snapshot_download(REPO, revision=commit, cache_dir=str(cache / 'hub'), endpoint=hub.endpoint, max_workers=2)
    return cache, commit, files


def model(**extra):
    base = {'path': REPO, 'local': False, 'revision': None, 'source_host': 'a', 'served_name': REPO, 'size_gb': None}
    base.update(extra)
    return base


# ---- the hub's answers -------------------------------------------------------------------------------------------

def test_manifest_names_each_file_by_the_checksum_its_blob_carries(hub, source):
    cache, commit, files = source
    assert st.COMMIT.match(commit)
    by_path = {f['path']: f for f in files}
    assert by_path['model.safetensors']['lfs'] and st.SHA256.match(by_path['model.safetensors']['blob'])
    assert not by_path['config.json']['lfs'] and len(by_path['config.json']['blob']) == 40
    # The real client named the blobs exactly so: the cache layout is self-verifying.
    assert st.scan_repo(str(cache), REPO)['blobs'] == {f['blob']: f['size'] for f in files}
    assert st.missing_files(files, st.scan_repo(str(cache), REPO), commit) == []
    assert st.verify_blobs(str(cache), REPO, files) == []
    assert st.weights_bytes(files) == by_path['model.safetensors']['size']


def test_manifest_refuses_an_answer_without_checksums(hub):
    reply = answer(hub)
    for sibling in reply['siblings']:
        sibling.pop('blobId', None)
        sibling.pop('lfs', None)
    with pytest.raises(ValueError, match='blobs=true'):
        st.manifest_from_hub(reply)
    with pytest.raises(ValueError, match='commit'):
        st.manifest_from_hub({'siblings': []})


def uri_result(url, token=None, method='GET'):
    """What ansible.builtin.uri registers, for the fields read_hub reads."""
    request = urllib.request.Request(url, method=method, headers={'Authorization': 'Bearer ' + token} if token else {})
    try:
        with urllib.request.urlopen(request) as reply:
            body = reply.read().decode()
            return {'status': reply.status, 'url': url, 'json': json.loads(body) if method == 'GET' else None}
    except urllib.error.HTTPError as exc:
        return {'status': exc.code, 'url': url, 'x_error_code': exc.headers.get('X-Error-Code'), 'msg': str(exc)}
    except OSError as exc:
        return {'status': -1, 'url': url, 'msg': 'Request failed: %s' % exc}


def hub_requests(server, repo, revision='main', token=None):
    info = uri_result('%s/api/models/%s/revision/%s?blobs=true' % (server.endpoint, repo, revision), token)
    head = {}
    if info['status'] == 200:
        head = uri_result('%s/%s/resolve/%s/config.json' % (server.endpoint, repo, info['json']['sha']), token, 'HEAD')
    return {'info': info, 'file': head}


@pytest.mark.parametrize('repo, revision, token, code', [
    (REPO, 'main', None, None),
    (GATED, 'main', None, 'model-gated'),
    (GATED, 'main', 'hf_wrong', 'model-token-refused'),
    (GATED, 'main', TOKEN, None),
    ('dgxspark-lab/no-such-model', 'main', None, 'model-not-found'),
    (REPO, 'v9', None, 'model-revision-not-found'),
])
def test_read_hub_names_what_a_refusal_means(hub, repo, revision, token, code):
    pinned, problems = st.read_hub(model(path=repo, requested=revision), hub_requests(hub, repo, revision, token),
                                   token is not None, 'a')
    assert codes(problems) == ([code] if code else [])
    assert (pinned is None) == bool(code)
    if code:
        assert problems[0]['where'] == 'a' and problems[0]['fix']


def test_read_hub_names_an_unreachable_hub():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    info = uri_result('http://127.0.0.1:%d/api/models/%s/revision/main?blobs=true' % (port, REPO))
    _pinned, problems = st.read_hub(model(requested='main'), {'info': info, 'file': {'skipped': True}}, False, 'a')
    assert codes(problems) == ['model-hub-unreachable'] and 'spark_https_proxy' in problems[0]['fix']


# ---- pins: the record wins over the hub, unless refreshed ---------------------------------------------------------

def record(commit, files, requested='main', repo=REPO, image=None):
    text = st.render_record({'path': repo, 'local': False, 'requested': requested, 'commit': commit, 'files': files},
                            image)
    return json.loads(text)


def test_a_recorded_revision_pins_the_model_without_the_hub(source):
    _cache, commit, files = source
    infos = {'a': {'record': record(commit, files)}, 'b': {}}
    assert st.hub_request(model(), infos) is None
    assert st.hub_request(model(), infos, refresh=True) == 'main'
    assert st.hub_request(model(revision='v2'), infos) == 'v2'
    assert st.hub_request(model(path='other/model'), infos) == 'main'
    pinned, problems = st.pin_model(model(), infos)
    assert not problems and pinned['commit'] == commit and pinned['pinned_by'] == 'record'
    assert pinned['bytes'] == sum(f['size'] for f in files)
    # A commit hash asked for is found in a record of a branch that resolved to it.
    assert st.hub_request(model(revision=commit), infos) is None


def test_the_hub_pins_what_no_record_holds(source):
    _cache, commit, files = source
    pinned, problems = st.pin_model(model(), {'a': {}}, {'commit': commit, 'files': files})
    assert not problems and pinned['pinned_by'] == 'hub' and pinned['requested'] == 'main'
    _pinned, problems = st.pin_model(model(), {'a': {}}, None)
    assert codes(problems) == ['model-not-pinned']


def group(**extra):
    base = {'hosts': ['a', 'b', 'c'], 'head': 'a', 'runtime': 'native', 'image': 'lmsysorg/sglang:v0.5.23-cu130',
            'cache_dir': '/var/lib/sglang/huggingface', 'model': model()}
    base.update(extra)
    return base


def test_each_node_lacks_what_its_cache_does_not_hold_and_the_disk_is_checked(source):
    cache, commit, files = source
    full = st.scan_repo(str(cache), REPO)
    half = {'blobs': {f['blob']: f['size'] for f in files if not f['lfs']}, 'snapshots': {}, 'refs': {}}
    big = max(f['size'] for f in files)
    infos = {'a': {'model': full, 'cache_free_bytes': 10 ** 12},
             'b': {'model': half, 'cache_free_bytes': st.DISK_MARGIN_BYTES + big - 1},
             'c': {'cache_free_bytes': 10 ** 12}}
    pinned, _image, needs, problems = st.stage_model(group(), infos, {'commit': commit, 'files': files})
    assert needs['a'] == {'missing': [], 'missing_bytes': 0}
    assert needs['b']['missing_bytes'] == big and len(needs['b']['missing']) == len(files)  # links missing too
    assert needs['c']['missing_bytes'] == pinned['bytes']
    assert codes(problems) == ['disk-full'] and problems[0]['hosts'] == ['b']
    assert 'sglang_server_cache_dir' == problems[0]['variable']


def test_the_image_pin_and_who_receives_what(source):
    _cache, commit, files = source
    image_id = 'sha256:' + 'ab' * 32
    rec = record(commit, files, image={'requested': 'lmsysorg/sglang:v0.5.23-cu130', 'id': image_id,
                                       'digest': 'lmsysorg/sglang@sha256:' + 'cd' * 32, 'bytes': 10})
    infos = {'a': {'record': rec, 'image': {'id': image_id}, 'image_free_bytes': 10 ** 12},
             'b': {'image': {'id': 'sha256:' + 'ef' * 32}, 'image_free_bytes': 1},
             'c': {'image': {}, 'image_free_bytes': 10 ** 12}}
    pinned, image, needs, problems = st.stage_model(group(runtime='container'), infos, None, image_bytes_estimate=5)
    assert pinned['pinned_by'] == 'record' and image['id'] == image_id and image['digest'].endswith('cd' * 32)
    assert [h for h in 'abc' if needs[h]['image']] == ['b', 'c']
    assert codes(problems) == ['disk-full'] and problems[0]['hosts'] == ['b']
    plan = {'groups': {'g': dict(group(runtime='container'), model=pinned)},
            'nodes': {h: {'staging': needs[h]} for h in 'abc'}}
    moves = st.transfers(plan, 'g', ['a', 'b', 'c'])
    assert moves['source'] == 'a' and moves['others'] == ['b', 'c'] and moves['container']
    assert moves['model_to'] == ['b', 'c'] and moves['download']
    assert moves['blobs'] == '/var/lib/sglang/huggingface/hub/models--dgxspark-lab--tiny-qwen2/blobs'
    assert st.transfers(plan, 'g', ['a', 'b'])['model_to'] == ['b']


def test_a_model_folder_must_be_the_same_on_every_node(tmp_path):
    for name, files in (('a', {'config.json': b'{}', 'w.safetensors': b'x' * 10}),
                        ('b', {'config.json': b'{}', 'w.safetensors': b'x' * 9}),
                        ('c', {'w.safetensors': b'x' * 10})):
        for path, data in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_bytes(data)
    infos = {h: {'local': st.scan_local(str(tmp_path / h))} for h in 'abc'}
    infos['d'] = {'local': st.scan_local(str(tmp_path / 'nowhere'))}
    problems = st.local_model_problems({'path': '/models/m'}, infos)
    assert sorted((p['code'], p['hosts'][0]) for p in problems) == [
        ('model-path-differs', 'b'), ('model-path-differs', 'c'), ('model-path-missing', 'd'),
        ('model-path-no-config', 'c')]
    assert 'has other sizes of w.safetensors' in [p for p in problems if p['hosts'] == ['b']][0]['message']


def test_free_bytes_reads_the_nearest_existing_parent(tmp_path):
    assert st.free_bytes(str(tmp_path / 'not' / 'yet')) == st.free_bytes(str(tmp_path)) > 0


# ---- the transfer: the role's server on one side, staging_fetch on the other ----------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(name='server')
def fixture_server(source):
    cache, _commit, _files = source
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / 'roles/staging/files/staging_server.py'), '--bind', '127.0.0.1',
                             '--port', str(port), '--blobs', os.path.join(st.repo_dir(str(cache), REPO), 'blobs')],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield 'http://127.0.0.1:%d' % port
    proc.terminate()
    proc.wait(5)


def run_module(name, args, tmp_path, check=False):
    arguments = dict(args, _ansible_check_mode=check, _ansible_tmpdir=str(tmp_path))
    (tmp_path / 'args.json').write_text(json.dumps({'ANSIBLE_MODULE_ARGS': arguments}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / 'collections'))
    proc = subprocess.run([sys.executable, str(ROOT / 'plugins/modules' / (name + '.py')), str(tmp_path / 'args.json')],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return json.loads(proc.stdout)


def test_the_server_serves_blobs_by_name_only(server, source):
    _cache, _commit, files = source
    with urllib.request.urlopen('%s/blobs/%s' % (server, files[0]['blob'])) as reply:
        assert len(reply.read()) == files[0]['size']
    for path in ('/blobs/../../etc/passwd', '/blobs/', '/', '/image/sha256:' + '0' * 64, '/blobs/' + '0' * 40):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(server + path)
        assert exc.value.code == 404


def test_staging_fetch_copies_verifies_and_then_has_nothing_to_do(server, source, tmp_path):
    _cache, commit, files = source
    dest = tmp_path / 'dest'
    args = {'url': server, 'cache_dir': str(dest), 'repo_id': REPO, 'commit': commit, 'files': files, 'parallel': 3}
    dry = run_module('staging_fetch', args, tmp_path, check=True)
    assert dry['changed'] and len(dry['fetched']) == len(files) and dry['transferred_bytes'] == 0
    assert not dest.exists()
    first = run_module('staging_fetch', args, tmp_path)
    assert first['changed'] and first['transferred_bytes'] == sum(f['size'] for f in files)
    second = run_module('staging_fetch', args, tmp_path)
    assert not second['changed'] and second['fetched'] == [] and second['transferred_bytes'] == 0
    # huggingface_hub, offline, resolves the model at the pinned commit from the copy, as SGLang does.
    path = hf.snapshot_download(REPO, revision=commit, cache_dir=str(dest / 'hub'), local_files_only=True)
    assert json.loads((pathlib.Path(path) / 'config.json').read_text())['model_type'] == 'qwen2'
    info = run_module('staging_info', {'cache_dir': str(dest), 'repo_id': REPO, 'record': str(tmp_path / 'none.json'),
                                       'verify': files}, tmp_path)
    assert info['bad'] == [] and info['record'] is None and info['cache_free_bytes'] > 0
    assert not info['changed'] and set(info['model']['snapshots'][commit]) == {f['path'] for f in files}


def test_staging_fetch_refuses_a_file_that_does_not_earn_its_checksum(server, source, tmp_path):
    _cache, commit, files = source
    lying = [dict(f, blob=f['blob'][:-1] + ('0' if f['blob'][-1] != '0' else '1')) if f['path'] == 'config.json' else f
             for f in files]
    result = run_module('staging_fetch', {'url': server, 'cache_dir': str(tmp_path / 'd'), 'repo_id': REPO,
                                          'commit': commit, 'files': lying}, tmp_path)
    assert result['failed'] and 'config.json' in result['msg'] and 'tried twice' in result['msg']
    # Nothing half-written stays behind: no blob, no link to it.
    scan = st.scan_repo(str(tmp_path / 'd'), REPO)
    blobs = os.path.join(st.repo_dir(str(tmp_path / 'd'), REPO), 'blobs')
    assert not any(name.endswith('.incomplete') for name in os.listdir(blobs))
    assert scan['snapshots'] == {}


def test_a_corrupted_blob_is_found_by_verify(source, tmp_path):
    cache, commit, files = source
    copy = tmp_path / 'copy'
    repo = pathlib.Path(st.repo_dir(str(cache), REPO))
    target = pathlib.Path(st.repo_dir(str(copy), REPO))
    (target / 'blobs').mkdir(parents=True)
    for entry in files:
        data = (repo / 'blobs' / entry['blob']).read_bytes()
        if entry['path'] == 'model.safetensors':
            data = data[:-1] + bytes([data[-1] ^ 1])
        (target / 'blobs' / entry['blob']).write_bytes(data)
    assert st.write_links(str(copy), REPO, commit, files) == [f['path'] for f in files]
    assert st.write_links(str(copy), REPO, commit, files) == []
    assert st.missing_files(files, st.scan_repo(str(copy), REPO), commit) == []   # sizes and links look right ...
    assert st.verify_blobs(str(copy), REPO, files) == ['model.safetensors']        # ... the content does not


# ---- the inputs: checked before any host is touched ------------------------------------------------------------------

def describe(**values):
    subnets = ['192.168.100.0/24', '192.168.101.0/24']
    hosts = [{'name': 'spark-%02d' % i,
              'vars': dict(values, ansible_host='10.0.0.%d' % (10 + i), sglang_server_model=REPO, spark_cx7_subnets=subnets)}
             for i in (1, 2)]
    return {'cluster': 'spark', 'hosts': hosts, 'gpus_per_node': 1}


@pytest.mark.parametrize('var, value, code', [
    ('spark_hf_endpoint', 'huggingface.co', 'url-invalid'),
    ('spark_https_proxy', 'proxy:3128', 'url-invalid'),
    ('spark_no_proxy', {'a': 1}, 'no-proxy-invalid'),
    ('sglang_server_model_refresh', 'yes', 'refresh-invalid'),
    ('sglang_server_image_size_gb', 0, 'image-size-invalid'),
    ('sglang_server_cache_dir', 'hf', 'path-invalid'),
])
def test_bad_staging_inputs_are_refused_naming_the_variable(var, value, code):
    problems, plan = check_description(describe(**{var: value}))
    assert plan is None and [(p['code'], p['variable']) for p in problems] == [(code, var)]
    assert problems[0]['fix']


def test_proxies_reach_the_plan_and_never_cover_the_cx7_link():
    plan = plan_cluster(describe(spark_https_proxy='http://proxy.example.com:3128', spark_no_proxy='.corp, 10.0.0.0/8'))
    env = plan['proxy_env']
    assert env['https_proxy'] == env['HTTPS_PROXY'] == 'http://proxy.example.com:3128' and 'http_proxy' not in env
    assert env['no_proxy'] == 'localhost,127.0.0.1,192.168.100.0/24,192.168.101.0/24,.corp,10.0.0.0/8'
    assert plan_cluster(describe())['proxy_env'] == {}
    group = plan['groups']['spark']
    assert group['record'] == '/etc/sglang/pins.json' and group['cache_dir'] == '/var/lib/sglang/huggingface'


def test_image_facts_take_the_requested_repositorys_digest():
    inspect = json.dumps([{'Id': 'sha256:' + 'a' * 64, 'Size': 123,
                           'RepoDigests': ['other/x@sha256:' + 'b' * 64, 'lmsysorg/sglang@sha256:' + 'c' * 64]}])
    facts = st.image_facts(inspect, 'lmsysorg/sglang:v0.5.23-cu130')
    assert facts == {'requested': 'lmsysorg/sglang:v0.5.23-cu130', 'id': 'sha256:' + 'a' * 64,
                     'digest': 'lmsysorg/sglang@sha256:' + 'c' * 64, 'bytes': 123}
    # A loaded image has no RepoDigests: the pinned digest stays.
    loaded = json.dumps({'Id': 'sha256:' + 'a' * 64, 'Size': 1, 'RepoDigests': []})
    assert st.image_facts(loaded, 'registry:5000/lmsysorg/sglang:v1', 'pinned')['digest'] == 'pinned'
