"""Container lifecycle on the engine: create, start, stop, kill, restart, pause, wait, rm, rename."""

from __future__ import annotations

import asyncio

import pytest

from engine.engine import Engine
from engine.errors import AlreadyExists, AmbiguousReference, Conflict, InvalidArgument, NotFound
from engine.model import Status
from tests.contract.engine.helpers import output, run, sh, spec


async def test_run_echo_keeps_stdout_and_stderr_apart(engine: Engine) -> None:
    cid, code = await run(engine, sh("echo out; echo err >&2; exit 3"))
    assert code == 3
    c = engine.container_inspect(cid)
    assert c.state.status is Status.EXITED and c.state.exit_code == 3
    assert c.state.finished_at >= c.state.started_at > 0
    out, err = await output(engine, cid)
    assert out == b"out\n" and err == b"err\n"
    out, err = await output(engine, cid, stderr=False)
    assert out == b"out\n" and err == b""


async def test_create_uses_image_cmd_and_env(engine: Engine) -> None:
    c = await engine.container_create(spec(env=("FOO=bar",)))
    assert c.argv == ("sh",)
    assert "FOO=bar" in c.env and any(e.startswith("PATH=") for e in c.env)
    assert c.state.status is Status.CREATED
    assert c.hostname == c.id[:12]
    cid, _ = await run(engine, spec("env", env=("FOO=bar",), hostname="box1"))
    out, _ = await output(engine, cid)
    assert b"FOO=bar\n" in out and b"HOSTNAME=box1\n" in out


async def test_entrypoint_override_drops_image_cmd(engine: Engine) -> None:
    c = await engine.container_create(spec(entrypoint=("echo",)))
    assert c.argv == ("echo",)
    c = await engine.container_create(spec("a", "b", entrypoint=("echo", "x")))
    assert c.argv == ("echo", "x", "a", "b")


async def test_missing_command_is_127_and_leaves_container_created(engine: Engine) -> None:
    c = await engine.container_create(spec("no-such-command"))
    with pytest.raises(InvalidArgument, match='exec: "no-such-command": executable file not found'):
        await engine.container_start(c.id)
    c = engine.container_inspect(c.id)
    assert c.state.status is Status.CREATED and c.state.exit_code == 127
    assert "executable file not found" in c.state.error
    assert engine.kernel.leaks().get("processes") is None  # type: ignore[attr-defined]


async def test_unknown_image_and_names(engine: Engine) -> None:
    with pytest.raises(NotFound, match="No such image"):
        await engine.container_create(spec(image="nosuch:1"))
    await engine.container_create(spec("true"), name="web")
    with pytest.raises(AlreadyExists, match='"/web" is already in use'):
        await engine.container_create(spec("true"), name="web")
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        await engine.container_create(spec("true"), name="bad name!")


async def test_lookup_by_name_prefix_and_ambiguity(engine: Engine) -> None:
    ids = [(await engine.container_create(spec("true"))).id for _ in range(20)]
    for cid in ids:
        assert engine.container_inspect(cid[:12]).id == cid
        c = engine.container_inspect(cid)
        assert engine.container_inspect(c.name).id == cid
        assert engine.container_inspect("/" + c.name).id == cid
    firsts = [cid[0] for cid in ids]
    dup = next(ch for ch in firsts if firsts.count(ch) > 1)
    with pytest.raises(AmbiguousReference):
        engine.container_inspect(dup)
    with pytest.raises(NotFound, match="No such container: zzz"):
        engine.container_inspect("zzz")


async def test_stop_sends_sigterm_then_sigkill_after_timeout(engine: Engine) -> None:
    # sleep as PID 1 has no SIGTERM handler: the kernel ignores SIGTERM, so stop must SIGKILL
    c = await engine.container_create(spec("sleep", "1000"))
    await engine.container_start(c.id)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await engine.container_stop(c.id, timeout=2)
    assert loop.time() - t0 >= 2
    c = engine.container_inspect(c.id)
    assert c.state.status is Status.EXITED and c.state.exit_code == 137
    assert not await engine.container_stop(c.id)  # not running: Docker's 304


async def test_stop_with_a_trap_exits_cleanly_before_the_timeout(engine: Engine) -> None:
    c = await engine.container_create(sh("trap 'exit 0' TERM; while true; do sleep 1; done"))
    await engine.container_start(c.id)
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await engine.container_stop(c.id, timeout=30)
    assert loop.time() - t0 < 5
    assert engine.container_inspect(c.id).state.exit_code == 0


async def test_kill_with_signals(engine: Engine) -> None:
    c = await engine.container_create(sh("trap 'echo got-usr1' USR1; while true; do sleep 0.2; done"))
    await engine.container_start(c.id)
    await asyncio.sleep(0.1)
    await engine.container_kill(c.id, "USR1")
    await asyncio.sleep(0.5)
    assert engine.container_inspect(c.id).state.status is Status.RUNNING
    await engine.container_kill(c.id, "SIGKILL")
    assert await engine.container_wait(c.id) == 137
    with pytest.raises(Conflict, match="is not running"):
        await engine.container_kill(c.id)
    with pytest.raises(InvalidArgument, match="invalid signal"):
        await engine.container_kill(c.id, "SIGNOPE")


async def test_restart(engine: Engine) -> None:
    c = await engine.container_create(sh("echo started; sleep 1000"))
    await engine.container_start(c.id)
    pid1 = engine.container_inspect(c.id).state.pid
    await engine.container_restart(c.id, timeout=1)
    c = engine.container_inspect(c.id)
    assert c.state.status is Status.RUNNING and c.state.pid != pid1
    await asyncio.sleep(0.1)
    out, _ = await output(engine, c.id)
    assert out == b"started\nstarted\n"


async def test_pause_unpause(engine: Engine) -> None:
    c = await engine.container_create(sh("while true; do echo tick; sleep 0.2; done"))
    await engine.container_start(c.id)
    await asyncio.sleep(0.7)
    await engine.container_pause(c.id)
    assert engine.container_inspect(c.id).state.status is Status.PAUSED
    n = len((await output(engine, c.id))[0])
    await asyncio.sleep(1.5)
    assert len((await output(engine, c.id))[0]) == n, "a paused container made progress"
    with pytest.raises(Conflict, match="is paused"):
        engine.exec_create(c.id, ["true"])
    with pytest.raises(Conflict, match="already paused"):
        await engine.container_pause(c.id)
    with pytest.raises(Conflict):
        await engine.container_start(c.id)
    await engine.container_unpause(c.id)
    await asyncio.sleep(1)
    assert len((await output(engine, c.id))[0]) > n
    with pytest.raises(Conflict, match="is not paused"):
        await engine.container_unpause(c.id)
    # stopping a paused container works
    await engine.container_pause(c.id)
    await engine.container_stop(c.id, timeout=1)
    assert engine.container_inspect(c.id).state.status is Status.EXITED


async def test_wait_conditions(engine: Engine) -> None:
    c = await engine.container_create(sh("sleep 1; exit 7"))
    assert await engine.container_wait(c.id) == 0  # created = not running
    await engine.container_start(c.id)
    assert await engine.container_wait(c.id, "next-exit") == 7
    removed = asyncio.ensure_future(engine.container_wait(c.id, "removed"))
    await asyncio.sleep(0.3)
    assert not removed.done()
    await engine.container_remove(c.id)
    assert await removed == 7
    with pytest.raises(InvalidArgument):
        await engine.container_wait("x", "bogus")


async def test_remove_rules(engine: Engine) -> None:
    c = await engine.container_create(spec("sleep", "100"))
    await engine.container_start(c.id)
    with pytest.raises(Conflict, match="container is running"):
        await engine.container_remove(c.id)
    await engine.container_remove(c.id, force=True)
    with pytest.raises(NotFound):
        engine.container_inspect(c.id)
    assert engine.kernel.leaks().get("processes") is None  # type: ignore[attr-defined]


async def test_rename(engine: Engine) -> None:
    a = await engine.container_create(spec("true"), name="alpha")
    await engine.container_create(spec("true"), name="beta")
    engine.container_rename("alpha", "gamma")
    assert engine.container_inspect("gamma").id == a.id
    with pytest.raises(NotFound):
        engine.container_inspect("alpha")
    with pytest.raises(AlreadyExists):
        engine.container_rename("gamma", "beta")
    with pytest.raises(InvalidArgument):
        engine.container_rename("gamma", "no/slash")
    # the name survives a restart of the engine
    assert any(row.name == "gamma" for row in engine.meta.list_containers())


async def test_auto_remove(engine: Engine) -> None:
    c = await engine.container_create(spec("true", auto_remove=True))
    await engine.container_start(c.id)
    await engine.container_wait(c.id, "removed")
    with pytest.raises(NotFound):
        engine.container_inspect(c.id)


async def test_init_exit_kills_the_rest(engine: Engine) -> None:
    cid, code = await run(engine, sh("sleep 1000 & sleep 1000 & echo bye"))
    assert code == 0
    assert engine.kernel.leaks().get("processes") is None  # type: ignore[attr-defined]
