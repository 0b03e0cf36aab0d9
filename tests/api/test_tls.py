"""wharfied on TCP: TLS with mutual authentication, as `dockerd --tlsverify`; plain TCP refused.

Certificates are made in the test with openssl (a CA, a server cert for 127.0.0.1, a client
cert); the real docker CLI and wharfie's CLI connect with them. All traffic stays on loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.api.daemon import ROOT

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("certs"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=wharfie test CA",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, f"{name}.ext"), "w") as fh:
            fh.write(ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return d


def start(args: list[str], d: str) -> subprocess.Popen[bytes]:
    log = open(os.path.join(d, "wharfied.log"), "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "engine.api.daemon", "--backend", "sim",
                             "--root", os.path.join(d, "root"), "--exec-root", os.path.join(d, "run"), *args],
                            cwd=ROOT, stdout=log, stderr=log)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    proc.log.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tls_daemon(certs: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = str(tmp_path_factory.mktemp("tlsd"))
    port = free_port()
    proc = start(["-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", f"{certs}/ca.pem",
                  "--tlscert", f"{certs}/server.pem", "--tlskey", f"{certs}/server-key.pem"], d)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, open(os.path.join(d, "wharfied.log")).read()
        time.sleep(0.05)
    yield f"tcp://127.0.0.1:{port}"
    stop(proc)


def tls_flags(certs: str) -> list[str]:
    return ["--tlsverify", "--tlscacert", f"{certs}/ca.pem", "--tlscert", f"{certs}/client.pem",
            "--tlskey", f"{certs}/client-key.pem"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_cli_over_mutual_tls(tls_daemon: str, certs: str) -> None:
    r = subprocess.run(["docker", "-H", tls_daemon, *tls_flags(certs), "version", "--format", "{{.Server.Version}}"],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "DOCKER_CONFIG": certs})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.1.0"


def test_wharfie_cli_over_mutual_tls(tls_daemon: str, certs: str) -> None:
    r = subprocess.run([sys.executable, "-m", "engine.cli.main", "-H", tls_daemon, *tls_flags(certs), "ps"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CONTAINER ID")


def test_client_without_certificate_is_refused(tls_daemon: str, certs: str) -> None:
    host, port = tls_daemon.removeprefix("tcp://").split(":")
    ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(64):
                    raise ConnectionResetError("closed without an answer")


def test_plain_http_gets_no_api(tls_daemon: str) -> None:
    host, port = tls_daemon.removeprefix("tcp://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(64)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")


def test_plain_tcp_is_refused_at_start(tmp_path: object) -> None:
    d = str(tmp_path)
    proc = start(["-H", f"tcp://127.0.0.1:{free_port()}"], d)
    try:
        assert proc.wait(20) != 0
    finally:
        stop(proc)
    with open(os.path.join(d, "wharfied.log")) as fh:
        assert "TLS" in fh.read()
