"""A real ``wharfied`` subprocess for the API and CLI suites (one per test module).

It runs the backend chosen by ``--backend`` (the sim by default: no root needed; ``linux`` runs
real containers) on a temporary UNIX socket and root; the busybox fixture image is imported
through the API. Every wait is bounded. At the end every container is removed before the daemon
stops (containers outlive the daemon by design, so a test run must clean them up).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from engine.client import Client
from engine.images.busybox import STUB_BINARY, find_busybox, rootfs_tar_bytes

START_TIMEOUT = 20.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def busybox_tar() -> bytes:
    path = find_busybox()
    if path is None:
        return rootfs_tar_bytes(STUB_BINARY)
    with open(path, "rb") as fh:
        return rootfs_tar_bytes(fh.read())


class Daemon:
    def __init__(self, backend: str = "sim") -> None:
        self.backend = backend
        # short path: sun_path is limited to 108 bytes
        self.dir = tempfile.mkdtemp(prefix="wh-")
        self.socket = os.path.join(self.dir, "d.sock")
        self.host = "unix://" + self.socket
        self.log_path = os.path.join(self.dir, "wharfied.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.api.daemon", "--backend", self.backend, "-H", self.host,
                 "--root", os.path.join(self.dir, "root"), "--exec-root", os.path.join(self.dir, "run"),
                 "--pidfile", os.path.join(self.dir, "wharfied.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wharfied exited with {self.proc.returncode}:\n{self.log()}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"wharfied did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            try:
                s.connect(self.socket)
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()[-4000:]

    def client(self) -> Client:
        return Client(self.host, timeout=30.0)

    def import_busybox(self, reference: str = "busybox:latest") -> str:
        docs = list(self.client().import_image(busybox_tar(), reference, ['CMD ["sh"]']))
        return str(docs[-1]["status"])

    def remove_all_containers(self) -> None:
        c = self.client()
        for doc in c.containers(all=True):
            try:
                c.remove(doc["Id"], force=True)
            except Exception:  # noqa: BLE001 - best effort; the leak check reports the rest
                pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.remove_all_containers()
            except Exception:  # noqa: BLE001
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def daemon_fixture(backend: str = "sim") -> Iterator[Daemon]:
    d = Daemon(backend)
    try:
        d.start()
        d.import_busybox()
    except RuntimeError as e:
        d.stop()
        pytest.fail(str(e))
    yield d
    alive = d.proc is not None and d.proc.poll() is None
    log = d.log()
    d.stop()
    assert alive, f"wharfied died during the tests:\n{log}"
    assert d.proc is not None and d.proc.returncode == 0, f"wharfied exited with {d.proc.returncode}:\n{log}"
    assert "Traceback" not in log, f"wharfied logged an internal error:\n{log}"
