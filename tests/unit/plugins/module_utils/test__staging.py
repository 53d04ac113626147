

# ---- the inputs: checked before any host is touched ------------------------------------------------------------------

def describe(**values):
    hosts = [{'name': 'spark-%02d' % i, 'vars': dict(values, ansible_host='10.0.0.%d' % (10 + i),
                                                       sglang_server_model=REPO,
                                                       spark_cx7_subnets=['192.168.100.0/24', '192.168.101.0/24'])}
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
    from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import check_description
    problems, plan = check_description(describe(**{var: value}))
    assert plan is None and [(p['code'], p['variable']) for p in problems] == [(code, var)]
    assert problems[0]['fix']


def test_proxies_reach_the_plan_and_never_cover_the_cx7_link():
    from ansible_collections.dgxspark.sglang.plugins.module_utils._cluster import plan_cluster
    plan = plan_cluster(describe(spark_https_proxy='http://proxy.example.com:3128', spark_no_proxy='.corp, 10.0.0.0/8'))
    env = plan['proxy_env']
    assert env['https_proxy'] == env['HTTPS_PROXY'] == 'http://proxy.example.com:3128' and 'http_proxy' not in env
    assert env['no_proxy'] == 'localhost,127.0.0.1,192.168.100.0/24,192.168.101.0/24,.corp,10.0.0.0/8'
    assert plan_cluster(describe())['proxy_env'] == {}
    group = plan['groups']['spark']
    assert group['record'] == '/etc/sglang/pins.json' and group['cache_dir'] == '/var/lib/sglang/huggingface'
