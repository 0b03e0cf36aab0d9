"""The CLI's UNIX-socket connections (engine/client_http.py): a daemon whose listen backlog is
full (many CLIs at once) is waited for, not reported unreachable; and the buffered reader over
a ``_socket`` connection reads what ``socket.makefile`` would."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from engine.client_http import buffered_reader, connect_unix


@pytest.fixture
def full_listener(tmp_path: object) -> Iterator[tuple[str, socket.socket]]:
    """A listener with backlog 1 that accepts nobody, its backlog filled."""
    path = os.path.join(str(tmp_path), "l.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    fill = []
    try:
        while True:  # fill the backlog: the next non-blocking connect gets EAGAIN
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            fill.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        yield path, srv
    finally:
        for c in fill:
            c.close()
        srv.close()


def test_full_backlog_is_waited_for(full_listener: tuple[str, socket.socket]) -> None:
    path, srv = full_listener
    accepted: list[socket.socket] = []
    timer = threading.Timer(0.3, lambda: accepted.append(srv.accept()[0]))
    timer.start()
    t0 = time.monotonic()
    try:
        s = connect_unix(path, 10.0)
        s.close()
    finally:
        timer.join()
        for a in accepted:
            a.close()
    assert 0.25 < time.monotonic() - t0 < 5


def test_full_backlog_times_out(full_listener: tuple[str, socket.socket]) -> None:
    path, _ = full_listener
    with pytest.raises(TimeoutError, match="backlog"):
        connect_unix(path, 0.2)


def test_nobody_listening(tmp_path: object) -> None:
    with pytest.raises(FileNotFoundError):
        connect_unix(os.path.join(str(tmp_path), "none.sock"), 1.0)


def test_buffered_reader_over_the_connection(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "r.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(1)
        s = connect_unix(path, 5.0)
        peer, _ = srv.accept()
        with peer:
            peer.sendall(b"line one\r\nrest")
            peer.shutdown(socket.SHUT_WR)
            r = buffered_reader(s)
            assert r.readline() == b"line one\r\n"
            assert r.peek(1)[:1] == b"r"
            assert r.read() == b"rest"
            r.close()
            assert s.fileno() >= 0  # closing the reader leaves the connection to its owner
            s.close()
