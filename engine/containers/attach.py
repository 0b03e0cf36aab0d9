"""``docker attach`` and hijacked ``exec``: a live view of a process's stdio.

Output comes from the kernel's :meth:`~engine.kernel.Processes.stdio` attachment (live bytes,
stdout and stderr apart), bridged with the json-file log so nothing is lost between "attach
requested" and "stdio opened". ``docker run`` attaches *before* ``start``; a short-lived process
may write and exit (and ``--rm`` delete its log) before the attach could open its stdio. So the
attachment opens the log file the moment the container starts — synchronously, from an event
listener called while ``start`` emits its event, before the process can run — and on opening
the stdio first delivers what the log holds beyond the attach point. Opening the stdio and
reading the log happen with no ``await`` in between, so a chunk is never delivered twice (only a
partial line written before the open can be missed).

Input goes to the process's stdin pipe once it is open; with ``stdin_once`` the pipe is closed
when the client's input ends (``docker run -i`` semantics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import IO, TYPE_CHECKING

from engine import model
from engine.containers.logfile import log_files, parse_line
from engine.errors import Conflict, from_os_error
from engine.events import Event
from engine.kernel import Kernel, Pid, Stdio

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

POLL = 0.02
FDS = {"stdout": 1, "stderr": 2}


class Attachment:
    """One client's attachment. Iterate :meth:`output`; feed :meth:`write`; :meth:`close` at the end.

    ``find_pid`` returns the pid to attach to once it exists, ``"gone"`` when the process ran and
    ended before it could be opened (or the container is removed), or None to keep waiting.
    """

    def __init__(self, kernel: Kernel, log_path: str, find_pid: Callable[[], int | str | None],
                 stdout: bool, stderr: bool, stdin_once: bool, replay: bool, tty: bool = False) -> None:
        self.kernel = kernel
        self.log_path = log_path
        self.find_pid = find_pid
        self.fds = {fd for fd, on in ((1, stdout), (2, stderr)) if on}
        self.stdin_once = stdin_once
        self.replay = replay
        self.tty = tty
        self.stdio: Stdio | None = None
        self.ready = asyncio.Event()  # set when stdin may be written (or never will be)
        self.wake = asyncio.Event()  # set by the container's events: look at find_pid again
        self.on_close: Callable[[], None] | None = None
        self._log: IO[bytes] | None = None
        self._partial = b""
        self._closed = False
        try:
            self._offset = os.path.getsize(log_path)
        except OSError:
            self._offset = 0

    def open_log(self) -> None:
        """Hold the log open from the attach point on (survives ``--rm`` deleting it)."""
        if self._log is not None:
            return
        with contextlib.suppress(OSError):
            fh = open(self.log_path, "rb")  # noqa: SIM115 - closed in output()
            size = os.fstat(fh.fileno()).st_size
            fh.seek(self._offset if self._offset <= size else 0)
            self._log = fh

    def _live_from(self) -> int | None:
        """Log offset where the live stream begins, if the stdio tells and it is our file."""
        pos = getattr(self.stdio, "log_position", None)
        if pos is None or self._log is None:
            return None
        try:
            same = os.fstat(self._log.fileno()).st_ino == pos[0]
        except OSError:
            return None
        return int(pos[1]) if same else None

    def _drain_log(self, until: int | None = None) -> list[tuple[int, bytes]]:
        """New complete entries of the log (only those ending at or before offset ``until``)."""
        if self._log is None:
            return []
        if until is not None:
            chunk = self._log.read(max(0, until - self._log.tell()))
            if not chunk:
                return []
        else:
            chunk = self._log.read()
        if not chunk:
            with contextlib.suppress(OSError):  # rotated: go on in the new live file
                if os.stat(self.log_path).st_ino != os.fstat(self._log.fileno()).st_ino:
                    self._log.close()
                    self._log = open(self.log_path, "rb")  # noqa: SIM115 - closed in close()
                    chunk = self._log.read()
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            e = parse_line(line + b"\n")
            if e is not None and FDS.get(e.stream, 1) in self.fds:
                out.append((FDS.get(e.stream, 1), e.data))
        return out

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(fd, data) chunks until the process ends (or :meth:`close`)."""
        try:
            if self.replay:
                for item in self._replay():
                    yield item
            pid = None
            while not self._closed:
                self.wake.clear()
                found = self.find_pid()
                if isinstance(found, int):
                    pid = found
                    break
                if found == "gone":
                    break  # if it started and ended between two polls, what it wrote is in the log
                with contextlib.suppress(TimeoutError):  # woken by start/die/destroy; POLL: a safety net
                    await asyncio.wait_for(self.wake.wait(), POLL)
            if pid is not None:
                self.open_log()
                with contextlib.suppress(ProcessLookupError):
                    self.stdio = await self.kernel.stdio(Pid(pid))
            self.ready.set()
            # what was logged before the live stream began (and, if the backend does not say
            # where that was, what was logged until now)
            for item in self._drain_log(self._live_from()):
                yield item
            if self.stdio is None:
                return
            if self.tty:
                # a terminal session: live bytes at once (a prompt has no newline, and the log
                # holds partial lines back until one comes)
                while not self._closed:
                    chunk = await self.stdio.read()
                    if chunk is None:
                        return
                    if chunk[0] in self.fds:
                        yield chunk
                return
            # Otherwise the output comes from the log only: opening the live stdio takes a round
            # trip to the monitor, during which output reaches both the log and the live stream,
            # so taking both would deliver it twice. The stdio tells when the process ended.
            async for item in self._follow_log():
                yield item
        finally:
            self.close()

    async def _follow_log(self) -> AsyncIterator[tuple[int, bytes]]:
        assert self.stdio is not None
        stdio = self.stdio
        ended, more = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            with contextlib.suppress(Exception):
                while await stdio.read() is not None:
                    more.set()  # the monitor logs a chunk before it sends it live: read the log now
            ended.set()
            more.set()

        task = asyncio.get_running_loop().create_task(watch())
        try:
            while not self._closed:
                more.clear()  # before draining: a chunk arriving meanwhile is not missed
                for item in self._drain_log():
                    yield item
                if ended.is_set():
                    for item in self._drain_log():  # the last lines, flushed at the exit
                        yield item
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(more.wait(), POLL)
        finally:
            task.cancel()

    def _replay(self) -> list[tuple[int, bytes]]:
        out = []
        for name in log_files(self.log_path):
            with contextlib.suppress(OSError), open(name, "rb") as fh:
                budget = self._offset if name == self.log_path else -1
                for line in fh.read(budget).split(b"\n"):
                    e = parse_line(line + b"\n") if line else None
                    if e is not None and FDS.get(e.stream, 1) in self.fds:
                        out.append((FDS.get(e.stream, 1), e.data))
        return out

    async def write(self, data: bytes) -> None:
        """Forward input; dropped when the process never opened or has gone."""
        await self.ready.wait()
        if self.stdio is not None:
            with contextlib.suppress(BrokenPipeError, ProcessLookupError):
                await self.stdio.write(data)

    async def end_input(self) -> None:
        """The client's input ended: close stdin if ``stdin_once``."""
        if not self.stdin_once:
            return
        await self.ready.wait()
        if self.stdio is not None:
            with contextlib.suppress(OSError):
                await self.stdio.close_stdin()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready.set()
        if self.stdio is not None:
            self.stdio.close()
        if self._log is not None:
            self._log.close()
        if self.on_close is not None:
            self.on_close()


def attach(svc: ContainerService, ref: str, stdout: bool = True, stderr: bool = True,
           logs: bool = False, stdin_once: bool = False) -> Attachment:
    """Attach to a container's current or next run.

    Output ends when that run's process exits. Raises NotFound; Conflict if the container is
    being removed or is dead.
    """
    c = svc.get(ref)
    if c.state.status in (model.Status.REMOVING, model.Status.DEAD):
        raise Conflict(f"cannot attach to container {c.id[:12]}: it is {c.state.status.value}")
    rt = svc.rt(c.id)
    exits0, started0 = rt.exits, c.state.started_at

    def find_pid() -> int | str | None:
        if model.is_alive(c.state.status) and c.state.pid:
            return c.state.pid
        if rt.removed or rt.exits != exits0 or c.state.started_at != started0:
            return "gone"  # it ran and ended between two polls
        return None

    att = Attachment(svc.kernel, c.log_path, find_pid, stdout, stderr, stdin_once, logs, tty=c.spec.tty)
    if model.is_alive(c.state.status):
        att.open_log()

    def on_event(ev: Event) -> None:
        if ev.type == "container" and ev.actor_id == c.id:
            if ev.action == "start":
                att.open_log()
            att.wake.set()  # no waiting for the next poll: a short run's output is there at once

    events = svc.ctx.events
    events.add_listener(on_event)
    att.on_close = lambda: events.remove_listener(on_event)
    return att


def exec_attach(svc: ContainerService, exec_id: str) -> Attachment:
    """Attach to an exec process; call right after ``exec_start`` (before any await)."""
    rec = svc.exec_get(exec_id)

    def find_pid() -> int | str | None:
        return rec.pid if rec.running and rec.pid else "gone"

    att = Attachment(svc.kernel, rec.log_path, find_pid, True, True, True, False, tty=rec.tty)
    att._offset = 0
    att.open_log()
    return att


async def resize(svc: ContainerService, ref: str, rows: int, cols: int) -> None:
    """Resize the tty of a running container. Raises Conflict when it is not running."""
    c = svc.get(ref)
    if not model.is_alive(c.state.status):
        raise Conflict(f"Container {c.id} is not running")
    await _resize(svc.kernel, c.state.pid, rows, cols, c.id)


async def exec_resize(svc: ContainerService, exec_id: str, rows: int, cols: int) -> None:
    rec = svc.exec_get(exec_id)
    if not rec.running:
        raise Conflict(f"Exec {exec_id} is not running")
    await _resize(svc.kernel, rec.pid, rows, cols, rec.container_id)


async def _resize(kernel: Kernel, pid: int, rows: int, cols: int, what: str) -> None:
    try:
        stdio = await kernel.stdio(Pid(pid))
    except ProcessLookupError:
        raise Conflict(f"Container {what} is not running") from None
    try:
        await stdio.resize(rows, cols)
    except OSError as e:
        raise from_os_error(f"cannot resize tty of {what[:12]}", e, Conflict) from None
    finally:
        stdio.close()
