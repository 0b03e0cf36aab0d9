"""The container side of a monitor: the child that becomes the container's process.

:func:`child_main` runs in the monitor's forked child: stdio on 0-2, a new session (and the
controlling terminal), default signals, then ``sandbox.init_main`` (spawn) or
``sandbox.exec_main`` (exec); a failure is reported as ``{errno, strerror, filename}`` on the
CLOEXEC error pipe (EOF on it means ``execve`` succeeded).

:class:`Prefork` forks that child *in advance*, while the spare monitor waits for work (see
``backends.linux.zygote``): ``unshare(CLONE_NEWPID)`` then fork, so the child is already PID 1 of
a new pid namespace, with its page tables copied (~2 ms of a start on this 2-core box) and the
copy-on-write faults a start takes there copied ahead too (~2.5 ms; see ``monitor_prefault``).
It blocks on a socket until :meth:`Prefork.hand_over` sends it the request and its fds, then
runs :func:`child_main` exactly as a freshly forked child would. A spawn that needs another kind
of child (no new pid namespace; an exec, which joins the target's) discards it (EOF: it exits)
and forks as before. It holds no fd but its socket and 0-2 (the zygote's /dev/null and log), so
nothing of the daemon or the zygote can reach a container through it; it exits when its spare
does (EOF).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import termios
from array import array
from types import ModuleType
from typing import Any, NoReturn

from backends.linux import libc, monitor_prefault
from backends.linux.monitor_wire import decode_exec, decode_spawn
from engine.kernel import SpawnSpec

_MAX_FDS = 8  # room for the five: stdin, stdout, stderr, error pipe, gate


def child_main(sandbox: ModuleType, op: str, spec: Any, req: dict[str, Any], child_fds: list[int],
               err_w: int, gate: int) -> NoReturn:
    """In the container's child: stdio from ``child_fds`` on 0-2, a session (and controlling
    tty), default signals, then the sandbox entry for ``op``. Never returns: ``execve`` or a
    report on ``err_w`` and ``_exit(127)``."""
    try:
        for i, fd in enumerate(child_fds):
            os.dup2(fd, i)  # dup2'd fds are inheritable
        for fd in set(child_fds):
            if fd > 2:
                os.close(fd)
        os.setsid()
        if spec.stdio.tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGHUP, signal.SIGTERM,
                    signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if op == "spawn":
            sandbox.init_main(spec, cgroup_procs=req["cgroup_procs"], netns_path=req["netns_path"],
                              gate=gate)
        else:
            init = req.get("init_spec")
            sandbox.exec_main(req["target"], spec, req["init_cwd"], cgroup_procs=req["cgroup_procs"],
                              init_spec=decode_spawn(init) if init else None, gate=gate)
        raise OSError(errno.EIO, "sandbox entry returned")
    except OSError as e:
        report = {"errno": e.errno or errno.EIO, "strerror": e.strerror or str(e),
                  "filename": None if e.filename is None else str(e.filename)}
    except BaseException as e:  # noqa: BLE001 - must never return into the monitor's code
        report = {"errno": errno.EIO, "strerror": f"{type(e).__name__}: {e}", "filename": None}
    try:
        os.write(err_w, json.dumps(report).encode())
    finally:
        os._exit(127)


class Prefork:
    """A child forked ahead of time into a new pid namespace, waiting for its request."""

    def __init__(self, pid: int, sock: socket.socket, learn: bool = False) -> None:
        self.pid, self.sock, self.learn = pid, sock, learn

    @classmethod
    def start(cls, sandbox: ModuleType, sample: bytes | None = None, hot: bytes = b"",
              learn: bool = False) -> Prefork | None:
        """Fork the waiting child (from a single-threaded spare whose next child may be PID 1
        of a new pid namespace: this unshares it). None if that is refused here. ``sample``:
        a request like the real ones, decoded while waiting (see :func:`warm`). ``hot``: the
        pages such children write (``monitor_prefault.Hot``), copied now. ``learn``: the child
        reports those it wrote instead (see :meth:`report`)."""
        try:
            libc.unshare(libc.CLONE_NEWPID)
        except OSError:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                fd = theirs.fileno()
                if fd > 3:
                    libc.close_range(3, fd - 1)  # nothing of the spare (control socket, pipes)
                libc.close_range(fd + 1)
                monitor_prefault.populate(hot)  # its faults taken now, not on the start's path
                if sample is not None:
                    warm(sample)
                _wait_and_run(sandbox, theirs, learn=learn)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours, learn)

    def hand_over(self, raw: bytes, child_fds: list[int], err_w: int, gate: int) -> int:
        """Send the child the request (``raw``: the monitor's request, JSON) and its fds
        (stdin, stdout, stderr, error pipe, gate); returns its pid. Raises ``OSError`` if it
        is gone (the caller falls back to a fresh fork)."""
        fds = [*child_fds, err_w, gate]  # a pty's slave three times: three fds arrive
        data = struct.pack(">I", len(raw)) + raw
        try:
            n = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))])
            if n < len(data):
                self.sock.sendall(data[n:])
        except BaseException:
            self.sock.close()
            raise
        return self.pid

    def report(self) -> bytes:
        """After the child's exec (or its failure): the pages it wrote on its way, if it was
        asked to report them (else, or if it has not sent them, b""). Never blocks."""
        out = bytearray()
        if self.learn and self.sock.fileno() >= 0:
            self.sock.setblocking(False)
            with contextlib.suppress(OSError):
                while chunk := self.sock.recv(65536):
                    out += chunk
        self.sock.close()
        return bytes(out)

    def discard(self) -> None:
        """Let the child go unused (EOF: it exits) and reap it (also after :meth:`hand_over`:
        closes our socket)."""
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def warm(sample: bytes) -> None:
    """Decode a sample request as a real one will be, while nothing waits for us: a process
    freshly forked from the zygote takes its first copy-on-write faults on that path (the
    objects it touches get their reference counts written), ~0.5 ms that would otherwise fall
    on a container's start. Those pages would be copied by the real request all the same."""
    req = json.loads(sample)
    decode_spawn(req["spec"])
    json.dumps(req)


def _wait_and_run(sandbox: ModuleType, sock: socket.socket, learn: bool = False) -> None:
    """The waiting child: read one request (EOF: return, the caller exits) and run it.

    ``learn``: send the pages written by the time the sandbox is set up back on ``sock``
    (``sandbox.before_gate``), for the spares that come after (see ``monitor_prefault``)."""
    buf, fds, need = bytearray(), list[int](), 4
    while len(buf) < need:
        try:
            data, anc, _, _ = sock.recvmsg(max(need - len(buf), 65536), socket.CMSG_SPACE(4 * _MAX_FDS),
                                           socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array("i", raw[:len(raw) - len(raw) % 4])
        if not data:
            return
        buf += data
        if need == 4 and len(buf) >= 4:
            need = 4 + struct.unpack(">I", buf[:4])[0]
    if learn:
        def report() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(monitor_prefault.dirty_ranges())
            sock.close()  # (close-on-exec anyway)
        setattr(sandbox, "before_gate", report)  # noqa: B010 - a ModuleType (not typed)
    else:
        sock.close()
    if len(fds) != 5:
        os._exit(127)  # not a request of ours: nothing to report on
    err_w, gate = fds[3], fds[4]
    try:
        req = json.loads(bytes(buf[4:need]))
    except ValueError as e:
        os.write(err_w, json.dumps({"errno": errno.EINVAL, "strerror": f"bad request: {e}",
                                    "filename": None}).encode())
        os._exit(127)
    try:
        spec: SpawnSpec | Any = decode_spawn(req["spec"]) if req["op"] == "spawn" else decode_exec(req["spec"])
    except BaseException as e:  # noqa: BLE001 - reported like any other failure of the child
        os.write(err_w, json.dumps({"errno": errno.EINVAL, "strerror": f"bad request: {e}",
                                    "filename": None}).encode())
        os._exit(127)
    child_main(sandbox, req["op"], spec, req, fds[:3], err_w, gate)
