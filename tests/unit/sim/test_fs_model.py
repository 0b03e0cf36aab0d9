"""Property: an overlay view behaves like a plain filesystem, across layer commits.

Random sequences of file operations run on an ``FsView`` and on a dict model of a plain
filesystem; results (value or errno) and the whole tree must agree after every step. ``commit``
turns the upper into a layer, either directly or — the interesting case — through
``diff_tar``/``apply_tar``, so every diff is checked to reproduce the view exactly.
"""

from __future__ import annotations

import errno
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import LayerLimits
from sim.fs import FsView
from sim.fsnodes import Tree
from sim.tario import apply_tar, diff_tar

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
datas = st.sampled_from([b"", b"x", b"yy", b"zzz"])

Model = dict[str, Any]  # path -> ("f", data, mode) | ("d", mode)


class ModelError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _parent(p: str) -> str:
    return p.rsplit("/", 1)[0] or "/"


def _kind(m: Model, p: str) -> str | None:
    return "d" if p == "/" else (m[p][0] if p in m else None)


def _walk_parents(m: Model, p: str) -> None:
    parts = p.strip("/").split("/")[:-1]
    for n in range(1, len(parts) + 1):
        k = _kind(m, "/" + "/".join(parts[:n]))
        if k is None:
            raise ModelError(errno.ENOENT)
        if k != "d":
            raise ModelError(errno.ENOTDIR)


def _existing(m: Model, p: str) -> str:
    _walk_parents(m, p)
    k = _kind(m, p)
    if k is None:
        raise ModelError(errno.ENOENT)
    return k


def _children(m: Model, p: str) -> list[str]:
    return [k for k in m if _parent(k) == p]


def model_apply(m: Model, op: tuple[Any, ...]) -> None:
    name, p = op[0], op[1]
    if name in ("write", "append"):
        _walk_parents(m, p)
        if _kind(m, p) == "d":
            raise ModelError(errno.EISDIR)
        old = m.get(p)
        data = (old[1] if old and name == "append" else b"") + op[2]
        m[p] = ("f", data, old[2] if old else 0o644)
    elif name == "mkdir":
        _walk_parents(m, p)
        if _kind(m, p) is not None:
            raise ModelError(errno.EEXIST)
        m[p] = ("d", 0o755)
    elif name == "unlink":
        if _existing(m, p) == "d":
            raise ModelError(errno.EISDIR)
        del m[p]
    elif name == "rmdir":
        if _existing(m, p) != "d":
            raise ModelError(errno.ENOTDIR)
        if _children(m, p):
            raise ModelError(errno.ENOTEMPTY)
        del m[p]
    elif name == "rmtree":
        _existing(m, p)
        for k in [k for k in m if k == p or k.startswith(p + "/")]:
            del m[k]
    elif name == "chmod":
        entry = m[p] if _existing(m, p) else None
        m[p] = (*entry[:-1], op[2])
    elif name == "rename":
        src, dst = p, op[2]
        sk = _existing(m, src)
        _walk_parents(m, dst)
        if src == dst:
            return
        if dst.startswith(src + "/"):
            raise ModelError(errno.EINVAL)
        dk = _kind(m, dst)
        if dk == "d" and sk != "d":
            raise ModelError(errno.EISDIR)
        if dk is not None and dk != "d" and sk == "d":
            raise ModelError(errno.ENOTDIR)
        if dk == "d" and _children(m, dst):
            raise ModelError(errno.ENOTEMPTY)
        m.pop(dst, None)
        for k in sorted(m):
            if k == src or k.startswith(src + "/"):
                m[dst + k[len(src):]] = m.pop(k)


def view_apply(v: FsView, op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "write":
        v.write(op[1], op[2])
    elif name == "append":
        v.write(op[1], op[2], append=True)
    elif name == "mkdir":
        v.mkdir(op[1])
    elif name == "unlink":
        v.unlink(op[1])
    elif name == "rmdir":
        v.rmdir(op[1])
    elif name == "rmtree":
        rmtree(v, op[1])
    elif name == "chmod":
        v.chmod(op[1], op[2])
    elif name == "rename":
        v.rename(op[1], op[2])


def rmtree(v: FsView, path: str) -> None:
    if v.stat(path, follow=False).kind != "dir":
        v.unlink(path)
        return
    for name in v.listdir(path):
        rmtree(v, f"{path}/{name}")
    v.rmdir(path)


# A lower layer with something at most paths, so deletes, whiteouts and opaque dirs happen early.
BASE = [("mkdir", "/a"), ("mkdir", "/a/a"), ("write", "/a/a/a", b"aaa"), ("write", "/a/a/b", b"aab"),
        ("write", "/a/b", b"ab"), ("mkdir", "/b"), ("write", "/b/a", b"ba"), ("mkdir", "/b/b"),
        ("write", "/c", b"c"), ("mkdir", "/b/c"), ("write", "/b/c/a", b"bca")]


def snapshot(v: FsView) -> Model:
    out: Model = {}
    for path, stat in v.walk():
        if stat.kind == "dir":
            out[path] = ("d", stat.mode)
        else:
            out[path] = ("f", v.read(path), stat.mode)
    return out


def commit(v: FsView, via_tar: bool) -> FsView:
    assert v.upper is not None
    if not via_tar:
        return FsView([v.upper, *v.layers], Tree())
    lowers = FsView(v.layers, None)
    buf = io.BytesIO()
    n = diff_tar(v.upper, lowers, buf)
    assert n == len(buf.getvalue())
    buf.seek(0)
    layer = Tree()
    apply_tar(layer, lowers, buf, LayerLimits())
    return FsView([layer, *v.layers], Tree())


def draw_op(data: st.DataObject, model: Model) -> tuple[Any, ...]:
    """An operation, its paths drawn mostly from what exists (so it does something)."""
    known = sorted(model) or ["/a"]
    path = st.one_of(st.sampled_from(known), paths, st.sampled_from(known).map(lambda p: p + "/a"))
    kind = data.draw(st.sampled_from(["write", "append", "mkdir", "unlink", "rmdir", "rmtree",
                                      "rename", "chmod", "commit"]))
    if kind in ("write", "append"):
        return (kind, data.draw(path), data.draw(datas))
    if kind == "rename":
        return (kind, data.draw(path), data.draw(path))
    if kind == "chmod":
        return (kind, data.draw(path), data.draw(st.sampled_from([0o600, 0o755])))
    if kind == "commit":
        return (kind, data.draw(st.booleans()))
    return (kind, data.draw(path))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["empty", "layer", "tar"]), st.integers(0, 40), st.data())
def test_overlay_view_matches_plain_fs_model(start: str, steps: int, data: st.DataObject) -> None:
    model: Model = {}
    view = FsView([], Tree())
    if start != "empty":
        for op in BASE:
            model_apply(model, op)
            view_apply(view, op)
        view = commit(view, via_tar=start == "tar")
    for _ in range(steps):
        op = draw_op(data, model)
        if op[0] == "commit":
            view = commit(view, via_tar=op[1])
            assert snapshot(view) == model
            continue
        expected: int | None = None
        try:
            model_apply(model, op)
        except ModelError as e:
            expected = e.code
        got: int | None = None
        try:
            view_apply(view, op)
        except OSError as e:
            got = e.errno
        assert got == expected, op
        assert snapshot(view) == model, op
    final = commit(view, via_tar=True)
    assert snapshot(final) == model
