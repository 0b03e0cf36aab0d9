"""File descriptions of simulated processes: pipes, files in a sandbox view, /dev/null, output
channels. Each process holds a table ``fd -> Stream``; a child gets ``dup()``s, and every stream
of a process is ``close()``d when it exits, which is how pipe readers see EOF and writers EPIPE.
"""

from __future__ import annotations

import asyncio
import errno
import random
from typing import Any, Protocol

PIPE_CAPACITY = 64 * 1024


class Stream:
    """Base: a file description. Reads return b"" at EOF; writes may raise ``OSError``."""

    readable = False
    writable = False

    def dup(self) -> Stream:
        return self

    def close(self) -> None:
        """Drop this reference (idempotent per reference)."""

    async def write(self, data: bytes) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    async def read(self, n: int = 65536) -> bytes:
        raise OSError(errno.EBADF, "Bad file descriptor")

    async def readline(self) -> bytes:
        """Up to and including the next newline (less at EOF; b"" at EOF)."""
        out = bytearray()
        while not out.endswith(b"\n"):
            chunk = await self.read(1)
            if not chunk:
                break
            out += chunk
        return bytes(out)


class NullStream(Stream):
    """/dev/null: reads EOF, swallows writes."""

    readable = writable = True

    async def write(self, data: bytes) -> None:
        return None

    async def read(self, n: int = 65536) -> bytes:
        return b""

    async def readline(self) -> bytes:
        return b""


class ZeroStream(NullStream):
    """/dev/zero (or /dev/urandom with ``random=True``): endless reads."""

    def __init__(self, rnd: random.Random | None = None) -> None:
        self.rnd = rnd

    async def read(self, n: int = 65536) -> bytes:
        if self.rnd is not None:
            return self.rnd.getrandbits(8 * n).to_bytes(n, "little")
        return bytes(n)

    async def readline(self) -> bytes:
        return await self.read(64)


class FsLike(Protocol):
    def write(self, path: str, data: bytes, append: bool = False, mode: int = 0o644) -> Any: ...
    def read(self, path: str) -> bytes: ...


class FileOut(Stream):
    """A regular file opened for writing in a sandbox view (already truncated/created)."""

    writable = True

    def __init__(self, view: FsLike, path: str) -> None:
        self.view = view
        self.path = path

    async def write(self, data: bytes) -> None:
        self.view.write(self.path, data, append=True)


class BytesIn(Stream):
    """A file opened for reading: its content at open time."""

    readable = True

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    async def read(self, n: int = 65536) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    async def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk


class Pipe:
    """A pipe with reference-counted ends: EOF when no writer is left, EPIPE with no reader."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.readers = 0
        self.writers = 0
        self._waiters: list[asyncio.Future[None]] = []

    def reader(self) -> PipeEnd:
        return PipeEnd(self, False)

    def writer(self) -> PipeEnd:
        return PipeEnd(self, True)

    def wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut


class PipeEnd(Stream):
    def __init__(self, pipe: Pipe, write_end: bool) -> None:
        self.pipe = pipe
        self.write_end = write_end
        self.readable = not write_end
        self.writable = write_end
        self.closed = False
        if write_end:
            pipe.writers += 1
        else:
            pipe.readers += 1

    def dup(self) -> Stream:
        return PipeEnd(self.pipe, self.write_end)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.write_end:
            self.pipe.writers -= 1
        else:
            self.pipe.readers -= 1
        self.pipe.wake()

    async def write(self, data: bytes) -> None:
        if not self.write_end or self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        pipe = self.pipe
        while True:
            if pipe.readers <= 0:
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")
            if len(pipe.buf) < PIPE_CAPACITY:
                break
            await pipe.wait()
        pipe.buf += data
        pipe.wake()

    async def read(self, n: int = 65536) -> bytes:
        if self.write_end or self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        pipe = self.pipe
        while not pipe.buf and pipe.writers > 0:
            await pipe.wait()
        chunk = bytes(pipe.buf[:n])
        del pipe.buf[:n]
        pipe.wake()
        return chunk

    async def readline(self) -> bytes:
        if self.write_end or self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        pipe = self.pipe
        while b"\n" not in pipe.buf and pipe.writers > 0 and len(pipe.buf) < PIPE_CAPACITY:
            await pipe.wait()
        i = pipe.buf.find(b"\n")
        end = len(pipe.buf) if i < 0 else i + 1
        chunk = bytes(pipe.buf[:end])
        del pipe.buf[:end]
        pipe.wake()
        return chunk


class Channel(Protocol):
    def emit(self, fd: int, data: bytes) -> None: ...


class ChannelOut(Stream):
    """stdout/stderr of a spawned or exec'd process: to its log and attached readers."""

    writable = True

    def __init__(self, channel: Channel, fd: int) -> None:
        self.channel = channel
        self.fd = fd

    async def write(self, data: bytes) -> None:
        self.channel.emit(self.fd, data)
