"""Overlay mechanics of the sim's union filesystem: lookups through a stack of trees, copy-up,
whiteouts and opaque dirs, symlink resolution inside the root, dispatch into sub-mounts.

The public API is :class:`sim.fs.FsView`; this module is its engine room.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from sim.fsnodes import (
    Dir,
    Node,
    Symlink,
    Tree,
    Whiteout,
    attach,
    clone,
    copy_meta,
    detach,
    oserror,
    split_path,
)

if TYPE_CHECKING:
    from sim.faults import Faults
    from sim.fs import FsView

MAX_SYMLINKS = 40
Parts = tuple[str, ...]


@dataclass
class _Hit:
    """A looked-up path in one view: the visible node, the index of the tree it comes from, and,
    for a dir, the stack of ``(tree index, Dir)`` that merge into it (top first)."""

    node: Node
    idx: int
    stack: list[tuple[int, Dir]] = field(default_factory=list)


class UnionLookup:
    """Overlay lookup and copy-up mechanics over a stack of trees; ``FsView`` adds the API.

    Args:
        layers: read-only trees, top first.
        upper: the writable tree, or None for a read-only view.
        readonly: refuse every change with ``OSError(EROFS)`` even if ``upper`` is set.
        world_faults: if given, ``faults.check("write", path)`` is called before each file write.
        clock: wall-clock seconds for mtimes of new or changed nodes (default: always 0.0).
    """

    def __init__(self, layers: list[Tree], upper: Tree | None, readonly: bool = False,
                 world_faults: Faults | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.layers = list(layers)
        self.upper = upper
        self.readonly = readonly
        self.faults = world_faults
        self.clock = clock or (lambda: 0.0)
        self._trees = ([upper] if upper is not None else []) + self.layers
        self._mounts: dict[Parts, FsView] = {}
        self._empty_root = Dir()

    # ---- lookup -------------------------------------------------------------------------
    def _root_hit(self) -> _Hit:
        stack: list[tuple[int, Dir]] = []
        for i, tree in enumerate(self._trees):
            stack.append((i, tree.root))
            if tree.root.opaque:
                break
        if not stack:
            return _Hit(self._empty_root, -1, [])
        return _Hit(stack[0][1], stack[0][0], stack)

    @staticmethod
    def _child(parent: _Hit, name: str) -> _Hit | None:
        found: _Hit | None = None
        for i, d in parent.stack:
            child = d.children.get(name)
            if child is None:
                continue
            if found is None:
                if isinstance(child, Whiteout):
                    return None
                found = _Hit(child, i, [])
                if not isinstance(child, Dir):
                    return found
            elif not isinstance(child, Dir):
                break  # a whiteout or non-dir below a dir ends the merge
            found.stack.append((i, child))
            if child.opaque:
                break
        return found

    def _local(self, parts: Parts) -> _Hit | None:
        """Look up canonical ``parts`` in this view's own trees (no mounts, no symlinks)."""
        hit: _Hit | None = self._root_hit()
        for name in parts:
            if hit is None or not isinstance(hit.node, Dir):
                return None
            hit = self._child(hit, name)
        return hit

    def _owner(self, parts: Parts) -> tuple[FsView, Parts]:
        """The innermost view holding canonical ``parts`` and the path inside it."""
        best: Parts | None = None
        for mp in self._mounts:
            if parts[:len(mp)] == mp and (best is None or len(mp) > len(best)):
                best = mp
        if best is None:
            return cast("FsView", self), parts  # UnionLookup only exists as FsView's base
        return self._mounts[best]._owner(parts[len(best):])

    def _get(self, parts: Parts) -> _Hit | None:
        view, rest = self._owner(parts)
        return view._local(rest)

    def _resolve(self, path: str, follow: bool) -> tuple[Parts, _Hit | None]:
        """Canonical parts of ``path`` and what is there (None: only the last part is missing).

        Raises FileNotFoundError / NotADirectoryError for a missing / non-dir parent, ELOOP.
        """
        if not path:
            raise oserror(errno.ENOENT, path)
        todo = split_path(path)
        todo.reverse()
        done: list[str] = []
        links = 0
        hit: _Hit | None = self._get(())
        while todo:
            name = todo.pop()
            if hit is None:
                raise oserror(errno.ENOENT, path)
            if not isinstance(hit.node, Dir):
                raise oserror(errno.ENOTDIR, path)
            if name == "..":
                if done:
                    done.pop()
                hit = self._get(tuple(done))
                continue
            nxt = self._get((*done, name))
            if nxt is not None and isinstance(nxt.node, Symlink) and (todo or follow):
                links += 1
                if links > MAX_SYMLINKS:
                    raise oserror(errno.ELOOP, path)
                target = nxt.node.target
                if target.startswith("/"):
                    done = []
                todo.extend(reversed(split_path(target)))
                hit = self._get(tuple(done))
                continue
            done.append(name)
            hit = nxt
        return tuple(done), hit

    def _existing(self, path: str, follow: bool = True) -> tuple[Parts, _Hit]:
        parts, hit = self._resolve(path, follow)
        if hit is None:
            raise oserror(errno.ENOENT, path)
        return parts, hit

    @staticmethod
    def _names(hit: _Hit) -> set[str]:
        seen: set[str] = set()
        names: set[str] = set()
        for _, d in hit.stack:
            for name, child in d.children.items():
                if name not in seen:
                    seen.add(name)
                    if not isinstance(child, Whiteout):
                        names.add(name)
        return names

    # ---- changes (helpers) --------------------------------------------------------------
    def _writable(self, path: str) -> Tree:
        if self.readonly or self.upper is None:
            raise oserror(errno.EROFS, path)
        return self.upper

    def _upper_dir(self, parts: Parts, path: str) -> Dir:
        """The upper tree's dir at ``parts`` (a dir in the merged view), copying dirs up."""
        upper = self._writable(path)
        d = upper.root
        for n in range(len(parts)):
            child = d.children.get(parts[n])
            if not isinstance(child, Dir):
                hit = self._local(parts[:n + 1])
                if hit is None or not isinstance(hit.node, Dir):
                    raise oserror(errno.ENOENT, path)
                child = copy_meta(hit.node, Dir())
                attach(d, parts[n], child)
            d = child
        return d

    def _lower_has(self, parent: Parts, name: str) -> bool:
        """Would ``parent/name`` still be visible if the upper tree had nothing there?"""
        hit = self._local(parent)
        if hit is None:
            return False
        for i, d in hit.stack:
            if self.upper is not None and i == 0:
                continue
            child = d.children.get(name)
            if child is not None:
                return not isinstance(child, Whiteout)
        return False

    def _copy_up(self, parts: Parts, path: str) -> Node:
        """The upper node for the existing ``parts``, copied up from below if needed."""
        hit = self._local(parts)
        if hit is None:
            raise oserror(errno.ENOENT, path)
        if isinstance(hit.node, Dir):
            return self._upper_dir(parts, path)
        parent = self._upper_dir(parts[:-1], path)
        if parent.children.get(parts[-1]) is hit.node:
            return hit.node
        node = clone(hit.node)
        attach(parent, parts[-1], node)
        return node

    def _remove(self, parts: Parts, path: str) -> None:
        """Drop ``parts`` from the merged view: whiteout if a lower tree still has it."""
        parent = self._upper_dir(parts[:-1], path)
        name = parts[-1]
        if self._lower_has(parts[:-1], name):
            attach(parent, name, Whiteout())
        else:
            detach(parent, name)
        parent.mtime = self.clock()

    def _place(self, parts: Parts, node: Node, path: str) -> None:
        """Put a new ``node`` at ``parts``; a dir over a lower name becomes opaque."""
        parent = self._upper_dir(parts[:-1], path)
        name = parts[-1]
        if isinstance(node, Dir) and (isinstance(parent.children.get(name), Whiteout)
                                      or self._lower_has(parts[:-1], name)):
            node.opaque = True
        attach(parent, name, node)
        parent.mtime = self.clock()

    def _deep_copy(self, parts: Parts, top: bool = True) -> Node:
        """A copy of the merged subtree at ``parts``; the top dir is opaque (nothing below it
        may show through), so the dirs inside it need not be."""
        hit = self._local(parts)
        assert hit is not None
        if not isinstance(hit.node, Dir):
            return clone(hit.node)
        d = copy_meta(hit.node, Dir(opaque=top))
        for name in sorted(self._names(hit)):
            attach(d, name, self._deep_copy((*parts, name), top=False))
        return d
