"""cgroup v2: the unified hierarchy rooted at the cgroup root.

Each ancestor enables the controllers we use in its ``cgroup.subtree_control`` (those it has in
``cgroup.controllers``), so the leaf gets the interface files. Mapping as runc/crun: memory.max,
memory.swap.max (= memory+swap − memory), memory.low, cpu.weight (converted from shares),
cpu.max ("quota period"), cpuset.cpus, pids.max, io.bfq.weight or io.weight ("default N",
converted from the blkio weight), cgroup.freeze / cgroup.events, cgroup.kill (Linux 5.14+).
"""

from __future__ import annotations

import errno
import os
import time

from backends.linux.cgroups import (FREEZE_TIMEOUT, mkdir_chain, read, read_int, read_keyed,
                                    write)
from engine.kernel import CgroupStats, Resources

CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) → cpu.weight (1..10000), as runc ``ConvertCPUSharesToCgroupV2Value``."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) → io.weight (1..10000), as runc ``ConvertBlkIOToIOWeightValue``."""
    return 1 + ((weight - 10) * 9999) // 990


class V2Driver:
    version = 2

    def __init__(self, root: str) -> None:
        self.root = root

    def _dir(self, path: str) -> str:
        return os.path.join(self.root, path)

    def _file(self, path: str, name: str) -> str:
        return os.path.join(self.root, path, name)

    def exists(self, path: str) -> bool:
        return os.path.isdir(self._dir(path))

    def procs_files(self, path: str) -> list[str]:
        f = self._file(path, "cgroup.procs")
        if not os.path.exists(f):
            raise FileNotFoundError(errno.ENOENT, f"cgroup {path} does not exist", path)
        return [f]

    # ---- lifecycle ----------------------------------------------------------------------------
    def mkdirs(self, path: str) -> None:
        def mkdir(d: str) -> None:
            self._enable_controllers(os.path.dirname(d))
            self._mkdir(d)

        parts = path.split("/")
        for i in range(len(parts)):  # existing ancestors too (made by someone else)
            self._enable_controllers(os.path.join(self.root, *parts[:i]))
        mkdir_chain(self.root, path, mkdir)

    def _mkdir(self, d: str) -> None:
        os.mkdir(d)  # the kernel populates the interface files (a fake tree's test does it)

    @staticmethod
    def _enable_controllers(parent: str) -> None:
        try:
            available = read(os.path.join(parent, "cgroup.controllers")).split()
            enabled = read(os.path.join(parent, "cgroup.subtree_control")).split()
        except FileNotFoundError:
            return
        for ctrl in CONTROLLERS:
            if ctrl in available and ctrl not in enabled:
                try:
                    write(os.path.join(parent, "cgroup.subtree_control"), f"+{ctrl}")
                except OSError:
                    pass  # e.g. EBUSY (parent holds processes): its files stay absent below

    def rmdir(self, path: str) -> None:
        os.rmdir(self._dir(path))

    def allow_devices(self, path: str) -> None:
        pass  # v2 device control is an eBPF program; we attach none (everything is allowed)

    # ---- limits -------------------------------------------------------------------------------
    def _need(self, path: str, name: str) -> str:
        f = self._file(path, name)
        if not os.path.exists(f):
            ctrl = name.split(".")[0]
            raise OSError(errno.EOPNOTSUPP, f"cgroup controller {ctrl!r} is not enabled", f)
        return f

    def apply(self, path: str, r: Resources) -> None:
        if r.cpuset_cpus is not None:
            write(self._need(path, "cpuset.cpus"), r.cpuset_cpus)
        if r.memory is not None:
            write(self._need(path, "memory.max"), r.memory)
        if r.memory_swap is not None:
            self._apply_swap(path, r)
        if r.memory_reservation is not None:
            write(self._need(path, "memory.low"), r.memory_reservation)
        if r.cpu_shares is not None:
            write(self._need(path, "cpu.weight"), shares_to_weight(r.cpu_shares))
        if r.cpu_quota is not None or r.cpu_period is not None:
            f = self._need(path, "cpu.max")
            quota, _, period = read(f).partition(" ")
            if r.cpu_quota is not None:
                quota = "max" if r.cpu_quota == -1 else str(r.cpu_quota)
            if r.cpu_period is not None:
                period = str(r.cpu_period)
            write(f, f"{quota} {period or 100000}")
        if r.pids_limit is not None:
            write(self._need(path, "pids.max"), r.pids_limit if r.pids_limit > 0 else "max")
        if r.io_weight is not None:
            bfq, io = self._file(path, "io.bfq.weight"), self._file(path, "io.weight")
            if os.path.exists(bfq):
                write(bfq, r.io_weight)
            elif os.path.exists(io):
                write(io, f"default {blkio_to_io_weight(r.io_weight)}")
            # neither (no io controller): discarded, as dockerd does

    def _apply_swap(self, path: str, r: Resources) -> None:
        """memory.swap.max holds swap alone: memory+swap − memory (runc
        ``ConvertMemorySwapToCgroupV2Value``); -1 is "max"."""
        f = self._file(path, "memory.swap.max")
        if not os.path.exists(f):
            return  # no swap accounting: discarded, as dockerd does
        assert r.memory_swap is not None
        if r.memory_swap == -1:
            write(f, "max")
            return
        memory = r.memory if r.memory is not None else read_int(self._need(path, "memory.max"), -1)
        if memory < 0 or r.memory_swap < memory:
            raise OSError(errno.EINVAL, "memory_swap needs a memory limit not above it", f)
        write(f, r.memory_swap - memory)

    # ---- freezer ------------------------------------------------------------------------------
    def set_frozen(self, path: str, frozen: bool) -> None:
        write(self._need(path, "cgroup.freeze"), "1" if frozen else "0")

    def wait_frozen(self, path: str, frozen: bool) -> bool:
        """Wait until cgroup.events says ``frozen 1`` (or 0): freezing is asynchronous."""
        f = self._file(path, "cgroup.events")
        want = "1" if frozen else "0"
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.0005
        while read_keyed(f).get("frozen", want) != want:
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    # ---- stats --------------------------------------------------------------------------------
    def stats(self, path: str) -> CgroupStats:
        def num(name: str, default: int = 0) -> int:
            return read_int(self._file(path, name), default)

        limit = num("memory.max", -1)
        pids_max = num("pids.max", -1)
        usage = num("memory.current")
        peak = num("memory.peak", -1)  # Linux 5.19+
        return CgroupStats(
            memory_usage=usage,
            memory_limit=None if limit < 0 else limit,
            memory_max_usage=peak if peak >= 0 else usage,
            oom_kills=int(read_keyed(self._file(path, "memory.events")).get("oom_kill", "0")),
            pids_current=num("pids.current"),
            pids_limit=None if pids_max < 0 else pids_max,
            cpu_usage_ns=int(read_keyed(self._file(path, "cpu.stat")).get("usage_usec", "0")) * 1000,
            frozen=read_keyed(self._file(path, "cgroup.events")).get("frozen") == "1",
        )

    def kill(self, path: str) -> bool:
        f = self._file(path, "cgroup.kill")
        if not os.path.exists(f):
            return False
        write(f, "1")
        return True
