"""The container init's view of the world (``backends.linux.sandbox.init_main``), asserted from
inside with busybox: namespaces, mounts, devices, masked paths, capabilities, seccomp, users.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux import caps
from backends.linux.sandbox import DEFAULT_CAPS, default_profile, resolve_user
from engine.kernel import MountSpec, Namespace, Rlimit
from tests.privileged.sandbox_rig import Rig

pytestmark = pytest.mark.privileged

DOCKER_DEFAULT_MASK = 0x00000000A80425FB


@pytest.fixture
def rig(tmp_path: Any) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def status_fields(text: bytes) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in
            (ln.partition(":") for ln in text.decode().splitlines() if ":" in ln)}


def mountpoints(mountinfo: bytes) -> list[str]:
    return [ln.split()[4] for ln in mountinfo.decode().splitlines()]


# ---- namespaces ------------------------------------------------------------------------------
def test_pid1_is_the_command_and_host_processes_are_invisible(rig: Rig) -> None:
    r = rig.sh("echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o pid,comm; true")
    assert r.code == 0, r.err
    lines = r.out.decode().splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("sh -c echo $$")
    pids = [ln.split()[0] for ln in lines[3:]]
    assert pids[0] == "1" and len(pids) == 2  # sh and ps, nothing of the host


def test_hostname_and_etc_files_stay_out_of_the_rootfs(rig: Rig) -> None:
    r = rig.sh("hostname; cat /etc/hostname /etc/hosts", hostname="box1",
               etc_files=(("/etc/hostname", b"box1\n"), ("/etc/hosts", b"127.0.0.1 localhost\n")))
    assert (r.code, r.out) == (0, b"box1\nbox1\n127.0.0.1 localhost\n"), r.err
    with open(os.path.join(rig.rootfs, "etc/hostname"), "rb") as fh:
        assert fh.read() == b""  # only the empty mount point lands in the image's layer
    assert os.uname().nodename != "box1"


def test_host_mounts_are_invisible(rig: Rig) -> None:
    r = rig.run("cat", "/proc/self/mountinfo")
    assert r.code == 0, r.err
    points = mountpoints(r.out)
    assert points[0] == "/"
    allowed = ("/proc", "/sys", "/dev")
    assert all(p == "/" or p.startswith(allowed) for p in points), points
    assert rig.rootfs.encode() not in b"".join(ln.split(b" ")[4] for ln in r.out.splitlines())
    assert "/dev/pts" in points and "/dev/shm" in points and "/dev/mqueue" in points


def test_only_loopback_in_a_new_network_namespace(rig: Rig) -> None:
    r = rig.sh("ls /sys/class/net; cat /sys/class/net/lo/flags")
    assert r.code == 0, r.err
    assert r.out.decode().split() == ["lo", "0x9"]  # IFF_UP|IFF_LOOPBACK


def test_shared_namespaces_are_honoured(rig: Rig) -> None:
    ns = frozenset({Namespace.PID, Namespace.MOUNT, Namespace.NET})
    r = rig.run("hostname", hostname="ignored", namespaces=ns)
    assert (r.code, r.out.decode().strip()) == (0, os.uname().nodename)


def _pids_cgroup_dir() -> tuple[str, str, str]:
    """(the host directory that holds pids cgroups, how the container sees its own cgroup.procs,
    the line of /proc/self/cgroup naming it): the unified hierarchy on cgroup v2 (``0::``), the
    ``pids`` controller's mount on v1 or hybrid hosts (``N:pids:``)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup", "/sys/fs/cgroup/cgroup.procs", "^0::"
    return "/sys/fs/cgroup/pids", "/sys/fs/cgroup/pids/cgroup.procs", ":pids:"


def test_joins_the_cgroup_before_unsharing_its_namespace(rig: Rig) -> None:
    base, inside, line = _pids_cgroup_dir()
    cg = f"{base}/wharfie-sbx-test-{os.getpid()}"
    os.mkdir(cg)
    try:
        # v1: "N:pids:/"; v2: "0::/" — the cgroup namespace's root is our cgroup either way
        r = rig.sh(f"grep '{line}' /proc/self/cgroup; cat {inside}; true",
                   cgroup_procs=(f"{cg}/cgroup.procs",))
        assert r.code == 0, r.err
        lines = r.out.decode().split()
        assert lines[0].endswith(":/"), lines
        assert lines[1] == "1" and len(lines) == 3  # sh (pid 1) and cat
    finally:
        os.rmdir(cg)


def test_missing_cgroup_is_file_not_found(rig: Rig) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        rig.run("true", cgroup_procs=(f"{_pids_cgroup_dir()[0]}/wharfie-nope/cgroup.procs",))
    assert "wharfie-nope" in ei.value.filename


# ---- /dev, /proc, /sys -----------------------------------------------------------------------
def test_devices(rig: Rig) -> None:
    r = rig.sh("for d in null zero full random urandom tty; do stat -c '%n %F %t,%T %a' /dev/$d; done;"
               "head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo ok; readlink /dev/ptmx; readlink /dev/fd")
    assert r.code == 0, r.err
    lines = r.out.decode().splitlines()
    assert lines[:6] == ["/dev/null character special file 1,3 666",
                         "/dev/zero character special file 1,5 666",
                         "/dev/full character special file 1,7 666",
                         "/dev/random character special file 1,8 666",
                         "/dev/urandom character special file 1,9 666",
                         "/dev/tty character special file 5,0 666"]
    assert lines[6:] == ["4", "ok", "pts/ptmx", "/proc/self/fd"]


def test_masked_and_readonly_paths(rig: Rig) -> None:
    r = rig.sh("wc -c < /proc/keys; wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l;"
               "echo 1 > /proc/sys/kernel/ns_last_pid; echo rc=$?; echo > /proc/sysrq-trigger; echo rc=$?")
    assert r.code == 0, r.err
    assert r.out.decode().split() == ["0", "0", "0", "rc=1", "rc=1"]
    assert b"Read-only file system" in r.err
    r = rig.run("cat", "/proc/self/mountinfo")
    points = mountpoints(r.out)
    for path in ("/proc/keys", "/proc/timer_list", "/sys/firmware", "/proc/sys", "/proc/bus"):
        assert path in points
    assert "ro" in next(ln.split()[5] for ln in r.out.decode().splitlines() if ln.split()[4] == "/sys")


def test_privileged_skips_masks_caps_and_seccomp(rig: Rig) -> None:
    r = rig.sh("grep -E 'CapEff|CapBnd|Seccomp:' /proc/self/status; cat /proc/self/mountinfo",
               privileged=True)
    assert r.code == 0, r.err
    fields = status_fields(r.out)
    # every capability we hold ourselves (this VM withholds CAP_SYS_RESOURCE from us)
    assert int(fields["CapEff"], 16) == caps.mask(caps.all_caps()) & caps.proc_caps()["CapPrm"]
    assert fields["Seccomp"] == "0"
    assert "/proc/keys" not in mountpoints(b"\n".join(ln for ln in r.out.splitlines() if b" - " in ln))


# ---- capabilities, seccomp, no_new_privs -----------------------------------------------------
def test_default_capabilities_and_seccomp(rig: Rig) -> None:
    r = rig.run("grep", "-E", "^(Cap|Seccomp|NoNewPrivs)", "/proc/self/status")
    fields = status_fields(r.out)
    assert caps.mask(DEFAULT_CAPS) == DOCKER_DEFAULT_MASK
    assert int(fields["CapEff"], 16) == DOCKER_DEFAULT_MASK
    assert int(fields["CapPrm"], 16) == DOCKER_DEFAULT_MASK
    assert int(fields["CapBnd"], 16) == DOCKER_DEFAULT_MASK
    assert int(fields["CapInh"], 16) == 0 and int(fields["CapAmb"], 16) == 0
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "0"


def test_cap_add_and_drop(rig: Rig) -> None:
    r = rig.run("grep", "CapEff", "/proc/self/status", cap_add=("cap_sys_time",), cap_drop=("NET_RAW",))
    want = (DOCKER_DEFAULT_MASK | 1 << caps.NUMBERS["SYS_TIME"]) & ~(1 << caps.NUMBERS["NET_RAW"])
    assert int(status_fields(r.out)["CapEff"], 16) == want
    r = rig.run("grep", "CapEff", "/proc/self/status", cap_drop=("ALL",), cap_add=("CHOWN",))
    assert int(status_fields(r.out)["CapEff"], 16) == 1
    with pytest.raises(OSError) as ei:
        rig.run("true", cap_add=("CAP_NOPE",))
    assert ei.value.errno == errno.EINVAL and "NOPE" in str(ei.value)


def test_namespace_and_mount_syscalls_are_refused(rig: Rig) -> None:
    r = rig.sh("unshare -U true; echo unshare=$?; mount -t tmpfs x /mnt; echo mount=$?;"
               "hostname foo; echo hostname=$?; nsenter -t 1 -n true; echo nsenter=$?")
    assert r.out.decode().split() == ["unshare=1", "mount=1", "hostname=1", "nsenter=1"], r.err
    assert b"Operation not permitted" in r.err
    # the same unshare works without the filter: it is seccomp, not capabilities, refusing it
    r = rig.sh("unshare -U true; echo unshare=$?", seccomp_profile="unconfined")
    assert r.out == b"unshare=0\n", r.err
    r = rig.run("grep", "Seccomp:", "/proc/self/status", seccomp_profile="unconfined")
    assert status_fields(r.out)["Seccomp"] == "0"


def test_no_new_privileges(rig: Rig) -> None:
    r = rig.run("grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status", no_new_privileges=True)
    assert status_fields(r.out) == {"NoNewPrivs": "1", "Seccomp": "2"}
    r = rig.run("grep", "^NoNewPrivs:", "/proc/self/status", no_new_privileges=True,
                seccomp_profile="unconfined", user="1000")
    assert status_fields(r.out) == {"NoNewPrivs": "1"}


def test_custom_seccomp_profile_file(rig: Rig, tmp_path: Any) -> None:
    profile = default_profile()
    profile["syscalls"][0]["names"] = [n for n in profile["syscalls"][0]["names"]
                                       if n not in ("mkdir", "mkdirat")]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    r = rig.sh("mkdir /tmp/x; echo rc=$?", seccomp_profile=str(path))
    assert r.out == b"rc=1\n" and b"Operation not permitted" in r.err
    with pytest.raises(FileNotFoundError):
        rig.run("true", seccomp_profile=str(tmp_path / "missing.json"))


def test_user_1000_has_no_effective_capabilities(rig: Rig) -> None:
    r = rig.sh("id; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; echo $HOME", user="1000:1000")
    assert r.code == 0, r.err
    lines = r.out.decode().splitlines()
    assert lines[0] == "uid=1000(alice) gid=1000(alice) groups=1000(alice)"
    fields = status_fields("\n".join(lines[1:4]).encode())
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert int(fields["CapBnd"], 16) == DOCKER_DEFAULT_MASK
    assert lines[4] == "/home/alice"


@pytest.mark.parametrize("user, expect", [
    ("", "uid=0(root) gid=0(root) groups=0(root),10(wheel)"),
    ("alice", "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)"),  # the kernel sorts
    ("alice:wheel", "uid=1000(alice) gid=10(wheel) groups=10(wheel)"),
    ("4242:4343", "uid=4242 gid=4343 groups=4343"),
])
def test_users(rig: Rig, user: str, expect: str) -> None:
    r = rig.run("id", user=user)
    assert (r.code, r.out.decode().strip()) == (0, expect), r.err


def test_resolve_user_from_the_daemon_side(rig: Rig) -> None:
    assert resolve_user(rig.rootfs, "alice") == (1000, 1000, (1000, 50), "/home/alice")
    assert resolve_user(rig.rootfs, "") == (0, 0, (0, 10), "/root")
    with pytest.raises(OSError) as ei:
        resolve_user(rig.rootfs, "mallory")
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value).endswith("unable to find user mallory: no matching entries in passwd file")


def test_no_daemon_fd_reaches_the_container(rig: Rig) -> None:
    r = rig.sh("ls /proc/1/fd; true")  # pid 1 is the shell (a last command would replace it)
    assert r.out.decode().split() == ["0", "1", "2"], r.err


def test_proc_self_exe_is_the_container_binary(rig: Rig) -> None:
    r = rig.run("readlink", "/proc/self/exe")
    assert r.out == b"/bin/busybox\n"


# ---- mounts, read-only root, rlimits, cwd ----------------------------------------------------
def test_readonly_rootfs_tmpfs_and_binds(rig: Rig, tmp_path: Any) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("from host\n")
    r = rig.sh("echo x > /etc/new; echo rc=$?; echo y > /scratch/f && cat /scratch/f; cat /data/f;"
               "echo z > /data/g; echo rc=$?; grep -E ' /scratch ' /proc/self/mountinfo | cut -d' ' -f6",
               readonly_rootfs=True,
               mounts=(MountSpec("tmpfs", "/scratch", options=("size=1m", "mode=1777")),
                       MountSpec("bind", "/data", source=str(src), readonly=True)))
    assert r.code == 0, r.err
    assert r.out.decode().split() == ["rc=1", "y", "from", "host", "rc=1", "rw,nosuid,nodev,noexec,relatime"]
    assert not (src / "g").exists()
    assert os.path.isdir(os.path.join(rig.rootfs, "scratch"))
    with pytest.raises(FileNotFoundError) as ei:
        rig.run("true", mounts=(MountSpec("bind", "/x", source=str(tmp_path / "nope")),))
    assert ei.value.filename == str(tmp_path / "nope")


def test_mount_targets_cannot_escape_the_rootfs(rig: Rig, tmp_path: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(rig.rootfs, "evil"))  # absolute symlink in the image
    r = rig.sh("ls -d /evil/sub", mounts=(MountSpec("tmpfs", "/evil/sub"),))
    assert r.code == 0, r.err
    assert not (outside / "sub").exists()  # created inside the rootfs, at /<rootfs>/<outside>/sub


def test_rlimits(rig: Rig) -> None:
    r = rig.sh("ulimit -n; ulimit -c", rlimits=(Rlimit("nofile", 512, 512), Rlimit("core", 0, 0)))
    assert r.out.decode().split() == ["512", "0"], r.err
    hard = os.sysconf("SC_OPEN_MAX")
    with pytest.raises(PermissionError) as ei:
        rig.run("true", rlimits=(Rlimit("nofile", 1 << 30, 1 << 30),))
    assert "nofile" in str(ei.value) and hard > 0


def test_cwd_env_and_errors(rig: Rig) -> None:
    r = rig.sh('pwd; echo "$FOO $HOME"', cwd="/tmp", env=("PATH=/bin", "FOO=bar", "HOME=/x"))
    assert r.out == b"/tmp\nbar /x\n", r.err
    with pytest.raises(FileNotFoundError) as ei:
        rig.run("true", cwd="/no/such/dir")
    assert ei.value.filename == "/no/such/dir"
    with pytest.raises(FileNotFoundError) as e2:
        rig.run("no-such-program")
    assert e2.value.errno == errno.ENOENT and e2.value.filename == "no-such-program"
    with pytest.raises(FileNotFoundError):
        rig.run("/bin/missing")
    with pytest.raises(PermissionError):
        rig.run("/bin/notexec")
    with pytest.raises(PermissionError):
        rig.run("/tmp")
    with pytest.raises(OSError) as e3:
        rig.run("true", user="mallory")
    assert e3.value.errno == errno.EINVAL and "unable to find user mallory" in str(e3.value)
    with pytest.raises(OSError) as e3:
        rig.run("true", user="alice:nogrp")
    assert e3.value.errno == errno.EINVAL and "group nogrp" in str(e3.value)
    with pytest.raises(FileNotFoundError):
        rig.run("true", rootfs=rig.rootfs + "-missing")


def test_default_profile_rules_follow_capabilities() -> None:
    from backends.linux.seccomp import compile_profile

    allow = 0x7FFF0000

    def rules(capset: frozenset[str]) -> dict[str, list[tuple[int, list[Any]]]]:
        out: dict[str, list[tuple[int, list[Any]]]] = {}
        for action, name, args in compile_profile(default_profile(), capset)["rules"]:
            out.setdefault(name, []).append((action, args))
        return out

    base = rules(DEFAULT_CAPS)
    for name in ("mount", "umount2", "unshare", "setns", "keyctl", "add_key", "kexec_load", "bpf",
                 "init_module", "reboot", "swapon", "pivot_root", "syslog", "settimeofday"):
        assert name not in base, name
    assert base["clone"] == [(allow, [(0, 7, 0x7E020000, 0)])]  # no namespace flags
    assert base["clone3"] == [(0x00050000 | errno.ENOSYS, [])]
    assert base["ptrace"] == [(allow, [])]  # Docker allows it on kernels >= 4.8
    assert (allow, [(0, 1, 40, 0)]) in base["socket"]  # anything but AF_VSOCK
    admin = rules(DEFAULT_CAPS | {"SYS_ADMIN"})
    assert admin["mount"] == [(allow, [])] and "clone3" in admin and (allow, []) in admin["clone"]
