"""The VM's host state, checked from outside with pytest-testinfra after a suite ran inside it.

Run by the VM harness (``python -m vm test``), which sets ``WHARFIE_VM_SSH_CONFIG`` (the
loopback-only ssh-config) and ``WHARFIE_VM_CGROUP`` (v1|v2, how the VM was booted). Elsewhere the
module skips: it must never probe the machine the suite runs on.

``vm/run-tests.sh`` snapshots mounts, cgroups, links, netns and processes into
``/var/tmp/wharfie-vm/{before,after}`` around pytest; the leak checks compare the two, so the
VM's own mounts and cgroups never count.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

pytestmark = [
    pytest.mark.vm,
    # paramiko still imports TripleDES from cryptography's deprecated location
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SSH_CONFIG = os.environ.get("WHARFIE_VM_SSH_CONFIG")
if not SSH_CONFIG:
    pytest.skip("drives the VM harness only (python -m vm test)", allow_module_level=True)
testinfra = pytest.importorskip("testinfra")

CGROUP = os.environ.get("WHARFIE_VM_CGROUP", "v2")
SNAPSHOTS = "/var/tmp/wharfie-vm"
# cgroups systemd makes and removes on its own while SSH sessions come and go
SYSTEMD_CGROUP = re.compile(r"/(user\.slice|user-\d+\.slice|session-\d+\.scope|user@\d+\.service|"
                            r"init\.scope|systemd-[^/]+|run-[^/]+\.(scope|service))(/|$)")
# /run/netns itself: iproute2 and pyroute2 make it a shared bind mount once, on first use (a
# namespace file mounted *under* it is still a leak)
SYSTEM_MOUNT = re.compile(r"^/(run/user/\d+|proc/sys/fs/binfmt_misc|run/credentials/[^/]+)(/|$)|^/run/netns$")
SYSTEM_LINKS = {"lo", "eth0"}


@pytest.fixture(scope="module")
def host() -> Any:
    return testinfra.get_host("paramiko://wharfie-vm", ssh_config=SSH_CONFIG, sudo=True)


@pytest.fixture(scope="module")
def snapshots(host: Any) -> dict[str, dict[str, set[str]]]:
    """{"before"|"after": {"mounts"|"cgroups"|"links"|"netns": lines}}, read in one command."""
    r = host.run(f"cd {SNAPSHOTS} && for f in */*; do echo \"### $f\"; cat \"$f\"; done")
    if r.rc != 0 or "### after/" not in r.stdout:
        pytest.skip("no snapshots: vm/run-tests.sh did not run")
    out: dict[str, dict[str, set[str]]] = {"before": {}, "after": {}}
    current: set[str] = set()
    for line in r.stdout.splitlines():
        if line.startswith("### "):
            name, kind = line[4:].split("/", 1)
            current = out.setdefault(name, {}).setdefault(kind, set())
        elif line:
            current.add(line)
    return out


def new_since_before(snapshots: dict[str, dict[str, set[str]]], kind: str) -> set[str]:
    return snapshots["after"].get(kind, set()) - snapshots["before"].get(kind, set())


# --- the kernel the suite needs ------------------------------------------------------------

def test_cgroup_hierarchy_is_the_booted_one(host: Any) -> None:
    fstype = host.run("stat -fc %T /sys/fs/cgroup").stdout.strip()
    if CGROUP == "v2":
        assert fstype == "cgroup2fs"
        controllers = host.file("/sys/fs/cgroup/cgroup.controllers").content_string.split()
        assert {"cpu", "memory", "pids", "io", "cpuset"} <= set(controllers)
    else:
        assert fstype == "tmpfs"
        assert host.mount_point("/sys/fs/cgroup/memory").filesystem == "cgroup"
        assert host.mount_point("/sys/fs/cgroup/pids").filesystem == "cgroup"


def test_namespaces_and_overlayfs_work(host: Any) -> None:
    # a pid+mount+net+uts+ipc namespace whose pid 1 is the command, as a container's is
    r = host.run("unshare --pid --mount --net --uts --ipc --fork --mount-proc sh -c "
                 "'hostname ns-test && echo $$ $(hostname) $(ip -o link show | cut -d: -f2)'")
    assert r.rc == 0 and r.stdout.split() == ["1", "ns-test", "lo"], r
    r = host.run(
        "d=$(mktemp -d) && mkdir $d/l $d/u $d/w $d/m && echo low >$d/l/f && "
        "mount -t overlay overlay -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m && "
        "echo up >$d/m/f && rm -f $d/m/g; cat $d/l/f $d/u/f; umount $d/m && rm -rf $d")
    assert r.rc == 0 and r.stdout.split() == ["low", "up"], r


def test_user_namespaces_work(host: Any) -> None:
    r = host.run("runuser -u vagrant -- unshare --user --map-root-user id -u")
    assert r.rc == 0 and r.stdout.strip() == "0", r


# --- nothing of wharfie's left behind after the suite ---------------------------------------

def test_no_leaked_mounts(snapshots: dict[str, dict[str, set[str]]]) -> None:
    leaked = {m for m in new_since_before(snapshots, "mounts") if not SYSTEM_MOUNT.match(m)}
    assert not leaked, f"mounts left behind: {sorted(leaked)}"


def test_no_leaked_cgroups(snapshots: dict[str, dict[str, set[str]]]) -> None:
    leaked = {c for c in new_since_before(snapshots, "cgroups") if not SYSTEM_CGROUP.search(c)}
    assert not leaked, f"cgroups left behind: {sorted(leaked)[:20]}"


def test_no_leaked_links_or_netns(snapshots: dict[str, dict[str, set[str]]]) -> None:
    links = new_since_before(snapshots, "links") - SYSTEM_LINKS
    assert not links, f"links (veths, bridges) left behind: {sorted(links)}"
    netns = new_since_before(snapshots, "netns")
    assert not netns, f"named network namespaces left behind: {sorted(netns)}"


def test_no_leaked_processes(host: Any) -> None:
    # a container's processes live in another pid namespace; none may outlive the suite
    r = host.run("init=$(readlink /proc/1/ns/pid); for p in /proc/[0-9]*; do "
                 "n=$(readlink $p/ns/pid 2>/dev/null) || continue; "
                 "[ \"$n\" = \"$init\" ] || echo \"${p#/proc/} $(cat $p/comm)\"; done")
    assert r.rc == 0 and not r.stdout.strip(), f"processes in container pid namespaces:\n{r.stdout}"
    # the brackets keep the pattern from matching the shell that runs pgrep
    r = host.run("pgrep -a -f '[w]harfie|[e]ngine[.]api' || true")
    assert not r.stdout.strip(), f"wharfie processes still running:\n{r.stdout}"


def test_daemon_socket_permissions(host: Any) -> None:
    """wharfied as a user starts it (root, the default socket): the socket is root-owned and
    closed to others (Docker's srw-rw---- root:docker; ours names the ``wharfie`` group), its
    directory not writable by others, root is answered and an unprivileged user refused. The
    daemon is stopped again and leaves no process behind."""
    sock, pidfile = "/run/wharfie/wharfie.sock", "/run/wharfie-vm-check.pid"
    log = f"{SNAPSHOTS}/wharfied.log"
    assert not host.run("pgrep -f '[w]harfied'").stdout.strip(), "a daemon is already running"
    r = host.run(f"setsid -f wharfied -p {pidfile} --log-file {log} </dev/null >/dev/null 2>&1; "
                 f"for i in $(seq 600); do [ -S {sock} ] && exit 0; sleep 0.1; done; exit 1")
    try:
        assert r.rc == 0, f"wharfied made no socket in 60 s:\n{host.run(f'tail -20 {log}').stdout}"
        run_dir = host.file("/run/wharfie")
        assert run_dir.user == "root" and not run_dir.mode & 0o002, "state dir writable by others"
        f = host.file(sock)
        assert f.is_socket and f.user == "root", (f.user, oct(f.mode))
        assert f.mode & 0o777 == 0o660, oct(f.mode)
        ok = host.run(f"wharfie -H unix://{sock} version")
        assert ok.rc == 0 and "Server" in ok.stdout, ok
        # vagrant is in neither root's nor the socket's group: refused by the kernel
        assert "wharfie" not in host.run("id -nG vagrant").stdout.split()
        denied = host.run(f"runuser -u vagrant -- wharfie -H unix://{sock} version")
        assert denied.rc != 0 and "ermission denied" in denied.stdout + denied.stderr, denied
    finally:
        host.run(f"kill $(cat {pidfile}) 2>/dev/null; for i in $(seq 300); do "
                 f"pgrep -f '[w]harfied' >/dev/null || exit 0; sleep 0.1; done")
    assert not host.run("pgrep -a -f '[w]harfie'").stdout.strip(), "wharfied outlived SIGTERM"
    assert not host.file(sock).exists, "the stopped daemon left its socket"
