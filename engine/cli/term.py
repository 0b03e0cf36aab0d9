"""Attached sessions on the client side: copy a hijacked stream to stdout/stderr and the
terminal (or piped stdin) to it; raw mode and window-size propagation for ``-t``; signal
proxying for non-tty ``run``/``start -a``. Detach keys (ctrl-p ctrl-q) are recognised by the
daemon, which then ends the stream while the container keeps running.

Signals go through ``_signal``, the C module ``signal`` wraps: importing ``signal`` builds three
enum classes (~0.4 ms per CLI start) that none of this needs (the same reasoning as ``_socket``
in engine/client_http.py).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: the C module under `signal`
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int] | None:
    for fd in (1, 0, 2):
        with contextlib.suppress(OSError):
            cols, rows = os.get_terminal_size(fd)
            return rows, cols
    return None


@contextlib.contextmanager
def follow_resize(resize: Callable[[int, int], None], enabled: bool) -> Iterator[None]:
    """Send the terminal size now and on every SIGWINCH."""
    if not enabled or terminal_size() is None:
        yield
        return

    def send(*_: Any) -> None:
        size = terminal_size()
        if size:
            with contextlib.suppress(Exception):
                resize(*size)

    send()
    old = _signal.signal(_signal.SIGWINCH, send)
    try:
        yield
    finally:
        _signal.signal(_signal.SIGWINCH, old)


# what --sig-proxy forwards, by number → the name the kill endpoint takes
PROXIED = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP",
           _signal.SIGUSR1: "SIGUSR1", _signal.SIGUSR2: "SIGUSR2"}


@contextlib.contextmanager
def proxy_signals(kill: Callable[[str], None], enabled: bool) -> Iterator[None]:
    """Forward SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2 to the container (docker's --sig-proxy)."""
    if not enabled:
        yield
        return
    olds = {}

    def forward(signum: int, _frame: Any) -> None:
        name = PROXIED[signum]
        threading.Thread(target=lambda: _quiet(kill, name), daemon=True).start()

    for sig in PROXIED:
        olds[sig] = _signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, old in olds.items():
            _signal.signal(sig, old)


def _quiet(fn: Callable[[str], None], arg: str) -> None:
    with contextlib.suppress(Exception):
        fn(arg)


def pump(hj: Any, stdin: bool, tty: bool) -> None:
    """Run the session until the output ends."""
    if stdin:
        threading.Thread(target=_send_stdin, args=(hj, tty), daemon=True).start()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for fd, data in hj.output():
        stream = err if fd == 2 else out
        stream.write(data)
        stream.flush()
    hj.close()


def _send_stdin(hj: Any, tty: bool) -> None:
    try:
        while True:
            data = os.read(0, 4096)
            if not data:
                break
            hj.send(data)
    except OSError:
        return
    if not tty:
        hj.close_write()
