"""The Cgroups role of the sim kernel (see ``engine.kernel.Cgroups`` for the contract).

A cgroup holds member pids; memory usage is the sum of its live members' memory, CPU usage the
CPU its members (live and dead) burnt. The OOM killer runs when a charge (an allocation, or a
lowered limit) takes usage above ``memory``: it SIGKILLs the largest member until usage fits.
Frozen members stop at their next step (``Ctx.checkpoint``) until thawed. Hierarchy is flat:
a parent's limits do not apply to its children (the engine only uses leaf cgroups).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.kernel import SIGKILL, CgroupStats, ExitStatus, Pid, Resources

if TYPE_CHECKING:
    from sim.proc_model import SimProcess
    from sim.world import World

_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _err(code: int, msg: str, filename: str | None = None) -> OSError:
    if filename is None:
        return OSError(code, msg)
    return OSError(code, msg, filename)


@dataclass(eq=False)
class Cgroup:
    path: str
    resources: Resources
    members: set[int] = field(default_factory=set)
    frozen: bool = False
    oom_kills: int = 0
    max_usage: int = 0
    dead_cpu_ns: int = 0

    def live(self, world: World) -> list[SimProcess]:
        procs = (world.processes.get(pid) for pid in sorted(self.members))
        return [p for p in procs if p is not None and p.alive]

    def usage(self, world: World) -> int:
        return sum(p.mem for p in self.live(world))

    def pids_limit(self) -> int | None:
        lim = self.resources.pids_limit
        return lim if lim is not None and lim > 0 else None

    def pids_full(self, world: World) -> bool:
        lim = self.pids_limit()
        return lim is not None and len(self.live(world)) >= lim

    def member_exited(self, proc: SimProcess) -> None:
        self.members.discard(proc.pid)
        self.dead_cpu_ns += proc.cpu_ns

    def charge(self, kernel: Any, world: World) -> None:
        """Account a change of usage; OOM-kill the largest members while over the limit."""
        usage = peak = self.usage(world)
        limit = self.resources.memory
        while limit is not None and usage > limit:
            victims = self.live(world)
            if not victims:
                break
            victim = max(victims, key=lambda p: (p.mem, p.pid))
            self.oom_kills += 1
            kernel._exit(victim, ExitStatus(signal=SIGKILL))
            usage = self.usage(world)
        self.max_usage = max(self.max_usage, peak if limit is None else min(peak, limit))


class SimCgroups:
    """Mixin of ``SimKernel``: the cgroup tree in ``world.cgroups``."""

    world: World

    def _init_cgroups(self) -> None:
        pass

    def _leaks_cgroups(self) -> list[str]:
        return sorted(self.world.cgroups)

    def _cgroup(self, path: str) -> Cgroup:
        cg = self.world.cgroups.get(path)
        if cg is None:
            raise _err(errno.ENOENT, f"cgroup {path} does not exist", path)
        assert isinstance(cg, Cgroup)
        return cg

    def _validate(self, r: Resources, base: Resources | None = None) -> None:
        def bad(what: str) -> OSError:
            return _err(errno.EINVAL, f"invalid {what}: {os.strerror(errno.EINVAL)}")

        if r.memory is not None and r.memory < 0:
            raise bad("memory")
        memory = r.memory if r.memory is not None else (base.memory if base else None)
        if r.memory_swap is not None:
            if r.memory_swap < -1 or (r.memory_swap >= 0 and memory is not None
                                      and r.memory_swap < memory):
                raise bad("memory_swap")
        if r.memory_reservation is not None and r.memory_reservation < 0:
            raise bad("memory_reservation")
        if r.cpu_shares is not None and not 2 <= r.cpu_shares <= 262144:
            raise bad("cpu_shares")
        if r.cpu_quota is not None and r.cpu_quota != -1 and r.cpu_quota < 1000:
            raise bad("cpu_quota")
        if r.cpu_period is not None and not 1000 <= r.cpu_period <= 1_000_000:
            raise bad("cpu_period")
        if r.io_weight is not None and not 10 <= r.io_weight <= 1000:
            raise bad("io_weight")
        if r.cpuset_cpus is not None and r.cpuset_cpus != "":
            if not _CPUSET.match(r.cpuset_cpus):
                raise bad("cpuset_cpus")
            for part in r.cpuset_cpus.split(","):
                lo, _, hi = part.partition("-")
                if int(hi or lo) < int(lo) or int(hi or lo) >= self.world.cpus:
                    raise bad("cpuset_cpus")

    async def cgroup_create(self, path: str, resources: Resources) -> None:
        self.world.faults.check("cgroup_create")
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise _err(errno.EINVAL, f"invalid cgroup path {path!r}", path)
        if path in self.world.cgroups:
            raise _err(errno.EEXIST, f"cgroup {path} exists", path)
        self._validate(resources)
        self.world.cgroups[path] = Cgroup(path, resources)

    async def cgroup_update(self, path: str, resources: Resources) -> None:
        self.world.faults.check("cgroup_update")
        cg = self._cgroup(path)
        self._validate(resources, cg.resources)
        changes = {f.name: getattr(resources, f.name) for f in dataclasses.fields(resources)
                   if getattr(resources, f.name) is not None}
        cg.resources = dataclasses.replace(cg.resources, **changes)
        cg.charge(self, self.world)

    async def cgroup_freeze(self, path: str) -> None:
        self.world.faults.check("cgroup_freeze")
        self._set_frozen(self._cgroup(path), True)

    async def cgroup_thaw(self, path: str) -> None:
        self.world.faults.check("cgroup_thaw")
        self._set_frozen(self._cgroup(path), False)

    def _set_frozen(self, cg: Cgroup, frozen: bool) -> None:
        cg.frozen = frozen
        for p in cg.live(self.world):
            p.frozen = frozen
            p.update_runnable()
            if not frozen:
                self._release_held(p)  # type: ignore[attr-defined]

    async def cgroup_stats(self, path: str) -> CgroupStats:
        self.world.faults.check("cgroup_stats")
        cg = self._cgroup(path)
        live = cg.live(self.world)
        return CgroupStats(memory_usage=sum(p.mem for p in live),
                           memory_limit=cg.resources.memory,
                           memory_max_usage=cg.max_usage, oom_kills=cg.oom_kills,
                           pids_current=len(live), pids_limit=cg.pids_limit(),
                           cpu_usage_ns=cg.dead_cpu_ns + sum(p.cpu_ns for p in live),
                           frozen=cg.frozen)

    async def cgroup_procs(self, path: str) -> list[Pid]:
        self.world.faults.check("cgroup_procs")
        return [Pid(p.pid) for p in self._cgroup(path).live(self.world)]

    async def cgroup_kill(self, path: str) -> None:
        self.world.faults.check("cgroup_kill")
        for p in self._cgroup(path).live(self.world):
            self._exit(p, ExitStatus(signal=SIGKILL))  # type: ignore[attr-defined]

    async def cgroup_remove(self, path: str) -> None:
        self.world.faults.check("cgroup_remove")
        cg = self._cgroup(path)
        if cg.live(self.world):
            raise _err(errno.EBUSY, f"cgroup {path} has live processes", path)
        if any(other.startswith(path + "/") for other in self.world.cgroups):
            raise _err(errno.EBUSY, f"cgroup {path} has children", path)
        del self.world.cgroups[path]
