# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_kubernetes.py: the cluster plan as Kubernetes objects.

- Every object of 2- and 4-node clusters (and of two groups behind the router) passes kubernetes-validate against
  the schemas of the pinned Kubernetes version, strictly (an unknown field fails).
- The argv comparison: for every rank, the pod that gets that index runs, once the kubelet has expanded its
  arguments, exactly the arguments of the systemd unit of that rank (``plan_launch_argv``, which the sglang_server
  role's unit runs). By design only the rank's source differs (``$(POD_INDEX)``); the rendezvous address is the
  same (the head's CX7 address), so nothing else is normalised.
- The container's start script runs for real under /bin/sh: SGLANG_HOST_IP is the node's CX7 address from the plan,
  and a node outside the plan is refused.
- Secrets only in Secrets; the security context; the problems, by code.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import kubernetes_validate
import pytest
import yaml

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster, _kubernetes, _router
from ansible_collections.dgxspark.sglang.plugins.module_utils._kubernetes import (
    DEFAULTS,
    KUBERNETES_VERSION,
    kubelet_expand,
    render_manifests,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, codes
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import plan_launch_argv
from ansible_collections.dgxspark.sglang.tests.unit.plugins.module_utils.test__cluster import describe, probes

ROOT = pathlib.Path(__file__).resolve().parents[4]
API_KEY = 'sk-k8s-test-key-NEVER-in-an-object-4242'
HF_TOKEN = 'hf_K8StokenNEVERinAnObject0123456789'


def probed_plan(n, rdma=True, cluster='spark', names=None, **group_vars):
    desc = describe(n, names=names, **group_vars)
    desc['cluster'] = cluster
    plan = _cluster.plan_cluster(desc)
    return _cluster.complete_plan(plan, probes(plan, rdma=rdma))


def two_groups():
    """Two 2-node groups in one plan, as the plan holds several groups (the router's case)."""
    first = probed_plan(2)
    second = probed_plan(2, cluster='spark-b', names=['spark-03', 'spark-04'],
                         spark_cx7_subnets=['192.168.102.0/24', '192.168.103.0/24'])
    first['groups'].update(second['groups'])
    first['nodes'].update(second['nodes'])
    return first


def by_kind(objects, kind):
    return [o for o in objects if o['kind'] == kind]


def named(objects, name, kind=None):
    (found,) = [o for o in objects if o['metadata']['name'] == name and kind in (None, o['kind'])]
    return found


def container(statefulset):
    (found,) = statefulset['spec']['template']['spec']['containers']
    return found


def pod_indexes(statefulset):
    start = statefulset['spec'].get('ordinals', {}).get('start', 0)
    return list(range(start, start + statefulset['spec']['replicas']))


# ---- the schema of the pinned Kubernetes ---------------------------------------------------------------------

@pytest.mark.parametrize('make', [lambda: probed_plan(2), lambda: probed_plan(4), lambda: probed_plan(2, rdma=False),
                                  two_groups], ids=['2-nodes', '4-nodes', '2-nodes-no-rdma', 'two-groups-router'])
def test_every_object_passes_the_pinned_kubernetes_schema(make):
    rendered = render_manifests(make(), api_key=API_KEY)
    objects = rendered['objects'] + rendered['secrets']
    assert objects[0]['kind'] == 'Namespace'
    for obj in objects:
        # Through YAML, as kubectl and kubernetes.core.k8s read the files.
        kubernetes_validate.validate(yaml.safe_load(yaml.safe_dump(obj)), KUBERNETES_VERSION, strict=True)


def test_the_schema_check_fails_where_kubernetes_would():
    statefulset = by_kind(render_manifests(probed_plan(2), api_key=API_KEY)['objects'], 'StatefulSet')[0]
    statefulset['spec']['template']['spec']['hostNetwrk'] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


# ---- the same argv per rank as the systemd units ------------------------------------------------------------------

def kubelet_args(statefulset, index, node):
    """The container's arguments as the kubelet passes them to a pod with this index on this node."""
    env = {'POD_INDEX': str(index), 'NODE_NAME': node}
    spec = container(statefulset)
    for entry in spec['env']:
        if 'value' in entry:
            env[entry['name']] = entry['value']
    return [kubelet_expand(token, env) for token in spec['args']]


@pytest.mark.parametrize('n', [2, 4])
def test_each_rank_runs_the_systemd_units_argv(n):
    plan = probed_plan(n, sglang_server_args={'mem-fraction-static': 0.8, 'chunked-prefill-size': 8192,
                                              'json-model-override-args': {'note': '$(HOME) and a$$b stay literal'}})
    objects = render_manifests(plan, api_key=API_KEY)['objects']
    group = plan['groups']['spark']
    by_rank = {plan['nodes'][h]['node_rank']: h for h in group['hosts']}
    seen = {}
    for statefulset in by_kind(objects, 'StatefulSet'):
        for index in pod_indexes(statefulset):
            seen[index] = kubelet_args(statefulset, index, 'any-node')
    assert sorted(seen) == list(range(n)), 'one pod per rank, the pod index being the rank'
    for rank, argv in seen.items():
        unit = plan_launch_argv(plan, by_rank[rank], config_file=group['config_dir'] + '/server.yaml')
        assert argv == unit, rank
        # The plan's own values, not only the shared function's: the rendezvous is the head's CX7 address.
        assert argv[argv.index('--node-rank') + 1] == str(rank)
        assert argv[argv.index('--nnodes') + 1] == str(n)
        assert argv[argv.index('--dist-init-addr') + 1] == '192.168.100.11:20000' == group['dist_init_addr']
    # A '$(' or '$$' in a user's flag is escaped for the kubelet and reaches SGLang unchanged.
    assert any('$(HOME) and a$$b stay literal' in token for token in seen[0])


def test_pod_zero_is_pinned_to_the_head_and_the_others_spread_over_the_other_nodes():
    plan = probed_plan(4)
    names = {'spark-01': 'gpu-a.example.com', 'spark-03': 'gpu-c.example.com'}
    objects = render_manifests(plan, settings={'node_names': names}, api_key=API_KEY)['objects']
    head = named(objects, 'sglang-spark-head')
    workers = named(objects, 'sglang-spark-workers')
    assert head['spec']['replicas'] == 1 and 'ordinals' not in head['spec']
    assert head['spec']['template']['spec']['nodeSelector'] == {'kubernetes.io/hostname': 'gpu-a.example.com'}
    assert workers['spec']['replicas'] == 3 and workers['spec']['ordinals'] == {'start': 1}
    affinity = workers['spec']['template']['spec']['affinity']
    (term,) = affinity['nodeAffinity']['requiredDuringSchedulingIgnoredDuringExecution']['nodeSelectorTerms']
    assert term['matchExpressions'][0]['values'] == ['spark-02', 'gpu-c.example.com', 'spark-04']
    assert affinity['podAntiAffinity']['requiredDuringSchedulingIgnoredDuringExecution'][0]['topologyKey'] == \
        'kubernetes.io/hostname'
    # The headless Service selects pod 0 and governs both StatefulSets.
    service = named(objects, 'sglang-spark')
    assert service['spec']['clusterIP'] == 'None'
    assert service['spec']['selector']['apps.kubernetes.io/pod-index'] == '0'
    assert head['spec']['serviceName'] == workers['spec']['serviceName'] == 'sglang-spark'
    # The two StatefulSets select disjoint pods.
    assert head['spec']['selector'] != workers['spec']['selector']
    for statefulset in (head, workers):
        labels = statefulset['spec']['template']['metadata']['labels']
        assert statefulset['spec']['selector']['matchLabels'].items() <= labels.items()
        assert statefulset['spec']['updateStrategy'] == {'type': 'OnDelete'}
        assert statefulset['spec']['template']['spec']['hostNetwork'] is True


# ---- SGLANG_HOST_IP: the node's CX7 address, from the plan ----------------------------------------------------------

def run_start_script(tmp_path, objects, node):
    """The head container's command, as the kubelet runs it on ``node``, with a python3 that prints what it got."""
    statefulset = named(objects, 'sglang-spark-head')
    spec = container(statefulset)
    host_ip = named(objects, 'sglang-spark-host-ip')['data']
    folder = tmp_path / 'host-ip'
    folder.mkdir(exist_ok=True)
    for name, address in host_ip.items():   # the ConfigMap's volume: one file per key
        (folder / name).write_text(address)
    bindir = tmp_path / 'bin'
    bindir.mkdir(exist_ok=True)
    fake = bindir / 'python3'
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "SGLANG_HOST_IP=$SGLANG_HOST_IP" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {'NODE_NAME': node, 'POD_INDEX': '0', 'PATH': '%s:/usr/bin:/bin' % bindir}
    command = [kubelet_expand(t, env) for t in spec['command']]
    command[2] = command[2].replace(_kubernetes.HOST_IP_DIR, str(folder))
    args = [kubelet_expand(t, env) for t in spec['args']]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_start_script_exports_the_nodes_cx7_address_and_passes_the_argv_unchanged(tmp_path):
    plan = probed_plan(2)
    objects = render_manifests(plan, settings={'node_names': {'spark-02': 'gpu-b'}}, api_key=API_KEY)['objects']
    assert named(objects, 'sglang-spark-host-ip')['data'] == {'spark-01': '192.168.100.11', 'gpu-b': '192.168.100.12'}
    for node, address in (('spark-01', '192.168.100.11'), ('gpu-b', '192.168.100.12')):
        proc = run_start_script(tmp_path, objects, node)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == 'SGLANG_HOST_IP=' + address
        assert lines[1:] == ['-m', 'sglang.launch_server'] + plan_launch_argv(
            plan, 'spark-01', config_file='/etc/sglang/server.yaml')


def test_a_node_outside_the_plan_is_refused_before_sglang_starts(tmp_path):
    objects = render_manifests(probed_plan(2), api_key=API_KEY)['objects']
    proc = run_start_script(tmp_path, objects, 'stranger')
    assert proc.returncode == 78 and proc.stdout == ''
    assert 'stranger' in proc.stderr and 'kubernetes_node_names' in proc.stderr


def test_no_address_comes_from_the_pods_status():
    text = json.dumps(render_manifests(probed_plan(4), api_key=API_KEY))
    assert 'status.podIP' not in text and 'status.hostIP' not in text and 'SGLANG_HOST_IP' in text


# ---- NCCL, secrets, security ------------------------------------------------------------------------------------

def test_the_nccl_configmap_is_what_the_nccl_env_role_writes():
    plan = probed_plan(2)
    objects = render_manifests(plan, api_key=API_KEY)['objects']
    data = named(objects, 'sglang-spark-nccl')['data']
    assert data == plan['nodes']['spark-01']['nccl_env'] == plan['nodes']['spark-02']['nccl_env']
    assert data['NCCL_IB_HCA'] == '=rocep1s0f1,roceP2p1s0f1' and data['NCCL_SOCKET_IFNAME'].startswith('=')
    spec = container(named(objects, 'sglang-spark-workers'))
    assert spec['envFrom'] == [{'configMapRef': {'name': 'sglang-spark-nccl'}}]


def test_secrets_are_only_in_secrets():
    rendered = render_manifests(probed_plan(2), settings={'hub_offline': False, 'router': True}, api_key=API_KEY,
                                hf_token=HF_TOKEN)
    objects = json.dumps(rendered['objects'])
    assert API_KEY not in objects and HF_TOKEN not in objects
    assert all(o['kind'] == 'Secret' for o in rendered['secrets'])
    server = named(rendered['secrets'], 'sglang-spark-server-config')['stringData']['server.yaml']
    assert yaml.safe_load(server) == {'api-key': API_KEY}
    assert named(rendered['secrets'], 'sglang-hf-token')['stringData'] == {'token': HF_TOKEN}
    assert named(rendered['secrets'], 'sglang-router-api-key')['stringData'] == {'api-key': API_KEY}
    env = {e['name']: e for e in container(named(rendered['objects'], 'sglang-spark-head'))['env']}
    assert env['HF_TOKEN']['valueFrom'] == {'secretKeyRef': {'name': 'sglang-hf-token', 'key': 'token'}}
    assert 'HF_HUB_OFFLINE' not in env


def test_offline_by_default_no_token_anywhere():
    rendered = render_manifests(probed_plan(2), api_key=API_KEY, hf_token=HF_TOKEN)
    assert HF_TOKEN not in json.dumps(rendered)
    env = {e['name']: e.get('value') for e in container(named(rendered['objects'], 'sglang-spark-head'))['env']}
    assert env['HF_HUB_OFFLINE'] == '1' and 'HF_TOKEN' not in env


def test_security_context_with_rdma_root_with_ipc_lock_only():
    objects = render_manifests(probed_plan(2), api_key=API_KEY)['objects']
    spec = container(named(objects, 'sglang-spark-head'))
    security = spec['securityContext']
    assert security['capabilities'] == {'drop': ['ALL'], 'add': ['IPC_LOCK']}
    assert security['privileged'] is False and security['allowPrivilegeEscalation'] is False
    assert security['readOnlyRootFilesystem'] is True and security['runAsUser'] == 0
    assert spec['resources']['limits'] == {'nvidia.com/gpu': '1', 'rdma/hca_shared_devices_a': '1'}
    volumes = {v['name']: v for v in named(objects, 'sglang-spark-head')['spec']['template']['spec']['volumes']}
    assert volumes['dshm']['emptyDir']['medium'] == 'Memory'


def test_security_context_without_rdma_or_with_a_user_is_never_root():
    for plan, settings in ((probed_plan(2, rdma=False), {}), (probed_plan(2), {'run_as_user': 2000})):
        objects = render_manifests(plan, settings=settings, api_key=API_KEY)['objects']
        template = named(objects, 'sglang-spark-head')['spec']['template']['spec']
        security = container(named(objects, 'sglang-spark-head'))['securityContext']
        assert security['runAsNonRoot'] is True and security['runAsUser'] >= 1000
        assert template['securityContext']['fsGroup'] == security['runAsUser']
    no_rdma = render_manifests(probed_plan(2, rdma=False), api_key=API_KEY)['objects']
    spec = container(named(no_rdma, 'sglang-spark-head'))
    assert spec['securityContext']['capabilities'] == {'drop': ['ALL']}
    assert spec['resources']['limits'] == {'nvidia.com/gpu': '1'}


# ---- the router --------------------------------------------------------------------------------------------------

def test_two_groups_get_the_router_with_their_headless_services_as_workers():
    plan = two_groups()
    objects = render_manifests(plan, settings={'namespace': 'llm'}, api_key=API_KEY)['objects']
    router = named(objects, 'sglang-router', 'Deployment')
    args = router['spec']['template']['spec']['containers'][0]['args']
    urls = ['http://sglang-spark.llm.svc:30000', 'http://sglang-spark-b.llm.svc:30000']
    assert args[:-2] == _router.router_argv([{'url': u} for u in urls], '0.0.0.0', 30000, 'cache_aware', '0.0.0.0', 29000)
    assert args[-2:] == ['--api-key', '$(SGLANG_API_KEY)']
    assert {s['metadata']['name'] for s in by_kind(objects, 'Service')} == {'sglang-spark', 'sglang-spark-b', 'sglang-router'}
    # One group: no router unless asked for.
    assert not [o for o in render_manifests(probed_plan(2), api_key=API_KEY)['objects'] if o['kind'] == 'Deployment']


def test_the_router_refuses_a_bad_policy_and_a_port_clash():
    with pytest.raises(ProblemsError) as info:
        _router.router_argv([{'url': 'http://a:30000'}], '0.0.0.0', 29000, 'bucket', '0.0.0.0', 29001)
    assert codes(info.value.problems) == ['router-bad-policy']
    with pytest.raises(ProblemsError) as info:
        _router.router_argv([{'url': 'http://a:30000'}], '0.0.0.0', 29000, 'cache_aware', '0.0.0.0', 29000)
    assert codes(info.value.problems) == ['router-port-clash']


def test_problems_are_listed_together_by_code():
    plan = _cluster.plan_cluster(describe(2))   # not probed: no NCCL environment
    with pytest.raises(ProblemsError) as info:
        render_manifests(plan, settings={'namespace': 'Not_A_Label', 'shm_size': 'lots',
                                         'node_names': {'spark-09': 'x'}})
    found = info.value.problems
    assert sorted(codes(found)) == sorted(['k8s-bad-setting', 'k8s-bad-setting', 'k8s-bad-setting',
                                           'k8s-plan-not-probed', 'k8s-api-key-missing'])
    assert {p['variable'] for p in found} >= {'kubernetes_namespace', 'kubernetes_shm_size', 'kubernetes_node_names'}


def test_two_hosts_on_one_node_are_refused():
    with pytest.raises(ProblemsError) as info:
        render_manifests(probed_plan(2), settings={'node_names': {'spark-01': 'gpu', 'spark-02': 'gpu'}},
                         api_key=API_KEY)
    assert codes(info.value.problems) == ['k8s-node-name-twice']


# ---- the role's defaults are the renderer's ------------------------------------------------------------------------

def test_the_roles_defaults_are_the_renderers():
    defaults = yaml.safe_load((ROOT / 'roles' / 'kubernetes' / 'defaults' / 'main.yml').read_text())
    assert {key: defaults['kubernetes_' + key] for key in DEFAULTS} == DEFAULTS
    settings = yaml.safe_load((ROOT / 'roles' / 'kubernetes' / 'vars' / 'main.yml').read_text())['__kubernetes_settings']
    assert settings == {key: '{{ kubernetes_%s }}' % key for key in DEFAULTS}
    assert os.path.basename(DEFAULTS['router_image']).endswith(':' + _router.SMG_VERSION)
