"""The client-side extractor of ``wharfie cp``: nothing lands outside the destination."""

from __future__ import annotations

import io
import os
import pathlib
import tarfile

import pytest

from engine.cli.untar import UnsafeEntry, extract


def tar_of(*entries: tuple[str, str, bytes | str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(data)
            tf.addfile(ti)
    buf.seek(0)
    return buf


@pytest.fixture
def dest(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "outside").mkdir()
    d = tmp_path / "dest"
    d.mkdir()
    return d


def test_plain_tree_with_links(dest: pathlib.Path) -> None:
    extract(tar_of(("dir", "a", b""), ("file", "a/f", b"hi"), ("sym", "a/s", "f"), ("link", "a/h", "a/f")), str(dest))
    assert (dest / "a/f").read_bytes() == b"hi" and os.readlink(dest / "a/s") == "f"
    assert os.stat(dest / "a/h").st_ino == os.stat(dest / "a/f").st_ino


def test_dotdot_is_refused(dest: pathlib.Path) -> None:
    with pytest.raises(UnsafeEntry):
        extract(tar_of(("file", "../outside/x", b"evil")), str(dest))
    assert os.listdir(dest.parent / "outside") == []


def test_absolute_names_stay_inside(dest: pathlib.Path) -> None:
    extract(tar_of(("file", "/abs", b"x")), str(dest))
    assert (dest / "abs").read_bytes() == b"x"


def test_no_write_through_a_symlink_in_the_archive(dest: pathlib.Path) -> None:
    outside = dest.parent / "outside"
    with pytest.raises(UnsafeEntry):
        extract(tar_of(("sym", "link", str(outside)), ("file", "link/x", b"evil")), str(dest))
    assert os.listdir(outside) == []


def test_no_write_through_a_symlink_already_there(dest: pathlib.Path) -> None:
    outside = dest.parent / "outside"
    (outside / "target").write_bytes(b"keep")
    os.symlink(outside / "target", dest / "f")
    extract(tar_of(("file", "f", b"new")), str(dest))
    assert (outside / "target").read_bytes() == b"keep"  # the link was replaced, not followed
    assert not os.path.islink(dest / "f") and (dest / "f").read_bytes() == b"new"


def test_hardlink_to_outside_is_refused(dest: pathlib.Path) -> None:
    with pytest.raises(UnsafeEntry):
        extract(tar_of(("link", "h", "../outside/secret")), str(dest))


def test_long_symlink_chain_cannot_escape(dest: pathlib.Path) -> None:
    # the CVE-2025-4517 shape: a chain of symlinks whose resolution exceeds PATH_MAX
    entries: list[tuple[str, str, bytes | str]] = []
    name = ""
    for i in range(40):
        d = "d" * 200
        entries.append(("dir", f"{name}{d}", b""))
        entries.append(("sym", f"{name}l{i}", d))
        name = f"{name}{d}/"
    entries.append(("sym", "esc", "/".join(f"l{i}" for i in range(40)) + "/../" * 40 + "outside"))
    entries.append(("file", "esc/pwned", b"x"))
    with pytest.raises((UnsafeEntry, OSError)):
        extract(tar_of(*entries), str(dest))
    assert os.listdir(dest.parent / "outside") == []
