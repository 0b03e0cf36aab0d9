"""engine.images.layerblob: reading stored layers in either form, verified."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.images import layerblob, oci
from engine.images.archive import Compression
from engine.store.blobs import BlobStore


def _d(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


TAR = b"a tar, as far as this test cares" * 100


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path)


def test_uncompressed_and_compressed_read_the_same(blobs: BlobStore) -> None:
    raw = blobs.put_bytes(TAR)
    gz = blobs.put_bytes(gzip.compress(TAR, mtime=0))
    for blob in (raw, gz):
        with layerblob.open_layer(blobs, blob, _d(TAR), len(TAR), verify=True) as fh:
            assert fh.read() == TAR
        with layerblob.open_layer(blobs, blob, _d(TAR), seekable=True) as fh:
            fh.seek(10)
            assert fh.read(5) == TAR[10:15]
    with layerblob.open_layer(blobs, gz, None) as fh:  # unknown diff_id: sniffed
        assert fh.read() == TAR


def test_verification_catches_a_wrong_diff(blobs: BlobStore) -> None:
    gz = blobs.put_bytes(gzip.compress(TAR + b"!", mtime=0))
    with layerblob.open_layer(blobs, gz, _d(TAR), verify=True) as fh, \
            pytest.raises(InvalidArgument, match="damaged"):
        while fh.read():
            pass
    with pytest.raises(InvalidArgument, match="more than"), \
            layerblob.open_layer(blobs, gz, _d(TAR), len(TAR), verify=True) as fh:  # reads exactly size
        while fh.read(len(TAR)):
            pass
    with pytest.raises(InvalidArgument, match="damaged"):
        layerblob.open_layer(blobs, gz, _d(TAR), seekable=True)
    plain = blobs.put_bytes(b"not compressed")
    with pytest.raises(InvalidArgument, match="not compressed"):
        layerblob.open_layer(blobs, plain, _d(TAR))


def test_media_type_follows_the_bytes() -> None:
    assert layerblob.media_type_for(Compression.GZIP, oci.DOCKER_LAYER_GZIP) == oci.DOCKER_LAYER_GZIP
    assert layerblob.media_type_for(Compression.GZIP, oci.OCI_LAYER_ZSTD) == oci.OCI_LAYER_GZIP
    assert layerblob.media_type_for(Compression.ZSTD, oci.DOCKER_LAYER_GZIP) == layerblob.DOCKER_LAYER_ZSTD
    assert layerblob.media_type_for(Compression.NONE, oci.OCI_LAYER) is None


def test_verifying_reader_reads_exactly_size() -> None:
    r = layerblob.Verifying(io.BytesIO(TAR), _d(TAR), len(TAR), "x")
    assert r.read(len(TAR)) == TAR  # checked on reaching the size, without a read to EOF
    assert r.checked
