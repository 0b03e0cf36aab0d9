"""Consistency check of the metadata store against the blob store (and kernel snapshots).

*Dangling* problems are references to something missing; they mean lost data and must never
appear after a crash if the write order is right:

* ``tag``: a tag naming a missing image;
* ``image_layer``: an image whose layer blob is missing;
* ``image_config``: an image whose config does not hash to its id (or is not valid);
* ``container_image``: a container naming a missing image (legitimate after ``rmi --force``,
  but still reported).
* with ``verify_blobs``: ``blob_digest``, a blob whose content does not hash to its name, and
  ``layer_content``, a compressed layer blob that does not decompress to its layer's diff_id.

*Orphans* are leftovers nothing refers to; they waste space and are what a crash is allowed to
leave (``ImageStore.gc`` / ``BlobStore.clean_temp`` remove them at startup):

* ``blob``: a blob no layer refers to (unless leased);
* ``temp``: a temp file in ``blobs/tmp``;
* ``layer``: a layer row no image uses;
* ``snapshot``: a ``sha256:`` snapshot key (a layer snapshot) no layer row knows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.errors import EngineError, InvalidArgument
from engine.images.config import parse_config
from engine.images.layerblob import open_layer
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``kind`` (see the module docstring), ``subject`` (what), ``detail``."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass(slots=True)
class Report:
    dangling: list[Problem] = field(default_factory=list)
    orphans: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No dangling references (orphans are tolerated)."""
        return not self.dangling

    @property
    def clean(self) -> bool:
        """Neither dangling references nor orphans."""
        return not self.dangling and not self.orphans

    def kinds(self) -> set[str]:
        return {p.kind for p in self.dangling + self.orphans}

    def __str__(self) -> str:
        lines = [f"dangling {p}" for p in self.dangling] + [f"orphan {p}" for p in self.orphans]
        return "\n".join(lines) or "clean"


def check(meta: MetaStore, blobs: BlobStore, snapshots_present: Iterable[str] | None = None,
          verify_blobs: bool = False) -> Report:
    """Cross-check ``meta`` and ``blobs``.

    Args:
        meta, blobs: the stores.
        snapshots_present: snapshot keys the kernel has (None = skip the snapshot check).
        verify_blobs: also re-hash every referenced blob and decompress the compressed layer
            blobs (slow; reports ``blob_digest`` and ``layer_content``).

    Returns:
        The :class:`Report`.
    """
    report = Report()
    image_ids = set(meta.image_ids())
    for reference, image_id in sorted(meta.list_tags().items()):
        if image_id not in image_ids:
            report.dangling.append(Problem("tag", reference, f"names missing image {image_id}"))
    present = set(blobs.list())
    for image in meta.list_images():
        try:
            parse_config(image.config)
            good = "sha256:" + hashlib.sha256(image.config.encode()).hexdigest() == image.id
        except InvalidArgument:
            good = False
        if not good:
            report.dangling.append(Problem("image_config", image.id,
                                           "config does not match the image id"))
        for layer in meta.image_layers(image.id):
            if layer.blob not in present:
                report.dangling.append(Problem("image_layer", image.id,
                                               f"layer {layer.chain_id} blob {layer.blob} missing"))
    for container in meta.list_containers():
        if container.image_id not in image_ids:
            report.dangling.append(Problem("container_image", container.id,
                                           f"names missing image {container.image_id}"))
    layers = meta.list_layers()
    referenced = {lr.blob for lr in layers}
    if verify_blobs:
        for digest in sorted(referenced & present):
            with blobs.open(digest) as f:
                h = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                report.dangling.append(Problem("blob_digest", digest, "content does not match"))
        # a compressed layer blob must also decompress to its diff_id (engine.images.layerblob)
        seen: set[tuple[str, str]] = set()
        for lr in layers:
            if lr.blob == lr.diff_id or lr.blob not in present or (lr.blob, lr.diff_id) in seen:
                continue
            seen.add((lr.blob, lr.diff_id))
            try:
                with open_layer(blobs, lr.blob, lr.diff_id, lr.size, verify=True) as f:
                    while f.read(1 << 20):
                        pass
            except EngineError as e:
                report.dangling.append(Problem("layer_content", lr.chain_id, str(e)))
    leased = blobs.leased()
    for digest in sorted(present - referenced - leased):
        report.orphans.append(Problem("blob", digest, "no layer refers to it"))
    for path in blobs.temp_files():
        report.orphans.append(Problem("temp", path, "leftover temp file"))
    for layer in meta.unreferenced_layers():
        report.orphans.append(Problem("layer", layer.chain_id, "no image uses it"))
    if snapshots_present is not None:
        chain_ids = {lr.chain_id for lr in layers}
        for key in sorted(snapshots_present):
            if key.startswith("sha256:") and key not in chain_ids:
                report.orphans.append(Problem("snapshot", key, "no layer refers to it"))
    return report


def repair(meta: MetaStore, blobs: BlobStore, report: Report,
           temp: bool = False) -> list[Problem]:
    """Fix what can be fixed without guessing: delete dangling tags, orphan layer rows, orphan
    blobs (not leased), and with ``temp=True`` temp files (only safe with no ingest in flight).

    Images with missing blobs, containers with missing images and orphan snapshots (a kernel
    matter) are left for the caller.

    Returns:
        The problems that were fixed.
    """
    fixed: list[Problem] = []
    with meta.transaction():
        for p in report.dangling:
            if p.kind == "tag" and meta.delete_tag(p.subject):
                fixed.append(p)
        for p in report.orphans:
            if p.kind == "layer" and meta.get_layer(p.subject) is not None \
                    and not meta.layer_refcount(p.subject):
                meta.delete_layer(p.subject)
                fixed.append(p)
    referenced = meta.referenced_blobs()
    for p in report.orphans:
        if p.kind == "blob" and p.subject not in referenced and blobs.discard(p.subject):
            fixed.append(p)
        elif p.kind == "temp" and temp:
            try:
                os.unlink(p.subject)
                fixed.append(p)
            except FileNotFoundError:
                pass
    return fixed

