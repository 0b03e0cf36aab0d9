"""The daemon's end of a monitor's attach socket: an ``engine.kernel.Stdio`` over asyncio.

The frame format is the monitor's (``backends.linux.monitor``). The connection closes itself
when the monitor hangs up (``eof_received`` returns False), so an attachment the caller forgets
to close does not outlive its process.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import os
import struct
from collections.abc import Callable
from typing import Any

from backends.linux.monitor_wire import (CLOSE_STDIN, ERR, EXIT, FRAME, HELLO, OUT, RESIZE, STDIN, frame,
                                    sock_path)

_HIGH_WATER = 1 << 20


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.frames: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.queued = 0
        self.closed = False
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= FRAME.size:
            kind, n = FRAME.unpack_from(self.buf)
            if len(self.buf) < FRAME.size + n:
                break
            self.frames.append((kind, bytes(self.buf[FRAME.size:FRAME.size + n])))
            self.queued += n
            del self.buf[:FRAME.size + n]
        if self.queued > _HIGH_WATER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_frame(self) -> tuple[bytes, bytes] | None:
        while not self.frames:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        kind, payload = self.frames.popleft()
        self.queued -= len(payload)
        if self.paused and self.queued < _HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return kind, payload


class MonitorStdio:
    """A live attachment to one process's stdio (see ``engine.kernel.Stdio``)."""

    def __init__(self, proto: _Protocol, hello: dict[str, Any], alive: Callable[[], bool]) -> None:
        self._p = proto
        self.tty = bool(hello.get("tty"))
        self._stdin = bool(hello.get("stdin"))
        self._alive = alive
        self._done = False
        self.exit_status: dict[str, int] | None = None
        pos = hello.get("log")  # see engine.kernel.Stdio.log_position
        self.log_position = (int(pos[0]), int(pos[1])) if isinstance(pos, list) and len(pos) == 2 else None

    async def read(self) -> tuple[int, bytes] | None:
        while not self._done:
            item = await self._p.next_frame()
            if item is None:
                self._done = True
                break
            kind, payload = item
            if kind == OUT:
                return 1, payload
            if kind == ERR:
                return 2, payload
            if kind == EXIT:
                self.exit_status = json.loads(payload)
                self._done = True
        return None

    def _send(self, data: bytes) -> None:
        t = self._p.transport
        if t is None or t.is_closing() or self._p.closed:
            raise BrokenPipeError(errno.EPIPE, "the process has exited")
        t.write(data)

    async def write(self, data: bytes) -> None:
        if not self._stdin or self._done or not self._alive():
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        self._send(frame(STDIN, data))

    async def close_stdin(self) -> None:
        if not self._stdin:
            return
        self._stdin = False
        if not self._done and self._alive():
            try:
                self._send(frame(CLOSE_STDIN))
            except BrokenPipeError:
                pass

    async def resize(self, rows: int, cols: int) -> None:
        if not self.tty:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        if not 0 < rows < 65536 or not 0 < cols < 65536:
            raise OSError(errno.EINVAL, f"invalid tty size {rows}x{cols}")
        try:
            self._send(frame(RESIZE, struct.pack(">HH", rows, cols)))
        except BrokenPipeError:
            raise ProcessLookupError(errno.ESRCH, "the process has exited") from None

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()


async def connect(state_dir: str, alive: Callable[[], bool]) -> MonitorStdio:
    """Attach to the monitor serving ``state_dir``. ``ProcessLookupError`` if it is gone."""
    loop = asyncio.get_running_loop()
    try:
        dfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, "the process has exited") from None
    try:
        _, proto = await loop.create_unix_connection(_Protocol, sock_path(dfd))
    except (FileNotFoundError, ConnectionRefusedError):
        raise ProcessLookupError(errno.ESRCH, "the process has exited") from None
    finally:
        os.close(dfd)
    try:
        first = await asyncio.wait_for(proto.next_frame(), 10)
    except BaseException:
        if proto.transport is not None:
            proto.transport.close()
        raise
    if first is None or first[0] != HELLO:
        if proto.transport is not None:
            proto.transport.close()
        raise ProcessLookupError(errno.ESRCH, "the process has exited")
    return MonitorStdio(proto, json.loads(first[1]), alive)
