#!/usr/bin/env bash
# What dgxspark.sglang.nccl_allreduce can show on a host with ONE GPU (issue 15; the 2- and 4-GPU comparison with
# nccl-tests is benchmarks/allreduce_vs_nccl_tests.sh):
#
#   benchmarks/allreduce_one_gpu.sh            # on the GPU host; BACKEND=gloo to try the command lines on a CPU
#
#   1. local_ranks above the GPU count (GPUs + 1, so 2 on a 1-GPU host), backend nccl, runtime python, the host's
#      python3 and its torch: the task must fail at once, naming both numbers. Timed.
#   2. one node, one rank (nnodes=1, local_ranks=1): must succeed with applicable=false and a reason, no all-reduce;
#      2b. the same with local_ranks left out (one rank per GPU: one on a 1-GPU host).
#   3. benchmarks/gpu_info.sh (N=5).
# No bandwidth: one rank has no peer, so an all-reduce measures nothing.
#
# Each step runs `ansible localhost -c local -m dgxspark.sglang.nccl_allreduce -a JSON`; the raw outputs go to
# OUT_DIR (default $OUT when set, else a temporary folder) and a summary with an expectation check per step is
# printed (and written to OUT_DIR/summary.txt). Exit status: 0 when every step behaved as described, 3 when one
# did not, 1 on errors. ansible-core: as in benchmarks/gpu_info.sh (the checkout's .venv, else the wheels in .whl/).
#
# Variables: PYTHON (the interpreter with torch; default python3), BACKEND (nccl), PORT (29511), TIMEOUT (60: the
# module's timeout for step 1, so that a hang costs a minute, not five), OVER (local_ranks of step 1; default
# GPUs + 1, or 2 with gloo), N (gpu_info.sh runs, 5), SKIP_GPU_INFO (1 to skip step 3).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-$(command -v python3)}
BACKEND=${BACKEND:-nccl}
PORT=${PORT:-29511}
TIMEOUT=${TIMEOUT:-60}
export N=${N:-5}

. benchmarks/_common.sh
use_ansible python3 || exit 1
use_out_dir
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
BAD=0

say "# host: $(hostname)  kernel: $(uname -r)  ansible: $(ansible --version 2>/dev/null | sed -n 1p)"
say "# $("$PY" - <<'EOF'
import sys
try:
    import torch
except ImportError as exc:
    print("python %s: no torch (%s)" % (sys.executable, exc)); raise SystemExit
line = "python %s %s; torch %s (CUDA %s); torch sees %d GPU(s)" % (
    sys.executable, sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.device_count())
if torch.cuda.is_available():
    line += "; %s; NCCL %s" % (torch.cuda.get_device_name(0), ".".join(map(str, torch.cuda.nccl.version())))
print(line)
EOF
)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu /' |
    tee -a "$SUMMARY"
fi
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "$BACKEND" = gloo ]; then
  OVER=${OVER:-2}
else
  OVER=${OVER:-$((GPUS + 1))}
fi
T0=$(date +%s.%N)
"$PY" -c 'import torch; torch.cuda.device_count()' >/dev/null 2>&1
say "# baseline: python -c 'import torch; torch.cuda.device_count()' took $("$PY" -c "print('%.3f' % ($(date +%s.%N) - $T0))") s"

export ANSIBLE_CONFIG=$ROOT/ansible.cfg ANSIBLE_CALLBACK_RESULT_FORMAT=json ANSIBLE_NOCOLOR=1 \
  ANSIBLE_DEPRECATION_WARNINGS=0
args_json() { # local_ranks (or "" to leave it out), timeout
  "$PY" -c 'import json, sys
args = dict(backend=sys.argv[1], runtime="python", python=sys.argv[2], master_addr="127.0.0.1",
            master_port=int(sys.argv[3]), nnodes=1, node_rank=0, timeout=int(sys.argv[5]),
            env={"NCCL_NVLS_ENABLE": "0"})
if sys.argv[4]:
    args["local_ranks"] = int(sys.argv[4])
if sys.argv[1] == "gloo":
    args["max_bytes"] = 1048576  # a CPU try of the command lines, not a measurement
print(json.dumps(args))' "$BACKEND" "$PY" "$PORT" "$1" "$2"
}
# step NAME LOCAL_RANKS TIMEOUT: runs the module, output in OUT_DIR/NAME.txt, wall time in $WALL, status in $RC.
step() {
  local args t0
  args=$(args_json "$2" "$3")
  echo "\$ ansible localhost -i localhost, -c local -e ansible_python_interpreter=$PY -m dgxspark.sglang.nccl_allreduce -a '$args'" \
    >"$OUT_DIR/$1.txt"
  t0=$(date +%s.%N)
  ansible localhost -i localhost, -c local -e "ansible_python_interpreter=$PY" \
    -m dgxspark.sglang.nccl_allreduce -a "$args" >>"$OUT_DIR/$1.txt" 2>&1
  RC=$?
  WALL=$("$PY" -c "print('%.3f' % ($(date +%s.%N) - $t0))")
}
# result FILE: the module's status and result JSON from an ad-hoc run's output.
result() {
  "$PY" - "$1" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
found = re.search(r"^localhost \| ([A-Z!]+) => ", text, re.MULTILINE)
if not found:
    print("NO-RESULT")
    print(json.dumps({}))
    raise SystemExit
print(found.group(1))
print(json.dumps(json.JSONDecoder().raw_decode(text[found.end():])[0], sort_keys=True))
EOF
}

say ""
say "## 1. local_ranks=$OVER on a host where torch sees $GPUS GPU(s), backend $BACKEND, timeout $TIMEOUT"
step local_ranks_over "$OVER" "$TIMEOUT"
R=$(result "$OUT_DIR/local_ranks_over.txt")
STATUS=$(echo "$R" | sed -n 1p)
JSON=$(echo "$R" | sed -n 2p)
MSG=$(echo "$JSON" | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("msg"))')
say "ansible rc $RC, status $STATUS, wall ${WALL} s"
say "msg: $MSG"
say "stage: $(echo "$JSON" | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("stage"))')"
if [ "$BACKEND" = nccl ]; then
  CHECK=$("$PY" - "$STATUS" "$MSG" "$WALL" "$OVER" "$GPUS" "$TIMEOUT" <<'EOF'
import re, sys
status, msg, wall, over, gpus, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
bad = []
if status != "FAILED!":
    bad.append("status %s, not FAILED!" % status)
if not re.search(r"\b%s\b" % over, msg):
    bad.append("msg does not name %s ranks" % over)
if not re.search(r"\b%d GPUs?\b" % gpus, msg):
    bad.append("msg does not name %d GPU(s)" % gpus)
if "timed out" in msg or wall >= min(30, timeout - 1):
    bad.append("not at once: %.1f s" % wall)
print("; ".join(bad) if bad else "ok")
EOF
)
else
  CHECK="(gloo: no GPU check, status only)"
fi
say "expectation (FAILED at once, naming $OVER ranks and $GPUS GPU(s)): $CHECK"
case $CHECK in ok|"(gloo"*) ;; *) BAD=1 ;; esac

for variant in "2a not_applicable 1" "2b not_applicable_default"; do
  set -- $variant
  label=$1 name=$2 ranks=${3:-}
  say ""
  say "## $label. nnodes=1, node_rank=0, local_ranks=${ranks:-(left out)}, backend $BACKEND"
  step "$name" "$ranks" 120
  R=$(result "$OUT_DIR/$name.txt")
  STATUS=$(echo "$R" | sed -n 1p)
  JSON=$(echo "$R" | sed -n 2p)
  say "ansible rc $RC, status $STATUS, wall ${WALL} s"
  say "result: $JSON"
  CHECK=$("$PY" - "$STATUS" "$JSON" <<'EOF'
import json, sys
status, result = sys.argv[1], json.loads(sys.argv[2])
bad = []
if status != "SUCCESS":
    bad.append("status %s, not SUCCESS" % status)
if result.get("applicable") is not False:
    bad.append("applicable is %r, not false" % result.get("applicable"))
if "not apply" not in (result.get("reason") or "") and "not applicable" not in (result.get("reason") or ""):
    bad.append("reason %r does not say it does not apply" % result.get("reason"))
for key in ("results", "passed", "bandwidth_verdict", "peak_busbw_gbps"):
    if key in result:
        bad.append("%s present" % key)
if result.get("world_size") != 1 or result.get("local_ranks") != 1:
    bad.append("world_size %r, local_ranks %r (want 1, 1)" % (result.get("world_size"), result.get("local_ranks")))
print("; ".join(bad) if bad else "ok")
EOF
)
  say "expectation (SUCCESS, applicable=false, a reason, no results, world 1): $CHECK"
  [ "$CHECK" = ok ] || BAD=1
  if [ "$BACKEND" = gloo ] && [ -z "$ranks" ]; then
    break # gloo left out is one rank too; nothing new to see
  fi
done

if [ "${SKIP_GPU_INFO:-0}" != 1 ]; then
  say ""
  say "## 3. benchmarks/gpu_info.sh (N=$N)"
  bash benchmarks/gpu_info.sh >"$OUT_DIR/gpu_info.txt" 2>&1
  RC=$?
  say "rc $RC"
  sed -n '1,/^# result of run 1:/p' "$OUT_DIR/gpu_info.txt" | tee -a "$SUMMARY"
  [ "$RC" = 0 ] || BAD=1
fi

say ""
if [ "$BAD" = 0 ]; then
  say "ALL AS DESCRIBED (raw outputs in $OUT_DIR)"
else
  say "SOMETHING DID NOT BEHAVE AS DESCRIBED (raw outputs in $OUT_DIR)"
  exit 3
fi
