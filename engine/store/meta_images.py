"""Image records of the metadata store: layers, images, tags, layer sources and repo digests.

The contract is in :mod:`engine.store.meta`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import AlreadyExists, Conflict, NotFound
from engine.store.meta_db import MetaDB


@dataclass(frozen=True, slots=True)
class LayerRow:
    """One layer. ``blob`` is the stored blob holding it: the uncompressed tar (``blob ==
    diff_id``: imports, commits, loads; ``media_type`` None) or a compressed form (``blob !=
    diff_id``: a pulled layer kept as downloaded; ``media_type`` the layer media type, e.g.
    ``application/vnd.docker.image.rootfs.diff.tar.gzip``). ``size`` is always the size of
    the *uncompressed* tar (what ``docker images``/``history``/``system df`` show)."""

    chain_id: str
    diff_id: str
    parent: str | None
    blob: str
    size: int
    snapshot: str | None = None
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One image; ``config`` is the exact JSON text whose sha256 is ``id``."""

    id: str
    config: str
    created: str
    size: int
    parent: str | None
    added: float
    layers: tuple[str, ...] = ()  # chain ids, bottom first



class ImageRecords(MetaDB):
    """The image tables' methods (a base of :class:`~engine.store.meta.MetaStore`)."""

    # -- layers --------------------------------------------------------------------------------

    def put_layer(self, layer: LayerRow) -> None:
        """Record a layer (no-op if ``chain_id`` is known; layers are immutable)."""
        with self.transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO layers VALUES (?,?,?,?,?,?,?)",
                (layer.chain_id, layer.diff_id, layer.parent, layer.blob, layer.size, layer.snapshot,
                 layer.media_type))

    def get_layer(self, chain_id: str) -> LayerRow | None:
        rows = self._query("SELECT * FROM layers WHERE chain_id=?", (chain_id,))
        return LayerRow(*rows[0]) if rows else None

    def list_layers(self) -> list[LayerRow]:
        return [LayerRow(*r) for r in self._query("SELECT * FROM layers ORDER BY chain_id")]

    def image_layers(self, image_id: str) -> list[LayerRow]:
        """The layers of ``image_id``, bottom first (empty if unknown)."""
        rows = self._query(
            "SELECT l.* FROM image_layers il JOIN layers l ON l.chain_id = il.chain_id "
            "WHERE il.image_id=? ORDER BY il.position", (image_id,))
        return [LayerRow(*r) for r in rows]

    def layer_refcount(self, chain_id: str) -> int:
        """How many images use layer ``chain_id``."""
        return int(self._query("SELECT COUNT(*) FROM image_layers WHERE chain_id=?",
                               (chain_id,))[0][0])

    def set_layer_snapshot(self, chain_id: str, key: str | None) -> None:
        """Remember the snapshot key a layer was unpacked as. Raises NotFound."""
        with self.transaction():
            cur = self._conn.execute("UPDATE layers SET snapshot=? WHERE chain_id=?", (key, chain_id))
            if cur.rowcount == 0:
                raise NotFound(f"no such layer: {chain_id}")

    def delete_layer(self, chain_id: str) -> None:
        """Forget an unused layer. Raises NotFound, Conflict if an image still uses it."""
        with self.transaction():
            if self.layer_refcount(chain_id):
                raise Conflict(f"cannot delete layer {chain_id}: in use by an image")
            if self._conn.execute("DELETE FROM layers WHERE chain_id=?", (chain_id,)).rowcount == 0:
                raise NotFound(f"no such layer: {chain_id}")

    def unreferenced_layers(self) -> list[LayerRow]:
        rows = self._query("SELECT * FROM layers WHERE chain_id NOT IN "
                           "(SELECT chain_id FROM image_layers) ORDER BY chain_id")
        return [LayerRow(*r) for r in rows]

    def referenced_blobs(self) -> set[str]:
        """Every blob digest some layer row points at."""
        return {r[0] for r in self._query("SELECT DISTINCT blob FROM layers")}

    def blob_referenced(self, digest: str) -> bool:
        return bool(self._query("SELECT 1 FROM layers WHERE blob=? LIMIT 1", (digest,)))

    def layer_blobs(self, diff_id: str) -> list[tuple[str, int, str | None]]:
        """``[(blob, uncompressed size, media_type)]`` the layer rows of ``diff_id`` name
        (distinct; the uncompressed form — ``blob == diff_id`` — first)."""
        rows = self._query("SELECT DISTINCT blob, size, media_type FROM layers WHERE diff_id=? "
                           "ORDER BY blob != diff_id, blob", (diff_id,))
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def blob_layer(self, blob: str) -> tuple[str, str | None] | None:
        """``(diff_id, media_type)`` of a layer row naming ``blob``, or None."""
        rows = self._query("SELECT diff_id, media_type FROM layers WHERE blob=? LIMIT 1", (blob,))
        return (rows[0][0], rows[0][1]) if rows else None

    # -- images --------------------------------------------------------------------------------

    def put_image(self, image: ImageRow, layers: Sequence[LayerRow]) -> None:
        """Record an image and its layers (bottom first) atomically.

        Raises:
            AlreadyExists: an image with this id is already recorded.
        """
        with self.transaction():
            if self._conn.execute("SELECT 1 FROM images WHERE id=?", (image.id,)).fetchone():
                raise AlreadyExists(f"image {image.id} already exists")
            self._conn.execute("INSERT INTO images VALUES (?,?,?,?,?,?)",
                               (image.id, image.config, image.created, image.size, image.parent,
                                image.added))
            for pos, layer in enumerate(layers):
                self.put_layer(layer)
                self._conn.execute("INSERT INTO image_layers VALUES (?,?,?)",
                                   (image.id, pos, layer.chain_id))

    def _image(self, row: tuple[Any, ...]) -> ImageRow:
        chain = self._query("SELECT chain_id FROM image_layers WHERE image_id=? ORDER BY position",
                            (row[0],))
        return ImageRow(row[0], row[1], row[2], row[3], row[4], row[5],
                        tuple(r[0] for r in chain))

    def get_image(self, image_id: str) -> ImageRow | None:
        with self._lock:
            rows = self._query("SELECT * FROM images WHERE id=?", (image_id,))
            return self._image(rows[0]) if rows else None

    def list_images(self) -> list[ImageRow]:
        """All images, oldest first."""
        with self._lock:
            return [self._image(r) for r in self._query("SELECT * FROM images ORDER BY added, id")]

    def image_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM images ORDER BY id")]

    def children(self, image_id: str) -> list[str]:
        """Images whose ``parent`` is ``image_id``."""
        return [r[0] for r in self._query("SELECT id FROM images WHERE parent=? ORDER BY id",
                                          (image_id,))]

    def delete_image(self, image_id: str) -> list[LayerRow]:
        """Delete an image with its tags; drop layers no other image uses.

        Returns:
            The layer rows removed (their blobs/snapshots may now be unused).

        Raises:
            NotFound: no such image.
        """
        with self.transaction():
            layers = self.image_layers(image_id)
            if self._conn.execute("DELETE FROM images WHERE id=?", (image_id,)).rowcount == 0:
                raise NotFound(f"No such image: {image_id}")
            removed: list[LayerRow] = []
            for layer in layers:
                if layer.chain_id not in {r.chain_id for r in removed} \
                        and not self.layer_refcount(layer.chain_id):
                    self._conn.execute("DELETE FROM layers WHERE chain_id=?", (layer.chain_id,))
                    removed.append(layer)
            return removed

    # -- tags ----------------------------------------------------------------------------------

    def set_tag(self, reference: str, image_id: str) -> str | None:
        """Point ``reference`` (normalised full form) at ``image_id``.

        Returns:
            The image id it pointed at before, or None.

        Raises:
            NotFound: no such image.
        """
        with self.transaction():
            if not self._conn.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone():
                raise NotFound(f"No such image: {image_id}")
            old = self.get_tag(reference)
            self._conn.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?)",
                               (reference, image_id, time.time()))
            return old

    def get_tag(self, reference: str) -> str | None:
        rows = self._query("SELECT image_id FROM tags WHERE reference=?", (reference,))
        return str(rows[0][0]) if rows else None

    def delete_tag(self, reference: str) -> bool:
        """Remove a tag; False if it did not exist."""
        with self.transaction():
            return self._conn.execute("DELETE FROM tags WHERE reference=?",
                                      (reference,)).rowcount > 0

    def tags_for(self, image_id: str) -> list[str]:
        """References pointing at ``image_id``, in the order they were added."""
        return [r[0] for r in self._query(
            "SELECT reference FROM tags WHERE image_id=? ORDER BY added, reference", (image_id,))]

    def list_tags(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._query("SELECT reference, image_id FROM tags")}

    # -- registries: layer sources and repo digests ---------------------------------------------

    def add_layer_source(self, diff_id: str, digest: str, size: int, media_type: str,
                         repository: str) -> None:
        """Remember that ``diff_id`` compressed is blob ``digest`` in ``repository``
        (``host/path``; ``""`` for our own deterministic compression)."""
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO layer_sources VALUES (?,?,?,?,?)",
                               (diff_id, digest, size, media_type, repository))

    def layer_sources(self, diff_id: str) -> list[tuple[str, int, str, str]]:
        """``[(digest, size, media_type, repository)]`` known for ``diff_id``."""
        return [(r[0], int(r[1]), r[2], r[3]) for r in self._query(
            "SELECT digest, size, media_type, repository FROM layer_sources WHERE diff_id=? "
            "ORDER BY repository, digest", (diff_id,))]

    def set_repo_digest(self, reference: str, image_id: str) -> None:
        """Record ``repo@sha256:…`` as naming ``image_id``. Raises NotFound (no such image)."""
        with self.transaction():
            if not self._conn.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone():
                raise NotFound(f"No such image: {image_id}")
            self._conn.execute("INSERT OR REPLACE INTO repo_digests VALUES (?,?,?)",
                               (reference, image_id, time.time()))

    def get_repo_digest(self, reference: str) -> str | None:
        rows = self._query("SELECT image_id FROM repo_digests WHERE reference=?", (reference,))
        return str(rows[0][0]) if rows else None

    def repo_digests_for(self, image_id: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT reference FROM repo_digests WHERE image_id=? ORDER BY added, reference", (image_id,))]
