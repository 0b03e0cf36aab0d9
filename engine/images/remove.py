"""``docker rmi`` and ``docker image prune``, following moby's ``daemon/images/image_delete.go``.

Conflicts come in two strengths (moby's ``conflictHard``/``conflictSoft``):

* hard (``force`` does not help): dependent child images; a *running* container uses the image;
* soft (``force`` overrides): other tags still reference the image; a stopped container uses it.

Results are Docker's list of ``{"Untagged": "busybox:latest"}`` / ``{"Deleted": "sha256:…"}``
(the image id, then each layer chain id that no image uses any more).

The metadata transaction commits before any blob is deleted, so a crash leaves only orphan
blobs (removed by ``ImageStore.gc``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine import refs
from engine.errors import Conflict

if TYPE_CHECKING:
    from engine.images.store import ImageStore

InUse = Callable[[str], list[str]]
Records = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class _DeleteConflict:
    image_id: str
    message: str
    hard: bool
    used: bool  # by a container

    def error(self) -> Conflict:
        how = "cannot be forced" if self.hard else "must be forced"
        return Conflict(f"conflict: unable to delete {refs.short_id(self.image_id)} ({how}) - "
                        f"{self.message}")


def _is_id_prefix_of(image_id: str, ref: str) -> bool:
    return image_id.startswith(ref) or image_id.removeprefix("sha256:").startswith(ref)


def _conflict(store: ImageStore, image_id: str, soft: bool, check_tags: bool,
              in_use: InUse | None, running: InUse | None) -> _DeleteConflict | None:
    if store.meta.children(image_id):
        return _DeleteConflict(image_id, "image has dependent child images", True, False)
    live = running(image_id) if running else []
    if live:
        return _DeleteConflict(image_id, f"image is being used by running container "
                                         f"{refs.short_id(live[0])}", True, True)
    if not soft:
        return None
    if check_tags and store.meta.tags_for(image_id):
        return _DeleteConflict(image_id, "image is referenced in multiple repositories",
                               False, False)
    stopped = [c for c in (in_use(image_id) if in_use else []) if c not in live]
    if stopped:
        return _DeleteConflict(image_id, f"image is being used by stopped container "
                                         f"{refs.short_id(stopped[0])}", False, True)
    return None


def remove(store: ImageStore, ref: str, force: bool = False, no_prune: bool = False,
           in_use: InUse | None = None, running: InUse | None = None) -> Records:
    """Untag and/or delete the image ``ref`` names.

    Args:
        store: the image store.
        ref: a reference (untags it; deletes the image when it was the last tag) or an id /
            id prefix (deletes the image and all its tags).
        force: override soft conflicts.
        no_prune: keep untagged parent images.
        in_use: image id → ids of containers (running or not) using it.
        running: image id → ids of *running* containers using it (hard conflict).

    Returns:
        Docker's ``[{"Untagged": …}, {"Deleted": …}]`` records.

    Raises:
        NotFound: no such image. Conflict: see the module docstring.
    """
    records: Records = []
    deleted_blobs: list[str] = []
    with store.lock:
        with store.meta.transaction():
            image_id = store.lookup(ref)
            tags = store.meta.tags_for(image_id)
            quiet = False
            if not _is_id_prefix_of(image_id, ref):
                target = refs.parse(ref)
                users = in_use(image_id) if in_use else []
                if not force and len(tags) <= 1 and users:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref}" (must force) - '
                        f"container {refs.short_id(users[0])} is using its referenced image "
                        f"{refs.short_id(image_id)}")
                store.meta.delete_tag(target.full)
                records.append({"Untagged": str(target)})
                if store.meta.tags_for(image_id):
                    return records
                quiet = True
            elif len(tags) <= 1:
                found = _conflict(store, image_id, not force, False, in_use, running)
                if found is not None:
                    raise found.error()
                for t in tags:
                    store.meta.delete_tag(t)
                    records.append({"Untagged": str(refs.parse(t))})
            _delete(store, image_id, force, not no_prune, quiet, in_use, running, records,
                    deleted_blobs)
        for blob in deleted_blobs:
            if not store.meta.blob_referenced(blob):
                store.blobs.discard(blob)
    return records


def _delete(store: ImageStore, image_id: str, force: bool, prune: bool, quiet: bool,
            in_use: InUse | None, running: InUse | None, records: Records,
            deleted_blobs: list[str]) -> None:
    """moby's ``imageDeleteHelper`` (inside the caller's transaction)."""
    found = _conflict(store, image_id, not force, True, in_use, running)
    if found is not None:
        # moby's imageIsDangling: no references and no children
        dangling = not store.meta.tags_for(image_id) and not store.meta.children(image_id)
        if quiet and (not dangling or found.used):
            return
        raise found.error()
    row = store.meta.get_image(image_id)
    parent = row.parent if row is not None else None
    for t in store.meta.tags_for(image_id):
        store.meta.delete_tag(t)
        records.append({"Untagged": str(refs.parse(t))})
    layers = store.meta.delete_image(image_id)
    records.append({"Deleted": image_id})
    for layer in reversed(layers):
        records.append({"Deleted": layer.chain_id})
        deleted_blobs.append(layer.blob)
    if prune and parent and store.meta.get_image(parent) is not None:
        _delete(store, parent, False, True, True, in_use, running, records, deleted_blobs)


def prune(store: ImageStore, dangling_only: bool = True,
          in_use: InUse | None = None) -> dict[str, Any]:
    """Delete unused images: untagged ones, or with ``dangling_only=False`` every image no
    container uses.

    Returns:
        Docker's ``{"ImagesDeleted": records, "SpaceReclaimed": bytes}`` (bytes of blobs
        actually deleted).
    """
    records: Records = []
    deleted_blobs: list[str] = []
    reclaimed = 0
    with store.lock:
        with store.meta.transaction():
            for row in reversed(store.meta.list_images()):  # newest first: children go first
                if store.meta.get_image(row.id) is None:
                    continue
                if dangling_only and store.meta.tags_for(row.id):
                    continue
                if (in_use(row.id) if in_use else []) or store.meta.children(row.id):
                    continue
                _delete(store, row.id, True, True, True, in_use, None, records, deleted_blobs)
        for blob in dict.fromkeys(deleted_blobs):
            if not store.meta.blob_referenced(blob) and store.blobs.exists(blob):
                size = store.blobs.size(blob)
                if store.blobs.discard(blob):
                    reclaimed += size
    return {"ImagesDeleted": records, "SpaceReclaimed": reclaimed}
