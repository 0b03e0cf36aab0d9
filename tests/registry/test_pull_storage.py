"""How pulled layers are stored: the verified compressed blob as downloaded (no uncompressed
copy), read back through ``ImageStore.open_layer`` by every reader (save, export, container
creation, fsck), shared with loaded/imported layers by the rule of engine.images.layerblob."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument
from engine.images import oci
from engine.store import fsck
from tests.contract.engine.helpers import spec
from tests.registry.rigs import AppThread, Fake, config_for, gzip_bytes, layer_tar

pytestmark = pytest.mark.timeout(120)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image(f: Fake, tars: list[bytes], repo: str = "a/b", tag: str = "1") -> list[bytes]:
    gz = [gzip_bytes(t) for t in tars]
    f.add_image(repo, tag, config_for(tars), gz)
    return gz


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def test_pulled_layers_stay_compressed(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    tars = [layer_tar({f"d{i}/f": os.urandom(5000) + b"x" * 20000}) for i in range(2)]
    gz = _image(f, tars)
    image_id = await engine.image_pull(f"{t.host}/a/b:1")
    rows = engine.meta.image_layers(image_id)
    assert [r.blob for r in rows] == [_digest(g) for g in gz]
    assert [r.diff_id for r in rows] == [_digest(x) for x in tars]
    assert [r.size for r in rows] == [len(x) for x in tars]  # uncompressed sizes
    assert {r.media_type for r in rows} == {oci.DOCKER_LAYER_GZIP}
    for r, g, x in zip(rows, gz, tars):
        assert not engine.blobs.exists(r.diff_id)  # no uncompressed copy
        assert engine.blobs.read_bytes(r.blob) == g
        found = engine.image_store.compressed_layer(r.diff_id)
        assert found is not None and (found.blob, found.media_type) == (r.blob, oci.DOCKER_LAYER_GZIP)
        with engine.image_store.open_layer(r.blob, verify=True) as fh:
            assert fh.read() == x
        with engine.image_store.open_layer(r.diff_id) as fh:
            assert fh.read() == x
    assert engine.image_inspect(image_id).size == sum(len(x) for x in tars)
    assert os.listdir(engine.image_store.blobs.root + "/tmp/pull") == []
    assert engine.check().clean
    assert fsck.check(engine.meta, engine.blobs, verify_blobs=True).clean

    # save writes the exact uncompressed diffs (digest == diff_id), so digests round-trip
    buf = io.BytesIO()
    engine.image_save([f"{t.host}/a/b:1"], buf)
    members = _members(buf.getvalue())
    for x in tars:
        assert members[oci.blob_path(_digest(x))] == x
    assert members[oci.blob_path(image_id)]
    # gzip on request: the stored gzip blobs go as they are
    buf = io.BytesIO()
    engine.image_save([f"{t.host}/a/b:1"], buf, compression="gzip")
    members = _members(buf.getvalue())
    for g in gz:
        assert members[oci.blob_path(_digest(g))] == g

    # load of that archive into the same store reuses the compressed blobs: nothing orphaned
    buf.seek(0)
    await engine.image_load_async(buf)
    assert all(not engine.blobs.exists(_digest(x)) for x in tars)
    assert engine.check().clean


async def test_layers_read_back_for_containers(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    tars = [layer_tar({"etc/a": b"one\n"}), layer_tar({"etc/b": b"two\n"})]
    _image(f, tars)
    image_id = await engine.image_pull(f"{t.host}/a/b:1")
    # the unpack fallback: the layer snapshots are gone, container creation applies the blobs
    async with engine.containers._snapshot_lock:
        for chain_id, _d, _b in reversed(engine.image_store.layer_chain(image_id)):
            await engine.kernel.remove(chain_id)
    c = await engine.container_create(spec("true", image=f"{t.host}/a/b:1"))
    buf = io.BytesIO()
    await engine.container_export(c.id, buf)
    members = _members(buf.getvalue())
    assert members["etc/a"] == b"one\n" and members["etc/b"] == b"two\n"
    await engine.container_remove(c.id, force=True)


async def test_shared_layer_in_either_form(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    base = layer_tar({"base": os.urandom(3000)})
    top = layer_tar({"top": os.urandom(3000)})
    engine.image_store.import_tar(io.BytesIO(base), "local:1")  # stored uncompressed
    gz = _image(f, [base, top])
    image_id = await engine.image_pull(f"{t.host}/a/b:1")
    assert f.seen.blob_gets(_digest(gz[0])) == []  # "Already exists": not downloaded
    rows = engine.meta.image_layers(image_id)
    assert [r.blob for r in rows] == [_digest(base), _digest(gz[1])]
    assert [r.media_type for r in rows] == [None, oci.DOCKER_LAYER_GZIP]
    # a second image on the pulled (compressed) layer at another position: reused, not fetched
    other = layer_tar({"other": b"o"})
    gz2 = _image(f, [top, other], repo="c/d")
    fetched = len(f.seen.blob_gets(_digest(gz2[0])))
    await engine.image_pull(f"{t.host}/c/d:1")
    assert len(f.seen.blob_gets(_digest(gz2[0]))) == fetched
    assert engine.check().clean
    assert fsck.check(engine.meta, engine.blobs, verify_blobs=True).clean
    # the compressed blob outlives the first image while the second one uses it
    engine.image_remove(f"{t.host}/a/b:1")
    assert engine.blobs.exists(_digest(gz[1]))
    assert engine.check().clean


async def test_damaged_compressed_blob_is_reported(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    tars = [layer_tar({"f": os.urandom(20000)})]
    gz = _image(f, tars)
    await engine.image_pull(f"{t.host}/a/b:1")
    path = engine.blobs.path(_digest(gz[0]))
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match="layer"):
        engine.image_save([f"{t.host}/a/b:1"], io.BytesIO())
    report = fsck.check(engine.meta, engine.blobs, verify_blobs=True)
    assert {"blob_digest", "layer_content"} <= report.kinds(), str(report)


async def test_failed_pull_leaves_no_blob(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    good, bad = layer_tar({"g": os.urandom(2000)}), layer_tar({"b": os.urandom(2000)})
    gz = _image(f, [good, bad])
    f.blobs[_digest(gz[1])] = gzip_bytes(layer_tar({"../escape": b"x"}))  # wrong content
    with pytest.raises(InvalidArgument):
        await engine.image_pull(f"{t.host}/a/b:1")
    assert engine.blobs.list() == sorted(engine.meta.referenced_blobs())
    assert not engine.blobs.exists(_digest(gz[0]))
    assert engine.check().clean


async def test_registry_without_range_support(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    """Cut mid-blob, then the registry answers the ``Range`` request with the whole blob (200):
    the unpack that already consumed the first half starts over, and the result is right."""
    import asyncio

    from aiohttp import web

    f, t = fake
    engine.registry_options = dataclasses.replace(engine.registry_options, backoff=0.01, max_backoff=0.05)
    tars = [layer_tar({f"f{i}": os.urandom(40_000) for i in range(20)})]
    gz = _image(f, tars)
    digest, data = _digest(gz[0]), gz[0]
    calls = []

    async def override(request: web.Request) -> web.StreamResponse | None:
        if not request.path.endswith("/blobs/" + digest):
            return None
        calls.append(request.headers.get("Range"))
        if len(calls) > 1:
            return web.Response(body=data)  # Range ignored: 200 from byte 0
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[:len(data) // 2])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    f.override = override
    image_id = await engine.image_pull(f"{t.host}/a/b:1")
    assert calls[0] is None and calls[1] == f"bytes={len(data) // 2}-"
    with engine.image_store.open_layer(engine.meta.image_layers(image_id)[0].blob, verify=True) as fh:
        assert fh.read(len(tars[0]) + 1) == tars[0]
    assert engine.check().clean
