"""The monitor's relay: the container's output to the log and to attached clients, the
clients' input to the container's stdin (see ``backends.linux.monitor`` for the whole monitor).

:class:`Relay` is the half of :class:`~backends.linux.monitor.Monitor` that the poll loop calls
when an fd is ready: accepting clients on the attach socket (each gets the ``HELLO`` frame),
reading output (logged first, then framed to every client; a client lagging more than
``CLIENT_BUF_MAX`` is dropped), client frames (stdin data, close stdin, resize) and writing
stdin without blocking. The attach frame format is in ``backends.linux.monitor_wire``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import socket
import struct
import termios

from backends.linux.monitor_wire import CLOSE_STDIN, FRAME, HELLO, OUT, RESIZE, STDIN, frame
from engine.containers.logfile import LogWriter

CLIENT_BUF_MAX = 8 << 20  # a client that lags more than this is dropped


class _Client:
    __slots__ = ("rbuf", "sock", "wbuf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.rbuf, self.wbuf = sock, bytearray(), bytearray()


class Relay:
    """Output, input and attached clients of one monitored process (the state is set up by
    the monitor's ``start``; these methods only move bytes)."""

    tty: bool
    out: dict[int, bytes]  # readable fd -> frame kind
    stdin_fd: int | None
    stdin_buf: bytearray
    stdin_closing: bool
    master: int | None
    log: LogWriter | None
    listener: socket.socket | None
    clients: dict[int, _Client]

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        c = _Client(sock)
        hello: dict[str, object] = {"tty": self.tty,
                                    "stdin": self.stdin_fd is not None and not self.stdin_closing}
        if self.log is not None:  # where the log stands: what follows HELLO is logged after it
            hello["log"] = self.log.position()
        c.wbuf += frame(HELLO, json.dumps(hello).encode())
        self.clients[sock.fileno()] = c

    def _drop(self, fd: int) -> None:
        c = self.clients.pop(fd)
        c.sock.close()

    def _client_io(self, fd: int, ev: int) -> None:
        c = self.clients[fd]
        if ev & select.POLLOUT and c.wbuf:
            try:
                n = c.sock.send(c.wbuf)
                del c.wbuf[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._drop(fd)
                return
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(fd)
                return
            c.rbuf += data
            while len(c.rbuf) >= FRAME.size:
                kind, n = FRAME.unpack_from(c.rbuf)
                if len(c.rbuf) < FRAME.size + n:
                    break
                payload = bytes(c.rbuf[FRAME.size:FRAME.size + n])
                del c.rbuf[:FRAME.size + n]
                self._command(kind, payload)

    def _command(self, kind: bytes, payload: bytes) -> None:
        if kind == STDIN and self.stdin_fd is not None and not self.stdin_closing:
            self.stdin_buf += payload
            self._write_stdin()
        elif kind == CLOSE_STDIN and self.stdin_fd is not None and not self.stdin_closing:
            if self.tty:
                self.stdin_buf += b"\x04"  # VEOF: the reader of the terminal sees end of file
            self.stdin_closing = True
            self._write_stdin()
        elif kind == RESIZE and self.master is not None and len(payload) == 4:
            rows, cols = struct.unpack(">HH", payload)
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _write_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            return
        try:
            while self.stdin_buf:
                n = os.write(fd, self.stdin_buf)
                del self.stdin_buf[:n]
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the process closed its stdin; EIO: the tty is gone
            self.stdin_buf.clear()
            self.stdin_closing = True
        if self.stdin_closing and not self.stdin_buf:
            self.stdin_fd = None
            if fd != self.master:
                os.close(fd)

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO from a pty master once every slave is closed
            data = b""
        if not data:
            del self.out[fd]
            if fd != self.master:
                os.close(fd)
            return
        kind = self.out[fd]
        if self.log is not None:
            self.log.write(1 if kind == OUT else 2, data)
        chunk = frame(kind, data)
        for cfd, c in list(self.clients.items()):
            c.wbuf += chunk
            if len(c.wbuf) > CLIENT_BUF_MAX:
                self._drop(cfd)
