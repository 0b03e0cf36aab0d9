"""A push-style tar reader that checks image layers (and reads image archives) safely.

Python's :mod:`tarfile` reads a PAX or GNU long-name header into memory whole, whatever size it
declares, and knows nothing of layer rules. This module parses tar headers itself, fed chunk by
chunk (``feed(data)`` … ``close()``), so one pass over a stream can hash it, store it and check
it at the same time, with bounded memory:

* headers: ustar (with its ``prefix`` field), GNU long names/links (``L``/``K``), PAX extended
  headers (``x``; ``g`` is skipped), octal and base-256 numbers, header checksums;
* limits (:class:`ScanLimits`): content bytes, entry count, extended-header size, path length;
* a truncated stream (EOF inside a header or content) or a missing end-of-archive marker is
  malformed.

:class:`LayerPolicy` adds the OCI layer rules moby's ``archive.Unpack`` and our kernels enforce,
so a hostile layer is refused when it is *loaded*, not when a container first runs: ``..``
escaping the root, absolute names (refused outright here: no legitimate layer has them), entries
below a symlink of the same layer, hardlinks that escape or run through a symlink, device nodes,
bad whiteouts, a non-directory root.

Everything raises :class:`TarError` (the caller turns it into ``InvalidArgument`` naming the file
or digest).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

BLOCK = 512

REGULAR = (b"0", b"\0", b"7")
HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRTYPE, FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK = b"x", b"g", b"L", b"K"
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


class TarError(Exception):
    """A malformed, truncated, hostile or oversized tar stream; ``entry`` names the member."""

    def __init__(self, message: str, entry: str = "") -> None:
        super().__init__(message)
        self.entry = entry


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Caps for one tar stream (a layer or an image archive)."""

    max_bytes: int = 64 * 1024**3  # file content, summed
    max_entries: int = 2_000_000
    max_header: int = 1024 * 1024  # one PAX / GNU long-name extended header
    max_path: int = 4096


@dataclass(slots=True)
class Entry:
    """One member. ``name``/``linkname`` are as stored (PAX and GNU long names applied)."""

    name: str
    type: bytes
    size: int
    linkname: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)
    offset: int = 0  # offset of the content in the stream

    @property
    def is_file(self) -> bool:
        return self.type in REGULAR

    @property
    def is_dir(self) -> bool:
        return self.type == DIRTYPE


def _number(field_: bytes, what: str, entry: str) -> int:
    """An octal (NUL/space padded) or GNU base-256 numeric header field."""
    if field_ and field_[0] & 0x80:
        value = int.from_bytes(field_[1:], "big")
        if field_[0] == 0xFF:
            raise TarError(f"negative {what} in header", entry)
        return value | ((field_[0] & 0x3F) << (8 * (len(field_) - 1)))
    text = field_.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"corrupt header: bad {what} field {text[:20]!r}", entry) from None


def _text(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip(b" \0")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(b for b in block[:148] + block[156:] if b > 127) * 2 \
        if want != unsigned else unsigned
    return want in (unsigned, signed)


def _parse_pax(data: bytes, entry: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad with NULs
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise TarError("corrupt PAX header", entry)
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarError("corrupt PAX header: bad record length", entry) from None
        if length <= sp - pos or pos + length > len(data):
            raise TarError("corrupt PAX header: record overruns the header", entry)
        record = data[sp + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise TarError("corrupt PAX header record", entry)
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarReader:
    """Push parser: ``feed`` bytes as they come, ``close`` at EOF.

    Args:
        on_entry: called with each :class:`Entry` once its header is parsed (before its content).
        on_data: if given, called with ``(entry, chunk)`` for every piece of regular-file content.
        limits: see :class:`ScanLimits`.
    """

    def __init__(self, on_entry: Callable[[Entry], None] | None = None,
                 on_data: Callable[[Entry, bytes], None] | None = None,
                 limits: ScanLimits | None = None) -> None:
        self.on_entry = on_entry
        self.on_data = on_data
        self.limits = limits or ScanLimits()
        self.pos = 0  # bytes consumed so far
        self.entries = 0
        self.content = 0
        self.ended = False
        self.current = "<start of archive>"
        self._buf = bytearray()  # pending header bytes or extended-header content
        self._state = "header"
        self._remaining = 0  # content bytes of the current member still to come
        self._padding = 0
        self._entry: Entry | None = None
        self._ext_type = b""
        self._ext: dict[str, str] = {}  # PAX keys / GNU names for the next member
        self._zero_blocks = 0

    def feed(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        while len(mv):
            if self.ended:
                self.pos += len(mv)
                return
            if self._state == "header":
                need = BLOCK - len(self._buf)
                self._buf += mv[:need]
                mv = mv[need:]
                if len(self._buf) == BLOCK:
                    block = bytes(self._buf)
                    self._buf.clear()
                    self.pos += BLOCK
                    self._header(block)
            elif self._state in ("data", "ext"):
                take = min(len(mv), self._remaining)
                chunk = mv[:take]
                mv = mv[take:]
                self._remaining -= take
                self.pos += take
                if self._state == "ext":
                    self._buf += chunk
                elif self.on_data is not None and self._entry is not None and take:
                    self.on_data(self._entry, bytes(chunk))
                if self._remaining == 0:
                    if self._state == "ext":
                        self._finish_ext()
                    self._state = "pad" if self._padding else "header"
            elif self._state == "pad":
                take = min(len(mv), self._padding)
                mv = mv[take:]
                self._padding -= take
                self.pos += take
                if self._padding == 0:
                    self._state = "header"

    def close(self) -> None:
        """Declare EOF. Raises TarError if the stream stopped early."""
        if self.ended:
            return
        if self._state != "header" or self._buf:
            raise TarError(f"truncated archive: unexpected end of data in {self.current!r}",
                           self.current)
        if self._zero_blocks == 0:
            raise TarError("truncated archive: missing end-of-archive marker"
                           if self.entries else "empty or truncated archive", self.current)
        self.ended = True

    # -- internals ---------------------------------------------------------------------------

    def _header(self, block: bytes) -> None:
        if block.count(0) == BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.ended = True
            return
        if self._zero_blocks:
            raise TarError("corrupt archive: data after an end-of-archive block", self.current)
        if not _checksum_ok(block):
            raise TarError(f"corrupt header after {self.current!r}: checksum mismatch",
                           self.current)
        typ = block[156:157]
        name = _text(block[0:100])
        if block[257:265] == b"ustar\x0000" and block[345]:
            name = _text(block[345:500]) + "/" + name
        entry = self.current = self._ext.get("path", name)
        size = _number(block[124:136], "size", entry)
        if typ in (PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK):
            if size > self.limits.max_header:
                raise TarError(f"extended header of {size} bytes after {entry!r} exceeds "
                               f"{self.limits.max_header} bytes (header bomb)", entry)
            self._ext_type = typ
            self._begin_content(size, "ext")
            return
        ext, self._ext = self._ext, {}
        if "size" in ext:
            try:
                size = int(ext["size"])
            except ValueError:
                raise TarError("corrupt PAX size", entry) from None
        # Links, dirs, devices and fifos carry no content whatever their size field says
        # (POSIX; Go's archive/tar and Python's tarfile agree).
        content = 0 if typ in (HARDLINK, SYMLINK, DIRTYPE, CHAR, BLOCKDEV, FIFO) else size
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise TarError(f"more than {self.limits.max_entries} entries", entry)
        if typ in REGULAR:
            self.content += size
            if self.content > self.limits.max_bytes:
                raise TarError(f"content exceeds {self.limits.max_bytes} bytes at {entry!r}",
                               entry)
        linkname = ext.get("linkpath", _text(block[157:257]))
        for text in (entry, linkname):
            if len(text.encode("utf-8", "surrogateescape")) > self.limits.max_path:
                raise TarError(f"path longer than {self.limits.max_path} bytes", entry)
        e = Entry(name=entry, type=typ, size=size if typ in REGULAR else 0, linkname=linkname,
                  mode=_number(block[100:108], "mode", entry),
                  uid=int(ext["uid"]) if "uid" in ext else _number(block[108:116], "uid", entry),
                  gid=int(ext["gid"]) if "gid" in ext else _number(block[116:124], "gid", entry),
                  mtime=float(ext["mtime"]) if "mtime" in ext else
                  _number(block[136:148], "mtime", entry),
                  devmajor=_number(block[329:337], "devmajor", entry),
                  devminor=_number(block[337:345], "devminor", entry), pax=ext,
                  offset=self.pos)
        self._entry = e
        if self.on_entry is not None:
            self.on_entry(e)
        self._begin_content(content, "data")

    def _begin_content(self, size: int, state: str) -> None:
        self._remaining = size
        self._padding = (-size) % BLOCK
        if size:
            self._state = state
        elif state == "ext":
            self._finish_ext()
            self._state = "pad" if self._padding else "header"
        else:
            self._state = "header"

    def _finish_ext(self) -> None:
        data = bytes(self._buf)
        self._buf.clear()
        if self._ext_type == PAX:
            self._ext.update(_parse_pax(data, self.current))
        elif self._ext_type == GNU_LONGNAME:
            self._ext["path"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._ext_type == GNU_LONGLINK:
            self._ext["linkpath"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        # PAX_GLOBAL: ignored (as moby and containerd do)


def clean_name(name: str, entry: str, what: str = "name", allow_absolute: bool = False) -> str:
    """Normalise a member name to a relative path ("" is the root).

    Raises:
        TarError: absolute (unless ``allow_absolute``: then the ``/`` is stripped, as Docker
            does) or ``..`` climbing above the root.
    """
    if name.startswith("/") and not allow_absolute:
        raise TarError(f"{what} {name!r} is absolute", entry)
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise TarError(f"{what} {name!r} escapes the layer root (path traversal)", entry)
            out.pop()
        else:
            out.append(part)
    return "/".join(out)


class LayerPolicy:
    """The OCI layer rules, checked entry by entry (use as ``TarReader(on_entry=policy)``).

    Args:
        allow_absolute: strip a leading ``/`` instead of refusing (``docker import`` of rootfs
            tars made with absolute names).
    """

    def __init__(self, allow_absolute: bool = False) -> None:
        self.allow_absolute = allow_absolute
        self.kinds: dict[str, bytes] = {}  # path → type of this layer's entries

    def __call__(self, e: Entry) -> None:
        path = clean_name(e.name, e.name, "entry", self.allow_absolute)
        self._no_symlink_parent(path, e.name)
        base = posixpath.basename(path)
        if base.startswith(WH_PREFIX):
            hidden = base[len(WH_PREFIX):]
            if base != WH_OPAQUE and (hidden in ("", ".", "..") or hidden.startswith(WH_PREFIX)):
                raise TarError(f"bad whiteout name {e.name!r}", e.name)
            if not e.is_file:
                raise TarError(f"whiteout {e.name!r} is not a regular file", e.name)
            self.kinds.pop(posixpath.join(posixpath.dirname(path), hidden), None)
            return
        if e.type in (CHAR, BLOCKDEV):
            raise TarError(f"device node {e.name!r} is not allowed in a layer", e.name)
        if e.type not in (*REGULAR, HARDLINK, SYMLINK, DIRTYPE, FIFO):
            raise TarError(f"unsupported entry type {e.type!r} for {e.name!r}", e.name)
        if not path and not e.is_dir:
            raise TarError("the layer root must be a directory", e.name)
        if e.type == HARDLINK:
            target = clean_name(e.linkname, e.name, "hardlink target", self.allow_absolute)
            if not target:
                raise TarError(f"hardlink {e.name!r} points at the layer root", e.name)
            self._no_symlink_parent(target, e.name)
            if self.kinds.get(target) == DIRTYPE:
                raise TarError(f"hardlink {e.name!r} points at a directory", e.name)
        if path:
            self.kinds[path] = e.type

    def _no_symlink_parent(self, path: str, entry: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.kinds.get("/".join(parts[:i])) == SYMLINK:
                raise TarError(f"{entry!r} runs through the symlink {'/'.join(parts[:i])!r} "
                               "of the same layer (symlink escape)", entry)


class CheckedStream:
    """Reads ``inner`` and feeds every chunk to ``checker`` (e.g. a :class:`LayerPolicy`
    reader) on its way to the caller; the checker's verdict ends the read: a
    :class:`TarError` becomes the exception ``error(e)`` makes (with the entry's name in it).
    An empty read (the end) closes the checker, so a truncated archive is refused too."""

    def __init__(self, inner: BinaryIO | object, checker: TarReader,
                 error: Callable[[TarError], Exception]) -> None:
        self.inner, self.checker, self.error = inner, checker, error

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)  # type: ignore[attr-defined]
        try:
            if data:
                self.checker.feed(data)
            else:
                self.checker.close()
        except TarError as e:
            raise self.error(e) from None
        return data


def scan_file(f: BinaryIO, reader: TarReader) -> None:
    """Run ``reader`` over the seekable tar file ``f``, seeking over file content it does not
    want (no ``on_data``): reading a layer's headers costs its headers, not its bytes.

    Raises:
        TarError: as :meth:`TarReader.feed` / :meth:`TarReader.close`.
    """
    end = f.seek(0, 2)
    f.seek(0)
    while not reader.ended:
        st = reader._state  # noqa: SLF001 - the scanner's own helper
        if st in ("data", "pad") and reader.on_data is None:
            skip = reader._remaining + reader._padding
            if f.tell() + skip > end:
                raise TarError(f"truncated archive: unexpected end of data in {reader.current!r}",
                               reader.current)
            f.seek(skip, 1)
            reader.pos += skip
            reader._remaining = reader._padding = 0
            reader._state = "header"
            continue
        want = BLOCK if st == "header" else max(BLOCK, min(1 << 20, reader._remaining))
        chunk = f.read(want)
        if not chunk:
            break
        reader.feed(chunk)
    reader.close()
