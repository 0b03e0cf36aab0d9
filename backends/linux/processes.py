"""The Processes role of LinuxKernel (see ``engine.kernel.Processes`` for the contract).

Every spawned sandbox and every exec has a monitor (``backends.linux.monitor``) forked from the
zygote (``backends.linux.zygote``) and a state directory, its record (kept by the base class,
``backends.linux.processes_state``). ``release`` moves the record to ``<exec_root>/trash/``
(deleted in the background, see ``backends.linux.trash``).

``wait`` waits for the *monitor* to exit, which it does right after writing ``exit.json`` and
delivering the last output, so a returned status comes with complete logs. The monitor that this
daemon started also hands back a pipe it closes right then, before its exit (tearing down a Python
process's address space takes ~1 ms): ``wait`` watches that first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from typing import TYPE_CHECKING, Any

from backends.linux import attach, libc
from backends.linux.monitor_wire import encode
from backends.linux.processes_state import Proc, ProcessRecords, esrch
from backends.linux.procfs import sandbox_processes
from backends.linux.trash import Trash
from backends.linux.zygote import ZygoteClient
from engine.kernel import ExecSpec, ExitStatus, Pid, ProcessInfo, SandboxInfo, SpawnSpec, Stdio

if TYPE_CHECKING:
    from engine.kernel import CgroupStats

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class LinuxProcesses(ProcessRecords):
    """Mixin of LinuxKernel: sandboxes and execs through per-process monitors."""

    _px_sandbox_module = "backends.linux.sandbox"  # tests may point the zygote at a stand-in

    if TYPE_CHECKING:
        def _cgroup_procs_files(self, path: str) -> list[str]: ...
        def _netns_path(self, name: str) -> str: ...
        async def cgroup_stats(self, path: str) -> CgroupStats: ...

    # ---- lifecycle of the role --------------------------------------------------------------
    def _init_processes(self) -> None:
        self._px_procs = {}
        self._px_dirs = set()
        self._px_spawning = {}
        self._px_zygote: ZygoteClient | None = None
        for sub in ("sandboxes", "execs"):
            os.makedirs(os.path.join(self.exec_root, sub), mode=0o700, exist_ok=True)
        self._px_trash = Trash(os.path.join(self.exec_root, "trash"))  # released records
        self._px_trash.empty()
        self._px_scan()

    def _leaks_processes(self) -> list[str]:
        self._px_scan()
        return [f"{p.pid} ({p.kind} {p.id})" for p in self._px_procs.values() if self._px_status(p) is None]

    async def _close_processes(self) -> None:
        for p in self._px_procs.values():
            self._px_unwatch(p)
            self._px_close_fds(p)
        self._px_procs.clear()
        self._px_dirs.clear()
        if self._px_zygote is not None:
            await asyncio.to_thread(self._px_zygote.close)
            self._px_zygote = None

    def _px_zygote_client(self) -> ZygoteClient:
        if self._px_zygote is None:
            log = os.path.join(self.exec_root, "zygote.log")
            self._px_zygote = ZygoteClient(log, self._px_sandbox_module)
        return self._px_zygote

    async def _px_start(self, path: str, request: dict[str, Any]) -> Pid:
        """Have the zygote fork a monitor for ``request``; the new process's pid once exec'd."""
        call = asyncio.ensure_future(self._px_zygote_client().call_async(request))
        try:
            reply, fds = await asyncio.shield(call)
        except asyncio.CancelledError:  # the monitor goes on: record its outcome when it comes
            call.add_done_callback(lambda f: self._px_late_start(path, f, request))
            raise
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return self._px_finish_start(path, reply, fds, request)

    def _px_late_start(self, path: str, call: asyncio.Future[tuple[Any, list[int]]],
                       request: dict[str, Any]) -> None:
        if call.cancelled() or call.exception() is not None:
            shutil.rmtree(path, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            self._px_finish_start(path, *call.result(), request)

    def _px_finish_start(self, path: str, reply: dict[str, Any], fds: list[int],
                         request: dict[str, Any]) -> Pid:
        if "error" in reply or len(fds) not in (2, 3):
            for fd in fds:
                os.close(fd)
            shutil.rmtree(path, ignore_errors=True)
            code, msg, filename = reply.get("error") or (errno.EIO, "monitor failed", None)
            raise OSError(code, msg, *(() if filename is None else (filename,)))
        own = reply.get("own")  # state.json = the monitor's own fields + the request's "state"
        state = {**own, **request["state"]} if isinstance(own, dict) else reply.get("state")
        if state is None:  # a monitor that did not send it: the record it wrote
            with open(os.path.join(path, "state.json")) as fh:
                state = json.load(fh)
        proc = Proc(path, state)
        proc.pidfd, proc.monfd = fds[0], fds[1]
        proc.donefd = fds[2] if len(fds) == 3 else None
        self._px_register(proc)
        return Pid(proc.pid)

    # ---- the role ------------------------------------------------------------------------------
    async def spawn(self, spec: SpawnSpec) -> Pid:
        if not _ID.match(spec.id):
            raise OSError(errno.EINVAL, f"invalid sandbox id {spec.id!r}")
        if not spec.argv:
            raise OSError(errno.EINVAL, "empty argv")
        self._px_scan()
        if spec.id in self._px_spawning or any(
                p.kind == "sandbox" and p.id == spec.id and self._px_status(p) is None
                for p in self._px_procs.values()):
            raise FileExistsError(errno.EEXIST, f"sandbox {spec.id} is running", spec.id)
        rootfs = os.path.normpath(os.path.abspath(spec.rootfs))
        if not os.path.isdir(rootfs):
            raise FileNotFoundError(errno.ENOENT, f"rootfs {spec.rootfs} does not exist", spec.rootfs)
        cgroup_procs = self._cgroup_procs_files(spec.cgroup) if spec.cgroup else []
        netns_path = self._netns_path(spec.netns) if spec.netns else None
        path = os.path.join(self.exec_root, "sandboxes", f"{spec.id}.{secrets.token_hex(4)}")
        os.mkdir(path, 0o700)
        wire = encode(spec)
        request = {"op": "spawn", "dir": path, "spec": wire, "cgroup_procs": cgroup_procs,
                   "netns_path": netns_path,
                   "state": {"id": spec.id, "rootfs": rootfs, "netns": spec.netns,
                             "cgroup": spec.cgroup, "cwd": spec.cwd or "/", "spec": wire}}
        self._px_spawning[spec.id] = rootfs
        try:
            return await self._px_start(path, request)
        finally:
            del self._px_spawning[spec.id]

    async def exec(self, target: Pid, spec: ExecSpec) -> Pid:
        if not spec.argv:
            raise OSError(errno.EINVAL, "empty argv")
        init = self._px_sandbox_of(self._px_get(target))
        if init is None or self._px_status(init) is not None:
            raise esrch(target, "sandbox has exited")
        cgroup = init.state.get("cgroup")
        cgroup_procs: list[str] = []
        if cgroup:
            try:
                stats = await self.cgroup_stats(cgroup)
                cgroup_procs = self._cgroup_procs_files(cgroup)
            except FileNotFoundError:
                raise esrch(target, "sandbox has exited") from None
            if stats.frozen:
                raise OSError(errno.EBUSY, f"cgroup {cgroup} is frozen")
            if stats.pids_limit is not None and 0 < stats.pids_limit <= stats.pids_current:
                raise OSError(errno.EAGAIN, f"cgroup {cgroup} is at its pids limit")
        path = os.path.join(self.exec_root, "execs", secrets.token_hex(8))
        os.mkdir(path, 0o700)
        request = {"op": "exec", "dir": path, "target": init.pid, "target_start": init.state["start"],
                   "spec": encode(spec), "init_cwd": init.state.get("cwd", "/"),
                   "init_spec": init.state.get("spec"),
                   "cgroup_procs": cgroup_procs,
                   "state": {"id": init.id, "sandbox_pid": init.pid,
                             "sandbox_start": init.state["start"]}}
        try:
            return await self._px_start(path, request)
        except ProcessLookupError:
            raise esrch(target, "sandbox has exited") from None

    def _px_sandbox_of(self, proc: Proc) -> Proc | None:
        if proc.kind == "sandbox":
            return proc
        init = self._px_procs.get(proc.state["sandbox_pid"])
        ok = init is not None and init.state["start"] == proc.state["sandbox_start"]
        return init if ok else None

    async def signal(self, pid: Pid, sig: int) -> None:
        if not isinstance(sig, int) or not 1 <= sig <= 64:
            raise OSError(errno.EINVAL, f"invalid signal {sig}")
        proc = self._px_get(pid)
        if self._px_status(proc) is not None or proc.pidfd is None:
            raise esrch(pid, "process has exited")
        libc.pidfd_send_signal(proc.pidfd, sig)

    async def wait(self, pid: Pid, timeout: float | None = None) -> ExitStatus | None:
        proc = self._px_get(pid)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (status := self._px_status(proc)) is None:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            try:
                await asyncio.wait_for(asyncio.shield(self._px_exit_future(proc)), left)
            except TimeoutError:
                return self._px_status(proc)
        return status

    async def release(self, pid: Pid) -> None:
        proc = self._px_get(pid)
        if self._px_status(proc) is None:
            raise OSError(errno.EBUSY, f"process {pid} is still running")
        del self._px_procs[pid]
        self._px_dirs.discard(proc.dir)
        try:  # out of the scanned dirs at once; deleted in the background
            self._px_trash.put(proc.dir)
        except OSError:
            shutil.rmtree(proc.dir, ignore_errors=True)

    async def processes(self, pid: Pid) -> list[ProcessInfo]:
        proc = self._px_get(pid)
        if proc.kind != "sandbox" or self._px_status(proc) is not None:
            raise esrch(pid, "not a live sandbox init")
        infos = await asyncio.to_thread(sandbox_processes, proc.pid, proc.state["start"])
        cgroup = proc.state.get("cgroup")
        if cgroup:
            with contextlib.suppress(OSError):
                if (await self.cgroup_stats(cgroup)).frozen:  # frozen tasks show as stopped
                    infos = [ProcessInfo(i.pid, i.ppid, i.uid, i.argv, "T", i.start_time,
                                         i.cpu_seconds, i.rss) for i in infos]
        return infos

    async def stdio(self, pid: Pid) -> Stdio:
        proc = self._px_get(pid)
        if self._px_status(proc) is not None:
            raise esrch(pid, "process has exited")
        return await attach.connect(proc.dir, lambda: self._px_status(proc) is None)

    async def sandboxes(self) -> list[SandboxInfo]:
        self._px_scan()
        latest: dict[str, Proc] = {}
        for p in self._px_procs.values():
            if p.kind == "sandbox":
                cur = latest.get(p.id)
                if cur is None or cur.state["started"] < p.state["started"]:
                    latest[p.id] = p  # an exited, unreleased one replaced by a new spawn
        ordered = sorted(latest.values(), key=lambda p: p.state["started"])
        return [SandboxInfo(id=p.id, pid=Pid(p.pid), exit_status=self._px_status(p)) for p in ordered]
