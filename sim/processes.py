"""The Processes role of the sim kernel (see ``engine.kernel.Processes`` for the contract).

Simulated programs (``sim.programs``) run as asyncio tasks on the running loop, so the loop's
clock is the processes' clock (virtual under ``sim.loop.VirtualTimeLoop``). State changes that
the contract makes observable — exit on SIGKILL, the init's death taking its namespace along —
happen synchronously inside the call that causes them.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import traceback
from typing import TYPE_CHECKING, Any

from engine.containers.logfile import LogWriter
from engine.kernel import (SIGKILL, SIGNALS, ExecSpec, ExitStatus, Namespace, Pid, ProcessInfo,
                           SandboxInfo, SpawnSpec, StdioSpec)
from sim.fs import FsView
from sim.fsnodes import Tree
from sim.proc_exec import resolve_program
from sim.proc_model import OutputChannel, Sandbox, SimProcess, SimStdio
from sim.programs import load_applets
from sim.programs.base import Ctx, Program, ProgramExit
from sim.programs.streams import ChannelOut, NullStream, Pipe, Stream
from sim.users import resolve_user

if TYPE_CHECKING:
    from sim.world import World

_IGNORED_BY_DEFAULT = {SIGNALS["CHLD"], SIGNALS["URG"], SIGNALS["WINCH"], SIGNALS["CONT"]}
_STOP_BY_DEFAULT = {SIGNALS["STOP"], SIGNALS["TSTP"], SIGNALS["TTIN"], SIGNALS["TTOU"]}


def _err(code: int, msg: str | None = None, filename: str | None = None) -> OSError:
    return OSError(code, msg or os.strerror(code), *(() if filename is None else (filename,)))


class SimProcesses:
    """Mixin of ``SimKernel``: processes, sandboxes, stdio."""

    world: World
    _proc_errors: list[str]

    if TYPE_CHECKING:
        def _view_at(self, target: str) -> Any: ...  # provided by SimSnapshots
        def wall_time(self) -> float: ...  # provided by SimKernel

    def _init_processes(self) -> None:
        load_applets()
        self._proc_errors = []  # tracebacks of programs that crashed (sim bugs), for tests

    def _leaks_processes(self) -> list[str]:
        return [f"{p.pid} {' '.join(p.argv)}" for p in self.world.processes.values() if p.alive]

    # ---- helpers for the role and for programs ------------------------------------------
    def _addressable(self, pid: int) -> SimProcess:
        proc = self.world.processes.get(pid)
        if proc is None or not proc.toplevel:
            raise ProcessLookupError(errno.ESRCH, f"no such process: {pid}")
        return proc

    def _live(self, pid: int) -> SimProcess:
        proc = self._addressable(pid)
        if not proc.alive:
            raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited")
        return proc

    def _resolve_program(self, view: Any, name: str, env: dict[str, str],
                         cwd: str) -> tuple[str, Program]:
        return resolve_program(view, name, env, cwd)

    def _sandbox_procs(self, proc: SimProcess) -> list[SimProcess]:
        sb = proc.sandbox
        return sorted((p for p in self.world.processes.values() if p.sandbox is sb and p.alive),
                      key=lambda p: p.pid)

    def _check_pids(self, cgroup: str | None) -> None:
        cg = self.world.cgroups.get(cgroup) if cgroup is not None else None
        if cg is not None and cg.pids_full(self.world):
            raise _err(errno.EAGAIN)

    def _prepare(self, view: Any, argv: tuple[str, ...], env: dict[str, str], cwd: str,
                 user: str) -> tuple[Program, tuple[int, int, tuple[int, ...]]]:
        """User, cwd and executable checks common to spawn and exec (in runc's order)."""
        if not argv:
            raise _err(errno.EINVAL, "empty argv")
        ids = resolve_user(view, user)
        try:
            kind = view.stat(cwd).kind
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"cwd {cwd} does not exist", cwd) from None
        if kind != "dir":
            raise _err(errno.ENOTDIR, None, cwd)
        _, program = self._resolve_program(view, argv[0], env, cwd)
        self.world.faults.check("exec_binary")
        return program, ids

    def _stdio(self, spec: StdioSpec) -> tuple[OutputChannel, dict[int, Stream], Any]:
        log = None
        if spec.log is not None:
            log = LogWriter(spec.log.path, spec.log.max_size, spec.log.max_files,
                            clock=self.wall_time)
        channel = OutputChannel(log, spec.tty)
        fds: dict[int, Stream] = {1: ChannelOut(channel, 1), 2: ChannelOut(channel, 2)}
        writer = None
        if spec.stdin_open:
            pipe = Pipe()
            fds[0], writer = pipe.reader(), pipe.writer()
        else:
            fds[0] = NullStream()
        return channel, fds, writer

    def _new_process(self, sandbox: Sandbox, argv: tuple[str, ...], env: dict[str, str],
                     cwd: str, ids: tuple[int, int, tuple[int, ...]], cgroup: str | None,
                     ppid: int, toplevel: bool, fds: dict[int, Stream],
                     program: Program) -> SimProcess:
        loop = asyncio.get_running_loop()
        pid = self.world.new_pid()
        proc = SimProcess(pid=pid, nspid=sandbox.new_nspid(pid), ppid=ppid, argv=argv, env=env,
                          cwd=cwd, uid=ids[0], gid=ids[1], groups=ids[2], sandbox=sandbox,
                          cgroup=cgroup, start_time=self.wall_time(), toplevel=toplevel, fds=fds)
        proc.exit_future = loop.create_future()
        proc.runnable = asyncio.Event()
        proc.signal_event = asyncio.Event()
        cg = self.world.cgroups.get(cgroup) if cgroup is not None else None
        if cg is not None:
            cg.members.add(pid)
            proc.frozen = cg.frozen
        proc.update_runnable()
        self.world.processes[pid] = proc
        ctx = Ctx(self, proc, argv, env, cwd, fds)  # type: ignore[arg-type]
        proc.task = loop.create_task(self._run(proc, program, ctx))
        if cg is not None:
            cg.charge(self, self.world)  # its base memory
        return proc

    async def _run(self, proc: SimProcess, program: Program, ctx: Ctx) -> None:
        try:
            await ctx.checkpoint()
            code = await program(ctx)
        except ProgramExit as e:
            code = e.code
        except asyncio.CancelledError:
            if proc.alive:
                raise  # the loop is shutting down, not a kill
            return
        except Exception:  # a bug in a simulated program: report it like a crash
            tb = traceback.format_exc()
            self._proc_errors.append(tb)
            stream = proc.fds.get(2)
            if isinstance(stream, ChannelOut):
                stream.channel.emit(2, f"sim: internal error\n{tb}".encode())
            code = 255
        self._exit(proc, ExitStatus(code=code & 0xFF))

    def _fork(self, parent: SimProcess, argv: tuple[str, ...], program: Program,
              fds: dict[int, Stream], env: dict[str, str], cwd: str) -> SimProcess:
        try:
            self._check_pids(parent.cgroup)
        except OSError:
            for s in fds.values():
                s.close()
            raise
        child = self._new_process(parent.sandbox, argv, env, cwd,
                                  (parent.uid, parent.gid, parent.groups), parent.cgroup,
                                  parent.pid, False, fds, program)
        parent.children.append(child)
        return child

    def _exit(self, proc: SimProcess, status: ExitStatus) -> None:
        """The process ends now with ``status`` (idempotent)."""
        if not proc.alive:
            return
        proc.exit_status = status
        proc.state = "Z"
        for s in proc.fds.values():
            s.close()
        if proc.stdin_writer is not None:
            proc.stdin_writer.close()
        cg = self.world.cgroups.get(proc.cgroup) if proc.cgroup is not None else None
        if cg is not None:
            cg.member_exited(proc)
        if proc.channel is not None:
            proc.channel.close()
        assert proc.exit_future is not None
        proc.exit_future.set_result(status)
        if proc.runnable is not None:
            proc.runnable.set()
        if proc.task is not None and not proc.task.done() and proc.task is not _current_task():
            proc.task.cancel()
        if not proc.toplevel:
            self.world.processes.pop(proc.pid, None)  # children are reaped by their parent
        sb = proc.sandbox
        if proc.pid == sb.init_pid and sb.alive:
            sb.alive = False
            for other in [p for p in self.world.processes.values() if p.sandbox is sb]:
                self._exit(other, ExitStatus(signal=SIGKILL))

    def _deliver(self, proc: SimProcess, sig: int) -> None:
        """Signal semantics: dispositions, PID-1 protection, stop/continue, holding while frozen."""
        if not proc.alive:
            return
        if sig == SIGKILL:
            self._exit(proc, ExitStatus(signal=SIGKILL))
            return
        if sig == SIGNALS["CONT"]:
            proc.stopped = False
            proc.update_runnable()
            self._release_held(proc)
        handler = proc.handlers.get(sig)
        if handler == "ignore":
            return
        if sig == SIGNALS["STOP"]:
            proc.stopped = True
            proc.update_runnable()
            return
        if (proc.stopped or proc.frozen) and sig != SIGNALS["CONT"]:
            proc.held.append(sig)
            return
        if handler == "handle":
            proc.pending.append(sig)
            assert proc.signal_event is not None
            proc.signal_event.set()
            return
        if sig in _IGNORED_BY_DEFAULT or (proc.sandbox.pid_ns and proc.nspid == 1):
            return  # the init of a pid namespace has no default actions (pid_namespaces(7))
        if sig in _STOP_BY_DEFAULT:
            proc.stopped = True
            proc.update_runnable()
            return
        self._exit(proc, ExitStatus(signal=sig))

    def _release_held(self, proc: SimProcess) -> None:
        if proc.stopped or proc.frozen or not proc.held:
            return
        held, proc.held = proc.held, []
        for s in held:
            self._deliver(proc, s)

    def _alloc(self, proc: SimProcess, nbytes: int) -> None:
        proc.mem += nbytes
        cg = self.world.cgroups.get(proc.cgroup) if proc.cgroup is not None else None
        if cg is not None:
            cg.charge(self, self.world)

    # ---- the role -----------------------------------------------------------------------
    async def spawn(self, spec: SpawnSpec) -> Pid:
        world = self.world
        world.faults.check("spawn")
        old = world.sandboxes.get(spec.id)
        if old is not None and old.alive:
            raise _err(errno.EEXIST, f"sandbox {spec.id} is running", spec.id)
        view = self._view_at(spec.rootfs)
        if spec.cgroup is not None and spec.cgroup not in world.cgroups:
            raise _err(errno.ENOENT, f"cgroup {spec.cgroup} does not exist", spec.cgroup)
        if spec.netns is not None and spec.netns not in world.netns:
            raise _err(errno.ENOENT, f"netns {spec.netns} does not exist", spec.netns)
        self._check_pids(spec.cgroup)
        env = _env(spec.env)
        if spec.create_cwd and spec.cwd and not view.exists(spec.cwd):
            view.mkdir(spec.cwd, 0o755, parents=True)
        program, ids = self._prepare(view, spec.argv, env, spec.cwd or "/", spec.user)
        sbview = self._sandbox_view(view, spec)
        channel, fds, writer = self._stdio(spec.stdio)
        norm = getattr(self, "_norm_target", None)
        sandbox = Sandbox(id=spec.id, init_pid=0, rootfs=norm(spec.rootfs) if norm else spec.rootfs,
                          netns=spec.netns, view=sbview,
                          hostname=spec.hostname or world.hostname,
                          pid_ns=Namespace.PID in spec.namespaces,
                          private_net=Namespace.NET in spec.namespaces and spec.netns is None,
                          cwd=spec.cwd or "/")
        proc = self._new_process(sandbox, tuple(spec.argv), env, spec.cwd or "/", ids,
                                 spec.cgroup, 0, True, fds, program)
        sandbox.init_pid = proc.pid
        proc.channel, proc.stdin_writer, proc.tty = channel, writer, spec.stdio.tty
        world.sandboxes[spec.id] = sandbox
        return Pid(proc.pid)

    def _sandbox_view(self, view: Any, spec: SpawnSpec) -> FsView:
        """The sandbox's mount namespace: the rootfs, the generated /etc files bind-mounted over
        it (reads and writes of those paths go to the sandbox's own copy, never to the write
        layer, as with Docker's /etc/hosts), plus its own tmpfs mounts."""
        sbview: FsView
        if spec.etc_files:
            etc = FsView([], Tree(), clock=view.clock)
            for path, data in spec.etc_files:
                etc.mkdir(posixpath.dirname(path) or "/", parents=True)
                etc.write(path, data)
                if not view.exists(path) and view.exists(posixpath.dirname(path) or "/"):
                    view.write(path, b"")  # the mount point, as runc creates it
            sbview = _BindFilesView(list(view.layers), view.upper, readonly=False,
                                    world_faults=view.faults, clock=view.clock)
            sbview.bound = {posixpath.normpath(p): etc for p, _ in spec.etc_files}
        else:
            sbview = FsView(list(view.layers), view.upper, readonly=False, world_faults=view.faults,
                            clock=view.clock)
        for mp, sub in view.mounts().items():
            sbview.mount_at(mp, sub)
        for m in spec.mounts:
            if not sbview.exists(m.target):
                sbview.mkdir(m.target, parents=True)
            if m.kind == "tmpfs":
                sbview.mount_at(m.target, FsView([], Tree(), readonly=m.readonly,
                                                 clock=view.clock))
            elif m.kind == "bind" and m.source in self.world.mounts:
                src = self._view_at(m.source)
                sbview.mount_at(m.target, FsView(src.layers, src.upper, readonly=m.readonly,
                                                 world_faults=src.faults, clock=src.clock))
        sbview.readonly = spec.readonly_rootfs
        return sbview

    async def exec(self, target: Pid, spec: ExecSpec) -> Pid:
        self.world.faults.check("exec")
        init = self._live(target)
        sb = init.sandbox
        if not sb.alive:
            raise ProcessLookupError(errno.ESRCH, f"sandbox of {target} has exited")
        cg = self.world.cgroups.get(init.cgroup) if init.cgroup is not None else None
        if cg is not None and cg.frozen:
            raise _err(errno.EBUSY, f"cgroup {init.cgroup} is frozen")
        self._check_pids(init.cgroup)
        env = _env(spec.env)
        cwd = spec.cwd or sb.cwd
        program, ids = self._prepare(sb.view, spec.argv, env, cwd, spec.user)
        channel, fds, writer = self._stdio(spec.stdio)
        proc = self._new_process(sb, tuple(spec.argv), env, cwd, ids, init.cgroup, 0, True, fds,
                                 program)
        proc.channel, proc.stdin_writer, proc.tty = channel, writer, spec.stdio.tty
        return Pid(proc.pid)

    async def signal(self, pid: Pid, sig: int) -> None:
        self.world.faults.check("signal")
        if not isinstance(sig, int) or not 1 <= sig <= 64:
            raise _err(errno.EINVAL, f"invalid signal {sig}")
        self._deliver(self._live(pid), sig)

    async def wait(self, pid: Pid, timeout: float | None = None) -> ExitStatus | None:
        self.world.faults.check("wait")
        proc = self._addressable(pid)
        if proc.exit_status is not None:
            return proc.exit_status
        assert proc.exit_future is not None
        if timeout is not None and timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(proc.exit_future), timeout)
        except TimeoutError:
            return None

    async def release(self, pid: Pid) -> None:
        self.world.faults.check("release")
        proc = self._addressable(pid)
        if proc.alive:
            raise _err(errno.EBUSY, f"process {pid} is still running")
        del self.world.processes[pid]
        sb = proc.sandbox
        if sb.init_pid == proc.pid and self.world.sandboxes.get(sb.id) is sb:
            del self.world.sandboxes[sb.id]

    async def processes(self, pid: Pid) -> list[ProcessInfo]:
        self.world.faults.check("processes")
        proc = self._live(pid)
        if proc.sandbox.init_pid != proc.pid:
            raise ProcessLookupError(errno.ESRCH, f"{pid} is not a sandbox init")
        procs = self._sandbox_procs(proc)
        procs.sort(key=lambda p: (p.pid != proc.pid, p.pid))
        return [ProcessInfo(pid=Pid(p.pid), ppid=p.ppid, uid=p.uid, argv=p.argv,
                            state=p.shown_state(), start_time=p.start_time,
                            cpu_seconds=p.cpu_ns / 1e9, rss=p.mem) for p in procs]

    async def stdio(self, pid: Pid) -> SimStdio:
        self.world.faults.check("stdio")
        proc = self._live(pid)
        return SimStdio(proc)

    async def sandboxes(self) -> list[SandboxInfo]:
        self.world.faults.check("sandboxes")
        out = []
        for sb in self.world.sandboxes.values():
            init = self.world.processes.get(sb.init_pid)
            status = init.exit_status if init is not None else ExitStatus(signal=SIGKILL)
            out.append(SandboxInfo(id=sb.id, pid=Pid(sb.init_pid), exit_status=status))
        return out


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in pairs:
        k, sep, v = item.partition("=")
        if sep:
            env[k] = v
    return env


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class _BindFilesView(FsView):
    """An FsView with single files bind-mounted over it (``bound``: path → the view holding it)."""

    bound: dict[str, FsView]

    def _target(self, path: str) -> FsView | None:
        return self.bound.get(posixpath.normpath(path))

    def read(self, path: str) -> bytes:
        t = self._target(path)
        return t.read(path) if t is not None else super().read(path)

    def stat(self, path: str, follow: bool = True) -> Any:
        t = self._target(path)
        return t.stat(path, follow) if t is not None else super().stat(path, follow)

    def write(self, path: str, data: bytes, append: bool = False, mode: int = 0o644) -> None:
        t = self._target(path)
        if t is not None:
            t.write(path, data, append, mode)  # a bind mount stays writable under --read-only
        else:
            super().write(path, data, append, mode)

    def unlink(self, path: str) -> None:
        if self._target(path) is not None:
            raise OSError(errno.EBUSY, "Device or resource busy", path)  # a mount point
        super().unlink(path)

