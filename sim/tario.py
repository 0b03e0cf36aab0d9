"""Layer tars in and out of the sim's trees: ``apply_tar`` (unpack) and ``diff_tar`` (pack).

The OCI image-spec layer format: ``dir/.wh.name`` is a whiteout of ``name``, ``dir/.wh..wh..opq``
marks ``dir`` opaque. Unpacking is hostile-input safe: every entry lands inside the layer, and
anything that could not (``..`` above the root, hardlinks to outside or to nothing, device nodes)
is refused with ``OSError(EINVAL)`` naming the entry.
"""

from __future__ import annotations

import errno
import tarfile
from typing import IO, TYPE_CHECKING, BinaryIO

from engine.kernel import LayerLimits
from sim.fs import FsView
from sim.fsnodes import (
    Dir,
    File,
    Node,
    Special,
    Symlink,
    Tree,
    Whiteout,
    attach,
    clone,
    oserror,
    split_path,
)

if TYPE_CHECKING:
    from sim.faults import Faults

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40


class _TailReader:
    """Passes reads through, remembering the last bytes read (to check the end-of-archive) and
    refusing to read far more than the limits allow (a huge PAX or GNU long-name header would
    otherwise be read into memory whole by tarfile)."""

    KEEP = 1 << 16
    SLACK = 4 * tarfile.RECORDSIZE  # read-ahead, end-of-archive blocks, record padding

    def __init__(self, raw: IO[bytes], unpacker: _Unpacker) -> None:
        self.raw = raw
        self.unpacker = unpacker
        self.pos = 0
        self.tail = b""

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.pos += len(data)
        self.tail = (self.tail + data)[-self.KEEP:]
        u = self.unpacker
        per_entry = 4 * tarfile.BLOCKSIZE + 2 * u.limits.max_path
        if self.pos > u.limits.max_bytes + (u.entries + 1) * per_entry + self.SLACK:
            raise oserror(errno.EFBIG, u.current,
                          f"layer headers exceed the limits near entry {u.current!r}")
        return data

    def block_at(self, offset: int) -> bytes:
        start = offset - (self.pos - len(self.tail))
        if start < 0:
            return b""
        return self.tail[start:start + tarfile.BLOCKSIZE]


def _clean(name: str, entry: str, what: str = "entry") -> list[str]:
    """Normalise ``name`` (of the layer entry ``entry``): leading ``/`` stripped (as Docker
    does); ``..`` above the root → EINVAL naming the entry."""
    out: list[str] = []
    for part in split_path(name):
        if part == "..":
            if not out:
                raise oserror(errno.EINVAL, entry,
                              f"invalid layer entry {entry!r}: {what} {name!r} escapes the layer root")
            out.pop()
        else:
            out.append(part)
    return out


class _Unpacker:
    def __init__(self, tree: Tree, parent_view: FsView | None, limits: LayerLimits,
                 faults: Faults | None) -> None:
        self.tree, self.parent_view, self.limits, self.faults = tree, parent_view, limits, faults
        self.total = 0
        self.entries = 0
        self.current = "<layer>"  # the entry being read, for error messages
        # dirs made only because entries lie below them, without lower metadata (no parent):
        # path → node, for ``bind_layer`` (``adopt_parent_dirs``)
        self.implicit: dict[str, Dir] = {}

    def bad(self, name: str, why: str) -> OSError:
        return oserror(errno.EINVAL, name, f"invalid layer entry {name!r}: {why}")

    def dir_at(self, parts: list[str], entry: str) -> tuple[Dir, list[str]]:
        """The layer's dir at ``parts`` (created if missing; symlinks of this layer followed
        inside the root) and its canonical parts."""
        todo = list(reversed(parts))
        d, links = self.tree.root, 0
        done: list[str] = []
        while todo:
            name = todo.pop()
            if name == "..":
                done = done[:-1]
                d = self._walk(done)
                continue
            child = d.children.get(name)
            if isinstance(child, Symlink):
                links += 1
                if links > _MAX_LINKS:
                    raise self.bad(entry, "too many levels of symbolic links")
                if child.target.startswith("/"):
                    done = []
                todo.extend(reversed(split_path(child.target)))
                d = self._walk(done)
                continue
            if child is None or isinstance(child, Whiteout):
                child = self._implicit_dir([*done, name])
                attach(d, name, child)
            elif not isinstance(child, Dir):
                raise self.bad(entry, f"parent {'/'.join([*done, name])!r} is not a directory")
            d = child
            done.append(name)
        return d, done

    def _walk(self, parts: list[str]) -> Dir:
        d = self.tree.root
        for name in parts:
            child = d.children[name]
            assert isinstance(child, Dir)
            d = child
        return d

    def _implicit_dir(self, parts: list[str]) -> Dir:
        path = "/" + "/".join(parts)
        d = Dir()
        if self.parent_view is not None and self.parent_view.exists(path, follow=False):
            st = self.parent_view.stat(path, follow=False)
            if st.kind == "dir":
                d.mode, d.uid, d.gid, d.mtime = st.mode, st.uid, st.gid, st.mtime
                return d
        self.implicit[path] = d
        return d

    def lookup(self, parts: list[str], entry: str) -> Node | None:
        """The non-dir node at ``parts`` in this layer, else copied up from the parent view."""
        if not parts:
            return None
        parent, done = self.dir_at(parts[:-1], entry)
        node = parent.children.get(parts[-1])
        if node is not None:
            return None if isinstance(node, (Dir, Whiteout)) else node
        if self.parent_view is None:
            return None
        path = "/" + "/".join([*done, parts[-1]])
        try:
            lower = self.parent_view._resolve(path, follow=False)[1]
        except OSError:
            return None
        if lower is None or isinstance(lower.node, Dir):
            return None
        node = clone(lower.node)  # overlayfs copies a lower file up before linking it
        attach(parent, parts[-1], node)
        return node

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise oserror(errno.EFBIG, m.name, f"layer has more than {self.limits.max_entries} entries")
        for text in (m.name, m.linkname):
            if len(text.encode("utf-8", "surrogateescape")) > self.limits.max_path:
                raise self.bad(m.name, f"path longer than {self.limits.max_path} bytes")
        parts = _clean(m.name, m.name)
        base = parts[-1] if parts else ""
        if base.startswith(WH_PREFIX):
            parent, _ = self.dir_at(parts[:-1], m.name)
            if base == WH_OPAQUE:
                parent.opaque = True
            else:
                hidden = base[len(WH_PREFIX):]
                if hidden in ("", ".", "..") or hidden.startswith(WH_PREFIX):
                    raise self.bad(m.name, "bad whiteout name")
                attach(parent, hidden, Whiteout())
            return
        node: Node
        if m.isdir():
            node = Dir()
        elif m.isreg():
            if self.total + m.size > self.limits.max_bytes:
                raise oserror(errno.EFBIG, m.name,
                              f"layer content exceeds {self.limits.max_bytes} bytes at {m.name!r}")
            self.total += m.size
            if self.faults is not None:
                self.faults.check("write", m.name)
            f = tf.extractfile(m)
            assert f is not None
            data = f.read()
            if len(data) != m.size:
                raise tarfile.ReadError("unexpected end of data")
            node = File(data=data)
        elif m.issym():
            node = Symlink(target=m.linkname)
        elif m.islnk():
            target = self.lookup(_clean(m.linkname, m.name, "hardlink target"), m.name)
            if target is None:
                raise self.bad(m.name, f"hardlink target {m.linkname!r} is not in the layer")
            if not parts:
                raise self.bad(m.name, "hardlink at the root")
            parent, _ = self.dir_at(parts[:-1], m.name)
            attach(parent, parts[-1], target)
            return
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            node = Whiteout()  # overlayfs-style whiteout
        elif m.ischr() or m.isblk():
            raise self.bad(m.name, "device nodes are not allowed in layers")
        elif m.isfifo():
            node = Special(dev_kind="fifo")
        else:
            raise self.bad(m.name, f"unsupported entry type {m.type!r}")
        if not isinstance(node, Whiteout):
            node.mode, node.uid, node.gid, node.mtime = m.mode & 0o7777, m.uid, m.gid, m.mtime
        if not parts:
            if not isinstance(node, Dir):
                raise self.bad(m.name, "the layer root must be a directory")
            root = self.tree.root
            root.mode, root.uid, root.gid, root.mtime = node.mode, node.uid, node.gid, node.mtime
            return
        parent, _ = self.dir_at(parts[:-1], m.name)
        old = parent.children.get(parts[-1])
        if isinstance(node, Dir) and isinstance(old, Dir):
            old.mode, old.uid, old.gid, old.mtime = node.mode, node.uid, node.gid, node.mtime
            self.implicit.pop("/" + "/".join(parts), None)  # its own entry sets its metadata
            return
        attach(parent, parts[-1], node)


def apply_tar(tree: Tree, parent_view: FsView | None, fileobj: IO[bytes], limits: LayerLimits,
              faults: Faults | None = None, implicit: dict[str, Dir] | None = None) -> int:
    """Unpack the uncompressed tar stream ``fileobj`` into the (fresh) ``tree``.

    ``parent_view`` is the union of the layers below (for hardlinks to lower files and the
    metadata of implicit parent dirs). Calls ``faults.check("write", name)`` per regular file.

    ``implicit``, if given, receives the dirs made only because entries lie below them that
    ``parent_view`` did not have (path → node; see :func:`adopt_parent_dirs`).

    Returns the bytes of file content the layer holds. Raises ``OSError(EINVAL)`` for a hostile,
    malformed, truncated or corrupt entry/stream (``filename`` = the entry), ``OSError(EFBIG)``
    past ``limits``, and whatever the faults inject. On failure ``tree`` is garbage: discard it.
    """
    unpacker = _Unpacker(tree, parent_view, limits, faults)
    reader = _TailReader(fileobj, unpacker)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
            for m in tf:
                unpacker.current = m.name
                unpacker.member(tf, m)
            end = reader.block_at(tf.offset)
        if len(end) != tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("missing end-of-archive marker")
    except (tarfile.TarError, EOFError, UnicodeError) as e:
        name = unpacker.current
        raise oserror(errno.EINVAL, name, f"corrupt/truncated layer at {name!r}: {e}") from None
    if implicit is not None:
        implicit.update(unpacker.implicit)
    return tree.du()


def adopt_parent_dirs(tree: Tree, implicit: dict[str, Dir], parent_view: FsView) -> None:
    """Give each implicit dir still in ``tree`` the metadata of the same dir in
    ``parent_view``, as :func:`apply_tar` with that parent would have."""
    for path, node in implicit.items():
        here: Node | None = tree.root
        for name in split_path(path):
            here = here.children.get(name) if isinstance(here, Dir) else None
        if here is not node or not parent_view.exists(path, follow=False):
            continue  # replaced later in the layer, or the parent has nothing there
        st = parent_view.stat(path, follow=False)
        if st.kind == "dir":
            node.mode, node.uid, node.gid, node.mtime = st.mode, st.uid, st.gid, st.mtime


class _CountingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)


def diff_tar(upper: Tree, lower_view: FsView, out: BinaryIO | IO[bytes]) -> int:
    """Write ``upper``'s changes over ``lower_view`` as an OCI layer tar; return bytes written.

    Deterministic: paths sorted, parents first; PAX format, no user/group names. Every node of
    the upper is emitted (dirs were copied up because something below them changed); files
    sharing one node become hardlinks to the first path; whiteouts become ``.wh.<name>`` and
    opaque dirs get a ``.wh..wh..opq`` entry.
    """
    writer = _CountingWriter(out)
    first_path: dict[int, str] = {}
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for path, node in upper.walk():
            name = path.lstrip("/")
            if isinstance(node, Whiteout):
                if not lower_view.exists(path, follow=False):
                    continue  # hides nothing
                head, _, base = name.rpartition("/")
                ti = tarfile.TarInfo((head + "/" if head else "") + WH_PREFIX + base)
                ti.mode = 0o644
                tf.addfile(ti)
                continue
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = node.mode & 0o7777, node.uid, node.gid, node.mtime
            if isinstance(node, Dir):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
                if node.opaque:
                    op = tarfile.TarInfo(f"{name}/{WH_OPAQUE}")
                    op.mode = 0o644
                    tf.addfile(op)
            elif isinstance(node, File):
                if id(node) in first_path:
                    ti.type, ti.linkname = tarfile.LNKTYPE, first_path[id(node)]
                    tf.addfile(ti)
                else:
                    first_path[id(node)] = name
                    ti.size = len(node.data)
                    tf.addfile(ti, _BytesReader(node.data))
            elif isinstance(node, Symlink):
                ti.type, ti.linkname = tarfile.SYMTYPE, node.target
                tf.addfile(ti)
            elif isinstance(node, Special):
                ti.type = {"char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE}.get(
                    node.dev_kind, tarfile.FIFOTYPE)
                ti.devmajor, ti.devminor = node.major, node.minor
                tf.addfile(ti)
    return writer.count


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk
