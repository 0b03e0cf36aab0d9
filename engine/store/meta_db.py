"""The SQLite connection under the metadata store: schema, migration, transactions.

The contract is in :mod:`engine.store.meta`; :class:`MetaDB` is the base that
:class:`~engine.store.meta_images.ImageRecords` and
:class:`~engine.store.meta_containers.ContainerRecords` build their tables' methods on.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from engine.errors import Internal

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


class MetaDB:
    """One SQLite connection with the schema migrated, a re-entrant lock and nestable
    transactions.

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

    def __enter__(self) -> Self:
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

    @contextmanager
    def _commit(self, durable: bool) -> Iterator[None]:
        """:meth:`transaction`, committed without a journal sync when not ``durable`` (see
        :meth:`~engine.store.meta_containers.ContainerRecords.put_container`)."""
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
