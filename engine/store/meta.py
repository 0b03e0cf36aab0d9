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

from engine.store.meta_containers import ContainerRecords, ContainerRow
from engine.store.meta_db import SCHEMA_VERSION, MetaDB
from engine.store.meta_images import ImageRecords, ImageRow, LayerRow

__all__ = ["SCHEMA_VERSION", "ContainerRow", "ImageRow", "LayerRow", "MetaDB", "MetaStore"]


class MetaStore(ImageRecords, ContainerRecords):
    """The SQLite metadata store: image records (:mod:`engine.store.meta_images`) and container
    records (:mod:`engine.store.meta_containers`) over one connection
    (:class:`~engine.store.meta_db.MetaDB`).

    Args:
        root: the state root; the database is ``<root>/metadata.db``.
        synchronous: SQLite ``synchronous`` pragma ("FULL" or "NORMAL").

    Raises:
        Internal: the database is from a newer schema or cannot be opened.
    """
