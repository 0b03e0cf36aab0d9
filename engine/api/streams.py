"""Streaming plumbing: Docker's 8-byte multiplexed framing, NDJSON responses, and the hijacked
connection (``101 UPGRADED``) used by attach and exec start.

After the 101 the connection is a raw byte pipe both ways. aiohttp buffers what the client
sends after the upgrade request; :class:`Hijack` takes the transport over with its own protocol,
so a client that half-closes (``CloseWrite`` after its stdin ends, as ``docker run -i`` does)
still gets the rest of the output.

Blocking archive work (save, load, export) runs on worker threads: :class:`ThreadWriter` and
:func:`stream_from_thread` carry what a worker writes out as the response body, and
:class:`ThreadReader` feeds a request body to a worker, both through small bounded queues, so
memory stays flat however large the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import struct
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import IO, Any

from aiohttp import web

from engine.errors import InvalidArgument

log = logging.getLogger("wharfied.api")

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
HIGH_WATER = 1 << 20


def frame(fd: int, data: bytes) -> bytes:
    """One multiplexed frame: stream type (0 stdin, 1 stdout, 2 stderr), 3 zero bytes, length."""
    return struct.pack(">BxxxL", fd, len(data)) + data


async def ndjson_response(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    return resp


async def send_json_line(resp: web.StreamResponse, doc: Any) -> None:
    await resp.write((json.dumps(doc) + "\n").encode())


class _Proto(asyncio.Protocol):
    def __init__(self, inbox: asyncio.Queue[bytes | None], transport: asyncio.Transport) -> None:
        self.inbox = inbox
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()

    def data_received(self, data: bytes) -> None:
        self.inbox.put_nowait(data)

    def eof_received(self) -> bool:
        self.inbox.put_nowait(None)
        return True  # keep our half open: output continues after the client's CloseWrite

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put_nowait(None)
        self._drained.set()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()


class Hijack:
    """The raw connection after ``101 UPGRADED`` (or a plain 200 stream when not upgraded)."""

    def __init__(self, request: web.Request, transport: asyncio.Transport, proto: _Proto | None,
                 inbox: asyncio.Queue[bytes | None], response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.transport = transport
        self.proto = proto
        self.inbox = inbox

    @classmethod
    async def start(cls, request: web.Request, content_type: str) -> Hijack:
        upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
        headers = {"Content-Type": content_type}
        if upgrade:
            headers.update({"Connection": "Upgrade", "Upgrade": "tcp"})
            resp = web.StreamResponse(status=101, reason="UPGRADED", headers=headers)
        else:
            resp = web.StreamResponse(status=200, headers=headers)
        resp.force_close()  # the connection ends with the session: aiohttp must not wait for another request
        await resp.prepare(request)
        transport = request.transport
        assert transport is not None
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        proto = None
        if upgrade:
            handler = request.protocol
            tail = getattr(handler, "_message_tail", b"")
            proto = _Proto(inbox, transport)
            transport.set_protocol(proto)
            if tail:
                inbox.put_nowait(tail)
                handler._message_tail = b""
            if not transport.is_reading():
                transport.resume_reading()
        else:
            inbox.put_nowait(None)
        return cls(request, transport, proto, inbox, resp)

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    async def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("client went away")
        if self.proto is None:
            await self.response.write(data)
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > HIGH_WATER:
            await self.proto._drained.wait()

    async def read(self) -> bytes | None:
        """Next chunk of client input; None at EOF (half-close or disconnect)."""
        return await self.inbox.get()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


async def pump_input(hj: Hijack, write: Callable[[bytes], Awaitable[None]],
                     end: Callable[[], Awaitable[None]]) -> None:
    """Forward client input until EOF, then call ``end``."""
    while True:
        data = await hj.read()
        if data is None:
            break
        await write(data)
    await end()


# -- bridging blocking worker threads and the event loop (image save/load, export, cp) ----------

class ThreadWriter:
    """A blocking, file-like writer for a worker thread; the event loop streams what it gets.

    Bounded: at most ``max_chunks`` pieces of about ``chunk`` bytes wait in between, then
    ``write`` blocks until the loop catches up. After :meth:`abort` (the client went away) a
    ``write`` raises ``BrokenPipeError``, which ends the worker.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, chunk: int = 256 * 1024,
                 max_chunks: int = 16) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(max_chunks)
        self._buf = bytearray()
        self._chunk = chunk
        self._aborted = False

    # worker-thread side
    def write(self, data: bytes) -> int:
        if self._aborted:
            raise BrokenPipeError("the client went away")
        self._buf += data
        if len(self._buf) >= self._chunk:
            piece = bytes(self._buf)
            self._buf.clear()
            while not self._room.acquire(timeout=0.5):
                if self._aborted:
                    raise BrokenPipeError("the client went away")
            self._loop.call_soon_threadsafe(self._queue.put_nowait, piece)
        return len(data)

    def flush(self) -> None:
        pass

    # event-loop side
    def finish(self, error: BaseException | None = None) -> None:
        """The producer is done (``error``: it failed): queue the tail and the end marker."""
        if self._buf:
            self._queue.put_nowait(bytes(self._buf))
            self._buf.clear()
        self._queue.put_nowait(error)

    async def get(self) -> bytes | BaseException | None:
        item = await self._queue.get()
        if isinstance(item, bytes):
            self._room.release()
        return item

    def abort(self) -> None:
        self._aborted = True


async def stream_from_thread(request: web.Request, produce: Callable[[ThreadWriter], Awaitable[Any]],
                             content_type: str = "application/x-tar",
                             headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Serve what ``produce`` writes (from a worker thread) to its ThreadWriter as the body.

    Headers go out with the first bytes: an error raised before any output is an ordinary error
    response (404, 400 … through the middleware). A failure after that cannot be told in a tar
    stream; the connection is cut before the final chunk, so the client sees a truncated body.
    """
    w = ThreadWriter(asyncio.get_running_loop())

    async def run() -> None:
        try:
            await produce(w)
        except BaseException as e:
            w.finish(e)
            raise
        w.finish()

    task = asyncio.ensure_future(run())
    try:
        item = await w.get()
        if isinstance(item, BaseException):
            raise item
        resp = web.StreamResponse(headers={"Content-Type": content_type, **(headers or {})})
        await resp.prepare(request)
        try:
            while isinstance(item, bytes):
                await resp.write(item)
                item = await w.get()
            if item is None:
                await resp.write_eof()
                return resp
        except ConnectionResetError:  # the client left; the worker stops at its next write
            return resp
        log.warning("%s %s failed while streaming: %s", request.method, request.path, item)
        resp.force_close()
        if request.transport is not None:
            request.transport.abort()
        return resp
    finally:
        w.abort()
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


class ThreadReader:
    """A blocking reader for a worker thread over a request body the event loop feeds in.

    Bounded: the loop stops reading the socket while ``max_chunks`` pieces wait. :meth:`close`
    makes a pending or later ``read`` raise, so a worker never waits for a body that will not
    come.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int = 32) -> None:
        self._loop = loop
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue()
        self._room = asyncio.Semaphore(max_chunks)
        self._cur = memoryview(b"")
        self._eof = False
        self.received = 0

    # event-loop side
    async def feed(self, content: Any) -> None:
        """Copy the request body (an aiohttp ``StreamReader``) in; the end marker at EOF."""
        try:
            while chunk := await content.readany():
                await self._room.acquire()
                self.received += len(chunk)
                self._queue.put(chunk)
        except Exception as e:  # noqa: BLE001 - any payload error (reset, bad chunking) ends the body
            self._queue.put(e)
            return
        self._queue.put(None)

    def close(self) -> None:
        self._queue.put(ConnectionResetError("the request was abandoned"))

    # worker-thread side
    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while data := self.read(1 << 20):
                parts.append(data)
            return b"".join(parts)
        if not self._cur:
            if self._eof:
                return b""
            item = self._queue.get()
            if item is None:
                self._eof = True
                return b""
            if isinstance(item, BaseException):
                self._eof = True
                raise InvalidArgument(f"reading the request body: {item or type(item).__name__}")
            self._loop.call_soon_threadsafe(self._room.release)
            self._cur = memoryview(item)
        out = bytes(self._cur[:n])
        self._cur = self._cur[n:]
        return out

    def readable(self) -> bool:
        return True


async def spool_body(request: web.Request, directory: str | None) -> IO[bytes]:
    """The request body in an anonymous temp file (position 0), written off the event loop in
    1 MiB batches. The caller closes it."""
    loop = asyncio.get_running_loop()
    fh = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - returned open to the caller
    try:
        batch = bytearray()
        while chunk := await request.content.readany():
            batch += chunk
            if len(batch) >= 1 << 20:
                await loop.run_in_executor(None, fh.write, bytes(batch))
                batch.clear()
        if batch:
            await loop.run_in_executor(None, fh.write, bytes(batch))
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh
