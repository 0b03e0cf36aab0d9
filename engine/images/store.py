"""The image store: import, commit, lookup, inspect, list, tag, and the layer chain.

Images live in two places: layer blobs in the :class:`~engine.store.blobs.BlobStore`, and
everything else in the :class:`~engine.store.meta.MetaStore`. Write order makes crashes
harmless: blobs are ingested (under a lease) *before* the single metadata transaction that
records the image and its tag, and blobs are deleted only *after* the transaction that forgets
them. A crash therefore leaves at worst orphan blobs, which :meth:`ImageStore.gc` (run at
startup) removes.

Layer blobs come in two forms: the uncompressed tar (digest == diff_id: import, commit, load)
or, for pulled layers, the verified compressed blob as downloaded (digest != diff_id; the layer
row records its media type). **One diff_id, either form**: each layer row names one blob; rows
with the same diff_id may name different forms and both may be stored, each kept while a row
names it; a layer being added reuses whatever form is stored (:meth:`stored_layer`, the
uncompressed one preferred), so it is stored once, in the form that came first. Every reader
of a layer's tar goes through :meth:`open_layer`, which decompresses a compressed blob (and
can verify the diff_id); push gets a compressed blob from :meth:`compressed_layer`. Details:
:mod:`engine.images.layerblob`.

``remove`` and ``prune`` live in :mod:`engine.images.remove`; they are re-exported as methods.
"""

from __future__ import annotations

import builtins
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from engine import refs
from engine.errors import InvalidArgument, NotFound
from engine.images import archive
from engine.images import changes as _changes
from engine.images import config as _config
from engine.images import filters as _filters
from engine.images.layerblob import LayerBlobs, StoredLayer
from engine.store.blobs import BlobStore
from engine.store.meta import ImageRow, LayerRow, MetaStore

JSONDict = dict[str, Any]
InUse = Callable[[str], list[str]]


@dataclass(frozen=True)
class ImageRecord:
    """What ``inspect`` reports about one image (engine names; ``wire.py`` maps to Docker's)."""

    id: str
    repo_tags: tuple[str, ...]  # familiar: "busybox:latest"
    repo_digests: tuple[str, ...]
    created: str  # RFC 3339
    size: int
    parent: str  # "" if none
    config: JSONDict = field(default_factory=dict)  # the whole image config document
    diff_ids: tuple[str, ...] = ()
    chain_ids: tuple[str, ...] = ()

    @property
    def container_config(self) -> JSONDict:
        """The runtime defaults (``Cmd``, ``Env``…)."""
        return _config.container_config(self.config)

    @property
    def history(self) -> list[JSONDict]:
        return list(self.config.get("history") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.container_config.get("Labels") or {})

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture", ""))

    @property
    def os(self) -> str:
        return str(self.config.get("os", ""))

    @property
    def author(self) -> str:
        return str(self.config.get("author", ""))

    @property
    def comment(self) -> str:
        """The image comment: Docker's top-level field, else the newest history entry's."""
        if self.config.get("comment"):
            return str(self.config["comment"])
        hist = self.history
        return str(hist[-1].get("comment", "")) if hist else ""

    @property
    def short_id(self) -> str:
        return refs.short_id(self.id)


class ImageStore(LayerBlobs):
    """Images over a metadata store and a blob store (not owned: the caller closes them).
    Layers are read, found and adopted through the :class:`LayerBlobs` methods
    (``open_layer``, ``stored_layer``, ``compressed_layer``, ``adopt_layer``).

    Args:
        meta: the metadata store.
        blobs: the blob store.
        clock: epoch-seconds clock for ``created`` (tests pass a fixed one).
    """

    def __init__(self, meta: MetaStore, blobs: BlobStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.meta = meta
        self.blobs = blobs
        self.clock = clock
        # serialises metadata mutations with blob deletion (see module docstring)
        self.lock = threading.RLock()
        # compressed blobs verified (digest and diff_id) but not recorded yet: a pull in flight
        self._verified: dict[str, StoredLayer] = {}  # diff_id → its compressed form

    # -- creating images -----------------------------------------------------------------------

    def import_tar(self, stream: BinaryIO, reference: str | None = None,
                   changes: Sequence[str] = (), message: str = "",
                   platform: str | None = None, source: str = "-") -> str:
        """``docker import``: make a one-layer image from a rootfs tar.

        Args:
            stream: a tar, plain or gzip/bzip2/xz-compressed (sniffed from the magic bytes).
            reference: tag the image with it (e.g. ``"myimg:1"``), if given.
            changes: Dockerfile-style ``--change`` lines.
            message: commit message; default ``"Imported from <source>"``.
            platform: ``os[/arch[/variant]]``; default the host's.
            source: what was imported, for the default message (``-`` = stdin).

        Returns:
            The image id (``sha256:…``).

        Raises:
            InvalidArgument: bad reference, change, platform, or not a tar archive.
            NotImplemented_: zstd compression.
        """
        target = refs.parse(reference) if reference else None
        if target is not None and target.digest is not None:
            raise InvalidArgument(f"cannot import as {reference}: a tag cannot contain a digest")
        cfg = _changes.apply_changes({}, changes)
        os_, arch, variant = _config.parse_platform(platform) if platform else (None, None, None)
        comment = message or f"Imported from {source}"
        with self.blobs.lease() as lease:
            reader, _kind = archive.decompressed(stream)
            try:
                diff_id, size = self.blobs.ingest(reader, lease=lease)  # type: ignore[arg-type]
            finally:
                reader.close()
            self._validate_layer(diff_id)
            doc = _config.new_config(diff_ids=[diff_id], created=self.clock(), architecture=arch,
                                     os=os_, variant=variant, comment=comment,
                                     container_config=cfg)
            return self._record(doc, [(diff_id, diff_id, size)], parent=None, target=target)

    def commit(self, layer: BinaryIO, parent_id: str | None, container_config: Mapping[str, Any],
               reference: str | None = None, changes: Sequence[str] = (), author: str = "",
               comment: str = "", created_by: str = "") -> str:
        """``docker commit``: a new image = ``parent_id``'s layers + ``layer`` (an uncompressed
        diff tar, e.g. from ``Snapshots.diff``), with ``container_config`` plus ``changes``.

        Returns:
            The image id.

        Raises:
            NotFound: no such parent image. InvalidArgument: bad reference/change/tar.
        """
        target = refs.parse(reference) if reference else None
        parent_doc: JSONDict = {}
        layers: list[tuple[str, str, int]] = []
        if parent_id is not None:
            parent_doc = self.config(parent_id)
            layers = [(lr.diff_id, lr.blob, lr.size) for lr in self.meta.image_layers(parent_id)]
        cfg = _changes.apply_changes(container_config, changes)
        with self.blobs.lease() as lease:
            for _, blob, _ in layers:
                lease.add(blob)
            diff_id, size = self.blobs.ingest(layer, lease=lease)
            self._validate_layer(diff_id)
            layers.append((diff_id, diff_id, size))
            entry: JSONDict = {"created": _config.format_time(self.clock())}
            entry.update({k: v for k, v in (("author", author), ("comment", comment),
                                            ("created_by", created_by)) if v})
            doc = _config.new_config(
                diff_ids=[d for d, _, _ in layers], created=self.clock(),
                architecture=parent_doc.get("architecture"), os=parent_doc.get("os"),
                variant=parent_doc.get("variant"), author=author, comment=comment,
                container_config=cfg, history=[entry], parent_config=parent_doc)
            return self._record(doc, layers, parent=parent_id, target=target)

    def _validate_layer(self, digest: str) -> None:
        with self.blobs.open(digest) as f:
            try:
                archive.validate_tar(f)
            except InvalidArgument:
                with self.lock:
                    if not self.meta.blob_referenced(digest):
                        f.close()
                        self.blobs.delete(digest)
                raise

    def _record(self, doc: JSONDict, layers: list[tuple[str, str, int]], parent: str | None,
                target: refs.Reference | None) -> str:
        """Store config + layers (+ tag) in one transaction; returns the image id."""
        data = _config.canonical_json(doc)
        image_id = _config.image_id(data)
        chain = _config.chain_ids([d for d, _, _ in layers])
        rows = [LayerRow(c, d, chain[i - 1] if i else None, blob, size)
                for i, (c, (d, blob, size)) in enumerate(zip(chain, layers))]
        with self.lock, self.meta.transaction():
            if self.meta.get_image(image_id) is None:
                self.meta.put_image(ImageRow(image_id, data.decode(), doc["created"],
                                             sum(s for _, _, s in layers), parent, time.time()),
                                    rows)
            if target is not None:
                self.meta.set_tag(target.full, image_id)
        return image_id

    def record_loaded(self, images: Sequence[tuple[bytes, Sequence[tuple[str, str, int] |
                                                           tuple[str, str, int, str | None]],
                                                  Sequence[refs.Reference]]]
                      ) -> builtins.list[tuple[str, builtins.list[tuple[str, str | None]]]]:
        """Record images whose config bytes came from elsewhere (``load``), in one transaction.

        The config is kept byte for byte, so the image id (its sha256) survives the round trip.
        The layer blobs must already be ingested (under the caller's lease).

        Args:
            images: ``(config_bytes, [(diff_id, blob_digest, size[, media_type])], tags)`` per
                image; ``size`` is the uncompressed size; ``media_type`` (default None) names
                the compression of a blob that is not the uncompressed tar (``blob != diff_id``).

        Returns:
            Per image ``(image_id, [(tag, previous_image_id_or_None)])``.

        Raises:
            InvalidArgument: a config that is not UTF-8 JSON, or whose diff_ids differ from the
                layers given.
        """
        prepared = []
        for data, layers, tags in images:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidArgument(f"invalid image config {_config.image_id(data)}: not UTF-8") from e
            doc = _config.parse_config(text)
            if _config.diff_ids(doc) != [lay[0] for lay in layers]:
                raise InvalidArgument(f"invalid image config {_config.image_id(data)}: "
                                      "rootfs.diff_ids do not match the layers")
            prepared.append((_config.image_id(data), text, doc, layers, tags))
        out: builtins.list[tuple[str, builtins.list[tuple[str, str | None]]]] = []
        with self.lock, self.meta.transaction():
            for image_id, text, doc, layers, tags in prepared:
                chain = _config.chain_ids([lay[0] for lay in layers])
                rows = [LayerRow(c, lay[0], chain[i - 1] if i else None, lay[1], lay[2], None,
                                 (lay[3] if len(lay) > 3 else None) if lay[1] != lay[0] else None)
                        for i, (c, lay) in enumerate(zip(chain, layers))]
                if self.meta.get_image(image_id) is None:
                    self.meta.put_image(ImageRow(image_id, text, str(doc.get("created") or
                                                                     _config.format_time(0)),
                                                 sum(lay[2] for lay in layers), None, time.time()),
                                        rows)
                moved = [(t.full, self.meta.set_tag(t.full, image_id)) for t in tags]
                out.append((image_id, moved))
        return out

    # -- looking up ----------------------------------------------------------------------------

    def lookup(self, ref: str) -> str:
        """Resolve ``ref`` to an image id: full id (with or without ``sha256:``), reference
        (``busybox`` = ``docker.io/library/busybox:latest``), or unique id prefix.

        Raises:
            NotFound: "No such image: busybox:latest". AmbiguousReference: prefix matches >1.
            InvalidArgument: ``ref`` is neither a valid reference nor an id prefix.
        """
        if refs.is_full_id(ref):
            image_id = "sha256:" + ref.removeprefix("sha256:")
            if self.meta.get_image(image_id) is None:
                raise NotFound(f"No such image: {ref}")
            return image_id
        parsed: refs.Reference | None = None
        try:
            parsed = refs.parse(ref)
        except InvalidArgument:
            if not refs.is_id_prefix(ref):
                raise
        if parsed is not None:
            found = self.meta.get_tag(parsed.full)
            if found is None and parsed.digest is not None:  # repo@sha256:… (RepoDigests)
                found = self.meta.get_repo_digest(f"{parsed.repository}@{parsed.digest}")
            if found is not None:
                return found
        if refs.is_id_prefix(ref):
            try:
                return refs.resolve_prefix(self.meta.image_ids(), ref, what="image")
            except NotFound:
                pass
        raise NotFound(f"No such image: {parsed if parsed is not None else ref}")

    def config(self, image_id: str) -> JSONDict:
        """The config document of ``image_id`` (a full id). Raises NotFound."""
        row = self.meta.get_image(image_id)
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        return _config.parse_config(row.config)

    def _record_of(self, row: ImageRow, tags: Iterable[str] | None = None) -> ImageRecord:
        doc = _config.parse_config(row.config)
        names = self.meta.tags_for(row.id) if tags is None else tags
        diff = _config.diff_ids(doc)
        return ImageRecord(
            id=row.id, repo_tags=tuple(str(refs.parse(t)) for t in names),
            repo_digests=tuple(str(refs.parse(r)) for r in self.meta.repo_digests_for(row.id)),
            created=row.created, size=row.size, parent=row.parent or "", config=doc,
            diff_ids=tuple(diff), chain_ids=tuple(_config.chain_ids(diff)))

    def inspect(self, ref: str) -> ImageRecord:
        """The full record of the image ``ref`` names. Raises as :meth:`lookup`."""
        image_id = self.lookup(ref)
        row = self.meta.get_image(image_id)
        if row is None:  # removed concurrently
            raise NotFound(f"No such image: {ref}")
        return self._record_of(row)

    def list(self, all: bool = False,
             filters: Mapping[str, Iterable[str]] | None = None) -> builtins.list[ImageRecord]:
        """``docker images``: newest first.

        Untagged images that are the parent of another are hidden unless ``all``. With a
        ``reference`` filter only the matching tags are reported and untagged images are skipped.

        Raises:
            InvalidArgument: unknown filter or bad value. NotFound: before/since image missing.
        """
        f = _filters.normalise(filters)
        dangling = _filters.parse_bool("dangling", f["dangling"]) if "dangling" in f else None
        before = [_config.parse_time(self.inspect(r).created) for r in f.get("before", [])]
        since = [_config.parse_time(self.inspect(r).created) for r in f.get("since", [])]
        out: builtins.list[ImageRecord] = []
        with self.lock:
            rows = self.meta.list_images()
            parents = {r.parent for r in rows if r.parent}
            tags_by_image: dict[str, builtins.list[str]] = {}
            for reference, image_id in self.meta.list_tags().items():
                tags_by_image.setdefault(image_id, []).append(reference)
        for row in rows:
            created = _config.parse_time(row.created)
            if any(created >= b for b in before) or any(created <= s for s in since):
                continue
            tags = sorted(tags_by_image.get(row.id, []))
            if "reference" in f:
                tags = [t for t in tags
                        if any(_filters.reference_matches(p, refs.parse(t)) for p in f["reference"])]
                if not tags:
                    continue
            if not tags:
                if dangling is False or (not all and row.id in parents):
                    continue
            elif dangling:
                continue
            record = self._record_of(row, tags)
            if "label" in f and not _filters.labels_match(f["label"], record.labels):
                continue
            out.append(record)
        out.sort(key=lambda r: (r.created, r.id), reverse=True)
        return out

    def tag(self, source_ref: str, target_ref: str) -> None:
        """``docker tag``: point ``target_ref`` at the image ``source_ref`` names.

        Raises:
            NotFound: no such source image. InvalidArgument: bad target or a digest in it.
        """
        target = refs.parse(target_ref)
        if target.digest is not None:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {target_ref}")
        with self.lock, self.meta.transaction():
            self.meta.set_tag(target.full, self.lookup(source_ref))

    def layer_chain(self, image_id: str) -> builtins.list[tuple[str, str, str]]:
        """``[(chain_id, diff_id, blob_digest)]`` bottom first, to unpack as snapshots: layer
        *i* is ``apply_layer(key=chain_id_i, parent=chain_id_{i-1}, tar=open_layer(blob_i))``.

        Raises:
            NotFound: no such image (a full id is expected).
        """
        if self.meta.get_image(image_id) is None:
            raise NotFound(f"No such image: {image_id}")
        return [(lr.chain_id, lr.diff_id, lr.blob) for lr in self.meta.image_layers(image_id)]

    # -- removal and garbage -------------------------------------------------------------------

    def remove(self, ref: str, force: bool = False, no_prune: bool = False,
               in_use: InUse | None = None, running: InUse | None = None) -> builtins.list[dict[str, str]]:
        """``docker rmi``; see :func:`engine.images.remove.remove`."""
        from engine.images import remove as _remove

        return _remove.remove(self, ref, force=force, no_prune=no_prune, in_use=in_use,
                              running=running)

    def prune(self, dangling_only: bool = True, in_use: InUse | None = None) -> dict[str, Any]:
        """``docker image prune [-a]``; see :func:`engine.images.remove.prune`."""
        from engine.images import remove as _remove

        return _remove.prune(self, dangling_only=dangling_only, in_use=in_use)

    def gc(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """Startup garbage collection: forget layers no image uses and delete blobs no layer
        refers to (leased blobs are kept). Stale temp files are removed when the BlobStore opens.

        Returns:
            ``(removed_chain_ids, removed_blob_digests)``.
        """
        # load/save spool directories a crash left under <root>/tmp (see engine.images.load)
        spool = os.path.join(self.blobs.root, "tmp")
        if os.path.isdir(spool):
            for name in os.listdir(spool):
                if name.startswith(("load-", "save-", "push-")):
                    shutil.rmtree(os.path.join(spool, name), ignore_errors=True)
        with self.lock:
            with self.meta.transaction():
                layers = self.meta.unreferenced_layers()
                for layer in layers:
                    self.meta.delete_layer(layer.chain_id)
            removed = self.blobs.gc(keep=self.meta.referenced_blobs())
        return [lr.chain_id for lr in layers], [str(d) for d in removed]

    def stale_layer_snapshots(self, present: Iterable[str]) -> builtins.list[str]:
        """Of the snapshot keys ``present``, the layer snapshots (``sha256:…`` keys) that no
        recorded layer uses any more, sorted. The caller removes them from the kernel; as their
        parent links are forgotten, it retries keys that fail with EBUSY (children first)."""
        known = {lr.chain_id for lr in self.meta.list_layers()}
        return sorted(k for k in present if k.startswith("sha256:") and k not in known)
