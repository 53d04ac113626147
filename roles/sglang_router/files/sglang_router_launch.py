# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start SGLang's router (SMG) as ``smg launch`` does, with the API key from the environment, never the command line.

SMG reads its API key from ``--api-key`` only, and a unit's command line is readable by every user (``ps``,
``systemctl show``). The unit's environment file (0600, root) sets ``SGLANG_ROUTER_API_KEY``; this launcher adds it to
the arguments inside the process and drops it from the environment, then hands over to SMG's own ``launch_router``.
Written by the dgxspark.sglang.sglang_router role.
"""

import os
import sys

from smg.launch_router import launch_router, parse_router_args


def main():
    argv = sys.argv[1:]
    key = os.environ.pop("SGLANG_ROUTER_API_KEY", "")
    if key:
        argv = argv + ["--api-key", key]
    launch_router(parse_router_args(argv))


if __name__ == "__main__":
    main()
