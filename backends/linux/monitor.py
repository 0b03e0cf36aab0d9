"""The per-container (and per-exec) monitor: a small process that outlives the daemon.

It is forked from the zygote (``backends.linux.zygote``), so it costs a fork, not a Python start,
and shares the zygote's pages copy-on-write. One monitor per spawned sandbox and per exec:

1. reads one request (``spawn`` or ``exec``) from the connection the zygote handed it;
2. sets up the stdio (pipes, or a pty whose slave becomes the controlling terminal), the json-file
   log, the attach socket ``<dir>/attach.sock``, and a CLOEXEC error pipe;
3. ``spawn``: hands the request and its fds to the child the spare forked in advance, already PID 1
   of a new pid namespace (``monitor_child.Prefork``; without one: ``unshare(CLONE_NEWPID)`` then
   fork); it runs ``sandbox.init_main``. ``exec``: ``setns`` into the target's pid namespace then
   fork → the child runs ``sandbox.exec_main``. A child that fails sends ``{errno, strerror,
   filename}`` on the error pipe; EOF on it means execve succeeded (``monitor_child.child_main``);
4. replies ``{"pid", "monitor", "own"}`` (``own``: what ``state.json`` adds to the request's
   ``state``; plus pidfds of both and the read end of a "done"
   pipe, by SCM_RIGHTS) or ``{"error": [...]}``, writes ``state.json`` before replying;
5. loops (poll, no asyncio): output → log and attached clients; client frames → stdin / resize;
   child exit → drain, flush the log, write ``exit.json`` atomically, send the exit frame, close
   the done pipe, exit.

Attach gate: output is not read until the first client attaches or ``stdio.attach_grace`` s after
the exec, whichever comes first (it waits in the pipe meanwhile). So a client attaching right after
``spawn`` returns sees the output from the very start, while "output after the attach began" holds
for any later client, and nothing is ever in the log *and* replayed.

The output/input/client side of the loop is ``backends.linux.monitor_relay``; the attach frame
format is in ``backends.linux.monitor_wire``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from backends.linux import libc
from backends.linux.monitor_child import Prefork, child_main
from backends.linux.monitor_relay import Relay, _Client
from backends.linux.monitor_wire import (ERR, EXIT, OUT, decode_exec, decode_spawn, frame, recv_raw,
                                         send_msg, set_title, sock_path, start_ticks, write_json)
from engine.containers.logfile import LogWriter
from engine.kernel import ExecSpec, Namespace, SpawnSpec

DRAIN_GRACE = 0.5  # after the exit, how long to wait for EOF from writers that outlive the child
FLUSH_DEADLINE = 2.0  # at the end, how long slow clients get to take their last frames


# ---- the monitor -------------------------------------------------------------------------------
class Monitor(Relay):
    """One container's (or exec's) monitor. :meth:`start` forks the child; :meth:`run` loops."""

    def __init__(self, req: dict[str, Any], sandbox_module: str, prefork: Prefork | None = None,
                 raw: bytes | None = None) -> None:
        """``req``: the request (``raw``: its JSON, handed to a pre-forked child as it is). The
        spec is decoded in :meth:`start`, while the child already works."""
        self.req, self.raw = req, raw
        self.prefork = prefork
        self.op: str = req["op"]
        self.dir: str = req["dir"]
        self.sandbox = importlib.import_module(sandbox_module)  # preloaded by the zygote
        self.spec: SpawnSpec | ExecSpec
        self.tty = bool(req["spec"]["stdio"]["tty"])
        self.pid = 0
        self.pidfd = -1
        self.out: dict[int, bytes] = {}  # readable fd -> frame kind
        self.stdin_fd: int | None = None
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        self.master: int | None = None
        self.log: LogWriter | None = None
        self.listener: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self.status: dict[str, int] | None = None
        self._child_fds: list[int] = []
        self.state: dict[str, Any] = {}
        self.own: dict[str, Any] = {}  # what the state record adds to the request's "state"
        self.done_w: int | None = None

    # -- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the stdio and fork the child. Raises the child's OSError if its exec failed.

        The child prepares its sandbox while this process sets up the log, the attach socket
        and the state record (the two run in parallel); it waits on the ``gate`` pipe before
        its security steps and ``execve``, so nothing of the container runs unless all of
        this succeeded. ``state.json`` appears only once the exec did.
        """
        stdin_open = bool(self.req["spec"]["stdio"]["stdin_open"])
        if self.tty:
            self.master, slave = os.openpty()
            os.set_blocking(self.master, False)
            self._child_fds = [slave, slave, slave]
            self.out[self.master] = OUT
            self.stdin_fd = self.master if stdin_open else None
        else:
            if stdin_open:
                r, self.stdin_fd = os.pipe()
                os.set_blocking(self.stdin_fd, False)
            else:
                r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self.out = {out_r: OUT, err_r: ERR}
            self._child_fds = [r, out_w, err_w]
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
        pid = self._hand_over(err_w, gate_r)
        self.spec = spec = (decode_spawn(self.req["spec"]) if self.op == "spawn"
                            else decode_exec(self.req["spec"]))
        stdio = spec.stdio
        if pid == 0:
            if self.op == "spawn":
                assert isinstance(spec, SpawnSpec)
                if Namespace.PID in spec.namespaces:
                    libc.unshare(libc.CLONE_NEWPID)  # our next child is PID 1 of a new namespace
                else:
                    self._host_pidns()  # undo the spare's unshare (Prefork): the child stays in ours
            else:
                self._enter_target_pidns()
            pid = os.fork()
            if pid == 0:
                os.close(err_r)
                os.close(gate_w)
                child_main(self.sandbox, self.op, spec, self.req, self._child_fds, err_w, gate_r)
        self.pid = pid
        os.close(err_w)
        os.close(gate_r)
        for fd in set(self._child_fds):
            os.close(fd)
        self._child_fds = []
        state_path = os.path.join(self.dir, "state.json")
        try:
            self.pidfd = os.pidfd_open(pid)
            self._setup_monitor()
            self.own = {"op": self.op, "pid": pid, "start": start_ticks(pid), "monitor": os.getpid(),
                        "monitor_start": start_ticks(os.getpid()), "started": time.time(),
                        "tty": self.tty, "stdin": stdio.stdin_open}
            state = {**self.own, **self.req.get("state", {})}
            with open(state_path + ".tmp", "w") as fh:  # runtime state: no fsync (see _finish)
                json.dump(state, fh)
        except BaseException:
            os.close(gate_w)  # EOF on the gate: the child gives up before running anything
            os.close(err_r)
            os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.unlink(state_path + ".tmp")
            raise
        with contextlib.suppress(BrokenPipeError):  # the child failed already: its report says why
            os.write(gate_w, b"G")
        os.close(gate_w)
        report = bytearray()
        while chunk := os.read(err_r, 4096):
            report += chunk
        os.close(err_r)
        if report:
            os.waitpid(pid, 0)
            os.unlink(state_path + ".tmp")
            err = json.loads(report)
            raise OSError(err["errno"], err["strerror"], *([err["filename"]] if err["filename"] else []))
        os.replace(state_path + ".tmp", state_path)
        self.state = state
        self.started = time.monotonic()

    def _setup_monitor(self) -> None:
        """The monitor's own side of the stdio: the json-file log and the attach socket."""
        log = self.spec.stdio.log
        if log is not None:
            self.log = LogWriter(log.path, log.max_size, log.max_files)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dfd = os.open(self.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.listener.bind(sock_path(dfd))
        finally:
            os.close(dfd)
        self.listener.listen(16)
        self.listener.setblocking(False)

    def _enter_target_pidns(self) -> None:
        target = self.req["target"]
        try:
            fd = os.open(f"/proc/{target}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"no such process: {target}") from None
        try:
            if start_ticks(target) != self.req["target_start"]:
                raise ProcessLookupError(errno.ESRCH, f"no such process: {target}")
            libc.setns(fd, libc.CLONE_NEWPID)  # affects our children only
        finally:
            os.close(fd)

    def _hand_over(self, err_w: int, gate_r: int) -> int:
        """Give a spawn to the pre-forked child (see ``monitor_child.Prefork``); its pid, or 0
        if there is none or it does not fit (no new pid namespace, an exec): then we fork."""
        prefork, self.prefork = self.prefork, None
        if prefork is None:
            return 0
        if self.op == "spawn" and Namespace.PID.value in self.req["spec"]["namespaces"]:
            raw = self.raw if self.raw is not None else json.dumps(self.req).encode()
            try:
                return prefork.hand_over(raw, self._child_fds, err_w, gate_r)
            except OSError:
                pass  # it died: reap it, fork a fresh one
        prefork.discard()
        return 0

    @staticmethod
    def _host_pidns() -> None:
        fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(fd, libc.CLONE_NEWPID)
        finally:
            os.close(fd)

    def abort(self) -> None:
        """After a failed :meth:`start`: close what was made (the daemon removes the dir)."""
        if self.prefork is not None:
            self.prefork.discard()
            self.prefork = None
        for fd in set(self._child_fds) | set(self.out) | {self.stdin_fd or -1, self.pidfd}:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.listener is not None:
            self.listener.close()
        if self.log is not None:
            self.log.close()

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        reading, gate = False, self.started + self.spec.stdio.attach_grace
        drain_until: float | None = None
        assert self.listener is not None
        lfd = self.listener.fileno()
        while True:
            now = time.monotonic()
            if not reading and (self.clients or now >= gate):
                reading = True
            if self.status is not None and reading:
                if drain_until is None:
                    drain_until = now + DRAIN_GRACE
                if not self.out or now >= drain_until:
                    break
            poller = select.poll()
            want: dict[int, int] = {lfd: select.POLLIN}
            if self.pidfd >= 0:
                want[self.pidfd] = select.POLLIN
            if reading:
                for fd in self.out:
                    want[fd] = want.get(fd, 0) | select.POLLIN
            if self.stdin_fd is not None and self.stdin_buf:
                want[self.stdin_fd] = want.get(self.stdin_fd, 0) | select.POLLOUT
            for fd, c in self.clients.items():
                want[fd] = select.POLLIN | (select.POLLOUT if c.wbuf else 0)
            for fd, mask in want.items():
                poller.register(fd, mask)
            deadline = gate if not reading else drain_until
            timeout = None if deadline is None else max(0, int((deadline - now) * 1000) + 1)
            for fd, ev in poller.poll(timeout):
                if fd == lfd:
                    self._accept()
                elif fd == self.pidfd:
                    self._reap()
                else:
                    if fd in self.clients:
                        self._client_io(fd, ev)
                    else:
                        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self.out:
                            self._read_output(fd)
                        if ev & (select.POLLOUT | select.POLLERR) and fd == self.stdin_fd:
                            self._write_stdin()
        self._finish()

    def _reap(self) -> None:
        pid, st = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        self.status = ({"signal": os.WTERMSIG(st)} if os.WIFSIGNALED(st)
                       else {"code": os.WEXITSTATUS(st)})
        os.close(self.pidfd)
        self.pidfd = -1

    def _finish(self) -> None:
        for fd in list(self.out):  # what is left in the pipes without blocking
            for _ in range(64):
                if fd not in self.out or not select.select([fd], [], [], 0)[0]:
                    break
                self._read_output(fd)
        if self.log is not None:
            self.log.close()
        assert self.status is not None
        # Runtime state, not fsync'd (two fsyncs cost 1-10 ms on the exit path): the rename is
        # atomic for readers, and a power loss that could lose the file ends the container too.
        write_json(os.path.join(self.dir, "exit.json"), self.status, sync=False)
        end = frame(EXIT, json.dumps(self.status).encode())
        deadline = time.monotonic() + FLUSH_DEADLINE
        for fd, c in list(self.clients.items()):
            c.wbuf += end
            c.sock.setblocking(True)
            c.sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                c.sock.sendall(c.wbuf)
            self._drop(fd)
        if self.done_w is not None:  # the daemon's wait returns now, not after our exit
            os.close(self.done_w)
            self.done_w = None


def serve(conn_fd: int, sandbox_module: str, replied: Callable[[], None] | None = None,
          prefork: Prefork | None = None) -> NoReturn:
    """Entry point of a monitor freshly forked by the zygote (fd 0-2 are /dev/null or a log).

    ``replied`` is called once the daemon has its answer (or the monitor failed): the zygote
    forks the next spare then, not while this start still needs the CPU. ``prefork``: a child
    forked in advance (``monitor_child.Prefork``) that a spawn uses instead of forking one."""
    code = 0
    try:
        os.chdir("/")
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        os.set_inheritable(conn_fd, False)  # SCM_RIGHTS fds arrive without O_CLOEXEC
        conn = socket.socket(fileno=conn_fd)
        raw, _ = recv_raw(conn)
        req = json.loads(raw)
        kind = "monitor" if req["op"] == "spawn" else "exec"
        mon = Monitor(req, sandbox_module, prefork, raw)
        try:
            mon.start()
        except OSError as e:
            mon.abort()
            send_msg(conn, {"error": [e.errno, e.strerror, e.filename]})
            conn.close()
            if replied is not None:
                replied()
            os._exit(0)
        selffd = os.pidfd_open(os.getpid())
        done_r, mon.done_w = os.pipe2(os.O_CLOEXEC)  # closed when exit.json is written
        # the daemon has the request's "state": only what we added travels back
        send_msg(conn, {"pid": mon.pid, "monitor": os.getpid(), "own": mon.own},
                 [mon.pidfd, selffd, done_r])
        os.close(selffd)
        os.close(done_r)
        conn.close()
        if replied is not None:
            replied()
            replied = None
        set_title(f"wharfie-{kind} {req.get('state', {}).get('id', '')}")  # off the start's path
        mon.run()
    except BaseException:  # noqa: BLE001 - a monitor never unwinds into the zygote's loop
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        if replied is not None:
            replied()
        sys.stderr.flush()
    os._exit(code)
