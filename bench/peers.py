"""Peers for benchmarks, started side by side on this machine: wharfied and Debian's dockerd.

Each runs with its own state directories and UNIX socket under a temporary directory and is
stopped (and its mounts cleaned) at exit. Needs root. dockerd comes from Debian's ``docker.io``
(``--bridge=none --iptables=false``: no network set-up, no route outside).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# set in the environment of each daemon started here, inherited by everything it starts (zygote and
# monitors; containerd and its shims): lets a bench count exactly one peer's processes on a machine
# where other daemons of the same name run
PEER_MARK = "WHARFIE_BENCH_PEER"


def peer_pids(mark: str, *needles: str) -> list[int]:
    """PIDs whose command line holds one of ``needles`` and whose environment carries ``mark``
    (the directory given to :func:`wharfied` or :func:`dockerd`'s data dir)."""
    tag = f"{PEER_MARK}={mark}".encode()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            if not any(n in cmd for n in needles):
                continue
            with open(f"/proc/{p}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            if tag not in env:
                continue
        except OSError:
            continue
        found.append(int(p))
    return found


def wait_socket(path: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before serving {path}")
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not create {path} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes], root: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # unmount anything left below root (deepest first)
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split()[4] for line in fh]
    for m in sorted((m for m in mounts if m.startswith(root)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


@contextlib.contextmanager
def wharfied(tmp: str, backend: str = "linux") -> Iterator[str]:
    root, run = os.path.join(tmp, "wharfie-root"), os.path.join(tmp, "wharfie-run")
    sock = os.path.join(tmp, "wharfie.sock")
    log = open(os.path.join(tmp, "wharfied.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "engine.api.daemon", "--backend", backend, "--root", root,
                             "--exec-root", run, "-H", f"unix://{sock}"], cwd=REPO, stdout=log, stderr=log,
                            env={**os.environ, PEER_MARK: tmp})
    try:
        wait_socket(sock, proc, "wharfied")
        yield sock
    finally:
        _stop(proc, tmp)
        log.close()


@contextlib.contextmanager
def dockerd(tmp: str) -> Iterator[str]:
    exe = shutil.which("dockerd")
    if exe is None:
        raise RuntimeError("dockerd not found: apt-get install docker.io")
    d = os.path.join(tmp, "docker")
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "docker.sock")
    log = open(os.path.join(d, "dockerd.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "--data-root", os.path.join(d, "data"), "--exec-root", os.path.join(d, "exec"),
                             "-H", f"unix://{sock}", "--pidfile", os.path.join(d, "docker.pid"),
                             "--bridge=none", "--iptables=false", "--ip6tables=false",
                             "--storage-driver", "overlay2"], stdout=log, stderr=log,
                            env={**os.environ, PEER_MARK: d})
    try:
        wait_socket(sock, proc, "dockerd")
        for _ in range(200):  # the socket appears before the API answers
            if subprocess.run(["docker", "-H", f"unix://{sock}", "version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield sock
    finally:
        _stop(proc, d)
        log.close()
