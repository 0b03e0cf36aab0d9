"""commit, diff, export, history on the engine (sim always; Linux when privileged)."""

from __future__ import annotations

import io
import tarfile

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument, NotFound
from tests.contract.engine.helpers import output, run, sh, spec


async def test_commit_then_run_sees_the_change(engine: Engine) -> None:
    cid, code = await run(engine, sh("echo hello > /greeting; mkdir -p /data/sub; echo x > /data/sub/f"))
    assert code == 0
    image_id = await engine.container_commit(cid, "snap:1", comment="first", author="me")
    rec = engine.image_inspect("snap:1")
    assert rec.id == image_id
    base = engine.image_inspect("busybox")
    assert rec.diff_ids[:-1] == base.diff_ids and len(rec.diff_ids) == len(base.diff_ids) + 1
    assert rec.comment == "first" and rec.author == "me"
    assert rec.parent == base.id
    cid2, code = await run(engine, spec("cat", "/greeting", "/data/sub/f", image="snap:1"))
    assert code == 0
    assert (await output(engine, cid2))[0] == b"hello\nx\n"
    assert engine.check().clean


async def test_commit_whiteout_hides_a_file_and_keeps_the_original(engine: Engine) -> None:
    cid, code = await run(engine, sh("rm /etc/os-release"))
    assert code == 0
    assert ("D", "/etc/os-release") in await engine.container_diff(cid)
    await engine.container_commit(cid, "norelease:1")
    cid2, code = await run(engine, sh("cat /etc/os-release", image="norelease:1"))
    assert code != 0
    cid3, code = await run(engine, sh("cat /etc/passwd", image="norelease:1"))
    assert code == 0
    # the original image still has the file
    cid4, code = await run(engine, spec("cat", "/etc/os-release"))
    assert code == 0
    assert b"BusyBox" in (await output(engine, cid4))[0]
    buf = io.BytesIO()
    await engine.container_export(cid2, buf)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert "etc/passwd" in names and "etc/os-release" not in names
    assert engine.check().clean


async def test_commit_records_container_config_and_changes(engine: Engine) -> None:
    c = await engine.container_create(spec("sleep", "5", env=("FOO=bar",), workdir="/tmp",
                                           labels={"a": "b"}))
    image_id = await engine.container_commit(c.id, changes=['ENV X=1', 'CMD ["echo", "hi"]'],
                                             comment="m")
    cfg = engine.image_inspect(image_id).container_config
    assert cfg["Cmd"] == ["echo", "hi"]
    assert "FOO=bar" in cfg["Env"] and "X=1" in cfg["Env"]
    assert any(e.startswith("PATH=") for e in cfg["Env"])
    assert cfg["WorkingDir"] == "/tmp" and cfg["Labels"] == {"a": "b"}
    hist = engine.image_history(image_id)
    assert hist[0]["id"] == image_id and hist[0]["comment"] == "m"
    assert hist[0]["created_by"] == "sleep 5"
    assert all(h["id"] == "<missing>" for h in hist[1:])
    with pytest.raises(InvalidArgument):
        await engine.container_commit(c.id, changes=["RUN true"])
    with pytest.raises(NotFound):
        await engine.container_commit("nosuch")


async def test_commit_running_container_pauses_and_resumes(engine: Engine) -> None:
    c = await engine.container_create(sh("echo live > /tmp/live; sleep 100"))
    await engine.container_start(c.id)
    for _ in range(50):
        if ("A", "/tmp/live") in await engine.container_diff(c.id):
            break
        import asyncio
        await asyncio.sleep(0.05)
    image_id = await engine.container_commit(c.id, "live:1")
    assert engine.container_inspect(c.id).state.status.value == "running"
    cid2, code = await run(engine, spec("cat", "/tmp/live", image=image_id))
    assert code == 0 and (await output(engine, cid2))[0] == b"live\n"
    await engine.container_kill(c.id)


async def test_diff_kinds(engine: Engine) -> None:
    cid, code = await run(engine, sh("echo new > /new; echo changed > /etc/os-release; rm /etc/group"))
    assert code == 0
    d = dict((p, k) for k, p in await engine.container_diff(cid))
    assert d["/new"] == "A"
    assert d["/etc/os-release"] == "C"
    assert d["/etc/group"] == "D"
    assert d["/etc"] == "C"
    paths = [p for _, p in await engine.container_diff(cid)]
    assert paths == sorted(paths, key=lambda p: p.split("/"))


async def test_export_is_the_merged_filesystem(engine: Engine) -> None:
    cid, code = await run(engine, sh("echo out > /exported; rm /etc/group; echo h > /etc/os-release"))
    assert code == 0
    buf = io.BytesIO()
    await engine.container_export(cid, buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = tf.getnames()
        assert "exported" in names and "bin/busybox" in names and "etc/passwd" in names
        assert "etc/group" not in names
        assert not any(".wh." in n for n in names)
        assert tf.extractfile("exported").read() == b"out\n"  # type: ignore[union-attr]
        assert tf.extractfile("etc/os-release").read() == b"h\n"  # type: ignore[union-attr]
        assert tf.getmember("bin/sh").issym()
    assert len(names) == len(set(names))


async def test_system_df_and_prune(engine: Engine) -> None:
    cid, code = await run(engine, sh("echo 12345 > /f; echo logged"))
    assert code == 0
    df = await engine.system_df()
    (c,) = [c for c in df["containers"] if c["id"] == cid]
    assert c["size_rw"] == 6
    assert c["logs_size"] == engine.container_logs_size(cid) > 0
    assert df["logs_size"] >= c["logs_size"]
    assert df["images"][0]["containers"] == 1
    assert df["layers_size"] == sum(i["size"] for i in df["images"])
    pruned = await engine.system_prune()
    assert cid in pruned["containers_deleted"]
    assert engine.container_list(all=True) == []
