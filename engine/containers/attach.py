"""``docker attach`` and hijacked ``exec``: a live view of a process's stdio.

Output comes from the kernel's :meth:`~engine.kernel.Processes.stdio` attachment (live bytes,
stdout and stderr apart), bridged with the json-file log so nothing is lost between "attach
requested" and "stdio opened": attaching before ``start`` (what ``docker run`` does) waits for
the process, opens its stdio, then first replays the log lines written since the attach began.
Opening the stdio and reading the log happen with no ``await`` in between, so a chunk is never
delivered twice (only a partial line emitted before the open can be missed).

Input goes to the process's stdin pipe once it is open; with ``stdin_once`` the pipe is closed
when the client's input ends (``docker run -i`` semantics).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from engine import model
from engine.containers.logfile import read_entries
from engine.errors import Conflict, from_os_error
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
                 stdout: bool, stderr: bool, stdin_once: bool, replay: bool, fresh: bool = False) -> None:
        self.kernel = kernel
        self.log_path = log_path
        self.find_pid = find_pid
        self.fds = {fd for name, fd in FDS.items() if (stdout, stderr)[fd - 1]}
        self.stdin_once = stdin_once
        self.replay = replay
        self.baseline = 0 if fresh else _count(log_path)
        self.stdio: Stdio | None = None
        self.ready = asyncio.Event()  # set when stdin may be written (or never will be)
        self._closed = False

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(fd, data) chunks until the process ends (or :meth:`close`)."""
        try:
            if self.replay:
                for e in list(read_entries(self.log_path))[:self.baseline]:
                    if FDS.get(e.stream, 1) in self.fds:
                        yield FDS.get(e.stream, 1), e.data
            pid = None
            while not self._closed:
                found = self.find_pid()
                if found == "gone":
                    break
                if isinstance(found, int):
                    pid = found
                    break
                await asyncio.sleep(POLL)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.stdio = await self.kernel.stdio(Pid(pid))
            self.ready.set()
            # no await between opening the stdio and reading the log: see the module docstring
            for e in list(read_entries(self.log_path))[self.baseline:]:
                if FDS.get(e.stream, 1) in self.fds:
                    yield FDS.get(e.stream, 1), e.data
            if self.stdio is None:
                return
            while not self._closed:
                item = await self.stdio.read()
                if item is None:
                    return
                if item[0] in self.fds:
                    yield item
        finally:
            self.ready.set()

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
        self._closed = True
        self.ready.set()
        if self.stdio is not None:
            self.stdio.close()


def _count(path: str) -> int:
    return sum(1 for _ in read_entries(path))


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
        if rt.removed:
            return "gone"
        if model.is_alive(c.state.status) and c.state.pid:
            return c.state.pid
        if rt.exits != exits0 or c.state.started_at != started0:
            return "gone"  # it ran and ended between two polls
        return None

    return Attachment(svc.kernel, c.log_path, find_pid, stdout, stderr, stdin_once, logs)


def exec_attach(svc: ContainerService, exec_id: str) -> Attachment:
    """Attach to a started exec process (call right after ``exec_start``)."""
    rec = svc.exec_get(exec_id)

    def find_pid() -> int | str | None:
        return rec.pid if rec.running and rec.pid else "gone"

    return Attachment(svc.kernel, rec.log_path, find_pid, True, True, True, False, fresh=True)


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
