"""SQLite metadata store on tmp_path: transactions, images/layers/tags, containers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, Conflict, NotFound
from engine.store.meta import SCHEMA_VERSION, ImageRow, LayerRow, MetaStore

I1 = "sha256:" + "1" * 64
I2 = "sha256:" + "2" * 64
L1 = LayerRow("sha256:" + "a" * 64, "sha256:" + "a" * 64, None, "sha256:" + "a" * 64, 10)
L2 = LayerRow("sha256:" + "b" * 64, "sha256:" + "c" * 64, L1.chain_id, "sha256:" + "c" * 64, 20)


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetaStore]:
    m = MetaStore(tmp_path)
    yield m
    m.close()


def _img(id_: str, parent: str | None = None, added: float = 1.0) -> ImageRow:
    return ImageRow(id_, "{}", "2024-01-01T00:00:00Z", 30, parent, added)


def test_schema_and_pragmas(meta: MetaStore, tmp_path: Path) -> None:
    assert meta.schema_version == SCHEMA_VERSION
    assert (tmp_path / "metadata.db").exists()
    assert meta._query("PRAGMA journal_mode")[0][0] == "wal"
    assert meta._query("PRAGMA foreign_keys")[0][0] == 1


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with MetaStore(tmp_path) as m:
        m.put_image(_img(I1), [L1])
        m.set_tag("docker.io/library/a:latest", I1)
    with MetaStore(tmp_path) as m:
        assert m.get_tag("docker.io/library/a:latest") == I1
        assert m.get_image(I1) is not None


def test_images_layers_refcount(meta: MetaStore) -> None:
    meta.put_image(_img(I1), [L1])
    meta.put_image(_img(I2, parent=I1, added=2.0), [L1, L2])
    assert meta.get_image(I2).layers == (L1.chain_id, L2.chain_id)  # type: ignore[union-attr]
    assert [lr.chain_id for lr in meta.image_layers(I2)] == [L1.chain_id, L2.chain_id]
    assert meta.layer_refcount(L1.chain_id) == 2
    assert meta.children(I1) == [I2]
    with pytest.raises(AlreadyExists):
        meta.put_image(_img(I1), [L1])
    with pytest.raises(Conflict):
        meta.delete_layer(L1.chain_id)
    assert meta.delete_image(I2) == [L2]
    assert meta.layer_refcount(L1.chain_id) == 1
    assert meta.delete_image(I1) == [L1]
    assert meta.list_layers() == []
    with pytest.raises(NotFound):
        meta.delete_image(I1)


def test_tags(meta: MetaStore) -> None:
    meta.put_image(_img(I1), [L1])
    meta.put_image(_img(I2), [L2])
    assert meta.set_tag("r:a", I1) is None
    assert meta.set_tag("r:b", I1) is None
    assert meta.set_tag("r:a", I2) == I1
    assert meta.tags_for(I1) == ["r:b"]
    assert meta.list_tags() == {"r:a": I2, "r:b": I1}
    assert meta.delete_tag("r:b") and not meta.delete_tag("r:b")
    with pytest.raises(NotFound):
        meta.set_tag("r:c", "sha256:" + "9" * 64)
    meta.delete_image(I2)  # tags cascade
    assert meta.get_tag("r:a") is None


def test_transaction_rolls_back_on_crash(meta: MetaStore) -> None:
    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        with meta.transaction():
            meta.put_image(_img(I1), [L1])
            raise Crash  # "power loss" between the image and its tag
            meta.set_tag("r:a", I1)  # noqa: unreachable
    assert meta.get_image(I1) is None and meta.list_layers() == []
    meta.put_image(_img(I1), [L1])  # the store is still usable


def test_nested_savepoint(meta: MetaStore) -> None:
    with meta.transaction():
        meta.put_image(_img(I1), [L1])
        with pytest.raises(NotFound):
            with meta.transaction():
                meta.set_tag("r:a", I1)
                meta.set_tag("r:b", "sha256:" + "9" * 64)
        meta.set_tag("r:c", I1)
    assert meta.list_tags() == {"r:c": I1}


def test_uncommitted_is_invisible_after_close(tmp_path: Path) -> None:
    m = MetaStore(tmp_path)
    m._conn.execute("BEGIN IMMEDIATE")
    m._conn.execute("INSERT INTO images VALUES (?,?,?,?,?,?)", (I1, "{}", "x", 0, None, 0.0))
    m._conn.close()  # crash: no commit
    with MetaStore(tmp_path) as m2:
        assert m2.get_image(I1) is None


def test_containers(meta: MetaStore) -> None:
    meta.put_container("c1", "web", I1, {"State": {"Status": "created"}}, created=1.0)
    meta.put_container("c2", "db", I1, {"x": 1}, created=2.0)
    assert meta.get_container("c1").doc == {"State": {"Status": "created"}}
    meta.put_container("c1", "web", I1, {"State": {"Status": "running"}})
    row = meta.get_container("c1")
    assert row.doc["State"]["Status"] == "running" and row.created == 1.0
    assert [c.id for c in meta.list_containers()] == ["c1", "c2"]
    assert meta.containers_using(I1) == ["c1", "c2"]
    with pytest.raises(AlreadyExists, match='"/db" is already in use by container "c2"'):
        meta.put_container("c3", "db", I1, {})
    with pytest.raises(AlreadyExists):
        meta.rename_container("c1", "db")
    meta.rename_container("c1", "front")
    assert meta.find_container("front").id == "c1"  # type: ignore[union-attr]
    assert meta.find_container("web") is None
    with pytest.raises(NotFound, match="No such container: nope"):
        meta.rename_container("nope", "x")
    meta.delete_container("c1")
    with pytest.raises(NotFound):
        meta.get_container("c1")
    with pytest.raises(NotFound):
        meta.delete_container("c1")
    assert meta.container_ids() == ["c2"]


def test_non_durable_container_commit(tmp_path: Path) -> None:
    """``durable=False`` skips the WAL sync of that one commit only: the row is there for a
    reader at once and after a reopen (a process crash keeps the WAL), the pragma is restored,
    a name clash still raises, and inside a transaction the outer commit decides."""
    with MetaStore(tmp_path) as m:
        m.put_container("c1", "web", I1, {"State": {"Status": "created"}})
        m.put_container("c1", "web", I1, {"State": {"Status": "running"}}, durable=False)
        assert m.get_container("c1").doc["State"]["Status"] == "running"
        assert m._query("PRAGMA synchronous")[0][0] == 2  # FULL again
        with pytest.raises(AlreadyExists):
            m.put_container("c2", "web", I1, {}, durable=False)
        assert m._query("PRAGMA synchronous")[0][0] == 2
        with m.transaction():
            m.put_container("c3", "db", I1, {}, durable=False)
            assert m._query("PRAGMA synchronous")[0][0] == 2
    with MetaStore(tmp_path) as m:
        assert m.get_container("c1").doc["State"]["Status"] == "running"
        assert m.container_ids() == ["c1", "c3"]


def test_threads_share_one_connection(meta: MetaStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                meta.put_container(f"c{n}-{i}", f"n{n}-{i}", I1, {"i": i})
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(meta.list_containers()) == 80


def test_version_1_store_gains_layer_media_type(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "metadata.db")
    conn.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE layers (chain_id TEXT PRIMARY KEY, diff_id TEXT NOT NULL, parent TEXT,
                             blob TEXT NOT NULL, size INTEGER NOT NULL, snapshot TEXT);
    """)
    conn.execute("INSERT INTO layers VALUES (?,?,?,?,?,?)", (L1.chain_id, L1.diff_id, None, L1.blob, 10, None))
    conn.commit()
    conn.close()
    with MetaStore(tmp_path) as m:
        assert m.schema_version == SCHEMA_VERSION == 2
        assert m.get_layer(L1.chain_id) == L1  # media_type None: the uncompressed tar
        gz = LayerRow("sha256:" + "d" * 64, "sha256:" + "e" * 64, None, "sha256:" + "f" * 64, 30,
                      None, "application/vnd.oci.image.layer.v1.tar+gzip")
        m.put_layer(gz)
        assert m.get_layer(gz.chain_id) == gz
        assert m.layer_blobs(gz.diff_id) == [(gz.blob, 30, gz.media_type)]
        assert m.blob_layer(gz.blob) == (gz.diff_id, gz.media_type)
        assert m.blob_layer("sha256:" + "9" * 64) is None
