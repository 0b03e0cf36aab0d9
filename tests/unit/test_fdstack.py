"""``backends.linux.fdstack.DirStack``: a depth-first walk's open dirs, a bounded number of fds."""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Iterator

import pytest

from backends.linux.fdstack import DirStack

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def chain(top: pathlib.Path, depth: int) -> None:
    p = top
    for i in range(depth):
        p = p / f"d{i}"
        p.mkdir()


def test_walks_deeper_than_its_window_and_climbs_back(tmp_path: pathlib.Path) -> None:
    chain(tmp_path, 40)
    base = open_fds()
    root = os.open(tmp_path, DIR)
    left: list[int] = []
    most = 0
    try:
        with DirStack[tuple[int, Iterator[str]]](window=4) as stack:
            stack.push(root, (0, iter(os.listdir(root))), owned=False)
            while stack:
                fd, (depth, names) = stack.top()
                child = next(names, None)
                if child is not None:
                    sub = os.open(child, DIR, dir_fd=fd)
                    stack.push(sub, (depth + 1, iter(os.listdir(sub))))
                    most = max(most, open_fds() - base)
                    continue
                left.append(depth)
                stack.pop()
                if stack:  # every level climbed back to is the directory it was
                    fd, (depth, _) = stack.top()
                    want = os.stat(tmp_path.joinpath(*[f"d{i}" for i in range(depth)]))
                    assert os.path.samestat(os.fstat(fd), want)
    finally:
        os.close(root)
    assert left == list(range(40, -1, -1))
    assert most <= 4 + 1  # the window and the caller's root fd
    assert open_fds() == base


def test_a_dir_moved_while_walking_is_estale(tmp_path: pathlib.Path) -> None:
    chain(tmp_path, 6)
    (tmp_path / "elsewhere").mkdir()
    base = open_fds()
    with DirStack[int](window=2) as stack:
        fd = os.open(tmp_path, DIR)
        stack.push(fd, 0)
        for depth in range(6):
            stack.push(os.open(f"d{depth}", DIR, dir_fd=stack.top()[0]), depth + 1)
        # d0/d1/d2/d3 moves away: climbing from it reaches "elsewhere", not d0/d1/d2
        os.rename(tmp_path / "d0/d1/d2/d3", tmp_path / "elsewhere/d3")
        stack.pop()
        stack.pop()
        with pytest.raises(OSError) as ei:
            stack.pop()
        assert ei.value.errno == errno.ESTALE
    assert open_fds() == base
