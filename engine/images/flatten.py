"""Layer stacks as one tree: the merged view of image layers (+ a container's write layer),
computed from the layer tars themselves (no mounts, so it works the same on every backend).

* :class:`Merged` applies layer tars in order with overlay semantics (``.wh.`` whiteouts,
  ``.wh..wh..opq`` opaque dirs, later entries replacing earlier ones, hardlinks to earlier
  files) and remembers where each final entry's header and content are;
* :func:`export` writes the merged tree as one plain tar (``docker export``): sorted, parents
  first, whiteouts applied, hardlinks kept when their target survives and materialised as a
  copy when it does not;
* :func:`changes` gives ``docker diff``'s ``A``/``C``/``D`` list for a write layer.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

from engine.images.tarscan import (
    DIRTYPE,
    HARDLINK,
    REGULAR,
    WH_OPAQUE,
    WH_PREFIX,
    Entry,
    ScanLimits,
    TarError,
    TarReader,
    clean_name,
    scan_file,
)

CHUNK = 1024 * 1024


@dataclass(eq=False, slots=True)
class Rec:
    """A final entry: which layer file holds it, and its header."""

    layer: int
    entry: Entry
    src: Rec | None = None  # for a hardlink: the regular file it shares content with


class Merged:
    """The merged tree of a stack of layer tars (bottom first)."""

    def __init__(self, limits: ScanLimits | None = None) -> None:
        self.limits = limits or ScanLimits()
        self.recs: dict[str, Rec] = {}  # "a/b" → entry ("" is never stored)
        self.children: dict[str, set[str]] = {"": set()}
        self.layers = 0

    def add_layer(self, f: BinaryIO) -> None:
        """Apply the uncompressed, seekable layer tar ``f`` on top. Raises TarError."""
        idx = self.layers
        self.layers += 1
        scan_file(f, TarReader(on_entry=lambda e: self._apply(idx, e), limits=self.limits))

    def _apply(self, idx: int, e: Entry) -> None:
        path = clean_name(e.name, e.name, allow_absolute=True)
        if not path:
            return
        parent, base = posixpath.split(path)
        if base == WH_OPAQUE:
            for child in list(self.children.get(parent, ())):
                self._remove(posixpath.join(parent, child) if parent else child)
            return
        if base.startswith(WH_PREFIX):
            self._remove(posixpath.join(parent, base[len(WH_PREFIX):]))
            return
        self._ensure_parents(parent)
        old = self.recs.get(path)
        if old is not None and not (e.type == DIRTYPE and old.entry.type == DIRTYPE):
            self._remove(path)
        rec = Rec(idx, e)
        if e.type == HARDLINK:
            target = self.recs.get(clean_name(e.linkname, e.name, allow_absolute=True))
            if target is None or target.entry.type not in REGULAR + (HARDLINK,):
                raise TarError(f"hardlink {e.name!r} to missing file {e.linkname!r}", e.name)
            rec.src = target.src or target
        self.recs[path] = rec
        self.children.setdefault(parent, set()).add(base)
        if e.type == DIRTYPE:
            self.children.setdefault(path, set())

    def _ensure_parents(self, parent: str) -> None:
        if not parent or parent in self.recs:
            return
        up, base = posixpath.split(parent)
        self._ensure_parents(up)
        self.recs[parent] = Rec(-1, Entry(name=parent + "/", type=DIRTYPE, size=0, mode=0o755))
        self.children.setdefault(up, set()).add(base)
        self.children.setdefault(parent, set())

    def _remove(self, path: str) -> None:
        if path not in self.recs:
            return
        for child in list(self.children.get(path, ())):
            self._remove(f"{path}/{child}")
        self.children.pop(path, None)
        del self.recs[path]
        parent, base = posixpath.split(path)
        self.children.get(parent, set()).discard(base)

    def paths(self) -> Iterator[str]:
        """Every path, sorted with parents first."""
        return iter(sorted(self.recs, key=lambda p: p.split("/")))


def merged(layers: Sequence[BinaryIO], limits: ScanLimits | None = None) -> Merged:
    m = Merged(limits)
    for f in layers:
        m.add_layer(f)
    return m


def export(m: Merged, layers: Sequence[BinaryIO], out: BinaryIO | IO[bytes]) -> None:
    """Write the merged tree ``m`` (built from ``layers``, still open) as a plain tar."""
    emitted: dict[int, str] = {}  # id(content rec) → first path written with that content
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for path in m.paths():
            rec = m.recs[path]
            e = rec.entry
            ti = tarfile.TarInfo(path + ("/" if e.type == DIRTYPE else ""))
            ti.mode, ti.uid, ti.gid, ti.mtime = e.mode & 0o7777, e.uid, e.gid, int(e.mtime)
            ti.uname, ti.gname = e.pax.get("uname", ""), e.pax.get("gname", "")
            content = rec.src if rec.src is not None else rec
            if e.type in REGULAR or e.type == HARDLINK:
                first = emitted.get(id(content))
                if first is not None:
                    ti.type, ti.linkname = tarfile.LNKTYPE, first
                    tf.addfile(ti)
                    continue
                emitted[id(content)] = path
                ti.type, ti.size = tarfile.REGTYPE, content.entry.size
                f = layers[content.layer]
                f.seek(content.entry.offset)
                tf.addfile(ti, _Limited(f, content.entry.size))
                continue
            ti.type = e.type
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            tf.addfile(ti)


class _Limited:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def changes(lower: Merged, diff: BinaryIO) -> list[tuple[str, str]]:
    """``docker diff``: ``[(kind, "/path")]`` sorted by path, kind ``A`` (added), ``C``
    (changed) or ``D`` (deleted), for the write-layer tar ``diff`` over the tree ``lower``."""
    out: dict[str, str] = {}

    def on_entry(e: Entry) -> None:
        path = clean_name(e.name, e.name, allow_absolute=True)
        if not path:
            return
        parent, base = posixpath.split(path)
        if base == WH_OPAQUE:
            if parent:
                out.setdefault("/" + parent, "C")
            return
        if base.startswith(WH_PREFIX):
            out["/" + posixpath.join(parent, base[len(WH_PREFIX):])] = "D"
            return
        out["/" + path] = "C" if path in lower.recs else "A"

    scan_file(diff, TarReader(on_entry=on_entry, limits=lower.limits))
    return [(kind, path) for path, kind in sorted(out.items(), key=lambda kv: kv[0].split("/"))]
