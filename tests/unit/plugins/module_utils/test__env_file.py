# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of plugins/module_utils/_env_file.py: one env-file format that systemd and docker read the same.

The two readers are modelled here from their sources (read, not copied): systemd's parse_env_file_internal
(src/basic/env-file.c, a state machine) and docker/cli's pkg/kvfile (the parser behind ``docker run --env-file``).
Each model returns what the process would get: name -> value.
"""

from __future__ import annotations

import pathlib
import random
import re
import shlex
import subprocess

import pytest

from ansible_collections.dgxspark.sglang.plugins.module_utils import _cluster
from ansible_collections.dgxspark.sglang.plugins.module_utils._env_file import (
    EnvFileError,
    check_entry,
    header_text,
    render_env_file,
    value_trouble,
)
from ansible_collections.dgxspark.sglang.plugins.module_utils._problems import codes

_WS = ' \t\n\r'
_NEWLINE = '\n\r'
_SHELL_NEED_ESCAPE = '"\\`$'


def systemd_reads(text):
    """What systemd's EnvironmentFile= gives a service: its env-file state machine, as read in env-file.c."""
    env = {}
    state, key, value, key_ws, value_ws = 'pre_key', '', '', None, None

    def push():
        name = key[:key_ws] if key_ws is not None else key
        env[name] = value

    for c in text:
        if state == 'pre_key':
            if c in '#;':
                state = 'comment'
            elif c not in _WS:
                state, key, key_ws = 'key', c, None
        elif state == 'key':
            if c in _NEWLINE:
                state, key = 'pre_key', ''
            elif c == '=':
                state, value, value_ws = 'pre_value', '', None
            else:
                if c not in _WS:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key += c
        elif state == 'pre_value':
            if c in _NEWLINE:
                push()
                state, key, value = 'pre_key', '', ''
            elif c == "'":
                state = 'single'
            elif c == '"':
                state = 'double'
            elif c == '\\':
                state = 'value_escape'
            elif c not in _WS:
                state, value = 'value', value + c
        elif state == 'value':
            if c in _NEWLINE:
                if value_ws is not None:
                    value = value[:value_ws]
                push()
                state, key, value = 'pre_key', '', ''
            elif c == '\\':
                state, value_ws = 'value_escape', None
            else:
                if c not in _WS:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value += c
        elif state == 'value_escape':
            state = 'value'
            if c not in _NEWLINE:
                value += c
        elif state == 'single':
            if c == "'":
                state = 'pre_value'
            else:
                value += c
        elif state == 'double':
            if c == '"':
                state = 'pre_value'
            elif c == '\\':
                state = 'double_escape'
            else:
                value += c
        elif state == 'double_escape':
            state = 'double'
            if c in _SHELL_NEED_ESCAPE:
                value += c
            elif c != '\n':
                value += '\\' + c
        elif state == 'comment':
            if c == '\\':
                state = 'comment_escape'
            elif c in _NEWLINE:
                state = 'pre_key'
        elif state == 'comment_escape':
            state = 'pre_key' if c in _NEWLINE else 'comment'
    if state in ('pre_value', 'value', 'value_escape', 'single', 'double', 'double_escape'):
        if state == 'value' and value_ws is not None:
            value = value[:value_ws]
        push()
    return env


def docker_reads(text, client_env=None):
    """What ``docker run --env-file`` gives a container: docker/cli's kvfile, as read in pkg/kvfile/kvfile.go."""
    env = {}
    for number, raw in enumerate(text.split('\n'), 1):
        line = raw[:-1] if raw.endswith('\r') else raw  # bufio.ScanLines drops one trailing CR
        if number == 1 and line.startswith('\ufeff'):
            line = line[1:]
        line = line.lstrip()
        if not line or line.startswith('#'):
            continue
        name, sep, value = line.partition('=')
        if not name or ' ' in name or '\t' in name:
            raise ValueError('docker refuses the line %r' % line)
        if sep:
            env[name] = value
        elif client_env and name in client_env:
            env[name] = client_env[name]  # a bare NAME takes the docker client's own value
    return env


def both_read(mapping, header=()):
    text = render_env_file(mapping, header)
    return systemd_reads(text), docker_reads(text, {'HF_TOKEN': 'from-the-client'})


# ---- accepted values: both readers get exactly what was written ------------------------------------------------------

ACCEPTED = [
    '', 'WARN', '=enp1s0f1np1,enP2p1s0f1np1', '^docker,lo', '=rocep1s0f1:1,roceP2p1s0f1:1', '/tmp/nccl.%h.%p',
    '[%F %T]', '%F %T', 'allreduce:tree;allgather:ring', 'a#b', '#start', ';start', 'a=b=c', '192.168.100.0/24',
    'hf_AbC123-._~+/=', '0', '1', 'x' * 1000, '[::1]:29500', 'a & b | c', '*?()[]{}<>!',
]


@pytest.mark.parametrize('value', ACCEPTED)
def test_accepted_values_reach_systemd_and_docker_byte_for_byte(value):
    mapping = {'NAME': value, 'NEXT': 'x'}
    assert value_trouble('NAME', value) is None
    systemd, docker = both_read(mapping, ['# a header', '# ends here \\ no: it ends with this'])
    assert systemd == mapping == docker


def test_random_values_are_either_read_the_same_by_both_or_refused():
    rng = random.Random(9)
    alphabet = 'aZ09_.,:/=@%+^-~ #;"\'\\`$\t\xa0\u2028é!*?'
    accepted = refused = 0
    for dummy in range(2000):
        value = ''.join(rng.choice(alphabet) for dummy in range(rng.randrange(0, 8)))
        if value_trouble('V', value) is None:
            accepted += 1
            assert both_read({'V': value}) == ({'V': value}, {'V': value}), repr(value)
        else:
            refused += 1
            with pytest.raises(EnvFileError):
                render_env_file({'V': value})
    assert accepted > 100 and refused > 100


def test_bools_and_numbers_are_written_as_text():
    assert both_read({'A': True, 'B': False, 'C': 4, 'D': 0.5}) == ({'A': '1', 'B': '0', 'C': '4', 'D': '0.5'},) * 2


# ---- refused values: the two readers would disagree (or another reader would expand them) -------------------------

@pytest.mark.parametrize('value, code, systemd, docker', [
    ('"a b"', 'env-value-quote', 'a b', '"a b"'),
    ("'x'", 'env-value-quote', 'x', "'x'"),
    ('a\\b', 'env-value-backslash', 'ab', 'a\\b'),
    (' lead', 'env-value-edge-space', 'lead', ' lead'),
    ('trail ', 'env-value-edge-space', 'trail', 'trail '),
    ('a\rb', 'env-value-control', 'a', 'a\rb'),
])
def test_refused_values_are_those_the_readers_read_differently(value, code, systemd, docker):
    naive = 'NAME=%s\n' % value  # what writing the value as it is would give
    assert (systemd_reads(naive)['NAME'], docker_reads(naive)['NAME']) == (systemd, docker)
    assert value_trouble('NAME', value)[0] == code
    with pytest.raises(EnvFileError) as info:
        render_env_file({'NAME': value})
    assert codes(info.value.problems) == [code]


@pytest.mark.parametrize('value, code', [
    ('$HOME', 'env-value-expansion'), ('${X}', 'env-value-expansion'), ('`id`', 'env-value-expansion'),
    ('a\nB=c', 'env-value-control'), ('a\tb', 'env-value-control'), ('a\x00b', 'env-value-control'),
    ('a\x7fb', 'env-value-control'), ('caf\u00e9', 'env-value-non-ascii'), ('nbsp\xa0', 'env-value-non-ascii'),
    ('line\u2028sep', 'env-value-non-ascii'), ('x' * 70000, 'env-value-too-long'),
])
def test_other_refused_values(value, code):
    assert value_trouble('NAME', value)[0] == code


def test_a_line_break_would_smuggle_a_second_variable_into_both_readers():
    naive = 'NCCL_DEBUG=INFO\nNCCL_IB_HCA=mlx5_0\n'
    assert 'NCCL_IB_HCA' in systemd_reads(naive) and 'NCCL_IB_HCA' in docker_reads(naive)
    assert value_trouble('NCCL_DEBUG', 'INFO\nNCCL_IB_HCA=mlx5_0')[0] == 'env-value-control'


def test_a_problem_names_the_variable_and_the_fix_but_never_the_value():
    value, bad = check_entry('HF_TOKEN', 'hf_secret"x', 'sglang_server_hf_token')
    assert value is None
    assert (bad['code'], bad['variable']) == ('env-value-quote', 'sglang_server_hf_token')
    assert 'HF_TOKEN' in bad['what'] and 'bare' in bad['fix']
    assert 'hf_secret' not in bad['message']


def test_every_bad_entry_is_reported_at_once():
    with pytest.raises(EnvFileError) as info:
        render_env_file({'1X': 'a', 'A': None, 'B': '"q"', 'C': 'fine', 'D': ['x']}, variable='v')
    assert codes(info.value.problems) == ['env-bad-name', 'env-bad-value', 'env-value-quote', 'env-bad-value']
    assert {p['variable'] for p in info.value.problems} == {'v'}


def test_a_name_without_equals_is_never_written():
    """docker would fill such a line from the client's own environment; render always writes NAME=value."""
    assert docker_reads('HF_TOKEN\n', {'HF_TOKEN': 'leak'}) == {'HF_TOKEN': 'leak'}
    assert systemd_reads('HF_TOKEN\n') == {}
    assert render_env_file({'HF_TOKEN': ''}) == 'HF_TOKEN=\n'
    assert both_read({'HF_TOKEN': ''}) == ({'HF_TOKEN': ''},) * 2


# ---- the header ---------------------------------------------------------------------------------------------------

def test_header_lines_are_comments_both_readers_skip():
    assert header_text(['# one', '# two']) == '# one\n# two\n' == header_text('# one\n# two\n')
    assert header_text(None) == '' == header_text([])
    text = render_env_file({'A': 'b'}, ['# one'])
    assert systemd_reads(text) == docker_reads(text) == {'A': 'b'}


@pytest.mark.parametrize('header', [['; a systemd-only comment'], ['NOT=comment'], ['# ends in a backslash \\'],
                                    ['# tab\there'], '# no newline at the end'])
def test_headers_outside_the_format_are_refused(header):
    with pytest.raises(ValueError):
        render_env_file({}, header)


def test_before_systemd_254_a_comment_ending_in_a_backslash_hid_the_next_line():
    """Why the header check refuses it: the model follows 254+, where the next line is read again; older ones
    swallowed it. Either way, no header line may end in a backslash."""
    assert systemd_reads('# c \\\nA=1\n') == {'A': '1'}


# ---- the other writers use the same format ----------------------------------------------------------------------

def test_every_token_preflight_accepts_is_written_bare():
    """secrets.env holds HF_TOKEN; preflight (_cluster) accepts only characters the format keeps."""
    pattern = _cluster._SECRET_OK.pattern
    assert pattern.startswith('^[') and pattern.endswith(']+$')
    for code in range(32, 127):
        char = chr(code)
        if re.match(pattern, char):
            assert value_trouble('HF_TOKEN', 'a%sb' % char) is None, char


def test_preflight_refuses_a_value_outside_the_format_naming_variable_hosts_and_fix():
    """What preflight runs (_cluster.check_description): the problem carries the hosts and the fix."""
    from ansible_collections.dgxspark.sglang.tests.unit.plugins.module_utils.test__cluster import describe

    problems, plan = _cluster.check_description(describe(2, nccl_env_extra={'NCCL_DEBUG_SUBSYS': '"INIT,NET"'}))
    assert plan is None
    [bad] = [p for p in problems if p['severity'] == 'error']
    assert (bad['code'], bad['variable']) == ('env-value-quote', 'nccl_env_extra')
    assert bad['hosts'] == ['spark-01', 'spark-02'] and bad['where']
    assert 'NCCL_DEBUG_SUBSYS' in bad['message'] and 'Fix: write the value bare' in bad['message']


_GENERATOR = pathlib.Path('/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator')


@pytest.mark.skipif(not _GENERATOR.exists(), reason='systemd environment.d generator not installed')
def test_the_systemd_model_agrees_with_systemd_itself(tmp_path):
    """systemd's environment.d generator reads files with the same parser as EnvironmentFile= (then expands $,
    so no value here holds one) and prints the result shell-quoted: the model must read every line the same."""
    # '' left out: the generator drops an empty assignment, EnvironmentFile= sets the variable to ''.
    values = [v for v in ACCEPTED if v] + ['"a b"', "'x'", 'a\\b', ' lead', 'trail ', '"q"x', 'a"b', 'x\\', '#c']
    lines = ['V%d=%s' % (i, value) for i, value in enumerate(values)]
    text = '# comment\n; another\n' + '\n'.join(lines) + '\n'
    conf = tmp_path / '.config' / 'environment.d'
    conf.mkdir(parents=True)
    (conf / 'test.conf').write_text(text)
    out = subprocess.run([str(_GENERATOR)], env={'HOME': str(tmp_path)}, capture_output=True, text=True, check=True)
    real = {}
    for line in out.stdout.splitlines():
        name, _sep, quoted = line.partition('=')
        if name.startswith('V'):
            real[name] = ''.join(shlex.split(quoted)) if quoted else ''
    assert real == systemd_reads(text)
