#!/usr/bin/env bash
# Run the test suite (installs first if needed). Extra arguments go to every pytest run.
#
# 1. The simulated-kernel suites (unit, kernel and engine contracts, state machine, API, CLI),
#    as an unprivileged user when started as root: they must need no privileges.
# 2. As root, when the Linux backend can run here: the same kernel and engine contracts against
#    the real kernel, plus the privileged suite.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --no-run
if ! command -v docker >/dev/null; then
  # the CLI suite drives the real docker client against wharfied
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=300 docker.io
fi
py=.venv/bin/python
export WHARFIE_TEST_PROFILE=ci

echo "== simulated kernel suites =="
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
  runuser -u nobody -- env HOME=/tmp PATH="$PATH" WHARFIE_TEST_PROFILE=ci \
    "$py" -m pytest -p no:cacheprovider --backend=sim -m "not privileged" "$@"
else
  "$py" -m pytest -p no:cacheprovider --backend=sim -m "not privileged" "$@"
fi

if [ "$(id -u)" -eq 0 ] && [ "$(uname -s)" = Linux ] && "$py" -c 'import backends.linux.kernel' 2>/dev/null; then
  echo "== Linux backend suites (root) =="
  "$py" -m pytest -p no:cacheprovider --backend=linux tests/contract tests/api tests/cli tests/interop \
    tests/privileged "$@"
fi
