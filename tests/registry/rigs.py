"""Registry rigs for the registry suite, all on 127.0.0.1 with bounded waits:

* :class:`RefRegistry`: Debian's ``docker-registry`` (the distribution reference implementation)
  as a subprocess, plain or with htpasswd (bcrypt) auth;
* :class:`Wharfie`: ``wharfie registry serve`` as a subprocess;
* :class:`AppThread`: an aiohttp app on its own loop in a thread — used for a recording reverse
  proxy that can cut a blob stream mid-way, and for a scriptable fake registry that misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTRY_BIN = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, log: str = "") -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}\n{_tail(log)}")
        try:
            httpx.get(url, timeout=1.0, verify=False)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT}s\n{_tail(log)}")


def _tail(path: str) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as fh:
        return fh.read()[-3000:]


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


class Process:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="wh-reg-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "log")
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None, scheme: str = "http") -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
                                         env=env)
        wait_http(f"{scheme}://{self.host}/v2/", self.proc, self.log_path)

    def log(self) -> str:
        return _tail(self.log_path)

    @contextlib.contextmanager
    def serving(self) -> Iterator[Any]:
        """Start, yield ``self``, stop; a start that fails stops what it began and fails the test."""
        try:
            self.start()  # type: ignore[attr-defined]
        except RuntimeError as e:
            self.stop()
            pytest.fail(str(e))
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class RefRegistry(Process):
    """``docker-registry`` on a free loopback port; ``users`` turns on htpasswd auth."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        super().__init__()
        self.users = users or {}

    def start(self) -> RefRegistry:
        auth = ""
        if self.users:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as fh:
                fh.writelines(htpasswd_line(u, p) for u, p in self.users.items())
            auth = f"auth:\n  htpasswd:\n    realm: wharfie-test\n    path: {path}\n"
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as fh:
            fh.write("version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
                     f"storage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n  delete:\n    enabled: true\n"
                     f"http:\n  addr: {self.host}\n{auth}")
        self._spawn([REGISTRY_BIN, "serve", cfg])
        return self


class Wharfie(Process):
    """``wharfie registry serve`` (``python -m engine.cli.main registry serve``)."""

    def __init__(self, htpasswd: dict[str, str] | None = None, tls: tuple[str, str] | None = None,
                 token_auth: bool = False) -> None:
        super().__init__()
        self.users = htpasswd or {}
        self.tls = tls
        self.token_auth = token_auth

    def start(self) -> Wharfie:
        argv = [sys.executable, "-m", "engine.cli.main", "registry", "serve", "--addr", self.host,
                "--root", os.path.join(self.dir, "data")]
        if self.users:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as fh:
                fh.writelines(htpasswd_line(u, p) for u, p in self.users.items())
            argv += ["--htpasswd", path]
        if self.token_auth:
            argv += ["--token-auth"]
        if self.tls:
            argv += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._spawn(argv, env, "https" if self.tls else "http")
        return self


class AppThread:
    """Serve an aiohttp app on 127.0.0.1 from a private loop in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def up() -> None:
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self.loop.run_until_complete(up())
        self.loop.run_forever()

    def start(self) -> AppThread:
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("app thread did not start")
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(down(), self.loop)
        try:
            fut.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


class Seen:
    """Requests an app received: ``(method, path_qs, headers)``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def add(self, request: web.Request) -> None:
        with self.lock:
            self.requests.append((request.method, request.path_qs, dict(request.headers)))

    def blob_gets(self, digest: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for m, p, h in self.requests if m == "GET" and p.endswith("/blobs/" + digest)]


def proxy_app(upstream: str, seen: Seen, cut: dict[str, int]) -> web.Application:
    """A reverse proxy to ``upstream`` recording requests; a blob GET whose digest is in
    ``cut`` is sent only that many bytes (then the connection is dropped), once."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.add(request)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with ClientSession(auto_decompress=False) as cs:
            async with cs.request(request.method, upstream + request.path_qs, headers=headers, data=body or None,
                                  allow_redirects=False) as up:
                resp = web.StreamResponse(status=up.status)
                for k, v in up.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "date", "server"):
                        resp.headers[k] = v
                await resp.prepare(request)
                digest = request.path.rsplit("/", 1)[-1]
                limit = cut.pop(digest, None) if request.method == "GET" and "/blobs/" in request.path else None
                sent = 0
                async for chunk in up.content.iter_chunked(1 << 16):
                    if limit is not None and sent + len(chunk) >= limit:
                        await resp.write(chunk[:limit - sent])
                        await asyncio.sleep(0.05)
                        assert request.transport is not None
                        request.transport.close()  # the cut: flushes what was sent, then EOF mid-body
                        return resp
                    await resp.write(chunk)
                    sent += len(chunk)
                await resp.write_eof()
                return resp

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Fake:
    """A scriptable registry: ``manifests[(repo, ref)] = (bytes, content_type)``,
    ``blobs[digest] = bytes``; ``override(request)`` may answer first (return None to pass)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.seen = Seen()
        self.override: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None
        self.blob_size_lie: dict[str, int] = {}

    def add_image(self, repo: str, tag: str, config: bytes, layers: list[bytes],
                  layer_type: str = "application/vnd.docker.image.rootfs.diff.tar.gzip",
                  manifest_type: str = "application/vnd.docker.distribution.manifest.v2+json") -> str:
        def put(data: bytes) -> str:
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            self.blobs[d] = data
            return d
        doc = {"schemaVersion": 2, "mediaType": manifest_type,
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                          "digest": put(config), "size": len(config)},
               "layers": [{"mediaType": layer_type, "digest": put(x), "size": len(x)} for x in layers]}
        data = json.dumps(doc).encode()
        self.manifests[(repo, tag)] = (data, manifest_type)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.manifests[(repo, digest)] = (data, manifest_type)
        return digest

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.add(request)
            if self.override is not None:
                r = await self.override(request)
                if r is not None:
                    return r
            path = request.path
            if path in ("/v2/", "/v2"):
                return web.json_response({})
            if "/manifests/" in path:
                repo, _, ref = path[4:].rpartition("/manifests/")
                m = self.manifests.get((repo, ref))
                if m is None:
                    return _err(404, "MANIFEST_UNKNOWN", "manifest unknown")
                d = "sha256:" + hashlib.sha256(m[0]).hexdigest()
                return web.Response(body=m[0], headers={"Content-Type": m[1], "Docker-Content-Digest": d})
            if "/blobs/" in path:
                digest = path.rsplit("/", 1)[-1]
                data = self.blobs.get(digest)
                if data is None:
                    return _err(404, "BLOB_UNKNOWN", "blob unknown")
                return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})
            return _err(404, "NAME_UNKNOWN", "no route")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


def _err(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status, headers=headers)


def err(status: int, code: str = "UNKNOWN", message: str = "", headers: dict[str, str] | None = None) -> web.Response:
    return _err(status, code, message or code.lower(), headers)


def gzip_bytes(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, mtime=0)


def layer_tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def config_for(layers: list[bytes], os_: str = "linux", arch: str | None = None) -> bytes:
    from engine.images.config import host_platform
    arch = arch or host_platform()[1]
    doc = {"architecture": arch, "os": os_, "config": {"Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]},
           "created": "2024-01-01T00:00:00Z", "history": [{"created": "2024-01-01T00:00:00Z"} for _ in layers]}
    return json.dumps(doc).encode()


def run_blocking(fn: Callable[..., Any], *a: Any) -> Any:
    return fn(*a)
