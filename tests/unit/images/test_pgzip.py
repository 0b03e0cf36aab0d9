"""engine.images.pgzip: the push compressor's output is ONE gzip member that every reader takes,
the same bytes every time, with ISA-L and with the zlib fallback."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import zlib

import pytest

from engine.images import pgzip

DATA = os.urandom(300_000) + b"text " * 400_000 + os.urandom(5)


@pytest.fixture(params=["isal", "zlib"])
def gz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "isal" and not pgzip.HAVE_ISAL:
        pytest.skip("the isal package is not installed")
    if request.param == "zlib":
        monkeypatch.setattr(pgzip, "_isal", None)
    return str(request.param)


def test_one_member_every_reader_takes(gz: str) -> None:
    out = pgzip.compress_bytes(DATA, block=64 * 1024)
    d = zlib.decompressobj(31)
    assert d.decompress(out) == DATA and d.eof and d.unused_data == b""  # one member, nothing after
    assert gzip.decompress(out) == DATA
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-dc"], input=out, capture_output=True, check=True).stdout == DATA
    assert out[:4] == b"\x1f\x8b\x08\x00" and out[4:8] == b"\0\0\0\0"  # no name, mtime 0


def test_deterministic_whatever_the_worker_count_and_read_sizes(gz: str) -> None:
    class Dribble(io.BytesIO):  # short reads, like a pipe
        def read(self, n: int = -1) -> bytes:
            return super().read(min(n, 7000) if n and n > 0 else 7000)

    one = pgzip.compress_bytes(DATA, block=64 * 1024, workers=1)
    assert one == pgzip.compress_bytes(DATA, block=64 * 1024, workers=3)
    assert one == b"".join(pgzip.gzip_stream(Dribble(DATA), block=64 * 1024))
    assert one == b"".join(pgzip.gzip_stream(io.BytesIO(DATA[5:]), head=DATA[:5], block=64 * 1024))


def test_edges(gz: str) -> None:
    assert gzip.decompress(pgzip.compress_bytes(b"")) == b""
    assert gzip.decompress(pgzip.compress_bytes(b"x")) == b"x"
    for level in (0, pgzip.default_level()):
        assert gzip.decompress(pgzip.compress_bytes(DATA[:100_000], level=level)) == DATA[:100_000]
    with pytest.raises(ValueError, match="out of range"):
        pgzip.compress_bytes(b"x", level=99)


def test_closing_early_stops_the_workers() -> None:
    gen = pgzip.gzip_stream(io.BytesIO(DATA * 4), block=64 * 1024)
    next(gen)
    next(gen)
    gen.close()  # no thread left running, no error


def test_streams_sharing_the_pool_each_give_their_own_bytes(gz: str) -> None:
    """Streams that run at once share the process-wide pool (the earliest first, taking turns):
    each still gives exactly its own bytes, and one closed early leaves the others whole."""
    blobs = [DATA, DATA[::-1], DATA[: len(DATA) // 3]]
    gens = [pgzip.gzip_stream(io.BytesIO(b), block=64 * 1024) for b in blobs]
    dropped = pgzip.gzip_stream(io.BytesIO(DATA * 2), block=64 * 1024)
    next(dropped)
    next(dropped)
    closed = False
    outs: list[list[bytes]] = [[] for _ in gens]
    live = set(range(len(gens)))
    while live:  # pull from all of them in turn, as parallel uploads do
        for i in sorted(live):
            piece = next(gens[i], None)
            if piece is None:
                live.discard(i)
            else:
                outs[i].append(piece)
        if not closed and len(outs[0]) > 3:
            getattr(dropped, "close")()  # noqa: B009 - a generator (typed as an Iterator)
            closed = True
    for blob, out in zip(blobs, outs, strict=True):
        assert b"".join(out) == pgzip.compress_bytes(blob, block=64 * 1024, workers=1)
