"""Hostile and broken input gets a clear 4xx with a JSON message, never a 500, and the daemon
keeps serving (the module's daemon fixture also fails on any traceback in its log)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.api.daemon import Daemon

BIG = 3 * 1024 * 1024


def connect(daemon: Daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(daemon.socket)
    return s


def http(daemon: Daemon, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, object] | list[object] | None]:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with connect(daemon) as s:
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    if b"transfer-encoding: chunked" in data.split(b"\r\n\r\n", 1)[0].lower():
        payload = _unchunk(payload)
    try:
        return status, json.loads(payload) if payload.strip() else None
    except ValueError:
        return status, None


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def assert_alive(daemon: Daemon) -> None:
    assert http(daemon, "GET", "/_ping")[0] == 200


@pytest.mark.parametrize("body", [
    b"{not json", b"[1, 2]", b'"a string"', b"", b'{"Image": 5}', b'{"Image": "busybox", "Cmd": 5}',
    b'{"Image": "busybox", "Cmd": [1, 2]}', b'{"Image": "busybox", "Env": "A=1"}',
    b'{"Image": "busybox", "HostConfig": {"Memory": "lots"}}', b'{"Image": "busybox", "HostConfig": []}',
    b'{"Image": "busybox", "Labels": {"a": 1}}', b'{"Image": "busybox", "Tty": "yes"}',
    b'{"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}',
    b'{"Image": "busybox", "StopSignal": "SIGNOPE", "Cmd": ["true"]}', b"[" * 100000 + b"]" * 100000,
    b'{"Image": "INVALID::REF"}', b'{"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "syslog"}}}',
])
def test_bad_create_bodies_are_400(daemon: Daemon, body: bytes) -> None:
    status, doc = http(daemon, "POST", "/v1.47/containers/create", body)
    assert status == 400, (status, doc)
    assert isinstance(doc, dict) and doc["message"] and doc["kind"] == "invalid"


@pytest.mark.parametrize("method,path", [
    ("GET", "/containers/nope/json"), ("POST", "/containers/nope/start"), ("POST", "/containers/nope/stop"),
    ("POST", "/containers/nope/kill"), ("DELETE", "/containers/nope"), ("GET", "/containers/nope/logs?stdout=1"),
    ("POST", "/containers/nope/wait"), ("POST", "/containers/nope/attach?stream=1&stdout=1"),
    ("GET", "/exec/nope/json"), ("GET", "/images/nope:1/json"), ("DELETE", "/images/nope:1"),
    ("POST", "/images/nope:1/tag?repo=x"), ("GET", "/containers/nope/top"), ("GET", "/containers/nope/stats"),
])
def test_unknown_ids_are_404(daemon: Daemon, method: str, path: str) -> None:
    status, doc = http(daemon, method, "/v1.47" + path)
    assert status == 404, (status, doc)
    assert isinstance(doc, dict) and doc["kind"] == "not_found"


@pytest.mark.parametrize("method,path", [
    ("POST", "/containers/create?name=bad%20name!"), ("GET", "/containers/json?all=maybe"),
    ("GET", "/containers/json?filters=notjson"), ("GET", "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D"),
    ("GET", "/containers/json?limit=many"), ("POST", "/images/busybox/tag?repo=UPPER%3A%3Abad"),
    ("GET", "/events?since=yesterday-ish"), ("POST", "/images/create"),
    ("GET", "/images/json?filters=%7B%22dangling%22%3A%5B%22perhaps%22%5D%7D"),
])
def test_bad_parameters_are_400(daemon: Daemon, method: str, path: str) -> None:
    body = b'{"Image": "busybox", "Cmd": ["true"]}' if "create?" in path else None
    status, doc = http(daemon, method, "/v1.47" + path, body)
    assert status == 400, (status, doc)
    assert isinstance(doc, dict) and doc["message"]


def test_bad_values_on_a_real_container(daemon: Daemon) -> None:
    status, doc = http(daemon, "POST", "/containers/create?name=victim", b'{"Image": "busybox", "Cmd": ["sleep", "30"]}')
    assert status == 201 and isinstance(doc, dict)
    try:
        assert http(daemon, "POST", "/containers/victim/start")[0] == 204
        assert http(daemon, "POST", "/containers/victim/start")[0] == 304
        assert http(daemon, "POST", "/containers/victim/kill?signal=SIGBOGUS")[0] == 400
        assert http(daemon, "POST", "/containers/victim/stop?t=soon")[0] == 400
        assert http(daemon, "POST", "/containers/victim/wait?condition=whenever")[0] == 400
        assert http(daemon, "POST", "/containers/victim/rename?name=no%20way")[0] == 400
        assert http(daemon, "POST", "/containers/victim/update", b'{"Memory": "x"}')[0] == 400
        assert http(daemon, "GET", "/containers/victim/logs")[0] == 400  # no stream chosen
        assert http(daemon, "DELETE", "/containers/victim")[0] == 409
        assert http(daemon, "POST", "/containers/victim/exec", b'{"Cmd": []}')[0] == 400
    finally:
        assert http(daemon, "DELETE", "/containers/victim?force=1")[0] == 204


def test_oversized_body_is_413(daemon: Daemon) -> None:
    body = b'{"Image": "busybox", "Labels": {"x": "' + b"a" * BIG + b'"}}'
    status, doc = http(daemon, "POST", "/containers/create", body)
    assert status == 413 and isinstance(doc, dict) and "too large" in str(doc["message"])
    assert_alive(daemon)


def test_import_of_garbage_is_400(daemon: Daemon) -> None:
    status, doc = http(daemon, "POST", "/images/create?fromSrc=-&repo=junk", b"this is not a tarball" * 100)
    assert status == 400, (status, doc)
    assert_alive(daemon)


def test_slow_and_half_closed_connections_do_not_block_others(daemon: Daemon) -> None:
    slow = connect(daemon)
    slow.sendall(b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Ima")
    stalled = connect(daemon)
    stalled.sendall(b"GET /_pi")
    half = connect(daemon)
    half.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    half.shutdown(socket.SHUT_WR)
    garbage = connect(daemon)
    garbage.sendall(b"\x16\x03\x01 hello? this is not HTTP\r\n\r\n")
    try:
        t0 = time.monotonic()
        for _ in range(5):
            assert_alive(daemon)
        assert time.monotonic() - t0 < 5
        reply = garbage.recv(4096)
        assert reply == b"" or (reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0]), reply
        half_reply = half.recv(4096)
        assert half_reply == b"" or half_reply.startswith(b"HTTP/1.1 200"), half_reply
        slow.shutdown(socket.SHUT_WR)  # the body never completes: the daemon must drop it
        assert slow.recv(4096) in (b"",) or slow.recv(4096) == b""
    finally:
        for s in (slow, stalled, half, garbage):
            s.close()
    assert_alive(daemon)


def test_client_vanishing_mid_stream(daemon: Daemon) -> None:
    status, doc = http(daemon, "POST", "/containers/create?name=streamer",
                       b'{"Image": "busybox", "Cmd": ["sh", "-c", "while true; do echo x; sleep 0.01; done"]}')
    assert status == 201
    assert http(daemon, "POST", "/containers/streamer/start")[0] == 204
    for path in ("/containers/streamer/logs?stdout=1&follow=1", "/events", "/containers/streamer/stats",
                 "/containers/streamer/attach?stream=1&stdout=1"):
        with connect(daemon) as s:
            method = "POST" if "attach" in path else "GET"
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n".encode())
            assert s.recv(100).startswith(b"HTTP/1.1 ")
    assert http(daemon, "DELETE", "/containers/streamer?force=1")[0] == 204
    assert_alive(daemon)
