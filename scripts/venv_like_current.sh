#!/usr/bin/env bash
# Create (or refresh) a virtual environment DIR that sees the packages of the current Python
# environment: the one `${PYTHON:-python}` runs in, an active virtualenv included.
#   bash scripts/venv_like_current.sh DIR
# `python -m venv --system-site-packages` is not that inside a virtualenv: it exposes the base
# interpreter's packages, not the active venv's, so torch & co. went missing (issue 18). Here DIR
# is a plain venv of the same interpreter plus one .pth file that adds the current environment's
# site directories (and their own .pth files) after DIR's own site-packages, so what is installed
# into DIR (this checkout's build) shadows the current environment's copy. DIR has no pip of its
# own: `DIR/bin/python -m pip` runs the current environment's pip (a venv's bundled pip can be too
# old for `--config-settings`) and installs into DIR. Re-run to refresh.
set -euo pipefail
venv=$1
PY="${PYTHON:-python}"
prefix=$("$PY" -c 'import sys; print(sys.prefix)')
if [ -d "$venv" ] && [ "$(cd "$venv" && pwd -P)" = "$(cd "$prefix" && pwd -P)" ]; then
  echo "$venv is the running environment: used as it is"
  exit 0
fi
version=$("$PY" -c 'import sys; print(sys.version)')
# Rebuilt when made by another interpreter or by the old --system-site-packages recipe.
if [ ! -x "$venv/bin/python" ] || [ "$("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" != "$version" ] \
    || grep -qs '^include-system-site-packages = true' "$venv/pyvenv.cfg"; then
  rm -rf "$venv"
  "$PY" -m venv --without-pip "$venv"
fi
purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" - >"$purelib/_metarec_current_env.pth" <<'EOF'
import site
dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
print("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs))
EOF
