"""A layer's size counted while it is unpacked equals the walk (``layers.du``) of what landed:
hardlinks (each inode once), sparse files (apparent size), whiteouts, replaced entries, a
hardlink to a parent layer's file (copy-up); the walk itself runs only when an entry replaced
a whole dir tree."""

from __future__ import annotations

import io
import os
import pathlib
import stat
import subprocess
from collections.abc import Callable

import pytest

from backends.linux import layers
from tests.contract.kernel.layers import make_tar
from tests.privileged.layers_kit import SnapKernel, layer_dir, run, snaps

pytestmark = pytest.mark.privileged
__all__ = ["snaps"]


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The roots ``layers.du`` walks from here on (the real walk still runs)."""
    seen: list[str] = []
    real: Callable[[str], int] = layers.du

    def du(root: str) -> int:
        seen.append(root)
        return real(root)

    monkeypatch.setattr(layers, "du", du)
    return seen


def _apply(k: SnapKernel, key: str, parent: str | None, data: bytes) -> int:
    size: int = run(k.apply_layer(key, parent, io.BytesIO(data))).size
    return size


def _walked(k: SnapKernel, key: str) -> int:
    """What ``du`` is meant to give, written out independently: apparent sizes of the regular
    files, each inode once."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(layer_dir(k, key)):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def test_counted_size_equals_the_walk_with_links_whiteouts_and_replacements(
        snaps: SnapKernel, walks: list[str]) -> None:
    base = make_tar(("dir", "d"), ("file", "d/a", b"a" * 1000), ("file", "d/gone", b"g" * 50),
                    ("file", "lower-only", b"L" * 777))
    assert _apply(snaps, "base", None, base) == 1827 == _walked(snaps, "base") == layers.du(
        str(layer_dir(snaps, "base")))
    walks.clear()  # the call just above
    top = make_tar(
        ("file", "f", b"x" * 300),
        ("hardlink", "f2", "f"), ("hardlink", "f3", "f"),  # one inode: counted once
        ("file", "f", b"y" * 10),  # replaces one link of three: the old inode stays (f2, f3)
        ("file", "r", b"r" * 400), ("file", "r", b"s" * 40),  # replaced, last link: 400 out
        ("file", "w", b"w" * 90), ("whiteout", "w"),  # made then whited out in the same layer
        ("whiteout", "d/gone"), ("opaque", "d"),
        ("file", "e", b""), ("symlink", "s", "f"), ("fifo", "p"),
        ("file", "todir", b"t" * 60), ("dir", "todir"),  # a file replaced by a dir
        ("hardlink", "up", "lower-only"),  # a parent layer's file: copied up, then linked
        ("hardlink", "up2", "up"),
    )
    size = _apply(snaps, "top", "base", top)
    assert size == 300 + 10 + 40 + 777 == _walked(snaps, "top")
    assert walks == []  # counted, not walked
    run(snaps.remove("top"))
    run(snaps.remove("base"))


def test_a_replaced_dir_tree_falls_back_to_the_walk(snaps: SnapKernel, walks: list[str]) -> None:
    data = make_tar(("dir", "t"), ("file", "t/x", b"1" * 123), ("dir", "t/sub"), ("file", "t/sub/y", b"2" * 5),
                    ("file", "t", b"3" * 7), ("file", "k", b"4" * 11))
    assert _apply(snaps, "l", None, data) == 18 == _walked(snaps, "l")
    assert len(walks) == 1
    run(snaps.remove("l"))


@pytest.mark.parametrize("fmt", ["posix", "gnu"])
def test_sparse_files_count_their_apparent_size(snaps: SnapKernel, walks: list[str], tmp_path: pathlib.Path,
                                                fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "hole", "wb") as fh:
        fh.truncate(5 << 20)
        fh.seek(3_000_000)
        fh.write(b"data")
    (src / "plain").write_bytes(b"p" * 33)
    os.link(src / "hole", src / "hole-link")
    tar = subprocess.run(["tar", "--sparse", f"--format={fmt}", "-C", str(src), "-cf", "-", "."],
                         check=True, capture_output=True).stdout
    assert _apply(snaps, "sparse", None, tar) == (5 << 20) + 33 == _walked(snaps, "sparse")
    assert walks == []
    run(snaps.remove("sparse"))
