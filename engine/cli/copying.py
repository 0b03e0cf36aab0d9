"""``docker cp`` on the client side: choose what the archive's top entry is called and where
it is unpacked, following docker's rules (``archive.CopyInfoDestinationPath`` /
``PrepareArchiveCopy``), then stream the tar to or from the daemon.

Local extraction goes through ``engine.cli.untar`` (not tarfile's filters: absent before
Python 3.11.4 and bypassable on later 3.11s): no absolute names, no ``..``, no entry written
through a symlink, so nothing lands outside the destination directory.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile
import tempfile
from typing import IO, Any

from engine.cli.app import fail

DIR_BIT = 1 << 31  # Go's os.ModeDir in the path-stat header
LINK_BIT = 1 << 27  # os.ModeSymlink


def _contents(path: str) -> bool:
    """``SRC/.``: copy what is in the directory, not the directory."""
    return path == "." or path.endswith("/.")


def _asserts_dir(path: str) -> bool:
    return path.endswith("/") or _contents(path)


# -- container → local -----------------------------------------------------------------------

def copy_out(client: Any, container: str, src: str, dst: str, follow: bool) -> int | None:
    """Copy ``container:src`` to the local ``dst`` (``-``: the tar to stdout). Returns the
    bytes copied (None for ``-``)."""
    from engine import errors

    try:
        st = client.archive_stat(container, src)
    except errors.NotFound:
        fail(f"Error response from daemon: Could not find the file {src} in container {container}", 1)
    rename_to = None
    if follow and st and st["mode"] & LINK_BIT and st.get("linkTarget"):
        target = st["linkTarget"]
        rename_to = posixpath.basename(src.rstrip("/"))
        src = target if target.startswith("/") else posixpath.join(posixpath.dirname(src), target)
    st, resp = client.archive_get(container, src)
    if dst == "-":
        out = sys.stdout.buffer
        for data in resp.chunks():
            out.write(data)
        out.flush()
        return None
    src_dir = bool(st["mode"] & DIR_BIT)
    if src.rstrip("/") != src and not src_dir:
        resp.close()
        fail(f"Error response from daemon: not a directory: {src}", 1)
    top = "." if _contents(src) and src_dir else st["name"]  # the archive's top entry
    if os.path.isdir(dst):
        parent, want = dst, "" if top == "." else (rename_to or top)
    elif os.path.exists(dst):
        if src_dir:
            resp.close()
            fail(f"cannot copy a directory to a file: {dst}", 1)
        parent, want = os.path.dirname(os.path.abspath(dst)), os.path.basename(dst)
    else:
        if _asserts_dir(dst) and not src_dir:
            resp.close()
            fail(f"destination directory {dst} must exist", 1)
        parent = os.path.dirname(os.path.abspath(dst.rstrip("/") or dst))
        want = os.path.basename(dst.rstrip("/"))
        if not os.path.isdir(parent):
            resp.close()
            fail(f"no such directory: {parent}", 1)
    counter = _Counting(resp.raw)
    try:
        _extract(counter, top, want, parent)
    finally:
        resp.close()
    return counter.n


class _Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.n = inner, 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        self.n += len(data)
        return data


def _rebase(name: str, top: str, new: str) -> str:
    """``top``/rest → ``new``/rest (``new`` "" drops ``top``: a directory's contents)."""
    if new == top:
        return name
    name = name.removeprefix("./") if top == "." else name
    if top == ".":
        if name in (".", ""):
            return new or "."
        return posixpath.join(new, name) if new else name
    if name == top or name == top + "/":
        return new or "."
    if name.startswith(top + "/"):
        rest = name[len(top) + 1:]
        return posixpath.join(new, rest) if new else rest
    return name


def _extract(stream: Any, top: str, new: str, parent: str) -> None:
    from engine.cli.untar import UnsafeEntry, extract

    try:
        extract(stream, parent, rename=lambda name: _rebase(name, top, new))
    except UnsafeEntry as e:
        fail(f"refusing to extract {e.name!r}: it would land outside {parent}", 1)
    except (tarfile.TarError, OSError) as e:
        fail(f"cannot extract the copy into {parent}: {e}", 1)


# -- local → container -----------------------------------------------------------------------

def copy_in(client: Any, src: str, container: str, dst: str, follow: bool, archive: bool) -> int | None:
    """Copy the local ``src`` (``-``: a tar on stdin) to ``container:dst``. Returns the bytes
    sent (None for ``-``)."""
    from engine import errors

    st: Any = None
    try:
        st = client.archive_stat(container, dst)
        if st["mode"] & LINK_BIT and st.get("linkTarget"):  # a symlinked destination is followed
            target = st["linkTarget"]
            dst = target if target.startswith("/") else posixpath.join(posixpath.dirname(dst), target)
            st = client.archive_stat(container, dst)
    except errors.NotFound:
        st = None
    dst_dir = st is not None and bool(st["mode"] & DIR_BIT)
    if src == "-":
        if not dst_dir:
            fail(f"destination \"{container}:{dst}\" must be a directory", 1)
        client.archive_put(container, dst, sys.stdin.buffer, no_overwrite_dir_non_dir=True, copy_uid_gid=archive)
        return None
    try:
        info = os.stat(src) if follow else os.lstat(src)
    except OSError as e:
        fail(f"{'stat' if follow else 'lstat'} {src}: {(e.strerror or str(e)).lower()}", 1)
    import stat as stat_

    src_dir = stat_.S_ISDIR(info.st_mode)
    if src.endswith("/") and not src_dir:
        fail(f"{src}: not a directory", 1)
    name = os.path.basename(src.rstrip("/")) if not _contents(src) else ""
    if st is None:
        if _asserts_dir(dst) and not src_dir:
            fail(f"destination directory {container}:{dst} must exist", 1)
        into, name = posixpath.dirname(dst.rstrip("/")) or "/", posixpath.basename(dst.rstrip("/"))
    elif dst_dir:
        into = dst
    else:
        if src_dir:
            fail(f"cannot copy a directory to a file: {container}:{dst}", 1)
        into, name = posixpath.dirname(dst) or "/", posixpath.basename(dst)
    with tempfile.TemporaryFile() as tar:
        _pack(src, name, follow, archive, tar)
        size = tar.tell()
        tar.seek(0)
        client.archive_put(container, into, tar, no_overwrite_dir_non_dir=True, copy_uid_gid=archive)
    return size


def _pack(src: str, name: str, follow: bool, archive: bool, out: IO[bytes]) -> None:
    """A tar of ``src`` whose top entry is ``name`` ("": the directory's entries at top level)."""

    def owner(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        if not archive:  # docker cp without -a: files belong to the container's root
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
        return ti

    path = os.path.realpath(src) if follow else src
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if name:
            tf.add(path, arcname=name, filter=owner)
        else:
            for child in sorted(os.listdir(path)):
                tf.add(os.path.join(path, child), arcname=child, filter=owner)
