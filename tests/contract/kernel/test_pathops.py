"""Contract: the proposed PathOps role (``engine.kernel_fs.PathOps``, ``docker cp``), on every backend.

The view is an active snapshot over a small base layer, mounted with ``tidy``. The escape tests
plant, inside the view, symlinks that would lead to a *host* canary dir if they were resolved on
the host (``ln -s / /escape``, ``../`` chains, absolute links to the canary's host path), then
read and write through them: the view changes, the canary never does. (On the sim the canary is
out of reach by construction; the same assertions hold.)
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import pathlib
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from engine.kernel import LayerLimits
from tests.contract.kernel.conftest import HostFs, Tidy
from tests.contract.kernel.layers import make_tar

BASE = make_tar(
    ("dir", "etc"),
    ("file", "etc/hostname", b"view\n"),
    ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o640),
    ("dir", "d"),
    ("file", "d/a", b"1\n"),
    ("dir", "d/e"),
    ("file", "d/e/b", b"2\n"),
    ("symlink", "d/l", "/d/a"),
    ("dir", "tmp", 0o1777),
)


@pytest.fixture
def canary(tmp_path: pathlib.Path) -> pathlib.Path:
    """A host dir no PathOps call may touch: ``secret`` inside, nothing else."""
    c = tmp_path / "canary"
    c.mkdir()
    (c / "secret").write_bytes(b"host secret\n")
    return c


def snapshot_of(d: pathlib.Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(d):
        for name in dirs + files:
            p = pathlib.Path(dirpath, name)
            out[str(p.relative_to(d))] = p.read_bytes() if p.is_file() and not p.is_symlink() else "node"
    return out


@pytest.fixture
def view(kernel: Any, tidy: Tidy, loop: asyncio.AbstractEventLoop) -> Iterator[str]:
    """A mounted active snapshot over ``BASE`` (``tidy`` unmounts and removes it afterwards)."""

    async def up() -> str:
        await kernel.apply_layer("base", None, io.BytesIO(BASE))
        await kernel.prepare("ctr", "base")
        return str(await tidy.mount("ctr"))

    yield loop.run_until_complete(up())


def members(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f is not None else m
    return out


async def archive(kernel: Any, t: str, path: str) -> dict[str, Any]:
    out = io.BytesIO()
    await kernel.archive(t, path, out)
    return members(out.getvalue())


async def read(kernel: Any, t: str, path: str) -> bytes:
    return bytes(await kernel.read_file(t, path))


# ---- path_stat -------------------------------------------------------------------------------

async def test_path_stat(kernel: Any, view: str) -> None:
    st = await kernel.path_stat(view, "/etc/passwd")
    assert (st.name, st.kind, st.mode, st.size) == ("passwd", "file", 0o640, 30)
    st = await kernel.path_stat(view, "/d/l")
    assert (st.name, st.kind, st.link_target) == ("l", "symlink", "/d/a")
    assert (await kernel.path_stat(view, "/d/e/")).kind == "dir"
    assert (await kernel.path_stat(view, "/")).kind == "dir"
    assert (await kernel.path_stat(view, "/")).name == "/"


async def test_path_stat_errors(kernel: Any, view: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        await kernel.path_stat(view, "/nope")
    with pytest.raises(FileNotFoundError):
        await kernel.path_stat(view, "/nope/deeper")
    with pytest.raises(NotADirectoryError):
        await kernel.path_stat(view, "/etc/passwd/x")
    with pytest.raises(OSError) as exc:
        await kernel.path_stat(str(tmp_path / "not-mounted"), "/")
    assert exc.value.errno == errno.EINVAL


# ---- archive ---------------------------------------------------------------------------------

async def test_archive_file_dir_and_contents(kernel: Any, view: str) -> None:
    assert await archive(kernel, view, "/d/a") == {"a": b"1\n"}
    got = await archive(kernel, view, "/d")
    assert got["d/a"] == b"1\n" and got["d/e/b"] == b"2\n" and got["d"].isdir()
    assert got["d/l"].issym() and got["d/l"].linkname == "/d/a"
    got = await archive(kernel, view, "/d/.")
    assert got["./a"] == b"1\n" and got["./e/b"] == b"2\n" and "." in got
    link = await archive(kernel, view, "/d/l")
    assert list(link) == ["l"] and link["l"].issym()
    with pytest.raises(FileNotFoundError):
        await archive(kernel, view, "/nope")


async def test_archive_sees_changes_of_the_view(kernel: Any, view: str, hostfs: HostFs) -> None:
    hostfs.write(view, "/tmp/new", b"fresh")
    hostfs.unlink(view, "/d/a")
    got = await archive(kernel, view, "/")
    assert got["./tmp/new"] == b"fresh" and "./d/a" not in got and got["./etc/hostname"] == b"view\n"


async def test_archive_symlinks_resolve_inside_the_view(kernel: Any, view: str, hostfs: HostFs,
                                                         canary: pathlib.Path) -> None:
    hostfs.symlink(view, "/", "/escape")
    hostfs.symlink(view, "../../../../../../../..", "/d/up")
    hostfs.symlink(view, str(canary), "/abs")
    before = snapshot_of(canary)
    assert (await archive(kernel, view, "/escape/etc/hostname")) == {"hostname": b"view\n"}
    assert (await archive(kernel, view, "/d/up/etc/hostname")) == {"hostname": b"view\n"}
    assert (await kernel.path_stat(view, "/d/up/")).name == "/"
    # the canary's host path means nothing inside the view
    with pytest.raises(FileNotFoundError):
        await archive(kernel, view, "/abs/secret")
    with pytest.raises(FileNotFoundError):
        await kernel.path_stat(view, "/abs/")
    # a symlink in a tree is archived as a link, not followed
    got = await archive(kernel, view, "/")
    assert got["./escape"].issym() and got["./abs"].linkname == str(canary)
    assert not any(b"host secret" in v for v in got.values() if isinstance(v, bytes))
    assert snapshot_of(canary) == before


# ---- extract ---------------------------------------------------------------------------------

async def test_extract_creates_and_replaces(kernel: Any, view: str) -> None:
    await kernel.extract(view, "/tmp", io.BytesIO(make_tar(
        ("dir", "new"), ("file", "new/f", b"f", 0o600), ("symlink", "new/s", "f"),
        ("file", "/abs", b"stripped"), ("hardlink", "new/h", "new/f"), ("fifo", "new/p"))))
    assert await read(kernel, view, "/tmp/new/f") == b"f"
    assert await read(kernel, view, "/tmp/new/s") == b"f"
    assert await read(kernel, view, "/tmp/abs") == b"stripped"
    assert await read(kernel, view, "/tmp/new/h") == b"f"
    assert (await kernel.path_stat(view, "/tmp/new/f")).mode == 0o600
    assert (await kernel.path_stat(view, "/tmp/new/p")).kind == "fifo"
    await kernel.extract(view, "/", io.BytesIO(make_tar(("file", "etc/hostname", b"new\n"),
                                                        ("dir", "d", 0o700))))
    assert await read(kernel, view, "/etc/hostname") == b"new\n"
    assert (await kernel.path_stat(view, "/d")).mode == 0o700  # merged: contents stay
    assert await read(kernel, view, "/d/e/b") == b"2\n"


async def test_extract_errors(kernel: Any, view: str, tmp_path: pathlib.Path) -> None:
    tar = make_tar(("file", "x", b"x"))
    with pytest.raises(FileNotFoundError):
        await kernel.extract(view, "/nope", io.BytesIO(tar))
    with pytest.raises(NotADirectoryError):
        await kernel.extract(view, "/etc/passwd", io.BytesIO(tar))
    with pytest.raises(OSError) as exc:
        await kernel.extract(str(tmp_path / "not-mounted"), "/", io.BytesIO(tar))
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:  # truncated
        await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("file", "t", b"t" * 100))[:700]))
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("file", "big", b"b" * 4096))),
                             limits=LayerLimits(max_bytes=1024))
    assert exc.value.errno == errno.EFBIG
    with pytest.raises(OSError) as exc:  # a file where a parent dir should be
        await kernel.extract(view, "/etc", io.BytesIO(make_tar(("file", "passwd/x", b"1"))))
    assert exc.value.errno in (errno.ENOTDIR, errno.EINVAL)


async def test_extract_no_overwrite_dir_non_dir(kernel: Any, view: str) -> None:
    for tar in (make_tar(("dir", "passwd")), make_tar(("file", "d", b"not a dir"))):
        with pytest.raises(OSError) as exc:
            await kernel.extract(view, "/etc" if b"passwd" in tar else "/", io.BytesIO(tar),
                                 no_overwrite_dir_non_dir=True)
        assert exc.value.errno == errno.EEXIST
    assert await read(kernel, view, "/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    # without the flag: a file replaces a dir tree, a dir replaces a file
    await kernel.extract(view, "/", io.BytesIO(make_tar(("file", "d", b"now a file"),
                                                        ("dir", "etc/hostname"))))
    assert await read(kernel, view, "/d") == b"now a file"
    assert (await kernel.path_stat(view, "/etc/hostname")).kind == "dir"


async def test_extract_into_a_readonly_view(kernel: Any, tidy: Tidy) -> None:
    await kernel.apply_layer("base", None, io.BytesIO(BASE))
    await kernel.prepare("ro", "base")
    t = await tidy.mount("ro", readonly=True)
    with pytest.raises(OSError) as exc:
        await kernel.extract(t, "/tmp", io.BytesIO(make_tar(("file", "x", b"x"))))
    assert exc.value.errno == errno.EROFS
    await kernel.unmount(t)
    await kernel.remove("ro")
    await kernel.remove("base")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../../../evil"])
async def test_extract_refuses_dotdot_names(kernel: Any, view: str, canary: pathlib.Path,
                                            name: str) -> None:
    before = snapshot_of(canary)
    with pytest.raises(OSError) as exc:
        await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("file", name, b"evil"))))
    assert exc.value.errno == errno.EINVAL and exc.value.filename == name
    with pytest.raises(FileNotFoundError):
        await kernel.path_stat(view, "/evil")
    with pytest.raises(OSError) as exc:  # a hardlink climbing out of the destination
        await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("hardlink", "pw", "../etc/passwd"))))
    assert exc.value.errno == errno.EINVAL
    assert snapshot_of(canary) == before


async def test_extract_through_escaping_symlinks_stays_inside(kernel: Any, view: str, hostfs: HostFs,
                                                              canary: pathlib.Path) -> None:
    hostfs.symlink(view, "/", "/escape")
    hostfs.symlink(view, "../../../../../../../..", "/tmp/up")
    before = snapshot_of(canary)
    # the destination and the entries' parents go through the links: they mean the view's root
    await kernel.extract(view, "/escape/tmp", io.BytesIO(make_tar(("file", "via-escape", b"1"))))
    await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("file", f"up{canary}/secret", b"2"))))
    assert await read(kernel, view, "/tmp/via-escape") == b"1"
    assert await read(kernel, view, f"{canary}/secret") == b"2"  # the view's copy of that path
    # a tar planting its own escaping links, then writing through them
    await kernel.extract(view, "/tmp", io.BytesIO(make_tar(
        ("symlink", "root-link", "/"), ("file", "root-link/planted", b"3"),
        ("symlink", "dots", "../../../../../../../.."), ("file", "dots/dotted", b"4"),
        ("symlink", "host", str(canary)), ("file", "host/written", b"5"))))
    assert await read(kernel, view, "/planted") == b"3"
    assert await read(kernel, view, "/dotted") == b"4"
    assert await read(kernel, view, f"{canary}/written") == b"5"
    assert snapshot_of(canary) == before


async def test_extract_replaces_a_symlink_to_a_host_dir(kernel: Any, view: str, hostfs: HostFs,
                                                        canary: pathlib.Path) -> None:
    hostfs.symlink(view, str(canary), "/tmp/link")
    hostfs.symlink(view, f"{canary}/secret", "/tmp/file-link")
    before = snapshot_of(canary)
    await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("file", "link", b"replaced"),
                                                           ("file", "file-link", b"replaced too"))))
    assert (await kernel.path_stat(view, "/tmp/link")).kind == "file"
    assert await read(kernel, view, "/tmp/file-link") == b"replaced too"
    hostfs.unlink(view, "/tmp/link")
    hostfs.symlink(view, str(canary), "/tmp/link")
    await kernel.extract(view, "/tmp", io.BytesIO(make_tar(("dir", "link"), ("file", "link/secret", b"x"))))
    assert (await kernel.path_stat(view, "/tmp/link")).kind == "dir"
    assert await read(kernel, view, "/tmp/link/secret") == b"x"
    assert snapshot_of(canary) == before
    assert (canary / "secret").read_bytes() == b"host secret\n"

