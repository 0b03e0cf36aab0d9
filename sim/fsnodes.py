"""Nodes of the sim's in-memory filesystem, and one layer tree (see ``sim.fs`` for the union view).

A :class:`Tree` is one snapshot's own content: an image layer, or the writable upper of a
container. Nodes are plain mutable objects compared by identity:

* a hardlink is the *same* :class:`File` object under two names of one tree (``nlink`` counts
  them; it is maintained by :func:`attach` / :func:`detach`, the only ways to link or unlink);
* file content is an immutable ``bytes`` object, freely shared between trees (copy-up is free);
* a :class:`Whiteout` in an upper tree hides the same name in the trees below; a :class:`Dir`
  with ``opaque=True`` hides everything below it.

Errors are built with :func:`oserror`: real ``OSError`` subclasses with errno and ``filename``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

S_PERM = 0o7777  # the mode bits a node keeps: permissions plus setuid/setgid/sticky


def oserror(code: int, path: str | None = None, message: str | None = None) -> OSError:
    """``OSError(code, message, path)``; Python picks the subclass (ENOENT → FileNotFoundError)."""
    msg = message or os.strerror(code)
    if path is None:
        return OSError(code, msg)
    return OSError(code, msg, path)


@dataclass(eq=False, slots=True)
class Node:
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0

    @property
    def kind(self) -> str:
        raise NotImplementedError


@dataclass(eq=False, slots=True)
class Dir(Node):
    mode: int = 0o755
    children: dict[str, Node] = field(default_factory=dict)
    opaque: bool = False

    @property
    def kind(self) -> str:
        return "dir"


@dataclass(eq=False, slots=True)
class File(Node):
    data: bytes = b""
    nlink: int = 0  # names of this node in its tree (hardlinks)

    @property
    def kind(self) -> str:
        return "file"


@dataclass(eq=False, slots=True)
class Symlink(Node):
    mode: int = 0o777
    target: str = ""

    @property
    def kind(self) -> str:
        return "symlink"


@dataclass(eq=False, slots=True)
class Special(Node):
    """A character or block device, or a fifo."""

    dev_kind: str = "fifo"  # "char", "block" or "fifo"
    major: int = 0
    minor: int = 0

    @property
    def kind(self) -> str:
        return self.dev_kind


@dataclass(eq=False, slots=True)
class Whiteout(Node):
    mode: int = 0

    @property
    def kind(self) -> str:
        return "whiteout"


@dataclass(frozen=True, slots=True)
class FileStat:
    """What ``stat``/``lstat`` report. ``mode`` holds the permission bits only (``& 0o7777``)."""

    kind: str  # "file", "dir", "symlink", "char", "block", "fifo"
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    nlink: int


def stat_of(node: Node) -> FileStat:
    size, nlink = 0, 1
    if isinstance(node, File):
        size, nlink = len(node.data), max(node.nlink, 1)
    elif isinstance(node, Symlink):
        size = len(node.target.encode())
    elif isinstance(node, Dir):
        size = 4096
        nlink = 2 + sum(1 for c in node.children.values() if isinstance(c, Dir))
    return FileStat(node.kind, node.mode & S_PERM, node.uid, node.gid, size, node.mtime, nlink)


def release(node: Node) -> None:
    """Account for ``node`` (and, for a dir, its whole subtree) leaving its tree."""
    if isinstance(node, File):
        node.nlink -= 1
    elif isinstance(node, Dir):
        for child in node.children.values():
            release(child)


def detach(parent: Dir, name: str) -> Node | None:
    """Remove ``name`` from ``parent`` (no whiteout); return the node that was there."""
    old = parent.children.pop(name, None)
    if old is not None:
        release(old)
    return old


def attach(parent: Dir, name: str, node: Node) -> None:
    """Put ``node`` at ``name`` in ``parent``, replacing (and releasing) what was there."""
    old = parent.children.get(name)
    if old is node:
        return
    if old is not None:
        release(old)
    parent.children[name] = node
    if isinstance(node, File):
        node.nlink += 1


N = TypeVar("N", bound=Node)


def copy_meta(src: Node, dst: N) -> N:
    dst.mode, dst.uid, dst.gid, dst.mtime = src.mode, src.uid, src.gid, src.mtime
    return dst


def clone(node: Node) -> Node:
    """A copy of a non-directory node (file content shared), not linked anywhere."""
    if isinstance(node, File):
        return copy_meta(node, File(data=node.data))
    if isinstance(node, Symlink):
        return copy_meta(node, Symlink(target=node.target))
    if isinstance(node, Special):
        return copy_meta(node, Special(dev_kind=node.dev_kind, major=node.major, minor=node.minor))
    if isinstance(node, Whiteout):
        return Whiteout()
    raise TypeError(f"cannot clone {node.kind}")


class Tree:
    """One layer (or upper) tree: a root :class:`Dir` and helpers over it."""

    def __init__(self, root: Dir | None = None) -> None:
        self.root = root if root is not None else Dir()

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every ``(path, node)`` below the root, sorted, parents before children (root excluded)."""
        yield from _walk(self.root, "")

    def du(self) -> int:
        """Bytes of file content in this tree, each hardlinked node counted once."""
        seen: set[int] = set()
        total = 0
        for _, node in self.walk():
            if isinstance(node, File) and id(node) not in seen:
                seen.add(id(node))
                total += len(node.data)
        return total

    def count(self) -> int:
        return sum(1 for _ in self.walk())


def _walk(d: Dir, prefix: str) -> Iterator[tuple[str, Node]]:
    for name in sorted(d.children):
        node = d.children[name]
        path = f"{prefix}/{name}"
        yield path, node
        if isinstance(node, Dir):
            yield from _walk(node, path)


def split_path(path: str) -> list[str]:
    """``"/a//b/./c/"`` → ``["a", "b", "c"]`` (``..`` kept; resolution handles it)."""
    return [p for p in path.split("/") if p and p != "."]


def check_name(name: str, path: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise oserror(errno.EINVAL, path)
