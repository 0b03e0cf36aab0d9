"""Contract: ``Snapshots.bind_layer`` — a layer unpacked without a parent ("staged"), bound
later to its real key and parent, is the same as the layer applied there directly.

Observed through the protocol only (``mount`` + ``read_file``, and ``path_stat`` of the
optional PathOps role, which both backends have).
"""

from __future__ import annotations

import errno
import io
from typing import Any

import pytest

from engine.kernel import SnapshotKind
from tests.contract.kernel.conftest import Tidy
from tests.contract.kernel.layers import make_tar

PARENT = make_tar(
    ("dir", "usr", 0o750),
    ("dir", "usr/lib", 0o700),
    ("file", "usr/lib/libc.so", b"libc"),
    ("file", "etc", b"not a dir"),
)
# no entries for usr/, usr/lib/, usr/share/, opt/ …: they are implied by the files below them
CHILD = make_tar(
    ("file", "usr/lib/libz.so", b"libz"),
    ("file", "usr/share/doc/README", b"read me"),
    ("file", "opt/tool/bin/tool", b"tool", 0o755),
    ("dir", "srv", 0o711),
    ("file", "srv/x", b"x"),
)
IMPLIED = ("/usr", "/usr/lib", "/usr/share", "/usr/share/doc", "/opt", "/opt/tool", "/srv")


async def _stats(kernel: Any, tidy: Tidy, key: str) -> dict[str, tuple[str, int, float]]:
    t = await tidy.mount(key)
    try:
        out = {}
        for p in IMPLIED:
            st = await kernel.path_stat(t, p)
            out[p] = (st.kind, st.mode, st.mtime)
        assert await kernel.read_file(t, "/usr/lib/libc.so") == b"libc"
        assert await kernel.read_file(t, "/usr/lib/libz.so") == b"libz"
        assert await kernel.read_file(t, "/opt/tool/bin/tool") == b"tool"
        return out
    finally:
        await kernel.unmount(t)


async def test_bind_equals_direct_apply(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("base", None, io.BytesIO(PARENT))
    await kernel.apply_layer("direct", "base", io.BytesIO(CHILD))
    staged = await kernel.apply_layer("staged", None, io.BytesIO(CHILD))
    assert staged.parent is None
    info = await kernel.bind_layer("staged", "bound", "base")
    assert (info.key, info.kind, info.parent) == ("bound", SnapshotKind.COMMITTED, "base")
    assert info.size == (await kernel.stat("direct")).size
    keys = {i.key for i in await kernel.list()}
    assert "staged" not in keys and {"base", "direct", "bound"} <= keys
    direct, bound = await _stats(kernel, tidy, "direct"), await _stats(kernel, tidy, "bound")
    # dirs the parent lacks get the time of the unpack: compare their kind and mode only
    assert {p: v[:2] for p, v in bound.items()} == {p: v[:2] for p, v in direct.items()}
    assert bound["/usr"] == direct["/usr"] and bound["/usr/lib"] == direct["/usr/lib"]
    assert bound["/usr"][1] == 0o750 and bound["/usr/lib"][1] == 0o700  # the parent's dirs
    assert bound["/srv"][1] == 0o711  # its own entry wins


async def test_bind_without_parent_is_a_rename(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("staged", None, io.BytesIO(CHILD))
    info = await kernel.bind_layer("staged", "layer", None)
    assert info.parent is None
    assert {i.key for i in await kernel.list()} == {"layer"}
    t = await tidy.mount("layer")
    assert await kernel.read_file(t, "/usr/share/doc/README") == b"read me"
    await kernel.unmount(t)


async def test_bind_errors_change_nothing(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("base", None, io.BytesIO(PARENT))
    await kernel.apply_layer("child", "base", io.BytesIO(CHILD))
    await kernel.apply_layer("staged", None, io.BytesIO(CHILD))
    with pytest.raises(FileNotFoundError):
        await kernel.bind_layer("nope", "x", None)
    with pytest.raises(FileNotFoundError):
        await kernel.bind_layer("staged", "x", "no-parent")
    with pytest.raises(FileExistsError):
        await kernel.bind_layer("staged", "child", "base")
    with pytest.raises(OSError) as e:
        await kernel.bind_layer("child", "x", None)  # it has a parent
    assert e.value.errno == errno.EINVAL
    await kernel.prepare("rw", "base")
    with pytest.raises(OSError) as e:
        await kernel.bind_layer("rw", "x", None)  # active
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        await kernel.bind_layer("staged", "x", "rw")  # active parent
    assert e.value.errno == errno.EINVAL
    t = await tidy.mount("staged")
    with pytest.raises(OSError) as e:
        await kernel.bind_layer("staged", "x", None)
    assert e.value.errno == errno.EBUSY
    await kernel.unmount(t)
    await kernel.prepare("rw2", "staged")
    with pytest.raises(OSError) as e:
        await kernel.bind_layer("staged", "x", None)
    assert e.value.errno == errno.EBUSY
    await kernel.remove("rw2")
    await kernel.remove("rw")
    assert {i.key for i in await kernel.list()} == {"base", "child", "staged"}
    assert (await kernel.stat("staged")).parent is None


async def test_staged_hardlink_into_a_parent_is_refused(kernel: Any) -> None:
    """Such a layer needs its parent while unpacking: staging it fails cleanly (EINVAL)."""
    layer = make_tar(("hardlink", "usr/lib/libc2.so", "usr/lib/libc.so"))
    with pytest.raises(OSError) as e:
        await kernel.apply_layer("staged", None, io.BytesIO(layer))
    assert e.value.errno == errno.EINVAL
    assert await kernel.list() == []


async def test_apply_layer_reads_a_pipe_fed_by_a_thread(kernel: Any) -> None:
    """``tar`` may be a pipe another thread fills while the layer arrives."""
    import threading

    from engine.images.pipe import Pipe

    pipe = Pipe(max_chunks=2)

    def feed() -> None:
        data = memoryview(CHILD)
        for i in range(0, len(data), 1000):
            pipe.write(bytes(data[i:i + 1000]))
        pipe.close()

    th = threading.Thread(target=feed)
    th.start()
    try:
        info = await kernel.apply_layer("piped", None, pipe)
    finally:
        pipe.detach()  # a tar reader stops at the end-of-archive marker, before the padding
        th.join()
    assert info.size == len(b"libz" + b"read me" + b"tool" + b"x")
    await kernel.remove("piped")
