"""The Linux Cgroups role for real (v1 or v2, whatever this host mounts), with plain host
processes moved into the cgroups through ``_cgroup_procs_files`` (no sandbox needed).

Root only: fails (not skips) when not root, like every privileged test.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux.cgroups import LinuxCgroups, read
from engine.kernel import Resources

pytestmark = pytest.mark.privileged
MiB = 1024**2
BUSYBOX = "/bin/busybox"


class K(LinuxCgroups):
    def __init__(self) -> None:
        self.cgroup_root = "/sys/fs/cgroup"
        self._init_cgroups()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def k() -> Iterator[K]:
    if os.geteuid() != 0:
        pytest.fail("privileged test needs root")
    kernel = K()
    yield kernel
    leaks = kernel._leaks_cgroups()
    for path in sorted(leaks, key=lambda p: -p.count("/")):  # a failed test: clean up, then fail
        try:
            run(kernel.cgroup_kill(path))
            run(kernel.cgroup_remove(path))
        except OSError:
            pass
    assert leaks == []


class Procs:
    """Host processes started by a test, killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, k: K, cg: str, argv: list[str], gate: bool = False) -> subprocess.Popen[bytes]:
        """Start ``argv`` and move it into ``cg``; with ``gate`` it reads one line from stdin
        before going on (so it forks only once inside the cgroup)."""
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if gate else subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(p)
        for f in k._cgroup_procs_files(cg):
            with open(f, "w") as fh:
                fh.write(str(p.pid))
        if gate:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.close()
            p.stdin = None
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    yield ps
    ps.close()


def knob(k: K, path: str, v1: tuple[str, str], v2: str) -> str:
    if k._cgroup_version() == 2:
        return read(os.path.join(k.cgroup_root, path, v2))
    return read(os.path.join(k.cgroup_root, v1[0], path, v1[1]))


def test_limits_read_back(k: K) -> None:
    r = Resources(memory=64 * MiB, memory_swap=-1, memory_reservation=16 * MiB, cpu_shares=512,
                  cpu_quota=50_000, cpu_period=100_000, cpuset_cpus="0", pids_limit=9,
                  io_weight=500)
    run(k.cgroup_create("wharfie-ptest/lim", r))
    cg = "wharfie-ptest/lim"
    assert knob(k, cg, ("memory", "memory.limit_in_bytes"), "memory.max") == str(64 * MiB)
    assert knob(k, cg, ("memory", "memory.soft_limit_in_bytes"), "memory.low") == str(16 * MiB)
    assert knob(k, cg, ("cpuset", "cpuset.cpus"), "cpuset.cpus") == "0"
    assert knob(k, cg, ("pids", "pids.max"), "pids.max") == "9"
    if k._cgroup_version() == 1:
        assert knob(k, cg, ("cpu", "cpu.shares"), "") == "512"
        assert knob(k, cg, ("cpu", "cpu.cfs_quota_us"), "") == "50000"
        assert read(f"/sys/fs/cgroup/cpuset/{cg}/cpuset.mems") != ""  # copied from the parent
    else:
        assert knob(k, cg, ("", ""), "cpu.max") == "50000 100000"
    s = run(k.cgroup_stats(cg))
    assert s.memory_limit == 64 * MiB and s.pids_limit == 9 and not s.frozen
    run(k.cgroup_update(cg, Resources(memory=128 * MiB, pids_limit=-1, cpu_quota=-1)))
    s = run(k.cgroup_stats(cg))
    assert s.memory_limit == 128 * MiB and s.pids_limit is None
    with pytest.raises(OSError) as ei:
        run(k.cgroup_update(cg, Resources(cpu_shares=1)))
    assert ei.value.errno == errno.EINVAL
    run(k.cgroup_remove(cg))
    assert not os.path.exists(os.path.join(k.cgroup_root, "memory", "wharfie-ptest"))


def test_freeze_stops_a_busy_loop(k: K, procs: Procs, tmp_path: Any) -> None:
    cg = "wharfie-ptest/frz"
    run(k.cgroup_create(cg, Resources()))
    out = tmp_path / "count"
    procs.start(k, cg, ["sh", "-c", f"while :; do echo x >> {out}; done"])
    time.sleep(0.2)
    run(k.cgroup_freeze(cg))
    run(k.cgroup_freeze(cg))  # idempotent
    assert run(k.cgroup_stats(cg)).frozen
    size = out.stat().st_size
    time.sleep(0.3)
    assert out.stat().st_size == size
    run(k.cgroup_thaw(cg))
    assert not run(k.cgroup_stats(cg)).frozen
    time.sleep(0.2)
    assert out.stat().st_size > size
    run(k.cgroup_kill(cg))
    assert run(k.cgroup_procs(cg)) == []
    run(k.cgroup_remove(cg))


def test_oom_kill_is_counted(k: K, procs: Procs) -> None:
    cg = "wharfie-ptest/oom"
    run(k.cgroup_create(cg, Resources(memory=32 * MiB, memory_swap=32 * MiB)))
    p = procs.start(k, cg, [BUSYBOX, "sh", "-c",
                            "read x; exec /bin/busybox dd if=/dev/zero of=/dev/null bs=100M count=1"],
                    gate=True)
    assert p.wait(timeout=30) == -9  # SIGKILLed by the OOM killer
    s = run(k.cgroup_stats(cg))
    assert s.oom_kills >= 1 and s.memory_max_usage <= 32 * MiB
    run(k.cgroup_remove(cg))


def test_pids_limit_stops_forks(k: K, procs: Procs) -> None:
    cg = "wharfie-ptest/pids"
    run(k.cgroup_create(cg, Resources(pids_limit=4)))
    p = procs.start(k, cg, [BUSYBOX, "sh", "-c",
                            "read x; for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; wait"], gate=True)
    deadline = time.monotonic() + 5
    while run(k.cgroup_stats(cg)).pids_current < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert run(k.cgroup_stats(cg)).pids_current == 4
    assert 2 <= len(run(k.cgroup_procs(cg))) <= 4
    run(k.cgroup_kill(cg))
    _, err = p.communicate(timeout=10)
    assert b"fork" in err or b"Resource temporarily unavailable" in err
    run(k.cgroup_remove(cg))


def test_remove_busy_then_kill_frozen(k: K, procs: Procs) -> None:
    cg = "wharfie-ptest/busy"
    run(k.cgroup_create(cg, Resources()))
    p = procs.start(k, cg, ["sleep", "100"])
    assert run(k.cgroup_procs(cg)) == [p.pid]
    with pytest.raises(OSError) as ei:
        run(k.cgroup_remove(cg))
    assert ei.value.errno == errno.EBUSY
    run(k.cgroup_freeze(cg))
    run(k.cgroup_kill(cg))  # frozen members die too
    assert run(k.cgroup_procs(cg)) == []
    run(k.cgroup_remove(cg))  # the unreaped zombie does not keep the cgroup busy
    assert p.wait(timeout=5) == -9
    with pytest.raises(FileNotFoundError):
        run(k.cgroup_remove(cg))
    with pytest.raises(FileNotFoundError):
        k._cgroup_procs_files(cg)


def test_create_exists_and_nested_leaks(k: K) -> None:
    run(k.cgroup_create("wharfie-ptest/a/b", Resources()))
    with pytest.raises(FileExistsError):
        run(k.cgroup_create("wharfie-ptest/a/b", Resources()))
    assert k._leaks_cgroups() == ["wharfie-ptest", "wharfie-ptest/a", "wharfie-ptest/a/b"]
    run(k.cgroup_remove("wharfie-ptest/a/b"))
    assert k._leaks_cgroups() == []
