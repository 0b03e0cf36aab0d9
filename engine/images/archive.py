"""Archive helpers for image import: compression sniffing and tar validation.

``docker import`` accepts a rootfs tar, plain or compressed; the format is detected from the
magic bytes (as moby's ``archive.DetectCompression``), never from a file name.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import lzma
import tarfile
import zlib
from typing import BinaryIO, cast

from engine.errors import InvalidArgument, NotImplemented_


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b\x08", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)


def detect(head: bytes) -> Compression:
    """The compression whose magic ``head`` starts with (``NONE`` if none)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


class _Prefixed:
    """A read-only stream yielding ``head`` and then the rest of ``inner``."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self._head = head
        self._inner = inner

    def read(self, n: int | None = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._inner.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._inner.read(n)

    def readable(self) -> bool:
        return True


class _Guarded:
    """Turns decompression errors into InvalidArgument naming the format."""

    def __init__(self, inner: BinaryIO | _Prefixed, kind: Compression,
                 owned: BinaryIO | None = None) -> None:
        self._inner = inner
        self._kind = kind
        self._owned = owned

    def read(self, n: int = -1) -> bytes:
        try:
            return self._inner.read(n)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as e:
            raise InvalidArgument(f"cannot import: corrupt {self._kind} stream: {e}") from e
        except Exception as e:  # zstandard.ZstdError
            if type(e).__name__ == "ZstdError":
                raise InvalidArgument(f"cannot import: corrupt {self._kind} stream: {e}") from e
            raise

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def decompressed(stream: BinaryIO) -> tuple[_Guarded, Compression]:
    """Wrap ``stream`` so that reading yields the uncompressed bytes.

    Returns:
        ``(reader, compression)``; close the reader when done (``stream`` itself stays open).

    Raises:
        NotImplemented_: zstd (no decoder in the standard library).
    """
    head = b""
    while len(head) < 6:
        chunk = stream.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    kind = detect(head)
    src = _Prefixed(head, stream)
    if kind is Compression.NONE:
        return _Guarded(src, kind), kind
    if kind is Compression.ZSTD:
        try:
            import zstandard
        except ImportError:
            raise NotImplemented_("cannot import: zstd-compressed archives need the 'zstandard' "
                                  "Python package; decompress the archive first") from None
        reader = cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, src), read_across_frames=True))
        return _Guarded(reader, kind, owned=reader), kind
    fileobj = cast(BinaryIO, src)
    opened: BinaryIO
    if kind is Compression.GZIP:
        opened = cast(BinaryIO, gzip.GzipFile(fileobj=fileobj, mode="rb"))
    elif kind is Compression.BZIP2:
        opened = cast(BinaryIO, bz2.BZ2File(fileobj, mode="rb"))
    else:
        opened = cast(BinaryIO, lzma.LZMAFile(fileobj, mode="rb"))
    return _Guarded(opened, kind, owned=opened), kind


def validate_tar(f: BinaryIO) -> int:
    """Check that ``f`` is a readable, uncompressed tar archive; return its entry count.

    Raises:
        InvalidArgument: "cannot import: not a valid tar archive: …".
    """
    try:
        with tarfile.open(fileobj=f, mode="r:") as tf:
            count = 0
            for _ in tf:
                count += 1
            return count
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InvalidArgument(f"cannot import: not a valid tar archive: {e}") from e
