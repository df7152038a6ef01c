#!/usr/bin/env bash
# Development set-up: a virtual environment that reuses the current Python
# environment's packages (torch, numpy, ...: the system's, or an active
# virtualenv's) and holds this checkout's build of metarec-fast, so that
# several checkouts (git worktrees) can be built and tested side by side.
#   bash scripts/dev_env.sh          # create .venv and build
#   .venv/bin/python -m pytest -q tests
# Re-run after changing C++ or Python code (the CMake build dir is reused, so
# rebuilds are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv_like_current.sh .venv
.venv/bin/python -m pip install --no-build-isolation --no-deps -q . 2>&1 | grep -v "Running pip as the 'root'" || true
.venv/bin/python -c "import metarec_fast; print('metarec-fast', metarec_fast.__version__, 'built')"
