# Sourced by the benchmark scripts (never run alone): what each of them needs before its first ansible call.
#
# use_ansible PYTHON: put ansible on PATH: the one already there, else the checkout's .venv, else ansible-core from
#   the wheels in .whl/ (offline, --no-deps) in /tmp/site, installed once with PYTHON and reused afterwards. A wheel
#   built for another Python (cffi, cryptography) makes pip refuse the whole set: then only the pure-Python ones are
#   installed (ansible-core needs cryptography only for vault). Returns 1 when the install fails.
# use_out_dir: OUT_DIR (created), else $OUT (what the device machine brings back), else a temporary folder.

use_ansible() {
  local py=$1
  command -v ansible >/dev/null 2>&1 && return 0
  if [ -x "$ROOT/.venv/bin/ansible" ]; then
    export PATH="$ROOT/.venv/bin:$PATH"
    return 0
  fi
  if [ ! -x /tmp/site/bin/ansible ]; then
    echo "# ansible not found: installing ansible-core from .whl/ into /tmp/site" >&2
    if ! "$py" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; then
      "$py" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*-py3-none-any.whl || return 1
    fi
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
}

use_out_dir() {
  if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"
  elif [ -n "${OUT:-}" ]; then
    OUT_DIR=$OUT
  else
    OUT_DIR=$(mktemp -d)
  fi
}
