"""Container records of the metadata store (``containers``: id, unique name, image, doc).

The contract is in :mod:`engine.store.meta`; the ``doc`` is an opaque JSON object owned by the
container code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from engine.errors import AlreadyExists, NotFound
from engine.store.meta_db import MetaDB


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



class ContainerRecords(MetaDB):
    """The container table's methods (a base of :class:`~engine.store.meta.MetaStore`)."""

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
