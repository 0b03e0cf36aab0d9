"""``load`` through the daemon's path (``image_load_async``) unpacks the layers into their
snapshots while the archive streams (engine.images.unpack): the result equals unpacking them
later, the fallbacks work, and a refused load leaves no snapshot (staged or bound) behind."""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument
from engine.images import load as _load
from engine.images.config import chain_ids
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
