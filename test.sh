#!/usr/bin/env bash
# Run the test suite (installs first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --no-run
# The CLI suite drives the real docker client against wharfied.
if ! command -v docker >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=300 docker.io
fi
exec .venv/bin/python -m pytest "$@"
