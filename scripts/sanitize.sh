#!/usr/bin/env bash
# Build the compiled core with AddressSanitizer + UndefinedBehaviorSanitizer and
# run the kernel tests against it.
#   bash scripts/sanitize.sh [pytest args...]     (default: the kernel test files)
# The instrumented package goes to a private virtual environment (.venv-asan)
# that sees the current Python environment's packages (a system interpreter or an
# active virtualenv; PYTHON overrides `python`); the normal install is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-asan
bash scripts/venv_like_current.sh "$venv"
# The build backend and tools (a normal install gets them through build isolation).
"$venv/bin/python" -m pip install -q scikit-build-core pybind11 cmake ninja 2>&1 | grep -v "Running pip as the 'root'" || true
# (--config-settings, not -C: pip < 23.1, e.g. a fresh venv's, has no -C.)
"$venv/bin/python" -m pip install -q --no-build-isolation --no-deps \
  --config-settings=cmake.define.METAREC_SANITIZE=ON --config-settings=cmake.build-type=RelWithDebInfo \
  --config-settings=build-dir=build/asan . 2>&1 | grep -v "Running pip as the 'root'" || true
# The tests must import the instrumented build, not another install the environment sees.
"$venv/bin/python" -c 'import importlib.util as u, sys; s = u.find_spec("metarec_fast")
f = s.origin if s else "nothing (did the build above fail?)"
sys.exit(None if f.startswith(sys.prefix) else f"metarec_fast resolves to {f}, not the sanitizer build")'
# Leaks: a standalone C++ program (cpp/tests/leak_check.cpp, not in the wheel)
# calls every kernel of the instrumented static library, through its normal and
# exception paths, with LeakSanitizer on; a kernel that leaks fails the script.
# (Under Python, CPython's deliberate exit-time allocations drown the report.)
"${CXX:-g++}" -std=c++17 -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fopenmp -Icpp/include \
  cpp/tests/leak_check.cpp build/asan/libmetarec_kernels.a -o build/asan/leak_check
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  OMP_NUM_THREADS=2 build/asan/leak_check
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_topk.py tests/test_embedding.py tests/test_metrics.py
                                  tests/test_adapt.py tests/test_serving.py tests/test_reliability.py)
# detect_leaks=0 here: CPython's own allocations at exit drown real reports;
# the kernels' leaks are checked by leak_check above (and the bindings' by the
# repeated-call memory test).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Left out: the Ctrl-C and kill -9 tests (timing-based, in subprocesses) and the
# resident-memory test (ASan's quarantine keeps freed memory resident on purpose).
LD_PRELOAD="$asan:$ubsan" "$venv/bin/python" -m pytest -q -p no:cacheprovider -x "${tests[@]}" \
  -k "not ctrl_c and not kill and not memory"
