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
# Debian's own pip and setuptools wheels (python3-pip-whl) complete the wheelhouse
export PIP_FIND_LINKS="${PIP_FIND_LINKS:-} /usr/share/python-wheels"
# Under emulation (TCG) pip's own start-up and byte-compiling dominate: skip compiling (Python
# compiles what it imports, once), build wharfie with the venv's setuptools instead of a fresh
# isolated build env, and seed the venv with the system pip instead of ensurepip (48 s -> 10 s).
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_COMPILE=1 PIP_NO_BUILD_ISOLATION=1 DEBIAN_FRONTEND=noninteractive
start=$SECONDS
if [ ! -x .venv/bin/python ]; then
  python3 -m venv --without-pip .venv
  python3 -m pip --python .venv/bin/python install -q pip "setuptools>=68" wheel 2>/dev/null \
    || python3 -m pip --python .venv/bin/python install -q pip setuptools
fi
./install.sh --no-run
echo "provision.sh: wharfie installed in $((SECONDS - start)) s: $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), cgroup fs $(stat -fc %T /sys/fs/cgroup)"
