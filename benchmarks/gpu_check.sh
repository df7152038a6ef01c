#!/usr/bin/env bash
# The one script for a GPU machine (issue 7): builds metarec-fast with the CUDA
# kernels, prints the build configuration, runs the GPU tests, then the GPU
# benchmarks, and prints one markdown summary. Under 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh
#
# Everything it prints also goes to $OUT/gpu_check.log (OUT defaults to
# benchmarks/results/gpu_check), with the benchmarks' JSON, the pytest JUnit
# XML and summary.md. Each stage runs under `timeout` inside one overall
# budget (GPU_CHECK_BUDGET seconds, default 470), so a hang in one stage still
# leaves the others' output. Environment knobs: GPU_CHECK_BUDGET, CUDA_ARCH
# (default 90), PYTHON (default python3), GPU_CHECK_QUICK=1 (small benchmark
# shapes). The exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=${GPU_CHECK_BUDGET:-470}
ARCH=${CUDA_ARCH:-90}
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-benchmarks/results/gpu_check}
VENV=.venv-gpu
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
START=$SECONDS
SUMMARY=()
FAILED=0

# stage NAME CAP_SECONDS command...: runs the command under timeout (the cap,
# or what is left of the budget), records its status and duration.
stage() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    local t=$((cap < left ? cap : left))
    if ((t < 15)); then
        echo "=== [$name] skipped: time budget spent"
        SUMMARY+=("| $name | skipped (budget spent) | 0 s |")
        FAILED=1
        return 1
    fi
    echo
    echo "=== [$name] (timeout ${t}s): $*"
    local t0=$SECONDS
    timeout -k 10 "$t" "$@"
    local rc=$?
    local status="ok"
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${t}s"
    elif ((rc != 0)); then
        status="FAILED (exit $rc)"
    fi
    ((rc != 0)) && FAILED=1
    SUMMARY+=("| $name | $status | $((SECONDS - t0)) s |")
    echo "=== [$name] $status in $((SECONDS - t0)) s"
    return $rc
}

build() {
    # A venv that sees the system's torch, numpy, pybind11, scikit-build-core
    # (no internet needed); pip itself comes from the system site-packages.
    # Without the venv module: install into $PYTHON itself (a scratch machine).
    local py="$VENV/bin/python"
    if [ ! -x "$py" ] && ! "$PYTHON" -m venv --system-site-packages --without-pip "$VENV"; then
        echo "no venv: installing into $PYTHON"
        rm -rf "$VENV"
        py=$PYTHON
        export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
    METAREC_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$py" -m pip install --no-build-isolation --no-deps --no-cache-dir -v \
        -Ccmake.define.METAREC_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" . \
        >"$OUT_DIR/build.log" 2>&1
    local rc=$?
    grep -iE "warning|error" "$OUT_DIR/build.log" | grep -v "Running pip as" | head -40
    tail -5 "$OUT_DIR/build.log"
    return $rc
}

summarise() {
    "$PY" - "$OUT_DIR" <<'EOF'
import glob, json, os, sys

out = sys.argv[1]


def records(obj):
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for key in ("results", "rows", "records", "cases"):
            if isinstance(obj.get(key), list):
                return obj[key]
        return [obj]
    return [{"value": obj}]


def cell(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)[:80]
    return str(v).replace("|", "/").replace("\n", " ")[:120]


lines = []
for path in sorted(glob.glob(os.path.join(out, "bench_*.json"))):
    name = os.path.basename(path)[len("bench_"):-len(".json")]
    try:
        with open(path) as fh:
            recs = [r if isinstance(r, dict) else {"value": r} for r in records(json.load(fh))]
    except Exception as exc:  # a broken file must not hide the others
        lines += [f"### {name}", "", f"unreadable: {exc}", ""]
        continue
    cols = []
    for r in recs:
        cols += [c for c in r if c not in cols]
    lines += [f"### {name}", "", "| " + " | ".join(cols) + " |",
              "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in recs]
    lines.append("")
text = "\n".join(lines) if lines else "(no benchmark JSON)"
print(text)
with open(os.path.join(out, "summary.md"), "a") as fh:
    fh.write(text + "\n")
EOF
}

main() {
    echo "metarec-fast gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s, arch sm_${ARCH}, out $OUT_DIR"
    git log -1 --oneline 2>/dev/null || true
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    timeout 10 nvcc --version | tail -2 || true
    timeout 60 "$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" || true

    stage "build (CUDA, sm_$ARCH)" 240 bash "$SELF" __build
    PY="$VENV/bin/python"
    [ -x "$PY" ] || PY=$PYTHON
    stage "show_config" 60 "$PY" -c "import metarec_fast as m; m.show_config(); print('HAS_CUDA', m.HAS_CUDA); assert m.HAS_CUDA, 'no CUDA kernels or no device'"

    local tests=(tests/test_gpu_dispatch.py)
    for f in tests/test_cuda_*.py; do
        # the compile check is for machines without a GPU (CI); skip it here
        [ "$f" = tests/test_cuda_build.py ] || tests+=("$f")
    done
    stage "pytest GPU tests" 180 "$PY" -m pytest -q -p no:cacheprovider -rfEs \
        --junitxml="$OUT_DIR/pytest_gpu.xml" "${tests[@]}"

    local area cap
    for area in topk embedding adapt; do
        local script="benchmarks/gpu_bench_$area.py"
        if [ ! -f "$script" ]; then
            SUMMARY+=("| bench $area | absent | 0 s |")
            continue
        fi
        cap=120
        local extra=()
        [ "${GPU_CHECK_QUICK:-0}" = 1 ] && [ "$area" = topk ] && extra+=(--quick)
        stage "bench $area" "$cap" "$PY" "$script" --json "$OUT_DIR/bench_$area.json" "${extra[@]}"
    done

    local san
    san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
    if [ -n "$san" ]; then
        stage "memcheck topk" 75 "$san" --tool memcheck --error-exitcode 3 --leak-check no \
            "$PY" benchmarks/gpu_sanitize_topk.py
        stage "racecheck topk" 75 "$san" --tool racecheck --error-exitcode 3 \
            "$PY" benchmarks/gpu_sanitize_topk.py
        stage "synccheck topk" 60 "$san" --tool synccheck --error-exitcode 3 \
            "$PY" benchmarks/gpu_sanitize_topk.py
    else
        SUMMARY+=("| compute-sanitizer | absent | 0 s |")
    fi

    echo
    echo "## gpu_check summary ($(date -u +%Y-%m-%d), $((SECONDS - START)) s)"
    echo
    {
        echo "| stage | status | time |"
        echo "| --- | --- | --- |"
        printf '%s\n' "${SUMMARY[@]}"
        echo
    } | tee "$OUT_DIR/summary.md"
    summarise
    return $FAILED
}

SELF=benchmarks/gpu_check.sh
if [ "${1:-}" = __build ]; then  # the build stage, run under timeout by main
    build
    exit $?
fi
PY=$PYTHON
main 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
