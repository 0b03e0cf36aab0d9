"""Stored layers in either form, read back as their uncompressed tar.

A layer row (:class:`engine.store.meta.LayerRow`) names the blob that holds the layer:

* the **uncompressed** tar, ``blob == diff_id`` (``media_type`` None) — what ``import``,
  ``commit`` and ``load`` of an uncompressed layer store;
* a **compressed** form, ``blob != diff_id`` (``media_type`` the layer media type, gzip or
  zstd) — what ``pull`` stores, and ``load`` of a gzip/zstd layer: the downloaded blob (the
  archive member) itself, renamed into the store once both its digest and the digest of its
  decompressed content (the ``diff_id``) were verified. No uncompressed copy is written.

**One diff_id, either form** (the rule): every stored form of a diff_id decompresses to the same
verified bytes, so a reader never cares which it gets. Rows of different chain ids with the same
diff_id may name different forms, and both forms may be stored at once; each blob lives as
long as a row names it (garbage collection counts rows, not diff_ids). A layer being added
reuses any stored form: ``pull`` and ``load`` ask :meth:`ImageStore.stored_layer` first and
record the row with the blob it returns (the uncompressed form preferred), so a pulled image
sharing a layer with a loaded one stores it once, in the form that came first.

Every reader of a layer's tar (save, export/diff, container creation, the unpack fallback,
fsck) goes through :func:`open_layer`; push, which wants the compressed bytes, asks
:meth:`ImageStore.compressed_layer`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Self

from engine.errors import InvalidArgument, NotFound
from engine.images import compress, oci
from engine.images.archive import Compression
from engine.store.blobs import BlobStore, Lease
from engine.store.meta import MetaStore

CHUNK = 1024 * 1024
DOCKER_LAYER_ZSTD = oci.DOCKER_LAYER + ".zstd"
KIND_OF = {oci.DOCKER_LAYER: Compression.NONE, oci.OCI_LAYER: Compression.NONE,
            oci.DOCKER_LAYER_GZIP: Compression.GZIP, oci.OCI_LAYER_GZIP: Compression.GZIP,
            oci.OCI_LAYER_ZSTD: Compression.ZSTD, DOCKER_LAYER_ZSTD: Compression.ZSTD}


@dataclass(frozen=True, slots=True)
class StoredLayer:
    """Where a diff_id is stored: ``blob`` (== diff_id when uncompressed), ``size`` of the
    uncompressed tar, ``media_type`` of a compressed blob (None for the uncompressed form)."""

    diff_id: str
    blob: str
    size: int
    media_type: str | None = None

    @property
    def compressed(self) -> bool:
        return self.blob != self.diff_id


def media_type_for(kind: Compression, declared: str) -> str | None:
    """The media type to record for a blob of compression ``kind`` (sniffed from its bytes)
    that a manifest ``declared``: the declared one when it agrees, else the same family's
    (Docker or OCI) type for ``kind``. None for an uncompressed blob."""
    if kind is Compression.NONE:
        return None
    if KIND_OF.get(declared) is kind:
        return declared
    if declared.startswith("application/vnd.docker."):
        return oci.DOCKER_LAYER_GZIP if kind is Compression.GZIP else DOCKER_LAYER_ZSTD
    return oci.LAYER_MEDIA_TYPE[kind]


class Verifying:
    """Reads ``inner`` while hashing it; the content must be ``size`` bytes (when given) with
    digest ``digest``. The check runs as soon as ``size`` bytes went through (a tar writer reads
    exactly a member's size, never to EOF) and at EOF.

    Raises:
        InvalidArgument: from ``read``, naming ``what``: size or digest mismatch.
    """

    def __init__(self, inner: Any, digest: str, size: int | None, what: str) -> None:
        self.inner, self.digest, self.size, self.what = inner, digest, size, what
        self.h = hashlib.sha256()
        self.n = 0
        self.checked = False

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(CHUNK if n is None or n < 0 else n)
        if self.checked:
            if data:
                raise InvalidArgument(f"{self.what}: more than the {self.size} bytes recorded")
            return data
        self.h.update(data)
        self.n += len(data)
        if self.size is not None and self.n > self.size:
            raise InvalidArgument(f"{self.what}: more than the {self.size} bytes recorded")
        if not data or self.n == self.size:
            self._check()
        return data

    def _check(self) -> None:
        self.checked = True
        if self.size is not None and self.n == self.size and self.inner.read(1):
            raise InvalidArgument(f"{self.what}: more than the {self.size} bytes recorded")
        if self.size is not None and self.n != self.size:
            raise InvalidArgument(f"{self.what}: {self.n} bytes, recorded as {self.size}: the store "
                                  "is damaged")
        got = "sha256:" + self.h.hexdigest()
        if got != self.digest:
            raise InvalidArgument(f"{self.what}: content hashes to {got}, not {self.digest}: the "
                                  "store is damaged")

    def readable(self) -> bool:
        return True


class LayerReader:
    """A stored layer's uncompressed tar (a readable, closeable stream; a context manager)."""

    def __init__(self, raw: BinaryIO, reader: Any, closers: tuple[Any, ...]) -> None:
        self.raw, self.reader, self._closers = raw, reader, closers

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.reader.read(n)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        for c in self._closers:
            c.close()
        self.raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_layer(blobs: BlobStore, blob: str, diff_id: str | None, size: int | None = None,
               verify: bool = False, seekable: bool = False) -> Any:
    """Open stored blob ``blob`` as the uncompressed layer tar (the caller closes it).

    Args:
        blob: the blob digest (a layer row's ``blob``).
        diff_id: the layer's diff_id when known: ``blob == diff_id`` means uncompressed; else
            the compression is sniffed from the blob's first bytes.
        size: the uncompressed size recorded (checked when verifying).
        verify: hash what is read; reading fails (InvalidArgument) unless it is ``diff_id``'s
            content (needs ``diff_id``).
        seekable: return a seekable file: a compressed blob is decompressed (and verified, when
            ``diff_id`` is known) into an anonymous temp file under the blob store first.

    Raises:
        NotFound: the blob is missing. InvalidArgument: corrupt compressed data; a compressed
            blob that is plain; with ``verify``, content that is not ``diff_id``'s.
            NotImplemented_: zstd without ``zstandard``.
    """
    what = f"layer {diff_id or blob} (blob {blob})"
    f = blobs.open(blob)
    try:
        if diff_id is not None and blob == diff_id:
            if verify:
                return LayerReader(f, Verifying(f, diff_id, size, what), ())
            return f
        kind = compress.sniff(f.read(6))
        f.seek(0)
        if kind is Compression.NONE:
            if diff_id is not None:
                raise InvalidArgument(f"{what}: the blob is not compressed but its digest is not the "
                                      "diff_id: the store is damaged")
            return f
        dec = compress.Decompressed(f, kind, what)
        reader: Any = Verifying(dec, diff_id, size, what) if (verify or seekable) and diff_id else dec
        if not seekable:
            return LayerReader(f, reader, (dec,))
        try:
            spool = tempfile.TemporaryFile(dir=blobs.tmp_dir)  # noqa: SIM115 - returned open
            try:
                shutil.copyfileobj(reader, spool, CHUNK)
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
        finally:
            dec.close()
            f.close()
        return spool
    except BaseException:
        f.close()
        raise



class LayerBlobs:
    """The layer-blob side of :class:`engine.images.store.ImageStore` (a mixin: it uses the
    store's ``meta``, ``blobs``, ``lock`` and ``_verified``)."""

    meta: MetaStore
    blobs: BlobStore
    lock: threading.RLock
    _verified: dict[str, StoredLayer]  # diff_id → a compressed form verified, not recorded yet

    def open_layer(self, digest: str, verify: bool = False, seekable: bool = False) -> Any:
        """Open a layer as its uncompressed tar, decompressing a compressed blob on the fly.
        The one way to read a layer (the caller closes it).

        Args:
            digest: a layer row's blob digest, or a diff_id (any stored form of it is opened,
                including a pull's verified blob not recorded yet).
            verify: reading fails unless the content is the diff_id's (size and digest).
            seekable: a seekable file (a compressed blob is decompressed to a temp file first).

        Raises:
            NotFound: neither a stored blob nor a stored diff_id. InvalidArgument: corrupt data
                (the store is damaged).
        """
        if self.blobs.exists(digest):
            layer = self._describe(digest)
            if layer is None:  # an ingest not recorded yet: the compression is sniffed
                return open_layer(self.blobs, digest, None, None, False, seekable)
        else:
            layer = self.stored_layer(digest)
            if layer is None:
                raise NotFound(f"layer not found: {digest}")
        return open_layer(self.blobs, layer.blob, layer.diff_id,
                                     layer.size if layer.size >= 0 else None, verify, seekable)

    def _describe(self, blob: str) -> StoredLayer | None:
        """What is known about stored blob ``blob`` (None: nothing)."""
        row = self.meta.blob_layer(blob)
        if row is not None:
            sizes = [s for b, s, _mt in self.meta.layer_blobs(row[0]) if b == blob]
            return StoredLayer(row[0], blob, sizes[0] if sizes else -1, row[1])
        with self.lock:
            pending = [v for v in self._verified.values() if v.blob == blob]
        return pending[0] if pending else None

    def stored_layer(self, diff_id: str, lease: Lease | None = None) -> StoredLayer | None:
        """A stored form of ``diff_id`` (the uncompressed one preferred), or None. With
        ``lease`` the blob is leased before it is returned (so it cannot vanish meanwhile)."""
        candidates: list[StoredLayer] = []
        if self.blobs.exists(diff_id):
            rows = [s for b, s, _mt in self.meta.layer_blobs(diff_id) if b == diff_id]
            candidates.append(StoredLayer(diff_id, diff_id,
                                          rows[0] if rows else self.blobs.size(diff_id), None))
        candidates += [StoredLayer(diff_id, b, s, mt) for b, s, mt in self.meta.layer_blobs(diff_id)
                       if b != diff_id]
        with self.lock:
            if diff_id in self._verified:
                candidates.append(self._verified[diff_id])
        for c in candidates:
            if lease is not None and self.blobs.exists(c.blob):
                lease.add(c.blob)
            if self.blobs.exists(c.blob):
                return c
        return None

    def compressed_layer(self, diff_id: str) -> StoredLayer | None:
        """The compressed blob stored for ``diff_id`` (``blob`` is its digest, send it as it
        is with ``media_type``; ``blobs.size(blob)`` is its size), or None when the layer is
        only stored uncompressed. For push: a pulled layer goes out without recompressing."""
        found = [StoredLayer(diff_id, b, s, mt) for b, s, mt in self.meta.layer_blobs(diff_id)
                 if b != diff_id and mt]
        with self.lock:
            if diff_id in self._verified:
                found.append(self._verified[diff_id])
        return next((f for f in found if self.blobs.exists(f.blob)), None)

    def adopt_layer(self, path: str, layer: StoredLayer, compressed_size: int,
                    lease: Lease) -> bool:
        """Move the verified blob file ``path`` (``compressed_size`` bytes, digest
        ``layer.blob``, decompressing to ``layer.diff_id``) into the store, no copy.

        The caller has verified both digests; until an image records it the blob is leased and
        known to :meth:`stored_layer` / :meth:`open_layer` (a pull in flight).

        Returns:
            True if the file was moved in, False if the blob was there already (``path`` is
            deleted).

        Raises:
            InvalidArgument: size mismatch. Internal: the rename failed.
        """
        moved = self.blobs.adopt(path, layer.blob, compressed_size, lease=lease)
        if layer.compressed:
            with self.lock:
                self._verified[layer.diff_id] = layer
                for d in [d for d, v in self._verified.items() if not self.blobs.exists(v.blob)]:
                    del self._verified[d]
        return moved
