"""``docker load``: images from a docker-archive or an OCI image-layout archive.

Accepted input (sniffed, never guessed from a name):

* the archive plain or compressed (gzip, bzip2, xz; zstd with the ``zstandard`` package);
* Docker's ``manifest.json`` (``[{"Config", "RepoTags", "Layers"}]``) with either the old
  per-layer directories (``<id>/layer.tar``, layers possibly symlinked to each other) or the
  ``blobs/sha256`` layout of Docker 25+; ``manifest.json`` wins when both it and ``index.json``
  are present (it carries the tags);
* an OCI image layout (``oci-layout`` + ``index.json`` → manifests, or nested indexes narrowed to
  the host platform → config + layers), names from the descriptor annotations;
* layers uncompressed, gzip or zstd.

How (bounded memory, all or nothing):

1. The archive is streamed once (:mod:`engine.images.load_spool`); every member is spooled to a
   private directory under the state root (``<root>/tmp/load-*``), hashed on the way; a layer
   is checked against the layer rules (:class:`~engine.images.tarscan.LayerPolicy`) in the same
   pass — a gzip or zstd one decompressed (bomb-guarded) and hashed on a thread of its own while
   it spools — and, with an unpacker, unpacked into a staging snapshot meanwhile.
2. The manifests are resolved (:mod:`engine.images.load_plan`): every blob named by a descriptor
   must exist with the size and digest it claims; configs must be valid and their ``diff_ids``
   must match the layers.
3. Layers are stored under a blob-store lease, each after its content hashed to its config
   ``diff_id``: the spool file itself is *moved* into the store — an uncompressed tar as the
   ``diff_id``'s blob, a gzip/zstd one as its compressed blob, as ``pull`` stores it
   (:mod:`engine.images.layerblob`). (bzip2/xz layers, which no registry serves, are
   decompressed into an uncompressed blob.)
4. With an unpacker, the staged snapshots are bound to their chain ids (the others unpacked from
   the store), then one metadata transaction records every image and tag.

Any failure raises InvalidArgument (naming the member or digest) and leaves the stores as they
were: blobs this load added are discarded, the spool directory is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from engine.errors import InvalidArgument
from engine.images import compress
from engine.images.archive import Compression
from engine.images.layerblob import StoredLayer, media_type_for
from engine.images.load_plan import Archive, Layer, plan
from engine.images.load_spool import DECODED, DEFAULT_LIMITS, LoadLimits, bad, describe, read
from engine.images.tarscan import CheckedStream, LayerPolicy, TarReader
from engine.images.unpack import Unpacker

if TYPE_CHECKING:
    from engine.images.store import ImageStore

Progress = Callable[[dict[str, Any]], None]
_STAGE_MIN = 1024 * 1024  # smaller layers: unpacking them afterwards costs next to nothing


def load(store: ImageStore, stream: BinaryIO | IO[bytes], progress: Progress | None = None,
         limits: LoadLimits | None = None, unpacker: Unpacker | None = None,
         ) -> list[tuple[str, list[str], list[tuple[str, str | None]]]]:
    """Load every image of the archive ``stream``.

    With an ``unpacker`` the layers are also unpacked into their snapshots (chain ids), as
    dockerd's load does: layers of at least 1 MB (uncompressed, gzip or zstd) while they stream
    (staged, bound once the manifest says what they are), the others from the store afterwards;
    the snapshots are made before the images are recorded, and removed again if anything fails.

    Returns:
        Per image ``(image_id, [familiar tags], [(full tag, image it was moved from or None)])``.

    Raises:
        InvalidArgument: malformed, truncated, corrupt or hostile input (the message names the
            member or digest). NotImplemented_: zstd without the ``zstandard`` package.
    """
    lim = limits or DEFAULT_LIMITS
    base = os.path.join(store.blobs.root, "tmp")
    os.makedirs(base, exist_ok=True)
    spool = tempfile.mkdtemp(prefix="load-", dir=base)
    new_blobs: set[str] = set()
    spooler = None
    try:
        with store.blobs.lease() as lease:
            spooler = read(stream, spool, lim, progress, unpacker, _STAGE_MIN)
            plans = plan(Archive(spooler.members, lim))
            done: dict[str, StoredLayer] = {}
            for p in plans:
                for layer in p.layers:
                    if layer.diff_id not in done:
                        done[layer.diff_id] = _ingest(store, layer, lim, lease, new_blobs)

            def record() -> list[tuple[str, list[tuple[str, str | None]]]]:
                return store.record_loaded(
                    [(p.config, [(lr.diff_id, done[lr.diff_id].blob, done[lr.diff_id].size,
                                  done[lr.diff_id].media_type) for lr in p.layers],
                      p.tags) for p in plans])

            if unpacker is None:
                recorded = record()
            else:
                recorded = unpacker.commit(
                    [[(lr.diff_id, lr.member.staged_for(lr.diff_id)) for lr in p.layers] for p in plans],
                    record)
        new_blobs.clear()  # recorded: they belong to the store now
        return [(image_id, [str(t) for t in p.tags], moved)
                for p, (image_id, moved) in zip(plans, recorded)]
    finally:
        if spooler is not None:
            spooler.stop_decodes()
        if unpacker is not None:
            unpacker.close()
        for digest in sorted(new_blobs):
            with store.lock:
                if not store.meta.blob_referenced(digest):
                    store.blobs.discard(digest)
        shutil.rmtree(spool, ignore_errors=True)


def _ingest(store: ImageStore, layer: Layer, lim: LoadLimits, lease: Any,
            new_blobs: set[str]) -> StoredLayer:
    """Store one layer unless the store has it in either form (engine.images.layerblob);
    returns where it is stored. ``new_blobs`` gets the digest of a blob this added."""
    m, diff_id = layer.member, layer.diff_id
    what = f"layer {m.name!r}"
    found = store.stored_layer(diff_id, lease)
    if found is not None:
        return found
    kind = compress.sniff(m.head)
    if kind is Compression.NONE:
        if m.digest != diff_id:
            raise bad(f"{what}: content digest {m.digest} does not match diff_id {diff_id} "
                      "of the image config")
        if m.layer_error is not None:
            raise bad(f"{what} ({diff_id}) refused: {m.layer_error}")
        if not m.checked:
            raise bad(f"{what} ({diff_id}) is not a tar archive")
        assert m.path is not None
        if store.blobs.adopt(m.path, diff_id, m.size, lease=lease):
            new_blobs.add(diff_id)
        m.path = None
        return StoredLayer(diff_id, diff_id, m.size)
    assert m.path is not None
    if m.decoding is not None:  # gzip / zstd: decoded while it spooled
        d = m.decoding.result()
        if d.error is not None:
            if isinstance(d.error, InvalidArgument) and not str(d.error).startswith("invalid image"):
                raise bad(f"{what} ({m.digest}): {d.error}") from None
            raise d.error
        if d.diff_id != diff_id:
            raise bad(f"{what}: uncompressed content does not match diff_id {diff_id} of the image "
                      f"config (it hashes to {d.diff_id})")
        stored = StoredLayer(diff_id, m.digest, d.size, media_type_for(kind, layer.media_type))
        if store.adopt_layer(m.path, stored, m.size, lease):
            new_blobs.add(m.digest)
        m.path = None
        return stored
    with open(m.path, "rb") as raw:  # bzip2 / xz: stored uncompressed
        dec = compress.Decompressed(raw, kind, f"{what} ({m.digest})", lim.bomb)
        reader = CheckedStream(dec, TarReader(on_entry=LayerPolicy(), limits=lim.layer),
                               lambda e: bad(f"{what} ({m.digest}): {describe(e)}"))
        try:
            _got, size = store.blobs.ingest(reader, expected_digest=diff_id,  # type: ignore[arg-type]
                                            lease=lease)
        except InvalidArgument as e:
            if "digest mismatch" in str(e):
                raise bad(f"{what}: uncompressed content does not match diff_id {diff_id} of "
                          f"the image config ({e})") from None
            raise
        finally:
            dec.close()
    new_blobs.add(diff_id)
    return StoredLayer(diff_id, diff_id, size)


__all__ = ["DECODED", "DEFAULT_LIMITS", "LoadLimits", "load"]
