"""Building small layer tars inside tests (no fixture image needed)."""

from __future__ import annotations

import io
import tarfile
from typing import Any

Entry = tuple[Any, ...]


def make_tar(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar from ``(kind, name, ...)`` tuples:

    ``("dir", name[, mode])``, ``("file", name, data[, mode])``, ``("symlink", name, target)``,
    ``("hardlink", name, target)``, ``("char"|"block", name, major, minor)``, ``("fifo", name)``,
    ``("whiteout", "dir/name")`` (→ ``dir/.wh.name``), ``("opaque", "dir")``.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, *rest in entries:
            if kind == "whiteout":
                head, _, base = name.rpartition("/")
                kind, name, rest = "file", (head + "/" if head else "") + ".wh." + base, [b""]
            elif kind == "opaque":
                kind, name, rest = "file", name.rstrip("/") + "/.wh..wh..opq", [b""]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            data: bytes | None = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, rest[0] if rest else 0o755
            elif kind == "file":
                data = rest[0]
                ti.size, ti.mode = len(data), rest[1] if len(rest) > 1 else 0o644
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            elif kind in ("char", "block"):
                ti.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = rest[0], rest[1]
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                raise ValueError(kind)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [m.name.rstrip("/") for m in tf]
