"""cgroup v1: one hierarchy per mounted controller (possibly co-mounted, like ``cpu,cpuacct``).

A cgroup path exists once per hierarchy we use; it is created and removed in all of them. The
mount points come from /proc/self/mountinfo (cgroup mounts below the cgroup root); for a fake
tree (unit tests) without mounts, subdirectories of the root named after controllers are used.

Mapping as runc's libcontainer/cgroups/fs: memory.limit_in_bytes, memory.memsw.limit_in_bytes,
memory.soft_limit_in_bytes, cpu.shares, cpu.cfs_period_us/cfs_quota_us, cpuset.cpus (a new
cpuset starts empty: cpus and mems are copied from the parent before any task can join),
pids.max, blkio.bfq.weight or blkio.weight, freezer.state; devices get Docker's default
allow-list.
"""

from __future__ import annotations

import errno
import os
import time

from backends.linux.cgroups import (FREEZE_TIMEOUT, UNLIMITED, mkdir_chain, read, read_int,
                                    read_keyed, write)
from engine.kernel import CgroupStats, Resources

CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices")

# Docker's default device rules (moby oci/defaults.go, DefaultLinuxSpec + the "m" rules).
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null zero full random urandom
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",  # tty console ptmx
    "c 136:* rwm",  # /dev/pts/*
    "c 10:200 rwm",  # /dev/net/tun
)


def find_mounts(cgroup_root: str, mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Controller name → mount point, for the v1 hierarchies mounted below ``cgroup_root``."""
    root = os.path.realpath(cgroup_root)
    found: dict[str, str] = {}
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        point = fields[4].replace("\\040", " ")
        if os.path.dirname(point) != root:
            continue
        for opt in tail[2].split(","):
            if opt in CONTROLLERS:
                found.setdefault(opt, point)
    if not found and os.path.isdir(root):  # a fake tree: directories named cpu, cpu,cpuacct …
        for name in sorted(os.listdir(root)):
            if os.path.isfile(os.path.join(root, name, "cgroup.procs")):
                for ctrl in name.split(","):
                    if ctrl in CONTROLLERS:
                        found.setdefault(ctrl, os.path.join(root, name))
    return found


class V1Driver:
    version = 1

    def __init__(self, root: str, mounts: dict[str, str] | None = None) -> None:
        self.root = root
        self.mounts = mounts if mounts is not None else find_mounts(root)
        # each hierarchy once, in a stable order (co-mounted controllers share one directory)
        self.hierarchies = list(dict.fromkeys(self.mounts[c] for c in CONTROLLERS if c in self.mounts))

    # ---- paths --------------------------------------------------------------------------------
    def _dir(self, ctrl: str, path: str) -> str | None:
        mount = self.mounts.get(ctrl)
        return os.path.join(mount, path) if mount else None

    def _file(self, ctrl: str, path: str, name: str) -> str | None:
        d = self._dir(ctrl, path)
        return os.path.join(d, name) if d else None

    def exists(self, path: str) -> bool:
        return any(os.path.isdir(os.path.join(h, path)) for h in self.hierarchies)

    def procs_files(self, path: str) -> list[str]:
        files = [os.path.join(h, path, "cgroup.procs") for h in self.hierarchies]
        files = [f for f in files if os.path.exists(f)]
        if not files:
            raise FileNotFoundError(errno.ENOENT, f"cgroup {path} does not exist", path)
        return files

    # ---- lifecycle ----------------------------------------------------------------------------
    def mkdirs(self, path: str) -> None:
        for h in self.hierarchies:
            mkdir_chain(h, path, self._mkdir)
        cpuset = self.mounts.get("cpuset")
        if cpuset:
            self._init_cpuset(cpuset, path)
        devices = self._dir("devices", path)
        if devices:
            write(os.path.join(devices, "devices.deny"), "a")
            for rule in DEFAULT_DEVICE_RULES:
                write(os.path.join(devices, "devices.allow"), rule)

    def _mkdir(self, d: str) -> None:
        os.mkdir(d)  # the kernel populates the interface files (a fake tree's test does it)

    @staticmethod
    def _init_cpuset(mount: str, path: str) -> None:
        """A new v1 cpuset has empty cpus/mems and refuses tasks (ENOSPC): copy the parent's,
        top-down (runc ``cpusetEnsureParent``)."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            d = os.path.join(mount, *parts[:i])
            parent = os.path.dirname(d)
            for name in ("cpuset.cpus", "cpuset.mems"):
                f = os.path.join(d, name)
                if os.path.exists(f) and not read(f):
                    write(f, read(os.path.join(parent, name)))

    def rmdir(self, path: str) -> None:
        gone = 0
        for h in self.hierarchies:
            try:
                os.rmdir(os.path.join(h, path))
            except FileNotFoundError:
                gone += 1
        if gone == len(self.hierarchies):
            raise FileNotFoundError(errno.ENOENT, f"cgroup {path} does not exist", path)

    def allow_devices(self, path: str) -> None:
        f = self._file("devices", path, "devices.allow")
        if f:
            write(f, "a")

    # ---- limits -------------------------------------------------------------------------------
    def apply(self, path: str, r: Resources) -> None:
        if r.cpuset_cpus is not None and (f := self._file("cpuset", path, "cpuset.cpus")):
            parent = os.path.join(os.path.dirname(os.path.dirname(f)), "cpuset.cpus")
            write(f, r.cpuset_cpus or read(parent))
        self._apply_memory(path, r)
        if r.memory_reservation is not None and (
                f := self._file("memory", path, "memory.soft_limit_in_bytes")):
            write(f, r.memory_reservation)
        if r.cpu_shares is not None and (f := self._file("cpu", path, "cpu.shares")):
            write(f, r.cpu_shares)
        if r.cpu_period is not None and (f := self._file("cpu", path, "cpu.cfs_period_us")):
            write(f, r.cpu_period)
        if r.cpu_quota is not None and (f := self._file("cpu", path, "cpu.cfs_quota_us")):
            write(f, r.cpu_quota)
        if r.pids_limit is not None and (f := self._file("pids", path, "pids.max")):
            write(f, r.pids_limit if r.pids_limit > 0 else "max")
        if r.io_weight is not None:
            for name in ("blkio.bfq.weight", "blkio.weight"):
                f = self._file("blkio", path, name)
                if f and os.path.exists(f):
                    write(f, r.io_weight)
                    break
            # neither file (no weight-capable IO scheduler): discarded, as dockerd does

    def _apply_memory(self, path: str, r: Resources) -> None:
        limit = self._file("memory", path, "memory.limit_in_bytes")
        memsw = self._file("memory", path, "memory.memsw.limit_in_bytes")
        if limit is None:
            return
        if memsw is not None and not os.path.exists(memsw):
            memsw = None  # no swap accounting: the swap part is discarded, as dockerd does
        mem = -1 if r.memory is None else r.memory
        swap = r.memory_swap
        if r.memory is not None and swap is not None and memsw:
            # memory <= memsw must hold after each write: raise memsw first, lower memory first
            # (runc setMemoryAndSwap).
            if swap == -1 or read_int(limit) < swap:
                write(memsw, swap)
                write(limit, mem)
            else:
                write(limit, mem)
                write(memsw, swap)
            return
        if r.memory is not None:
            write(limit, mem)
        if swap is not None and memsw:
            write(memsw, swap)

    # ---- freezer ------------------------------------------------------------------------------
    def set_frozen(self, path: str, frozen: bool) -> None:
        f = self._file("freezer", path, "freezer.state")
        if f is None:
            raise OSError(errno.EOPNOTSUPP, "no freezer cgroup mounted", path)
        write(f, "FROZEN" if frozen else "THAWED")

    def wait_frozen(self, path: str, frozen: bool) -> bool:
        """Poll freezer.state until it settles; a FREEZING cgroup is asked again (runc)."""
        f = self._file("freezer", path, "freezer.state")
        if f is None:
            return False
        want = "FROZEN" if frozen else "THAWED"
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.0005
        while True:
            state = read(f)
            if state == want:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            write(f, want)

    # ---- stats --------------------------------------------------------------------------------
    def stats(self, path: str) -> CgroupStats:
        def num(ctrl: str, name: str, default: int = 0) -> int:
            f = self._file(ctrl, path, name)
            return read_int(f, default) if f else default

        limit = num("memory", "memory.limit_in_bytes", UNLIMITED)
        pids_max = num("pids", "pids.max", -1)
        oom = self._file("memory", path, "memory.oom_control")
        state = self._file("freezer", path, "freezer.state")
        return CgroupStats(
            memory_usage=num("memory", "memory.usage_in_bytes"),
            memory_limit=None if limit >= UNLIMITED else limit,
            memory_max_usage=num("memory", "memory.max_usage_in_bytes"),
            oom_kills=int(read_keyed(oom).get("oom_kill", "0")) if oom else 0,  # Linux >= 4.13
            pids_current=num("pids", "pids.current"),
            pids_limit=None if pids_max < 0 else pids_max,
            cpu_usage_ns=num("cpuacct", "cpuacct.usage"),
            frozen=bool(state) and read(state) != "THAWED",  # type: ignore[arg-type]
        )

    def kill(self, path: str) -> bool:
        return False  # no cgroup.kill in v1: the caller loops freeze → SIGKILL → thaw
