"""Metadata store: images, tags, layers and containers in SQLite (``<root>/metadata.db``).

Contract:

* One connection (``check_same_thread=False``), WAL journal, ``synchronous=FULL`` (a container's
  runtime state may opt out per commit: ``put_container(durable=False)``), foreign keys
  on. Every method is atomic on its own; ``with store.transaction():`` groups several calls into
  one atomic unit (nested blocks are savepoints: an exception rolls back only its own block).
  An exception escaping the outermost block rolls everything back, so a crash "between two
  writes" leaves either both or neither.
* A re-entrant lock serialises all access; a transaction holds it until it ends.
* ``tags``/``image_layers`` reference ``images``/``layers`` by foreign key. ``containers.image_id``
  deliberately does not: ``rmi --force`` may delete an image a stopped container still names.
* Layers are shared between images and refcounted by the ``image_layers`` rows that use them:
  :meth:`MetaStore.delete_image` drops layers whose count falls to zero and returns them so the
  caller can delete their blobs and snapshots.
* Container ``doc`` is an opaque JSON object owned by the container code.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.errors import AlreadyExists, Conflict, Internal, NotFound

SCHEMA_VERSION = 2  # 2: layers.media_type (layers kept compressed, as pulled)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id      TEXT PRIMARY KEY,
    config  TEXT NOT NULL,
    created TEXT NOT NULL,
    size    INTEGER NOT NULL,
    parent  TEXT,
    added   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id  TEXT NOT NULL,
    parent   TEXT,
    blob     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    snapshot TEXT,
    media_type TEXT
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    chain_id TEXT NOT NULL REFERENCES layers(chain_id),
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE TABLE IF NOT EXISTS tags (
    reference TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    added     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image_id);
-- registries: where a layer's compressed form is known to live (push skips and mounts)
CREATE TABLE IF NOT EXISTS layer_sources (
    diff_id    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (diff_id, digest, repository)
);
-- "repo@sha256:<manifest digest>" of pulled/pushed images (RepoDigests)
CREATE TABLE IF NOT EXISTS repo_digests (
    reference TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    added     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS repo_digests_image ON repo_digests(image_id);
CREATE TABLE IF NOT EXISTS containers (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    doc      TEXT NOT NULL,
    created  REAL NOT NULL
);
"""


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


@dataclass(frozen=True, slots=True)
class ContainerRow:
    id: str
    name: str
    image_id: str
    doc: dict[str, Any]
    created: float


def _name_in_use(name: str, owner: str) -> AlreadyExists:
    shown = name if name.startswith("/") else "/" + name
    return AlreadyExists(
        f'Conflict. The container name "{shown}" is already in use by container "{owner}". '
        "You have to remove (or rename) that container to be able to reuse that name.")


class MetaStore:
    """The SQLite metadata store.

    Args:
        root: the state root; the database is ``<root>/metadata.db``.
        synchronous: SQLite ``synchronous`` pragma ("FULL" or "NORMAL").

    Raises:
        Internal: the database is from a newer schema or cannot be opened.
    """

    def __init__(self, root: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.path = os.path.join(self.root, "metadata.db")
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise Internal(f"cannot open metadata store {self.path}: {e}") from e
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        with self.transaction():
            # not executescript(): before 3.12 it COMMITs any open transaction first
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise Internal(f"metadata store {self.path}: schema version {row[0]} is newer than "
                               f"the supported {SCHEMA_VERSION}")
            elif row[0] < SCHEMA_VERSION:
                cols = {r[1] for r in self._conn.execute("PRAGMA table_info(layers)")}
                if "media_type" not in cols:  # version 1: every layer blob was uncompressed
                    self._conn.execute("ALTER TABLE layers ADD COLUMN media_type TEXT")
                self._conn.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically; nested blocks become savepoints. Rolls back on exception."""
        with self._lock:
            depth = self._depth
            if depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            else:
                self._conn.execute(f"SAVEPOINT sp{depth}")
            self._depth = depth + 1
            try:
                yield
            except BaseException:
                self._depth = depth
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO sp{depth}")
                    self._conn.execute(f"RELEASE sp{depth}")
                raise
            self._depth = depth
            self._conn.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

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

    # -- containers ----------------------------------------------------------------------------

    def put_container(self, id: str, name: str, image_id: str, doc: dict[str, Any],
                      created: float | None = None, durable: bool = True) -> None:
        """Insert or replace container ``id`` (its ``created`` is kept on replace).

        ``durable=False`` commits without syncing the journal (``synchronous=NORMAL`` for this
        one commit; outside any enclosing transaction only). Still atomic and still there after
        a crash of the process (the WAL is in the OS's page cache); only a power cut or a kernel
        crash may lose it — along with later non-durable commits, never with a later durable
        one (syncing the WAL syncs every frame before it). For runtime state that a power cut
        makes moot anyway (which containers run).

        Raises:
            AlreadyExists: ``name`` belongs to another container (Docker's message).
        """
        text = json.dumps(doc, sort_keys=True)
        with self._commit(durable):
            owner = self._conn.execute("SELECT id FROM containers WHERE name=?", (name,)).fetchone()
            if owner is not None and owner[0] != id:
                raise _name_in_use(name, owner[0])
            self._conn.execute(
                "INSERT INTO containers VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "name=excluded.name, image_id=excluded.image_id, doc=excluded.doc",
                (id, name, image_id, text, time.time() if created is None else created))

    @contextmanager
    def _commit(self, durable: bool) -> Iterator[None]:
        """:meth:`transaction`, committed without a journal sync when not ``durable`` (see
        :meth:`put_container`)."""
        with self._lock:
            relaxed = not durable and self._depth == 0 and self._synchronous == "FULL"
            if relaxed:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self.transaction():
                    yield
            finally:
                if relaxed:
                    self._conn.execute("PRAGMA synchronous=FULL")

    def _container(self, row: tuple[Any, ...]) -> ContainerRow:
        return ContainerRow(row[0], row[1], row[2], json.loads(row[3]), row[4])

    def get_container(self, id: str) -> ContainerRow:
        """Raises NotFound: "No such container: {id}"."""
        rows = self._query("SELECT * FROM containers WHERE id=?", (id,))
        if not rows:
            raise NotFound(f"No such container: {id}")
        return self._container(rows[0])

    def find_container(self, name: str) -> ContainerRow | None:
        """The container named ``name``, or None."""
        rows = self._query("SELECT * FROM containers WHERE name=?", (name,))
        return self._container(rows[0]) if rows else None

    def list_containers(self) -> list[ContainerRow]:
        """All containers, oldest first."""
        return [self._container(r) for r in self._query(
            "SELECT * FROM containers ORDER BY created, id")]

    def container_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM containers ORDER BY id")]

    def containers_using(self, image_id: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT id FROM containers WHERE image_id=? ORDER BY created, id", (image_id,))]

    def delete_container(self, id: str, durable: bool = True) -> None:
        """Raises NotFound. ``durable``: as for :meth:`put_container`."""
        with self._commit(durable):
            if self._conn.execute("DELETE FROM containers WHERE id=?", (id,)).rowcount == 0:
                raise NotFound(f"No such container: {id}")

    def rename_container(self, id: str, new_name: str) -> None:
        """Raises NotFound, AlreadyExists (name used by another container)."""
        with self.transaction():
            owner = self._conn.execute("SELECT id FROM containers WHERE name=?",
                                       (new_name,)).fetchone()
            if owner is not None and owner[0] != id:
                raise _name_in_use(new_name, owner[0])
            if self._conn.execute("UPDATE containers SET name=? WHERE id=?",
                                  (new_name, id)).rowcount == 0:
                raise NotFound(f"No such container: {id}")
