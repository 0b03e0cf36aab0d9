"""The Snapshots role on Linux: unpacked layers in directories, overlayfs to stack them.

The on-disk layout, its in-memory index and the mount records are in
``backends.linux.snapshots_state`` (the base class); this module is the role's operations.

Blocking work (unpacking, diff, du of an active snapshot, rmtree, a syncing umount) runs in a
worker thread. Small work that waits on no disk sync (``prepare``, ``remove``, ``mount``, a
volatile ``unmount``: a few mkdirs, small writes, renames, mount(2)) runs on the event loop when
no worker holds the lock (:meth:`LinuxSnapshots._quick`): with the index it touches no other
snapshot's files, so its cost no longer grows with the store.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import stat
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from backends.linux import layers, libc, overlay
from backends.linux.diff import write_diff
from backends.linux.layer_root import BUFSIZE
from backends.linux.snapshots_state import Snap, SnapshotState
from backends.linux.snapshots_state import snap_error as _err
from engine.kernel import LayerLimits, SnapshotInfo, SnapshotKind

T = TypeVar("T")


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


class LinuxSnapshots(SnapshotState):
    """Snapshots mixin of ``LinuxKernel`` (the contract is ``engine.kernel.Snapshots``)."""

    def _info(self, snap: Snap) -> SnapshotInfo:
        size = layers.du(self._snap_path(snap.n, "fs")) if snap.kind == SnapshotKind.ACTIVE else snap.size
        return SnapshotInfo(key=snap.key, kind=snap.kind, parent=snap.parent, size=size)

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
                implicit, size = layers.extract(os.path.join(d, "fs"), tar, limits, lower.fd)
                lower.close()
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
            snap = self._meta(staged)
            if snap.kind != SnapshotKind.COMMITTED or snap.parent is not None:
                raise _err(errno.EINVAL, staged, f"snapshot {staged} is not a parentless layer")
            self._check_free(key)
            pmeta = self._committed(parent)
            self._check_unused(staged)
            d = self._snap_path(snap.n)
            implicit = snap.implicit or []
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
            self._commit_meta(d, key, SnapshotKind.COMMITTED, parent, snap.size)
            self._forget(staged)  # the same dir, now under ``key``
        return SnapshotInfo(key, SnapshotKind.COMMITTED, parent, snap.size)

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
        # three mkdirs and an unsynced small write; the checks are index look-ups
        await self._quick(self._prepare, key, parent)

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
            snap = self._meta(key)
            target = self._norm_target(target)
            if target in overlay.mount_points():
                raise _err(errno.EBUSY, target, f"{target} is already a mount point")
            created = False
            if not os.path.isdir(target):
                os.makedirs(target, 0o755)
                created = True
            try:
                if snap.kind == SnapshotKind.ACTIVE:
                    lowers = self._chain(snap.parent) or [self._empty_dir]
                    work = self._snap_path(snap.n, "work")
                    overlay.clear_volatile(work)  # an earlier volatile mount's marker
                    overlay.mount_overlay(target, lowers, self._snap_path(snap.n, "fs"), work,
                                          readonly=readonly, volatile=volatile and not readonly)
                else:  # committed: always read-only; a lone lower gets the empty dir as a second
                    lowers = self._chain(key)
                    if len(lowers) == 1:
                        lowers.append(self._empty_dir)
                    overlay.mount_overlay(target, lowers, readonly=True)
                try:
                    self._add_record({"target": target, "key": key, "created": created,
                                      "volatile": volatile and not readonly})
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
        snap = self._meta(key)
        if snap.kind != SnapshotKind.ACTIVE:
            raise _err(errno.EINVAL, key, f"snapshot {key} is not active")
        return write_diff(self._snap_path(snap.n, "fs"), out)

    async def remove(self, key: str) -> None:
        d = await self._quick(self._unlink, key)  # index look-ups, an unlink and a rename
        if d is not None:
            await asyncio.to_thread(self._discard, d)

    def _unlink(self, key: str) -> str | None:
        """Take snapshot ``key`` out of sight (its meta.json gone, its directory in the trash);
        the directory still to be deleted now if it could not go to the trash, else None.
        Raises ENOENT (no such snapshot), EBUSY (mounted, or has children)."""
        with self._snap_lock:
            snap = self._meta(key)
            self._check_unused(key)
            d = self._snap_path(snap.n)
            os.unlink(os.path.join(d, "meta.json"))  # gone from here on; rmtree may take time
            self._forget(key)
            # a ``lower`` dir exists only while a parent chain is mounted there (a crash in
            # bind_layer): such a dir is unmounted and deleted now, by _discard
            if not os.path.lexists(os.path.join(d, "lower")):
                try:  # out of sight now, deleted in the background (a crash: emptied at start)
                    self._snap_trash.put(d)
                    return None
                except OSError:
                    pass
        return d

    async def stat(self, key: str) -> SnapshotInfo:
        snap = self._meta(key)
        if snap.kind == SnapshotKind.COMMITTED:
            return self._info(snap)  # from the index: no worker thread
        return await asyncio.to_thread(self._info, snap)  # du of the upper dir

    async def list(self) -> builtins.list[SnapshotInfo]:
        snaps = builtins.list(self._snaps.values())
        if all(s.kind == SnapshotKind.COMMITTED for s in snaps):
            return [self._info(s) for s in snaps]
        return await asyncio.to_thread(lambda: [self._info(s) for s in snaps])

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
