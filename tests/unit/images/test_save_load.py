"""save/load over a bare ImageStore (no kernel), config serialisation, gc of spool dirs."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from engine.images import config as c
from engine.images import oci
from engine.images.load import load
from engine.images.save import save
from engine.images.store import ImageStore
from engine.store import fsck
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore
from tests.unit.images.imgtestutil import make_tar


def test_round_trip_between_stores(images: ImageStore, tmp_path: Path) -> None:
    a = images.import_tar(io.BytesIO(make_tar({"a": b"1"})), "one:1")
    b = images.commit(io.BytesIO(make_tar({"b": b"2"})), a, {"Cmd": ["sh"]}, "two:2")
    out = io.BytesIO()
    assert save(images, ["two:2", "one"], out) == [b, a]
    other_root = tmp_path / "other"
    meta = MetaStore(other_root)
    try:
        other = ImageStore(meta, BlobStore(other_root))
        got = load(other, io.BytesIO(out.getvalue()))
        assert [(i, tags) for i, tags, _ in got] == [(b, ["two:2"]), (a, ["one:1"])]
        assert other.inspect("two:2").diff_ids == images.inspect("two:2").diff_ids
        assert fsck.check(other.meta, other.blobs).clean
        again = io.BytesIO()
        save(other, ["two:2", "one"], again)
        assert again.getvalue() == out.getvalue()
    finally:
        meta.close()


def test_saved_layout_is_oci(images: ImageStore) -> None:
    a = images.import_tar(io.BytesIO(make_tar({"a": b"1"})))
    out = io.BytesIO()
    save(images, [a[7:19]], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        (desc,) = index["manifests"]
        assert "annotations" not in desc  # untagged
        manifest = json.load(tf.extractfile(oci.blob_path(desc["digest"])))  # type: ignore[arg-type]
        assert manifest["mediaType"] == oci.OCI_MANIFEST
        assert manifest["config"]["digest"] == a
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] is None  # type: ignore[arg-type]
        for m in tf.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")


def test_config_bytes_follow_go_struct_order() -> None:
    doc = c.new_config(diff_ids=["sha256:" + "a" * 64], created=1.5, architecture="amd64",
                       os="linux", author="me", comment="hi",
                       container_config={"Cmd": ["sh"], "Env": ["A=<&>"], "User": "u",
                                         "Labels": {"b": "1", "a": "2"}})
    text = c.canonical_json(doc).decode()
    assert text.startswith('{"created":"1970-01-01T00:00:01.5Z","author":"me","architecture":"amd64",'
                           '"os":"linux",'
                           '"config":{"User":"u","Env":["A=\\u003c\\u0026\\u003e"],"Cmd":["sh"],'
                           '"Labels":{"a":"2","b":"1"}},"rootfs":{"type":"layers","diff_ids":')
    assert '"history":[{"created":"1970-01-01T00:00:01.5Z","author":"me","comment":"hi"}]' in text
    assert c.parse_config(text)["config"]["Env"] == ["A=<&>"]
    assert c.format_time(0) == "1970-01-01T00:00:00Z"


def test_gc_removes_spool_dirs_left_by_a_crash(images: ImageStore) -> None:
    spool = os.path.join(images.blobs.root, "tmp", "load-crashed")
    os.makedirs(spool)
    Path(spool, "m0").write_bytes(b"partial")
    images.gc()
    assert not os.path.exists(spool)


def test_gzip_save_is_pgzip_and_reproducible(images: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``save --compression gzip``: each layer is the parallel compressor's single gzip member —
    the bytes ``push`` would send for it — and the archive is byte-identical whatever the number
    of compressing threads."""
    import gzip
    import hashlib

    from engine.images import pgzip

    diff = make_tar({"big": os.urandom(1 << 20) + b"text " * 600_000, "small": b"x"})
    images.commit(io.BytesIO(diff), None, {"Cmd": ["sh"]}, "gz:1")
    saved = []
    for cpus in (1, 2, 8):
        monkeypatch.setattr(pgzip.os, "cpu_count", lambda n=cpus: n)
        out = io.BytesIO()
        save(images, ["gz:1"], out, compression="gzip")
        saved.append(out.getvalue())
    assert saved[0] == saved[1] == saved[2]
    with tarfile.open(fileobj=io.BytesIO(saved[0])) as tf:
        (entry,) = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        (layer,) = entry["Layers"]
        blob = tf.extractfile(layer).read()  # type: ignore[union-attr]
    assert blob == pgzip.compress_bytes(diff)
    assert layer == oci.blob_path("sha256:" + hashlib.sha256(blob).hexdigest())
    assert gzip.decompress(blob) == diff
