"""The Cgroups role of ``LinuxKernel`` (see ``engine.kernel.Cgroups`` for the contract).

The version is detected once at ``self.cgroup_root``: a ``cgroup.controllers`` file there means
the unified v2 hierarchy (``cgroups_v2.V2Driver``), otherwise v1 with one mount per controller
(``cgroups_v1.V1Driver``). The drivers hold the version-specific file names; this mixin holds the
policy both share: path and value validation, atomic create, which cgroups this kernel made
(for ``leaks()`` and for removing the intermediate directories it created), and the freeze →
SIGKILL → thaw loop used when the kernel has no ``cgroup.kill``.

Value mapping follows runc/crun (libcontainer). Two Docker-daemon behaviours are mirrored where the
host lacks a knob: a memory+swap limit without swap accounting (no ``memsw``/``swap.max`` file) and
an IO weight without a weight-capable IO scheduler (no ``blkio.weight``) are discarded, as dockerd
discards them with a warning ("Your kernel does not support ... Weight discarded").

Private hooks for the other roles: ``_cgroup_procs_files(path)`` (spawn writes the new pid in each)
and ``_cgroup_allow_devices(path)`` (``--privileged``: lift the v1 default device allow-list).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from engine.kernel import CgroupStats, Pid, Resources

T = TypeVar("T")
_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
UNLIMITED = 1 << 62  # v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (~2^63)
KILL_TIMEOUT = 5.0
FREEZE_TIMEOUT = 5.0


# ---- cgroupfs file helpers (used by both drivers) ------------------------------------------
def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: str, default: int = 0) -> int:
    """An integer file; ``default`` if it is absent or reads "max"."""
    try:
        text = read(path)
    except FileNotFoundError:
        return default
    return default if text == "max" else int(text)


def read_keyed(path: str) -> dict[str, str]:
    """A flat-keyed file (``key value`` per line) such as memory.events or cpu.stat."""
    try:
        text = read(path)
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def write(path: str, value: str | int) -> None:
    """Write one value with a single write(2), so the kernel's errno reaches the caller."""
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)  # as runc
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror} (writing {data.decode()!r})", path) from None
    finally:
        os.close(fd)


def read_pids(path: str) -> set[int]:
    """The pids in a cgroup.procs file (plain os calls: read on every container's teardown)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):  # a seq_file may answer in several pieces
            chunks.append(chunk)
    finally:
        os.close(fd)
    return {int(p) for p in b"".join(chunks).split()}


def mkdir_chain(base: str, path: str, mkdir: Callable[[str], None]) -> None:
    """``mkdir -p base/path`` where the last directory must be new (``FileExistsError``).

    Another process may remove an empty intermediate directory meanwhile (as ``cgroup_remove``
    does with the ones it made): an ENOENT starts the chain again.
    """
    parts = path.split("/")
    for attempt in range(10):
        try:
            for i in range(1, len(parts) + 1):
                d = os.path.join(base, *parts[:i])
                if i == len(parts):
                    mkdir(d)
                elif not os.path.isdir(d):
                    try:
                        mkdir(d)
                    except FileExistsError:
                        pass
            return
        except FileNotFoundError:
            if attempt == 9:
                raise


def einval(what: str, value: object) -> OSError:
    return OSError(errno.EINVAL, f"invalid {what}: {value!r}")


def validate(r: Resources) -> None:
    """Refuse values the kernel (or runc, before it) would refuse, before anything is written.

    Checked up front rather than left to the write because some knobs may be absent on this host
    (then discarded) and a half-applied update is worse than none.
    """
    if r.memory is not None and r.memory < 0:
        raise einval("memory", r.memory)
    if r.memory_swap is not None and (r.memory_swap < -1 or (
            r.memory_swap >= 0 and r.memory is not None and r.memory_swap < r.memory)):
        raise einval("memory_swap (memory+swap, below memory)", r.memory_swap)
    if r.memory_reservation is not None and r.memory_reservation < 0:
        raise einval("memory_reservation", r.memory_reservation)
    if r.cpu_shares is not None and not 2 <= r.cpu_shares <= 262144:
        raise einval("cpu_shares (2..262144)", r.cpu_shares)
    if r.cpu_quota is not None and r.cpu_quota != -1 and r.cpu_quota < 1000:
        raise einval("cpu_quota (>= 1000us or -1)", r.cpu_quota)
    if r.cpu_period is not None and not 1000 <= r.cpu_period <= 1_000_000:
        raise einval("cpu_period (1000..1000000us)", r.cpu_period)
    if r.io_weight is not None and not 10 <= r.io_weight <= 1000:
        raise einval("io_weight (10..1000)", r.io_weight)
    if r.cpuset_cpus:
        if not _CPUSET.match(r.cpuset_cpus):
            raise einval("cpuset_cpus", r.cpuset_cpus)
        ncpu = os.cpu_count() or 1
        for part in r.cpuset_cpus.split(","):
            lo, _, hi = part.partition("-")
            if int(hi or lo) < int(lo) or int(hi or lo) >= ncpu:
                raise einval("cpuset_cpus", r.cpuset_cpus)


def check_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EINVAL, f"invalid cgroup path {path!r}", path)


class Driver(Protocol):
    """What a cgroup version provides (``cgroups_v1.V1Driver``, ``cgroups_v2.V2Driver``)."""

    version: int

    def exists(self, path: str) -> bool: ...
    def mkdirs(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def apply(self, path: str, r: Resources) -> None: ...
    def set_frozen(self, path: str, frozen: bool) -> None: ...
    def wait_frozen(self, path: str, frozen: bool) -> bool: ...
    def stats(self, path: str) -> CgroupStats: ...
    def procs_files(self, path: str) -> list[str]: ...
    def kill(self, path: str) -> bool: ...
    def allow_devices(self, path: str) -> None: ...


class LinuxCgroups:
    """Mixin of ``LinuxKernel``: cgroups below ``self.cgroup_root``."""

    cgroup_root: str

    def _init_cgroups(self) -> None:
        self._cg_lock = threading.Lock()
        self._cg_made: set[str] = set()  # explicitly created paths
        self._cg_auto: set[str] = set()  # intermediate directories created on the way
        # cgroup.procs files of the paths we made (fixed from mkdir to rmdir): reading them
        # needs no existence check of each hierarchy first
        self._cg_files: dict[str, list[str]] = {}
        self._cg: Driver
        if os.path.exists(os.path.join(self.cgroup_root, "cgroup.controllers")):
            from backends.linux.cgroups_v2 import V2Driver

            self._cg = V2Driver(self.cgroup_root)
        else:
            from backends.linux.cgroups_v1 import V1Driver

            self._cg = V1Driver(self.cgroup_root)

    def _cgroup_version(self) -> int:
        return self._cg.version

    def _leaks_cgroups(self) -> list[str]:
        with self._cg_lock:
            return sorted(p for p in self._cg_made | self._cg_auto if self._cg.exists(p))

    def _cgroup_procs_files(self, path: str) -> list[str]:
        """The cgroup.procs file(s) to write a pid into; ``FileNotFoundError`` if no such cgroup."""
        check_path(path)
        return self._cg.procs_files(path)

    def _cgroup_allow_devices(self, path: str) -> None:
        """Lift the default device allow-list of ``path`` (for a privileged sandbox)."""
        self._must_exist(path)
        self._cg.allow_devices(path)

    async def _cg_run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _cg_run_quick(self, fn: Callable[..., T], *args: object) -> T:
        """``fn`` (which takes ``_cg_lock``) on the loop when no worker holds the lock, else as
        :meth:`_cg_run`. For mkdir/rmdir/small writes in cgroupfs (in memory, nothing waits on a
        disk or a process): two thread hand-offs fewer, and under the GIL a worker would hold
        the loop up about as long anyway."""
        if self._cg_lock.locked():
            return await self._cg_run(fn, *args)
        return fn(*args)

    def _must_exist(self, path: str) -> None:
        check_path(path)
        if not self._cg.exists(path):
            raise FileNotFoundError(errno.ENOENT, f"cgroup {path} does not exist", path)

    # ---- create / update ------------------------------------------------------------------
    async def cgroup_create(self, path: str, resources: Resources) -> None:
        await self._cg_run_quick(self._cgroup_create, path, resources)

    def _cgroup_create(self, path: str, resources: Resources) -> None:
        check_path(path)
        validate(resources)
        parts = path.split("/")
        with self._cg_lock:
            if self._cg.exists(path):
                raise FileExistsError(errno.EEXIST, f"cgroup {path} exists", path)
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            ours = [p for p in prefixes if not self._cg.exists(p)]
            try:
                self._cg.mkdirs(path)
                self._cg.apply(path, resources)
            except BaseException:
                for p in reversed(ours):  # atomic from the caller's view
                    try:
                        self._cg.rmdir(p)
                    except OSError:
                        break
                raise
            self._cg_made.add(path)
            self._cg_files[path] = self._cg.procs_files(path)
            self._cg_auto.update(ours[:-1])

    async def cgroup_update(self, path: str, resources: Resources) -> None:
        await self._cg_run(self._cgroup_update, path, resources)

    def _cgroup_update(self, path: str, resources: Resources) -> None:
        self._must_exist(path)
        validate(resources)
        self._cg.apply(path, resources)

    # ---- freezer ----------------------------------------------------------------------------
    async def cgroup_freeze(self, path: str) -> None:
        await self._cg_run(self._cgroup_freeze, path)

    def _cgroup_freeze(self, path: str) -> None:
        self._must_exist(path)
        self._cg.set_frozen(path, True)
        if not self._cg.wait_frozen(path, True):
            # runc gives up the same way ("unable to freeze"): leave it thawed, report EBUSY
            self._cg.set_frozen(path, False)
            raise OSError(errno.EBUSY, f"cgroup {path} did not freeze", path)

    async def cgroup_thaw(self, path: str) -> None:
        await self._cg_run(self._cgroup_thaw, path)

    def _cgroup_thaw(self, path: str) -> None:
        self._must_exist(path)
        self._cg.set_frozen(path, False)
        self._cg.wait_frozen(path, False)

    # ---- observe ----------------------------------------------------------------------------
    async def cgroup_stats(self, path: str) -> CgroupStats:
        return await self._cg_run(self._cgroup_stats, path)

    def _cgroup_stats(self, path: str) -> CgroupStats:
        self._must_exist(path)
        return self._cg.stats(path)

    async def cgroup_procs(self, path: str) -> list[Pid]:
        return await self._cg_run(self._cgroup_procs, path)

    def _cgroup_procs(self, path: str) -> list[Pid]:
        check_path(path)
        pids: set[int] = set()
        files = self._cg_files.get(path)
        found = False
        for f in files if files is not None else self._cg.procs_files(path):
            try:
                pids |= read_pids(f)
                found = True
            except FileNotFoundError:
                pass
        if files is not None and not found:  # removed behind our back: as procs_files says
            self._cg_files.pop(path, None)
            return self._cgroup_procs(path)
        return [Pid(p) for p in sorted(pids)]

    # ---- kill / remove ----------------------------------------------------------------------
    async def cgroup_kill(self, path: str) -> None:
        # The common case, a container whose init has exited (its pid namespace went with it),
        # finds the cgroup empty: a few small reads (and on v2 the cgroup.kill write, for a
        # process joining meanwhile), answered on the loop without a thread hop.
        # (FileNotFoundError for a missing cgroup comes from the same reads.)
        if not self._cgroup_procs(path):
            self._cg.kill(path)
            return
        await self._cg_run(self._cgroup_kill, path)

    def _cgroup_kill(self, path: str) -> None:
        """cgroup.kill where the kernel has it (v2, 5.14+); else runc's loop: freeze (so nothing
        forks behind our back), SIGKILL every member, thaw (so they can die), until empty."""
        self._must_exist(path)
        deadline = time.monotonic() + KILL_TIMEOUT
        if self._cg.kill(path):
            while self._cgroup_procs(path) and time.monotonic() < deadline:
                time.sleep(0.005)
            return
        while (pids := self._cgroup_procs(path)) and time.monotonic() < deadline:
            self._cg.set_frozen(path, True)
            self._cg.wait_frozen(path, True)
            for pid in self._cgroup_procs(path) or pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._cg.set_frozen(path, False)
            for _ in range(100):
                if not self._cgroup_procs(path):
                    break
                time.sleep(0.005)
        if self._cgroup_procs(path):
            raise OSError(errno.EBUSY, f"cgroup {path}: processes survived SIGKILL", path)

    async def cgroup_remove(self, path: str) -> None:
        await self._cg_run_quick(self._cgroup_remove, path)

    def _cgroup_remove(self, path: str) -> None:
        self._must_exist(path)
        with self._cg_lock:
            if self._cgroup_procs(path):
                raise OSError(errno.EBUSY, f"cgroup {path} has live processes", path)
            self._cg.rmdir(path)  # EBUSY from the kernel if it has child cgroups
            self._cg_made.discard(path)
            self._cg_files.pop(path, None)
            parts = path.split("/")
            for i in range(len(parts) - 1, 0, -1):  # intermediate dirs we made, if now empty
                parent = "/".join(parts[:i])
                # also "wharfie*" parents made by an earlier daemon (live-restore) or another
                # kernel sharing them: rmdir only succeeds once the last child is gone
                if parent not in self._cg_auto and not parts[i - 1].startswith("wharfie"):
                    break
                try:
                    self._cg.rmdir(parent)
                except OSError:
                    break
                self._cg_auto.discard(parent)
