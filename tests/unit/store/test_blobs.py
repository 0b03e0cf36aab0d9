"""Content-addressed blob store on tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from engine.errors import InvalidArgument, NotFound
from engine.store.blobs import BlobStore, digest_bytes, validate_digest


def _d(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path)


def test_ingest_and_read(store: BlobStore, tmp_path: Path) -> None:
    data = b"hello" * 1000
    digest, size = store.ingest(io.BytesIO(data), expected_digest=_d(data), expected_size=len(data))
    assert (digest, size) == (_d(data), len(data))
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.path(digest) == str(tmp_path / "blobs" / "sha256" / digest[7:])
    with store.open(digest) as f:
        assert f.read() == data
    assert store.list() == [digest]
    assert store.temp_files() == []


def test_large_multi_chunk(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest, size = store.ingest(io.BytesIO(data))
    assert digest == _d(data) and size == len(data)
    assert store.read_bytes(digest) == data


def test_dedupe(store: BlobStore) -> None:
    a = store.put_bytes(b"same")
    mtime = os.stat(store.path(a)).st_mtime_ns
    b, _ = store.ingest(io.BytesIO(b"same"))
    assert a == b and store.list() == [a]
    assert os.stat(store.path(a)).st_mtime_ns == mtime
    assert store.temp_files() == []


def test_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    wrong = _d(b"other")
    with pytest.raises(InvalidArgument) as e:
        store.ingest(io.BytesIO(b"data"), expected_digest=wrong)
    assert wrong in str(e.value) and _d(b"data") in str(e.value)
    assert store.list() == [] and store.temp_files() == []


@pytest.mark.parametrize("expected", [3, 5])
def test_size_mismatch_leaves_nothing(store: BlobStore, expected: int) -> None:
    with pytest.raises(InvalidArgument, match=f"expected {expected} bytes"):
        store.ingest(io.BytesIO(b"data"), expected_size=expected)
    assert store.list() == [] and store.temp_files() == []


def test_stream_error_leaves_nothing(store: BlobStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.n += 1
            if self.n > 2:
                raise ConnectionResetError("peer went away")
            return b"x" * 10

    with Broken() as src, pytest.raises(ConnectionResetError):
        store.ingest(src)  # type: ignore[arg-type]
    assert store.list() == [] and store.temp_files() == []


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "sha512:" + "a" * 128,
                                 "sha256:" + "A" * 64, "a" * 64, ""])
def test_digest_validation(store: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_digest(bad)
    with pytest.raises(InvalidArgument):
        store.exists(bad)
    with pytest.raises(InvalidArgument):
        store.ingest(io.BytesIO(b""), expected_digest=bad)


def test_missing_blob(store: BlobStore) -> None:
    d = _d(b"nope")
    assert not store.exists(d)
    for op in (store.open, store.size, store.delete):
        with pytest.raises(NotFound, match=d):
            op(d)


def test_delete_and_gc(store: BlobStore) -> None:
    a, b, c = (store.put_bytes(x) for x in (b"a", b"b", b"c"))
    store.delete(a)
    assert store.list() == sorted([b, c])
    assert store.gc(keep={b}) == [c]
    assert store.list() == [b]


def test_lease_protects_from_gc(store: BlobStore) -> None:
    with store.lease() as lease:
        d = store.put_bytes(b"fresh", lease=lease)
        assert store.leased() == {d}
        assert store.gc(keep=set()) == []
        assert not store.discard(d)
        assert store.exists(d)
    assert store.leased() == set()
    assert store.discard(d)
    assert not store.exists(d)


def test_startup_cleans_stale_temp(tmp_path: Path) -> None:
    BlobStore(tmp_path)
    stale = tmp_path / "blobs" / "tmp" / "ingest-dead"
    stale.write_bytes(b"partial")
    assert BlobStore(tmp_path, clean_temp=False).temp_files() == [str(stale)]
    assert BlobStore(tmp_path).temp_files() == []


def test_digest_bytes() -> None:
    assert digest_bytes(b"x") == _d(b"x")
