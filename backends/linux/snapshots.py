"""The Snapshots role on Linux: unpacked layers in directories, overlayfs to stack them.

On disk (``<root>``, persistent across ``LinuxKernel`` instances: a restarted daemon sees the same
snapshots and can unmount what an earlier one mounted)::

    snapshots/<n>/meta.json   {"key", "kind", "parent", "size"}; written atomically, last
    snapshots/<n>/fs/         a committed layer's files, or an active snapshot's overlay upper
    snapshots/<n>/work/       overlay workdir (active only)
    snapshots/<n>/lower/      transient: the parent chain mounted read-only while a layer that
                              needs it (hardlink copy-up, implicit dir metadata) is unpacked
    snapshots/empty/          an empty dir: the bottom lower of an active snapshot without parent
                              and the second lower of a lone committed layer (older kernels need 2)
    mounts/<hash>.json        one per mount we made: {"target", "key", "created"}
    trash/                    removed snapshot dirs, deleted in the background (``trash.Trash``)

Keys (chain ids ``sha256:…``, container ids) map to short numeric dirs so overlay option strings
stay short (see ``backends.linux.overlay`` for what happens when a chain is still too long).
The disk is the source of truth: a numeric dir without ``meta.json`` is an unfinished apply or
remove and is deleted at start-up; the in-memory key → dir map is only a cache.

Blocking work (unpacking, du, diff, rmtree, mount) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from backends.linux import layers, libc, overlay
from backends.linux.layer_root import BUFSIZE, rmtree_at
from backends.linux.diff import write_diff
from backends.linux.trash import Trash
from engine.kernel import LayerLimits, SnapshotInfo, SnapshotKind

T = TypeVar("T")


def _err(code: int, what: str, message: str) -> OSError:
    return OSError(code, message, what)


def _write_json_atomic(path: str, obj: object, sync: bool = True) -> None:
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


class _LowerView:
    """The read-only union of a parent chain, mounted on first use while a layer is unpacked."""

    def __init__(self, lowers: builtins.list[str], where: str) -> None:
        self.lowers, self.where = lowers, where
        self._fd: int | None = None

    def fd(self) -> int | None:
        if not self.lowers:
            return None
        if self._fd is None:
            os.mkdir(self.where, 0o700)
            overlay.mount_overlay(self.where, self.lowers, readonly=True)
            self._fd = os.open(self.where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            overlay.unmount(self.where)
            os.rmdir(self.where)


class LinuxSnapshots:
    """Snapshots mixin of ``LinuxKernel`` (the contract is ``engine.kernel.Snapshots``)."""

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
        self._dirs: dict[str, str] = {}  # key → numeric dir name (a cache of meta.json files)
        self._snap_trash = Trash(os.path.join(self.root, "trash"))  # removed snapshots, deleted later
        self._snap_trash.empty()
        points = overlay.mount_points()
        for n in self._numeric_dirs():
            d = os.path.join(self._snapshots_dir, n)
            if not os.path.exists(os.path.join(d, "meta.json")):  # interrupted apply/remove
                self._discard(d, points)
        for rec in self._mount_records():
            if rec["target"] not in points:  # unmounted behind our back (or by a reboot)
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
        out = []
        for n in self._numeric_dirs():
            meta = self._read_meta(n)
            if meta is not None:
                out.append(meta)
                self._dirs[meta["key"]] = n
        return out

    def _meta(self, key: str) -> dict[str, Any]:
        """The meta of ``key`` (with its dir as ``"n"``); ``FileNotFoundError`` if none."""
        n = self._dirs.get(key)
        meta = self._read_meta(n) if n is not None else None
        if meta is None or meta["key"] != key:
            self._dirs.pop(key, None)
            meta = next((m for m in self._metas() if m["key"] == key), None)  # another instance's?
        if meta is None:
            raise _err(errno.ENOENT, key, f"no such snapshot: {key}")
        return meta

    def _committed(self, parent: str | None) -> dict[str, Any] | None:
        if parent is None:
            return None
        meta = self._meta(parent)
        if meta["kind"] != SnapshotKind.COMMITTED:
            raise _err(errno.EINVAL, parent, f"parent snapshot {parent} is not committed")
        return meta

    def _chain(self, key: str | None) -> builtins.list[str]:
        """The ``fs`` dirs of ``key`` and its ancestors, top first."""
        dirs: builtins.list[str] = []
        while key is not None:
            meta = self._meta(key)
            dirs.append(self._snap_path(meta["n"], "fs"))
            key = meta["parent"]
        return dirs

    @contextlib.contextmanager
    def _reserve(self, key: str, parent: str | None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Claim ``key`` and a fresh numeric dir; yields ``(dir, parent meta)``."""
        with self._snap_lock:
            if key in self._pending or any(m["key"] == key for m in self._metas()):
                raise _err(errno.EEXIST, key, f"snapshot {key} exists")
            pmeta = self._committed(parent)
            self._pending[key] = parent
            nums = [int(n) for n in self._numeric_dirs()]
            n = max(nums, default=0) + 1
            while True:
                try:
                    os.mkdir(self._snap_path(str(n)), 0o711)
                    break
                except FileExistsError:
                    n += 1
        try:
            yield self._snap_path(str(n)), pmeta
        finally:
            with self._snap_lock:
                del self._pending[key]

    def _commit_meta(self, d: str, key: str, kind: SnapshotKind, parent: str | None, size: int,
                     implicit: builtins.list[str] | None = None, sync: bool = True) -> None:
        meta: dict[str, Any] = {"key": key, "kind": str(kind), "parent": parent, "size": size}
        if implicit:
            meta["implicit"] = implicit  # for bind_layer (parentless layers only)
        _write_json_atomic(os.path.join(d, "meta.json"), meta, sync)
        self._dirs[key] = os.path.basename(d)

    def _discard(self, d: str, points: dict[str, str] | None = None) -> None:
        lower = os.path.join(d, "lower")
        if lower in (points if points is not None else overlay.mount_points()):
            overlay.unmount_quietly(lower)
        try:
            pfd = os.open(os.path.dirname(d), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:  # fd-based and iterative: never follows a symlink out, any depth
            rmtree_at(pfd, os.path.basename(d), ignore_errors=True)
        finally:
            os.close(pfd)

    def _info(self, meta: dict[str, Any]) -> SnapshotInfo:
        kind = SnapshotKind(meta["kind"])
        size = layers.du(self._snap_path(meta["n"], "fs")) if kind == SnapshotKind.ACTIVE else meta["size"]
        return SnapshotInfo(key=meta["key"], kind=kind, parent=meta["parent"], size=size)

    # ---- mount records ----------------------------------------------------------------------
    def _record_path(self, target: str) -> str:
        return os.path.join(self._mounts_dir, hashlib.sha256(target.encode()).hexdigest()[:24] + ".json")

    def _mount_records(self) -> builtins.list[dict[str, Any]]:
        out = []
        for name in os.listdir(self._mounts_dir):
            if name.endswith(".json"):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    with open(os.path.join(self._mounts_dir, name), encoding="utf-8") as fh:
                        out.append(json.load(fh))
        return out

    def _record(self, target: str) -> dict[str, Any] | None:
        try:
            with open(self._record_path(target), encoding="utf-8") as fh:
                rec: dict[str, Any] = json.load(fh)
        except FileNotFoundError:
            return None
        return rec if rec.get("target") == target else None

    def _drop_record(self, rec: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(rec["target"]))
        if rec.get("created"):
            with contextlib.suppress(OSError):
                os.rmdir(rec["target"])

    @staticmethod
    def _norm_target(target: str) -> str:
        return os.path.realpath(target)

    # ---- the role ---------------------------------------------------------------------------
    async def apply_layer(self, key: str, parent: str | None, tar: BinaryIO,
                          limits: LayerLimits | None = None) -> SnapshotInfo:
        return await asyncio.to_thread(self._apply_layer, key, parent, tar, limits or LayerLimits())

    def _apply_layer(self, key: str, parent: str | None, tar: BinaryIO, limits: LayerLimits) -> SnapshotInfo:
        with self._reserve(key, parent) as (d, pmeta):
            lowers = self._chain(parent) if pmeta is not None else []
            if len(lowers) == 1:
                lowers.append(self._empty_dir)
            lower = _LowerView(lowers, os.path.join(d, "lower"))
            try:
                os.mkdir(os.path.join(d, "fs"), 0o755)
                implicit = layers.extract(os.path.join(d, "fs"), tar, limits, lower.fd)
                lower.close()
                size = layers.du(os.path.join(d, "fs"))
                self._commit_meta(d, key, SnapshotKind.COMMITTED, parent, size,
                                  implicit if parent is None else None)
            except BaseException:
                with contextlib.suppress(OSError):
                    lower.close()
                self._discard(d)
                raise
        return SnapshotInfo(key, SnapshotKind.COMMITTED, parent, size)

    async def bind_layer(self, staged: str, key: str, parent: str | None) -> SnapshotInfo:
        return await asyncio.to_thread(self._bind_layer, staged, key, parent)

    def _bind_layer(self, staged: str, key: str, parent: str | None) -> SnapshotInfo:
        with self._snap_lock:
            meta = self._meta(staged)
            if meta["kind"] != SnapshotKind.COMMITTED or meta["parent"] is not None:
                raise _err(errno.EINVAL, staged, f"snapshot {staged} is not a parentless layer")
            if key in self._pending or any(m["key"] == key for m in self._metas()):
                raise _err(errno.EEXIST, key, f"snapshot {key} exists")
            pmeta = self._committed(parent)
            points = overlay.mount_points()
            if any(r["key"] == staged and r["target"] in points for r in self._mount_records()):
                raise _err(errno.EBUSY, staged, f"snapshot {staged} is mounted")
            if staged in self._pending.values() or any(m["parent"] == staged for m in self._metas()):
                raise _err(errno.EBUSY, staged, f"snapshot {staged} has children")
            d = self._snap_path(meta["n"])
            implicit = meta.get("implicit") or []
            if pmeta is not None and implicit:
                lowers = self._chain(parent)
                if len(lowers) == 1:
                    lowers.append(self._empty_dir)
                lower = _LowerView(lowers, os.path.join(d, "lower"))
                try:
                    fd = lower.fd()
                    assert fd is not None
                    layers.adopt_parent_dirs(os.path.join(d, "fs"), implicit, fd)
                finally:
                    lower.close()
            self._commit_meta(d, key, SnapshotKind.COMMITTED, parent, meta["size"])
            self._dirs.pop(staged, None)
        return SnapshotInfo(key, SnapshotKind.COMMITTED, parent, meta["size"])

    async def _quick(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` for small work that waits on no disk sync (a few small reads and writes,
        mkdir, rename, mount(2) or a volatile overlay's umount(2)): on the loop when no worker
        holds the lock, else in a worker. Two thread hand-offs fewer, and under the GIL a
        worker would hold the loop up about as long anyway."""
        if self._snap_lock.acquire(blocking=False):
            try:
                return fn(*args)
            finally:
                self._snap_lock.release()
        return await asyncio.to_thread(fn, *args)

    async def prepare(self, key: str, parent: str | None) -> None:
        # in a worker: the EEXIST check reads every snapshot's meta.json (O(store), not for the loop)
        await asyncio.to_thread(self._prepare, key, parent)

    def _prepare(self, key: str, parent: str | None) -> None:
        with self._reserve(key, parent) as (d, _):
            try:
                os.mkdir(os.path.join(d, "fs"), 0o755)
                os.mkdir(os.path.join(d, "work"), 0o700)
                # not fsync'd: an empty write layer lost to a power cut is re-made by restore,
                # and one that held data was written back long since (its data is not synced either)
                self._commit_meta(d, key, SnapshotKind.ACTIVE, parent, 0, sync=False)
            except BaseException:
                self._discard(d)
                raise

    async def mount(self, key: str, target: str, readonly: bool = False, volatile: bool = False) -> None:
        await self._quick(self._mount, key, target, readonly, volatile)  # mount(2) syncs nothing

    def _mount(self, key: str, target: str, readonly: bool, volatile: bool = False) -> None:
        with self._snap_lock:
            meta = self._meta(key)
            target = self._norm_target(target)
            if target in overlay.mount_points():
                raise _err(errno.EBUSY, target, f"{target} is already a mount point")
            created = False
            if not os.path.isdir(target):
                os.makedirs(target, 0o755)
                created = True
            try:
                if meta["kind"] == SnapshotKind.ACTIVE:
                    lowers = self._chain(meta["parent"]) or [self._empty_dir]
                    work = self._snap_path(meta["n"], "work")
                    overlay.clear_volatile(work)  # an earlier volatile mount's marker
                    overlay.mount_overlay(target, lowers, self._snap_path(meta["n"], "fs"), work,
                                          readonly=readonly, volatile=volatile and not readonly)
                else:  # committed: always read-only; a lone lower gets the empty dir as a second
                    lowers = self._chain(key)
                    if len(lowers) == 1:
                        lowers.append(self._empty_dir)
                    overlay.mount_overlay(target, lowers, readonly=True)
                try:
                    # not fsync'd: a mount does not outlive the boot its record would survive
                    _write_json_atomic(self._record_path(target),
                                       {"target": target, "key": key, "created": created,
                                        "volatile": volatile and not readonly}, sync=False)
                except BaseException:
                    overlay.unmount_quietly(target)
                    raise
            except BaseException:
                if created:
                    with contextlib.suppress(OSError):
                        os.rmdir(target)
                raise

    async def unmount(self, target: str) -> None:
        # a volatile overlay's umount(2) skips the syncfs: quick; any other's flushes the upper
        # filesystem (other tenants' dirty data too), in a worker
        rec = self._record(self._norm_target(target))
        if rec is not None and rec.get("volatile"):
            await self._quick(self._unmount, target)
        else:
            await asyncio.to_thread(self._unmount, target)

    def _unmount(self, target: str) -> None:
        with self._snap_lock:
            target = self._norm_target(target)
            rec = self._record(target)
            if rec is None or target not in overlay.mount_points():
                if rec is not None:
                    self._drop_record(rec)
                raise _err(errno.EINVAL, target, f"nothing of ours is mounted at {target}")
            live = getattr(self, "_live_rootfs", None)
            if live is not None and target in {self._norm_target(p) for p in live()}:
                raise _err(errno.EBUSY, target, f"{target} is the root of a live sandbox")
            overlay.unmount(target)
            self._drop_record(rec)

    async def diff(self, key: str, out: BinaryIO) -> int:
        return await asyncio.to_thread(self._diff, key, out)

    def _diff(self, key: str, out: BinaryIO) -> int:
        meta = self._meta(key)
        if meta["kind"] != SnapshotKind.ACTIVE:
            raise _err(errno.EINVAL, key, f"snapshot {key} is not active")
        return write_diff(self._snap_path(meta["n"], "fs"), out)

    async def remove(self, key: str) -> None:
        d = await asyncio.to_thread(self._unlink, key)  # reads every meta.json (children): a worker
        if d is not None:
            await asyncio.to_thread(self._discard, d)

    def _unlink(self, key: str) -> str | None:
        """Take snapshot ``key`` out of sight (its meta.json gone, its directory in the trash);
        the directory still to be deleted now if it could not go to the trash, else None.
        Raises ENOENT (no such snapshot), EBUSY (mounted, or has children)."""
        with self._snap_lock:
            meta = self._meta(key)
            points = overlay.mount_points()
            if any(r["key"] == key and r["target"] in points for r in self._mount_records()):
                raise _err(errno.EBUSY, key, f"snapshot {key} is mounted")
            if key in self._pending.values() or any(m["parent"] == key for m in self._metas()):
                raise _err(errno.EBUSY, key, f"snapshot {key} has children")
            d = self._snap_path(meta["n"])
            os.unlink(os.path.join(d, "meta.json"))  # gone from here on; rmtree may take time
            self._dirs.pop(key, None)
            if os.path.join(d, "lower") not in points:
                try:  # out of sight now, deleted in the background (a crash: emptied at start)
                    self._snap_trash.put(d)
                    return None
                except OSError:
                    pass
        return d

    async def stat(self, key: str) -> SnapshotInfo:
        n = self._dirs.get(key)
        meta = self._read_meta(n) if n is not None else None
        if meta is not None and meta["key"] == key and meta["kind"] == SnapshotKind.COMMITTED:
            return self._info(meta)  # a known committed layer: one small read, no worker thread
        return await asyncio.to_thread(lambda: self._info(self._meta(key)))

    async def list(self) -> builtins.list[SnapshotInfo]:
        return await asyncio.to_thread(lambda: [self._info(m) for m in self._metas()])

    async def read_file(self, target: str, path: str, limit: int = 1 << 20) -> bytes:
        return await asyncio.to_thread(self._read_file, target, path, limit)

    def _read_file(self, target: str, path: str, limit: int) -> bytes:
        target = self._norm_target(target)
        if self._record(target) is None or target not in overlay.mount_points():
            raise _err(errno.ENOENT, target, f"nothing mounted at {target}")
        rootfd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = libc.openat2(rootfd, path.lstrip("/") or ".", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY,
                              resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(rootfd)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise _err(errno.EISDIR, path, f"{path} is a directory")
            if not stat.S_ISREG(st.st_mode):
                return b""  # a fifo or device: nothing to read without blocking (as the sim)
            if st.st_size > limit:
                raise _err(errno.EFBIG, path, f"{path} is larger than {limit} bytes")
            chunks, left = [], limit + 1
            while left > 0:
                chunk = os.read(fd, min(left, BUFSIZE))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if len(data) > limit:  # grew since fstat
                raise _err(errno.EFBIG, path, f"{path} is larger than {limit} bytes")
            return data
        finally:
            os.close(fd)
