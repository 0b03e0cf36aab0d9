"""cp: the archive endpoints (GET/HEAD/PUT /containers/{id}/archive), symlink-safe."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument, NotFound
from tests.contract.engine import archives as A
from tests.contract.engine.helpers import output, run, sh, spec


def members(stream: Any) -> dict[str, tarfile.TarInfo | bytes]:
    out: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(stream.read())) as tf:
        for m in tf.getmembers():
            out[m.name] = tf.extractfile(m).read() if m.isfile() else m  # type: ignore[union-attr]
    return out


async def test_copy_out_file_dir_and_symlink(engine: Engine) -> None:
    cid, code = await run(engine, sh("mkdir -p /d/e; echo 1 > /d/a; echo 2 > /d/e/b; ln -s /d/a /d/l"))
    assert code == 0
    st, stream = await engine.container_archive_get(cid, "/d/a")
    with stream:
        assert st["name"] == "a" and st["size"] == 2 and st["kind"] == "file"
        assert members(stream) == {"a": b"1\n"}
    st, stream = await engine.container_archive_get(cid, "/d")
    with stream:
        got = members(stream)
    assert st["kind"] == "dir"
    assert got["d/a"] == b"1\n" and got["d/e/b"] == b"2\n"
    assert got["d/l"].issym() and got["d/l"].linkname == "/d/a"  # type: ignore[union-attr]
    st = await engine.container_archive_stat(cid, "/d/l")
    assert st["kind"] == "symlink" and st["link_target"] == "/d/a"
    with pytest.raises(NotFound):
        await engine.container_archive_stat(cid, "/nope")
    with pytest.raises(InvalidArgument):
        await engine.container_archive_stat(cid, "relative")


async def test_copy_in_then_run_sees_it(engine: Engine) -> None:
    c = await engine.container_create(spec("cat", "/dst/hello", "/dst/sub/x"))
    await engine.container_archive_put(c.id, "/", io.BytesIO(A.tar_of({"dst/hello": b"hi\n"})))
    await engine.container_archive_put(c.id, "/dst", io.BytesIO(A.tar_of({"sub/x": b"x\n"})))
    await engine.container_start(c.id)
    assert await engine.container_wait(c.id) == 0
    assert (await output(engine, c.id))[0] == b"hi\nx\n"
    assert ("A", "/dst/hello") in await engine.container_diff(c.id)


async def test_copy_into_running_container(engine: Engine) -> None:
    c = await engine.container_create(sh("sleep 100"))
    await engine.container_start(c.id)
    await engine.container_archive_put(c.id, "/tmp", io.BytesIO(A.tar_of({"live": b"on\n"})))
    res = await engine.exec_run(c.id, ["cat", "/tmp/live"])
    assert res.exit_code == 0 and res.stdout == b"on\n"
    st, stream = await engine.container_archive_get(c.id, "/tmp/live")
    with stream:
        assert members(stream) == {"live": b"on\n"}
    await engine.container_kill(c.id)


async def test_symlinks_inside_the_container_cannot_escape(engine: Engine) -> None:
    # /esc points "outside"; inside the container's root it can only mean the root itself
    cid, code = await run(engine, sh("ln -s ../../../../ /esc; ln -s /etc/passwd /pw; mkdir /box"))
    assert code == 0
    st, stream = await engine.container_archive_get(cid, "/esc/etc/passwd")
    with stream:
        assert b"root:x:0:0" in members(stream)["passwd"]  # type: ignore[operator]
    # writing through the symlinked dir lands inside the container
    await engine.container_archive_put(cid, "/esc/box", io.BytesIO(A.tar_of({"f": b"in\n"})))
    st, stream = await engine.container_archive_get(cid, "/box/f")
    with stream:
        assert members(stream) == {"f": b"in\n"}
    # an entry named like an existing symlink replaces the link, never writes through it
    await engine.container_archive_put(cid, "/", io.BytesIO(A.tar_of({"pw": b"replaced\n"})))
    st, stream = await engine.container_archive_get(cid, "/etc/passwd")
    with stream:
        assert b"root:x:0:0" in members(stream)["passwd"]  # type: ignore[operator]
    assert (await engine.container_archive_stat(cid, "/pw"))["kind"] == "file"


@pytest.mark.parametrize("name", ["../../../evil", "a/../../evil"])
async def test_hostile_tar_entries_are_refused(engine: Engine, name: str) -> None:
    c = await engine.container_create(spec("true"))
    with pytest.raises(InvalidArgument):
        await engine.container_archive_put(c.id, "/tmp", io.BytesIO(A.tar_of({name: b"x"})))


async def test_put_errors(engine: Engine) -> None:
    c = await engine.container_create(spec("true"))
    with pytest.raises(NotFound):
        await engine.container_archive_put(c.id, "/nope", io.BytesIO(A.tar_of({"a": b"1"})))
    with pytest.raises(InvalidArgument):
        await engine.container_archive_put(c.id, "/etc/passwd", io.BytesIO(A.tar_of({"a": b"1"})))
    with pytest.raises(InvalidArgument):  # truncated tar
        await engine.container_archive_put(c.id, "/tmp", io.BytesIO(A.tar_of({"a": b"1"})[:700]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("passwd")
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    with pytest.raises(InvalidArgument):  # dir over non-dir refused when asked
        await engine.container_archive_put(c.id, "/etc", io.BytesIO(buf.getvalue()),
                                           no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidArgument):  # a file where a parent dir should be
        await engine.container_archive_put(c.id, "/etc", io.BytesIO(A.tar_of({"passwd/x": b"1"})))
    with pytest.raises(NotFound):
        await engine.container_archive_get("nosuch", "/")
