# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lab stand-in for SGLang: only ``python3 -m sglang.launch_server`` (see launch_server.py).

Never shipped (tests/ is in galaxy.yml's build_ignore) and never installed on a real Spark.
"""

from __future__ import annotations

__version__ = "0.5.23+lab.standin"
