"""Unpacking a layer tar into a directory, safely (hostile input, CVE-2025-4517 and friends).

We never call ``tarfile``'s ``extract``/``extractall`` nor rely on its filters: on this machine's
Python 3.11.7 the "data" filter is bypassed by a symlink chain longer than PATH_MAX. tarfile only
*parses* the stream (:mod:`backends.linux.layer_stream`, streaming); every entry is created by us:

* the entry's parent directory is opened with ``openat2(root, parent, RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS)``, so symlinks (absolute ones, ``../`` chains, loops) resolve inside the
  layer root, never outside; a missing parent is created component by component relative to
  directory fds that were themselves resolved in the root (a dangling symlink is followed to
  where it points, inside the root, as Docker's chrooted unpacker does);
* the final component is created relative to that dir fd with the ``*at`` calls, never
  following a symlink (``O_NOFOLLOW``/``O_EXCL``, ``follow_symlinks=False``);
* names are cleaned lexically first: a leading ``/`` is stripped, ``..`` climbing above the root
  is refused.

Cost: a regular file of a layer (built privately, from empty) takes ``openat`` (with its final
mode), ``write`` (straight from the stream buffer), ``utimensat`` and ``close``; ``fchown`` and
``fchmod`` only when ``open`` could not already give the entry's owner and mode (``_file``).
Parent dir fds are cached (``LayerRoot.dir``), dir mtimes set once at the end.

OCI whiteouts become overlayfs whiteouts: ``dir/.wh.name`` → a 0/0 char device ``dir/name``,
``dir/.wh..wh..opq`` → ``trusted.overlay.opaque="y"`` on ``dir``. A hardlink to a file of a
parent layer copies that file up first (as overlayfs would), read from the read-only union of
the parent chain that the caller mounts on demand (``lower()``).

Refused with ``OSError(EINVAL)`` naming the entry (``filename``): ``..`` escapes, hardlinks to
outside or to nothing, device nodes other than whiteouts, unsupported types, a malformed,
truncated or unterminated stream. ``OSError(EFBIG)`` past :class:`LayerLimits`. The caller
removes the half-built layer on any failure.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable
from typing import IO

from backends.linux import libc
from backends.linux.layer_root import (
    BUFSIZE,
    DIR,
    OPAQUE_XATTR,
    RESOLVE,
    WH_OPAQUE,
    WH_PREFIX,
    XATTR_OK,
    LayerRoot,
    bad,
    check_entry_limits,
    clean,
    is_whiteout,
    set_meta_fd,
)
from backends.linux.layer_stream import TarSource, stream_into
from engine.kernel import LayerLimits


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for k, v in m.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            attr = k[len("SCHILY.xattr."):]
            if attr.startswith(XATTR_OK):
                out.append((attr, v.encode("utf-8", "surrogateescape")))
    return out


def apply_member(x: LayerRoot, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
    """Create one tar entry inside the layer (see the module docstring for the rules)."""
    check_entry_limits(x, m, "layer")
    parts = clean(m.name, m.name)
    try:
        _apply(x, tf, m, parts)
    except (ValueError, OverflowError) as e:  # NUL in a name, uid beyond 2**32 …
        raise bad(m.name, str(e)) from None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # hostile names/links, not the disk
            raise bad(m.name, os.strerror(e.errno)) from None
        raise


def _apply(x: LayerRoot, tf: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str]) -> None:
    base = parts[-1] if parts else ""
    if base.startswith(WH_PREFIX):
        dfd = x.dir(parts[:-1], m.name)
        if base == WH_OPAQUE:
            os.setxattr(dfd, OPAQUE_XATTR, b"y")
            return
        hidden = base[len(WH_PREFIX):]
        if hidden in ("", ".", "..") or hidden.startswith(WH_PREFIX):
            raise bad(m.name, "bad whiteout name")
        x.clear(dfd, hidden)
        os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dfd)
        return
    if m.islnk():
        _hardlink(x, m, parts)
        return
    if m.ischr() or m.isblk():
        if not (m.ischr() and m.devmajor == 0 and m.devminor == 0):
            raise bad(m.name, "device nodes are not allowed in layers")
    elif not (m.isreg() or m.isdir() or m.issym() or m.isfifo()):
        raise bad(m.name, f"unsupported entry type {m.type!r}")
    if not parts:
        if not m.isdir():
            raise bad(m.name, "the layer root must be a directory")
        x.dirs_changed()
        set_meta_fd(x.rootfd, m.uid, m.gid, m.mode & 0o7777, m.mtime)
        x.dir_times[""] = m.mtime
        return
    dfd = x.dir(parts[:-1], m.name)
    name = parts[-1]
    if m.isdir():
        _mkdir(x, dfd, name, parts, m)
    elif m.isreg():
        if x.total + m.size > x.limits.max_bytes:
            raise OSError(errno.EFBIG, f"layer content exceeds {x.limits.max_bytes} bytes at {m.name!r}",
                          m.name)
        x.total += m.size
        _file(x, tf, dfd, name, m)
    elif m.issym():
        _create(x, dfd, name, lambda: os.symlink(m.linkname, name, dir_fd=dfd))
        os.chown(name, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        os.utime(name, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
    elif m.isfifo():
        _create(x, dfd, name, lambda: os.mkfifo(name, 0o600, dir_fd=dfd))
        os.chown(name, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        os.chmod(name, m.mode & 0o7777, dir_fd=dfd)  # a fifo we just made: not a symlink
        os.utime(name, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
    else:  # the overlayfs spelling of a whiteout: char device 0/0
        _create(x, dfd, name, lambda: os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dfd))


def _create(x: LayerRoot, dfd: int, name: str, make: Callable[[], object]) -> None:
    """``make()`` the final component; an existing entry of this layer is replaced."""
    try:
        make()
    except FileExistsError:
        x.clear(dfd, name)
        make()


def _mkdir(x: LayerRoot, dfd: int, name: str, parts: list[str], m: tarfile.TarInfo) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=dfd)
    except FileExistsError:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):  # a dir stays a dir (its contents too); others go
            x.clear(dfd, name)
            os.mkdir(name, 0o700, dir_fd=dfd)
    fd = os.open(name, DIR | os.O_NOFOLLOW, dir_fd=dfd)
    x.implicit.discard("/".join(parts))  # its own entry sets its metadata
    x._remember("/".join(parts), fd)  # the next entries most likely go inside it
    x.dirs_changed()
    os.fchown(fd, m.uid, m.gid)
    os.fchmod(fd, m.mode & 0o7777)
    for attr, value in _xattrs(m):
        os.setxattr(fd, attr, value)
    x.dir_times["/".join(parts)] = m.mtime


def _file(x: LayerRoot, tf: tarfile.TarFile, dfd: int, name: str, m: tarfile.TarInfo) -> None:
    """Create the regular file ``name`` in ``dfd`` (an existing one of this layer is replaced)
    with the entry's data, owner, mode, xattrs and mtime. ``dfd``: a cached dir fd
    (:meth:`LayerRoot.dir`).

    Syscalls per file in a private layer (:attr:`LayerRoot.private`), the common case of an
    entry owned by us with plain permission bits that the umask keeps: ``openat`` (with the
    final mode), ``write``, ``utimensat``, ``close``. ``fchown`` only when the owner
    ``open(O_CREAT)`` gave is not the entry's (:meth:`LayerRoot.new_file_owner`), ``fchmod``
    only for set-id/sticky bits or bits the umask took (set after the data and the chown:
    writing or chown may clear set-id bits).
    """
    # the file's data is content, not header: move the header-cap mark past it (a file bigger
    # than HEADER_CAP must not look like a header bomb)
    x.mark = m.offset_data + m.size
    mode = m.mode & 0o7777
    # permission bits at open time, when the umask keeps them all (x.umask is only known for
    # a private layer, where no default ACL can replace the umask; the daemon never raises its
    # umask); set-id and sticky bits only by fchmod below
    early = x.umask is not None and not mode & 0o7000 and not mode & x.umask
    flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC
    create_mode = mode if early else 0o600
    try:
        fd = os.open(name, flags, create_mode, dir_fd=dfd)
    except FileExistsError:
        x.clear(dfd, name)
        fd = os.open(name, flags, create_mode, dir_fd=dfd)
    try:
        if m.sparse is not None:
            src: IO[bytes] | None = tf.extractfile(m)
            assert src is not None
            left = m.size
            while left:
                chunk = src.read(min(left, BUFSIZE))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        else:
            source = tf.fileobj  # our TarSource, at the data
            assert isinstance(source, TarSource)
            source.copy_to(fd, m.size)
        x.size += m.size  # the file's apparent size (a sparse entry's m.size is its real size)
        owned = x.private and x.new_file_owner(dfd, fd) == (m.uid, m.gid)
        set_meta_fd(fd, m.uid, m.gid, mode, m.mtime, _xattrs(m), chown=not owned, chmod=not early)
    finally:
        os.close(fd)


def _hardlink(x: LayerRoot, m: tarfile.TarInfo, parts: list[str]) -> None:
    if not parts:
        raise bad(m.name, "hardlink at the root")
    src = clean(m.linkname, m.name, "hardlink target")
    if not src:
        raise bad(m.name, f"hardlink target {m.linkname!r} is not in the layer")
    sfd = os.dup(x.dir(src[:-1], m.name))  # dup: the cache may close it meanwhile
    try:
        try:
            st: os.stat_result | None = os.stat(src[-1], dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None:
            if not x.copy_up(sfd, src[-1], [*x.canonical(sfd), src[-1]]):
                raise bad(m.name, f"hardlink target {m.linkname!r} is not in the layer")
            st = os.stat(src[-1], dir_fd=sfd, follow_symlinks=False)
        elif stat.S_ISDIR(st.st_mode) or is_whiteout(st):
            raise bad(m.name, f"hardlink target {m.linkname!r} is not in the layer")
        dfd = x.dir(parts[:-1], m.name)
        try:
            old = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            if (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino):
                return  # a link to itself
        except FileNotFoundError:
            pass
        _create(x, dfd, parts[-1], lambda: os.link(src[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd,
                                                   follow_symlinks=False))
    finally:
        os.close(sfd)


def extract(root: str, tar: IO[bytes], limits: LayerLimits,
            lower: Callable[[], int | None]) -> tuple[list[str], int]:
    """Unpack the uncompressed tar stream ``tar`` into the (empty) directory ``root``.

    ``lower()`` returns an fd of the read-only union of the parent layers (mounted on first
    call by the caller), or None without a parent. Raises as the module docstring says; on
    failure ``root`` holds garbage the caller must delete.

    Returns:
        The dirs (relative paths, sorted) created only because entries lie below them and
        which the lower layers did not have (see :func:`adopt_parent_dirs`), and the layer's
        size as :func:`du` gives it: counted while unpacking (files created, copied up, or
        replaced), walked only if an entry replaced a whole dir tree.
    """
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    x = LayerRoot(rootfd, limits, lower, private=True)
    try:
        stream_into(x, tar, lambda tf, m: apply_member(x, tf, m), "corrupt/truncated layer")
    finally:
        os.close(rootfd)
    return sorted(x.implicit), (x.size if x.size_exact else du(root))


def adopt_parent_dirs(root: str, implicit: list[str], lower: int) -> None:
    """Give each implicit dir of the layer at ``root`` the owner, mode and mtime of the same
    dir in the parent union ``lower`` (an fd), as :func:`extract` with that parent would have;
    paths that are no dir on either side are left alone. Confined as extraction is."""
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for path in implicit:
            try:
                lfd = libc.openat2(lower, path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, resolve=RESOLVE)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue
                raise
            try:
                lst = os.fstat(lfd)
            finally:
                os.close(lfd)
            if not stat.S_ISDIR(lst.st_mode):
                continue
            try:
                fd = libc.openat2(rootfd, path, DIR | os.O_NOFOLLOW, resolve=RESOLVE)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue
                raise
            try:
                set_meta_fd(fd, lst.st_uid, lst.st_gid, stat.S_IMODE(lst.st_mode), lst.st_mtime)
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)


def du(root: str) -> int:
    """Bytes of regular-file content below ``root``, each hardlinked inode counted once: the
    apparent sizes (``st_size``, not blocks: a sparse file counts its holes) of the regular files,
    nothing for dirs, symlinks, fifos, whiteouts. The size of a snapshot (``docker images``,
    ``system df``); :func:`extract` counts the same while unpacking."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for ent in it:
                if ent.is_dir(follow_symlinks=False):
                    stack.append(ent.path)
                elif ent.is_file(follow_symlinks=False):
                    st = ent.stat(follow_symlinks=False)
                    if st.st_nlink > 1:
                        if st.st_ino in seen:
                            continue
                        seen.add(st.st_ino)
                    total += st.st_size
    return total
