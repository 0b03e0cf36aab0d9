"""Parallel gzip (pigz's scheme): one gzip member, compressed in blocks on a thread pool.

The input is cut into fixed ``block`` pieces. Each piece is raw-deflated on its own thread with
the previous piece's last 32 KiB as preset dictionary (``zdict``) and ends with a sync flush
(``Z_SYNC_FLUSH``: byte-aligned, the stream continues), so the pieces concatenate into ONE
deflate stream; one gzip header (no name, mtime 0) goes first, an empty final block and the
trailer (CRC-32 of the whole input, its size mod 2**32) last. Any gzip reader takes the result
as a single member — unlike concatenated members, which some readers stop after — and, for the
same input, level, block size and backend, the bytes are always the same (the push digest cache
relies on that).

Backend: ISA-L (``isal`` package) when installed, else zlib. Both release the GIL while
compressing, so ``workers`` threads use ``workers`` cores. Levels are the backend's: ISA-L 0–3,
zlib 0–9. :func:`default_level` is the one chosen for layer pushes (see its docstring).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

_isal: Any
try:  # optional at run time (listed in pyproject's dependencies)
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None

BLOCK = 1024 * 1024
WINDOW = 32 * 1024
HAVE_ISAL = _isal is not None
BACKEND = "isal" if HAVE_ISAL else "zlib"
_OS_UNKNOWN = 255


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def default_level() -> int:
    """The level for layer pushes. Measured on a 221 MB, 7k-file layer (half text, half random,
    one core each): ISA-L level 3 ~300 MB/s, ratio 0.262 (zlib level 1: ~90 MB/s, 0.265; zlib 6,
    what ``docker push`` uses via Go's default: ~50 MB/s, about the same size); ISA-L 1 is faster
    still (~500+ MB/s) but 60% larger (0.42) — a poor trade for a blob that is uploaded, stored
    and downloaded again. So ISA-L 3, or zlib 1 without ISA-L (a few % larger than zlib 6, ~2x
    faster)."""
    return 3 if _isal is not None else 1


def header() -> bytes:
    """A gzip member header: deflate, no flags, mtime 0, no extra flags, OS unknown."""
    return b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes((0, _OS_UNKNOWN))


def _mod() -> Any:
    return _isal if _isal is not None else zlib


def _deflate(mod: Any, level: int, block: bytes, zdict: bytes) -> tuple[bytes, int]:
    if zdict:
        c = mod.compressobj(level, mod.DEFLATED, -15, zdict=zdict)
    else:
        c = mod.compressobj(level, mod.DEFLATED, -15)
    out: bytes = c.compress(block) + c.flush(mod.Z_SYNC_FLUSH)
    crc = int(mod.crc32(block)) if mod is _isal else 0  # zlib: summed in order by the caller
    return out, crc


def gzip_stream(src: Readable, *, level: int | None = None, workers: int | None = None,
                block: int = BLOCK, head: bytes = b"") -> Iterator[bytes]:
    """Yield ``head + src``'s content gzip-compressed, as one member, in order.

    ``src`` is read in the calling thread (``block`` bytes at a time, as the consumer pulls);
    at most ``4 * workers`` blocks are in flight. Closing the generator early stops the work.

    Raises:
        ValueError: ``level`` out of the backend's range; whatever ``src.read`` raises.
    """
    mod = _mod()
    level = default_level() if level is None else level
    top = 3 if mod is _isal else 9
    if not 0 <= level <= top:
        raise ValueError(f"gzip level {level} out of range 0..{top} for {mod.__name__}")
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    crc, size, prev = 0, 0, b""
    yield header()
    pending: deque[tuple[Future[tuple[bytes, int]], bytes]] = deque()

    def drain_one() -> bytes:
        nonlocal crc
        fut, data = pending.popleft()
        out, part = fut.result()
        if mod is _isal:
            crc = int(mod.crc32_combine(crc, part, len(data)))
        else:
            crc = zlib.crc32(data, crc)
        return out

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgzip")
    try:
        data = head + src.read(block - len(head)) if head else src.read(block)
        while data:
            while len(data) < block:  # short reads (pipes): fill the block, keep bytes stable
                more = src.read(block - len(data))
                if not more:
                    break
                data += more
            size += len(data)
            pending.append((pool.submit(_deflate, mod, level, data, prev[-WINDOW:]), data))
            prev = data
            while len(pending) >= 4 * workers or (pending and pending[0][0].done()):
                yield drain_one()
            data = src.read(block)
        while pending:
            yield drain_one()
    finally:
        for fut, _ in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    yield mod.compressobj(level, mod.DEFLATED, -15).flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def compress_bytes(data: bytes, **kw: Any) -> bytes:
    """``data`` compressed with :func:`gzip_stream` (tests, small blobs)."""
    import io

    return b"".join(gzip_stream(io.BytesIO(data), **kw))
