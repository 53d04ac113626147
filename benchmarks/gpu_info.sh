#!/usr/bin/env bash
# Time dgxspark.sglang.gpu_info on a real GPU host that has no network.
#
#   benchmarks/gpu_info.sh            # N=5 runs; N=10 benchmarks/gpu_info.sh for more
#
# Needs python3 and nvidia-smi. When `ansible` is not on PATH (and there is no .venv), ansible-core is
# installed from the wheels in .whl/ into /tmp/site (offline, --no-deps: jinja2, PyYAML and packaging
# must already be importable by python3). Prints, for each of N runs: the wall time of
# `ansible localhost -c local -m dgxspark.sglang.gpu_info`, of the module run directly by python3 (no
# controller, no AnsiballZ), and of the two nvidia-smi calls the module makes; then the JSON result once,
# and the median of each column.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-5}

. benchmarks/_common.sh
use_ansible python3
if ! python3 -c 'import ansible, jinja2, yaml, packaging' 2>/dev/null; then
  echo "ansible-core cannot be imported (jinja2, PyYAML and packaging must be installed for python3):" >&2
  python3 -c 'import ansible, jinja2, yaml, packaging' >&2 || true
  exit 1
fi
SMI=$(command -v nvidia-smi || true)
if [ -z "$SMI" ]; then
  echo "nvidia-smi not on PATH: this benchmark is for a GPU host" >&2
  exit 1
fi
PY=$(command -v python3)
QUERY=$(python3 -c 'import sys; sys.path.insert(0, "plugins/module_utils"); import _nvidia_smi as s; print(s.query_argv("")[1])')

export ANSIBLE_CONFIG=$ROOT/ansible.cfg ANSIBLE_CALLBACK_RESULT_FORMAT=json ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

elapsed() { # command... ; prints seconds, output in $WORK/out, status in $WORK/rc
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" >"$WORK/out" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  echo "$rc" >"$WORK/rc"
  python3 -c "print('%.3f' % ($t1 - $t0))"
}

adhoc() {
  ansible localhost -i localhost, -c local -e "ansible_python_interpreter=$PY" -m dgxspark.sglang.gpu_info
}
direct() {
  PYTHONPATH="$ROOT/collections${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m ansible_collections.dgxspark.sglang.plugins.modules.gpu_info '{"ANSIBLE_MODULE_ARGS": {}}'
}
smi_query() { LC_ALL=C "$SMI" "$QUERY" --format=csv,nounits; }
smi_table() { LC_ALL=C "$SMI"; }

echo "# host: $(hostname)  python3: $($PY --version 2>&1)  ansible: $(ansible --version | sed -n 1p)"
echo "# nvidia-smi: $SMI"
printf '%-4s %12s %12s %14s %14s\n' run ansible_s direct_s smi_query_s smi_table_s
: >"$WORK/times"
for i in $(seq 1 "$N"); do
  a=$(elapsed adhoc)
  if [ "$(cat "$WORK/rc")" != 0 ]; then
    echo "ansible gpu_info failed (rc $(cat "$WORK/rc")):" >&2
    cat "$WORK/out" >&2
    exit 1
  fi
  [ "$i" = 1 ] && cp "$WORK/out" "$WORK/result"
  d=$(elapsed direct)
  q=$(elapsed smi_query)
  t=$(elapsed smi_table)
  printf '%-4s %12s %12s %14s %14s\n' "$i" "$a" "$d" "$q" "$t"
  echo "$a $d $q $t" >>"$WORK/times"
done
python3 - "$WORK/times" <<'EOF'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
print("%-4s %12.3f %12.3f %14.3f %14.3f" % (("med",) + tuple(statistics.median(col) for col in zip(*rows))))
EOF
echo "# result of run 1:"
cat "$WORK/result"
