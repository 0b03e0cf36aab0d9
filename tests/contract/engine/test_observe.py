"""Looking at containers: logs, exec, top, stats, list filters, events, inspect."""

from __future__ import annotations

import asyncio

import pytest

from engine.containers.logfile import log_files
from engine.engine import Engine
from engine.errors import Conflict, InvalidArgument, NotFound
from engine.model import Status
from tests.contract.engine.helpers import output, run, sh, spec


async def test_logs_tail_since_until_and_timestamps(engine: Engine) -> None:
    cid, _ = await run(engine, sh("echo one; sleep 0.3; echo two; sleep 0.3; echo three"))
    entries = [e async for e in engine.container_logs(cid)]
    assert [e.data for e in entries] == [b"one\n", b"two\n", b"three\n"]
    assert entries[0].time < entries[1].time < entries[2].time
    assert entries[0].time_text.endswith("Z") and len(entries[0].time_text.split(".")[1]) == 10
    tail = [e.data async for e in engine.container_logs(cid, tail=2)]
    assert tail == [b"two\n", b"three\n"]
    assert [e.data async for e in engine.container_logs(cid, tail=0)] == []
    since = [e.data async for e in engine.container_logs(cid, since=entries[1].time)]
    assert since == [b"two\n", b"three\n"]
    until = [e.data async for e in engine.container_logs(cid, until=entries[1].time)]
    assert until == [b"one\n", b"two\n"]


async def test_logs_follow_streams_until_exit(engine: Engine) -> None:
    c = await engine.container_create(sh("for i in 1 2 3; do echo $i; sleep 0.2; done"))
    await engine.container_start(c.id)
    got = [e.data async for e in engine.container_logs(c.id, follow=True)]
    assert got == [b"1\n", b"2\n", b"3\n"]
    assert engine.container_inspect(c.id).state.status is Status.EXITED


async def test_logs_follow_delivers_output_of_a_container_removed_meanwhile(engine: Engine) -> None:
    """What the docker SDK's ``containers.run(remove=True)`` does: follow the logs, wait, remove,
    and only then read the stream — the output written before the removal still comes."""
    c = await engine.container_create(sh("sleep 0.3; echo late"))
    await engine.container_start(c.id)
    follow = engine.container_logs(c.id, follow=True)
    first = asyncio.ensure_future(follow.__anext__())  # the follower opens the log and polls
    await asyncio.sleep(0.05)
    assert await engine.container_wait(c.id) == 0
    await engine.container_remove(c.id)
    assert (await first).data == b"late\n"
    assert [e.data async for e in follow] == []


async def test_logs_rotate_by_default(engine: Engine) -> None:
    # 12 MB in 12k long lines (cheap to log even under emulation) exceeds the default 10 MB file
    c = await engine.container_create(sh(f"yes {'x' * 1000} | head -n 12000"))
    assert c.spec.log_max_size > 0 and c.spec.log_max_files >= 2
    await engine.container_start(c.id)
    await engine.container_wait(c.id)
    files = log_files(c.log_path)
    assert len(files) >= 2
    assert engine.container_logs_size(c.id) <= c.spec.log_max_size * c.spec.log_max_files + 4096


async def test_exec_exit_codes_env_workdir_user(engine: Engine) -> None:
    c = await engine.container_create(spec("sleep", "1000", env=("A=1",)))
    await engine.container_start(c.id)
    r = await engine.exec_run(c.id, ["sh", "-c", "echo $A $B; pwd; id -u; exit 4"], env=("B=2",),
                              workdir="/tmp", user="1000")
    assert r.exit_code == 4
    assert r.stdout == b"1 2\n/tmp\n1000\n"
    r = await engine.exec_run(c.id, ["sh", "-c", "echo oops >&2"])
    assert r.exit_code == 0 and r.stderr == b"oops\n"
    with pytest.raises(InvalidArgument, match="executable file not found"):
        await engine.exec_run(c.id, ["nope"])
    rec = engine.exec_create(c.id, ["sleep", "0.5"])
    await engine.exec_start(rec.id)
    assert engine.exec_inspect(rec.id).running
    assert await engine.exec_wait(rec.id) == 0
    assert not engine.exec_inspect(rec.id).running
    with pytest.raises(Conflict, match="already run"):
        await engine.exec_start(rec.id)
    with pytest.raises(NotFound, match="No such exec instance"):
        engine.exec_inspect("nope")
    await engine.container_stop(c.id, timeout=0)
    with pytest.raises(Conflict, match="is not running"):
        engine.exec_create(c.id, ["true"])


async def test_top_and_stats(engine: Engine) -> None:
    c = await engine.container_create(sh("sleep 1000 & sleep 1000 & wait"))
    await engine.container_start(c.id)
    await asyncio.sleep(0.1)
    top = await engine.container_top(c.id)
    assert top.titles[1] == "PID" and top.titles[-1] == "CMD"
    cmds = [row[-1] for row in top.processes]
    assert cmds[0].startswith("sh -c") and cmds.count("sleep 1000") == 2
    st = await engine.container_stats(c.id)
    assert st.pids_current == 3 and st.memory_limit > 0
    await engine.container_kill(c.id)
    await engine.container_wait(c.id)
    with pytest.raises(Conflict):
        await engine.container_top(c.id)


async def test_list_filters(engine: Engine) -> None:
    a = await engine.container_create(spec("sleep", "100", labels={"app": "web", "tier": "1"}), name="web1")
    b = await engine.container_create(sh("exit 2", labels={"app": "db"}), name="db1")
    created = await engine.container_create(spec("true"), name="idle")
    await engine.container_start(a.id)
    await engine.container_start(b.id)
    await engine.container_wait(b.id)
    ids = lambda cs: {c.id for c in cs}  # noqa: E731
    assert ids(engine.container_list()) == {a.id}
    assert ids(engine.container_list(all=True)) == {a.id, b.id, created.id}
    assert ids(engine.container_list(all=True, filters={"status": ["exited"]})) == {b.id}
    assert ids(engine.container_list(filters={"status": ["created"]})) == {created.id}
    assert ids(engine.container_list(all=True, filters={"label": ["app"]})) == {a.id, b.id}
    assert ids(engine.container_list(all=True, filters={"label": ["app=web"]})) == {a.id}
    assert ids(engine.container_list(all=True, filters={"name": ["db"]})) == {b.id}
    assert ids(engine.container_list(all=True, filters={"exited": ["2"]})) == {b.id}
    assert ids(engine.container_list(all=True, filters={"id": [a.id[:6]]})) == {a.id}
    assert ids(engine.container_list(all=True, filters={"ancestor": ["busybox"]})) == {a.id, b.id, created.id}
    assert ids(engine.container_list(all=True, filters={"ancestor": ["nosuch"]})) == set()
    assert [c.id for c in engine.container_list(all=True, limit=1)] == [created.id]
    with pytest.raises(InvalidArgument, match="invalid filter"):
        engine.container_list(filters={"bogus": ["1"]})
    with pytest.raises(InvalidArgument):
        engine.container_list(filters={"status": ["sleeping"]})


async def test_events_sequence_and_filters(engine: Engine) -> None:
    t0 = engine.kernel.wall_time()
    cid, _ = await run(engine, spec("true"), name="evt")
    await engine.container_remove(cid)
    evs = [e async for e in engine.events_stream({"container": ["evt"]}, since=t0, until=engine.kernel.wall_time())]
    actions = [e.action for e in evs]
    assert actions == ["create", "start", "die", "destroy"]
    assert evs[2].attributes["exitCode"] == "0" and evs[0].attributes["name"] == "evt"
    only = [e async for e in engine.events_stream({"event": ["die"]}, since=t0, until=engine.kernel.wall_time())]
    assert [e.action for e in only] == ["die"]
    with pytest.raises(InvalidArgument):
        [e async for e in engine.events_stream({"nope": ["x"]}, since=t0, until=t0)]


async def test_live_event_stream(engine: Engine) -> None:
    got: list[str] = []

    async def listen() -> None:
        async for ev in engine.events_stream({"type": ["container"]}):
            got.append(ev.action)
            if ev.action == "destroy":
                return

    task = asyncio.ensure_future(listen())
    await asyncio.sleep(0)
    c = await engine.container_create(spec("sleep", "100"))
    await engine.container_start(c.id)
    await engine.container_pause(c.id)
    await engine.container_unpause(c.id)
    engine.container_rename(c.id, "renamed")
    await engine.container_remove(c.id, force=True)
    await asyncio.wait_for(task, 5)
    assert got == ["create", "start", "pause", "unpause", "rename", "kill", "die", "destroy"]
