"""A pre-started fork server for monitors, and the daemon's client of it.

Starting a Python monitor from scratch costs ~30 ms and ~10 MiB; forking one from a warm process
that already imported everything a monitor needs costs ~1 ms, and its pages stay shared
copy-on-write (``gc.freeze()`` keeps the collector from touching them).

Protocol: the daemon holds one end of a SOCK_SEQPACKET socketpair, the zygote the other. For each
request the daemon makes a fresh stream socketpair and sends one end to the zygote (SCM_RIGHTS)
with a one-byte message. It is not the zygote that reads it but a *spare*: a child the zygote
forked in advance, which waits on the control socket (the zygote itself never reads it while a
spare waits, so each message has one reader). The spare that gets a request tells the zygote
(one byte on a pipe), calls ``setsid`` and becomes the monitor: it reads the request from the
socket it was handed and answers on it itself (``backends.linux.monitor``). So a spawn does not
wait for a fork of the zygote, nor for the new process's copy-on-write warm-up (~2 ms together).
Each spare also forks, while it waits, the child a spawn will turn into the container's init
(``monitor_child.Prefork``: already PID 1 of a new pid namespace), and both take the
copy-on-write faults of a start ahead (``monitor_prefault``: learnt from the first few spares,
each of which, after replying, says b"L" and waits on a second pipe while the zygote reads its
pages, then sends its child's). The zygote forks the next spare ``SPARE_DELAY`` after the
monitor has replied (a second byte, or EOF, on the pipe): on a busy machine that fork (and the
spare's own fork and warm-up) would otherwise compete for a CPU with the start and, for a short
container, its exit and teardown. It forks at once if another request is already waiting on
the control socket (polled, never read), so concurrent starts do not queue behind one another.
The zygote ignores SIGCHLD, so the kernel reaps monitors that end while it runs (after it is
gone, they are reparented like any orphan). The zygote itself never blocks on a container.

Shutdown: the spare reads EOF on the control socket when the daemon closes it or dies (even with
SIGKILL); it exits, and the zygote, seeing its pipe closed without a byte, exits too (if the
zygote dies first, the daemon's client notices and closes the socket: the spare goes then).
Monitors do not exit: they are in their own session and hold no daemon fd, so they outlive all
of these (live-restore).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from array import array
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.linux.monitor_prefault import Hot

TITLE = "wharfie-zygote"
SPARE_DELAY = 0.008  # after a monitor replied, the next spare is forked this much later
_PAD = " " * 72  # room for monitors' titles (see monitor.set_title)


class ZygoteClient:
    """The daemon side: starts the zygote lazily, sends requests (thread-safe, blocking)."""

    def __init__(self, log_path: str, sandbox_module: str = "backends.linux.sandbox") -> None:
        self.log_path = log_path
        self.sandbox_module = sandbox_module
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            with open(self.log_path, "ab") as log:
                # close_fds: nothing of the daemon reaches the zygote, so none reaches a container
                self._proc = subprocess.Popen(
                    [sys.executable, "-s", "-m", "backends.linux.zygote", str(theirs.fileno()),
                     self.sandbox_module, TITLE + _PAD],
                    pass_fds=(theirs.fileno(),), close_fds=True, start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._ctl = ours
        return ours

    def call(self, request: dict[str, Any]) -> tuple[Any, list[int]]:
        """Send ``request`` to a new monitor; return its reply and the fds it passed."""
        from backends.linux.monitor_wire import recv_msg, send_msg

        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a:
            try:
                with self._lock:
                    for attempt in (0, 1):
                        ctl = self._ctl if self._alive() and self._ctl is not None else self._restart()
                        try:
                            ctl.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  array("i", [b.fileno()]))])
                            break
                        except OSError:  # the zygote died: start another once
                            if attempt:
                                raise
                            self._stop_locked()
            finally:
                b.close()
            send_msg(a, request)
            return recv_msg(a)

    async def call_async(self, request: dict[str, Any]) -> tuple[Any, list[int]]:
        """:meth:`call` on the running event loop, without a worker thread (two thread hand-offs
        fewer per start). Falls back to :meth:`call` in a thread when the zygote must be
        (re)started or another thread holds the control socket."""
        import asyncio
        import json
        import struct

        if not self._lock.acquire(blocking=False):
            return await asyncio.to_thread(self.call, request)
        data = json.dumps(request).encode()
        data = struct.pack(">I", len(data)) + data  # monitor_wire.send_msg's framing
        sent = 0
        try:
            ctl = self._ctl if self._alive() else None
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                if ctl is None:
                    raise ConnectionError("zygote not running")
                # the request waits in the socket before the spare wakes: it reads it at once
                a.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sent = a.send(data)
                ctl.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [b.fileno()]))])
            except OSError:
                a.close()
                ctl = None
            finally:
                b.close()
        finally:
            self._lock.release()
        if ctl is None:  # the zygote must be (re)started: blocking work, off the loop
            return await asyncio.to_thread(self.call, request)
        with a:
            loop = asyncio.get_running_loop()
            if sent < len(data):
                await loop.sock_sendall(a, data[sent:])
            return await _recv_msg_async(loop, a)

    def _alive(self) -> bool:
        return self._proc is not None and self._ctl is not None and self._proc.poll() is None

    def _restart(self) -> socket.socket:
        self._stop_locked()
        return self._start()

    def _stop_locked(self) -> None:
        if self._ctl is not None:
            self._ctl.close()  # EOF: the zygote exits
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop_locked()


def _wake(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


async def _recv_msg_async(loop: Any, sock: socket.socket) -> tuple[Any, list[int]]:
    """``monitor_wire.recv_msg`` for a non-blocking socket on ``loop``; closes the fds received
    so far if it fails or is cancelled. Raises ``OSError(EIO)`` if the peer closes early."""
    import json
    import struct

    buf, fds, need = bytearray(), list[int](), 4
    try:
        while len(buf) < need:
            try:
                data, anc, _, _ = sock.recvmsg(max(need - len(buf), 4096), socket.CMSG_SPACE(16),
                                               socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(sock.fileno(), _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(sock.fileno())
                continue
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array("i", raw[:len(raw) - len(raw) % 4])
            if not data:
                raise OSError(errno.EIO, "monitor closed the connection without a reply")
            buf += data
            if need == 4 and len(buf) >= 4:
                need = 4 + struct.unpack(">I", buf[:4])[0]
        return json.loads(bytes(buf[4:need])), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def main(argv: list[str]) -> int:
    ctl = socket.socket(fileno=int(argv[1]))
    os.set_inheritable(ctl.fileno(), False)
    sandbox_module = argv[2]
    mod = importlib.import_module(sandbox_module)  # preload: monitors fork with it imported
    warm = getattr(mod, "preload", None)
    if warm is not None:
        warm()  # e.g. build the default seccomp program once, not per container
    from backends.linux import monitor, monitor_prefault  # noqa: F401 - the same (+ wire module)

    os.chdir("/")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel, no zombies
    gc.collect()
    gc.freeze()  # keep the collector off the pages shared with monitors
    hot = monitor_prefault.Hot()  # learnt from the first spares (and their children)
    while True:
        taken_r, taken_w = os.pipe2(os.O_CLOEXEC)
        learn_r, learn_w = os.pipe2(os.O_CLOEXEC) if not hot.complete() else (-1, -1)
        spare = os.fork()
        if spare == 0:
            os.close(taken_r)
            if learn_w >= 0:
                os.close(learn_w)
            _spare(ctl, taken_w, sandbox_module, hot, learn_r)
        os.close(taken_w)
        if learn_r >= 0:
            os.close(learn_r)
        try:
            if not _read_byte(taken_r):
                return 0  # the spare saw the daemon go (or died): so do we
            # taken: wait for its reply (b"R", or EOF if it died), or for another request
            poller = select.poll()
            poller.register(taken_r, select.POLLIN)
            poller.register(ctl.fileno(), select.POLLIN)
            while not (ready := poller.poll()):
                pass
            if not any(fd == ctl.fileno() for fd, _ in ready):
                # replied: the container runs now, and a short one exits and is torn down in
                # the next few ms: the next spare (and the child it forks ahead) comes after
                # that, unless a request comes first
                if learn_w >= 0:
                    _learn(hot, spare, taken_r, learn_w)
                calls = select.poll()
                calls.register(ctl.fileno(), select.POLLIN)
                _poll(calls, SPARE_DELAY)
        finally:
            os.close(taken_r)
            if learn_w >= 0:
                os.close(learn_w)


def _learn(hot: Hot, spare: int, taken_r: int, learn_w: int) -> None:
    """A spare that replied says b"R" (nothing to learn from), or b"L" and waits: note its
    pages (read from outside, so that reading them writes none of them), let it go on, then
    read its child's pages (until EOF) that it sends then."""
    if _read_byte(taken_r) != b"L":
        return
    from backends.linux.monitor_prefault import dirty_ranges  # (imported by main())

    monitor = dirty_ranges(spare)
    with contextlib.suppress(OSError):
        os.write(learn_w, b"G")
    hot.learn(monitor, _read_all(taken_r))


def _sample_request() -> bytes:
    """A spawn request shaped like the daemon's (for ``monitor_child.warm``)."""
    import json

    from backends.linux.monitor_wire import encode
    from engine.kernel import LogSpec, MountSpec, SpawnSpec, StdioSpec

    spec = SpawnSpec(id="sample", argv=("true",), rootfs="/", env=("PATH=/bin", "HOSTNAME=x"),
                     hostname="x", cgroup="x", stdio=StdioSpec(log=LogSpec("/x", 1, 1)),
                     mounts=(MountSpec("tmpfs", "/x", options=("size=1",)),),
                     etc_files=(("/etc/hostname", b"x\n"),))
    return json.dumps({"op": "spawn", "dir": "/", "spec": encode(spec), "cgroup_procs": ["/x"],
                       "netns_path": None, "state": {"id": "sample", "spec": encode(spec)}}).encode()


def _poll(poller: select.poll, seconds: float) -> bool:
    """Whether ``poller`` reports an event within ``seconds`` (EINTR: poll again)."""
    while True:
        try:
            return bool(poller.poll(int(seconds * 1000)))
        except InterruptedError:
            continue


def _read_all(fd: int) -> bytes:
    """Read ``fd`` to EOF (a spare's pipe: it closes its end right after its last write)."""
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return bytes(out)
        out += chunk


def _read_byte(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def _spare(ctl: socket.socket, taken_w: int, sandbox_module: str, hot: Hot | None = None,
           learn_r: int = -1) -> None:
    """A pre-forked monitor: wait for one request on the control socket, then serve it.

    ``hot``: the pages learnt so far (copied now, see ``monitor_prefault.Hot``). ``learn_r``
    (while something is missing there): after replying, this spare says b"L" with its child's
    pages instead of b"R" and waits for a byte on it while the zygote reads its own."""
    try:
        from backends.linux import monitor, monitor_prefault  # preloaded by main()
        from backends.linux.monitor_child import Prefork, warm

        hot = hot if hot is not None else monitor_prefault.Hot()

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the monitor waits for its child
        # The container's child, forked ahead rather than on the start's path (it exits with
        # us); the zygote forked us once the previous start was past its busiest part.
        prefork = None
        poller = select.poll()
        poller.register(ctl.fileno(), select.POLLIN)
        if not _poll(poller, 0):  # a request already waiting: serve it first, fork anew
            sample = _sample_request()
            prefork = Prefork.start(importlib.import_module(sandbox_module), sample, hot.child,
                                    learn=learn_r >= 0)
            monitor_prefault.populate(hot.monitor)  # our own faults on the request's path, now
            warm(sample)  # (without a learnt set: some of them)
        while True:
            try:
                msg, anc, _, _ = ctl.recvmsg(16, socket.CMSG_SPACE(16), socket.MSG_CMSG_CLOEXEC)
            except InterruptedError:
                continue
            fds: list[int] = []
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array("i", raw[:len(raw) - len(raw) % 4])
            if not msg and not fds:
                os._exit(0)  # the daemon closed its end, or died
            if fds:
                break
        ctl.close()
        os.write(taken_w, b"T")  # taken: the zygote forks the next spare once we replied

        def replied() -> None:
            # (only a start whose child was forked ahead went the common way: learn from it;
            # its child's report is read after the zygote read our pages: reading allocates)
            learn = prefork is not None and prefork.learn and learn_r >= 0
            with contextlib.suppress(OSError):
                os.write(taken_w, b"L" if learn else b"R")
                if learn:
                    _read_byte(learn_r)  # (EOF if the zygote is gone: go on all the same)
            child = prefork.report() if prefork is not None else b""  # (closes our end)
            with contextlib.suppress(OSError):
                if learn:
                    os.write(taken_w, child)
            os.close(taken_w)
            if learn_r >= 0:
                os.close(learn_r)

        for fd in fds[1:]:
            os.close(fd)
        os.setsid()
        monitor.serve(fds[0], sandbox_module, replied, prefork)
    except BaseException:  # noqa: BLE001 - a spare never unwinds into the zygote's loop
        traceback.print_exc()
    finally:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
