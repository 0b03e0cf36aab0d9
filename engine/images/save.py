"""``docker save``: images to a docker-archive that is also an OCI image layout.

The layout is Docker 25's (see :mod:`engine.images.oci`), read by ``docker load`` (old and new),
``skopeo copy docker-archive:`` / ``oci-archive:`` and, once extracted, ``umoci`` and any OCI
layout reader. The archive is written as a stream (no seeking, nothing buffered whole) and is
deterministic: every header has mtime 0, uid/gid 0 and no user names, members are in sorted
order (as Docker's tar of its staging directory), and JSON is compact in a fixed key order, so
the same images saved twice give identical bytes.

Layers are written uncompressed by default (the layer digest equals the diff_id, as Docker
does) — a layer the store keeps compressed (pulled) is decompressed on the fly and verified
against its diff_id as it is written — or compressed on request (gzip, or zstd when available):
a stored blob already in that compression is written as it is, others are compressed and
spooled to know size and digest before their tar header (gzip: the parallel, deterministic
:mod:`engine.images.pgzip`, the bytes ``push`` sends).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from engine import refs
from engine.errors import InvalidArgument, NotFound
from engine.images import compress, oci, pgzip
from engine.images.archive import Compression
from engine.images.layerblob import KIND_OF as _KINDS

if TYPE_CHECKING:
    from engine.images.store import ImageStore

Progress = Callable[[dict[str, Any]], None]
CHUNK = 1024 * 1024


@dataclass
class _Image:
    id: str
    config: bytes
    tags: list[refs.Reference] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # blob digests in the archive, bottom first
    diff_ids: list[str] = field(default_factory=list)
    manifest: bytes = b""


@dataclass
class _Blob:
    size: int
    path: str | None = None  # file holding it (a store blob or a spooled compressed layer)
    data: bytes | None = None
    layer: bool = False
    opener: Callable[[], Any] | None = None  # a stored layer read through ImageStore.open_layer


def resolve(store: ImageStore, names: Iterable[str]) -> list[tuple[str, list[refs.Reference]]]:
    """Turn ``docker save`` arguments into ``[(image_id, [tags])]`` in argument order.

    A reference with a tag saves that tag; a repository name alone saves every tag of it (as
    Docker does); an id or id prefix saves the image untagged.

    Raises:
        NotFound / InvalidArgument / AmbiguousReference: as :meth:`ImageStore.lookup`.
    """
    out: dict[str, list[refs.Reference]] = {}
    for name in names:
        if not name:
            raise InvalidArgument("invalid reference: empty name")
        parsed = refs.try_parse(name)
        bare_repo = parsed is not None and parsed.digest is None and ":" not in \
            name.rsplit("/", 1)[-1] and not refs.is_full_id(name)
        tags: list[refs.Reference] = []
        if bare_repo and parsed is not None:
            for reference, image_id in sorted(store.meta.list_tags().items()):
                r = refs.parse(reference)
                if r.repository == parsed.repository:
                    out.setdefault(image_id, [])
                    if r not in out[image_id]:
                        out[image_id].append(r)
                    tags.append(r)
            if tags:
                continue
        image_id = store.lookup(name)
        lst = out.setdefault(image_id, [])
        if parsed is not None and store.meta.get_tag(parsed.full) == image_id and parsed not in lst:
            lst.append(parsed)
    if not out:
        raise NotFound("No such image: " + ", ".join(names))
    return list(out.items())


class _Writer:
    """Hashes and counts what goes through (the spooled compressed layer)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.h.update(data)
        self.size += len(data)
        return len(data)


def _header(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if directory:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    else:
        ti.mode = 0o644
    return ti


class _Progressing:
    def __init__(self, f: BinaryIO, total: int, ident: str, progress: Progress | None,
                 status: str) -> None:
        self.f, self.total, self.ident, self.progress, self.status = f, total, ident, progress, status
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        if self.progress is not None and data:
            self.progress({"status": self.status, "id": self.ident,
                           "progressDetail": {"current": self.done, "total": self.total}})
        return data


def save(store: ImageStore, names: Iterable[str], out: BinaryIO | IO[bytes],
         progress: Progress | None = None, compression: str = "none",
         spool_root: str | None = None) -> list[str]:
    """Write ``names`` as one archive to ``out``.

    Args:
        store: the image store.
        names: references, repository names, ids or id prefixes.
        out: a writable binary stream (not closed; need not be seekable).
        progress: called with Docker-style progress messages per layer.
        compression: ``"none"`` (default, as Docker), ``"gzip"`` or ``"zstd"``.
        spool_root: where compressed layers are staged (default: the blob store's root/tmp).

    Returns:
        The image ids saved.

    Raises:
        NotFound, InvalidArgument: bad names or compression. NotImplemented_: zstd unavailable.
    """
    kind = Compression(compression) if compression in ("none", "gzip", "zstd") else None
    if kind is None:
        raise InvalidArgument(f"unsupported compression {compression!r}: none, gzip or zstd")
    tmp_dir: str | None = None
    # The lease keeps a concurrent rmi from deleting a layer blob between planning and writing.
    with store.blobs.lease() as lease:
        try:
            with store.lock:
                plan = [(image_id, tags, store.meta.get_image(image_id),
                         store.meta.image_layers(image_id))
                        for image_id, tags in resolve(store, names)]
                for _, _, _, layers in plan:
                    for lr in layers:
                        lease.add(lr.blob)
            blobs: dict[str, _Blob] = {}
            images: list[_Image] = []
            compressed: dict[str, tuple[str, int]] = {}  # diff_id → (blob digest, size)
            for image_id, tags, row, layers in plan:
                if row is None:
                    raise NotFound(f"No such image: {image_id}")
                img = _Image(id=image_id, config=row.config.encode(), tags=tags)
                blobs[image_id] = _Blob(len(img.config), data=img.config)
                layer_descs = []
                for lr in layers:
                    if kind is Compression.NONE and lr.blob == lr.diff_id:
                        digest, size = lr.blob, store.blobs.size(lr.blob)
                        blobs.setdefault(digest, _Blob(size, path=store.blobs.path(lr.blob),
                                                       layer=True))
                    elif kind is Compression.NONE:  # kept compressed: the diff, verified
                        digest, size = lr.diff_id, lr.size
                        blobs.setdefault(digest, _Blob(size, layer=True, opener=functools.partial(
                            store.open_layer, lr.blob, verify=True)))
                    elif lr.media_type and _KINDS.get(lr.media_type) is kind:  # as stored
                        digest, size = lr.blob, store.blobs.size(lr.blob)
                        blobs.setdefault(digest, _Blob(size, path=store.blobs.path(lr.blob),
                                                       layer=True))
                    else:
                        if lr.diff_id not in compressed:
                            if tmp_dir is None:
                                base = spool_root or os.path.join(store.blobs.root, "tmp")
                                os.makedirs(base, exist_ok=True)
                                tmp_dir = tempfile.mkdtemp(prefix="save-", dir=base)
                            compressed[lr.diff_id] = _compress(store, lr.blob, kind, tmp_dir,
                                                               blobs)
                        digest, size = compressed[lr.diff_id]
                    img.layers.append(digest)
                    img.diff_ids.append(lr.diff_id)
                    layer_descs.append(oci.descriptor(oci.LAYER_MEDIA_TYPE[kind], digest, size))
                img.manifest = oci.dump(oci.manifest(
                    oci.descriptor(oci.OCI_CONFIG, image_id, len(img.config)), layer_descs))
                mdigest = "sha256:" + hashlib.sha256(img.manifest).hexdigest()
                blobs[mdigest] = _Blob(len(img.manifest), data=img.manifest)
                images.append(img)
            _write(out, blobs, images, progress)
            return [img.id for img in images]
        finally:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)


def _compress(store: ImageStore, blob: str, kind: Compression, tmp_dir: str,
              blobs: dict[str, _Blob]) -> tuple[str, int]:
    """Spool layer ``blob`` compressed as ``kind`` into ``tmp_dir``: ``(digest, size)``.

    gzip is :mod:`engine.images.pgzip` (parallel, one member; the same bytes for the same diff
    whatever the worker count, so saves stay reproducible — and equal to what ``push`` sends,
    so the digests match); zstd is :func:`compress.compressor`'s.
    """
    path = os.path.join(tmp_dir, uuid.uuid4().hex)
    with store.open_layer(blob, verify=True) as src, open(path, "wb") as fh:
        w = _Writer(fh)
        if kind is Compression.GZIP:
            for piece in pgzip.gzip_stream(src):
                w.write(piece)
        else:
            z = compress.compressor(kind, w)
            shutil.copyfileobj(src, z, CHUNK)
            z.close()
    digest = "sha256:" + w.h.hexdigest()
    blobs.setdefault(digest, _Blob(w.size, path=path, layer=True))
    return digest, w.size


def _write(out: BinaryIO | IO[bytes], blobs: dict[str, _Blob], images: list[_Image],
           progress: Progress | None) -> None:
    index_entries: list[dict[str, Any]] = []
    manifest_json: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for img in images:
        mdigest = "sha256:" + hashlib.sha256(img.manifest).hexdigest()
        if img.tags:
            for t in img.tags:
                index_entries.append(oci.descriptor(
                    oci.OCI_MANIFEST, mdigest, len(img.manifest),
                    annotations={oci.ANNOTATION_IMAGE_NAME: t.full,
                                 oci.ANNOTATION_REF_NAME: t.tag or "latest"}))
                if img.layers:
                    repositories.setdefault(t.name, {})[t.tag or "latest"] = \
                        img.layers[-1].split(":", 1)[1]
        else:
            index_entries.append(oci.descriptor(oci.OCI_MANIFEST, mdigest, len(img.manifest)))
        manifest_json.append({"Config": oci.blob_path(img.id),
                              "RepoTags": [str(t) for t in img.tags] or None,
                              "Layers": [oci.blob_path(d) for d in img.layers]})
    files = {
        "index.json": oci.dump(oci.index(index_entries)),
        "manifest.json": oci.dump(manifest_json),
        oci.OCI_LAYOUT: oci.dump({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}),
        "repositories": oci.dump(repositories),
    }
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tf:
        tf.addfile(_header("blobs/", directory=True))
        tf.addfile(_header("blobs/sha256/", directory=True))
        for digest in sorted(blobs):
            blob = blobs[digest]
            ti = _header(oci.blob_path(digest), blob.size)
            if blob.data is not None:
                tf.addfile(ti, _BytesReader(blob.data))
                continue
            if blob.opener is not None:
                with blob.opener() as src:
                    tf.addfile(ti, _Progressing(src, blob.size, digest.split(":", 1)[1][:12],
                                                progress, "Saving layer"))
                continue
            assert blob.path is not None
            with open(blob.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size != blob.size:
                    raise InvalidArgument(f"blob {digest} changed size while saving")
                tf.addfile(ti, _Progressing(fh, blob.size, digest.split(":", 1)[1][:12], progress,
                                            "Saving layer") if blob.layer else fh)
        for name in sorted(files):
            tf.addfile(_header(name, len(files[name])), _BytesReader(files[name]))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk
