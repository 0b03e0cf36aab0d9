"""Crash simulation (a failure between two writes) and the fsck consistency check."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from tests.unit.images.imgtestutil import make_tar

from engine.images.store import ImageStore
from engine.store import fsck
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore

TAR = make_tar({"a": b"1"})
DIFF = "sha256:" + hashlib.sha256(TAR).hexdigest()


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it by accident."""


def _crash(*_a: object, **_k: object) -> None:
    raise Crash


def _reopen(images: ImageStore, tmp_path: Path) -> ImageStore:
    """What the daemon does at startup: reopen the stores (temp cleanup) and gc."""
    fresh = ImageStore(images.meta, BlobStore(tmp_path), clock=images.clock)
    fresh.gc()
    return fresh


def _import(images: ImageStore, ref: str | None = "app") -> str:
    return images.import_tar(io.BytesIO(TAR), ref)


def test_crash_after_blob_before_metadata(images: ImageStore, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.meta, "put_image", _crash)
    with pytest.raises(Crash):
        _import(images)
    monkeypatch.undo()
    report = fsck.check(images.meta, images.blobs)
    assert report.ok and report.kinds() == {"blob"}
    assert fsck.check(_reopen(images, tmp_path).meta, images.blobs).clean


def test_crash_between_image_and_tag_rolls_back(images: ImageStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.meta, "set_tag", _crash)
    with pytest.raises(Crash):
        _import(images)
    monkeypatch.undo()
    assert images.meta.list_images() == [] and images.meta.list_layers() == []
    assert fsck.check(images.meta, images.blobs).kinds() == {"blob"}
    assert fsck.check(_reopen(images, tmp_path).meta, images.blobs).clean


def test_crash_during_ingest_leaves_only_temp(images: ImageStore, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.store.blobs.os.replace", _crash)
    monkeypatch.setattr("engine.store.blobs._unlink_quiet", lambda p: None)  # died: no cleanup
    with pytest.raises(Crash):
        _import(images)
    monkeypatch.undo()
    report = fsck.check(images.meta, images.blobs)
    assert report.ok and report.kinds() == {"temp"}
    assert fsck.check(images.meta, _reopen(images, tmp_path).blobs).clean


def test_crash_in_remove_after_metadata_commit(images: ImageStore, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _import(images)
    monkeypatch.setattr(images.blobs, "discard", _crash)
    with pytest.raises(Crash):
        images.remove("app")
    monkeypatch.undo()
    assert images.meta.list_images() == []
    assert fsck.check(images.meta, images.blobs).kinds() == {"blob"}
    assert fsck.check(_reopen(images, tmp_path).meta, images.blobs).clean


def test_crash_inside_remove_transaction_rolls_back(images: ImageStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = _import(images)
    monkeypatch.setattr(images.meta, "delete_image", _crash)
    with pytest.raises(Crash):
        images.remove("app")  # the untag happened first inside the same transaction
    monkeypatch.undo()
    assert images.lookup("app") == image_id
    assert fsck.check(images.meta, images.blobs).clean


def _raw_fk_off(meta: MetaStore, sql: str, args: tuple[object, ...]) -> None:
    meta._conn.execute("PRAGMA foreign_keys=OFF")
    meta._conn.execute(sql, args)
    meta._conn.execute("PRAGMA foreign_keys=ON")


def test_fsck_reports_dangling(images: ImageStore) -> None:
    image_id = _import(images)
    missing = "sha256:" + "f" * 64
    _raw_fk_off(images.meta, "INSERT INTO tags VALUES (?,?,?)", ("docker.io/library/x:latest",
                                                                  missing, 0.0))
    images.meta.put_container("c1", "web", missing, {})
    (Path(images.blobs.path(DIFF))).unlink()
    images.meta._conn.execute("UPDATE images SET config=? WHERE id=?", ("{}", image_id))
    report = fsck.check(images.meta, images.blobs)
    assert {(p.kind, p.subject) for p in report.dangling} == {
        ("tag", "docker.io/library/x:latest"), ("image_layer", image_id),
        ("image_config", image_id), ("container_image", "c1")}
    assert not report.ok and "dangling tag" in str(report)
    fixed = fsck.repair(images.meta, images.blobs, report)
    assert [p.kind for p in fixed] == ["tag"]
    assert "tag" not in fsck.check(images.meta, images.blobs).kinds()


def test_fsck_orphans_and_repair(images: ImageStore) -> None:
    stray = images.blobs.put_bytes(b"stray")
    tmp = Path(images.blobs.tmp_dir) / "ingest-x"
    tmp.write_bytes(b"partial")
    images.meta._conn.execute("INSERT INTO layers (chain_id, diff_id, parent, blob, size, snapshot) VALUES (?,?,?,?,?,?)",
                              (DIFF, DIFF, None, DIFF, 1, None))
    report = fsck.check(images.meta, images.blobs,
                        snapshots_present={"sha256:" + "e" * 64, "container-rw"})
    assert report.ok
    assert {(p.kind, p.subject) for p in report.orphans} == {
        ("blob", stray), ("temp", str(tmp)), ("layer", DIFF), ("snapshot", "sha256:" + "e" * 64)}
    fixed = fsck.repair(images.meta, images.blobs, report, temp=True)
    assert {p.kind for p in fixed} == {"blob", "temp", "layer"}
    assert fsck.check(images.meta, images.blobs).clean


def test_verify_blobs_detects_corruption(images: ImageStore) -> None:
    _import(images)
    Path(images.blobs.path(DIFF)).write_bytes(b"bitrot")
    assert fsck.check(images.meta, images.blobs).ok
    assert fsck.check(images.meta, images.blobs, verify_blobs=True).kinds() == {"blob_digest"}


def test_stale_layer_snapshots(images: ImageStore) -> None:
    _import(images)
    gone = "sha256:" + "d" * 64
    assert images.stale_layer_snapshots([DIFF, gone, "c1-rw"]) == [gone]
