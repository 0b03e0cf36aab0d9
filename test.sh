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
# Real peers the suites drive: the docker client (CLI suite) and Debian's dockerd, runc,
# skopeo, umoci (image interop) and the reference registry (registry suite).
need=()
command -v docker >/dev/null && command -v dockerd >/dev/null || need+=(docker.io)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}"
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
