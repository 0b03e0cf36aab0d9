#!/usr/bin/env bash
# Run a wharfie test suite inside the VM, as root, against the real Linux backend.
#   vm/run-tests.sh ci|cgroup|full|custom [pytest args...]
# ci:     the kernel contract (incl. the cgroup tests) and the privileged lifecycle/isolation smoke
# cgroup: the cgroup tests alone (kernel contract, privileged, joining a cgroup): the v1 variant
# full:   everything, the kernel and engine contracts with --backend linux
# custom: only the given pytest args
# Writes vm/results/junit-<suite>.xml and pytest-<suite>.log; records the host state before the
# run in /var/tmp/wharfie-vm/before/ (tests/vm/test_vm_host.py compares after it). On failure,
# dumps wharfie's state roots into vm/results/state-dump.txt. Exit status: pytest's.
# No Vagrant dependency: `vagrant provision --provision-with test` and `python -m vm test` call it.
set -uo pipefail
cd "$(dirname "$0")/.."
suite=${1:-ci}; shift || true
results=vm/results
mkdir -p "$results"
export WHARFIE_TEST_PROFILE=ci

case "$suite" in
  ci)     paths=(tests/contract/kernel tests/privileged) ;;
  cgroup) paths=(tests/contract/kernel/test_cgroups.py tests/privileged/test_cgroups.py
                 tests/privileged/test_sandbox.py::test_joins_the_cgroup_before_unsharing_its_namespace
                 tests/privileged/test_sandbox.py::test_missing_cgroup_is_file_not_found) ;;
  full)   paths=(tests) ;;
  custom) paths=() ;;
  *) echo "run-tests.sh: unknown suite $suite (ci|cgroup|full|custom)" >&2; exit 2 ;;
esac
existing=()
for p in "${paths[@]}"; do [ -e "${p%%::*}" ] && existing+=("$p"); done

snapshot() {  # the host state the leak checks compare: mounts, cgroups, links, netns, processes
  local d=/var/tmp/wharfie-vm/$1
  rm -rf "$d"; mkdir -p "$d"
  awk '{print $5}' /proc/self/mountinfo | sort >"$d/mounts"
  find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | sort >"$d/cgroups"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$d/links"
  { ip netns list 2>/dev/null | awk '{print $1}'; } | sort >"$d/netns"
  ps -eo pid=,comm= | sort -n >"$d/processes"
}
snapshot before

echo "== run-tests.sh $suite: cgroup fs $(stat -fc %T /sys/fs/cgroup), kernel $(uname -r) =="
start=$SECONDS
.venv/bin/python -m pytest -p no:cacheprovider --backend linux -m "not vm" \
  --junitxml="$results/junit-$suite.xml" -o junit_suite_name="vm-$suite-cgroup$(stat -fc %T /sys/fs/cgroup)" \
  "${existing[@]}" "$@" 2>&1 | tee "$results/pytest-$suite.log"
rc=${PIPESTATUS[0]}
echo "== run-tests.sh $suite: pytest exit $rc after $((SECONDS - start)) s =="

snapshot after
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
  {
    echo "# state roots after a failed run"
    for d in /var/lib/wharfie /run/wharfie; do
      [ -e "$d" ] && { echo "## $d"; find "$d" -maxdepth 4 -printf '%M %u %s %p\n' 2>/dev/null | head -500; }
    done
    echo "## mounts"; cat /proc/self/mountinfo
    echo "## processes"; ps -eo pid,ppid,stat,comm,args
  } >"$results/state-dump.txt" 2>&1
fi
exit "$rc"
