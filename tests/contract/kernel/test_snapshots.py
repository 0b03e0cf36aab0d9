"""Contract: the Snapshots role (engine.kernel.Snapshots), the same on every backend.

Only protocol methods are used, plus ``kernel.faults`` (sim-only tests) and the ``hostfs``
adapter for changes made inside a mounted snapshot.
"""

from __future__ import annotations

import errno
import io
import tarfile
from typing import Any

import pytest

from engine.kernel import LayerLimits, SnapshotInfo, SnapshotKind
from tests.contract.kernel.conftest import HostFs, Tidy
from tests.contract.kernel.layers import make_tar, tar_names

BASE = make_tar(
    ("dir", "etc"),
    ("file", "etc/hostname", b"base\n"),
    ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ("dir", "bin"),
    ("file", "bin/busybox", b"\x7fELF busybox", 0o755),
    ("hardlink", "bin/sh", "bin/busybox"),
    ("dir", "usr"),
    ("dir", "usr/lib"),
    ("file", "usr/lib/libc.so", b"libc"),
    ("symlink", "lib", "/usr/lib"),
    ("dir", "a"),
    ("file", "a/x", b"ax"),
    ("file", "a/y", b"ay"),
    ("dir", "b"),
    ("file", "b/z", b"bz"),
    ("dir", "c"),
    ("file", "c/old", b"c-old"),
)
BASE_SIZE = sum(len(d) for d in (b"base\n", b"root:x:0:0:root:/root:/bin/sh\n", b"\x7fELF busybox",
                                 b"libc", b"ax", b"ay", b"bz", b"c-old"))


def errno_of(exc: pytest.ExceptionInfo[OSError]) -> int | None:
    return exc.value.errno


async def keys(kernel: Any) -> set[str]:
    return {i.key for i in await kernel.list()}


async def base(kernel: Any, key: str = "base") -> SnapshotInfo:
    return await kernel.apply_layer(key, None, io.BytesIO(BASE))


# ---- apply_layer ---------------------------------------------------------------------------

async def test_apply_layer_commits_a_snapshot(kernel: Any, tidy: Tidy) -> None:
    info = await base(kernel)
    assert info == SnapshotInfo("base", SnapshotKind.COMMITTED, None, BASE_SIZE)
    assert await kernel.stat("base") == info
    assert info in await kernel.list()
    await kernel.remove("base")
    assert await kernel.list() == []


async def test_apply_layer_over_a_parent(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    info = await kernel.apply_layer("top", "base", io.BytesIO(make_tar(("file", "etc/hostname", b"top\n"))))
    assert (info.kind, info.parent, info.size) == (SnapshotKind.COMMITTED, "base", 4)
    t = await tidy.mount("top")
    assert await kernel.read_file(t, "/etc/hostname") == b"top\n"
    assert (await kernel.read_file(t, "/etc/passwd")).startswith(b"root:")
    await kernel.unmount(t)
    await kernel.remove("top")
    await kernel.remove("base")


async def test_apply_layer_existing_key(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    with pytest.raises(FileExistsError):
        await kernel.apply_layer("base", None, io.BytesIO(BASE))
    await kernel.prepare("act", None)
    with pytest.raises(FileExistsError):
        await kernel.apply_layer("act", None, io.BytesIO(BASE))
    assert await keys(kernel) == {"base", "act"}
    await kernel.remove("act")
    await kernel.remove("base")


async def test_apply_layer_missing_parent(kernel: Any, tidy: Tidy) -> None:
    with pytest.raises(FileNotFoundError):
        await kernel.apply_layer("x", "nope", io.BytesIO(BASE))
    assert await kernel.list() == []


async def test_apply_layer_strips_leading_slash(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("l", None, io.BytesIO(make_tar(("dir", "/etc"), ("file", "/etc/abs", b"ok"))))
    t = await tidy.mount("l")
    assert await kernel.read_file(t, "/etc/abs") == b"ok"
    await kernel.unmount(t)
    await kernel.remove("l")


async def test_apply_layer_entries_without_parent_dirs(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("l", None, io.BytesIO(make_tar(("file", "deep/er/file", b"d"))))
    t = await tidy.mount("l")
    assert await kernel.read_file(t, "/deep/er/file") == b"d"
    await kernel.unmount(t)
    await kernel.remove("l")


async def test_apply_layer_accepts_fifos_and_symlinks_pointing_anywhere(kernel: Any, tidy: Tidy) -> None:
    tar = make_tar(("dir", "etc"), ("file", "etc/hostname", b"inside"), ("fifo", "etc/fifo"),
                   ("symlink", "etc/localtime", "/usr/share/zoneinfo/UTC"),
                   ("symlink", "etc/up", "../../../../../../etc/hostname"))
    await kernel.apply_layer("l", None, io.BytesIO(tar))
    t = await tidy.mount("l")
    # symlinks resolve inside the mounted root, never on the host
    assert await kernel.read_file(t, "/etc/up") == b"inside"
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/etc/localtime")
    await kernel.unmount(t)
    await kernel.remove("l")


HOSTILE = {
    "dotdot": (make_tar(("file", "../escape", b"x")), "../escape"),
    "dotdot-deep": (make_tar(("dir", "a"), ("file", "a/../../escape", b"x")), "a/../../escape"),
    "hardlink-outside": (make_tar(("hardlink", "pw", "../../../etc/passwd")), "pw"),
    "hardlink-missing": (make_tar(("hardlink", "pw", "not/there")), "pw"),
    "char-device": (make_tar(("char", "dev/mem", 1, 1)), "dev/mem"),
    "block-device": (make_tar(("block", "dev/sda", 8, 0)), "dev/sda"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_apply_layer_refuses_hostile_entries(kernel: Any, tidy: Tidy, case: str) -> None:
    await base(kernel)
    before = await kernel.list()
    data, entry = HOSTILE[case]
    good = make_tar(("file", "ok1", b"1"), ("dir", "d"), ("file", "d/ok2", b"2"))
    tar = _concat(good, data)  # the hostile entry comes after good ones: they must vanish too
    with pytest.raises(OSError) as exc:
        await kernel.apply_layer("evil", "base", io.BytesIO(tar))
    assert exc.value.errno == errno.EINVAL
    assert exc.value.filename == entry
    assert entry in str(exc.value)
    assert await kernel.list() == before
    await kernel.remove("base")


def _concat(first: bytes, second: bytes) -> bytes:
    """One tar stream with the members of ``first`` then ``second``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for src in (first, second):
            with tarfile.open(fileobj=io.BytesIO(src)) as tf:
                for m in tf:
                    dst.addfile(m, tf.extractfile(m) if m.isreg() else None)
    return out.getvalue()


def _truncated_mid_data() -> bytes:
    data = make_tar(("file", "big", b"z" * 5000))
    return data[:512 + 2000]


def _no_end_marker() -> bytes:
    data = make_tar(("file", "f", b"abc"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        end = tf.next().offset_data + 512  # type: ignore[union-attr]
    return data[:end]


def _corrupt_header() -> bytes:
    data = make_tar(("file", "f", b"abc"), ("file", "g", b"def"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    off = members[1].offset
    return data[:off] + b"\xff" * 512 + data[off + 512:]


@pytest.mark.parametrize("maker", [_truncated_mid_data, _no_end_marker, _corrupt_header,
                                   lambda: b"this is not a tar archive" * 40, lambda: b""],
                         ids=["mid-data", "no-end-marker", "corrupt-header", "garbage", "empty"])
async def test_apply_layer_refuses_corrupt_streams(kernel: Any, tidy: Tidy, maker: Any) -> None:
    with pytest.raises(OSError) as exc:
        await kernel.apply_layer("bad", None, io.BytesIO(maker()))
    assert exc.value.errno == errno.EINVAL
    assert await kernel.list() == []


def _pax_header_bomb() -> bytes:
    """A small file whose PAX extended header is 300 KB (it would be read into memory whole)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("f")
        ti.pax_headers = {"comment": "x" * 300_000}
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"1"))
    return buf.getvalue()


@pytest.mark.parametrize("limits,tar,err", [
    (LayerLimits(max_bytes=1000), make_tar(("file", "a", b"a" * 600), ("file", "b", b"b" * 600)),
     errno.EFBIG),
    (LayerLimits(max_entries=3), make_tar(*[("file", f"f{i}", b"x") for i in range(5)]), errno.EFBIG),
    (LayerLimits(max_path=50), make_tar(("dir", "d"), ("file", "d/" + "n" * 60, b"x")), errno.EINVAL),
    (LayerLimits(max_bytes=1000), _pax_header_bomb(), errno.EFBIG),
], ids=["bytes", "entries", "path", "pax-header"])
async def test_apply_layer_limits(kernel: Any, tidy: Tidy, limits: LayerLimits, tar: bytes,
                                  err: int) -> None:
    with pytest.raises(OSError) as exc:
        await kernel.apply_layer("bomb", None, io.BytesIO(tar), limits)
    assert exc.value.errno == err
    assert await kernel.list() == []
    # the same tar is fine without the limit
    await kernel.apply_layer("bomb", None, io.BytesIO(tar))
    await kernel.remove("bomb")


@pytest.mark.sim
async def test_apply_layer_enospc_on_third_write_leaves_nothing(kernel: Any, tidy: Tidy) -> None:
    kernel.faults.fail_next("write", errno.ENOSPC, after=2)
    tar = make_tar(*[("file", f"f{i}", b"data") for i in range(5)])
    with pytest.raises(OSError) as exc:
        await kernel.apply_layer("full", None, io.BytesIO(tar))
    assert exc.value.errno == errno.ENOSPC
    assert await kernel.list() == []
    assert kernel.faults.fired == [("write", errno.ENOSPC)]


# ---- overlay semantics -----------------------------------------------------------------------

async def test_whiteouts_and_opaque_dirs_hide_lower_content(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    await kernel.apply_layer("l2", "base", io.BytesIO(make_tar(
        ("whiteout", "a/x"), ("opaque", "b"), ("file", "b/new", b"bnew"), ("whiteout", "c"),
        ("char", "etc/passwd", 0, 0))))  # the overlayfs spelling of a whiteout
    await kernel.prepare("rw", "l2")
    t = await tidy.mount("rw")
    for gone in ("/a/x", "/b/z", "/c/old", "/etc/passwd"):
        with pytest.raises(FileNotFoundError):
            await kernel.read_file(t, gone)
    assert await kernel.read_file(t, "/a/y") == b"ay"
    assert await kernel.read_file(t, "/b/new") == b"bnew"
    await kernel.unmount(t)
    for k in ("rw", "l2", "base"):
        await kernel.remove(k)


async def test_upper_layer_shadows_lower(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    await kernel.apply_layer("l2", "base", io.BytesIO(make_tar(
        ("file", "a", b"a is a file now"), ("dir", "etc/hostname"))))
    t = await tidy.mount("l2")
    assert await kernel.read_file(t, "/a") == b"a is a file now"
    with pytest.raises(IsADirectoryError):
        await kernel.read_file(t, "/etc/hostname")
    await kernel.unmount(t)
    await kernel.remove("l2")
    await kernel.remove("base")


async def test_hardlinks_and_symlinks_in_layers(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    t = await tidy.mount("base")
    assert await kernel.read_file(t, "/bin/sh") == b"\x7fELF busybox"
    assert await kernel.read_file(t, "/lib/libc.so") == b"libc"  # /lib -> /usr/lib
    # ".." after a symlink climbs from the link's target, as on Linux: /usr/lib/.. = /usr
    assert await kernel.read_file(t, "/lib/../../etc/hostname") == b"base\n"
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/lib/../etc/hostname")
    await kernel.unmount(t)
    await kernel.remove("base")


async def test_copy_up_and_delete_in_active_snapshot(kernel: Any, tidy: Tidy, hostfs: HostFs) -> None:
    await base(kernel)
    await kernel.prepare("rw", "base")
    t = await tidy.mount("rw")
    assert (await kernel.stat("rw")).size == 0
    hostfs.write(t, "/etc/hostname", b"changed\n")
    hostfs.unlink(t, "/a/x")
    assert await kernel.read_file(t, "/etc/hostname") == b"changed\n"
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/a/x")
    assert (await kernel.stat("rw")).size == len(b"changed\n")
    # the lower layer is untouched
    t2 = await tidy.mount("base")
    assert await kernel.read_file(t2, "/etc/hostname") == b"base\n"
    assert await kernel.read_file(t2, "/a/x") == b"ax"
    await kernel.unmount(t2)
    await kernel.unmount(t)
    await kernel.remove("rw")
    await kernel.remove("base")


async def test_readonly_mounts(kernel: Any, tidy: Tidy, hostfs: HostFs) -> None:
    await base(kernel)
    await kernel.prepare("rw", "base")
    t = await tidy.mount("rw", readonly=True)
    with pytest.raises(OSError) as exc:
        hostfs.write(t, "/etc/hostname", b"no")
    assert exc.value.errno == errno.EROFS
    tc = await tidy.mount("base")  # a committed snapshot is read-only
    with pytest.raises(OSError) as exc:
        hostfs.write(tc, "/new", b"no")
    assert exc.value.errno == errno.EROFS
    for x in (t, tc):
        await kernel.unmount(x)
    await kernel.remove("rw")
    await kernel.remove("base")


# ---- prepare / mount / unmount ---------------------------------------------------------------

async def test_prepare(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    await kernel.prepare("rw", "base")
    assert await kernel.stat("rw") == SnapshotInfo("rw", SnapshotKind.ACTIVE, "base", 0)
    await kernel.prepare("empty", None)
    assert (await kernel.stat("empty")).parent is None
    with pytest.raises(FileExistsError):
        await kernel.prepare("rw", "base")
    with pytest.raises(FileNotFoundError):
        await kernel.prepare("x", "missing")
    with pytest.raises(OSError) as exc:
        await kernel.prepare("x", "rw")  # parent must be committed
    assert exc.value.errno == errno.EINVAL
    assert await keys(kernel) == {"base", "rw", "empty"}
    for k in ("rw", "empty", "base"):
        await kernel.remove(k)


async def test_mount_errors(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    with pytest.raises(FileNotFoundError):
        await kernel.mount("missing", tidy.target())
    t = await tidy.mount("base")
    with pytest.raises(OSError) as exc:
        await kernel.mount("base", t)
    assert exc.value.errno == errno.EBUSY
    t2 = await tidy.mount("base")  # one snapshot may be mounted twice
    assert await kernel.read_file(t2, "/a/y") == b"ay"
    await kernel.unmount(t)
    await kernel.unmount(t2)
    await kernel.remove("base")


async def test_unmount_errors(kernel: Any, tidy: Tidy) -> None:
    with pytest.raises(OSError) as exc:
        await kernel.unmount(tidy.target())
    assert exc.value.errno == errno.EINVAL
    await base(kernel)
    t = await tidy.mount("base")
    await kernel.unmount(t)
    with pytest.raises(OSError) as exc:
        await kernel.unmount(t)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/a/y")
    await kernel.remove("base")


@pytest.mark.sim
async def test_mount_fault_injection(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    kernel.faults.fail_next("mount", errno.EBUSY)
    t = tidy.target()
    with pytest.raises(OSError) as exc:
        await kernel.mount("base", t)
    assert exc.value.errno == errno.EBUSY
    await kernel.mount("base", t)  # only the next one failed
    await kernel.unmount(t)
    await kernel.remove("base")


# ---- read_file ----------------------------------------------------------------------------------

async def test_read_file(kernel: Any, tidy: Tidy) -> None:
    await base(kernel)
    t = await tidy.mount("base")
    assert await kernel.read_file(t, "/etc/passwd", limit=100) == b"root:x:0:0:root:/root:/bin/sh\n"
    with pytest.raises(OSError) as exc:
        await kernel.read_file(t, "/etc/passwd", limit=10)
    assert exc.value.errno == errno.EFBIG
    with pytest.raises(IsADirectoryError):
        await kernel.read_file(t, "/etc")
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/etc/shadow")
    with pytest.raises(FileNotFoundError):
        await kernel.read_file(t, "/nodir/file")
    await kernel.unmount(t)
    await kernel.remove("base")


# ---- diff ---------------------------------------------------------------------------------------

async def test_diff_errors(kernel: Any, tidy: Tidy) -> None:
    with pytest.raises(FileNotFoundError):
        await kernel.diff("missing", io.BytesIO())
    await base(kernel)
    with pytest.raises(OSError) as exc:
        await kernel.diff("base", io.BytesIO())
    assert exc.value.errno == errno.EINVAL
    await kernel.prepare("rw", "base")
    out = io.BytesIO()
    n = await kernel.diff("rw", out)
    assert n == len(out.getvalue()) and tar_names(out.getvalue()) == []
    await kernel.remove("rw")
    await kernel.remove("base")


async def test_diff_round_trip(kernel: Any, tidy: Tidy, hostfs: HostFs) -> None:
    await base(kernel)
    await kernel.prepare("rw", "base")
    t = await tidy.mount("rw")
    hostfs.write(t, "/etc/hostname", b"changed\n")          # copy-up
    hostfs.write(t, "/new", b"brand new")                    # new file
    hostfs.link(t, "/new", "/new-link")                      # hardlink
    hostfs.symlink(t, "/etc/hostname", "/hn")                # symlink
    hostfs.unlink(t, "/a/x")                                 # whiteout
    hostfs.unlink(t, "/c/old")
    hostfs.rmdir(t, "/c")
    hostfs.mkdir(t, "/c")                                    # opaque dir
    hostfs.write(t, "/c/fresh", b"fresh")
    hostfs.chmod(t, "/bin/busybox", 0o700)
    out = io.BytesIO()
    n = await kernel.diff("rw", out)
    data = out.getvalue()
    assert n == len(data)
    names = tar_names(data)
    assert {"etc/hostname", "new", "new-link", "hn", "a/.wh.x", "c/.wh..wh..opq", "c/fresh"} <= set(names)
    assert "a/y" not in names and "usr/lib/libc.so" not in names
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        link = tf.getmember("new-link") if "new-link" in tf.getnames() else tf.getmember("new")
        assert link.islnk()

    await kernel.apply_layer("committed", "base", io.BytesIO(data))
    t2 = await tidy.mount("committed")
    for path in ("/etc/hostname", "/new", "/new-link", "/hn", "/a/y", "/c/fresh", "/bin/sh",
                 "/lib/libc.so", "/etc/passwd"):
        assert await kernel.read_file(t2, path) == await kernel.read_file(t, path), path
    for path in ("/a/x", "/c/old"):
        with pytest.raises(FileNotFoundError):
            await kernel.read_file(t2, path)
    await kernel.unmount(t2)
    await kernel.unmount(t)
    for k in ("committed", "rw", "base"):
        await kernel.remove(k)


# ---- remove / stat / list -------------------------------------------------------------------------

async def test_remove(kernel: Any, tidy: Tidy) -> None:
    with pytest.raises(FileNotFoundError):
        await kernel.remove("missing")
    await base(kernel)
    await kernel.prepare("rw", "base")
    with pytest.raises(OSError) as exc:
        await kernel.remove("base")  # has a child
    assert exc.value.errno == errno.EBUSY
    t = await tidy.mount("rw")
    with pytest.raises(OSError) as exc:
        await kernel.remove("rw")  # mounted
    assert exc.value.errno == errno.EBUSY
    await kernel.unmount(t)
    await kernel.remove("rw")
    await kernel.remove("base")
    with pytest.raises(FileNotFoundError):
        await kernel.stat("base")
    assert await kernel.list() == []


async def test_a_big_file_is_content_not_a_header_bomb(kernel: Any, tidy: Tidy) -> None:
    """A layer holding one file larger than the header cap (16 MiB) unpacks fine."""
    import hashlib
    import tarfile
    import tempfile

    size = 20 << 20
    with tempfile.TemporaryFile() as fh:
        with tarfile.open(fileobj=fh, mode="w") as tf:
            ti = tarfile.TarInfo("big.bin")
            ti.size = size
            tf.addfile(ti, io.BytesIO(bytes(range(256)) * (size // 256)))
        fh.seek(0)
        info = await kernel.apply_layer("big", None, fh)
    assert info.size >= size
    await kernel.prepare("big-rw", "big")
    t = await tidy.mount("big-rw")
    data = await kernel.read_file(t, "/big.bin", limit=size)
    assert hashlib.sha256(data).digest() == hashlib.sha256(bytes(range(256)) * (size // 256)).digest()
