"""What a request to the API hands back: a streaming :class:`Response`, or for Docker's hijacked
streams (attach, exec start) the :class:`Hijacked` connection after ``101 UPGRADED``, and
:func:`demux` for Docker's 8-byte multiplexed framing. Used by ``engine.client``; each owns its
connection and closes it (``close()`` or ``with``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any, Self

from engine.client_http import SHUT_WR, Headers, Sock
from engine.client_json import loads

CHUNK = 1 << 16


class Response:
    """A streaming HTTP response; close it (or use ``with``). ``raw`` is the body as a buffered
    stream (``read``, ``read1``, ``readline``, ``peek``); ``sock`` the connection."""

    def __init__(self, sock: Sock, status: int, headers: Headers, raw: io.BufferedReader) -> None:
        self.sock, self.status, self.headers, self.raw = sock, status, headers, raw

    def read(self) -> bytes:
        try:
            return self.raw.read()
        finally:
            self.close()

    def json(self) -> Any:
        data = self.read()
        return loads(data) if data.strip() else None

    def lines(self) -> Iterator[Any]:
        """NDJSON documents as they arrive."""
        try:
            while line := self.raw.readline():
                if line.strip():
                    yield loads(line)
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        try:
            while data := self.raw.read1(CHUNK):
                yield data
        finally:
            self.close()

    def close(self) -> None:
        self.raw.close()
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hijacked:
    """The raw connection after ``101 UPGRADED``: ``recv`` output, ``send`` input."""

    def __init__(self, sock: Sock, reader: IO[bytes], content_type: str) -> None:
        self.sock, self.reader = sock, reader
        self.multiplexed = "multiplexed" in content_type

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        try:
            return self.reader.read1(CHUNK)  # type: ignore[attr-defined,no-any-return]
        except (ConnectionResetError, OSError):
            return b""

    def close_write(self) -> None:
        """Half-close: the process reads EOF on stdin, output keeps coming."""
        try:
            self.sock.shutdown(SHUT_WR)
        except (OSError, NotImplementedError):
            pass

    def output(self) -> Iterator[tuple[int, bytes]]:
        """(stream, data) until the stream ends; stream 1 for a raw (tty) stream."""
        if not self.multiplexed:
            while data := self.recv():
                yield 1, data
            return
        yield from demux(self.reader)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def demux(reader: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split Docker's multiplexed framing: ``[stream, 0, 0, 0, size(4, big-endian)]`` + payload."""
    while True:
        head = _read_exact(reader, 8)
        if len(head) < 8:
            return
        fd, size = head[0], int.from_bytes(head[4:8], "big")  # no `struct`: one import less per CLI start
        yield fd, _read_exact(reader, size)


def _read_exact(reader: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            data = reader.read(n - len(buf))
        except (ConnectionResetError, OSError):
            break
        if not data:
            break
        buf.extend(data)
    return bytes(buf)


def closing(it: Iterator[tuple[int, bytes]], resp: Response) -> Iterator[tuple[int, bytes]]:
    """``it`` (read from ``resp``), closing ``resp`` when it ends or is dropped."""
    try:
        yield from it
    finally:
        resp.close()
