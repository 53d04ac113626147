#!/usr/bin/env bash
# Compare dgxspark.sglang.nccl_allreduce with nccl-tests' all_reduce_perf on one multi-GPU host.
#
#   ALL_REDUCE_PERF=/path/to/all_reduce_perf benchmarks/allreduce_vs_nccl_tests.sh
#
# Runs, once each, with the same sizes (8 B .. 1 GiB, factor 2), 5 warm-up and 20 timed iterations:
#   1. nccl-tests: all_reduce_perf -b 8 -e 1073741824 -f 2 -g N -w 5 -n 20 (one process, N GPUs);
#   2. the module through Ansible: ansible localhost -c local -m dgxspark.sglang.nccl_allreduce with
#      local_ranks=N (one process per GPU), backend nccl, the host's python3 and its torch.
# Then prints both tables (nccl-tests' out-of-place columns), the ratio module/nccl-tests of the bus
# bandwidth per size, and a verdict for sizes >= 128 MiB against GOAL (0.97).
# Exit status: 0 when every size >= 128 MiB reaches GOAL, 3 when one does not, 1 on errors.
#
# all_reduce_perf is not built here and nothing of nccl-tests lives in this repository: build it
# beforehand from its own source (kept in the git-ignored .cache/nccl-tests) against the NCCL that
# torch uses (the pip package nvidia-nccl-cu13), and point ALL_REDUCE_PERF at the binary. Its
# default is .cache/nccl-tests/build/all_reduce_perf. That NCCL's lib folder is put first in
# LD_LIBRARY_PATH so that both sides run the same library.
#
# NCCL_NVLS_ENABLE=0 (and the other multicast switches) are exported for both runs: NVLink
# multicast must stay off on shared multi-GPU hosts.
#
# Variables: ALL_REDUCE_PERF, NGPUS (default: all GPUs torch sees), MAX_BYTES (1073741824),
# WARMUP (5), ITERS (20), GOAL (0.97), PORT (29511), OUT_DIR (where raw outputs go; default a
# temporary folder, or $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

ALL_REDUCE_PERF=${ALL_REDUCE_PERF:-$ROOT/.cache/nccl-tests/build/all_reduce_perf}
MIN_BYTES=8
MAX_BYTES=${MAX_BYTES:-1073741824}
WARMUP=${WARMUP:-5}
ITERS=${ITERS:-20}
GOAL=${GOAL:-0.97}
PORT=${PORT:-29511}
PY=$(command -v python3)

if [ ! -x "$ALL_REDUCE_PERF" ]; then
  echo "all_reduce_perf not found at $ALL_REDUCE_PERF: build nccl-tests from its source outside this" \
    "repository's tracked files and set ALL_REDUCE_PERF" >&2
  exit 1
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "$PY has no torch with CUDA: this benchmark is for a GPU host" >&2
  exit 1
fi
NGPUS=${NGPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count())')}
if [ "$NGPUS" -lt 2 ]; then
  echo "need at least 2 GPUs for an all-reduce between GPUs, found $NGPUS" >&2
  exit 1
fi

# The NCCL that torch loads: the pip package nvidia-nccl-cu13 (or -cu12), when present.
NCCL_LIB=$("$PY" - <<'EOF'
import importlib, os
for name in ("nvidia.nccl",):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        continue
    for path in getattr(mod, "__path__", []):
        lib = os.path.join(path, "lib")
        if os.path.isdir(lib):
            print(lib)
            raise SystemExit
EOF
)
if [ -n "$NCCL_LIB" ]; then
  export LD_LIBRARY_PATH=$NCCL_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# ansible-core: the checkout's .venv, else the wheels in .whl/ (offline), as benchmarks/gpu_info.sh does.
. benchmarks/_common.sh
use_ansible "$PY"
use_out_dir
echo "# host: $(hostname)  GPUs: $NGPUS  python3: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "NCCL", ".".join(map(str, torch.cuda.nccl.version())))'))"
echo "# NCCL lib: ${NCCL_LIB:-none found}  raw outputs: $OUT_DIR"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/# gpu /' || true

echo "# 1/2 nccl-tests: $ALL_REDUCE_PERF -b $MIN_BYTES -e $MAX_BYTES -f 2 -g $NGPUS -w $WARMUP -n $ITERS"
"$ALL_REDUCE_PERF" -b "$MIN_BYTES" -e "$MAX_BYTES" -f 2 -g "$NGPUS" -w "$WARMUP" -n "$ITERS" \
  >"$OUT_DIR/nccl-tests.txt" 2>&1 || {
  echo "all_reduce_perf failed:" >&2
  cat "$OUT_DIR/nccl-tests.txt" >&2
  exit 1
}

echo "# 2/2 module: ansible localhost -m dgxspark.sglang.nccl_allreduce (local_ranks=$NGPUS)"
ARGS=$("$PY" -c 'import json, sys; print(json.dumps(dict(
    backend="nccl", python=sys.argv[1], master_addr="127.0.0.1", master_port=int(sys.argv[2]), nnodes=1,
    node_rank=0, local_ranks=int(sys.argv[3]), min_bytes=int(sys.argv[4]), max_bytes=int(sys.argv[5]),
    step_factor=2, warmup_iters=int(sys.argv[6]), iters=int(sys.argv[7]), timeout=590,
    env={"NCCL_NVLS_ENABLE": "0"})))' "$PY" "$PORT" "$NGPUS" "$MIN_BYTES" "$MAX_BYTES" "$WARMUP" "$ITERS")
ANSIBLE_CONFIG=$ROOT/ansible.cfg ANSIBLE_CALLBACK_RESULT_FORMAT=json ANSIBLE_NOCOLOR=1 \
  ANSIBLE_DEPRECATION_WARNINGS=0 \
  ansible localhost -i localhost, -c local -e "ansible_python_interpreter=$PY" \
  -m dgxspark.sglang.nccl_allreduce -a "$ARGS" >"$OUT_DIR/module.txt" 2>&1 || {
  echo "nccl_allreduce failed:" >&2
  cat "$OUT_DIR/module.txt" >&2
  exit 1
}

"$PY" - "$OUT_DIR/nccl-tests.txt" "$OUT_DIR/module.txt" "$GOAL" <<'EOF'
import json
import re
import sys

nccl_path, module_path, goal = sys.argv[1], sys.argv[2], float(sys.argv[3])
THRESHOLD = 128 * 1024 * 1024


def parse_nccl_tests(text):
    """size -> (time_us, busbw) from the out-of-place columns, located by the header's names."""
    cols = None
    rows = {}
    for line in text.splitlines():
        if line.startswith("#"):
            names = line.lstrip("#").split()
            if "size" in names and "busbw" in names and "algbw" in names:
                time_name = "cputime" if "cputime" in names else "time"
                cols = (names.index("size"), names.index(time_name), names.index("busbw"))
            continue
        parts = line.split()
        if cols is None or len(parts) <= max(cols) or not parts[cols[0]].isdigit():
            continue
        try:
            rows[int(parts[cols[0]])] = (float(parts[cols[1]]), float(parts[cols[2]]))
        except ValueError:
            continue
    if not rows:
        raise SystemExit("no result rows found in %s (header with size/time/algbw/busbw missing?)" % nccl_path)
    return rows


def parse_module(text):
    found = re.search(r"^localhost \| ([A-Z!]+) => ", text, re.MULTILINE)
    if not found:
        raise SystemExit("no module result in %s" % module_path)
    result = json.JSONDecoder().raw_decode(text[found.end():])[0]
    if found.group(1) != "SUCCESS":
        raise SystemExit("module failed: %s" % result.get("msg"))
    return result


nccl = parse_nccl_tests(open(nccl_path).read())
result = parse_module(open(module_path).read())
module = {row["bytes"]: (row["time_us"], row["busbw_gbps"], row["correct"]) for row in result["results"]}
print("# module: world_size %s, torch %s, NCCL %s, %s" % (
    result["world_size"], result.get("torch_version"), result.get("nccl_version"), result.get("device_name")))
print("%12s | %12s %10s | %12s %10s %7s | %7s" % (
    "bytes", "nccl us", "nccl busbw", "module us", "mod busbw", "correct", "ratio"))
failures = []
judged = 0
for size in sorted(set(nccl) | set(module)):
    n_time, n_bw = nccl.get(size, (float("nan"), float("nan")))
    m_time, m_bw, correct = module.get(size, (float("nan"), float("nan"), None))
    ratio = m_bw / n_bw if n_bw and n_bw == n_bw and m_bw == m_bw else float("nan")
    mark = ""
    if size >= THRESHOLD:
        judged += 1
        if not ratio >= goal:
            failures.append(size)
            mark = " <"
    print("%12d | %12.2f %10.2f | %12.2f %10.2f %7s | %7.3f%s" % (size, n_time, n_bw, m_time, m_bw, correct, ratio, mark))
wrong = [size for size, row in module.items() if not row[2]]
if wrong:
    print("VERDICT: FAIL - the module's sums were wrong at %s" % wrong)
    raise SystemExit(3)
if not judged:
    print("VERDICT: none - no size >= 128 MiB was run")
    raise SystemExit(3)
if failures:
    print("VERDICT: FAIL - module busbw below %.2fx nccl-tests at %s" % (goal, ", ".join(map(str, failures))))
    raise SystemExit(3)
print("VERDICT: PASS - module busbw >= %.2fx nccl-tests at every size >= 128 MiB (%d sizes)" % (goal, judged))
EOF
