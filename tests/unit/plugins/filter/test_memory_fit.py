"""memory_fit (plugins/filter/cluster.py): do a model's weights fit in the nodes' memory at mem-fraction-static?

Node memory comes from real captures (shared/fixtures/nvidia-smi/README.md):
- DGX Spark (GB10, unified memory): /proc/meminfo MemTotal 127600748 kB, which gpu_info reports as
  memory_total_mib = round(127600748 / 1024) = 124610 (130.7 GB);
- 2x H200 host: memory.total 143771 MiB per GPU (h200x2-query-gpu.csv).
"""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.dgxspark.sglang.plugins.filter.cluster import FilterModule, plan_memory_fit

GB = 1000 ** 3
GB10_MIB = int(round(127600748 / 1024.0))
H200_MIB = 143771


def gb10(n):
    gpu = {'name': 'NVIDIA GB10', 'unified_memory': True, 'memory_total_mib': GB10_MIB}
    return {'spark-%02d' % (i + 1): {'gpu_count': 1, 'gpus': [dict(gpu)]} for i in range(n)}


def test_gb10_figure_from_meminfo():
    assert GB10_MIB == 124610


def test_70b_bf16_does_not_fit_one_spark_and_needs_two():
    # The seed's table: a 70B model in bf16 needs about 140 GB -> TP 2 over two Sparks.
    fit = plan_memory_fit(140 * GB, gb10(1), 0.75)
    assert fit['fits'] is False
    assert (fit['node_gb'], fit['per_node_gb'], fit['capacity_gb']) == (130.7, 98.0, 98.0)
    assert fit['nodes_needed'] == 2
    assert 'run it on 2 nodes' in fit['message']
    assert '1 node(s) x 130.7 GB (spark-01, the smallest) x mem-fraction-static 0.75 = 98.0 GB' in fit['message']


def test_70b_bf16_fits_two_sparks():
    fit = plan_memory_fit(140 * GB, gb10(2), 0.75)
    assert fit['fits'] is True
    assert (fit['capacity_gb'], fit['nnodes'], fit['nodes_needed']) == (196.0, 2, 2)
    assert fit['message'].startswith('The weights (140.0 GB) fit')


def test_a_higher_fraction_still_needs_two_sparks_for_70b():
    fit = plan_memory_fit(140 * GB, gb10(1), 0.9)
    assert (fit['fits'], fit['per_node_gb'], fit['nodes_needed']) == (False, 117.6, 2)


def test_405b_needs_nine_sparks():
    fit = plan_memory_fit(810 * GB, gb10(2), 0.75)
    assert (fit['fits'], fit['nodes_needed']) == (False, 9)


def test_small_model_fits_one_spark():
    fit = plan_memory_fit(int(15.2 * GB), gb10(1), 0.75)
    assert (fit['fits'], fit['nodes_needed'], fit['weights_gb']) == (True, 1, 15.2)


def test_exactly_full_fits():
    node_bytes = GB10_MIB * 1024 ** 2
    assert plan_memory_fit(node_bytes * 0.5, gb10(1), 0.5)['fits'] is True
    assert plan_memory_fit(node_bytes * 0.5 + 1, gb10(1), 0.5)['fits'] is False


def test_the_smallest_node_bounds_every_rank():
    infos = gb10(1)
    infos['h200-host'] = {'gpus': [{'name': 'NVIDIA H200', 'memory_total_mib': H200_MIB}] * 2}
    fit = plan_memory_fit(200 * GB, infos, 0.75)
    assert fit['smallest_node'] == 'spark-01'
    assert (fit['fits'], fit['capacity_gb']) == (False, 196.0)
    # A node's GPUs add up: 2 x 143771 MiB.
    alone = plan_memory_fit(200 * GB, {'h200-host': infos['h200-host']}, 0.75)
    assert (alone['node_gb'], alone['fits']) == (301.5, True)


@pytest.mark.parametrize('weights, infos, fraction, words', [
    (-1, gb10(1), 0.75, 'number of bytes'),
    (True, gb10(1), 0.75, 'number of bytes'),
    (1, gb10(1), 0, 'mem-fraction-static'),
    (1, gb10(1), 1.5, 'mem-fraction-static'),
    (1, {}, 0.75, 'no gpu_info results'),
    (1, {'spark-01': {'gpus': [{'memory_total_mib': None}]}}, 0.75, 'host spark-01 reports no usable GPU memory'),
    (1, {'spark-01': {'gpus': []}}, 0.75, 'host spark-01'),
])
def test_bad_input_is_refused(weights, infos, fraction, words):
    with pytest.raises(ValueError, match=words):
        plan_memory_fit(weights, infos, fraction)


def test_filter_wraps_errors():
    memory_fit = FilterModule().filters()['memory_fit']
    assert memory_fit(140 * GB, gb10(2))['fraction'] == 0.75
    with pytest.raises(AnsibleFilterError, match='mem-fraction-static'):
        memory_fit(1, gb10(1), 2)
