"""Offline stand-in for pypa's get-pip.py, which ansible-test downloads to bootstrap pip in its venvs.

ansible-test fetches get-pip.py from a host that CI cannot reach, and says the script may be saved
by hand to ~/.ansible/test/cache/get_pip_<version>.py. The Makefile saves this file there: it
installs the pip bundled with CPython (ensurepip, no network), then lets that pip install what
ansible-test asked for (the exact pip version and friends) from the package index.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    # ensurepip points PIP_CONFIG_FILE at /dev/null in this process; the pip that follows must
    # read the machine's pip configuration (index, CA bundle) like any other pip here.
    environ = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args, env=environ)


if __name__ == "__main__":
    main()
