# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""SGLang 0.5.23's own argument parser and start-up checks, for the tests: the real wheel, no GPU.

requirements-sglang.txt installs ``sglang==0.5.23`` with ``--no-deps`` and only the modules its parser imports. This
module calls SGLang's code, never a copy of it:

- ``parse(argv)``: ``ServerArgs.add_cli_args(argparse.ArgumentParser())``, with ``ConfigArgumentMerger`` merging the
  YAML file of ``--config`` first, as ``prepare_server_args`` does; the argparse ``Namespace``, or ``Rejected``;
- ``server_args(argv)``: SGLang's ``prepare_server_args`` (``sglang/srt/server_args.py``), what ``launch_server``
  runs first: the merge, the parse, ``logging.basicConfig(level=getattr(logging, log_level.upper()))`` (so
  ``--log-level trace`` dies here) and ``ServerArgs.from_cli_args``;
- ``check_argv(argv)``: ``server_args(argv)``, then the checks SGLang runs at start-up that need neither a GPU nor the
  model, from ``tests/lab/sglang_standin/sglang_startup.py``, which the lab's stand-in runs too: the GPU-free hooks of
  ``sglang/srt/arg_groups/serving_hook.py`` through SGLang's ``run_hook``, and the level SGLang hands to uvicorn;
- ``check(args)``: ``check_argv`` on the argv that ``_sglang.launch_argv`` renders for a ``sglang_server_args`` dict,
  with a ``--config`` YAML file that carries an API key, as the role always writes one;
- ``hand_written_argv(args)``: the tokens a user would type for the same dict, with none of our checks (to show what
  SGLang itself does with a dict that ``_sglang`` refuses).

What SGLang checks later, on a GPU node (the KV pool sizing that ``--mem-fraction-static`` feeds,
``check_server_args`` against the model's config, the multi-tokenizer workers' API-key assertion, binding ports),
cannot run here; the tests say so case by case.

Importing SGLang sets a few cache variables in ``os.environ`` (``redirect_third_party_caches``) and
``prepare_server_args`` reconfigures the root logger (``basicConfig(force=True)``): both are put back, so the rest of
the test session does not see them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import pathlib
import tempfile
import warnings

from ansible_collections.dgxspark.sglang.plugins.module_utils._sglang import launch_argv

API_KEY = 'a-test-key-of-the-role-0123456789'
MODEL = 'Qwen/Qwen2.5-0.5B-Instruct'

_SGLANG = {}
STARTUP = pathlib.Path(__file__).resolve().parents[1] / 'lab' / 'sglang_standin' / 'sglang_startup.py'


def _startup():
    """sglang_startup.py of the stand-in, loaded by path (its folder's ``sglang`` package must not shadow the wheel)."""
    spec = importlib.util.spec_from_file_location('sglang_startup', str(STARTUP))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Rejected(Exception):
    """SGLang refused an argv: ``stage`` is where (parse, prepare_server_args, a hook's name, uvicorn)."""

    def __init__(self, stage, message):
        self.stage = stage
        self.message = message
        super().__init__('%s: %s' % (stage, message))


def _load():
    """SGLang's modules (imported once); raises ImportError when the wheel is not installed."""
    if _SGLANG:
        return _SGLANG
    saved = dict(os.environ)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            import sglang  # pylint: disable=import-outside-toplevel
            from sglang.srt import server_args  # pylint: disable=import-outside-toplevel
            from sglang.srt.utils.server_args_config_parser import (  # pylint: disable=import-outside-toplevel
                ConfigArgumentMerger,
            )
            startup = _startup()
            hooks = startup.hooks()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _SGLANG.update(
        version=sglang.__version__,
        ServerArgs=server_args.ServerArgs,
        prepare_server_args=server_args.prepare_server_args,
        ConfigArgumentMerger=ConfigArgumentMerger,
        hooks=hooks,
        uvicorn_level_problem=startup.uvicorn_level_problem,
    )
    return _SGLANG


def unavailable():
    """None when SGLang's parser can be imported, else why not (for pytest.skip)."""
    try:
        _load()
    except ImportError as exc:
        return ('SGLang 0.5.23 is not installed in this venv (%s): run `make venv`, which installs '
                'requirements-sglang.txt' % exc)
    return None


def version():
    return _load()['version']


@contextlib.contextmanager
def _quiet_argparse():
    """argparse prints its error to stderr and exits 2: catch both and raise Rejected with the message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            yield
    except SystemExit as exc:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        raise Rejected('parse', lines[-1] if lines else 'argparse exited with %s' % exc.code) from None


@contextlib.contextmanager
def _root_logging_kept():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def parser():
    """The parser ``launch_server`` builds: ``ServerArgs.add_cli_args(argparse.ArgumentParser())``."""
    sglang = _load()
    new = argparse.ArgumentParser(prog='sglang serve')
    sglang['ServerArgs'].add_cli_args(new)
    return new


def parse(argv):
    """SGLang's parse of ``argv`` (``--config`` merged first by ``ConfigArgumentMerger``): the Namespace."""
    sglang = _load()
    argv = [str(token) for token in argv]
    new = parser()
    with _quiet_argparse():
        if '--config' in argv:
            try:
                argv = sglang['ConfigArgumentMerger'](new).merge_config_with_args(argv)
            except ValueError as exc:
                raise Rejected('ConfigArgumentMerger', str(exc)) from None
        return new.parse_args(argv)


def server_args(argv):
    """SGLang's ``prepare_server_args(argv)``: the ServerArgs record ``launch_server`` starts from."""
    sglang = _load()
    argv = [str(token) for token in argv]
    with _root_logging_kept(), _quiet_argparse():
        try:
            return sglang['prepare_server_args'](argv)
        except (AttributeError, ValueError, TypeError) as exc:  # the log level, the --config file
            raise Rejected('prepare_server_args', '%s: %s' % (type(exc).__name__, exc)) from None


def check_argv(argv):
    """``server_args(argv)`` and SGLang's start-up checks that need no GPU and no model; the ServerArgs record."""
    sglang = _load()
    record = server_args(argv)
    problem = sglang['uvicorn_level_problem'](record)
    if problem:
        raise Rejected('uvicorn', problem)
    for name, hook, run_hook in sglang['hooks']:
        with _root_logging_kept():
            try:
                run_hook(hook, record)
            except (AssertionError, ValueError) as exc:
                raise Rejected(name, '%s: %s' % (type(exc).__name__, exc)) from None
    return record


@contextlib.contextmanager
def config_file(api_key=API_KEY):
    """A ``--config`` YAML file like the role's: the API key and nothing else."""
    with tempfile.TemporaryDirectory(prefix='sglang-parser-') as tmp:
        path = os.path.join(tmp, 'server.yaml')
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write('api-key: %s\n' % api_key)
        yield path


def check(args, api_key=API_KEY, **launch):
    """``check_argv`` on what ``_sglang.launch_argv`` renders for ``args`` (a sglang_server_args dict)."""
    with config_file(api_key) as path:
        argv = launch_argv(launch.pop('model', MODEL), extra=args, config_file=path, **launch)
        return check_argv(argv)


def hand_written_argv(args):
    """The tokens a user would type for ``args``, key as written, no check: ``--key value``, ``--switch``, JSON."""
    argv = []
    for key, value in args.items():
        flag = '--' + str(key)
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            argv.append(flag)
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.extend([flag, json.dumps(value)])
        else:
            argv.extend([flag, str(value)])
    return argv


def check_hand_written(args, api_key=API_KEY):
    """``check_argv`` on a hand-written command line for ``args``, with the role's model and --config file."""
    with config_file(api_key) as path:
        return check_argv(['--model-path', MODEL, '--config', path] + hand_written_argv(args))
