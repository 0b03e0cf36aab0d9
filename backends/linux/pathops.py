"""The proposed PathOps role on Linux (``docker cp``): stat, tar out, unpack into a mounted view.

The contract is ``engine.kernel_fs.PathOps``. The view is one of our overlay mounts (the running
container's root stays mounted in the host's mount namespace; a stopped container's snapshot is
mounted by the engine for the copy). Everything below it is reached from an fd of the view's root:

* a path's parent components are resolved with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``,
  so an absolute symlink or a ``../`` chain met on the way means the view's root, never the
  host's (``ln -s / /escape`` inside the container leads back to the container's ``/``); the last
  component is looked at with ``fstatat(AT_SYMLINK_NOFOLLOW)`` (``lstat`` semantics) unless the
  path ends with ``/`` or ``/.``;
* ``archive`` walks directories through fds opened with ``O_NOFOLLOW`` (as
  ``backends.linux.diff``; a bounded number open at a time, ``backends.linux.fdstack``): a
  running container swapping a dir for a symlink while we read cannot make us read a host file;
  symlinks are archived as symlinks; other mounts below the view (in the host's namespace) are
  included;
* ``extract`` is ``backends.linux.pathops_extract``: the layer unpacker's confined resolution.

Blocking work runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from backends.linux import libc, overlay, pathops_extract
from backends.linux.diff import _Exactly
from backends.linux.fdstack import DirStack
from backends.linux.layer_root import BUFSIZE, RESOLVE
from engine.kernel import LayerLimits
from engine.kernel_fs import PathStat

_EXPORT_XATTRS = ("user.", "security.capability")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def kind_of(mode: int) -> str:
    """The ``PathStat.kind`` of an ``st_mode``."""
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo")):
        if test(mode):
            return kind
    return "socket"


def _relabel(e: OSError, path: str) -> OSError:
    """``e`` naming the caller's ``path`` (openat2 names the relative path it was given)."""
    return OSError(e.errno, f"{path}: {os.strerror(e.errno or 0)}", path)


class _Located:
    """Where a path of the view landed: ``dfd`` + ``name`` (``name == ""``: ``dfd`` itself)."""

    def __init__(self, dfd: int, name: str, st: os.stat_result, shown: str) -> None:
        self.dfd, self.name, self.st, self.shown = dfd, name, st, shown

    def stat(self) -> PathStat:
        st = self.st
        link = os.readlink(self.name, dir_fd=self.dfd) if stat.S_ISLNK(st.st_mode) else ""
        return PathStat(name=self.shown, kind=kind_of(st.st_mode), mode=stat.S_IMODE(st.st_mode),
                        size=st.st_size, mtime=st.st_mtime, link_target=link)


class LinuxPathOps:
    """PathOps mixin of ``LinuxKernel`` (the contract is ``engine.kernel_fs.PathOps``).

    Uses the Snapshots mixin's private hooks ``_norm_target`` and ``_record`` to check that
    ``target`` is one of this kernel's mounts.
    """

    def _init_pathops(self) -> None:
        pass

    def _leaks_pathops(self) -> list[str]:
        return []  # nothing outlives a call

    # ---- the role -----------------------------------------------------------------------------
    async def path_stat(self, target: str, path: str) -> PathStat:
        return await asyncio.to_thread(self._path_stat, target, path)

    async def archive(self, target: str, path: str, out: BinaryIO) -> PathStat:
        return await asyncio.to_thread(self._archive, target, path, out)

    async def extract(self, target: str, path: str, tar: BinaryIO,
                      no_overwrite_dir_non_dir: bool = False,
                      limits: LayerLimits | None = None) -> None:
        await asyncio.to_thread(self._extract, target, path, tar, no_overwrite_dir_non_dir,
                                limits or LayerLimits())

    # ---- resolution -------------------------------------------------------------------------
    @contextmanager
    def _view_root(self, target: str) -> Iterator[int]:
        """An fd of the root of the view mounted at ``target``; EINVAL if none of ours is."""
        norm = self._norm_target(target)  # type: ignore[attr-defined]
        if self._record(norm) is None or norm not in overlay.mount_points():  # type: ignore[attr-defined]
            raise OSError(errno.EINVAL, f"nothing mounted at {target}", target)
        rootfd = os.open(norm, _DIR | os.O_NOFOLLOW)
        try:
            yield rootfd
        finally:
            os.close(rootfd)

    @contextmanager
    def _locate(self, rootfd: int, path: str) -> Iterator[_Located]:
        """Resolve ``path`` inside the view (see the module docstring)."""
        follow = path.endswith("/") or path.endswith("/.")
        norm = posixpath.normpath("/" + path)
        if follow or norm == "/":
            try:
                fd = libc.openat2(rootfd, norm.lstrip("/") or ".", os.O_PATH, resolve=RESOLVE)
            except OSError as e:
                raise _relabel(e, path) from None
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
                root = os.readlink(f"/proc/self/fd/{rootfd}")
                shown = "/" if real == root else posixpath.basename(real)
                yield _Located(fd, "", os.fstat(fd), shown)
            finally:
                os.close(fd)
            return
        parent, base = posixpath.split(norm)
        try:
            pfd = libc.openat2(rootfd, parent.lstrip("/") or ".", os.O_PATH | os.O_DIRECTORY,
                               resolve=RESOLVE)
        except OSError as e:
            raise _relabel(e, path) from None
        try:
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except OSError as e:
                raise _relabel(e, path) from None
            yield _Located(pfd, base, st, base)
        finally:
            os.close(pfd)

    def _path_stat(self, target: str, path: str) -> PathStat:
        with self._view_root(target) as rootfd, self._locate(rootfd, path) as loc:
            return loc.stat()

    # ---- archive ------------------------------------------------------------------------------
    def _archive(self, target: str, path: str, out: BinaryIO) -> PathStat:
        with self._view_root(target) as rootfd, self._locate(rootfd, path) as loc:
            st = loc.stat()
            top = "." if path.endswith("/.") else st.name.strip("/") or "."
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                              bufsize=BUFSIZE, copybufsize=BUFSIZE) as tf:
                _Writer(tf).entry(loc.dfd, loc.name, top, loc.st)
        return st

    # ---- extract ------------------------------------------------------------------------------
    def _extract(self, target: str, path: str, tar: BinaryIO, no_overwrite: bool,
                 limits: LayerLimits) -> None:
        with self._view_root(target) as rootfd:
            try:
                dest = libc.openat2(rootfd, path.lstrip("/") or ".", _DIR, resolve=RESOLVE)
            except OSError as e:
                raise _relabel(e, path) from None
            try:
                pathops_extract.extract(rootfd, dest, tar, no_overwrite, limits)
            finally:
                os.close(dest)


class _Writer:
    """Tar entries for a file tree, read through ``O_NOFOLLOW`` fds; files sharing an inode
    become hardlinks to the first path (as Docker's archiver)."""

    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self.first: dict[tuple[int, int], str] = {}

    def entry(self, dfd: int, name: str, arc: str, st: os.stat_result) -> None:
        """Add ``name`` of dir fd ``dfd`` (``""``: ``dfd`` itself) as ``arc``, a dir with
        everything below it (depth-first, names sorted; an explicit stack, not recursion: a
        container may nest dirs deeper than Python's recursion limit, and a ``DirStack`` that
        keeps a bounded number of them open, not one fd per level)."""
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(dfd, name, arc, st)
            return
        with DirStack[tuple[str, Iterator[str]]]() as stack:
            self._dir(stack, dfd, name, arc)
            while stack:
                fd, (top, names) = stack.top()
                sub = next(names, None)
                if sub is None:
                    stack.pop()
                    continue
                try:
                    sst = os.stat(sub, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we walk
                if stat.S_ISDIR(sst.st_mode):
                    self._dir(stack, fd, sub, posixpath.join(top, sub))
                else:
                    self._leaf(fd, sub, posixpath.join(top, sub), sst)

    def _dir(self, stack: DirStack[tuple[str, Iterator[str]]], dfd: int, name: str, arc: str) -> None:
        """Add the dir's own entry and push it (its fd, name, children) on ``stack``."""
        try:
            fd = os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=dfd) if name else \
                os.open(f"/proc/self/fd/{dfd}", _DIR)  # our own O_PATH fd of the dir
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return  # replaced meanwhile
            raise
        try:
            names = iter(sorted(os.listdir(fd)))
        except BaseException:
            os.close(fd)
            raise
        stack.push(fd, (arc, names))
        ti = self._info(arc if arc == "." else arc + "/", os.fstat(fd), fd)
        ti.type = tarfile.DIRTYPE
        self.tf.addfile(ti)

    def _leaf(self, dfd: int, name: str, arc: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self._file(dfd, name, arc, st)
        elif stat.S_ISLNK(mode):
            ti = self._info(arc, st)
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
            self.tf.addfile(ti)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti = self._info(arc, st)
            ti.type = (tarfile.FIFOTYPE if stat.S_ISFIFO(mode) else
                       tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
            if not stat.S_ISFIFO(mode):
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tf.addfile(ti)
        # sockets are not representable in a tar: skipped, as Docker does

    def _file(self, dfd: int, name: str, arc: str, st: os.stat_result) -> None:
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in self.first:
            ti = self._info(arc, st)
            ti.type, ti.linkname = tarfile.LNKTYPE, self.first[ident]
            self.tf.addfile(ti)
            return
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dfd) if name else \
                os.open(f"/proc/self/fd/{dfd}", flags & ~os.O_NOFOLLOW)  # our own O_PATH fd
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return  # replaced meanwhile
            raise
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                return
            ti = self._info(arc, fst, fd)
            ti.size = fst.st_size
            if fst.st_nlink > 1:
                self.first[ident] = arc
            self.tf.addfile(ti, _Exactly(fd, fst.st_size))
        finally:
            os.close(fd)

    @staticmethod
    def _info(arc: str, st: os.stat_result, fd: int | None = None) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(arc)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.mtime = int(st.st_mtime)
        ti.uname = ti.gname = ""
        if fd is not None:
            try:
                names = os.listxattr(fd)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                names = []
            pax = {f"SCHILY.xattr.{a}": os.getxattr(fd, a).decode("utf-8", "surrogateescape")
                   for a in sorted(names) if a.startswith(_EXPORT_XATTRS)}
            if pax:
                ti.pax_headers = pax
        return ti
