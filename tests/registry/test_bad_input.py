"""Misbehaving registries and bad input: each a clear error, no partial image, no leaked
credentials, bounded retries. The registry here is a scriptable fake on loopback
(``rigs.Fake``); resuming is proven through a cutting proxy in front of the reference registry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import pytest
from aiohttp import web

from engine.engine import Engine
from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from engine.registry.credentials import Credentials
from tests.registry.rigs import (
    AppThread,
    Fake,
    RefRegistry,
    Seen,
    closed_port,
    config_for,
    err,
    gzip_bytes,
    layer_tar,
    proxy_app,
)

pytestmark = pytest.mark.timeout(120)
FAST = {"backoff": 0.01, "max_backoff": 0.05}


def fast(engine: Engine, **kw: Any) -> None:
    engine.registry_options = dataclasses.replace(engine.registry_options, **FAST, **kw)


def image(f: Fake, repo: str = "a/b", tag: str = "1", n: int = 1, **kw: Any) -> tuple[list[bytes], bytes]:
    tars = [layer_tar({f"f{i}": os.urandom(1000)}) for i in range(n)]
    cfg = config_for(tars)
    f.add_image(repo, tag, cfg, [gzip_bytes(t) for t in tars], **kw)
    return tars, cfg


async def expect_clean_failure(engine: Engine, reference: str, exc: type[EngineError], match: str = "",
                               **kw: Any) -> EngineError:
    before = [i.id for i in engine.image_list(all=True)]
    with pytest.raises(exc, match=match or None) as info:
        await engine.image_pull(reference, **kw)
    assert [i.id for i in engine.image_list(all=True)] == before
    report = engine.check()
    assert report.clean, str(report)
    return info.value


async def test_happy_fake(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    image(f, n=2)
    image_id = await engine.image_pull(f"{t.host}/a/b:1")
    assert len(engine.image_inspect(image_id).diff_ids) == 2


async def test_wrong_layer_digest(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    image(f)
    man = json.loads(f.manifests[("a/b", "1")][0])
    d = man["layers"][0]["digest"]
    f.blobs[d] = f.blobs[d][:-1] + bytes([f.blobs[d][-1] ^ 1])  # same size, one bit off
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "digest mismatch")
    f.blobs[d] = f.blobs[d] + b"extra"
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "size mismatch")


async def test_wrong_config_digest(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    image(f)
    man = json.loads(f.manifests[("a/b", "1")][0])
    f.blobs[man["config"]["digest"]] = b"{" + b" " * (man["config"]["size"] - 2) + b"}"
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "digest mismatch")


async def test_diff_id_mismatch(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    tar = layer_tar({"a": b"1"})
    cfg = config_for([layer_tar({"a": b"2"})])
    f.add_image("a/b", "1", cfg, [gzip_bytes(tar)])
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "diff_id")


async def test_truncated_blob(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    fast(engine)
    image(f)
    man = json.loads(f.manifests[("a/b", "1")][0])
    d = man["layers"][0]["digest"]
    f.blobs[d] = f.blobs[d][:-100]
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "truncated")
    assert len(f.seen.blob_gets(d)) <= 1 + engine.registry_options.max_retries + 1


async def test_manifest_digest_mismatch_by_digest(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    image(f)
    data, ctype = f.manifests[("a/b", "1")]
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    f.manifests[("a/b", wrong)] = (data, ctype)
    await expect_clean_failure(engine, f"{t.host}/a/b@{wrong}", InvalidArgument, "verification failed")


async def test_oversized_manifest(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    big = json.dumps({"schemaVersion": 2, "pad": "x" * (4 * 1024 * 1024 + 10)}).encode()
    f.manifests[("a/b", "1")] = (big, "application/vnd.oci.image.manifest.v1+json")
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "limit")


@pytest.mark.parametrize("case", ["served-as-index", "field-disagrees", "config-as-manifest", "layer-type"])
async def test_media_type_confusion(engine: Engine, fake: tuple[Fake, AppThread], case: str) -> None:
    f, t = fake
    image(f)
    data, _ = f.manifests[("a/b", "1")]
    doc = json.loads(data)
    if case == "served-as-index":
        f.manifests[("a/b", "1")] = (data, "application/vnd.oci.image.index.v1+json")
    elif case == "field-disagrees":
        doc["mediaType"] = "application/vnd.oci.image.index.v1+json"
        f.manifests[("a/b", "1")] = (json.dumps(doc).encode(), "application/vnd.docker.distribution.manifest.v2+json")
    elif case == "config-as-manifest":
        doc["config"]["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
        f.manifests[("a/b", "1")] = (json.dumps(doc).encode(), "application/vnd.docker.distribution.manifest.v2+json")
    else:
        doc["layers"][0]["mediaType"] = "application/vnd.oci.image.index.v1+json"
        f.manifests[("a/b", "1")] = (json.dumps(doc).encode(), "application/vnd.docker.distribution.manifest.v2+json")
    await expect_clean_failure(engine, f"{t.host}/a/b:1", InvalidArgument, "media.type|not an image|confusion")


@pytest.mark.parametrize("text", ["UPPER:tag", "a//b", "x:" + "t" * 300, "", "a/b@sha256:abc"])
async def test_invalid_references_refused_early(engine: Engine, fake: tuple[Fake, AppThread], text: str) -> None:
    f, t = fake
    ref = text if text in ("", "UPPER:tag") else f"{t.host}/{text}"
    await expect_clean_failure(engine, ref, InvalidArgument)
    assert f.seen.requests == []


@pytest.mark.parametrize("status,exc", [(401, PermissionDenied), (403, PermissionDenied), (404, NotFound),
                                        (429, Unavailable), (500, Unavailable), (502, Unavailable),
                                        (503, Unavailable)])
async def test_http_errors(engine: Engine, fake: tuple[Fake, AppThread], status: int, exc: type[EngineError]) -> None:
    f, t = fake
    fast(engine)
    image(f)

    async def override(request: web.Request) -> web.StreamResponse | None:
        if "/manifests/" in request.path:
            return err(status, {401: "UNAUTHORIZED", 403: "DENIED", 404: "MANIFEST_UNKNOWN",
                                429: "TOOMANYREQUESTS"}.get(status, "UNAVAILABLE"),
                       headers={"Retry-After": "0"} if status == 429 else None)
        return None

    f.override = override
    e = await expect_clean_failure(engine, f"{t.host}/a/b:1", exc)
    assert str(status) in str(e)
    tries = [r for r in f.seen.requests if "/manifests/" in r[1]]
    if status in (429, 500, 502, 503):
        assert len(tries) == 1 + engine.registry_options.max_retries  # bounded retries
    elif status != 401:
        assert len(tries) == 1


async def test_transient_errors_are_retried(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    fast(engine)
    image(f)
    failures = {"n": 0}

    async def override(request: web.Request) -> web.StreamResponse | None:
        if "/blobs/" in request.path and failures["n"] < 2:
            failures["n"] += 1
            return err(503, "UNAVAILABLE")
        return None

    f.override = override
    assert await engine.image_pull(f"{t.host}/a/b:1")
    assert failures["n"] == 2


async def test_unreachable_registry(engine: Engine) -> None:
    fast(engine)
    e = await expect_clean_failure(engine, f"127.0.0.1:{closed_port()}/a/b:1", Unavailable)
    assert "cannot reach registry" in str(e)


async def test_redirect_to_another_host_carries_no_credentials(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    image(f)
    storage = Fake()
    storage.blobs = f.blobs
    st = AppThread(storage.app()).start()
    try:
        async def override(request: web.Request) -> web.StreamResponse | None:
            if request.path in ("/v2/", "/v2") or "Authorization" not in request.headers:
                if "Authorization" not in request.headers:
                    return err(401, "UNAUTHORIZED", headers={"WWW-Authenticate": 'Basic realm="fake"'})
            if "/blobs/" in request.path:
                # blob storage elsewhere: another host name (localhost vs 127.0.0.1) and port
                raise web.HTTPTemporaryRedirect(f"http://localhost:{st.port}{request.path}")
            return None

        f.override = override
        creds = Credentials("carol", "pw")
        image_id = await engine.image_pull(f"{t.host}/a/b:1", auth=creds)
        assert image_id
        assert storage.seen.requests, "the redirect was not followed"
        for _m, _p, headers in storage.seen.requests:
            assert "Authorization" not in headers and "authorization" not in {k.lower() for k in headers}
        assert any("Authorization" in h for m, p, h in f.seen.requests if "/manifests/" in p)
    finally:
        st.stop()


@pytest.fixture(scope="module")
def big_image_registry(registry: RefRegistry) -> RefRegistry:
    return registry


async def test_resume_after_cut(engine: Engine, other: Engine, registry: RefRegistry) -> None:
    # a child image whose top layer is ~3 MB of incompressible data
    parent = engine.image_store.lookup("busybox:latest")
    import io

    payload = os.urandom(3 * 1024 * 1024)
    ref = f"{registry.host}/resume/big:1"
    engine.image_store.commit(io.BytesIO(layer_tar({"big.bin": payload})), parent, {"Cmd": ["sh"]}, ref)
    result = await engine.image_push(ref)
    rec = engine.image_inspect(ref)
    sources = engine.meta.layer_sources(rec.diff_ids[-1])
    digest = next(d for d, _s, _mt, repo in sources if repo == f"{registry.host}/resume/big")
    seen, cut = Seen(), {digest: 1_000_000}
    proxy = AppThread(proxy_app(f"http://{registry.host}", seen, cut)).start()
    try:
        via = f"{proxy.host}/resume/big:1"
        fast(other)
        image_id = await other.image_pull(via)
        assert image_id == rec.id
        gets = seen.blob_gets(digest)
        assert len(gets) == 2, gets
        assert "Range" not in gets[0]
        assert gets[1]["Range"] == "bytes=1000000-", gets[1]
        assert other.check().clean

        # across pulls: no retries, the pull fails, the partial download stays and the next pull
        # resumes from it (Docker restarts from zero: moby#48539)
        eng3 = engine
        eng3.image_remove(ref, force=True)
        eng3.image_remove(f"{registry.host}/resume/big@{result.digest}", force=True) \
            if eng3.image_list(all=True) and any(i.id == rec.id for i in eng3.image_list(all=True)) else None
        assert not any(i.id == rec.id for i in eng3.image_list(all=True))
        eng3.registry_options = dataclasses.replace(eng3.registry_options, max_retries=0, **FAST)
        cut[digest] = 700_000
        with pytest.raises(Unavailable, match="resumes"):
            await eng3.image_pull(via)
        assert eng3.check().clean
        eng3.registry_options = dataclasses.replace(eng3.registry_options, max_retries=4)
        assert await eng3.image_pull(via) == rec.id
        gets = seen.blob_gets(digest)
        assert gets[-1]["Range"] == "bytes=700000-", gets[-1]
    finally:
        proxy.stop()
