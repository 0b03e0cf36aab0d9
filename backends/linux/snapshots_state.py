"""The snapshots role's records on disk and their in-memory index (``LinuxSnapshots``' base).

On disk (``<root>``, persistent across ``LinuxKernel`` instances: a restarted daemon sees the same
snapshots and can unmount what an earlier one mounted)::

    snapshots/<n>/meta.json   {"key", "kind", "parent", "size"[, "implicit"]}; written atomically, last
    snapshots/<n>/fs/         a committed layer's files, or an active snapshot's overlay upper
    snapshots/<n>/work/       overlay workdir (active only)
    snapshots/<n>/lower/      transient: the parent chain mounted read-only while a layer that
                              needs it (hardlink copy-up, implicit dir metadata) is unpacked
    snapshots/empty/          an empty dir: the bottom lower of an active snapshot without parent
                              and the second lower of a lone committed layer (older kernels need 2)
    mounts/<hash>.json        one per mount we made: {"target", "key", "created", "volatile"}
    trash/                    removed snapshot dirs, deleted in the background (``trash.Trash``)

Keys (chain ids ``sha256:…``, container ids) map to short numeric dirs so overlay option strings
stay short (see ``backends.linux.overlay`` for what happens when a chain is still too long).

The disk is the source of truth; the index (key → :class:`Snap`: dir, kind, parent, size,
number of children) and the mount records are read from it once, at start-up
(:meth:`SnapshotState._init_snapshots`), and every change is written to disk first, then to
the index, under ``_snap_lock``. A numeric dir without ``meta.json`` is an unfinished apply or
remove and is deleted at start-up. So a crash at any point leaves a disk the next start indexes
correctly. Not supported: two live instances changing the same root at once (each would keep a
stale index; the daemon holds its root alone). The leak checks (``_leaks_*``) read the disk, not
the index, so an instance still sees what another one left.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from backends.linux import overlay
from backends.linux.layer_root import rmtree_at
from backends.linux.trash import Trash
from engine.kernel import SnapshotKind


def snap_error(code: int, what: str, message: str) -> OSError:
    return OSError(code, message, what)


def write_json_atomic(path: str, obj: object, sync: bool = True) -> None:
    """Write ``path`` atomically; ``sync`` also makes it durable (two fsyncs)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if not sync:
        return
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclasses.dataclass
class Snap:
    """One snapshot as its ``meta.json`` says, plus ``children``: how many snapshots name it as
    their parent (kept by the index, not stored)."""

    key: str
    n: str  # the numeric dir under snapshots/
    kind: SnapshotKind
    parent: str | None
    size: int
    implicit: builtins.list[str] | None = None  # for bind_layer (parentless layers only)
    children: int = 0


class SnapshotState:
    """On-disk records, their index and the mount records (the base of ``LinuxSnapshots``)."""

    root: str

    # ---- lifecycle ------------------------------------------------------------------------
    def _init_snapshots(self) -> None:
        self._snapshots_dir = os.path.join(self.root, "snapshots")
        self._mounts_dir = os.path.join(self.root, "mounts")
        self._empty_dir = os.path.join(self._snapshots_dir, "empty")
        for d in (self._snapshots_dir, self._mounts_dir, self._empty_dir):
            os.makedirs(d, mode=0o711, exist_ok=True)
        self._snap_lock = threading.RLock()
        self._pending: dict[str, str | None] = {}  # keys being applied/prepared → parent
        self._snap_trash = Trash(os.path.join(self.root, "trash"))  # removed snapshots, deleted later
        self._snap_trash.empty()
        points = overlay.mount_points()
        self._snaps: dict[str, Snap] = {}
        self._next_n = 1
        for n in self._numeric_dirs():
            self._next_n = max(self._next_n, int(n) + 1)
            meta = self._read_meta(n)
            if meta is None:  # interrupted apply/remove
                self._discard(self._snap_path(n), points)
                continue
            self._snaps[meta["key"]] = Snap(meta["key"], n, SnapshotKind(meta["kind"]), meta["parent"],
                                            meta["size"], meta.get("implicit"))
        for snap in self._snaps.values():
            parent = self._snaps.get(snap.parent) if snap.parent is not None else None
            if parent is not None:
                parent.children += 1
        self._records: dict[str, dict[str, Any]] = {}  # target → mount record
        for rec in self._mount_records():
            if rec["target"] in points:
                self._records[rec["target"]] = rec
            else:  # unmounted behind our back (or by a reboot)
                self._drop_record(rec)

    def _leaks_snapshots(self) -> builtins.list[str]:
        return sorted(m["key"] for m in self._metas())

    def _leaks_snapshots_mounts(self) -> builtins.list[str]:
        points = overlay.mount_points()
        return sorted(r["target"] for r in self._mount_records() if r["target"] in points)

    # ---- on-disk state --------------------------------------------------------------------
    def _numeric_dirs(self) -> builtins.list[str]:
        return [n for n in os.listdir(self._snapshots_dir) if n.isdigit()]

    def _snap_path(self, n: str, *more: str) -> str:
        return os.path.join(self._snapshots_dir, n, *more)

    def _read_meta(self, n: str) -> dict[str, Any] | None:
        try:
            with open(self._snap_path(n, "meta.json"), encoding="utf-8") as fh:
                meta: dict[str, Any] = json.load(fh)
        except FileNotFoundError:
            return None
        meta["n"] = n
        return meta

    def _metas(self) -> builtins.list[dict[str, Any]]:
        """Every snapshot's meta.json as on disk now (with its dir as ``"n"``), not the index."""
        return [m for m in map(self._read_meta, self._numeric_dirs()) if m is not None]

    def _meta(self, key: str) -> Snap:
        """The indexed snapshot ``key``; ``OSError(ENOENT)`` if none."""
        snap = self._snaps.get(key)
        if snap is None:
            raise snap_error(errno.ENOENT, key, f"no such snapshot: {key}")
        return snap

    def _committed(self, parent: str | None) -> Snap | None:
        if parent is None:
            return None
        snap = self._meta(parent)
        if snap.kind != SnapshotKind.COMMITTED:
            raise snap_error(errno.EINVAL, parent, f"parent snapshot {parent} is not committed")
        return snap

    def _chain(self, key: str | None) -> builtins.list[str]:
        """The ``fs`` dirs of ``key`` and its ancestors, top first."""
        dirs: builtins.list[str] = []
        while key is not None:
            snap = self._meta(key)
            dirs.append(self._snap_path(snap.n, "fs"))
            key = snap.parent
        return dirs

    def _check_free(self, key: str) -> None:
        """EEXIST unless ``key`` is unused (neither indexed nor being made). Under the lock."""
        if key in self._pending or key in self._snaps:
            raise snap_error(errno.EEXIST, key, f"snapshot {key} exists")

    def _check_unused(self, key: str) -> None:
        """EBUSY if snapshot ``key`` is mounted or has children (made or being made). Under the
        lock. Reads the mount table only when ``key`` has a mount record."""
        if any(r["key"] == key for r in self._records.values()):
            points = overlay.mount_points()
            if any(r["key"] == key and r["target"] in points for r in self._records.values()):
                raise snap_error(errno.EBUSY, key, f"snapshot {key} is mounted")
        if self._meta(key).children or key in self._pending.values():
            raise snap_error(errno.EBUSY, key, f"snapshot {key} has children")

    @contextlib.contextmanager
    def _reserve(self, key: str, parent: str | None) -> Iterator[tuple[str, Snap | None]]:
        """Claim ``key`` and a fresh numeric dir; yields ``(dir, parent)``."""
        with self._snap_lock:
            self._check_free(key)
            pmeta = self._committed(parent)
            self._pending[key] = parent
            n = self._next_n
            while True:
                try:
                    os.mkdir(self._snap_path(str(n)), 0o711)
                    break
                except FileExistsError:
                    n += 1
                except BaseException:
                    del self._pending[key]
                    raise
            self._next_n = n + 1
        try:
            yield self._snap_path(str(n)), pmeta
        finally:
            with self._snap_lock:
                del self._pending[key]

    def _commit_meta(self, d: str, key: str, kind: SnapshotKind, parent: str | None, size: int,
                     implicit: builtins.list[str] | None = None, sync: bool = True) -> None:
        """Write ``d``'s meta.json (the commit point), then index it under ``key``."""
        meta: dict[str, Any] = {"key": key, "kind": str(kind), "parent": parent, "size": size}
        if implicit:
            meta["implicit"] = implicit
        write_json_atomic(os.path.join(d, "meta.json"), meta, sync)
        with self._snap_lock:
            self._snaps[key] = Snap(key, os.path.basename(d), kind, parent, size, implicit or None)
            if parent is not None:
                self._snaps[parent].children += 1

    def _forget(self, key: str) -> None:
        """Take ``key`` out of the index (its meta.json is gone or renamed). Under the lock."""
        snap = self._snaps.pop(key)
        parent = self._snaps.get(snap.parent) if snap.parent is not None else None
        if parent is not None:
            parent.children -= 1

    def _discard(self, d: str, points: dict[str, str] | None = None) -> None:
        lower = os.path.join(d, "lower")
        if os.path.lexists(lower) and lower in (points if points is not None else overlay.mount_points()):
            overlay.unmount_quietly(lower)
        try:
            pfd = os.open(os.path.dirname(d), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:  # fd-based and iterative: never follows a symlink out, any depth
            rmtree_at(pfd, os.path.basename(d), ignore_errors=True)
        finally:
            os.close(pfd)

    # ---- mount records ----------------------------------------------------------------------
    def _record_path(self, target: str) -> str:
        return os.path.join(self._mounts_dir, hashlib.sha256(target.encode()).hexdigest()[:24] + ".json")

    def _mount_records(self) -> builtins.list[dict[str, Any]]:
        """The mount records on disk now (start-up and leak checks; the rest use ``_records``)."""
        out = []
        for name in os.listdir(self._mounts_dir):
            if name.endswith(".json"):
                with contextlib.suppress(FileNotFoundError, ValueError), \
                        open(os.path.join(self._mounts_dir, name), encoding="utf-8") as fh:
                    out.append(json.load(fh))
        return out

    def _record(self, target: str) -> dict[str, Any] | None:
        return self._records.get(target)

    def _add_record(self, rec: dict[str, Any]) -> None:
        # not fsync'd: a mount does not outlive the boot its record would survive
        write_json_atomic(self._record_path(rec["target"]), rec, sync=False)
        self._records[rec["target"]] = rec

    def _drop_record(self, rec: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(rec["target"]))
        self._records.pop(rec["target"], None)
        if rec.get("created"):
            with contextlib.suppress(OSError):
                os.rmdir(rec["target"])

    @staticmethod
    def _norm_target(target: str) -> str:
        return os.path.realpath(target)
