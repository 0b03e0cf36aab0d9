#!/usr/bin/env bash
# Install wharfie inside the VM, as root, the way a user installs it: ./install.sh --no-run.
# Offline: pip reads only the wheelhouse the harness copied in (WHEELHOUSE, default
# /var/cache/wharfie-wheels) and the box already holds the Debian packages install.sh wants.
# No Vagrant dependency: `vagrant provision --provision-with provision` and `python -m vm` both call it.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${WHEELHOUSE:-/var/cache/wharfie-wheels}
if [ -d "$wheels" ] && [ -n "$(ls -A "$wheels" 2>/dev/null)" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels"
else
  echo "provision.sh: no wheelhouse at $wheels; pip will use the index (needs VM_NET=nat)" >&2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
start=$SECONDS
./install.sh --no-run
echo "provision.sh: wharfie installed in $((SECONDS - start)) s: $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), cgroup fs $(stat -fc %T /sys/fs/cgroup)"
