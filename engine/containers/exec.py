"""``docker exec``: processes started inside a running container's sandbox.

Exec instances live in memory (as in Docker) and end with their container. Each one's output is
kept in its own json-file log next to the container's, which is what ``exec_run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import model
from engine.containers.lifecycle import merge_env
from engine.containers.logfile import read_entries
from engine.errors import Conflict, InvalidArgument, NotFound, from_os_error
from engine.kernel import ExecSpec, LogSpec, StdioSpec
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.service import ContainerService


@dataclass
class ExecRecord:
    id: str
    container_id: str
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    tty: bool = False
    open_stdin: bool = False
    privileged: bool = False
    log_path: str = ""
    running: bool = False
    pid: int = 0
    exit_code: int | None = None
    started: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class ExecMixin:
    def _init_exec(self: ContainerService) -> None:
        self._execs: dict[str, ExecRecord] = {}

    def exec_create(self: ContainerService, ref: str, argv: list[str] | tuple[str, ...], env: tuple[str, ...] = (),
                    workdir: str = "", user: str = "", tty: bool = False, open_stdin: bool = False,
                    privileged: bool = False) -> ExecRecord:
        """Raises Conflict if the container is not running or is paused."""
        c = self.get(ref)
        if c.state.status is Status.PAUSED:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if not model.can_exec(c.state.status):
            raise Conflict(f"Container {c.id} is not running")
        if not argv or not argv[0]:
            raise InvalidArgument("No exec command specified")
        eid = self.ctx.new_id()
        rec = ExecRecord(eid, c.id, tuple(argv), tuple(env), workdir, user, tty, open_stdin, privileged,
                         log_path=os.path.join(self.ctx.container_dir(c.id), f"exec-{eid}.log"))
        self._execs[eid] = rec
        return rec

    def exec_get(self: ContainerService, exec_id: str) -> ExecRecord:
        rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return rec

    async def exec_start(self: ContainerService, exec_id: str) -> ExecRecord:
        """Start the exec process; returns at once (``exec_wait`` waits)."""
        rec = self.exec_get(exec_id)
        if rec.started:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        c = self.get(rec.container_id)
        if c.state.status is Status.PAUSED:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if not model.can_exec(c.state.status):
            raise Conflict(f"Container {c.id} is not running")
        rec.started = True
        spec = ExecSpec(argv=rec.argv, env=merge_env(c.env, rec.env), cwd=rec.workdir or c.workdir,
                        user=rec.user or c.user, privileged=rec.privileged,
                        stdio=StdioSpec(log=LogSpec(rec.log_path, 0, 1), stdin_open=rec.open_stdin, tty=rec.tty))
        try:
            pid = await self.kernel.exec(c.state.pid, spec)  # type: ignore[arg-type]
        except OSError as e:
            rec.exit_code = 126 if e.errno in (errno.EACCES, errno.ENOEXEC) else 127 \
                if e.errno == errno.ENOENT else 1
            rec.done.set()
            if e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.EINVAL):
                where = "executable file not found in $PATH" if e.errno == errno.ENOENT else os.strerror(e.errno)
                raise InvalidArgument(f'OCI runtime exec failed: exec failed: unable to start container process: '
                                      f'exec: "{rec.argv[0]}": {where}') from None
            raise from_os_error(f"cannot exec in container {c.id[:12]}", e) from None
        rec.pid, rec.running = pid, True
        asyncio.get_running_loop().create_task(self._exec_watch(rec))
        return rec

    async def _exec_watch(self: ContainerService, rec: ExecRecord) -> None:
        status = None
        with contextlib.suppress(ProcessLookupError):
            status = await self.kernel.wait(rec.pid)  # type: ignore[arg-type]
        rec.running = False
        rec.exit_code = status.exit_code if status else 137
        with contextlib.suppress(OSError):
            await self.kernel.release(rec.pid)  # type: ignore[arg-type]
        rec.done.set()
        c = self._all.get(rec.container_id)
        if c is not None:
            self.emit(c, "exec_die", execID=rec.id, exitCode=str(rec.exit_code))

    def _end_execs(self: ContainerService, cid: str) -> None:
        for rec in self._execs.values():
            if rec.container_id == cid and not rec.done.is_set() and not rec.started:
                rec.done.set()

    async def exec_wait(self: ContainerService, exec_id: str) -> int:
        rec = self.exec_get(exec_id)
        await rec.done.wait()
        return rec.exit_code if rec.exit_code is not None else -1

    def exec_output(self: ContainerService, exec_id: str) -> tuple[bytes, bytes]:
        rec = self.exec_get(exec_id)
        out, err = bytearray(), bytearray()
        for e in read_entries(rec.log_path):
            (out if e.stream == "stdout" else err).extend(e.data)
        return bytes(out), bytes(err)

    async def exec_run(self: ContainerService, ref: str, argv: list[str] | tuple[str, ...], env: tuple[str, ...] = (),
                       workdir: str = "", user: str = "", timeout: float | None = None) -> ExecResult:
        """Run to completion and collect output (what ``docker exec`` without -d shows)."""
        rec = self.exec_create(ref, argv, env=env, workdir=workdir, user=user)
        await self.exec_start(rec.id)
        try:
            code = await asyncio.wait_for(self.exec_wait(rec.id), timeout)
        except TimeoutError:
            with contextlib.suppress(OSError):
                await self.kernel.signal(rec.pid, 9)  # type: ignore[arg-type]
            code = await self.exec_wait(rec.id)
        out, err = self.exec_output(rec.id)
        self._forget_exec(rec.id)
        return ExecResult(code, out, err)

    def _forget_exec(self: ContainerService, exec_id: str) -> None:
        rec = self._execs.pop(exec_id, None)
        if rec is not None:
            with contextlib.suppress(OSError):
                os.unlink(rec.log_path)
