"""``docker cp`` into a view: unpack a tar below a directory of a mounted container root.

The layer unpacker's confinement (``backends.linux.layers`` / ``layer_root``), with ``docker cp``
rules instead of layer rules:

* the confinement root is the *view's* root: every directory an entry goes into is opened with
  ``openat2(view_root, dest/…, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` (or walked component by
  component from such fds, missing dirs created), so a symlink in the container — absolute or a
  ``../`` chain — resolves inside the container, as under ``chroot``; the final component is
  created with the ``*at`` calls, ``O_EXCL``/``O_NOFOLLOW``: an existing symlink there is
  replaced, never written through;
* entry names are relative to the destination dir: a leading ``/`` is stripped, ``..`` climbing
  above the destination is refused (``OSError(EINVAL)`` naming the entry);
* ``.wh.`` names are plain files (whiteouts are a layer matter); device nodes and fifos are
  created (root copies them, as Docker does); a hardlink must name a non-dir already below the
  destination;
* ``no_overwrite``: a dir replacing a non-dir or the reverse → ``OSError(EEXIST)``; otherwise a
  non-dir is replaced and a dir merged into (its owner, mode and mtime taken from the entry).

Entries are applied as they stream in: those before a failing one stay (as ``docker cp``).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import IO

from backends.linux.layer_root import LayerRoot, check_entry_limits, clean
from backends.linux.layer_stream import stream_into
from backends.linux.layers import _create, _file, _mkdir
from engine.kernel import LayerLimits


def extract(rootfd: int, destfd: int, tar: IO[bytes], no_overwrite: bool, limits: LayerLimits) -> None:
    """Unpack ``tar`` into the dir ``destfd`` (resolved below ``rootfd``, the view's root)."""
    x = LayerRoot(rootfd, limits, lambda: None)
    dest = x.canonical(destfd)
    stream_into(x, tar, lambda tf, m: _member(x, tf, m, dest, no_overwrite), "invalid archive")


def _member(x: LayerRoot, tf: tarfile.TarFile, m: tarfile.TarInfo, dest: list[str],
            no_overwrite: bool) -> None:
    check_entry_limits(x, m, "archive")
    rel = _clean(m.name, m.name, "entry")
    if not rel:
        return  # the destination itself (``./`` of an archived ``dir/.``): left as it is
    try:
        _place(x, tf, m, [*dest, *rel], dest, no_overwrite)
    except (ValueError, OverflowError) as e:  # NUL in a name, uid beyond 2**32 …
        raise _bad(m.name, str(e)) from None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # hostile names/links, not the disk
            raise _bad(m.name, os.strerror(e.errno)) from None
        raise


def _bad(entry: str, why: str) -> OSError:
    return OSError(errno.EINVAL, f"invalid archive entry {entry!r}: {why}", entry)


def _clean(name: str, entry: str, what: str) -> list[str]:
    try:
        return clean(name, entry, what)
    except OSError:
        raise _bad(entry, f"{what} {name!r} escapes the destination directory") from None


def _place(x: LayerRoot, tf: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str],
           dest: list[str], no_overwrite: bool) -> None:
    dfd = x.dir(parts[:-1], m.name)
    name = parts[-1]
    try:
        old: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        old = None
    if old is not None and no_overwrite and stat.S_ISDIR(old.st_mode) != m.isdir():
        what = ("non-directory", "directory") if m.isdir() else ("directory", "non-directory")
        raise OSError(errno.EEXIST, f"cannot overwrite {what[0]} {'/' + '/'.join(parts)!r} "
                                    f"with {what[1]} {m.name!r}", m.name)
    if m.isdir():
        _mkdir(x, dfd, name, parts, m)
    elif m.isreg():
        if x.total + m.size > x.limits.max_bytes:
            raise OSError(errno.EFBIG, f"archive content exceeds {x.limits.max_bytes} bytes at "
                                       f"{m.name!r}", m.name)
        x.total += m.size
        _file(x, tf, dfd, name, m)
    elif m.issym():
        _create(x, dfd, name, lambda: os.symlink(m.linkname, name, dir_fd=dfd))
        os.chown(name, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        os.utime(name, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
    elif m.islnk():
        _hardlink(x, m, dfd, name, dest)
    elif m.isfifo() or m.ischr() or m.isblk():
        kind = stat.S_IFIFO if m.isfifo() else stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        dev = 0 if m.isfifo() else os.makedev(m.devmajor, m.devminor)
        _create(x, dfd, name, lambda: os.mknod(name, kind | 0o600, dev, dir_fd=dfd))
        os.chown(name, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        os.chmod(name, m.mode & 0o7777, dir_fd=dfd)  # a node we just made: not a symlink
        os.utime(name, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
    else:
        raise _bad(m.name, f"unsupported entry type {m.type!r}")


def _hardlink(x: LayerRoot, m: tarfile.TarInfo, dfd: int, name: str, dest: list[str]) -> None:
    src = _clean(m.linkname, m.name, "hardlink target")
    if not src:
        raise _bad(m.name, f"hardlink target {m.linkname!r} is a directory")
    dfd = os.dup(dfd)  # the cache may close it while we open the source's dir
    try:
        sfd = os.dup(x.dir([*dest, *src[:-1]], m.name))
        try:
            try:
                st = os.stat(src[-1], dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _bad(m.name, f"hardlink target {m.linkname!r} does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise _bad(m.name, f"hardlink target {m.linkname!r} is a directory")
            try:
                old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino):
                    return  # a link to itself
            except FileNotFoundError:
                pass
            _create(x, dfd, name, lambda: os.link(src[-1], name, src_dir_fd=sfd, dst_dir_fd=dfd,
                                                  follow_symlinks=False))
        finally:
            os.close(sfd)
    finally:
        os.close(dfd)

