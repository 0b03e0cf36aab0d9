"""What a simulated program sees: ``Ctx``, its handle on its process and on the sim.

A program is ``async def prog(ctx) -> int`` (the exit code) registered by name with
:func:`applet`. Every blocking action goes through the ``Ctx`` so the sim keeps control: it
suspends the program while its process is stopped or frozen, accounts CPU and memory, and ends
it (by cancelling its task) when it is killed. Programs never catch ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from engine.kernel import SIGNALS, ExitStatus
from sim.programs.streams import BytesIn, FileOut, NullStream, Stream, ZeroStream

if TYPE_CHECKING:
    from sim.proc_model import SimProcess

Program = Callable[["Ctx"], Awaitable[int]]
APPLETS: dict[str, Program] = {}
SIGPIPE = SIGNALS["PIPE"]


def applet(*names: str) -> Callable[[Program], Program]:
    """Register a program under busybox applet ``names``."""
    def deco(fn: Program) -> Program:
        for n in names:
            APPLETS[n] = fn
        return fn
    return deco


class ProgramExit(Exception):
    """Raised by a program (e.g. the shell's ``exit``) to end with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Host(Protocol):
    """The kernel side a Ctx calls into (implemented by ``sim.processes.SimProcesses``)."""

    world: Any

    def wall_time(self) -> float: ...
    def _fork(self, parent: SimProcess, argv: tuple[str, ...], program: Program,
              fds: dict[int, Stream], env: dict[str, str], cwd: str) -> SimProcess: ...
    def _resolve_program(self, view: Any, name: str, env: dict[str, str],
                         cwd: str) -> tuple[str, Program]: ...
    def _deliver(self, proc: SimProcess, sig: int) -> None: ...
    def _alloc(self, proc: SimProcess, nbytes: int) -> None: ...
    def _sandbox_procs(self, proc: SimProcess) -> list[SimProcess]: ...


class Ctx:
    """One program's view of its process: argv, env, cwd, fd table and the sim's actions."""

    def __init__(self, host: Host, proc: SimProcess, argv: tuple[str, ...], env: dict[str, str],
                 cwd: str, fds: dict[int, Stream]) -> None:
        self.host = host
        self.proc = proc
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.fds = fds

    def derive(self, argv: tuple[str, ...] | None = None, env: dict[str, str] | None = None,
               fds: dict[int, Stream] | None = None) -> Ctx:
        """The same process with other arguments (shell builtins, redirections)."""
        return Ctx(self.host, self.proc, self.argv if argv is None else argv,
                   self.env if env is None else env, self.cwd, self.fds if fds is None else fds)

    @property
    def view(self) -> Any:
        return self.proc.sandbox.view

    @property
    def name(self) -> str:
        return posixpath.basename(self.argv[0]) if self.argv else "?"

    # ---- scheduling ---------------------------------------------------------------------
    async def checkpoint(self) -> None:
        """Suspend while stopped/frozen; end here if the process was killed."""
        proc = self.proc
        while True:
            if not proc.alive:
                raise asyncio.CancelledError()
            if proc.runnable is None or proc.runnable.is_set():
                return
            await proc.runnable.wait()

    async def sleep(self, seconds: float) -> None:
        await self.checkpoint()
        self.proc.state = "S"
        if seconds == float("inf"):
            await asyncio.get_running_loop().create_future()  # forever (until killed)
        await asyncio.sleep(max(0.0, seconds))
        await self.checkpoint()

    async def busy(self, seconds: float) -> None:
        """Burn CPU for ``seconds`` (accounted to the process and its cgroup)."""
        await self.checkpoint()
        self.proc.state = "R"
        self.proc.cpu_ns += int(seconds * 1e9)
        await asyncio.sleep(seconds)
        self.proc.state = "S"
        await self.checkpoint()

    # ---- memory -------------------------------------------------------------------------
    async def alloc(self, nbytes: int) -> None:
        """Take ``nbytes`` more memory; the OOM killer may end this process right here."""
        await self.checkpoint()
        self.host._alloc(self.proc, nbytes)
        await self.checkpoint()

    def free(self, nbytes: int) -> None:
        self.proc.mem = max(0, self.proc.mem - nbytes)

    # ---- I/O ----------------------------------------------------------------------------
    async def write(self, fd: int, data: bytes | str) -> None:
        """Write to ``fd``; a broken pipe kills the process with SIGPIPE, as by default."""
        if isinstance(data, str):
            data = data.encode()
        await self.checkpoint()
        stream = self.fds.get(fd)
        if stream is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        try:
            await stream.write(data)
        except BrokenPipeError:
            self.host._deliver(self.proc, SIGPIPE)
            raise asyncio.CancelledError() from None

    async def out(self, text: str | bytes) -> None:
        await self.write(1, text)

    async def err(self, text: str) -> None:
        """A diagnostic on stderr; lost silently if stderr is gone."""
        try:
            await self.write(2, text)
        except OSError:
            pass

    async def read(self, fd: int = 0, n: int = 65536) -> bytes:
        await self.checkpoint()
        stream = self.fds.get(fd)
        if stream is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.proc.state = "S"
        data = await stream.read(n)
        await self.checkpoint()
        return data

    async def readline(self, fd: int = 0) -> bytes:
        await self.checkpoint()
        stream = self.fds.get(fd)
        if stream is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        data = await stream.readline()
        await self.checkpoint()
        return data

    # ---- files --------------------------------------------------------------------------
    def path(self, p: str) -> str:
        """``p`` made absolute against the cwd and normalised (no symlink resolution)."""
        return posixpath.normpath(posixpath.join(self.cwd, p)).replace("//", "/")

    def open_read(self, p: str) -> Stream:
        """Raises the view's ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``…)."""
        full = self.path(p)
        if full == "/dev/null":
            return NullStream()
        if full == "/dev/zero":
            return ZeroStream()
        if full in ("/dev/urandom", "/dev/random"):
            return ZeroStream(self.host.world.rng)
        if full in ("/dev/stdin", "/proc/self/fd/0"):
            return self.fds[0].dup() if 0 in self.fds else NullStream()
        if self.view.exists(full) and self.view.stat(full).kind == "dir":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), p)
        return BytesIn(self.view.read(full))

    def open_write(self, p: str, append: bool = False) -> Stream:
        full = self.path(p)
        if full in ("/dev/null", "/dev/zero"):
            return NullStream()
        if full in ("/dev/stdout", "/dev/stderr"):
            fd = 1 if full.endswith("out") else 2
            return self.fds[fd].dup() if fd in self.fds else NullStream()
        view = self.view
        if view.exists(full) and view.stat(full).kind == "dir":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), p)
        if not append or not view.exists(full):
            view.write(full, b"")
        return FileOut(view, full)

    # ---- processes ----------------------------------------------------------------------
    def resolve(self, name: str) -> tuple[str, Program]:
        """Find an executable (PATH lookup); raises ``OSError`` (ENOENT/EACCES/ENOEXEC)."""
        return self.host._resolve_program(self.view, name, self.env, self.cwd)

    async def spawn(self, argv: tuple[str, ...], program: Program,
                    fds: dict[int, Stream] | None = None,
                    env: dict[str, str] | None = None) -> SimProcess:
        """fork (+exec ``program``): a child in the same sandbox and cgroup, given dups of
        ``fds``. Raises ``OSError(EAGAIN)`` when the cgroup's pids limit is reached."""
        await self.checkpoint()
        table = self.fds if fds is None else fds
        return self.host._fork(self.proc, argv, program, {k: v.dup() for k, v in table.items()},
                               dict(self.env if env is None else env), self.cwd)

    async def wait_child(self, child: SimProcess) -> ExitStatus:
        assert child.exit_future is not None
        self.proc.state = "S"
        status = await asyncio.shield(child.exit_future)
        await self.checkpoint()
        return status

    def kill(self, nspid: int, sig: int) -> None:
        """Signal a process of this sandbox by its namespace pid; ``ProcessLookupError``."""
        for p in self.host._sandbox_procs(self.proc):
            if p.nspid == nspid:
                if sig:
                    self.host._deliver(p, sig)
                return
        raise ProcessLookupError(errno.ESRCH, "No such process")

    def processes(self) -> list[SimProcess]:
        return self.host._sandbox_procs(self.proc)

    async def exec(self, argv: tuple[str, ...], env: dict[str, str] | None = None) -> int:
        """Replace this process's program (argv[0] resolved by PATH); returns its exit code."""
        _, prog = self.resolve(argv[0])
        self.proc.argv = tuple(argv)
        self.proc.handlers.clear()
        return await prog(Ctx(self.host, self.proc, tuple(argv),
                              self.env if env is None else env, self.cwd, self.fds))

    # ---- signals caught by the program --------------------------------------------------
    def take_signals(self) -> list[int]:
        sigs, self.proc.pending[:] = list(self.proc.pending), []
        if self.proc.signal_event is not None:
            self.proc.signal_event.clear()
        return sigs
