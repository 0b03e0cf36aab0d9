"""The embedded default: start ``wharfied`` in the background when nobody answers.

Only for the default socket (no ``-H``/``DOCKER_HOST``/``WHARFIE_HOST``), and not when
``WHARFIE_NO_AUTOSTART`` is set. The daemon runs detached (its own session), logs to
``<root>/wharfied.log`` and picks the best backend; a lock file keeps two CLIs started at once
from racing to start two daemons.
"""

from __future__ import annotations

import os
import sys
import time

from engine.api import paths
from engine.cli.app import fail
from engine.client_http import connect_unix

WAIT = 15.0


def _listening(path: str) -> bool:
    """Something listens on ``path``: the command's own request follows at once, so this asks
    nothing more (a full ``/_ping`` here cost every command an extra round trip). Only a
    missing socket or a refused connection mean nobody is there; any other failure (say, a
    permission error) is left for the command's request to report."""
    try:
        connect_unix(path, 2.0).close()
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError:
        return True
    return True


def _answers(path: str) -> bool:
    """A daemon answers ``/_ping`` on ``path`` (after starting one: bound, and serving)."""
    try:
        s = connect_unix(path, 2.0)
    except OSError:
        return False
    try:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: wharfie\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def ensure_daemon() -> str:
    """Return the default host, starting a daemon there first if nothing listens on it (unless
    ``WHARFIE_NO_AUTOSTART`` is set). Exits through :func:`fail` if the daemon does not come up."""
    sock = paths.default_socket()
    host = "unix://" + sock
    if _listening(sock) or os.environ.get("WHARFIE_NO_AUTOSTART"):
        return host
    import fcntl
    import subprocess

    root, exec_root = paths.default_root(), paths.default_exec_root()
    os.makedirs(exec_root, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(exec_root, "autostart.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock):
            return host
        log_path = os.path.join(root, "wharfied.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.api.daemon", "-H", host, "--root", root, "--exec-root", exec_root,
                 "--log-file", log_path, "--pidfile", os.path.join(exec_root, "wharfied.pid")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                close_fds=True)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if _answers(sock):
                print(f"wharfie: started the daemon (pid {proc.pid}), logging to {log_path}", file=sys.stderr)
                return host
            if proc.poll() is not None:
                fail(f"could not start wharfied (exit {proc.returncode}); see {log_path}")
            time.sleep(0.05)
        fail(f"wharfied did not answer on {sock} within {WAIT:.0f}s; see {log_path}")
