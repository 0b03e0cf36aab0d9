"""The sim's process table entries: ``SimProcess``, ``Sandbox`` and the stdio plumbing of spawned
and exec'd processes (``OutputChannel`` fanning out to the json log and attached readers;
``SimStdio``, the ``engine.kernel.Stdio`` attachment).
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.kernel import ExitStatus

if TYPE_CHECKING:
    from engine.containers.logfile import LogWriter
    from sim.programs.streams import PipeEnd, Stream

BASE_RSS = 256 * 1024  # what a simulated process occupies before it allocates anything


@dataclass
class Sandbox:
    """One container's namespaces. The fs helper reads ``rootfs``, ``netns`` and ``alive``."""

    id: str
    init_pid: int
    rootfs: str  # the host mount target
    netns: str | None  # a joined named netns, or None (private or host)
    view: Any  # sim.fs.FsView: the sandbox's mount namespace (root + its own sub-mounts)
    hostname: str
    pid_ns: bool = True
    private_net: bool = False  # a private netns with only ``lo`` (recorded here, not a leak)
    alive: bool = True
    next_nspid: int = 0
    cwd: str = "/"

    def new_nspid(self, host_pid: int) -> int:
        if not self.pid_ns:
            return host_pid
        self.next_nspid += 1
        return self.next_nspid


@dataclass(eq=False)
class SimProcess:
    pid: int
    nspid: int
    ppid: int
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    sandbox: Sandbox
    cgroup: str | None
    start_time: float
    toplevel: bool  # spawned or exec'd through the Kernel (addressable), not a program's child
    state: str = "S"
    exit_status: ExitStatus | None = None
    exit_future: asyncio.Future[ExitStatus] | None = None
    children: list[SimProcess] = field(default_factory=list)
    fds: dict[int, Stream] = field(default_factory=dict)
    mem: int = BASE_RSS
    cpu_ns: int = 0
    stopped: bool = False
    frozen: bool = False
    runnable: asyncio.Event | None = None
    handlers: dict[int, str] = field(default_factory=dict)  # sig -> "ignore" | "handle"
    pending: list[int] = field(default_factory=list)  # caught signals for the program
    held: list[int] = field(default_factory=list)  # signals held while stopped/frozen
    signal_event: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    channel: OutputChannel | None = None  # set on toplevel processes
    stdin_writer: PipeEnd | None = None
    tty: bool = False

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def update_runnable(self) -> None:
        if self.runnable is None:
            return
        if self.stopped or self.frozen:
            self.runnable.clear()
        else:
            self.runnable.set()

    def shown_state(self) -> str:
        if not self.alive:
            return "Z"
        if self.stopped or self.frozen:
            return "T"
        return self.state


class OutputChannel:
    """Fans the output of one spawned/exec'd process out to its log file and attached readers."""

    def __init__(self, log: LogWriter | None, tty: bool) -> None:
        self.log = log
        self.tty = tty
        self.readers: list[asyncio.Queue[tuple[int, bytes] | None]] = []
        self.closed = False

    def emit(self, fd: int, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.tty:
            fd = 1
        if self.log is not None:
            self.log.write(fd, data)
        for q in self.readers:
            q.put_nowait((fd, data))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.log is not None:
            self.log.close()
        for q in self.readers:
            q.put_nowait(None)


class SimStdio:
    """``engine.kernel.Stdio`` over a live process (see the Protocol for the contract)."""

    def __init__(self, proc: SimProcess) -> None:
        assert proc.channel is not None
        self.proc = proc
        self.size: tuple[int, int] | None = None
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._channel = proc.channel
        self._done = False
        proc.channel.readers.append(self._queue)

    async def read(self) -> tuple[int, bytes] | None:
        if self._done:
            return None
        item = await self._queue.get()
        if item is None:
            self._done = True
        return item

    async def write(self, data: bytes) -> None:
        writer = self.proc.stdin_writer
        if writer is None or writer.closed:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        await writer.write(data)

    async def close_stdin(self) -> None:
        if self.proc.stdin_writer is not None:
            self.proc.stdin_writer.close()

    async def resize(self, rows: int, cols: int) -> None:
        if not self.proc.tty:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        self.size = (rows, cols)

    def close(self) -> None:
        if self._queue in self._channel.readers:
            self._channel.readers.remove(self._queue)
        self._done = True
