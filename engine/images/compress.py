"""Layer and archive compression: sniffing, streaming decompression with bomb guards, and
deterministic compression for ``save``.

gzip, bzip2 and xz come from the standard library; gzip input is read with ISA-L's ``isal``
(2-3x faster, same format and checks) when installed; zstd needs the optional ``zstandard``
package (:data:`HAVE_ZSTD`): without it zstd input is refused with NotImplemented_, and zstd
output is unavailable.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from engine.errors import InvalidArgument, NotImplemented_
from engine.images.archive import Compression, _Prefixed, detect

_zstd: Any
try:  # optional at run time (listed in pyproject's dependencies)
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

_GzipReader: Any = gzip.GzipFile
_gzip_errors: tuple[type[Exception], ...] = ()
try:  # optional at run time (listed in pyproject's dependencies)
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib

    _GzipReader = _igzip.GzipFile
    _gzip_errors = (_isal_zlib.error,)
except ImportError:  # pragma: no cover - depends on the environment
    pass

HAVE_ZSTD = _zstd is not None
CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class BombLimits:
    """Decompression caps: ``max_bytes`` decompressed; ``max_ratio`` decompressed/compressed,
    enforced once more than ``ratio_floor`` bytes came out (small streams compress well)."""

    max_bytes: int = 64 * 1024**3
    max_ratio: int = 1000
    ratio_floor: int = 64 * 1024**2


class CountingReader:
    """Counts the bytes read from ``inner``."""

    def __init__(self, inner: Readable) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:  # isal's reader asks for it
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class Decompressed:
    """Reads the decompressed bytes of ``raw`` (compression ``kind``), enforcing ``limits``.

    Errors are InvalidArgument naming ``what`` (a file or digest): corrupt or truncated data,
    and decompression bombs.
    """

    def __init__(self, raw: Readable, kind: Compression, what: str,
                 limits: BombLimits | None = None) -> None:
        self.what = what
        self.kind = kind
        self.limits = limits or BombLimits()
        self.src = CountingReader(raw)
        self.out = 0
        self._zstd_reader: Any = None
        self._inner: Any
        fileobj: Any = self.src
        if kind is Compression.NONE:
            self._inner = fileobj
        elif kind is Compression.GZIP:
            self._inner = _GzipReader(fileobj=fileobj, mode="rb")
        elif kind is Compression.BZIP2:
            self._inner = bz2.BZ2File(fileobj, mode="rb")
        elif kind is Compression.XZ:
            self._inner = lzma.LZMAFile(fileobj, mode="rb")
        elif kind is Compression.ZSTD:
            if _zstd is None:
                raise NotImplemented_(f"{what}: zstd-compressed data needs the 'zstandard' Python "
                                      "package, which is not installed")
            self._inner = _zstd.ZstdDecompressor().stream_reader(fileobj, read_across_frames=True)
        else:  # pragma: no cover - exhaustive
            raise InvalidArgument(f"{what}: unknown compression {kind}")

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._inner.read(CHUNK if n is None or n < 0 else n)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, *_gzip_errors) as e:
            raise InvalidArgument(f"{self.what}: corrupt or truncated {self.kind} data: {e}") from e
        except Exception as e:  # zstandard.ZstdError is not an OSError
            if _zstd is not None and isinstance(e, _zstd.ZstdError):
                raise InvalidArgument(f"{self.what}: corrupt zstd data: {e}") from e
            raise
        self.out += len(data)
        lim = self.limits
        if self.out > lim.max_bytes:
            raise InvalidArgument(f"{self.what}: decompressed size exceeds {lim.max_bytes} bytes "
                                  "(decompression bomb?)")
        if self.kind is not Compression.NONE and self.out > lim.ratio_floor \
                and self.out > lim.max_ratio * max(self.src.count, 1):
            raise InvalidArgument(f"{self.what}: compression ratio above {lim.max_ratio}:1 "
                                  "(decompression bomb?)")
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self.kind is not Compression.NONE:
            self._inner.close()


def sniff(head: bytes) -> Compression:
    """The compression of a stream starting with ``head`` (at least 6 bytes when available)."""
    return detect(head)


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def compressor(kind: Compression, out: _Sink) -> Any:
    """A writable file object compressing into ``out`` deterministically (no name, mtime 0).

    Close it to flush the trailer (``out`` stays open).

    Raises:
        NotImplemented_: zstd without the ``zstandard`` package; InvalidArgument: bzip2/xz or
            an unknown kind (layers are gzip or zstd in the OCI spec).
    """
    if kind is Compression.GZIP:
        sink: Any = out
        return gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6)
    if kind is Compression.ZSTD:
        if _zstd is None:
            raise NotImplemented_("zstd compression needs the 'zstandard' Python package")
        return _zstd.ZstdCompressor(level=3).stream_writer(out, closefd=False)
    raise InvalidArgument(f"unsupported layer compression {kind!r}: choose gzip or zstd")


def open_sniffed(raw: BinaryIO, what: str, limits: BombLimits | None = None) -> Decompressed:
    """Sniff ``raw``'s compression from its first bytes and return a decompressing reader."""
    head = b""
    while len(head) < 6:
        chunk = raw.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    return Decompressed(_Prefixed(head, raw), detect(head), what, limits)
