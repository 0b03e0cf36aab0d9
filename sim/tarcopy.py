"""``docker cp`` in the sim: tar a path out of a view, unpack a tar into one (see
``engine.kernel_fs.PathOps`` for the contract).

The view (:class:`sim.fs.FsView`) already resolves every symlink inside its root, so nothing
here can reach outside the container; entry names are still checked for ``..`` escapes so a
hostile tar is refused with EINVAL rather than silently clamped.
"""

from __future__ import annotations

import errno
import posixpath
import tarfile
from typing import BinaryIO

from engine.images.tarscan import (
    BLOCKDEV,
    CHAR,
    DIRTYPE,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    ScanLimits,
    TarError,
    TarReader,
    clean_name,
)
from engine.kernel import LayerLimits
from engine.kernel_fs import PathStat
from sim.fs import FsView
from sim.fsnodes import FileStat, oserror

_TAR_TYPE = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def _parent_resolved(view: FsView, path: str) -> str:
    """``path`` with its parent components resolved inside the root (last one untouched)."""
    norm = posixpath.normpath("/" + path)
    if norm == "/":
        return "/"
    parent, base = posixpath.split(norm)
    return posixpath.join(view.resolve(parent), base)


def path_stat(view: FsView, path: str) -> PathStat:
    follow = path.endswith("/") or path.endswith("/.")
    real = view.resolve(path) if follow else _parent_resolved(view, path)
    st = view.stat(real, follow=False)
    link = view.readlink(real) if st.kind == "symlink" else ""
    return PathStat(name=posixpath.basename(real) or "/", kind=st.kind, mode=st.mode,
                    size=st.size, mtime=st.mtime, link_target=link)


def archive(view: FsView, path: str, out: BinaryIO) -> PathStat:
    st = path_stat(view, path)
    follow = path.endswith("/") or path.endswith("/.")
    real = view.resolve(path) if follow else _parent_resolved(view, path)
    top = "." if path.endswith("/.") else st.name.strip("/") or "."
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, view, real, top, view.stat(real, follow=False))
        if st.kind == "dir":
            base = real.rstrip("/")
            for sub, sst in view.walk(real):
                _add(tf, view, sub, posixpath.join(top, sub[len(base):].lstrip("/")), sst)
    return st


def _add(tf: tarfile.TarFile, view: FsView, real: str, name: str, st: FileStat) -> None:
    ti = tarfile.TarInfo(name + ("/" if st.kind == "dir" and name != "." else ""))
    ti.type = _TAR_TYPE[st.kind]
    ti.mode, ti.uid, ti.gid, ti.mtime = st.mode, st.uid, st.gid, int(st.mtime)
    if st.kind == "symlink":
        ti.linkname = view.readlink(real)
    if st.kind == "file":
        data = view.read(real)
        ti.size = len(data)
        tf.addfile(ti, _Bytes(data))
    else:
        tf.addfile(ti)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk


def extract(view: FsView, path: str, tar: BinaryIO, no_overwrite_dir_non_dir: bool,
            limits: LayerLimits) -> None:
    dest = view.resolve(path)
    if view.stat(dest).kind != "dir":
        raise oserror(errno.ENOTDIR, path)
    pending: list[tuple[Entry, bytearray]] = []

    def on_entry(e: Entry) -> None:
        _flush(view, dest, pending, no_overwrite_dir_non_dir)
        pending.append((e, bytearray()))

    def on_data(e: Entry, chunk: bytes) -> None:
        pending[-1][1].extend(chunk)

    reader = TarReader(on_entry, on_data, ScanLimits(max_bytes=limits.max_bytes,
                                                     max_entries=limits.max_entries,
                                                     max_path=limits.max_path))
    try:
        while True:
            chunk = tar.read(1 << 20)
            if not chunk:
                break
            reader.feed(chunk)
        reader.close()
    except TarError as e:
        code = errno.EFBIG if "exceed" in str(e) or "more than" in str(e) else errno.EINVAL
        raise oserror(code, e.entry or path, f"invalid archive: {e}") from None
    _flush(view, dest, pending, no_overwrite_dir_non_dir)


def _flush(view: FsView, dest: str, pending: list[tuple[Entry, bytearray]],
           no_overwrite: bool) -> None:
    while pending:
        e, data = pending.pop(0)
        _place(view, dest, e, bytes(data), no_overwrite)


def _place(view: FsView, dest: str, e: Entry, data: bytes, no_overwrite: bool) -> None:
    try:
        rel = clean_name(e.name, e.name, "entry", allow_absolute=True)
    except TarError as err:
        raise oserror(errno.EINVAL, e.name, f"invalid archive entry: {err}") from None
    if not rel:
        return
    full = posixpath.join(dest, rel)
    parent = posixpath.dirname(full)
    if not view.exists(parent):
        view.mkdir(parent, parents=True)
    full = _parent_resolved(view, full)
    old = view.stat(full, follow=False) if view.exists(full, follow=False) else None
    is_dir = e.type == DIRTYPE
    if old is not None:
        if no_overwrite and (old.kind == "dir") != is_dir:
            raise oserror(errno.EEXIST, e.name, f"cannot overwrite {'non-' if is_dir else ''}"
                          f"directory {full!r} with {'' if is_dir else 'non-'}directory {e.name!r}")
        if old.kind == "dir" and is_dir:
            pass
        elif old.kind == "dir":
            _rmtree(view, full)
        else:
            view.unlink(full)  # an old symlink is replaced, never written through
    if is_dir:
        if old is None or old.kind != "dir":
            view.mkdir(full, e.mode & 0o7777 or 0o755)
    elif e.type in REGULAR:
        view.write(full, data, mode=e.mode & 0o7777)
    elif e.type == SYMLINK:
        view.symlink(e.linkname, full)
    elif e.type == HARDLINK:
        try:
            src = clean_name(e.linkname, e.name, "hardlink target", allow_absolute=True)
        except TarError as err:
            raise oserror(errno.EINVAL, e.name, f"invalid archive entry: {err}") from None
        view.link(_parent_resolved(view, posixpath.join(dest, src)), full)
        return
    elif e.type in (CHAR, BLOCKDEV, FIFO):
        kind = {CHAR: "char", BLOCKDEV: "block", FIFO: "fifo"}[e.type]
        view.mknod(full, kind, e.devmajor, e.devminor, e.mode & 0o7777)
    else:
        raise oserror(errno.EINVAL, e.name, f"unsupported entry type {e.type!r}")
    if e.type != SYMLINK:
        view.chmod(full, e.mode & 0o7777)
        view.chown(full, e.uid, e.gid)
        view.utime(full, e.mtime)


def _rmtree(view: FsView, path: str) -> None:
    for name in view.listdir(path):
        sub = posixpath.join(path, name)
        if view.stat(sub, follow=False).kind == "dir":
            _rmtree(view, sub)
        else:
            view.unlink(sub)
    view.rmdir(path)
