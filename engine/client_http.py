"""The HTTP/1.1 client side of one request on one connection, for ``engine.client``.

Why not ``http.client``: importing it costs ~19 ms per CLI start on this class of machine (it
pulls in the ``email`` package and ``ssl``), a third of the CLI's whole ``run --rm`` budget. The
client needs only a small, well-defined subset of HTTP/1.1 (RFC 9112): one request per connection
(no pipelining), a request body sized by ``Content-Length`` or sent ``chunked``, and a response
framed by ``Content-Length``, ``chunked`` transfer coding, or the end of the connection — plus
the ``101`` upgrade of Docker's hijacked streams. That subset is here, nothing else.

UNIX sockets are made with ``_socket`` (the C module ``socket`` wraps), not ``socket``: importing
``socket`` costs another ~2 ms per CLI start (it builds four ``IntEnum`` classes from the
module's constants and imports ``selectors``), and the client needs none of that; ``SocketRaw``
is the small buffered-reading adapter ``socket.makefile`` would have given. TCP (rare for a CLI
talking to a local daemon) uses ``socket.create_connection`` and ``ssl``, imported only then.

Errors: a connection that fails or a response that is not HTTP raise ``ConnectionError``
(an ``OSError``), which the caller maps to "daemon unavailable".
"""

from __future__ import annotations

import _socket
import io
import time
from collections.abc import Iterable
from typing import Any

MAX_LINE = 65536  # a status or header line longer than this is not a sane response
MAX_HEADERS = 200


class Headers(dict[str, str]):
    """Response headers, looked up case-insensitively (``h["Content-Type"]``, ``h.get(...)``)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


# a connection: a ``_socket.socket`` (UNIX), or a ``socket.socket``/``ssl.SSLSocket`` (TCP, TLS)
Sock = _socket.socket
SHUT_WR = _socket.SHUT_WR


def connect_unix(path: str, timeout: float | None) -> Sock:
    """A connected stream socket to ``path`` (close-on-exec, like every socket Python makes).

    A listener whose backlog is full (a busy daemon, many CLIs at once) makes Linux refuse a
    non-blocking connect at once with EAGAIN where TCP would wait; this waits for room instead,
    up to ``timeout`` (None: as long as it takes, like a blocking connect). Raises OSError
    (FileNotFoundError, ConnectionRefusedError, TimeoutError when the backlog stays full …)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if timeout is None:
            s.connect(path)
            return s
        deadline, delay = time.monotonic() + timeout, 0.001
        while True:
            try:
                s.connect(path)
                return s
            except BlockingIOError:
                if time.monotonic() + delay > deadline:
                    raise TimeoutError(f"connect to {path}: its backlog stayed full for {timeout:g}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
    except BaseException:
        s.close()
        raise


def connect_tcp(host: str, port: int, timeout: float | None, tls: Any = None) -> Sock:
    """A TCP connection; ``tls`` is an ``ssl.SSLContext`` (the handshake happens here)."""
    import socket

    s = socket.create_connection((host, port), timeout=timeout)
    if tls is None:
        return s
    try:
        return tls.wrap_socket(s, server_hostname=host)  # type: ignore[no-any-return]
    except OSError:
        s.close()
        raise


class SocketRaw(io.RawIOBase):
    """A connection's receiving side as a raw stream (what ``socket.makefile("rb")`` wraps):
    ``readinto`` is one ``recv_into``; the socket's timeout applies (TimeoutError). Closing it
    leaves the socket open: its owner closes that."""

    def __init__(self, sock: Sock) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)

    def fileno(self) -> int:
        return self._sock.fileno()


def buffered_reader(sock: Sock) -> io.BufferedReader:
    """A buffered reader over ``sock`` (``read``, ``read1``, ``readline``, ``peek``)."""
    return io.BufferedReader(SocketRaw(sock), 1 << 16)


def send_request(sock: Sock, method: str, url: str, host: str, headers: dict[str, str],
                 body: bytes | Iterable[bytes] | None) -> None:
    """Write one request. ``body``: bytes (sent with ``Content-Length``), an iterable of chunks
    (sent ``chunked``) or None."""
    lines = [f"{method} {url} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if isinstance(body, (bytes, bytearray)):
        lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        lines.append("Transfer-Encoding: chunked")
    elif method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is None:
        sock.sendall(head)
    elif isinstance(body, (bytes, bytearray)):
        sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            sock.sendall(body)
    else:
        sock.sendall(head)
        for chunk in body:
            if chunk:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")


def read_head(reader: io.BufferedReader) -> tuple[int, Headers]:
    """Read the status line and headers. Raises ConnectionError for anything not HTTP/1.x."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionError("the daemon closed the connection without answering")
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
    headers = Headers()
    for _ in range(MAX_HEADERS):
        h = reader.readline(MAX_LINE + 1)
        if h in (b"\r\n", b"\n", b""):
            return int(parts[1]), headers
        name, sep, value = h.decode("latin-1").partition(":")
        if not sep:
            raise ConnectionError(f"malformed response header: {h[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise ConnectionError("too many response headers")


class _BodyRaw(io.RawIOBase):
    """The response body as a raw stream: de-chunked, stopped at ``Content-Length``."""

    def __init__(self, reader: io.BufferedReader, length: int | None, chunked: bool) -> None:
        self.reader, self.left, self.chunked = reader, length, chunked
        self.chunk_left = 0
        self.done = length == 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.done or len(b) == 0:
            return 0
        want = len(b)
        if self.chunked:
            if self.chunk_left == 0 and not self._next_chunk():
                return 0
            want = min(want, self.chunk_left)
        elif self.left is not None:
            want = min(want, self.left)
        data = self.reader.read1(want)
        if not data:
            if self.left is not None or self.chunked:
                raise ConnectionError("the daemon closed the connection in the middle of a response")
            self.done = True
            return 0
        n = len(data)
        b[:n] = data
        if self.chunked:
            self.chunk_left -= n
            if self.chunk_left == 0:
                self.reader.readline(MAX_LINE)  # CRLF after the chunk
        elif self.left is not None:
            self.left -= n
            self.done = self.left == 0
        return n

    def _next_chunk(self) -> bool:
        line = self.reader.readline(MAX_LINE + 1)
        size = line.split(b";", 1)[0].strip()
        try:
            self.chunk_left = int(size, 16)
        except ValueError:
            if not line:  # EOF where a chunk was due: the server went away
                raise ConnectionError("the daemon closed the connection in the middle of a response") from None
            raise ConnectionError(f"bad chunk size {line[:40]!r}") from None
        if self.chunk_left == 0:
            while self.reader.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self.done = True
            return False
        return True


def body_reader(reader: io.BufferedReader, method: str, status: int, headers: Headers) -> io.BufferedReader:
    """The response body as a buffered stream (``read``, ``read1``, ``readline``, ``peek``)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        length: int | None = 0
        chunked = False
    else:
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        cl = headers.get("content-length")
        length = int(cl) if cl is not None and cl.strip().isdigit() and not chunked else None
    return io.BufferedReader(_BodyRaw(reader, length, chunked), 1 << 16)
