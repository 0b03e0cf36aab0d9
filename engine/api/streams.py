"""Streaming plumbing: Docker's 8-byte multiplexed framing, NDJSON responses, and the hijacked
connection (``101 UPGRADED``) used by attach and exec start.

After the 101 the connection is a raw byte pipe both ways. aiohttp buffers what the client
sends after the upgrade request; :class:`Hijack` takes the transport over with its own protocol,
so a client that half-closes (``CloseWrite`` after its stdin ends, as ``docker run -i`` does)
still gets the rest of the output.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

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
