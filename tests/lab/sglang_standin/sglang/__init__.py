# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lab stand-in for SGLang: its own ``launch_server`` (see launch_server.py), everything else from SGLang's wheel.

This package comes first on PYTHONPATH and lends the rest of ``sglang`` from the real wheel installed in the same
Python (the lab's torch venv, or the test venv): ``sglang.srt.server_args``, ``sglang.srt.utils.network``,
``sglang.version`` and the rest resolve there. The wheel's own ``__init__`` (model-side patches, the frontend
language) is not run. Never shipped (tests/ is in galaxy.yml's build_ignore) and never installed on a real Spark.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _wheel():
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or os.curdir), "sglang")
        if candidate != _HERE and os.path.isfile(os.path.join(candidate, "srt", "server_args.py")):
            return candidate
    return None


_WHEEL = _wheel()
if _WHEEL is None:
    raise ImportError("the lab's stand-in for sglang.launch_server runs SGLang's own parser and message queue, but %s "
                      "has no SGLang wheel. Fix: run it with the lab's venv (tests/lab/lab.py torch builds it) or "
                      "the test venv (make venv)" % sys.executable)
__path__.append(_WHEEL)  # noqa: F821 pylint: disable=undefined-variable

from sglang.version import __version__  # noqa: E402 pylint: disable=wrong-import-position
