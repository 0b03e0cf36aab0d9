#!/usr/bin/env bash
# Install wharfie and everything it needs on Debian/Ubuntu, then run the main job:
# make a busybox image from the host's static busybox and run a container from it.
#   ./install.sh            install + main job
#   ./install.sh --no-run   install only (used by test.sh)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
run_main=1
[ "${1:-}" = "--no-run" ] && run_main=0

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

# System packages: Python with venv, and Debian's busybox-static (the first image's binary).
# The system's Python (not a per-user one under /root) so that the unprivileged test run can use
# the venv too.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || echo /usr/bin/python3)
need=()
[ -x "$py" ] || need+=(python3)
"$py" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}"
fi

"$py" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"wharfie needs Python >= 3.11, this is {sys.version.split()[0]}")
PY

# The project in its own virtualenv; the commands linked onto PATH.
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.wharfie-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # "compat" editable mode: a plain .pth path entry, no import-hook finder (~20 ms less per CLI start)
  .venv/bin/python -m pip install -q -e ".[test]" --config-settings editable_mode=compat
  touch "$stamp"
fi
# Bytecode for what the commands import: an editable install leaves the tree uncompiled, and a
# user who cannot write here (or runs with PYTHONDONTWRITEBYTECODE) would recompile every start.
.venv/bin/python -m compileall -q engine backends sim
# wharfie's launcher over pip's console script: python without `site`, the same sys.path
# (engine/cli/launcher.py); rewritten on every install so it follows the venv.
.venv/bin/python -m engine.cli.launcher .venv/bin/wharfie
if [ "$(id -u)" -eq 0 ]; then
  ln -sf "$here/.venv/bin/wharfie" /usr/local/bin/wharfie
  ln -sf "$here/.venv/bin/wharfied" /usr/local/bin/wharfied
fi

if [ "$run_main" -eq 1 ]; then
  wharfie=.venv/bin/wharfie
  $wharfie image bootstrap busybox
  $wharfie run --rm busybox sh -c 'echo "hello from a wharfie container: $(hostname), pid $$"'
  $wharfie images
fi
