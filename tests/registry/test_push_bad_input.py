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
    if status in (429, 500, 503):  # bounded retries, per blob (the config goes up alongside the layers)
        assert 0 < len(posts) <= (layers + 1) * (1 + engine.registry_options.max_retries)
    assert f.manifests("p/q") == []


@pytest.mark.parametrize("chunk_size", [64 * 1024, 0], ids=["chunks", "streamed"])
async def test_transient_failure_mid_upload_is_retried(engine: Engine, fake: tuple[PushFake, AppThread],
                                                       chunk_size: int) -> None:
    f, t = fake
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST, chunk_size=chunk_size)
    failed = {"n": 0}

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method == "PATCH" and failed["n"] < 1:
            failed["n"] += 1
            await request.read()
            return err(503, "UNAVAILABLE")
        return None

    f.override = override
    ref = tagged(engine, t.host) if chunk_size else big_image(engine, t.host)
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


def big_image(engine: Engine, host: str, name: str = "p/big") -> str:
    """busybox + a layer of 3 MiB random bytes (over the 1 MiB single-PUT limit once gzipped)."""
    import io

    from tests.registry.rigs import layer_tar

    ref = f"{host}/{name}:1"
    parent = engine.image_store.lookup("busybox:latest")
    engine.image_store.commit(io.BytesIO(layer_tar({"r.bin": os.urandom(3 << 20)})), parent, {}, ref)
    return ref


async def test_big_layer_goes_as_one_streamed_patch(engine: Engine, fake: tuple[PushFake, AppThread]) -> None:
    f, t = fake
    await engine.image_push(big_image(engine, t.host))
    puts = [p for m, p, h in f.seen.requests if m == "PUT" and "/blobs/uploads/" in p]
    patches = [h for m, p, h in f.seen.requests if m == "PATCH"]
    assert 1 <= len(patches) < len(puts)  # one per big layer; the config goes as one PUT
    for h in patches:
        assert "Content-Range" not in h and h.get("Transfer-Encoding") == "chunked"
    assert len(f.manifests("p/big")) == 1 and f.open_uploads() == []


@pytest.mark.parametrize("trick", ["short-range", "redirect"])
async def test_streamed_patch_misanswered(engine: Engine, fake: tuple[PushFake, AppThread], trick: str) -> None:
    """A registry that acknowledges fewer bytes than the streamed PATCH carried, or redirects
    it (a stream cannot be replayed: the upload is retried, then fails): a clear error, no
    manifest, the sessions cancelled."""
    f, t = fake
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST)

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method != "PATCH":
            return None
        if trick == "redirect":
            await request.read()
            return web.Response(status=307, headers={"Location": request.path_qs})
        resp = await f.reg.dispatch(request)
        resp.headers["Range"] = "0-99"
        return resp

    f.override = override
    ref = big_image(engine, t.host)
    if trick == "short-range":
        await expect_clean_push_failure(engine, ref, InvalidArgument, "took 100 of the")
    else:
        await expect_clean_push_failure(engine, ref, Unavailable, "cannot be replayed")
    assert f.manifests("p/big") == [] and f.open_uploads() == []


@pytest.mark.parametrize("status,header", [(429, "seconds"), (503, "http-date"), (429, "over-the-cap")])
async def test_upload_retry_waits_as_retry_after_says(engine: Engine, fake: tuple[PushFake, AppThread],
                                                     status: int, header: str) -> None:
    """A 429/503 on an upload with ``Retry-After`` (delay-seconds or an HTTP date): the retry
    comes no sooner than asked — not after the (tiny) configured back-off — and a huge value
    is capped at ``max_backoff``."""
    import email.utils
    import time

    f, t = fake
    cap = 0.3 if header == "over-the-cap" else 5.0
    engine.registry_options = dataclasses.replace(engine.registry_options, backoff=0.01, max_backoff=cap,
                                                  max_concurrent_uploads=1)
    posts: list[float] = []

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.method == "POST" and request.path.endswith("/blobs/uploads/"):
            posts.append(time.monotonic())
            if len(posts) == 1:
                value = {"seconds": "1", "over-the-cap": "3600",
                         "http-date": email.utils.formatdate(time.time() + 2, usegmt=True)}[header]
                return err(status, "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE",
                           headers={"Retry-After": value})
        return None

    f.override = override
    assert (await engine.image_push(tagged(engine, t.host))).pushed
    waited = posts[1] - posts[0]  # one upload at a time: the second POST is the retry
    assert waited >= (0.25 if header == "over-the-cap" else 0.9)
    assert len(f.manifests("p/q")) == 1


async def test_pulled_layer_pushes_its_stored_blob_and_a_damaged_one_is_refused(
        engine: Engine, other: Engine, fake: tuple[PushFake, AppThread], tmp_path: Any) -> None:
    """A pulled layer is kept compressed and pushed as it is (same digest, nothing recompressed);
    if that stored blob was damaged (same size, other bytes), the push fails naming it and
    leaves no manifest."""
    f, t = fake
    src = await engine.image_push(tagged(engine, t.host))
    ref = f"{t.host}/p/q:1"
    await other.image_pull(ref)
    dest = PushFake(str(tmp_path / "dest"))
    d = AppThread(dest.app()).start()
    try:
        other.image_tag(ref, f"{d.host}/copy/x:1")
        got = await other.image_push(f"{d.host}/copy/x:1")
        assert got.digest == src.digest and sorted(got.pushed) == sorted(src.pushed)
        lr = other.image_store.meta.image_layers(other.image_inspect(ref).id)[-1]
        path = other.image_store.blobs.path(lr.blob)
        os.chmod(path, 0o644)
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\0" * 16)
        fresh = PushFake(str(tmp_path / "fresh"))  # one that has nothing to skip or mount
        d2 = AppThread(fresh.app()).start()
        try:
            other.image_tag(ref, f"{d2.host}/copy/y:1")
            with pytest.raises(InvalidArgument, match="damaged"):
                await other.image_push(f"{d2.host}/copy/y:1")
            assert fresh.manifests("copy/y") == [] and fresh.open_uploads() == []
        finally:
            d2.stop()
    finally:
        d.stop()
