"""The push tar reader and the layer policy (pure: bytes in, verdicts out)."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.images.tarscan import Entry, LayerPolicy, ScanLimits, TarError, TarReader, clean_name, scan_file


def make(entries: list[tuple[str, bytes, bytes, str]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """(name, type, data, linkname) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, typ, data, link in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.size = typ, link, len(data) if typ == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
    return buf.getvalue()


def scan(data: bytes, chunk: int = 7, policy: bool = True, **limits: int) -> list[Entry]:
    seen: list[Entry] = []
    pol = LayerPolicy()

    def on_entry(e: Entry) -> None:
        if policy:
            pol(e)
        seen.append(e)

    r = TarReader(on_entry=on_entry, limits=ScanLimits(**limits))
    for i in range(0, len(data), chunk):
        r.feed(data[i:i + chunk])
    r.close()
    return seen


def test_reads_names_types_and_long_names() -> None:
    long = "d/" + "x" * 300
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        data = make([("d", tarfile.DIRTYPE, b"", ""), (long, tarfile.REGTYPE, b"abc", ""),
                     ("d/l", tarfile.SYMTYPE, b"", "/" + "t" * 200), ("d/h", tarfile.LNKTYPE, b"", long)],
                    fmt)
        got = scan(data, chunk=100)
        assert [(e.name.rstrip("/"), e.type) for e in got] == [
            ("d", b"5"), (long, b"0"), ("d/l", b"2"), ("d/h", b"1")]
        assert got[1].size == 3 and got[2].linkname == "/" + "t" * 200


def test_data_callback_gets_exact_content() -> None:
    data = make([("a", tarfile.REGTYPE, b"x" * 1000, ""), ("b", tarfile.REGTYPE, b"yz", "")])
    got: dict[str, bytes] = {}
    r = TarReader(on_data=lambda e, c: got.__setitem__(e.name, got.get(e.name, b"") + c))
    r.feed(data)
    r.close()
    assert got == {"a": b"x" * 1000, "b": b"yz"}


@pytest.mark.parametrize("cut", [100, 512, 700, 1536])
def test_truncation_is_detected(cut: int) -> None:
    data = make([("a", tarfile.REGTYPE, b"x" * 1000, "")])
    with pytest.raises(TarError, match="truncated|missing"):
        scan(data[:cut])


def test_missing_end_marker_and_empty() -> None:
    data = make([("a", tarfile.REGTYPE, b"x", "")])
    with pytest.raises(TarError):
        scan(data[:1024])
    with pytest.raises(TarError):
        scan(b"")


def test_corrupt_checksum() -> None:
    data = bytearray(make([("a", tarfile.REGTYPE, b"x", "")]))
    data[0] ^= 0x20
    with pytest.raises(TarError, match="checksum"):
        scan(bytes(data))


def test_limits() -> None:
    data = make([("a", tarfile.REGTYPE, b"x" * 100, ""), ("b", tarfile.REGTYPE, b"y" * 100, "")])
    with pytest.raises(TarError, match="exceeds"):
        scan(data, max_bytes=150)
    with pytest.raises(TarError, match="more than"):
        scan(data, max_entries=1)
    with pytest.raises(TarError, match="header bomb"):
        scan(make([("z" * 5000, tarfile.REGTYPE, b"", "")]), max_header=1024)
    with pytest.raises(TarError, match="longer"):
        scan(make([("z" * 5000, tarfile.REGTYPE, b"", "")]), max_path=4096)


@pytest.mark.parametrize("entries, why", [
    ([("../x", tarfile.REGTYPE, b"", "")], "escapes"),
    ([("a/../../x", tarfile.REGTYPE, b"", "")], "escapes"),
    ([("/etc/x", tarfile.REGTYPE, b"", "")], "absolute"),
    ([("l", tarfile.SYMTYPE, b"", "/etc"), ("l/passwd", tarfile.REGTYPE, b"", "")], "symlink"),
    ([("l", tarfile.SYMTYPE, b"", "."), ("h", tarfile.LNKTYPE, b"", "l/x")], "symlink"),
    ([("h", tarfile.LNKTYPE, b"", "../../etc/shadow")], "escapes"),
    ([("h", tarfile.LNKTYPE, b"", "/etc/shadow")], "absolute"),
    ([("d", tarfile.DIRTYPE, b"", ""), ("h", tarfile.LNKTYPE, b"", "d")], "directory"),
    ([("null", tarfile.CHRTYPE, b"", "")], "device"),
    ([("sda", tarfile.BLKTYPE, b"", "")], "device"),
    ([("a/.wh...", tarfile.REGTYPE, b"", "")], "whiteout"),
    ([("a/.wh..wh.plnk", tarfile.REGTYPE, b"", "")], "whiteout"),
])
def test_layer_policy_refuses(entries: list[tuple[str, bytes, bytes, str]], why: str) -> None:
    with pytest.raises(TarError, match=why):
        scan(make(entries))


def test_layer_policy_accepts_normal_layers() -> None:
    scan(make([("./", tarfile.DIRTYPE, b"", ""), ("./bin/", tarfile.DIRTYPE, b"", ""),
               ("./bin/busybox", tarfile.REGTYPE, b"elf", ""), ("./bin/sh", tarfile.SYMTYPE, b"", "busybox"),
               ("./bin/ash", tarfile.LNKTYPE, b"", "bin/busybox"), ("etc/.wh.old", tarfile.REGTYPE, b"", ""),
               ("var/.wh..wh..opq", tarfile.REGTYPE, b"", ""), ("lib", tarfile.SYMTYPE, b"", "/usr/lib"),
               ("up", tarfile.SYMTYPE, b"", "../../.."), ("fifo", tarfile.FIFOTYPE, b"", ""),
               ("x/../y", tarfile.REGTYPE, b"", "")]))


def test_scan_file_seeks_over_content() -> None:
    data = make([("a", tarfile.REGTYPE, b"x" * 100_000, ""), ("b", tarfile.REGTYPE, b"y", "")])
    names: list[str] = []
    scan_file(io.BytesIO(data), TarReader(on_entry=lambda e: names.append(e.name)))
    assert names == ["a", "b"]
    with pytest.raises(TarError):
        scan_file(io.BytesIO(data[:5000]), TarReader())


def test_clean_name() -> None:
    assert clean_name("./a//b/./c/", "e") == "a/b/c"
    assert clean_name("/a", "e", allow_absolute=True) == "a"
    assert clean_name("a/..", "e") == ""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abc/.", min_size=1, max_size=12), st.binary(max_size=600)),
                max_size=6), st.integers(1, 2000))
def test_reader_agrees_with_tarfile(files: list[tuple[str, bytes]], chunk: int) -> None:
    files = [(n, d) for n, d in files if n.strip("/.")]
    data = make([(n, tarfile.REGTYPE, d, "") for n, d in files])
    got = scan(data, chunk=chunk, policy=False)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        want = [(m.name, m.size) for m in tf.getmembers()]
    assert [(e.name, e.size) for e in got] == want
