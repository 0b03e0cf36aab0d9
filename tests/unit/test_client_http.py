"""The CLI's HTTP/1.1 subset (engine.client_http) against canned server bytes: framing by
Content-Length, chunked (with extensions and trailers) and end of connection; HEAD/204; bad or
cut responses raise ConnectionError; requests are framed as RFC 9112 says."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from engine.client_http import body_reader, read_head, send_request


def _respond(raw: bytes, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(raw)
        b.shutdown(socket.SHUT_WR)
        with a.makefile("rb") as reader:
            status, headers = read_head(reader)
            with body_reader(reader, method, status, headers) as body:
                return status, dict(headers), body.read()


def test_content_length_stops_at_the_length() -> None:
    status, headers, body = _respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA")
    assert (status, body) == (200, b"hello")
    assert headers["x-a"] == "1"


def test_chunked_with_extensions_and_trailers() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    assert _respond(raw)[2] == b"hello world"


def test_close_delimited_body_and_head_and_204() -> None:
    assert _respond(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")[2] == b"until the end"
    assert _respond(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")[2] == b""
    assert _respond(b"HTTP/1.1 204 No Content\r\n\r\n")[2] == b""


def test_headers_are_case_insensitive_and_repeated_ones_join() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nVary: a\r\nvary: b\r\n\r\n")
        with a.makefile("rb") as reader:
            _, headers = read_head(reader)
    assert headers["content-type"] == headers["Content-Type"] == headers.get("CONTENT-TYPE") == "text/plain"
    assert "Content-Type" in headers and headers["Vary"] == "a, b"


@pytest.mark.parametrize("raw", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 abc\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"])
def test_not_http_is_a_connection_error(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        _respond(raw)


@pytest.mark.parametrize("raw", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_a_cut_or_garbled_body_is_a_connection_error(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        _respond(raw)


def _request_bytes(body: bytes | Iterator[bytes] | None, method: str = "POST") -> bytes:
    a, b = socket.socketpair()
    got = bytearray()

    def drain() -> None:
        while data := b.recv(65536):
            got.extend(data)

    t = threading.Thread(target=drain)
    t.start()
    with a:
        send_request(a, method, "/v1.47/x?y=1", "localhost", {"Content-Type": "application/json"}, body)
        a.shutdown(socket.SHUT_WR)
    t.join()
    b.close()
    return bytes(got)


def test_request_framing() -> None:
    assert _request_bytes(b'{"a": 1}') == (b"POST /v1.47/x?y=1 HTTP/1.1\r\nHost: localhost\r\n"
                                           b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n"
                                           b'{"a": 1}')
    chunked = _request_bytes(iter([b"abc", b"", b"de"]))
    assert chunked.endswith(b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert b"Content-Length: 0\r\n" in _request_bytes(None)
    assert b"Content-Length" not in _request_bytes(None, "GET")
    big = b"x" * 100_000
    assert _request_bytes(big).endswith(b"Content-Length: 100000\r\n\r\n" + big)
