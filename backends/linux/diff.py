"""An overlayfs upper dir → an OCI layer tar (what ``docker commit`` / ``diff`` produce).

overlayfs already holds exactly the changes: every upper entry is emitted as it is (dirs
present in the upper were copied up because something below them changed), a 0/0 char device is
a whiteout → ``.wh.<name>``, a dir with ``trusted.overlay.opaque=y`` gets a ``.wh..wh..opq``
entry after its own. Files sharing an inode become tar hardlinks to the first path.

Deterministic: paths sorted byte-wise per directory, parents first; PAX format; no user/group
names; mtimes in whole seconds. The walk goes through directory fds opened with ``O_NOFOLLOW``
(as ``os.fwalk``): a container swapping a dir for a symlink while we read cannot make us read a
host file. Overlay's own ``trusted.*`` xattrs are not exported.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import IO

from backends.linux.fdstack import DirStack
from backends.linux.layer_root import BUFSIZE, OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX, is_whiteout

_EXPORT_XATTRS = ("user.", "security.capability")


class _CountingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)


class _Exactly:
    """Reads ``size`` bytes of ``fd``: a file shrinking meanwhile is padded with zeros (the
    header already promised ``size``), a growing one cut."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left = fd, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        if len(data) < n:
            data += bytes(n - len(data))
        self.left -= len(data)
        return data


def write_diff(upper: str, out: IO[bytes]) -> int:
    """Write the upper dir ``upper`` as a layer tar to ``out``; return the bytes written."""
    writer = _CountingWriter(out)
    rootfd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          bufsize=BUFSIZE, copybufsize=BUFSIZE) as tf:
            _walk(tf, rootfd, {})
    finally:
        os.close(rootfd)
    return writer.count


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.mtime = int(st.st_mtime)
    ti.uname = ti.gname = ""
    return ti


def _xattrs(ti: tarfile.TarInfo, fd: int) -> None:
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    pax = dict(ti.pax_headers)
    for attr in sorted(names):
        if attr.startswith(_EXPORT_XATTRS):
            pax[f"SCHILY.xattr.{attr}"] = os.getxattr(fd, attr).decode("utf-8", "surrogateescape")
    ti.pax_headers = pax


def _walk(tf: tarfile.TarFile, rootfd: int, first_path: dict[tuple[int, int], str]) -> None:
    """Depth-first, names sorted, parents first. An explicit stack of dir fds rather than
    recursion (a container can nest dirs deeper than Python's recursion limit), holding a bounded
    number of them open (``fdstack.DirStack``: not one fd per level)."""
    with DirStack[tuple[str, Iterator[str]]]() as stack:
        stack.push(rootfd, ("", iter(sorted(os.listdir(rootfd)))), owned=False)
        while stack:
            dfd, (prefix, names) = stack.top()
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            sub = _entry(tf, dfd, name, prefix + name, first_path)
            if sub is not None:
                try:
                    children = iter(sorted(os.listdir(sub)))
                except BaseException:
                    os.close(sub)
                    raise
                stack.push(sub, (prefix + name + "/", children))


def _entry(tf: tarfile.TarFile, dfd: int, name: str, path: str,
           first_path: dict[tuple[int, int], str]) -> int | None:
    """Add ``name`` of ``dfd`` as ``path``; for a dir, return its open fd (the caller walks it)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None  # deleted while we walk
    if is_whiteout(st):
        head, _, base = path.rpartition("/")
        ti = tarfile.TarInfo((head + "/" if head else "") + WH_PREFIX + base)
        ti.mode, ti.mtime = 0o644, int(st.st_mtime)
        tf.addfile(ti)
        return None
    ti = _info(path, st)
    if stat.S_ISDIR(st.st_mode):
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
        try:
            ti.type = tarfile.DIRTYPE
            _xattrs(ti, sub)
            tf.addfile(ti)
            if _opaque(sub):
                op = tarfile.TarInfo(f"{path}/{WH_OPAQUE}")
                op.mode, op.mtime = 0o644, ti.mtime
                tf.addfile(op)
        except BaseException:
            os.close(sub)
            raise
        return sub
    if stat.S_ISREG(st.st_mode):
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in first_path:
            ti.type, ti.linkname = tarfile.LNKTYPE, first_path[ident]
            tf.addfile(ti)
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return None  # replaced meanwhile
            raise
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                return None
            ti = _info(path, fst)
            ti.size = fst.st_size
            _xattrs(ti, fd)
            if fst.st_nlink > 1:
                first_path[ident] = path
            tf.addfile(ti, _Exactly(fd, fst.st_size))
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
        tf.addfile(ti)
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
        tf.addfile(ti)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tf.addfile(ti)
    # sockets are not representable in a tar: skipped, as Docker does
    return None


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
