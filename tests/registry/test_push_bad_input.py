"""Push against misbehaving registries and bad input (issue 6's must-show list, push side): each
a clear error, bounded retries, nothing changed locally, no manifest left half-pushed, the upload
session cancelled, credentials never sent to another host.

The registry is wharfie's own server app on loopback with a scriptable ``override`` in front
(``PushFake``), so the happy path is a real registry and each test breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from engine.engine import Engine
from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from engine.registry.credentials import Credentials
from engine.registry.server.app import Registry
from engine.registry.server.storage import Storage
from tests.registry.rigs import AppThread, Seen, closed_port, err, proxy_app

pytestmark = pytest.mark.timeout(120)
FAST = {"backoff": 0.01, "max_backoff": 0.05}
Override = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class PushFake:
    """Our registry app with a hook that may answer first (return None to pass)."""

    def __init__(self, root: str) -> None:
        self.reg = Registry(Storage(root))
        self.seen = Seen()
        self.override: Override | None = None

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.add(request)
            if self.override is not None:
                r = await self.override(request)
                if r is not None:
                    return r
            return await self.reg.dispatch(request)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def manifests(self, name: str) -> list[str]:
        d = os.path.join(self.reg.s.repos, name, "_manifests")
        return os.listdir(d) if os.path.isdir(d) else []

    def open_uploads(self) -> list[str]:
        return os.listdir(self.reg.s.uploads)


@pytest.fixture
def fake(tmp_path: Any) -> Iterator[tuple[PushFake, AppThread]]:
    f = PushFake(str(tmp_path / "reg"))
    t = AppThread(f.app()).start()
    yield f, t
    t.stop()


def tagged(engine: Engine, host: str, name: str = "p/q", tag: str = "1") -> str:
    ref = f"{host}/{name}:{tag}"
    engine.image_tag("busybox:latest", ref)
    return ref


async def expect_clean_push_failure(engine: Engine, ref: str, exc: type[EngineError], match: str = "",
                                    **kw: Any) -> EngineError:
    before = sorted(i.id for i in engine.image_list(all=True))
    with pytest.raises(exc, match=match or None) as info:
        await engine.image_push(ref, **kw)
    assert sorted(i.id for i in engine.image_list(all=True)) == before
    report = engine.check()
    assert report.clean, str(report)
    return info.value


@pytest.mark.parametrize("text", ["UPPER:tag", "a//b:1", "x:" + "t" * 300, "a/b@sha256:abc"])
async def test_invalid_references_refused_early(engine: Engine, fake: tuple[PushFake, AppThread], text: str) -> None:
    f, t = fake
    ref = text if text == "UPPER:tag" else f"{t.host}/{text}"
    await expect_clean_push_failure(engine, ref, InvalidArgument)
    assert f.seen.requests == []


@pytest.mark.parametrize("status,exc", [(401, PermissionDenied), (403, PermissionDenied), (404, NotFound),
                                        (429, Unavailable), (500, Unavailable), (503, Unavailable)])
async def test_http_errors_on_upload(engine: Engine, fake: tuple[PushFake, AppThread], status: int,
                                     exc: type[EngineError]) -> None:
    f, t = fake
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST)

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method == "POST" and "/blobs/uploads/" in request.path:
            return err(status, {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN",
                                429: "TOOMANYREQUESTS"}.get(status, "UNAVAILABLE"),
                       headers={"Retry-After": "0"} if status == 429 else None)
        return None

    f.override = override
    e = await expect_clean_push_failure(engine, tagged(engine, t.host), exc)
    assert str(status) in str(e) and "upload" in str(e)
    posts = [r for r in f.seen.requests if r[0] == "POST"]
    layers = len(engine.image_inspect("busybox:latest").diff_ids)
    if status in (429, 500, 503):  # bounded retries, per blob
        assert 0 < len(posts) <= layers * (1 + engine.registry_options.max_retries)
    assert f.manifests("p/q") == []


async def test_transient_failure_mid_upload_is_retried(engine: Engine, fake: tuple[PushFake, AppThread]) -> None:
    f, t = fake
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST, chunk_size=64 * 1024)
    failed = {"n": 0}

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method == "PATCH" and failed["n"] < 1:
            failed["n"] += 1
            await request.read()
            return err(503, "UNAVAILABLE")
        return None

    f.override = override
    ref = tagged(engine, t.host)
    assert (await engine.image_push(ref)).pushed
    assert failed["n"] == 1
    assert f.open_uploads() == []  # the failed session was cancelled (DELETE), not left behind
    assert any(m == "DELETE" and "/blobs/uploads/" in p for m, p, _h in f.seen.requests)


async def test_unreachable_registry(engine: Engine) -> None:
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST)
    e = await expect_clean_push_failure(engine, tagged(engine, f"127.0.0.1:{closed_port()}"), Unavailable)
    assert "cannot reach registry" in str(e)


@pytest.mark.parametrize("where", ["blob", "manifest"])
async def test_registry_stores_a_different_digest(engine: Engine, fake: tuple[PushFake, AppThread], where: str) -> None:
    f, t = fake
    lie = "sha256:" + "0" * 64

    async def override(request: web.Request) -> web.StreamResponse | None:
        is_blob_put = request.method == "PUT" and "/blobs/uploads/" in request.path
        if (where == "blob" and is_blob_put) or (where == "manifest" and request.method == "PUT"
                                                 and "/manifests/" in request.path):
            resp = await f.reg.dispatch(request)
            resp.headers["Docker-Content-Digest"] = lie
            return resp
        return None

    f.override = override
    e = await expect_clean_push_failure(engine, tagged(engine, t.host), InvalidArgument, "stored")
    assert lie in str(e)


async def test_manifest_over_the_registry_cap(engine: Engine, fake: tuple[PushFake, AppThread]) -> None:
    f, t = fake

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method == "PUT" and "/manifests/" in request.path:
            await request.read()
            return err(413, "SIZE_INVALID", "manifest over 4096 bytes")
        return None

    f.override = override
    e = await expect_clean_push_failure(engine, tagged(engine, t.host), InvalidArgument, "413")
    assert "size_invalid" in str(e).lower() and "manifest" in str(e)
    assert f.manifests("p/q") == []


async def test_truncated_local_layer_is_not_pushed(engine: Engine, fake: tuple[PushFake, AppThread],
                                                  tmp_path: Any) -> None:
    f, t = fake
    store = engine.image_store
    image_id = engine.image_inspect("busybox:latest").id
    lr = store.meta.image_layers(image_id)[0]
    path = store.blobs.path(lr.blob)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:  # the store damaged under us: the layer lost its tail
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(InvalidArgument, match="truncated|damaged"):
        await engine.image_push(tagged(engine, t.host))
    assert f.manifests("p/q") == [] and f.open_uploads() == []


async def test_upload_on_another_host_gets_no_credentials(engine: Engine, fake: tuple[PushFake, AppThread]) -> None:
    """A registry whose upload sessions live on another host (blob storage): the PATCH/PUT there
    carry no Authorization; the registry itself gets the user's credentials."""
    f, t = fake
    # PATCH chunks (the rig's proxy forwards bodies as bytes: kept small)
    engine.registry_options = dataclasses.replace(engine.registry_options, chunk_size=256 * 1024)
    storage_seen = Seen()
    storage = AppThread(proxy_app(f"http://{t.host}", storage_seen, {})).start()
    try:
        async def override(request: web.Request) -> web.StreamResponse | None:
            is_session = "/blobs/uploads/" in request.path and not request.path.endswith("/uploads/")
            if not is_session and "Authorization" not in request.headers:
                return err(401, "UNAUTHORIZED", headers={"WWW-Authenticate": 'Basic realm="fake"'})
            if request.method == "POST" and request.path.endswith("/blobs/uploads/"):
                resp = await f.reg.dispatch(request)
                if "Location" in resp.headers:  # hand the session to "blob storage" elsewhere
                    resp.headers["Location"] = f"http://localhost:{storage.port}{resp.headers['Location']}"
                return resp
            return None

        f.override = override
        await engine.image_push(tagged(engine, t.host), auth=Credentials("carol", "pw"))
        assert storage_seen.requests, "the upload did not go to the other host"
        for _m, _p, headers in storage_seen.requests:
            assert "authorization" not in {k.lower() for k in headers}
        assert any("Authorization" in h for m, p, h in f.seen.requests if "/manifests/" in p)
        assert len(f.manifests("p/q")) == 1
    finally:
        storage.stop()
