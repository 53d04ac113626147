# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster plan as Kubernetes objects, in the shape of SGLang's upstream StatefulSet example.

SGLang's ``docker/k8s-sglang-distributed-sts.yaml`` runs one pod per node with hostNetwork, takes the node rank from
the pod index, points ``--dist-init-addr`` at a Service for pod 0 and gives ``/dev/shm`` an in-memory volume. Here the
same, per SGLang group of the plan, with what a DGX Spark needs and the example leaves out:

- **The flags are the systemd units' own**: every rank's arguments come from ``_sglang.plan_launch_argv`` (the
  function the sglang_server role's unit uses), with ``--node-rank`` taken from the pod index through the downward
  API (``$(POD_INDEX)``, which the kubelet expands). Nothing else differs.
- **The rendezvous is the head's CX7 address, with pod 0 on the head node** (the plan's ``dist_init_addr``, as in the
  units). The alternative, the headless Service's name, resolves to pod 0's pod IP, which with hostNetwork is the
  management address: the TCPStore (and, with DP attention, SGLang's ZMQ sockets on the ports above it) would then
  cross the management network, which the collection keeps to SSH and the API (the firewall, the lab's strict
  management bridge), and pods would need ``dnsPolicy: ClusterFirstWithHostNet`` to resolve it at all. A
  StatefulSet cannot place one ordinal on one node, so pod 0 has a StatefulSet of its own (``<group>-head``,
  pinned by ``kubernetes.io/hostname``), and the other ranks a second one whose ordinals start at 1
  (``<group>-workers``, ``spec.ordinals.start``): the pod index is still the rank. The headless Service selects pod
  0: it governs both StatefulSets and is the group's address for the router.
- **SGLANG_HOST_IP is the node's CX7 address, never the pod's status**: with hostNetwork ``status.podIP`` is the
  management address, which brings back the ``shm_broadcast`` hang (FACTS.md). A ConfigMap maps each node's name to
  its CX7 address from the plan; the container reads the entry of ``spec.nodeName`` before it starts SGLang, and
  refuses to start on a node the plan does not know.
- The NCCL environment is a ConfigMap with the content the nccl_env role writes (the plan's ``nccl_env``); the API
  key is a Secret holding the ``server.yaml`` that ``--config`` reads, as on the nodes; the Hugging Face token, when
  the pods may download, a Secret read as ``HF_TOKEN``. Never a secret in a ConfigMap or on a command line.
- GPUs and RDMA are resource requests (``nvidia.com/gpu``, and the NVIDIA network operator's shared RDMA device,
  ``rdma/hca_shared_devices_a``, when the probe found RDMA devices behind the twins), not ``privileged``.

The router (SMG) for several groups is a Deployment with the groups' headless Services as workers
(``_router.router_argv``, the systemd router's too). Pure Python (no Ansible objects); ``plugins/filter/kubernetes.py`` wraps it.
"""

from __future__ import annotations

import hashlib
import json
import re

from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import ProblemsError, problem
from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import plan_launch_argv
from ansible_collections.dgxspark.sglang.plugins.module_utils._router import (
    DEFAULT_METRICS_PORT as ROUTER_METRICS_PORT,
    DEFAULT_POLICY as ROUTER_POLICY,
    SMG_VERSION,
    router_argv,
)

# The Kubernetes version whose schemas the objects are checked against (kubernetes-validate, in the unit tests). The
# objects need 1.31 or newer: spec.ordinals of a StatefulSet (GA in 1.31) and the pod-index label (GA in 1.32).
KUBERNETES_VERSION = '1.33.0'
POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index'
HOSTNAME_LABEL = 'kubernetes.io/hostname'
SERVER_CONFIG = 'server.yaml'
HOST_IP_DIR = '/etc/dgxspark/host-ip'
HOME = '/home/sglang'
SUBJECT = 'The Kubernetes objects of the cluster plan'

# The defaults of the settings: the kubernetes role's defaults and argument spec document them (a test keeps them
# equal).
DEFAULTS = {
    'namespace': 'sglang',
    'node_names': {},
    'image': None,
    'gpu_resource': 'nvidia.com/gpu',
    'rdma_resource': 'rdma/hca_shared_devices_a',
    'rdma_resource_count': 1,
    'shm_size': '16Gi',
    'run_as_user': None,
    'hub_offline': True,
    'router': None,
    'router_image': 'ghcr.io/lightseekorg/smg:%s' % SMG_VERSION,
    'router_policy': ROUTER_POLICY,
    'router_port': 30000,
    'router_metrics_port': ROUTER_METRICS_PORT,
    'router_replicas': 1,
}
# The variable of each setting, for the problems.
VARIABLES = dict((key, 'kubernetes_' + key) for key in DEFAULTS)

NON_ROOT_UID = 1000
ROUTER_NAME = 'sglang-router'

_DNS_LABEL = re.compile(r'^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')
_DNS_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_QUANTITY = re.compile(r'^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$')
_RESOURCE = re.compile(r'^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')


# ---- names --------------------------------------------------------------------------------------------------

def object_name(group):
    """The name of a group's objects: ``sglang-<group>``, lower case, ``_`` and ``.`` as ``-``."""
    return 'sglang-' + re.sub(r'[^a-z0-9-]+', '-', str(group).lower()).strip('-')


def kubelet_escape(token):
    """A token that the kubelet passes on unchanged: it expands ``$(NAME)`` and turns ``$$`` into ``$``, so every
    ``$`` is doubled."""
    return str(token).replace('$', '$$')


def kubelet_expand(token, env):
    """What the kubelet makes of ``token`` in ``command``/``args``: ``$(NAME)`` of a defined variable is its value,
    ``$$`` is ``$``, anything else stays (Kubernetes' expansion rules; used by the tests to play the kubelet)."""
    out, i = [], 0
    while i < len(token):
        if token.startswith('$$', i):
            out.append('$')
            i += 2
            continue
        match = re.match(r'\$\(([A-Za-z_][A-Za-z0-9_]*)\)', token[i:])
        if match and match.group(1) in env:
            out.append(env[match.group(1)])
            i += len(match.group(0))
            continue
        out.append(token[i])
        i += 1
    return ''.join(out)


# ---- settings ---------------------------------------------------------------------------------------------------

def _settings(settings):
    values = dict(DEFAULTS)
    values.update({k: v for k, v in (settings or {}).items() if v is not None})
    return values


def _check_settings(values, plan):
    problems = []

    def bad(key, what, fix):
        problems.append(problem('k8s-bad-setting', VARIABLES[key], what, fix, 'the kubernetes role'))

    if not isinstance(values['namespace'], str) or not _DNS_LABEL.match(values['namespace']):
        bad('namespace', 'is %r, not a Kubernetes namespace name (a DNS label)' % (values['namespace'],),
            'use lower-case letters, digits and dashes, e.g. sglang')
    if not isinstance(values['node_names'], dict):
        bad('node_names', 'must map inventory names to Kubernetes node names, got %r' % (values['node_names'],),
            'write e.g. {spark-01: spark-01.example.com}')
    else:
        for host, node in values['node_names'].items():
            if host not in plan['nodes']:
                bad('node_names', 'names %s, which is not a node of the plan (%s)' % (host, ', '.join(sorted(plan['nodes']))),
                    'use the inventory names of the group')
            elif not isinstance(node, str) or not _DNS_SUBDOMAIN.match(node) or len(node) > 253:
                bad('node_names', 'gives %s the node name %r, not a Kubernetes node name' % (host, node),
                    'write the name `kubectl get nodes` shows')
    for key in ('gpu_resource', 'rdma_resource'):
        if not isinstance(values[key], str) or not _RESOURCE.match(values[key]):
            bad(key, 'is %r, not an extended resource name' % (values[key],), 'write e.g. %s' % DEFAULTS[key])
    for key in ('rdma_resource_count', 'router_replicas'):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            bad(key, 'is %r, not a whole number of 1 or more' % (value,), 'write e.g. %s' % DEFAULTS[key])
    if not isinstance(values['shm_size'], str) or not _QUANTITY.match(values['shm_size']):
        bad('shm_size', 'is %r, not a Kubernetes quantity' % (values['shm_size'],), 'write e.g. 16Gi')
    uid = values['run_as_user']
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 1):
        bad('run_as_user', 'is %r: set a user id of 1 or more, or null (root with IPC_LOCK only where RDMA needs it)'
            % (uid,), 'write e.g. %d, or leave it null' % NON_ROOT_UID)
    if values['router'] not in (None, True, False):
        bad('router', 'is %r, not true, false or null (a router when there are several groups)' % (values['router'],),
            'write true, false or null')
    return problems


def _node_name(values, host):
    return (values['node_names'] or {}).get(host, host)


# ---- per group --------------------------------------------------------------------------------------------------

def _group_problems(plan, name, group, values):
    problems = []
    hosts = group['hosts']
    envs = [plan['nodes'][h].get('nccl_env') for h in hosts]
    if any(env is None for env in envs):
        missing = [h for h, env in zip(hosts, envs) if env is None]
        problems.append(problem('k8s-plan-not-probed', 'spark_cluster_plan',
                                'holds no NCCL environment for %s (stage %s): it is built from the RDMA devices the '
                                'probe finds' % (', '.join(missing), plan.get('stage')),
                                'run the dgxspark.sglang.preflight role first, with preflight_probe: true',
                                'group ' + name, missing))
    elif any(env != envs[0] for env in envs[1:]):
        odd = [h for h, env in zip(hosts, envs) if env != envs[0]]
        problems.append(problem('k8s-nccl-env-differs', 'spark_cx7_interfaces',
                                'the NCCL environment of %s differs from that of %s, but the pods of a group share one '
                                'ConfigMap' % (', '.join(odd), hosts[0]),
                                'give every node of the group the same twins and RDMA devices (ibdev2netdev)',
                                'group ' + name, odd))
    node_names = [_node_name(values, h) for h in hosts]
    twice = sorted(set(n for n in node_names if node_names.count(n) > 1))
    if twice:
        problems.append(problem('k8s-node-name-twice', VARIABLES['node_names'],
                                'gives several hosts of group %s the node name %s' % (name, ', '.join(twice)),
                                'map each host to its own Kubernetes node', 'the kubernetes role', hosts))
    if group.get('tls'):
        problems.append(problem('k8s-tls-unsupported', 'sglang_server_tls',
                                'is true, but the pods get no certificate files (the units\' TLS files live on the nodes)',
                                'set sglang_server_tls: false for the Kubernetes render, and terminate TLS at an Ingress '
                                'or the router', 'group ' + name, hosts))
    obj = object_name(name)
    # The workers' StatefulSet name carries '-workers' more; the router's objects are sglang-router.
    if not _DNS_LABEL.match(obj) or len(obj) > 52 or obj == ROUTER_NAME:
        problems.append(problem('k8s-bad-group-name', 'preflight_group',
                                'the group %r makes the object name %r, too long, not a DNS label or the router\'s'
                                % (name, obj),
                                'use a short group name of letters, digits and dashes', 'inventory', hosts))
    return problems


def _labels(name, part=None):
    labels = {'app.kubernetes.io/name': 'sglang', 'app.kubernetes.io/instance': name,
              'app.kubernetes.io/managed-by': 'dgxspark.sglang'}
    if part:
        labels['app.kubernetes.io/component'] = part
    return labels


def _security(rdma, values):
    """The pod's and the container's security context, with the reasons beside each choice."""
    uid = values['run_as_user']
    root = uid is None and rdma
    container = {
        # Nothing in SGLang needs to gain privileges (no setuid binaries, no sudo).
        'allowPrivilegeEscalation': False,
        # Not privileged, unlike upstream's example: the GPU and the RDMA devices come in as resources from their
        # device plugins, which add exactly those device nodes.
        'privileged': False,
        # The image's files stay as they are; what SGLang writes (compiled kernels, caches) goes to the emptyDir
        # volumes at HOME and /tmp.
        'readOnlyRootFilesystem': True,
        # Every capability dropped. With RDMA, IPC_LOCK stays: NCCL's GPUDirect RDMA registers (pins) memory with
        # the HCA, beyond RLIMIT_MEMLOCK, which a pod cannot raise (the units use --ulimit memlock=-1).
        'capabilities': {'drop': ['ALL'], 'add': ['IPC_LOCK']} if rdma else {'drop': ['ALL']},
        'seccompProfile': {'type': 'RuntimeDefault'},
    }
    if root:
        # Root, with that one capability: Kubernetes gives added capabilities to root only (it sets no ambient
        # capabilities, so a non-root process never holds IPC_LOCK), and SGLang's image runs as root. Set
        # kubernetes_run_as_user where the nodes' container runtime raises RLIMIT_MEMLOCK to unlimited.
        container['runAsUser'] = 0
        container['runAsNonRoot'] = False
        pod = {'seccompProfile': {'type': 'RuntimeDefault'}}
    else:
        # Not root: the image's Python and the model cache (mounted read-only) only need reading.
        uid = NON_ROOT_UID if uid is None else uid
        container.update({'runAsUser': uid, 'runAsGroup': uid, 'runAsNonRoot': True})
        # fsGroup: the Secret's server.yaml (mode 0440) is readable by the group of the pod, not by others.
        pod = {'fsGroup': uid, 'seccompProfile': {'type': 'RuntimeDefault'}}
    return pod, container


def _start_script(group_name):
    """The container's command: SGLANG_HOST_IP from the plan's entry for this node, then launch_server."""
    return '\n'.join([
        'set -eu',
        'f="%s/${NODE_NAME}"' % HOST_IP_DIR,
        'if [ ! -s "$f" ]; then',
        '  echo "node ${NODE_NAME} has no CX7 address in the cluster plan of group %s; fix: add it to the group, or set '
        'kubernetes_node_names so that its inventory name maps to it" >&2' % group_name,
        '  exit 78',
        'fi',
        'SGLANG_HOST_IP="$(cat "$f")"',
        'export SGLANG_HOST_IP',
        'exec python3 -m sglang.launch_server "$@"',
    ]) + '\n'


def _argv_template(plan, group, config_file):
    """The head's launch_server arguments, escaped for the kubelet, with --node-rank from the pod index."""
    argv = plan_launch_argv(plan, group['head'], config_file=config_file)
    out = [kubelet_escape(token) for token in argv]
    rank = argv.index('--node-rank') if '--node-rank' in argv else None
    if rank is not None:
        out[rank + 1] = '$(POD_INDEX)'
    return out


def _image(group, values):
    """The image: kubernetes_image, else the group's, by the digest the staging role recorded when there is one."""
    if values['image']:
        return values['image']
    image, digest = group['image'], (group.get('image_pin') or {}).get('digest')
    if not digest or '@' in image:
        return image
    repository, _sep, tag = image.rpartition(':')
    return '%s@%s' % (repository if repository and '/' not in tag else image, digest)


def _pod_template(plan, name, group, values, part, placement, annotations):
    obj = object_name(name)
    rdma = any(plan['nodes'][h]['probe'] and plan['nodes'][h]['probe'].get('rdma_devices') for h in group['hosts'])
    pod_security, container_security = _security(rdma, values)
    config_file = '%s/%s' % (group['config_dir'].rstrip('/'), SERVER_CONFIG)
    limits = {values['gpu_resource']: str(group['gpus_per_node'])}
    if rdma:
        limits[values['rdma_resource']] = str(values['rdma_resource_count'])
    env = [
        # The rank: the pod index (the upstream example's POD_INDEX), expanded by the kubelet in --node-rank.
        {'name': 'POD_INDEX', 'valueFrom': {'fieldRef': {'apiVersion': 'v1',
                                                         'fieldPath': "metadata.labels['%s']" % POD_INDEX_LABEL}}},
        # The node, whose CX7 address the start script looks up (never status.podIP: the management address here).
        {'name': 'NODE_NAME', 'valueFrom': {'fieldRef': {'apiVersion': 'v1', 'fieldPath': 'spec.nodeName'}}},
        {'name': 'HF_HOME', 'value': group['cache_dir']},
        {'name': 'HOME', 'value': HOME},
        {'name': 'USER', 'value': 'sglang'},
        {'name': 'PYTHONUNBUFFERED', 'value': '1'},
    ]
    if values['hub_offline']:
        # The model is staged on every node (the staging role): SGLang never asks the hub, as in the units.
        env.append({'name': 'HF_HUB_OFFLINE', 'value': '1'})
    elif values.get('_hf_token'):
        env.append({'name': 'HF_TOKEN', 'valueFrom': {'secretKeyRef': {'name': 'sglang-hf-token', 'key': 'token'}}})
    mounts = [
        {'name': 'dshm', 'mountPath': '/dev/shm'},
        {'name': 'home', 'mountPath': HOME},
        {'name': 'tmp', 'mountPath': '/tmp'},
        {'name': 'host-ip', 'mountPath': HOST_IP_DIR, 'readOnly': True},
        {'name': 'server-config', 'mountPath': group['config_dir'], 'readOnly': True},
        {'name': 'hf-cache', 'mountPath': group['cache_dir'], 'readOnly': bool(values['hub_offline'])},
    ]
    volumes = [
        # /dev/shm in memory, as upstream's example (NCCL and SGLang's shm_broadcast use it); the units use the
        # host's through --ipc host.
        {'name': 'dshm', 'emptyDir': {'medium': 'Memory', 'sizeLimit': values['shm_size']}},
        {'name': 'home', 'emptyDir': {}},
        {'name': 'tmp', 'emptyDir': {}},
        {'name': 'host-ip', 'configMap': {'name': obj + '-host-ip'}},
        {'name': 'server-config', 'secret': {'secretName': obj + '-server-config', 'defaultMode': 0o440}},
        {'name': 'hf-cache', 'hostPath': {'path': group['cache_dir'], 'type': 'Directory'}},
    ]
    if group['model'].get('local'):
        mounts.append({'name': 'model', 'mountPath': group['model']['path'], 'readOnly': True})
        volumes.append({'name': 'model', 'hostPath': {'path': group['model']['path'], 'type': 'Directory'}})
    container = {
        'name': 'sglang',
        'image': _image(group, values),
        'imagePullPolicy': 'IfNotPresent',
        'command': ['/bin/sh', '-c', kubelet_escape(_start_script(name)), 'sglang'],
        'args': _argv_template(plan, group, config_file),
        'env': env,
        'envFrom': [{'configMapRef': {'name': obj + '-nccl'}}],
        'ports': [{'name': 'http', 'containerPort': group['port'], 'protocol': 'TCP'}],
        # Rank 0's /health; the other ranks answer 200 there always (FACTS.md).
        'readinessProbe': {'httpGet': {'path': '/health', 'port': group['port']}, 'periodSeconds': 10,
                           'failureThreshold': 3},
        'resources': {'limits': limits},
        'securityContext': container_security,
        'volumeMounts': mounts,
    }
    spec = {
        'hostNetwork': True,
        'enableServiceLinks': False,
        'terminationGracePeriodSeconds': 90,
        'securityContext': pod_security,
        'containers': [container],
        'volumes': volumes,
    }
    spec.update(placement)
    return {'metadata': {'labels': _labels(obj, part), 'annotations': annotations}, 'spec': spec}


def _statefulset(plan, name, group, values, part, replicas, start, placement, annotations):
    obj = object_name(name)
    spec = {
        'serviceName': obj,
        'replicas': replicas,
        # All ranks start together, as the units do (a rank waits for the others in the rendezvous).
        'podManagementPolicy': 'Parallel',
        # A multi-node group does not survive one rank restarting: the kubernetes role restarts all pods of a group
        # together after a change, never one by one.
        'updateStrategy': {'type': 'OnDelete'},
        'selector': {'matchLabels': _labels(obj, part)},
        'template': _pod_template(plan, name, group, values, part, placement, annotations),
    }
    if start:
        spec['ordinals'] = {'start': start}
    return {'apiVersion': 'apps/v1', 'kind': 'StatefulSet',
            'metadata': {'name': '%s-%s' % (obj, part), 'namespace': values['namespace'], 'labels': _labels(obj, part)},
            'spec': spec}


def _group_objects(plan, name, group, values):
    obj = object_name(name)
    ns = values['namespace']
    nodes = {h: _node_name(values, h) for h in group['hosts']}
    nccl = dict((k, str(v)) for k, v in plan['nodes'][group['head']]['nccl_env'].items())
    host_ip = dict((nodes[h], plan['nodes'][h]['host_ip']) for h in group['hosts'])
    nccl_cm = {'apiVersion': 'v1', 'kind': 'ConfigMap',
               'metadata': {'name': obj + '-nccl', 'namespace': ns, 'labels': _labels(obj)}, 'data': nccl}
    host_cm = {'apiVersion': 'v1', 'kind': 'ConfigMap',
               'metadata': {'name': obj + '-host-ip', 'namespace': ns, 'labels': _labels(obj)}, 'data': host_ip}
    # A change of the NCCL environment or of the addresses changes the pods' template, which the role sees as a change
    # of the StatefulSets and answers with a restart of the whole group.
    digest = hashlib.sha256(json.dumps([nccl, host_ip], sort_keys=True).encode()).hexdigest()
    annotations = {'dgxspark.sglang/config-sha256': digest}
    service = {'apiVersion': 'v1', 'kind': 'Service',
               'metadata': {'name': obj, 'namespace': ns, 'labels': _labels(obj)},
               'spec': {'clusterIP': 'None', 'publishNotReadyAddresses': True,
                        'selector': {'app.kubernetes.io/instance': obj, POD_INDEX_LABEL: '0'},
                        'ports': [{'name': 'http', 'port': group['port'], 'targetPort': group['port'],
                                   'protocol': 'TCP'}]}}
    head = _statefulset(plan, name, group, values, 'head', 1, 0,
                        {'nodeSelector': {HOSTNAME_LABEL: nodes[group['head']]}}, annotations)
    objects = [nccl_cm, host_cm, service, head]
    others = [nodes[h] for h in group['hosts'] if h != group['head']]
    if others:
        placement = {'affinity': {
            # Only the group's other nodes, one pod on each.
            'nodeAffinity': {'requiredDuringSchedulingIgnoredDuringExecution': {'nodeSelectorTerms': [
                {'matchExpressions': [{'key': HOSTNAME_LABEL, 'operator': 'In', 'values': others}]}]}},
            'podAntiAffinity': {'requiredDuringSchedulingIgnoredDuringExecution': [
                {'labelSelector': {'matchLabels': {'app.kubernetes.io/instance': obj}}, 'topologyKey': HOSTNAME_LABEL}]},
        }}
        objects.append(_statefulset(plan, name, group, values, 'workers', len(others), 1, placement, annotations))
    return objects


def _server_config_secret(name, group, values, api_key):
    obj = object_name(name)
    return {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
            'metadata': {'name': obj + '-server-config', 'namespace': values['namespace'], 'labels': _labels(obj)},
            # The same file as the units' server.yaml, read with --config (SGLang reads the key nowhere else).
            'stringData': {SERVER_CONFIG: 'api-key: %s\n' % json.dumps(api_key)}}


# ---- the router ---------------------------------------------------------------------------------------------

def _router_objects(plan, values):
    ns = values['namespace']
    obj = ROUTER_NAME
    urls = ['http://%s.%s.svc:%d' % (object_name(name), ns, group['port'])
            for name, group in sorted(plan['groups'].items())]
    args = [kubelet_escape(t) for t in router_argv(
        [{'url': url} for url in urls], host='0.0.0.0', port=values['router_port'], policy=values['router_policy'],
        metrics_host='0.0.0.0', metrics_port=values['router_metrics_port'])]
    # SMG reads the workers' key from its command line only: the kubelet expands it from the Secret, so the key is in
    # no object (it is in the process's arguments inside the pod).
    args += ['--api-key', '$(SGLANG_API_KEY)']
    labels = _labels(obj, 'router')
    deployment = {'apiVersion': 'apps/v1', 'kind': 'Deployment',
                  'metadata': {'name': obj, 'namespace': ns, 'labels': labels},
                  'spec': {'replicas': values['router_replicas'], 'selector': {'matchLabels': labels},
                           'template': {'metadata': {'labels': labels}, 'spec': {
                               'enableServiceLinks': False,
                               'securityContext': {'runAsNonRoot': True, 'runAsUser': 65532, 'runAsGroup': 65532,
                                                   'seccompProfile': {'type': 'RuntimeDefault'}},
                               'containers': [{
                                   'name': 'smg',
                                   'image': values['router_image'],
                                   'imagePullPolicy': 'IfNotPresent',
                                   'args': args,
                                   'env': [{'name': 'SGLANG_API_KEY', 'valueFrom': {'secretKeyRef': {
                                       'name': obj + '-api-key', 'key': 'api-key'}}}],
                                   'ports': [{'name': 'http', 'containerPort': values['router_port']},
                                             {'name': 'metrics', 'containerPort': values['router_metrics_port']}],
                                   'readinessProbe': {'tcpSocket': {'port': values['router_port']}, 'periodSeconds': 10},
                                   # A router needs no privilege at all: an unprivileged user, no capability, a
                                   # read-only image (ports above 1024, nothing written).
                                   'securityContext': {'allowPrivilegeEscalation': False, 'privileged': False,
                                                       'readOnlyRootFilesystem': True,
                                                       'capabilities': {'drop': ['ALL']}},
                               }]}}}}
    service = {'apiVersion': 'v1', 'kind': 'Service',
               'metadata': {'name': obj, 'namespace': ns, 'labels': labels},
               'spec': {'selector': labels, 'ports': [
                   {'name': 'http', 'port': values['router_port'], 'targetPort': values['router_port']},
                   {'name': 'metrics', 'port': values['router_metrics_port'], 'targetPort': values['router_metrics_port']}]}}
    return [deployment, service]


# ---- all ------------------------------------------------------------------------------------------------------

def render_manifests(plan, settings=None, api_key=None, hf_token=None):
    """The Kubernetes objects of a probed cluster plan: ``{'objects': [...], 'secrets': [...]}``, plain dicts.

    ``settings``: the kubernetes role's settings without the ``kubernetes_`` prefix (DEFAULTS for the missing ones).
    ``api_key``: the API key of the groups (required), ``hf_token``: the Hugging Face token, used only when
    ``hub_offline`` is false. The secrets are kept apart, so that a caller can write them with other care.
    Raises ProblemsError with every problem.
    """
    values = _settings(settings)
    problems = _check_settings(values, plan)
    for name, group in sorted(plan['groups'].items()):
        problems += _group_problems(plan, name, group, values)
    if not isinstance(api_key, str) or not api_key:
        problems.append(problem('k8s-api-key-missing', 'sglang_server_api_key', 'no API key was given to the render',
                                'pass the key (the kubernetes role takes sglang_server_api_key, else generates one)',
                                'the kubernetes role'))
    router = values['router'] if values['router'] is not None else len(plan['groups']) > 1
    if problems:
        raise ProblemsError(problems, SUBJECT)
    values['_hf_token'] = bool(hf_token) and not values['hub_offline']
    namespace = {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': values['namespace']}}
    objects, secrets = [namespace], []
    try:
        for name, group in sorted(plan['groups'].items()):
            objects += _group_objects(plan, name, group, values)
            secrets.append(_server_config_secret(name, group, values, api_key))
        if router:
            objects += _router_objects(plan, values)
    except ProblemsError as exc:
        raise ProblemsError(exc.problems, SUBJECT) from None
    if router:
        secrets.append({'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                        'metadata': {'name': ROUTER_NAME + '-api-key', 'namespace': values['namespace'],
                                     'labels': _labels(ROUTER_NAME, 'router')},
                        'stringData': {'api-key': api_key}})
    if values['_hf_token']:
        secrets.append({'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                        'metadata': {'name': 'sglang-hf-token', 'namespace': values['namespace'],
                                     'labels': _labels('sglang')},
                        'stringData': {'token': hf_token}})
    return {'objects': objects, 'secrets': secrets}
