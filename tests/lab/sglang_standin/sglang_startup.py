# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What SGLang 0.5.23 runs at start-up that needs neither a GPU nor the model: its own code, from its wheel.

Shared by the lab's stand-in for ``launch_server`` (``sglang/launch_server.py`` beside this file) and the unit tests'
``tests/unit/sglang_parser.py``, so that both judge a command line the same way:

- ``prepare_server_args`` (``sglang/srt/server_args.py``): SGLang's parser, ``--config`` merged by its
  ``ConfigArgumentMerger``, ``logging.basicConfig`` with ``--log-level`` and ``ServerArgs.from_cli_args``;
- the hooks of ``sglang/srt/arg_groups/serving_hook.py`` that need no GPU (``GPU_FREE_HOOKS``), through ``run_hook``;
- the level SGLang hands to uvicorn (``--log-level-http``, else ``--log-level``), looked up in uvicorn's own
  ``LOG_LEVELS`` as ``uvicorn.Config.configure_logging`` does;
- the logging set-up of ``_launch_subprocesses`` (``srt/entrypoints/engine.py``): ``configure_logger`` of
  ``srt/utils/common.py`` (``SGLANG_LOGGING_CONFIG_PATH``'s JSON handed to ``logging.config.dictConfig``, else
  ``logging.basicConfig`` with ``--log-level``), then the ``server_args=...`` line at info, the API key included,
  through the logger ``sglang.srt.entrypoints.engine`` (``server_args_line``);
- the group shape that ``check_server_args`` (``sglang/srt/arg_groups/validation_hook.py``) asserts first:
  ``tp_size * pp_size`` divisible by ``nnodes`` (the rest of that function needs the model's config), and the rank
  range and dist-init address that a multi-node launch needs.
"""

from __future__ import annotations

GPU_FREE_HOOKS = ("handle_ssl_validation", "handle_asr_validation", "handle_deprecated_args", "handle_other_validations")


def sglang_version():
    from sglang.version import __version__  # pylint: disable=import-outside-toplevel
    return __version__


def prepare_server_args(argv):
    from sglang.srt.server_args import prepare_server_args as prepare  # pylint: disable=import-outside-toplevel
    return prepare(list(argv))


def configure_logger(record):
    """SGLang's own ``configure_logger`` (``srt/utils/common.py``), as ``_launch_subprocesses`` calls it first."""
    from sglang.srt.utils.common import configure_logger as configure  # pylint: disable=import-outside-toplevel
    configure(record)


def server_args_line(record):
    """The line ``_launch_subprocesses`` logs at info (``_server_args_for_logging`` of ``srt/entrypoints/engine.py``:
    ``redact_watermark_secrets(server_args.resolved_dict())``, which keeps the API key)."""
    from sglang.srt.sampling.watermarking.core import redact_watermark_secrets  # pylint: disable=import-outside-toplevel
    return f"server_args={redact_watermark_secrets(record.resolved_dict())}"


def hooks():
    """(name, function, run_hook) of each GPU-free start-up hook."""
    from sglang.srt.arg_groups import resolution_hooks, serving_hook  # pylint: disable=import-outside-toplevel
    return [(name, getattr(serving_hook, name), resolution_hooks.run_hook) for name in GPU_FREE_HOOKS]


def uvicorn_level_problem(record):
    """None, or why uvicorn would refuse the HTTP log level SGLang hands it (not with --enable-http2: Granian)."""
    if record.enable_http2:
        return None
    import uvicorn.config  # pylint: disable=import-outside-toplevel
    level = str(record.log_level_http or record.log_level).lower()
    if level not in uvicorn.config.LOG_LEVELS:
        return 'KeyError: %r (uvicorn knows %s)' % (level, ', '.join(uvicorn.config.LOG_LEVELS))
    return None


def group_problem(record):
    """None, or the AssertionError text SGLang raises for the group shape."""
    if record.nnodes < 1 or not 0 <= record.node_rank < record.nnodes:
        return "node_rank %s must be in [0, nnodes=%s)" % (record.node_rank, record.nnodes)
    if (record.tp_size * record.pp_size) % record.nnodes != 0:
        return "tp_size must be divisible by number of nodes"
    if record.nnodes > 1 and not record.dist_init_addr:
        return "--dist-init-addr is required when --nnodes > 1"
    return None


def startup_checks(argv):
    """The ServerArgs record of ``argv``, after every check above; raises like SGLang (argparse exits 2)."""
    record = prepare_server_args(argv)
    for _name, hook, run_hook in hooks():
        run_hook(hook, record)
    problem = uvicorn_level_problem(record)
    if problem:
        raise KeyError(problem)
    problem = group_problem(record)
    if problem:
        raise AssertionError(problem)
    return record
