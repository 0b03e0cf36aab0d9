"""The transport under ``engine.client.Client``: a daemon address (``unix://`` or ``tcp://`` with
optional TLS), one connection per request, requests sent and response heads read, a 4xx/5xx
answer turned back into the daemon's ``EngineError`` (``{"kind": …}`` through
``errors.from_kind``; the status code when ``kind`` is absent, e.g. from a real dockerd), and
an unreachable daemon into ``Unavailable``. Endpoints live in ``engine.client``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import IO, Any

from engine import errors
from engine.client_http import (
    Headers,
    Sock,
    body_reader,
    buffered_reader,
    connect_tcp,
    connect_unix,
    read_head,
    send_request,
)
from engine.client_json import dumps, loads
from engine.client_streams import CHUNK, Hijacked, Response

API_PREFIX = "/v1.47"
STATUS_KIND = {400: "invalid", 403: "forbidden", 404: "not_found", 409: "conflict", 501: "not_implemented",
               503: "unavailable"}
# characters that URL quoting leaves alone: such ids, names and query values skip urllib.parse
# (its import costs the CLI ~2 ms: it pulls in ipaddress)
SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


class TLSConfig:
    """TLS settings for ``tcp://`` (a plain class: ``dataclasses`` costs the CLI ~1.5 ms)."""

    def __init__(self, cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 verify: bool = True) -> None:
        self.cacert, self.cert, self.key, self.verify = cacert, cert, key, verify

    def context(self) -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=self.cacert)
        if self.cert and self.key:
            ctx.load_cert_chain(self.cert, self.key)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _error_from(status: int, body: bytes) -> errors.EngineError:
    try:
        doc = loads(body)
        message, kind = str(doc.get("message", "")), doc.get("kind")
    except (ValueError, AttributeError):
        message, kind = body.decode("utf-8", "replace").strip(), None
    kind = kind or STATUS_KIND.get(status, "internal")
    return errors.from_kind(kind, message or f"HTTP {status}")


class Transport:
    """Requests to one daemon.

    Args:
        host: ``unix:///path`` or ``tcp://host:port`` (default: the local daemon's socket).
        tls: TLS settings for ``tcp://`` (None = plain TCP, only for a daemon forced to allow it).
        timeout: socket timeout in seconds for non-streaming calls.

    Raises InvalidArgument for an address that is neither.
    """

    def __init__(self, host: str | None = None, tls: TLSConfig | None = None, timeout: float | None = 60.0) -> None:
        if host is None:
            from engine.api.paths import default_host

            host = default_host()
        self.host, self.tls, self.timeout = host, tls, timeout
        if host.startswith("unix://"):
            self._unix: str | None = host[len("unix://"):]
            self._host_header = "localhost"
        elif host.startswith(("tcp://", "https://", "http://")):
            self._unix = None
            import urllib.parse

            parsed = urllib.parse.urlsplit(host if "://" in host else "tcp://" + host)
            self._hostname, self._port = parsed.hostname or "localhost", parsed.port or (2376 if tls else 2375)
            name = f"[{self._hostname}]" if ":" in self._hostname else self._hostname  # IPv6
            self._host_header = f"{name}:{self._port}"
        else:
            raise errors.InvalidArgument(f"invalid daemon address {host!r}: use unix:///path or tcp://host:port")

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> Sock:
        if self._unix is not None:
            return connect_unix(self._unix, timeout)
        return connect_tcp(self._hostname, self._port, timeout, self.tls.context() if self.tls else None)

    def _unavailable(self, e: OSError) -> errors.Unavailable:
        return errors.Unavailable(f"Cannot connect to the wharfie daemon at {self.host}. Is wharfied running? ({e})")

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        url = API_PREFIX + path
        q = {k: ("1" if v is True else "0" if v is False else v) for k, v in (query or {}).items() if v is not None}
        if not q:
            return url
        if all(isinstance(v, (str, int)) and SAFE.fullmatch(str(v)) for v in q.values()):
            return url + "?" + "&".join(f"{k}={v}" for k, v in q.items())  # what urlencode would give
        import urllib.parse

        return url + "?" + urllib.parse.urlencode(q, doseq=True)

    def _send(self, method: str, url: str, headers: dict[str, str], body: Any,
              timeout: float | None) -> tuple[Sock, io.BufferedReader]:
        """Connect and send one request. Raises Unavailable."""
        try:
            sock = self._connect(timeout)
        except OSError as e:
            raise self._unavailable(e) from None
        try:
            send_request(sock, method, url, self._host_header, headers, body)
        except OSError as e:
            sock.close()
            raise self._unavailable(e) from None
        return sock, buffered_reader(sock)

    def _receive(self, sock: Sock, reader: io.BufferedReader, method: str) -> tuple[int, Headers]:
        """Read the response head of a request :meth:`_send` sent (closing the connection on any
        failure). Raises Unavailable and the daemon's EngineError for a 4xx/5xx answer."""
        try:
            status, hdrs = read_head(reader)
            if status >= 400:
                raise _error_from(status, body_reader(reader, method, status, hdrs).read())
        except OSError as e:
            reader.close()
            sock.close()
            raise self._unavailable(e) from None
        except BaseException:
            reader.close()
            sock.close()
            raise
        return status, hdrs

    def _exchange(self, method: str, url: str, headers: dict[str, str], body: Any,
                  timeout: float | None) -> tuple[Sock, io.BufferedReader, int, Headers]:
        """Connect, send, read the response head (errors as :meth:`_receive`)."""
        sock, reader = self._send(method, url, headers, body, timeout)
        return (sock, reader, *self._receive(sock, reader, method))

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, stream: bool = False) -> Response:
        """Send one request; raise the matching EngineError for a 4xx/5xx answer (Unavailable
        when the daemon cannot be reached or does not answer HTTP)."""
        hdrs = dict(headers or {})
        data: Any = None
        if body is not None and not hasattr(body, "read"):
            data = dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = _chunks(body)
            hdrs.setdefault("Content-Type", "application/x-tar")
        sock, reader, status, hdrs_in = self._exchange(method, self._url(path, query), hdrs, data,
                                                       None if stream else self.timeout)
        return Response(sock, status, hdrs_in, body_reader(reader, method, status, hdrs_in))

    def json(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        return self.request(method, path, query, body).json()

    def hijack(self, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Hijacked:
        """POST with ``Upgrade: tcp`` and return the raw connection after ``101 UPGRADED``."""
        sock, reader = self._send_hijack(path, query, body)
        _, hdrs = self._receive(sock, reader, "POST")
        return Hijacked(sock, reader, hdrs.get("content-type", ""))

    def _send_hijack(self, path: str, query: dict[str, Any] | None, body: Any) -> tuple[Sock, io.BufferedReader]:
        data = dumps(body).encode() if body is not None else b""
        return self._send("POST", self._url(path, query), {"Connection": "Upgrade", "Upgrade": "tcp",
                                                           "Content-Type": "application/json"}, data, None)



def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while data := fh.read(CHUNK):
        yield data
