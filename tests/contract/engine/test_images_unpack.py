"""``load`` through the daemon's path (``image_load_async``) unpacks the layers into their
snapshots while the archive streams (engine.images.unpack): the result equals unpacking them
later, the fallbacks work, and a refused load leaves no snapshot (staged or bound) behind."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument
from engine.images import load as _load
from engine.images.config import chain_ids
from engine.images.unpack import STAGING_PREFIX
from tests.contract.engine import archives as A
from tests.contract.engine.helpers import output, run, spec
from tests.contract.engine.test_images_archive import BAD, HOSTILE, _hostile, assert_unchanged, saved, state


@pytest.fixture(autouse=True)
def _stage_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_load, "_STAGE_MIN", 0)  # the test layers are small


async def snapshot_keys(engine: Engine) -> set[str]:
    return {s.key for s in await engine.kernel.list()}


def _hardlink_to_lower(tf: tarfile.TarFile) -> None:
    ti = tarfile.TarInfo("etc/again")
    ti.type, ti.linkname = tarfile.LNKTYPE, "etc/motd"
    tf.addfile(ti)


async def test_load_unpacks_every_layer_in_any_order(engine: Engine) -> None:
    bottom = A.layer({"etc/motd": b"hello\n", "usr/lib/a": b"a"})
    middle = A.layer({"usr/lib/b": b"b"})  # implies usr/ and usr/lib/ over the bottom's
    top = A.layer({"srv/x": b"x"}, _hardlink_to_lower)  # needs its parent: not stageable
    data = A.docker_archive([bottom, middle, top], ("stack:1",))
    before = await snapshot_keys(engine)
    assert await engine.image_load_async(io.BytesIO(data)) == ["stack:1"]
    img = engine.image_inspect("stack:1")
    chain = chain_ids(list(img.diff_ids))
    infos = {s.key: s for s in await engine.kernel.list()}
    assert set(infos) - before == set(chain)
    assert [infos[k].parent for k in chain] == [None, *chain[:-1]]
    assert engine.check().clean
    target = os.path.join(engine.ctx.root, "view")
    await engine.kernel.mount(chain[-1], target)
    try:
        got = [await engine.kernel.read_file(target, p)
               for p in ("/etc/again", "/usr/lib/a", "/usr/lib/b", "/srv/x")]
    finally:
        await engine.kernel.unmount(target)
    assert got == [b"hello\n", b"a", b"b", b"x"]
    # loading it again finds everything there
    assert await engine.image_load_async(io.BytesIO(data)) == ["stack:1"]
    assert await snapshot_keys(engine) - before == set(chain)


async def test_load_over_layers_already_unpacked(engine: Engine) -> None:
    """busybox's layer is unpacked by the first run; a saved child shares it."""
    cid, _ = await run(engine, spec("sh", "-c", "echo 1 > /one"))
    await engine.container_commit(cid, "child:1")
    data = saved(engine, "busybox", "child:1")
    engine.image_remove("child:1", force=True)
    await engine.forget_image_snapshots()
    assert "child:1" in await engine.image_load_async(io.BytesIO(data))
    cid2, code = await run(engine, spec("cat", "/one", image="child:1"))
    assert code == 0 and (await output(engine, cid2))[0] == b"1\n"
    assert not any(k.startswith("staging-") for k in await snapshot_keys(engine))
    assert engine.check().clean


@pytest.mark.parametrize("kind", HOSTILE)
async def test_hostile_layers_leave_no_snapshot(engine: Engine, kind: str) -> None:
    before, keys = state(engine), await snapshot_keys(engine)
    data = A.docker_archive([A.layer({"fine": b"ok"}), _hostile(kind)])
    with pytest.raises(InvalidArgument):
        await engine.image_load_async(io.BytesIO(data))
    assert_unchanged(engine, before)
    assert await snapshot_keys(engine) == keys


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_archives_leave_no_snapshot(engine: Engine, case: str) -> None:
    cid, _ = await run(engine, spec("sh", "-c", "echo 1 > /one"))
    await engine.container_commit(cid, "child:1")
    data = saved(engine, "busybox", "child:1")
    engine.image_remove("child:1", force=True)
    await engine.forget_image_snapshots()
    before, keys = state(engine), await snapshot_keys(engine)
    with pytest.raises(InvalidArgument):
        await engine.image_load_async(io.BytesIO(BAD[case](data)))
    assert_unchanged(engine, before)
    assert await snapshot_keys(engine) == keys
    assert "child:1" in await engine.image_load_async(io.BytesIO(data))


async def test_a_kernel_refusal_rolls_back_the_whole_load(engine: Engine, monkeypatch: Any) -> None:
    """A layer the store accepts but the kernel refuses: no image, no snapshot, no blob."""
    before, keys = state(engine), await snapshot_keys(engine)
    first = A.layer({"a/one": b"1"})
    second = A.layer({"b/two": b"2"})
    real = engine.kernel.apply_layer
    calls = []

    async def refuse_fallback(key: str, parent: Any, tar: Any, limits: Any = None) -> Any:
        calls.append(key)
        if key.startswith("sha256:") and parent is not None:
            raise OSError(22, "refused by the kernel", key)
        return await real(key, parent, tar, limits)

    async def no_bind(staged: str, key: str, parent: Any) -> Any:
        raise OSError(22, "no bind today", staged)

    monkeypatch.setattr(engine.kernel, "apply_layer", refuse_fallback)
    monkeypatch.setattr(engine.kernel, "bind_layer", no_bind)
    with pytest.raises(InvalidArgument) as exc:
        await engine.image_load_async(io.BytesIO(A.docker_archive([first, second], ("two:1",))))
    assert "cannot unpack layer" in str(exc.value)
    assert_unchanged(engine, before)
    assert await snapshot_keys(engine) == keys


@pytest.mark.parametrize("form", ["docker-gzip", "oci-gzip"])
async def test_compressed_layers_are_staged_while_they_stream(engine: Engine, monkeypatch: Any,
                                                              form: str) -> None:
    """gzip layers (``docker save`` of pulled images, OCI archives) are decoded and unpacked
    while the archive streams, like uncompressed ones: every snapshot is a bound staging one,
    none is unpacked from the store afterwards; the store keeps the compressed blobs."""
    bottom = A.layer({"etc/motd": b"hello\n", "usr/lib/a": b"a"})
    top = A.layer({"usr/lib/b": b"b", "srv/x": b"x"})
    if form == "docker-gzip":
        data, ref = A.docker_archive([bottom, top], ("gz:1",), compress_layers=True), "gz:1"
    else:
        data, ref = A.oci_archive([bottom, top], "docker.io/library/gz:1"), "gz:1"
    applied: list[str] = []
    real = engine.kernel.apply_layer

    async def record_apply(key: str, parent: Any, tar: Any, limits: Any = None) -> Any:
        applied.append(key)
        return await real(key, parent, tar, limits)

    monkeypatch.setattr(engine.kernel, "apply_layer", record_apply)
    before = await snapshot_keys(engine)
    assert await engine.image_load_async(io.BytesIO(data)) == [ref]
    assert applied and all(k.startswith(STAGING_PREFIX) for k in applied), applied
    img = engine.image_inspect(ref)
    chain = chain_ids(list(img.diff_ids))
    assert await snapshot_keys(engine) - before == set(chain)
    for diff_id in img.diff_ids:
        stored = engine.image_store.stored_layer(diff_id)
        assert stored is not None and stored.compressed and stored.media_type is not None
    target = os.path.join(engine.ctx.root, "view")
    await engine.kernel.mount(chain[-1], target)
    try:
        got = [await engine.kernel.read_file(target, p) for p in ("/etc/motd", "/usr/lib/b", "/srv/x")]
    finally:
        await engine.kernel.unmount(target)
    assert got == [b"hello\n", b"b", b"x"]
    assert engine.check().clean
    # what it saves loads back unchanged (the exact diff bytes)
    assert engine.image_inspect(ref).diff_ids == img.diff_ids
    again = saved(engine, ref)
    engine.image_remove(ref, force=True)
    assert await engine.image_load_async(io.BytesIO(again)) == [ref]
    assert engine.image_inspect(ref).id == img.id


@pytest.mark.parametrize("kind", ["traversal", "not-a-tar", "corrupt-gzip", "wrong-diff-id"])
async def test_refused_compressed_layers_leave_no_snapshot(engine: Engine, kind: str) -> None:
    before, keys = state(engine), await snapshot_keys(engine)
    fine = A.layer({"fine": b"ok"})
    if kind == "corrupt-gzip":
        blob = bytearray(gzip.compress(A.layer({"f": os.urandom(4096)}), mtime=0))
        blob[len(blob) // 2] ^= 0xFF
        data = _gz_archive([fine, bytes(blob)], [A.sha(fine), A.sha(b"x")])
    elif kind == "wrong-diff-id":
        other = A.layer({"other": b"1"})
        data = _gz_archive([gzip.compress(fine, mtime=0), gzip.compress(other, mtime=0)],
                           [A.sha(fine), A.sha(fine + b"\0")])
    else:
        data = A.docker_archive([fine, _hostile(kind)], compress_layers=True)
    with pytest.raises(InvalidArgument) as exc:
        await engine.image_load_async(io.BytesIO(data))
    assert "layer" in str(exc.value)
    assert_unchanged(engine, before)
    assert await snapshot_keys(engine) == keys


def _gz_archive(blobs: list[bytes], diff_ids: list[str]) -> bytes:
    """A docker-archive of the given (compressed) layer blobs with the given diff_ids."""
    cfg = A.config(diff_ids)
    members = {"blobs/sha256/" + A.sha(b)[7:]: b for b in blobs}
    members["blobs/sha256/" + A.sha(cfg)[7:]] = cfg
    members["manifest.json"] = json.dumps([{"Config": "blobs/sha256/" + A.sha(cfg)[7:],
                                            "RepoTags": ["bad:1"],
                                            "Layers": ["blobs/sha256/" + A.sha(b)[7:] for b in blobs]}]).encode()
    return A.tar_of(members, {})


async def test_many_compressed_layers_load_with_bounded_decodes(engine: Engine) -> None:
    """More gzip layers than decodes run at once (load_spool.MAX_DECODES): all staged, in order."""
    from engine.images import load_spool

    n = load_spool.MAX_DECODES * 2 + 1
    layers = [A.layer({f"l{i}/f": str(i).encode(), "shared": str(i).encode()}) for i in range(n)]
    assert await engine.image_load_async(io.BytesIO(A.docker_archive(layers, ("many:1",),
                                                                      compress_layers=True))) == ["many:1"]
    chain = chain_ids(list(engine.image_inspect("many:1").diff_ids))
    target = os.path.join(engine.ctx.root, "view")
    await engine.kernel.mount(chain[-1], target)
    try:
        assert await engine.kernel.read_file(target, "/shared") == str(n - 1).encode()
        assert await engine.kernel.read_file(target, "/l0/f") == b"0"
    finally:
        await engine.kernel.unmount(target)
    assert not any(k.startswith(STAGING_PREFIX) for k in await snapshot_keys(engine))
    assert engine.check().clean
