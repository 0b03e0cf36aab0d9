"""A stack of open directories for iterative depth-first walks, holding a bounded number of fds.

The tree walkers (``pathops`` archive, ``diff``, ``layer_root.rmtree_at``) go through dir fds
opened with ``O_NOFOLLOW`` (a running container swapping a dir for a symlink cannot redirect
them) and use an explicit stack instead of recursion (a container can nest dirs deeper than
Python's recursion limit). One fd per level would make the depth a container can defeat us with
the process's ``RLIMIT_NOFILE`` (1024 by default: a 1500-deep tree failed with EMFILE in the
Debian VM). ``DirStack`` keeps only the ``window`` deepest levels open; a closed level is
reopened as ``..`` of its child when the walk climbs back to it, and must be the same directory
(device and inode) it was when it was first opened.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
WINDOW = 64
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class _Level(Generic[T]):
    fd: int | None  # None while closed to stay within the window
    dev: int
    ino: int
    owned: bool  # False for the caller's fd: never closed here
    item: T


class DirStack(Generic[T]):
    """Open directories (deepest last), each with the caller's ``item`` (name, iterator...).

    At most ``window`` of the owned fds stay open; ``top()`` is always open. Use as a context
    manager (or call ``close()``): every fd it owns is closed, whatever happened.
    """

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._levels: list[_Level[T]] = []

    def __len__(self) -> int:
        return len(self._levels)

    def __enter__(self) -> DirStack[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, fd: int, item: T, *, owned: bool = True) -> None:
        """Make ``fd`` (an open directory) the new top; the stack owns it unless ``owned=False``.

        On any error the fd is closed (if owned) and the stack is unchanged.
        """
        try:
            st = os.fstat(fd)
        except BaseException:
            if owned:
                os.close(fd)
            raise
        self._levels.append(_Level(fd, st.st_dev, st.st_ino, owned, item))
        old = len(self._levels) - 1 - self.window
        if old >= 0:
            level = self._levels[old]
            if level.owned and level.fd is not None:
                os.close(level.fd)
                level.fd = None

    def top(self) -> tuple[int, T]:
        """The deepest level's fd and item (``IndexError`` if empty)."""
        level = self._levels[-1]
        assert level.fd is not None  # the top is always open
        return level.fd, level.item

    def pop(self) -> T:
        """Close the top and return its item; the level below is reopened if it was closed.

        Raises:
            OSError: ESTALE when the reopened parent is no longer the directory it was (moved
                while we walked); the stack then holds the closed level no more.
        """
        level = self._levels.pop()
        assert level.fd is not None
        try:
            if self._levels and self._levels[-1].fd is None:
                self._reopen(self._levels[-1], level.fd)
        finally:
            if level.owned:
                os.close(level.fd)
        return level.item

    def _reopen(self, parent: _Level[T], child_fd: int) -> None:
        fd = os.open("..", _DIR, dir_fd=child_fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
            os.close(fd)
            raise OSError(errno.ESTALE, "a directory was moved while the tree was walked "
                                        f"(device {parent.dev}, inode {parent.ino})")
        parent.fd = fd

    def close(self) -> None:
        """Close every fd this stack owns and empty it."""
        while self._levels:
            level = self._levels.pop()
            if level.owned and level.fd is not None:
                os.close(level.fd)
