"""A layer directory being filled from a tar: confined path resolution and copy-up.

Part of the safe unpacker (``backends.linux.layers`` has the rules and the tar side). Every dir
fd handed out was resolved with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` below the
layer root, or walked component by component relative to such fds; callers then create the
final component with the ``*at`` calls, never following a symlink.
"""

from __future__ import annotations

import collections
import collections.abc
import errno
import os
import stat
import tarfile
from collections.abc import Callable

from backends.linux import libc
from backends.linux.fdstack import DirStack
from engine.kernel import LayerLimits

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
BUFSIZE = 1 << 20  # tar stream buffer and copy chunk
HEADER_CAP = 16 << 20  # most bytes one entry's headers (PAX, GNU long names) may take in memory
MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
XATTR_OK = ("user.", "security.capability")  # never trusted.* (overlay's own metadata)
CACHE = 64


def bad(entry: str, why: str) -> OSError:
    return OSError(errno.EINVAL, f"invalid layer entry {entry!r}: {why}", entry)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def clean(name: str, entry: str, what: str = "entry") -> list[str]:
    """``name`` as path components: leading ``/`` stripped, ``.`` dropped, ``..`` applied
    lexically; climbing above the root → EINVAL naming ``entry``."""
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise bad(entry, f"{what} {name!r} escapes the layer root")
            out.pop()
        else:
            out.append(part)
    return out



def check_entry_limits(x: LayerRoot, m: tarfile.TarInfo, what: str = "layer") -> None:
    """Count ``m`` against ``x.limits`` (entries, header bytes, path length) before it is created.

    Raises ``OSError(EFBIG)`` past the entry or byte caps, ``OSError(EINVAL)`` for a path longer
    than ``max_path``; ``what`` ("layer" or "archive") names the input in the message.
    """
    lim = x.limits
    x.entries += 1
    if x.entries > lim.max_entries:
        raise OSError(errno.EFBIG, f"{what} has more than {lim.max_entries} entries", m.name)
    x.total += max(0, m.offset_data - m.offset - x.per_entry)  # oversized headers count as bytes
    if x.total > lim.max_bytes:
        raise OSError(errno.EFBIG, f"{what} headers exceed {lim.max_bytes} bytes at {m.name!r}", m.name)
    for text in (m.name, m.linkname):
        if len(text.encode("utf-8", "surrogateescape")) > lim.max_path:
            raise OSError(errno.EINVAL, f"invalid {what} entry {m.name!r}: path longer than "
                          f"{lim.max_path} bytes", m.name)


def _read_umask() -> int | None:
    """The process umask without changing it (``Umask:`` of /proc/self/status, Linux ≥ 4.7),
    or None when the kernel does not say."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None


class LayerRoot:
    """The layer being unpacked: its root fd, counters for the limits, a small LRU of parent
    dir fds (consecutive entries mostly share a dir), deferred dir mtimes, and ``lower()``:
    an fd of the parent chain's read-only union (None without a parent).

    ``private``: the tree below ``rootfd`` is a layer being built from empty that nothing but
    this unpacker touches (``layers.extract``), and no dir in it can carry a default ACL (only
    ``XATTR_OK`` xattrs are ever set). Then a new file's owner and mode are predictable, and
    :func:`layers._file` skips the ``fchown``/``fchmod`` that would not change them
    (:meth:`new_file_owner`, :attr:`umask`). Not for ``docker cp`` into a live container view,
    whose dirs others may change meanwhile.
    """

    def __init__(self, rootfd: int, limits: LayerLimits, lower: Callable[[], int | None],
                 private: bool = False) -> None:
        self.rootfd, self.limits, self.lower = rootfd, limits, lower
        self.private = private
        # the umask open(O_CREAT) applies, None: unknown (always fchmod); read once: the
        # daemon never changes it (sandbox children set their own after fork)
        self.umask = _read_umask() if private else None
        # cached dir fd -> the owner a file created in it gets (new_file_owner)
        self._new_owner: dict[int, tuple[int, int]] = {}
        self.per_entry = 4 * tarfile.BLOCKSIZE + 2 * limits.max_path
        self.total = 0  # file bytes + header bytes beyond the per-entry allowance
        # the layer's size as ``layers.du`` defines it (apparent sizes of regular files, each
        # inode once), kept as entries are created and replaced; ``size_exact`` False once a
        # whole dir tree was replaced (its files were not counted out): walk the tree then
        self.size = 0
        self.size_exact = True
        self.entries = 0
        self.mark = 0  # stream offset where the current entry's headers start
        self.current = "<layer>"
        self.cache: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.dir_times: dict[str, float] = {}
        # dirs created only because an entry lies below them, with the lower layers' metadata
        # missing (no parent): ``Snapshots.bind_layer`` gives them the parent's metadata later
        self.implicit: set[str] = set()
        self.root_prefix = os.readlink(f"/proc/self/fd/{rootfd}").rstrip("/") + "/"

    # ---- directories ---------------------------------------------------------------------
    def dir(self, parts: list[str], entry: str) -> int:
        """An fd of the layer dir at ``parts`` (cached; created when missing)."""
        key = "/".join(parts)
        fd = self.cache.get(key)
        if fd is not None:
            self.cache.move_to_end(key)
            return fd
        try:
            fd = libc.openat2(self.rootfd, key or ".", DIR, resolve=RESOLVE)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            fd = self._walk(parts, entry)
        self._remember(key, fd)
        return fd

    def _remember(self, key: str, fd: int) -> None:
        old = self.cache.pop(key, None)
        if old is not None and old != fd:
            self._close(old)
        self.cache[key] = fd
        if len(self.cache) > CACHE:
            self._close(self.cache.popitem(last=False)[1])

    def _close(self, fd: int) -> None:
        self._new_owner.pop(fd, None)  # the number may come back for another dir
        os.close(fd)

    def new_file_owner(self, dfd: int, fd: int) -> tuple[int, int]:
        """(uid, gid) that ``open(O_CREAT)`` gives a new file in the cached dir fd ``dfd``,
        learnt from ``fd``, a file just created there: one ``fstat`` per dir, remembered until
        some dir's owner or mode changes (:meth:`dirs_changed`). Learnt, not predicted: set-gid
        dirs, ``grpid`` mounts and id-mapped mounts all decide it, always the same way for the
        same dir and process."""
        owner = self._new_owner.get(dfd)
        if owner is None:
            st = os.fstat(fd)
            owner = self._new_owner[dfd] = (st.st_uid, st.st_gid)
        return owner

    def dirs_changed(self) -> None:
        """A dir's owner or mode changed, or dirs went: forget what :meth:`new_file_owner`
        learnt (a dir may be cached under several keys through symlinks)."""
        self._new_owner.clear()

    def forget(self, keep: int = -1) -> None:
        """Drop cached dir fds (after removing a dir or symlink some cached path may run
        through), except ``keep``: the removed entry's own parent, which callers still use."""
        for key, fd in list(self.cache.items()):
            if fd != keep:
                self._close(fd)
                del self.cache[key]

    def _walk(self, parts: list[str], entry: str) -> int:
        """Slow path: walk ``parts`` from the root, following symlinks inside the root and
        creating missing dirs (with the lower layers' metadata when they have that dir)."""
        todo, links = list(parts), 0
        base: list[str] = []
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                base = base[:-1]
                continue
            bfd = libc.openat2(self.rootfd, "/".join(base) or ".", DIR, resolve=RESOLVE)
            try:
                try:
                    st: os.stat_result | None = os.stat(name, dir_fd=bfd, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_LINKS:
                        raise bad(entry, "too many levels of symbolic links")
                    target = os.readlink(name, dir_fd=bfd)
                    if target.startswith("/"):
                        base = []
                    todo[0:0] = target.split("/")
                    continue
                if st is None or is_whiteout(st):
                    if st is not None:
                        os.unlink(name, dir_fd=bfd)
                    self._implicit_dir(bfd, name, [*base, name])
                elif not stat.S_ISDIR(st.st_mode):
                    raise bad(entry, f"parent {'/'.join([*base, name])!r} is not a directory")
                base.append(name)
            finally:
                os.close(bfd)
        return libc.openat2(self.rootfd, "/".join(base) or ".", DIR, resolve=RESOLVE)

    def _implicit_dir(self, bfd: int, name: str, canon: list[str]) -> None:
        self.dirs_changed()
        os.mkdir(name, 0o755, dir_fd=bfd)
        lst = self._lower_stat(canon)
        if lst is not None and stat.S_ISDIR(lst.st_mode):
            os.chown(name, lst.st_uid, lst.st_gid, dir_fd=bfd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(lst.st_mode), dir_fd=bfd)
            self.dir_times["/".join(canon)] = lst.st_mtime
        else:
            self.implicit.add("/".join(canon))

    # ---- the lower layers (parent chain) ------------------------------------------------
    def _lower_open(self, canon: list[str], flags: int) -> int | None:
        lower = self.lower() if canon else None
        if lower is None:
            return None
        try:
            return libc.openat2(lower, "/".join(canon), flags | os.O_NOFOLLOW, resolve=RESOLVE)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise

    def _lower_stat(self, canon: list[str]) -> os.stat_result | None:
        fd = self._lower_open(canon, os.O_PATH)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def copy_up(self, dfd: int, name: str, canon: list[str]) -> bool:
        """Copy the non-dir ``canon`` of the lower layers to ``name`` in ``dfd``; False if the
        lower layers have no such non-dir."""
        lfd = self._lower_open(canon, os.O_PATH)
        if lfd is None:
            return False
        try:
            st = os.fstat(lfd)
            if stat.S_ISREG(st.st_mode):
                src = os.open(f"/proc/self/fd/{lfd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC,
                                 0o600, dir_fd=dfd)
                    try:
                        while os.sendfile(fd, src, None, BUFSIZE) > 0:
                            pass
                        self.size += os.fstat(fd).st_size
                        attrs = [(a, os.getxattr(src, a)) for a in os.listxattr(src) if a.startswith(XATTR_OK)]
                        set_meta_fd(fd, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime, attrs)
                    finally:
                        os.close(fd)
                finally:
                    os.close(src)
                return True
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink("", dir_fd=lfd), name, dir_fd=dfd)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(name, 0o600, dir_fd=dfd)
                os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
            else:
                return False
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, (st.st_mtime, st.st_mtime), dir_fd=dfd, follow_symlinks=False)
            return True
        finally:
            os.close(lfd)

    def canonical(self, dfd: int) -> list[str]:
        """The components of dir fd ``dfd`` below the layer root."""
        path = os.readlink(f"/proc/self/fd/{dfd}") + "/"
        assert path.startswith(self.root_prefix), path
        return [p for p in path[len(self.root_prefix):].split("/") if p]

    def clear(self, dfd: int, name: str) -> None:
        """Remove an existing ``name`` of this layer (a whole dir tree, without following
        symlinks) before replacing it, counting its bytes out of :attr:`size` (a regular file's
        when this was its last link; a dir tree's are not known: :attr:`size_exact` goes False)."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.dirs_changed()
            self.size_exact = False
            _rmtree_at(dfd, name)
            if self.implicit:  # implicit dirs at or below it are gone
                path = "/".join([*self.canonical(dfd), name])
                self.implicit = {p for p in self.implicit
                                 if p != path and not p.startswith(path + "/")}
        else:
            os.unlink(name, dir_fd=dfd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                self.size -= st.st_size
        if not stat.S_ISREG(st.st_mode):
            self.forget(keep=dfd)


def set_meta_fd(fd: int, uid: int, gid: int, mode: int, mtime: float,
                xattrs: collections.abc.Iterable[tuple[str, bytes]] = (),
                chown: bool = True, chmod: bool = True) -> None:
    """Owner, mode, ``xattrs``, then times of ``fd``, in that order: chown clears the set-id
    bits and ``security.capability``, and none of them may come after the times.

    ``chown``/``chmod`` False: the caller knows ``fd`` already has that owner/mode.
    """
    if chown:
        os.fchown(fd, uid, gid)
    if chmod:
        os.fchmod(fd, mode)
    for attr, value in xattrs:
        os.setxattr(fd, attr, value)
    ns = int(mtime * 1_000_000_000)
    os.utime(fd, ns=(ns, ns))


def _rmtree_at(dfd: int, name: str) -> None:
    rmtree_at(dfd, name)


def rmtree_at(dfd: int, name: str, ignore_errors: bool = False) -> None:
    """Remove ``name`` of dir fd ``dfd`` and all below it, never following a symlink.

    Iterative, through ``O_NOFOLLOW`` dir fds (``fdstack.DirStack``: a bounded number of them
    open, not one per level): a container can nest dirs far deeper than Python's recursion limit,
    which ``shutil.rmtree`` (recursive) dies on with ``RecursionError``. With ``ignore_errors``
    an entry that cannot be removed is left and the rest still goes (as
    ``shutil.rmtree(ignore_errors=True)``); a dir moved away while we walk (ESTALE) still raises.
    """
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dfd)
            return
        fd = os.open(name, DIR | os.O_NOFOLLOW, dir_fd=dfd)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    with DirStack[tuple[str, collections.abc.Iterator[str]]]() as stack:
        try:
            children = iter(os.listdir(fd))
        except BaseException:
            os.close(fd)
            raise
        stack.push(fd, (name, children))
        while stack:
            fd, (pname, names) = stack.top()
            sub = next(names, None)
            try:
                if sub is None:
                    stack.pop()  # reopens the parent if the stack had closed it
                    os.rmdir(pname, dir_fd=stack.top()[0] if stack else dfd)
                    continue
                st = os.stat(sub, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    cfd = os.open(sub, DIR | os.O_NOFOLLOW, dir_fd=fd)
                    try:
                        children = iter(os.listdir(cfd))
                    except BaseException:
                        os.close(cfd)
                        raise
                    stack.push(cfd, (sub, children))
                else:
                    os.unlink(sub, dir_fd=fd)
            except FileNotFoundError:
                continue  # gone meanwhile
            except OSError as e:
                if not ignore_errors or e.errno == errno.ESTALE:  # ESTALE: cannot climb back
                    raise


