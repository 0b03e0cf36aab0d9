"""The sim's Snapshots role: layer trees, writable uppers, and a host mount table.

State lives in the world: ``world.snapshots`` (key → :class:`Snapshot`) and ``world.mounts``
(host target → :class:`MountRec`). A mount's view is live: writes through it land in the active
snapshot's tree. ``SimSnapshots._view_at(target)`` gives the process role the view a sandbox
uses as its root.
"""

from __future__ import annotations

import asyncio
import errno
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from engine.kernel import LayerLimits, SnapshotInfo, SnapshotKind
from engine.kernel_fs import PathStat
from sim import tarcopy
from sim.fs import FsView
from sim.fsnodes import Dir, Tree, oserror
from sim.tario import adopt_parent_dirs, apply_tar, diff_tar

if TYPE_CHECKING:
    from sim.world import World


@dataclass
class Snapshot:
    key: str
    kind: SnapshotKind
    parent: str | None
    tree: Tree
    size: int = 0  # fixed for committed snapshots; active ones report their tree's du()
    implicit: dict[str, Dir] | None = None  # parentless layers: dirs for bind_layer to adopt


@dataclass
class MountRec:
    key: str
    view: FsView
    readonly: bool


class SimSnapshots:
    """Snapshots mixin of ``SimKernel`` (see ``engine.kernel.Snapshots`` for the contract)."""

    world: World
    wall_time: Callable[[], float]  # provided by SimKernel

    def _init_snapshots(self) -> None:
        self.world.snapshots.clear()
        self.world.mounts.clear()

    def _leaks_snapshots(self) -> list[str]:
        return sorted(self.world.snapshots)

    def _leaks_snapshots_mounts(self) -> list[str]:
        return sorted(self.world.mounts)

    # ---- helpers --------------------------------------------------------------------------
    def _snap(self, key: str) -> Snapshot:
        snap: Snapshot | None = self.world.snapshots.get(key)
        if snap is None:
            raise oserror(errno.ENOENT, key, f"no such snapshot: {key}")
        return snap

    def _chain(self, key: str | None) -> list[Tree]:
        """Trees of ``key`` and its ancestors, top first."""
        trees: list[Tree] = []
        while key is not None:
            snap = self._snap(key)
            trees.append(snap.tree)
            key = snap.parent
        return trees

    def _committed_parent(self, parent: str | None) -> None:
        if parent is not None and self._snap(parent).kind != SnapshotKind.COMMITTED:
            raise oserror(errno.EINVAL, parent, f"parent snapshot {parent} is not committed")

    def _info(self, snap: Snapshot) -> SnapshotInfo:
        size = snap.tree.du() if snap.kind == SnapshotKind.ACTIVE else snap.size
        return SnapshotInfo(key=snap.key, kind=snap.kind, parent=snap.parent, size=size)

    @staticmethod
    def _norm_target(target: str) -> str:
        return posixpath.normpath(target) if target else target

    def _view_at(self, target: str) -> FsView:
        """The union view mounted at host path ``target``; ``FileNotFoundError`` if none."""
        rec: MountRec | None = self.world.mounts.get(self._norm_target(target))
        if rec is None:
            raise oserror(errno.ENOENT, target, f"nothing mounted at {target}")
        return rec.view

    # ---- the role -------------------------------------------------------------------------
    async def apply_layer(self, key: str, parent: str | None, tar: BinaryIO,
                          limits: LayerLimits | None = None) -> SnapshotInfo:
        self.world.faults.check("apply_layer")
        if key in self.world.snapshots:
            raise oserror(errno.EEXIST, key, f"snapshot {key} exists")
        self._committed_parent(parent)
        lower = FsView(self._chain(parent), None, readonly=True)
        tree = Tree()
        implicit: dict[str, Dir] = {}
        # On failure the half-built tree is simply dropped: nothing of ``key`` remains. On a
        # worker thread, as Linux: ``tar`` may be a pipe filled by a thread that waits on this
        # loop (the API feeds a load's body from the loop); the tree is private until attached
        # and the parent chain is committed, i.e. read-only.
        size = await asyncio.to_thread(apply_tar, tree, lower, tar, limits or LayerLimits(),
                                       self.world.faults, implicit)
        if key in self.world.snapshots:  # made meanwhile (the tar may be a slow pipe)
            raise oserror(errno.EEXIST, key, f"snapshot {key} exists")
        snap = Snapshot(key, SnapshotKind.COMMITTED, parent, tree, size,
                        implicit if parent is None else None)
        self.world.snapshots[key] = snap
        return self._info(snap)

    async def bind_layer(self, staged: str, key: str, parent: str | None) -> SnapshotInfo:
        self.world.faults.check("bind_layer")
        snap = self._snap(staged)
        if snap.kind != SnapshotKind.COMMITTED or snap.parent is not None:
            raise oserror(errno.EINVAL, staged, f"snapshot {staged} is not a parentless layer")
        if key in self.world.snapshots:
            raise oserror(errno.EEXIST, key, f"snapshot {key} exists")
        self._committed_parent(parent)
        if any(rec.key == staged for rec in self.world.mounts.values()):
            raise oserror(errno.EBUSY, staged, f"snapshot {staged} is mounted")
        if any(s.parent == staged for s in self.world.snapshots.values()):
            raise oserror(errno.EBUSY, staged, f"snapshot {staged} has children")
        if parent is not None and snap.implicit:
            adopt_parent_dirs(snap.tree, snap.implicit,
                              FsView(self._chain(parent), None, readonly=True))
        del self.world.snapshots[staged]
        bound = Snapshot(key, SnapshotKind.COMMITTED, parent, snap.tree, snap.size)
        self.world.snapshots[key] = bound
        return self._info(bound)

    async def prepare(self, key: str, parent: str | None) -> None:
        self.world.faults.check("prepare")
        if key in self.world.snapshots:
            raise oserror(errno.EEXIST, key, f"snapshot {key} exists")
        self._committed_parent(parent)
        self.world.snapshots[key] = Snapshot(key, SnapshotKind.ACTIVE, parent, Tree())

    async def mount(self, key: str, target: str, readonly: bool = False, volatile: bool = False) -> None:
        self.world.faults.check("mount")  # (volatile: the sim has no disk to skip syncing)
        snap = self._snap(key)
        target = self._norm_target(target)
        if target in self.world.mounts:
            raise oserror(errno.EBUSY, target, f"{target} is already a mount point")
        if snap.kind == SnapshotKind.ACTIVE:
            view = FsView(self._chain(snap.parent), snap.tree, readonly=readonly,
                          world_faults=self.world.faults, clock=self.wall_time)
        else:  # a committed snapshot is read-only whatever is asked (overlay with lowers only)
            view = FsView(self._chain(key), None, readonly=True, world_faults=self.world.faults,
                          clock=self.wall_time)
            readonly = True
        self.world.mounts[target] = MountRec(key, view, readonly)

    async def unmount(self, target: str) -> None:
        self.world.faults.check("unmount")
        target = self._norm_target(target)
        if target not in self.world.mounts:
            raise oserror(errno.EINVAL, target, f"nothing mounted at {target}")
        for sb in self.world.sandboxes.values():
            if getattr(sb, "rootfs", None) == target and getattr(sb, "alive", False):
                raise oserror(errno.EBUSY, target, f"{target} is the root of a live sandbox")
        del self.world.mounts[target]

    async def diff(self, key: str, out: BinaryIO) -> int:
        self.world.faults.check("diff")
        snap = self._snap(key)
        if snap.kind != SnapshotKind.ACTIVE:
            raise oserror(errno.EINVAL, key, f"snapshot {key} is not active")
        return diff_tar(snap.tree, FsView(self._chain(snap.parent), None, readonly=True), out)

    async def remove(self, key: str) -> None:
        self.world.faults.check("remove")
        self._snap(key)
        if any(rec.key == key for rec in self.world.mounts.values()):
            raise oserror(errno.EBUSY, key, f"snapshot {key} is mounted")
        if any(s.parent == key for s in self.world.snapshots.values()):
            raise oserror(errno.EBUSY, key, f"snapshot {key} has children")
        del self.world.snapshots[key]

    async def stat(self, key: str) -> SnapshotInfo:
        self.world.faults.check("stat")
        return self._info(self._snap(key))

    async def list(self) -> list[SnapshotInfo]:
        self.world.faults.check("list")
        return [self._info(s) for s in self.world.snapshots.values()]

    async def read_file(self, target: str, path: str, limit: int = 1 << 20) -> bytes:
        self.world.faults.check("read_file")
        view = self._view_at(target)
        data = view.read(path)
        if len(data) > limit:
            raise oserror(errno.EFBIG, path, f"{path} is larger than {limit} bytes")
        return data

    # ---- file access inside a view (proposed ``PathOps`` role, engine/kernel_fs.py) --------
    async def path_stat(self, target: str, path: str) -> PathStat:
        self.world.faults.check("path_stat")
        return tarcopy.path_stat(self._mounted(target), path)

    async def archive(self, target: str, path: str, out: BinaryIO) -> PathStat:
        self.world.faults.check("archive")
        return tarcopy.archive(self._mounted(target), path, out)

    async def extract(self, target: str, path: str, tar: BinaryIO,
                      no_overwrite_dir_non_dir: bool = False,
                      limits: LayerLimits | None = None) -> None:
        self.world.faults.check("extract")
        tarcopy.extract(self._mounted(target), path, tar, no_overwrite_dir_non_dir,
                        limits or LayerLimits())

    def _mounted(self, target: str) -> FsView:
        rec: MountRec | None = self.world.mounts.get(self._norm_target(target))
        if rec is None:
            raise oserror(errno.EINVAL, target, f"nothing mounted at {target}")
        return rec.view
