"""Read-side container verbs: list with filters, logs, top, stats."""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine import model
from engine.containers.logfile import LogEntry, LogTail
from engine.containers.record import Container
from engine.errors import Conflict, InvalidArgument, from_os_error
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

LIST_FILTERS = {"id", "name", "label", "status", "ancestor", "exited", "health", "before", "since",
                "isolation", "network", "volume", "publish", "expose", "is-task"}
FOLLOW_POLL = 0.05


@dataclass(frozen=True, slots=True)
class TopResult:
    titles: tuple[str, ...]
    processes: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Stats:
    read: float
    memory_usage: int
    memory_limit: int
    memory_max_usage: int
    oom_kills: int
    pids_current: int
    pids_limit: int | None
    cpu_usage_ns: int
    online_cpus: int


class QueryMixin:
    def list(self: ContainerService, all: bool = False, filters: Mapping[str, list[str]] | None = None,
             limit: int = -1) -> list[Container]:
        """Docker's ``ps``: running ones (or ``all``), newest first, filtered.

        Raises InvalidArgument for an unknown filter key or bad value.
        """
        f = {k: v for k, v in (filters or {}).items() if v}
        for key in f:
            if key not in LIST_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        for v in f.get("status", []):
            if v not in {s.value for s in Status}:
                raise InvalidArgument(f"invalid filter 'status={v}'")
        for v in f.get("exited", []):
            if not v.lstrip("-").isdigit():
                raise InvalidArgument(f"invalid filter 'exited={v}'")
        out = []
        containers = self.all()
        before = [self.get(r).created for r in f.get("before", [])]
        since = [self.get(r).created for r in f.get("since", [])]
        show_all = all or limit > 0 or "status" in f or "exited" in f
        for c in containers:
            if not show_all and not (model.is_alive(c.state.status) or c.state.status is Status.RESTARTING):
                continue
            if not self._match(c, f):
                continue
            if before and not all_lt(c.created, before):
                continue
            if since and not all_gt(c.created, since):
                continue
            out.append(c)
        return out[:limit] if limit > 0 else out

    def _match(self: ContainerService, c: Container, f: Mapping[str, list[str]]) -> bool:
        if "id" in f and not any(c.id.startswith(v) for v in f["id"]):
            return False
        if "name" in f and not any(_name_match(c.name, v) for v in f["name"]):
            return False
        if "label" in f:
            for spec in f["label"]:
                k, eq, v = spec.partition("=")
                if k not in c.labels or (eq and c.labels[k] != v):
                    return False
        if "status" in f and c.state.status.value not in f["status"]:
            return False
        if "exited" in f and (c.state.status is not Status.EXITED or str(c.state.exit_code) not in f["exited"]):
            return False
        if "ancestor" in f and not any(self._is_ancestor(c, v) for v in f["ancestor"]):
            return False
        if "health" in f:
            h = c.state.health.status.value if c.state.health else "none"
            if h not in f["health"]:
                return False
        return True

    def _is_ancestor(self: ContainerService, c: Container, ref: str) -> bool:
        if ref == c.image_ref or c.image_id.startswith(ref) or c.image_id == f"sha256:{ref}" \
                or c.image_id.removeprefix("sha256:").startswith(ref):
            return True
        try:
            return self.images.resolve(ref) == c.image_id
        except Exception:  # noqa: BLE001 - an unknown image simply matches nothing
            return False

    # -- logs -------------------------------------------------------------------------------

    async def logs(self: ContainerService, ref: str, stdout: bool = True, stderr: bool = True,
                   since: float | None = None, until: float | None = None, tail: int | None = None,
                   follow: bool = False) -> AsyncIterator[LogEntry]:
        """The container's output, oldest first; with ``follow``, new output as it comes until
        the container stops (or ``until`` passes)."""
        c = self.get(ref)
        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}

        def keep(e: LogEntry) -> bool:
            return e.stream in streams and (since is None or e.time >= since) and (until is None or e.time <= until)

        log = LogTail(c.log_path)  # held open: what follows is read even if the log is deleted
        try:
            entries = [e for e in log.history() if keep(e)]
            if tail is not None and tail >= 0:
                entries = entries[-tail:] if tail else []
            for e in entries:
                yield e
            if not follow:
                return
            rt = self.rt(c.id)
            while True:
                alive = model.is_alive(c.state.status) or c.state.status is Status.RESTARTING
                for e in log.more():
                    if keep(e):
                        yield e
                if not alive or rt.removed or (until is not None and self.ctx.wall() > until):
                    return
                await asyncio.sleep(FOLLOW_POLL)
        finally:
            log.close()

    # -- top / stats ------------------------------------------------------------------------

    async def top(self: ContainerService, ref: str) -> TopResult:
        c = self.get(ref)
        if not model.is_alive(c.state.status):
            raise Conflict(f"Container {c.id} is not running")
        try:
            procs = await self.kernel.processes(c.state.pid)  # type: ignore[arg-type]
        except OSError as e:
            raise from_os_error(f"cannot list processes of container {c.id[:12]}", e) from None
        import time as _t

        rows = []
        for p in procs:
            stime = _t.strftime("%H:%M", _t.gmtime(p.start_time))
            cpu = int(p.cpu_seconds)
            rows.append((str(p.uid) if p.uid else "root", str(p.pid), str(p.ppid), "0", stime, "?",
                         f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}", " ".join(p.argv)))
        return TopResult(("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"), tuple(rows))

    async def stats(self: ContainerService, ref: str) -> Stats:
        c = self.get(ref)
        info = self.kernel.info()
        if not model.is_alive(c.state.status):
            return Stats(self.ctx.wall(), 0, 0, 0, 0, 0, None, 0, info.cpus)
        try:
            s = await self.kernel.cgroup_stats(self.ctx.cgroup_path(c.id))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV) and await self._ended(c.state.pid):
                # it exited and its cgroup is being released: the figures of a stopped one
                return Stats(self.ctx.wall(), 0, 0, 0, 0, 0, None, 0, info.cpus)
            raise from_os_error(f"cannot read stats of container {c.id[:12]}", e) from None
        return Stats(self.ctx.wall(), s.memory_usage, s.memory_limit or info.memory, s.memory_max_usage,
                     s.oom_kills, s.pids_current, s.pids_limit, s.cpu_usage_ns, info.cpus)

    async def _ended(self: ContainerService, pid: int) -> bool:
        """Whether the process has exited (its exit may not be recorded yet)."""
        try:
            return await self.kernel.wait(pid, timeout=0) is not None  # type: ignore[arg-type]
        except ProcessLookupError:
            return True


def _name_match(name: str, pattern: str) -> bool:
    try:
        return re.search(pattern, "/" + name) is not None or re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def all_lt(x: float, bounds: list[float]) -> bool:
    return all(x < b for b in bounds)


def all_gt(x: float, bounds: list[float]) -> bool:
    return all(x > b for b in bounds)
