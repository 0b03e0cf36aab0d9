#!/usr/bin/env bash
# CI entry for the VM: the `ci` suite inside a cgroup-v2 VM, then the `cgroup` suite in the same
# VM kexec-ed into cgroup v1; from a fresh machine if need be. Called by .ci/run.
#   vm/ci.sh [ARGS...]      (extra arguments go to `python -m vm test`)
# Installs the host packages (vm/install-host.sh), builds or reuses the cached box, boots it,
# runs vm/run-tests.sh ci inside, fetches vm/results/ (junit-ci.xml, junit-vm-host.xml,
# pytest-ci.log, console.log, timings.json), switches to v1 (junit-cgroup.xml,
# junit-vm-host-v1.xml) and destroys the VM. A VM that does not boot is retried once with a fresh
# one, then fails (exit 3) with its serial console printed; test failures are never retried.
# Limits: VM_CI_TIMEOUT seconds (default 1500) for it all, VM_SUITE_TIMEOUT (900) per suite,
# VM_BOOT_TIMEOUT (300) per boot. Exit status: `python -m vm test`'s (0 only if all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${VM_CI_TIMEOUT:-1500}
start=$SECONDS
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)

cleanup() {
  # whatever happened: no VM may outlive this script
  timeout 120 "$py" -m vm destroy >/dev/null 2>&1 || true
}
trap cleanup EXIT

timeout "$limit" vm/install-host.sh || { echo "vm/ci.sh: host packages failed to install" >&2; exit 1; }
left=$(( limit - (SECONDS - start) ))
timeout --kill-after=60 "$left" "$py" -m vm test --suite ci --then-v1 \
  --timeout "${VM_SUITE_TIMEOUT:-900}" "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "vm/ci.sh: timed out after $((SECONDS - start)) s (limit $limit s)" >&2
  console=vm/.cache/run/console.log
  [ -s vm/results/console.log ] && console=vm/results/console.log
  [ -s "$console" ] && { echo "--- serial console (tail) ---"; tail -60 "$console"; } >&2
fi
echo "vm/ci.sh: exit $rc after $((SECONDS - start)) s"
exit "$rc"
