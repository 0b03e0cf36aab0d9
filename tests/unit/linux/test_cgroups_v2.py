"""cgroup v2 (and v1 file) logic of the Linux backend against a fake cgroupfs tree in tmp_path.

A plain directory cannot grow interface files on mkdir the way cgroupfs does, so the fake drivers
below populate them; everything else (mapping, ordering, rollback, leaks) is the real code.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
from typing import Any

import pytest

from backends.linux.cgroups import LinuxCgroups
from backends.linux.cgroups_v1 import V1Driver, find_mounts
from backends.linux.cgroups_v2 import V2Driver, blkio_to_io_weight, shares_to_weight
from engine.kernel import Resources

MiB = 1024**2
V2_FILES = {
    "cgroup.controllers": "cpu cpuset io memory pids", "cgroup.subtree_control": "",
    "cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0", "cgroup.freeze": "0",
    "cgroup.kill": "", "memory.max": "max", "memory.swap.max": "max", "memory.low": "0",
    "memory.current": "0", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.stat": "usage_usec 0",
    "cpuset.cpus": "", "pids.max": "max", "pids.current": "0", "io.weight": "default 100",
}


def populate(d: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        pathlib.Path(d, name).write_text(text)


def unpopulate(d: str) -> None:
    """cgroupfs rmdir ignores the interface files; a plain directory must be emptied first."""
    if os.path.isdir(d) and not any(os.path.isdir(os.path.join(d, n)) for n in os.listdir(d)):
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))


class FakeV2(V2Driver):
    def _mkdir(self, d: str) -> None:
        os.mkdir(d)
        populate(d, V2_FILES)

    def set_frozen(self, path: str, frozen: bool) -> None:
        super().set_frozen(path, frozen)
        populate(self._dir(path), {"cgroup.events": f"populated 1\nfrozen {int(frozen)}"})

    def rmdir(self, path: str) -> None:
        unpopulate(self._dir(path))
        super().rmdir(path)


class K(LinuxCgroups):
    def __init__(self, root: pathlib.Path) -> None:
        self.cgroup_root = str(root)
        self._init_cgroups()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def v2(tmp_path: pathlib.Path) -> K:
    populate(str(tmp_path), {"cgroup.controllers": "cpu cpuset io memory pids",
                             "cgroup.subtree_control": "", "cgroup.procs": ""})
    k = K(tmp_path)
    assert k._cgroup_version() == 2
    k._cg = FakeV2(str(tmp_path))
    return k


def cat(root: pathlib.Path, path: str) -> str:
    return (root / path).read_text().strip()


def test_conversions() -> None:
    assert shares_to_weight(2) == 1 and shares_to_weight(262144) == 10000
    assert shares_to_weight(1024) == 39  # Docker's default shares → runc's weight
    assert blkio_to_io_weight(10) == 1 and blkio_to_io_weight(1000) == 10000
    assert blkio_to_io_weight(500) == 4950


def test_create_writes_v2_files(v2: K, tmp_path: pathlib.Path) -> None:
    r = Resources(memory=64 * MiB, memory_swap=96 * MiB, memory_reservation=32 * MiB,
                  cpu_shares=1024, cpu_quota=50_000, cpu_period=100_000, cpuset_cpus="0",
                  pids_limit=-1, io_weight=500)
    run(v2.cgroup_create("wharfie/c1", r))
    assert cat(tmp_path, "wharfie/c1/memory.max") == str(64 * MiB)
    assert cat(tmp_path, "wharfie/c1/memory.swap.max") == str(32 * MiB)  # swap alone
    assert cat(tmp_path, "wharfie/c1/memory.low") == str(32 * MiB)
    assert cat(tmp_path, "wharfie/c1/cpu.weight") == "39"
    assert cat(tmp_path, "wharfie/c1/cpu.max") == "50000 100000"
    assert cat(tmp_path, "wharfie/c1/cpuset.cpus") == "0"
    assert cat(tmp_path, "wharfie/c1/pids.max") == "max"
    assert cat(tmp_path, "wharfie/c1/io.weight") == "default 4950"
    assert cat(tmp_path, "cgroup.subtree_control").startswith("+")  # controllers enabled
    assert v2._cgroup_procs_files("wharfie/c1") == [str(tmp_path / "wharfie/c1/cgroup.procs")]
    with pytest.raises(FileExistsError):
        run(v2.cgroup_create("wharfie/c1", Resources()))
    assert v2._leaks_cgroups() == ["wharfie", "wharfie/c1"]
    run(v2.cgroup_remove("wharfie/c1"))  # the intermediate "wharfie" we made goes too
    assert not (tmp_path / "wharfie").exists() and v2._leaks_cgroups() == []


def test_update_keeps_unset_fields(v2: K, tmp_path: pathlib.Path) -> None:
    run(v2.cgroup_create("c", Resources(memory=64 * MiB, cpu_quota=20_000)))
    run(v2.cgroup_update("c", Resources(cpu_period=50_000)))
    assert cat(tmp_path, "c/cpu.max") == "20000 50000"
    run(v2.cgroup_update("c", Resources(cpu_quota=-1)))
    assert cat(tmp_path, "c/cpu.max") == "max 50000"
    run(v2.cgroup_update("c", Resources(memory_swap=100 * MiB)))  # against memory.max
    assert cat(tmp_path, "c/memory.swap.max") == str(36 * MiB)
    run(v2.cgroup_update("c", Resources(memory_swap=-1, pids_limit=7)))
    assert cat(tmp_path, "c/memory.swap.max") == "max" and cat(tmp_path, "c/pids.max") == "7"
    with pytest.raises(OSError) as ei:
        run(v2.cgroup_update("c", Resources(memory_swap=10 * MiB)))  # below memory
    assert ei.value.errno == errno.EINVAL
    run(v2.cgroup_remove("c"))


def test_swap_without_memory_limit_is_einval(v2: K) -> None:
    run(v2.cgroup_create("c", Resources()))
    with pytest.raises(OSError) as ei:
        run(v2.cgroup_update("c", Resources(memory_swap=64 * MiB)))
    assert ei.value.errno == errno.EINVAL
    run(v2.cgroup_remove("c"))


def test_absent_swap_and_io_files_are_discarded(v2: K, tmp_path: pathlib.Path) -> None:
    run(v2.cgroup_create("c", Resources()))
    os.unlink(tmp_path / "c/memory.swap.max")
    os.unlink(tmp_path / "c/io.weight")
    run(v2.cgroup_update("c", Resources(memory=64 * MiB, memory_swap=128 * MiB, io_weight=100)))
    run(v2.cgroup_remove("c"))


@pytest.mark.parametrize("r", [Resources(cpu_shares=1), Resources(memory=-1),
                               Resources(memory=2 * MiB, memory_swap=MiB),
                               Resources(cpuset_cpus="0-99999"), Resources(io_weight=1)])
def test_invalid_values_make_nothing(v2: K, tmp_path: pathlib.Path, r: Resources) -> None:
    with pytest.raises(OSError) as ei:
        run(v2.cgroup_create("wharfie/bad", r))
    assert ei.value.errno == errno.EINVAL
    assert not (tmp_path / "wharfie").exists() and v2._leaks_cgroups() == []


def test_failed_write_rolls_back(v2: K, tmp_path: pathlib.Path) -> None:
    class Broken(FakeV2):
        def _mkdir(self, d: str) -> None:
            super()._mkdir(d)
            os.unlink(os.path.join(d, "pids.max"))  # controller not enabled → EOPNOTSUPP

    v2._cg = Broken(str(tmp_path))
    with pytest.raises(OSError) as ei:
        run(v2.cgroup_create("wharfie/x", Resources(memory=MiB, pids_limit=3)))
    assert ei.value.errno == errno.EOPNOTSUPP
    assert not (tmp_path / "wharfie").exists() and v2._leaks_cgroups() == []


def test_stats_freeze_kill(v2: K, tmp_path: pathlib.Path) -> None:
    run(v2.cgroup_create("c", Resources(memory=64 * MiB, pids_limit=5)))
    populate(str(tmp_path / "c"), {
        "memory.current": "4096", "memory.peak": "8192", "pids.current": "2",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500"})
    s = run(v2.cgroup_stats("c"))
    assert (s.memory_usage, s.memory_limit, s.memory_max_usage) == (4096, 64 * MiB, 8192)
    assert (s.oom_kills, s.pids_current, s.pids_limit, s.cpu_usage_ns) == (2, 2, 5, 1_500_000)
    assert not s.frozen
    run(v2.cgroup_freeze("c"))
    assert cat(tmp_path, "c/cgroup.freeze") == "1" and run(v2.cgroup_stats("c")).frozen
    run(v2.cgroup_thaw("c"))
    assert cat(tmp_path, "c/cgroup.freeze") == "0" and not run(v2.cgroup_stats("c")).frozen
    run(v2.cgroup_kill("c"))
    assert cat(tmp_path, "c/cgroup.kill") == "1"
    os.unlink(tmp_path / "c/memory.peak")  # before Linux 5.19: peak falls back to current
    assert run(v2.cgroup_stats("c")).memory_max_usage == 4096
    populate(str(tmp_path / "c"), {"cgroup.procs": ""})
    run(v2.cgroup_remove("c"))


def test_missing_and_bad_paths(v2: K) -> None:
    with pytest.raises(FileNotFoundError):
        v2._cgroup_procs_files("nope")
    for call in (v2.cgroup_stats("nope"), v2.cgroup_freeze("nope"), v2.cgroup_remove("nope"),
                 v2.cgroup_procs("nope"), v2.cgroup_kill("nope")):
        with pytest.raises(FileNotFoundError):
            run(call)
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(OSError) as ei:
            run(v2.cgroup_create(bad, Resources()))
        assert ei.value.errno == errno.EINVAL


# ---- v1 file logic on a fake tree -------------------------------------------------------------
V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712"},
    "cpu,cpuacct": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
                    "cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "devices": {"devices.allow": "", "devices.deny": ""},
}


class FakeV1(V1Driver):
    def _mkdir(self, d: str) -> None:
        os.mkdir(d)
        hierarchy = os.path.relpath(d, self.root).split("/")[0]
        populate(d, {"cgroup.procs": "", **V1_FILES[hierarchy]})

    def rmdir(self, path: str) -> None:
        for h in self.hierarchies:
            unpopulate(os.path.join(h, path))
        super().rmdir(path)


@pytest.fixture
def v1(tmp_path: pathlib.Path) -> K:
    for name, files in V1_FILES.items():
        (tmp_path / name).mkdir()
        populate(str(tmp_path / name), {"cgroup.procs": "", **files})
    populate(str(tmp_path / "cpuset"), {"cpuset.cpus": "0-1", "cpuset.mems": "0"})
    k = K(tmp_path)
    assert k._cgroup_version() == 1
    mounts = find_mounts(str(tmp_path), mountinfo=str(tmp_path / "no-mountinfo"))
    assert mounts["cpu"] == mounts["cpuacct"] == str(tmp_path / "cpu,cpuacct")
    k._cg = FakeV1(str(tmp_path), mounts)
    return k


def test_v1_create_in_every_hierarchy(v1: K, tmp_path: pathlib.Path) -> None:
    run(v1.cgroup_create("w/c", Resources(memory=64 * MiB, memory_swap=-1, cpu_shares=512,
                                          pids_limit=0, io_weight=300)))
    files = v1._cgroup_procs_files("w/c")
    assert len(files) == 5  # cpu and cpuacct share one hierarchy
    assert cat(tmp_path, "memory/w/c/memory.limit_in_bytes") == str(64 * MiB)
    assert cat(tmp_path, "memory/w/c/memory.memsw.limit_in_bytes") == "-1"
    assert cat(tmp_path, "cpu,cpuacct/w/c/cpu.shares") == "512"
    assert cat(tmp_path, "pids/w/c/pids.max") == "max"
    # cpuset inherited from the parent at every level we made (an empty cpuset refuses tasks)
    assert cat(tmp_path, "cpuset/w/cpuset.cpus") == "0-1"
    assert cat(tmp_path, "cpuset/w/c/cpuset.mems") == "0"
    assert cat(tmp_path, "devices/w/c/devices.deny") == "a"
    assert cat(tmp_path, "devices/w/c/devices.allow") == "c 10:200 rwm"  # the last rule
    s = run(v1.cgroup_stats("w/c"))
    assert s.memory_limit == 64 * MiB and s.pids_limit is None
    run(v1.cgroup_update("w/c", Resources(memory=32 * MiB, memory_swap=32 * MiB)))
    assert cat(tmp_path, "memory/w/c/memory.memsw.limit_in_bytes") == str(32 * MiB)
    run(v1.cgroup_remove("w/c"))
    assert v1._leaks_cgroups() == [] and not (tmp_path / "memory/w").exists()
