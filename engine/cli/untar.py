"""Safe local extraction for ``wharfie cp`` (container → host), without tarfile's filters.

tarfile's extraction filters are missing before Python 3.11.4 and were bypassed on later 3.11s
(CVE-2025-4517: a symlink chain longer than PATH_MAX). So every entry is created here with the
``*at`` calls relative to a directory fd, walking each parent component with ``O_NOFOLLOW``: an
entry can never be written through a symlink, whatever the archive or the destination holds.
Portable POSIX (no openat2), so the client also works off Linux.

Rules, as docker's untar: names are relative (a leading "/" is stripped, ``..`` refused); an
existing entry is replaced (a symlink itself, never its target) unless both are directories;
device nodes are skipped unless we are root.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import IO, Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafeEntry(Exception):
    """An archive entry that would land outside the destination."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name


def _parts(name: str) -> list[str]:
    norm = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if norm == "..":
        raise UnsafeEntry(name, "climbs out with '..'")
    if norm.startswith("../"):
        raise UnsafeEntry(name, "climbs out with '..'")
    if norm in ("", "."):
        return []
    return norm.split("/")


def _open_dir(rootfd: int, parts: list[str], name: str, create: bool = True) -> int:
    """An fd for the directory ``parts`` below ``rootfd``, never following a symlink."""
    fd = os.dup(rootfd)
    try:
        for comp in parts:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeEntry(name, f"a parent ({comp}) is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _make_room(dirfd: int, leaf: str, is_dir: bool) -> None:
    try:
        st = os.lstat(leaf, dir_fd=dirfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if is_dir:
            return
        sub = os.open(leaf, _DIR_FLAGS, dir_fd=dirfd)
        try:
            _rmtree_fd(sub)
        finally:
            os.close(sub)
        os.rmdir(leaf, dir_fd=dirfd)
    else:
        os.unlink(leaf, dir_fd=dirfd)


def _rmtree_fd(fd: int) -> None:
    for name in os.listdir(fd):
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                _rmtree_fd(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def extract(stream: IO[bytes] | Any, dest: str, rename: Callable[[str], str] = lambda n: n,
            same_owner: bool = False) -> None:
    """Unpack a tar stream into the existing directory ``dest``.

    Args:
        rename: maps each entry name (and hardlink target) before it is placed.
        same_owner: keep uid/gid from the archive (``cp -a``); needs root.

    Raises:
        UnsafeEntry: an entry would land outside ``dest`` (nothing beyond it is touched).
        tarfile.TarError, OSError: a malformed archive or a filesystem error.
    """
    rootfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    dirs: list[tuple[list[str], int, float]] = []  # modes and times are set last, as tar does
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                name = rename(m.name)
                parts = _parts(name)
                if not parts:
                    continue
                dirfd = _open_dir(rootfd, parts[:-1], name)
                try:
                    _place(tf, m, dirfd, parts[-1], rootfd, rename, same_owner)
                finally:
                    os.close(dirfd)
                if m.isdir():
                    dirs.append((parts, m.mode & 0o7777, m.mtime))
        for parts, mode, mtime in reversed(dirs):  # after their contents were written
            dirfd = _open_dir(rootfd, parts[:-1], "/".join(parts), create=False)
            try:
                sub = os.open(parts[-1], _DIR_FLAGS, dir_fd=dirfd)  # a real dir, not a symlink
                try:
                    os.fchmod(sub, mode)
                    os.utime(sub, (mtime, mtime))
                finally:
                    os.close(sub)
            except OSError:
                pass
            finally:
                os.close(dirfd)
    finally:
        os.close(rootfd)


def _place(tf: tarfile.TarFile, m: tarfile.TarInfo, dirfd: int, leaf: str, rootfd: int,
           rename: Callable[[str], str], same_owner: bool) -> None:
    _make_room(dirfd, leaf, m.isdir())
    mode = m.mode & 0o7777
    if m.isdir():
        try:
            os.mkdir(leaf, 0o700, dir_fd=dirfd)
        except FileExistsError:
            pass
    elif m.isreg():
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
        with os.fdopen(fd, "wb") as out:
            src = tf.extractfile(m)
            assert src is not None
            shutil.copyfileobj(src, out, 1 << 20)
            os.fchmod(out.fileno(), mode)
    elif m.issym():
        os.symlink(m.linkname, leaf, dir_fd=dirfd)
    elif m.islnk():
        tparts = _parts(rename(m.linkname))
        if not tparts:
            raise UnsafeEntry(m.name, "hardlink to the destination itself")
        tdir = _open_dir(rootfd, tparts[:-1], m.linkname, create=False)
        try:
            os.link(tparts[-1], leaf, src_dir_fd=tdir, dst_dir_fd=dirfd, follow_symlinks=False)
        finally:
            os.close(tdir)
        return
    elif m.isfifo():
        os.mkfifo(leaf, mode, dir_fd=dirfd)
    elif m.ischr() or m.isblk():
        if os.geteuid() != 0:
            return  # as tar does for an unprivileged user
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(leaf, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=dirfd)
    else:
        return
    if same_owner:
        try:
            os.chown(leaf, m.uid, m.gid, dir_fd=dirfd, follow_symlinks=False)
        except PermissionError:
            pass
    if not m.isdir():
        try:
            os.utime(leaf, (m.mtime, m.mtime), dir_fd=dirfd, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
