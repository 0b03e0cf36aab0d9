"""save / load: round trips, formats, and every kind of bad input leaving the store unchanged."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument, NotFound
from engine.images import compress
from engine.images.load import LoadLimits
from engine.images.tarscan import ScanLimits
from tests.contract.engine import archives as A
from tests.contract.engine.helpers import output, run, spec


def saved(engine: Engine, *refs: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    engine.image_save(list(refs), buf, **kw)
    return buf.getvalue()


def state(engine: Engine) -> tuple[Any, ...]:
    imgs = sorted((i.id, i.repo_tags) for i in engine.image_list(all=True))
    return (engine.blobs.list(), imgs, engine.meta.list_layers())


def assert_unchanged(engine: Engine, before: tuple[Any, ...]) -> None:
    assert state(engine) == before
    report = engine.check()
    assert report.clean, str(report)
    tmp = os.path.join(engine.ctx.root, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []


async def test_save_load_round_trip_keeps_ids_and_bytes(engine: Engine, harness: Any) -> None:
    busybox = engine.image_inspect("busybox")
    data = saved(engine, "busybox")
    assert data == saved(engine, "busybox"), "save must be deterministic"
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        layout = json.load(tf.extractfile("oci-layout"))  # type: ignore[arg-type]
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert manifest[0]["Config"] == "blobs/sha256/" + busybox.id[7:]
    assert manifest[0]["Layers"] == ["blobs/sha256/" + d[7:] for d in busybox.diff_ids]
    ann = index["manifests"][0]["annotations"]
    assert ann == {"io.containerd.image.name": "docker.io/library/busybox:latest",
                   "org.opencontainers.image.ref.name": "latest"}
    assert names[:2] == ["blobs", "blobs/sha256"] and "repositories" in names

    # into the same engine after removal, and into a fresh engine
    engine.image_remove("busybox", force=True)
    events: list[dict[str, Any]] = []
    assert engine.image_load(io.BytesIO(data), progress=events.append) == ["busybox:latest"]
    again = engine.image_inspect("busybox")
    assert (again.id, again.diff_ids) == (busybox.id, busybox.diff_ids)
    assert events and events[-1]["status"] == "Loading layer"
    assert events[-1]["progressDetail"]["current"] == events[-1]["progressDetail"]["total"]
    assert saved(engine, "busybox") == data
    cid, code = await run(engine, spec("echo", "reloaded"))
    assert code == 0 and (await output(engine, cid))[0] == b"reloaded\n"
    assert engine.check().clean


async def test_load_is_idempotent_and_shares_layers(engine: Engine) -> None:
    base = engine.image_inspect("busybox")
    cid, _ = await run(engine, spec("sh", "-c", "echo 1 > /one"))
    child = await engine.container_commit(cid, "child:1")
    data = saved(engine, "busybox:latest", "child:1")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        layer_members = [n for n in tf.getnames() if n[13:] in {d[7:] for d in
                                                                  engine.image_inspect(child).diff_ids}]
    assert len(layer_members) == 2  # the shared base layer is written once
    blobs = engine.blobs.list()
    assert sorted(engine.image_load(io.BytesIO(data))) == ["busybox:latest", "child:1"]
    assert engine.blobs.list() == blobs
    assert engine.image_inspect("child:1").diff_ids[0] == base.diff_ids[0]


@pytest.mark.parametrize("packer", [gzip.compress, bz2.compress, lzma.compress], ids=["gz", "bz2", "xz"])
async def test_load_compressed_archives(engine: Engine, packer: Any) -> None:
    data = packer(saved(engine, "busybox"))
    engine.image_remove("busybox", force=True)
    assert engine.image_load(io.BytesIO(data)) == ["busybox:latest"]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_save_with_compressed_layers_loads_back(engine: Engine, compression: str) -> None:
    if compression == "zstd" and not compress.HAVE_ZSTD:
        pytest.skip("zstandard not installed")
    busybox = engine.image_inspect("busybox")
    data = saved(engine, "busybox", compression=compression)
    assert data == saved(engine, "busybox", compression=compression)
    engine.image_remove("busybox", force=True)
    engine.image_load(io.BytesIO(data))
    assert engine.image_inspect("busybox").id == busybox.id


async def test_load_legacy_docker_layout_with_symlinked_layers(engine: Engine) -> None:
    l1 = A.layer({"a": b"1"})
    data = A.docker_archive([l1, l1], ("legacy:1",), legacy=True)
    # make the second layer.tar a symlink to the first, as old docker save does for dupes
    assert engine.image_load(io.BytesIO(data)) == ["legacy:1"]
    assert engine.image_inspect("legacy:1").diff_ids == (A.sha(l1), A.sha(l1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        layers = [m for m in src.getmembers() if m.name.endswith("layer.tar")]
        for m in src.getmembers():
            if m is layers[1]:
                ti = tarfile.TarInfo(m.name)
                ti.type, ti.linkname = tarfile.SYMTYPE, "../" + layers[0].name
                dst.addfile(ti)
            else:
                dst.addfile(m, src.extractfile(m))
    engine.image_remove("legacy:1", force=True)
    assert engine.image_load(io.BytesIO(buf.getvalue())) == ["legacy:1"]


async def test_load_oci_layouts(engine: Engine) -> None:
    l1 = A.layer({"etc/oci": b"yes"})
    assert engine.image_load(io.BytesIO(A.oci_archive([l1]))) == ["oci:1"]
    assert engine.image_inspect("oci:1").diff_ids == (A.sha(l1),)
    # a bare tag in ref.name names no repository: loaded untagged, by id
    out = engine.image_load(io.BytesIO(A.oci_archive([A.layer({"x": b"2"})], name=None)))
    assert len(out) == 1 and out[0].startswith("sha256:")
    assert engine.image_load(io.BytesIO(A.oci_archive([A.layer({"y": b"3"})], name="nest:2",
                                                      nested=True))) == ["nest:2"]
    assert engine.check().clean


async def test_load_moves_an_existing_tag(engine: Engine) -> None:
    old = engine.image_inspect("busybox").id
    engine.image_load(io.BytesIO(A.docker_archive([A.layer({"f": b"1"})], ("busybox:latest",))))
    assert engine.image_inspect("busybox").id != old
    assert engine.image_inspect(old).repo_tags == ()


async def test_save_errors(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.image_save(["nosuch:1"], io.BytesIO())
    with pytest.raises(InvalidArgument):
        engine.image_save(["busybox"], io.BytesIO(), compression="lz4")


def _hostile(kind: str) -> bytes:
    def add(name: str, typ: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> Any:
        def f(tf: tarfile.TarFile) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.size = typ, link, len(data)
            tf.addfile(ti, io.BytesIO(data) if data else None)
        return f

    def chain(*fs: Any) -> Any:
        return lambda tf: [f(tf) for f in fs]

    if kind == "traversal":
        return A.layer({"ok": b"1"}, add("../../evil", data=b"x"))
    if kind == "absolute":
        return A.layer({"ok": b"1"}, add("/etc/evil", data=b"x"))
    if kind == "symlink-escape":
        return A.layer({}, chain(add("lnk", tarfile.SYMTYPE, "/"), add("lnk/etc/passwd", data=b"x")))
    if kind == "hardlink-escape":
        return A.layer({}, add("h", tarfile.LNKTYPE, "../../etc/shadow"))
    if kind == "device":
        return A.layer({}, add("dev/mem", tarfile.CHRTYPE))
    if kind == "header-bomb":
        def f(tf: tarfile.TarFile) -> None:
            ti = tarfile.TarInfo("big")
            ti.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
            tf.addfile(ti, io.BytesIO(b""))
        return A.layer({}, f)
    if kind == "not-a-tar":
        return b"hello, this is not a tar archive at all" * 20
    raise AssertionError(kind)


HOSTILE = ["traversal", "absolute", "symlink-escape", "hardlink-escape", "device", "header-bomb",
           "not-a-tar"]


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
async def test_hostile_layers_are_refused_at_load(engine: Engine, kind: str, gz: bool) -> None:
    before = state(engine)
    data = A.docker_archive([A.layer({"fine": b"ok"}), _hostile(kind)], compress_layers=gz)
    with pytest.raises(InvalidArgument) as exc:
        engine.image_load(io.BytesIO(data))
    assert "layer" in str(exc.value)
    assert_unchanged(engine, before)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_blob(data: bytes) -> bytes:
    """Corrupt one byte inside the first layer blob's content (not its header)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = max(tf.getmembers(), key=lambda m: m.size)
        pos = m.offset_data + m.size // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]


def _flip_header(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmembers()[3]
    pos = m.offset + 10
    return data[:pos] + bytes([data[pos] ^ 0x55]) + data[pos + 1:]


def _rewrite(data: bytes, change: Any) -> bytes:
    """Copy the archive, letting ``change(name, bytes) -> bytes | None`` edit or drop members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            content = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if content is not None:
                content = change(m.name, content)
                if content is None:
                    continue
                m.size = len(content)
            dst.addfile(m, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def _drop_layer(data: bytes) -> bytes:
    manifest = json.loads(_member(data, "manifest.json"))
    gone = manifest[0]["Layers"][0]
    return _rewrite(data, lambda n, c: None if n == gone else c)


def _absent_layer(data: bytes) -> bytes:
    def change(name: str, content: bytes) -> bytes:
        if name == "manifest.json":
            doc = json.loads(content)
            doc[0]["Layers"][0] = "0123456789abcdef/layer.tar"
            return json.dumps(doc).encode()
        return content
    return _rewrite(data, change)


def _wrong_diff_id(data: bytes) -> bytes:
    """Config names a diff_id the layer does not hash to (config renamed consistently)."""
    manifest = json.loads(_member(data, "manifest.json"))
    cfg_name = manifest[0]["Config"]
    cfg = json.loads(_member(data, cfg_name))
    cfg["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    new_cfg = json.dumps(cfg).encode()
    new_name = "blobs/sha256/" + A.sha(new_cfg)[7:]

    def change(name: str, content: bytes) -> bytes | None:
        if name == cfg_name:
            return None
        if name == "manifest.json":
            manifest[0]["Config"] = new_name
            return json.dumps(manifest).encode()
        if name == "index.json":
            return None
        return content
    out = _rewrite(data, change)
    return _append(out, new_name, new_cfg)


def _member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.extractfile(name).read()  # type: ignore[union-attr]


def _append(data: bytes, name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        ti = tarfile.TarInfo(name)
        ti.size = len(content)
        dst.addfile(ti, io.BytesIO(content))
    return out.getvalue()


def _oci_wrong_size(data: bytes) -> bytes:
    def change(name: str, content: bytes) -> bytes | None:
        if name == "manifest.json":
            return None
        if name == "index.json":
            doc = json.loads(content)
            doc["manifests"][0]["size"] += 1
            return json.dumps(doc).encode()
        return content
    return _rewrite(data, change)


def _oci_wrong_digest(data: bytes) -> bytes:
    def change(name: str, content: bytes) -> bytes | None:
        if name == "manifest.json":
            return None
        if name == "index.json":
            doc = json.loads(content)
            doc["manifests"][0]["digest"] = "sha256:" + "1" * 64
            return json.dumps(doc).encode()
        return content
    return _rewrite(data, change)


BAD = {
    "truncated": _truncate,
    "corrupt-blob": _flip_blob,
    "corrupt-header": _flip_header,
    "missing-layer-blob": _drop_layer,
    "manifest-names-absent-layer": _absent_layer,
    "wrong-diff-id": _wrong_diff_id,
    "oci-wrong-size": _oci_wrong_size,
    "oci-missing-manifest": _oci_wrong_digest,
    "empty": lambda d: b"",
    "garbage": lambda d: b"\x00\x01garbage" * 100,
    "truncated-gzip": lambda d: gzip.compress(d)[:-100],
    "json-only": lambda d: A.tar_of({"manifest.json": b"{not json"}),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_archives_leave_the_store_unchanged(engine: Engine, case: str) -> None:
    cid, _ = await run(engine, spec("sh", "-c", "echo 1 > /one"))
    await engine.container_commit(cid, "child:1")
    data = saved(engine, "busybox", "child:1")
    engine.image_remove("child:1", force=True)
    before = state(engine)
    with pytest.raises(InvalidArgument) as exc:
        engine.image_load(io.BytesIO(BAD[case](data)))
    assert str(exc.value)
    assert_unchanged(engine, before)
    # still usable: the good archive loads
    assert "child:1" in engine.image_load(io.BytesIO(data))


async def test_decompression_bombs_are_refused(engine: Engine) -> None:
    limits = LoadLimits(bomb=compress.BombLimits(max_bytes=1 << 30, max_ratio=50,
                                                 ratio_floor=1 << 20))
    zeros = A.layer({"zeros": bytes(4 << 20)})
    before = state(engine)
    with pytest.raises(InvalidArgument, match="bomb"):
        engine.image_load(io.BytesIO(A.docker_archive([zeros], compress_layers=True)), limits=limits)
    assert_unchanged(engine, before)
    with pytest.raises(InvalidArgument, match="bomb"):
        engine.image_load(io.BytesIO(gzip.compress(A.docker_archive([zeros]))), limits=limits)
    assert_unchanged(engine, before)
    small = LoadLimits(layer=ScanLimits(max_bytes=1 << 20))
    with pytest.raises(InvalidArgument, match="exceeds"):
        engine.image_load(io.BytesIO(A.docker_archive([zeros])), limits=small)
    assert_unchanged(engine, before)
    # the same archive within the default limits is fine
    assert engine.image_load(io.BytesIO(A.docker_archive([zeros], ("zeros:1",)))) == ["zeros:1"]
