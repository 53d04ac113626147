"""The SGLang container sees the NCCL environment file byte for byte as a systemd unit does.

The unit reads nccl.env twice over: ``EnvironmentFile=`` (systemd's parser, quotes and backslashes
understood) and ``docker run --env-file`` (Docker's parser: ``NAME=value`` taken literally, quotes
included). A value the two read differently reaches SGLang differently from what the unit shows. Each
view is read back as bytes (latin-1 maps every byte to one character): systemd's from a
``systemd-run`` process, Docker's from a container of the group's image.
"""

from __future__ import annotations

import json
import shlex

import pytest

ENV_FILE = "/etc/sglang/nccl.env"
PROBE_FILE = "/run/dgxspark-env-probe.env"
# Prints the process's environment as JSON, each name and value decoded byte for byte.
DUMP = ("import json, os; print(json.dumps({k.decode('latin-1'): v.decode('latin-1') "
        "for k, v in os.environb.items()}))")


def names_in(text):
    """The variable names an environment file assigns (comments and blank lines skipped)."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


@pytest.fixture(scope="module")
def image(host):
    return host.check_output("docker inspect --format '{{.Config.Image}}' sglang")


def systemd_view(host, env_file):
    out = host.check_output("systemd-run --quiet --wait --pipe --collect -p EnvironmentFile=%s /usr/bin/python3 -c %s"
                            % (shlex.quote(env_file), shlex.quote(DUMP)))
    return json.loads(out.splitlines()[-1])


def docker_view(host, env_file, image):
    out = host.check_output("docker run --rm --env-file %s %s python3 -c %s"
                            % (shlex.quote(env_file), shlex.quote(image), shlex.quote(DUMP)))
    return json.loads(out.splitlines()[-1])


def differences(host, env_file, image):
    """{name: (systemd's value, docker's value)} for every name of the file the two read differently."""
    names = names_in(host.file(env_file).content_string)
    assert names, "%s assigns no variable" % env_file
    by_systemd, by_docker = systemd_view(host, env_file), docker_view(host, env_file, image)
    return {n: (by_systemd.get(n), by_docker.get(n)) for n in names if by_systemd.get(n) != by_docker.get(n)
            or n not in by_systemd}


def test_the_container_reads_nccl_env_byte_for_byte_as_systemd(host, image):
    assert differences(host, ENV_FILE, image) == {}


def test_the_comparison_catches_a_quoted_value(host, image):
    # The control: systemd strips the quotes and Docker keeps them, so a quoted value must show up.
    host.run("printf '%%s\\n' %s > %s" % (shlex.quote('DGXSPARK_PROBE_BARE=a,b') + " "
                                          + shlex.quote('DGXSPARK_PROBE_QUOTED="a b"'), PROBE_FILE))
    try:
        assert differences(host, PROBE_FILE, image) == {"DGXSPARK_PROBE_QUOTED": ("a b", '"a b"')}
    finally:
        host.run("rm -f %s" % PROBE_FILE)


def test_the_running_unit_and_its_container_agree_on_every_nccl_variable(host):
    # The unit's main process is the docker client, which systemd started with EnvironmentFile=nccl.env; the
    # container's environment is what Docker made of --env-file nccl.env.
    pid = host.check_output("systemctl show -p MainPID --value sglang")
    assert pid != "0"
    by_systemd = dict(e.split("=", 1) for e in host.check_output(
        "tr '\\0' '\\n' < /proc/%s/environ" % pid).splitlines() if "=" in e)
    by_docker = dict(e.split("=", 1) for e in json.loads(host.check_output(
        "docker inspect --format '{{json .Config.Env}}' sglang")))
    names = names_in(host.file(ENV_FILE).content_string)
    assert names and {n: by_docker.get(n) for n in names} == {n: by_systemd.get(n) for n in names}
