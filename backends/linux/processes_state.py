"""Process records of the Processes role (``LinuxProcesses``' base): one per sandbox or exec.

A record is a state directory, ``<exec_root>/sandboxes/<id>.<token>/`` or
``<exec_root>/execs/<token>/``, holding ``state.json`` (written before spawn returns),
``exit.json`` (written by the monitor when the process ended) and ``attach.sock``. The directory
*is* the record: a new LinuxKernel over the same ``exec_root`` (a restarted daemon) adopts whatever
it finds there, running or ended (:meth:`ProcessRecords._px_scan`). The in-memory table
(``_px_procs``: pid -> :class:`Proc`) is filled from the disk and by the role's starts; it is
changed on the event loop only.

Liveness is tracked through pidfds (pid reuse cannot misdirect a signal): one on the process, one
on its monitor, and, for a monitor this daemon started, a pipe the monitor closes right after
writing ``exit.json`` (before its own exit, which takes ~1 ms more). A record is *settled* once
its exit status is known (:meth:`ProcessRecords._px_status`): its fds are closed and its waiters
woken. ``exit.json`` missing while the monitor and the process are both gone settles as SIGKILL.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
from typing import Any

from backends.linux.procfs import open_pidfd
from engine.kernel import SIGKILL, ExitStatus


def esrch(pid: int, why: str = "no such process") -> ProcessLookupError:
    return ProcessLookupError(errno.ESRCH, f"{why}: {pid}")


class Proc:
    """What the daemon knows of one spawned or exec'd process."""

    def __init__(self, path: str, state: dict[str, Any]) -> None:
        self.dir = path
        self.state = state
        self.kind = "sandbox" if state["op"] == "spawn" else "exec"
        self.pid = int(state["pid"])
        self.id = str(state.get("id", ""))
        self.pidfd: int | None = None
        self.monfd: int | None = None
        self.donefd: int | None = None  # EOF once the monitor wrote exit.json (its own start only)
        self.status: ExitStatus | None = None
        self.fut: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.watch_fd: int | None = None


def readable(fd: int) -> bool:
    """A pidfd polls readable once its process has exited (poll: fds may exceed FD_SETSIZE)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def running(proc: Proc) -> bool:
    """Whether ``proc`` still runs, without changing its record (see ``_px_status``, which also
    settles it): its monitor is alive, or the monitor died and the process is alive."""
    if proc.status is not None:
        return False
    monfd, pidfd = proc.monfd, proc.pidfd  # read once: the loop may close and clear them
    if monfd is not None and not readable(monfd):
        return True
    if pidfd is not None and not readable(pidfd):
        return monfd is None or read_exit(proc.dir) is None
    return False


def read_exit(path: str) -> ExitStatus | None:
    try:
        with open(os.path.join(path, "exit.json")) as fh:
            st = json.load(fh)
    except (FileNotFoundError, ValueError):
        return None
    return ExitStatus(code=st.get("code"), signal=st.get("signal"))


class ProcessRecords:
    """The record table and the liveness checks (the base of ``LinuxProcesses``, which fills
    ``_px_procs``/``_px_dirs``/``_px_spawning`` in ``_init_processes``)."""

    exec_root: str
    _px_procs: dict[int, Proc]
    _px_dirs: set[str]
    _px_spawning: dict[str, str]  # id -> rootfs of spawns in flight

    # The two hooks below are called from the other roles' worker threads (e.g. ``unmount`` runs
    # in one while the event loop releases other sandboxes): they read a copy of the table
    # (``list()``/``set()`` of a dict run in C under the GIL: atomic) and never settle a record
    # (that unwatches fds on the loop), so they cannot race the loop's own changes.
    def _live_rootfs(self) -> set[str]:
        live = {p.state["rootfs"] for p in list(self._px_procs.values())
                if p.kind == "sandbox" and running(p)}
        return live | set(self._px_spawning.values())

    def _live_netns(self) -> set[str]:
        return {p.state["netns"] for p in list(self._px_procs.values())
                if p.kind == "sandbox" and p.state.get("netns") and running(p)}

    # ---- records ------------------------------------------------------------------------------
    def _px_scan(self) -> None:
        """Adopt every state directory not known yet (sandboxes of an earlier daemon)."""
        for sub in ("sandboxes", "execs"):
            base = os.path.join(self.exec_root, sub)
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(base, name)
                if path in self._px_dirs:
                    continue
                try:
                    with open(os.path.join(path, "state.json")) as fh:
                        state = json.load(fh)
                except (FileNotFoundError, NotADirectoryError, ValueError):
                    continue  # a spawn in flight, or one that failed half-way
                proc = Proc(path, state)
                proc.monfd = open_pidfd(state["monitor"], state["monitor_start"])
                proc.pidfd = open_pidfd(proc.pid, state["start"])
                # exit.json is read after the pidfds are taken: no window where both miss
                proc.status = read_exit(path)
                if proc.status is None and proc.monfd is None and proc.pidfd is None:
                    proc.status = ExitStatus(signal=SIGKILL)  # monitor and process vanished
                if proc.status is not None:
                    self._px_close_fds(proc)
                self._px_register(proc)

    def _px_register(self, proc: Proc) -> None:
        old = self._px_procs.get(proc.pid)
        if old is not None:  # pid reuse after an unreleased exit: the old record goes
            self._px_unwatch(old)
            self._px_close_fds(old)
        self._px_procs[proc.pid] = proc
        self._px_dirs.add(proc.dir)

    def _px_get(self, pid: int) -> Proc:
        proc = self._px_procs.get(pid)
        if proc is None:
            self._px_scan()
            proc = self._px_procs.get(pid)
        if proc is None:
            raise esrch(pid)
        return proc

    def _px_status(self, proc: Proc) -> ExitStatus | None:
        """The exit status if the process has ended (non-blocking), else None."""
        if proc.status is not None:
            return proc.status
        if proc.donefd is not None:
            if not readable(proc.donefd):
                return None
            st = read_exit(proc.dir)
            if st is not None:  # settled before the monitor has finished exiting
                self._px_settle(proc, st)
                return proc.status
            self._px_unwatch(proc)  # it ended without a record: its pidfds tell the rest
            os.close(proc.donefd)
            proc.donefd = None
        if proc.monfd is not None:
            if not readable(proc.monfd):
                return None
            st = read_exit(proc.dir)
            if st is None and proc.pidfd is not None and not readable(proc.pidfd):
                # the monitor died but its process lives on: watch the process itself
                self._px_unwatch(proc)
                os.close(proc.monfd)
                proc.monfd = None
                return None
        elif proc.pidfd is not None and not readable(proc.pidfd):
            return None
        else:
            st = read_exit(proc.dir)
        self._px_settle(proc, st or ExitStatus(signal=SIGKILL))
        return proc.status

    def _px_settle(self, proc: Proc, status: ExitStatus) -> None:
        proc.status = status
        self._px_unwatch(proc)
        self._px_close_fds(proc)
        if proc.fut is not None and not proc.fut.done():
            proc.fut.set_result(None)

    def _px_close_fds(self, proc: Proc) -> None:
        for fd in (proc.pidfd, proc.monfd, proc.donefd):
            if fd is not None:
                os.close(fd)
        proc.pidfd = proc.monfd = proc.donefd = None

    def _px_unwatch(self, proc: Proc) -> None:
        if proc.watch_fd is not None and proc.loop is not None and not proc.loop.is_closed():
            proc.loop.remove_reader(proc.watch_fd)
        proc.watch_fd = None

    def _px_exit_future(self, proc: Proc) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if proc.fut is not None and proc.loop is loop and not proc.fut.done() and proc.watch_fd is not None:
            return proc.fut
        self._px_unwatch(proc)
        fut: asyncio.Future[None] = loop.create_future()
        fd = next(f for f in (proc.donefd, proc.monfd, proc.pidfd) if f is not None)
        proc.fut, proc.loop, proc.watch_fd = fut, loop, fd

        def ready() -> None:
            self._px_unwatch(proc)
            self._px_status(proc)
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, ready)
        return fut
