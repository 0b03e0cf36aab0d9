"""The sim's union filesystem view: overlay semantics over in-memory layer trees.

``FsView(layers, upper)`` merges ``upper`` (writable, may be None) over ``layers`` (top first),
like overlayfs:

* a name in a higher tree shadows the same name below; a dir merges with dirs below it unless it
  is *opaque*; a whiteout hides the name below;
* writing to (or chmod/chown of) a lower path *copies it up* into ``upper`` first (file content is
  shared, not copied: bytes are immutable); copy-up breaks lower hardlinks, as overlayfs does;
* deleting a path that exists below leaves a whiteout in ``upper``; re-creating a dir over a
  whiteout makes it opaque; renaming a dir that has lower content copies it up whole (opaque).

Paths are absolute inside the view. Symlinks resolve *inside* the root (``..`` stops at ``/``;
absolute targets start at the view's root), at most 40 per lookup (``ELOOP``). Other views can be
mounted at directories (``mount_at``): a sandbox's tmpfs is ``FsView([], Tree())``.

Errors are ``OSError`` subclasses with errno and ``filename`` (the path asked for):
``FileNotFoundError``, ``FileExistsError``, ``NotADirectoryError``, ``IsADirectoryError``,
``OSError(ENOTEMPTY | EROFS | ELOOP | EBUSY | EXDEV | EINVAL)``, ``PermissionError`` (EPERM).
Permissions are *not* checked (everything runs as root); the process layer decides that.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from sim.fsnodes import (
    Dir,
    File,
    FileStat,
    Node,
    Special,
    Symlink,
    Tree,
    Whiteout,
    attach,
    check_name,
    oserror,
    release,
    split_path,
    stat_of,
)
from sim.fsunion import MAX_SYMLINKS, Parts, UnionLookup

__all__ = ["MAX_SYMLINKS", "FileStat", "FsView", "Tree"]


class FsView(UnionLookup):
    """A union view (see the module docstring).

    ``FsView(layers, upper, readonly=False, world_faults=None, clock=None)``: ``layers`` are
    read-only trees (top first), ``upper`` the writable tree or None; ``readonly`` refuses every
    change with EROFS; ``world_faults.check("write", path)`` runs before each file write;
    ``clock()`` gives the mtime of new or changed nodes (default 0.0).
    """

    # ---- queries ------------------------------------------------------------------------
    def exists(self, path: str, follow: bool = True) -> bool:
        try:
            return self._resolve(path, follow)[1] is not None
        except OSError:
            return False

    def stat(self, path: str, follow: bool = True) -> FileStat:
        return stat_of(self._existing(path, follow)[1].node)

    def read(self, path: str) -> bytes:
        node = self._existing(path)[1].node
        if isinstance(node, Dir):
            raise oserror(errno.EISDIR, path)
        return node.data if isinstance(node, File) else b""

    def listdir(self, path: str) -> list[str]:
        hit = self._existing(path)[1]
        if not isinstance(hit.node, Dir):
            raise oserror(errno.ENOTDIR, path)
        return sorted(self._names(hit))

    def readlink(self, path: str) -> str:
        node = self._existing(path, follow=False)[1].node
        if not isinstance(node, Symlink):
            raise oserror(errno.EINVAL, path)
        return node.target

    def resolve(self, path: str) -> str:
        """The canonical absolute path of an existing ``path`` (symlinks followed)."""
        parts, _ = self._existing(path)
        return "/" + "/".join(parts)

    def walk(self, path: str = "/") -> Iterator[tuple[str, FileStat]]:
        """``(path, lstat)`` of everything below ``path``: sorted, parents first, not following
        symlinks, descending into mounts."""
        parts, hit = self._existing(path)
        if not isinstance(hit.node, Dir):
            raise oserror(errno.ENOTDIR, path)
        base = "/" + "/".join(parts) if parts else ""
        for name in sorted(self._names(hit)):
            child = self._get((*parts, name))
            if child is None:
                continue
            yield f"{base}/{name}", stat_of(child.node)
            if isinstance(child.node, Dir):
                yield from self.walk(f"{base}/{name}")

    def du(self) -> int:
        """Bytes of file content in ``upper`` (0 for a read-only view)."""
        return self.upper.du() if self.upper is not None else 0

    # ---- mounts -------------------------------------------------------------------------
    def mount_at(self, path: str, other: FsView) -> None:
        """Mount ``other`` at the existing directory ``path``. ``OSError(EBUSY)`` if something is
        already mounted exactly there; ``FileNotFoundError``, ``NotADirectoryError``."""
        parts, hit = self._existing(path)
        if not isinstance(hit.node, Dir):
            raise oserror(errno.ENOTDIR, path)
        if parts in self._mounts:
            raise oserror(errno.EBUSY, path)
        self._mounts[parts] = other

    def unmount_at(self, path: str) -> FsView:
        """Undo :meth:`mount_at`; returns the unmounted view. ``OSError(EINVAL)`` if nothing is
        mounted there, ``OSError(EBUSY)`` if other mounts sit below it."""
        try:
            parts = self._resolve(path, True)[0]
        except OSError:
            parts = tuple(split_path(path))
        if parts not in self._mounts:
            raise oserror(errno.EINVAL, path)
        if any(len(mp) > len(parts) and mp[:len(parts)] == parts for mp in self._mounts):
            raise oserror(errno.EBUSY, path)
        return self._mounts.pop(parts)

    def mounts(self) -> dict[str, FsView]:
        return {"/" + "/".join(p): v for p, v in self._mounts.items()}

    def _in_view(self, parts: Parts, path: str) -> tuple[FsView, Parts]:
        view, rest = self._owner(parts)
        view._writable(path)
        return view, rest

    def _new_path(self, path: str) -> tuple[FsView, Parts]:
        """For creating ``path``: its owner view and parts; EEXIST if it exists (even as a
        dangling symlink), ENOENT/ENOTDIR for a bad parent."""
        parts, hit = self._resolve(path, follow=False)
        if hit is not None or not parts:
            raise oserror(errno.EEXIST, path)
        check_name(parts[-1], path)
        return self._in_view(parts, path)

    # ---- changes --------------------------------------------------------------------------
    def write(self, path: str, data: bytes, append: bool = False, mode: int = 0o644) -> None:
        """Create or replace (or append to) a regular file; ``mode`` applies when creating."""
        parts, hit = self._resolve(path, follow=True)
        if hit is not None and isinstance(hit.node, Dir):
            raise oserror(errno.EISDIR, path)
        if not parts:
            raise oserror(errno.EISDIR, path)
        view, rest = self._in_view(parts, path)
        if view.faults is not None:
            view.faults.check("write", path)
        if hit is None:
            check_name(rest[-1], path)
            view._place(rest, File(mode=mode, data=bytes(data), mtime=self.clock()), path)
            return
        if isinstance(hit.node, Special):
            return  # a device or fifo swallows what is written
        node = view._copy_up(rest, path)
        assert isinstance(node, File)
        node.data = node.data + bytes(data) if append else bytes(data)
        node.mtime = self.clock()

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        if parents:
            parts = split_path(path)
            for n in range(1, len(parts) + 1):
                sub = "/" + "/".join(parts[:n])
                if not self.exists(sub):
                    self.mkdir(sub, mode)
                elif self.stat(sub).kind != "dir":
                    raise oserror(errno.ENOTDIR, path)
            return
        view, rest = self._new_path(path)
        view._place(rest, Dir(mode=mode, mtime=self.clock()), path)

    def symlink(self, target: str, path: str) -> None:
        view, rest = self._new_path(path)
        view._place(rest, Symlink(target=target, mtime=self.clock()), path)

    def link(self, src: str, dst: str) -> None:
        """Hardlink ``dst`` to the existing non-directory ``src`` (a symlink is not followed)."""
        sparts, hit = self._existing(src, follow=False)
        if isinstance(hit.node, Dir):
            raise oserror(errno.EPERM, src)
        view, rest = self._new_path(dst)
        sview, srest = self._in_view(sparts, src)
        if sview is not view:
            raise oserror(errno.EXDEV, dst)
        node = view._copy_up(srest, src)
        view._place(rest, node, dst)

    def unlink(self, path: str) -> None:
        parts, hit = self._existing(path, follow=False)
        if isinstance(hit.node, Dir):
            raise oserror(errno.EISDIR, path)
        view, rest = self._in_view(parts, path)
        view._remove(rest, path)

    def rmdir(self, path: str) -> None:
        parts, hit = self._existing(path, follow=False)
        if not isinstance(hit.node, Dir):
            raise oserror(errno.ENOTDIR, path)
        if not parts or self._owner(parts)[1] == ():
            raise oserror(errno.EBUSY, path)
        if self._names(hit):
            raise oserror(errno.ENOTEMPTY, path)
        view, rest = self._in_view(parts, path)
        view._remove(rest, path)

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, replacing a non-dir or an empty dir there, like rename(2)."""
        sparts, shit = self._existing(src, follow=False)
        dparts, dhit = self._resolve(dst, follow=False)
        for parts, path in ((sparts, src), (dparts, dst)):
            if not parts or self._owner(parts)[1] == ():
                raise oserror(errno.EBUSY, path)
        sview, srest = self._in_view(sparts, src)
        dview, drest = self._in_view(dparts, dst)
        if sview is not dview:
            raise oserror(errno.EXDEV, dst)
        if sparts == dparts:
            return
        is_dir = isinstance(shit.node, Dir)
        if dparts[:len(sparts)] == sparts:
            raise oserror(errno.EINVAL, dst)
        if dhit is not None:
            if isinstance(dhit.node, Dir) and not is_dir:
                raise oserror(errno.EISDIR, dst)
            if is_dir and not isinstance(dhit.node, Dir):
                raise oserror(errno.ENOTDIR, dst)
            if is_dir and self._names(dhit):
                raise oserror(errno.ENOTEMPTY, dst)
        check_name(drest[-1], dst)
        v = sview
        if is_dir:
            moved = v._local(srest)
            assert moved is not None
            if len(moved.stack) == 1 and v.upper is not None and moved.idx == 0:
                node: Node = moved.node  # upper-only dir: move it as is
                parent = v._upper_dir(srest[:-1], src)
                parent.children.pop(srest[-1])  # no release: the subtree lives on
                if v._lower_has(srest[:-1], srest[-1]):
                    attach(parent, srest[-1], Whiteout())
            else:
                node = v._deep_copy(srest)
                v._remove(srest, src)
        else:
            node = v._copy_up(srest, src)  # the same node: hardlinks stay linked
            parent = v._upper_dir(srest[:-1], src)
            node_was = parent.children.pop(srest[-1])
            assert node_was is node
            if isinstance(node, File):
                node.nlink -= 1
            if v._lower_has(srest[:-1], srest[-1]):
                attach(parent, srest[-1], Whiteout())
        if isinstance(node, Dir):
            node.opaque = node.opaque or v._lower_has(drest[:-1], drest[-1])
        dparent = v._upper_dir(drest[:-1], dst)
        old = dparent.children.get(drest[-1])
        if old is not None and not isinstance(old, Whiteout):
            release(old)
            del dparent.children[drest[-1]]
        v._place(drest, node, dst)

    def chmod(self, path: str, mode: int) -> None:
        parts, _ = self._existing(path)
        view, rest = self._in_view(parts, path)
        view._copy_up(rest, path).mode = mode & 0o7777

    def chown(self, path: str, uid: int, gid: int) -> None:
        parts, _ = self._existing(path)
        view, rest = self._in_view(parts, path)
        node = view._copy_up(rest, path)
        node.uid, node.gid = uid, gid

    def utime(self, path: str, mtime: float) -> None:
        parts, _ = self._existing(path)
        view, rest = self._in_view(parts, path)
        view._copy_up(rest, path).mtime = mtime

    def mknod(self, path: str, kind: str, major: int = 0, minor: int = 0, mode: int = 0o666) -> None:
        """Create a device (``kind`` "char" or "block") or a fifo (``kind`` "fifo")."""
        if kind not in ("char", "block", "fifo"):
            raise oserror(errno.EINVAL, path)
        view, rest = self._new_path(path)
        view._place(rest, Special(mode=mode, dev_kind=kind, major=major, minor=minor,
                                  mtime=self.clock()), path)
