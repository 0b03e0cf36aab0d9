"""Resource limits bite: memory (OOM kill → 137, OOMKilled), pids (fork loop contained)."""

from __future__ import annotations

import asyncio

from engine.engine import Engine
from engine.kernel import Resources
from engine.model import Status
from tests.contract.engine.helpers import output, sh, spec

MiB = 1024 * 1024


async def test_memory_limit_oom_kills(engine: Engine) -> None:
    c = await engine.container_create(
        spec("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1", resources=Resources(memory=32 * MiB)))
    await engine.container_start(c.id)
    assert await engine.container_wait(c.id) == 137
    st = engine.container_inspect(c.id).state
    assert st.oom_killed and st.status is Status.EXITED
    assert "oom" in [e.action for e in engine.events.history({"container": [c.id]})]


async def test_within_memory_limit_runs_fine(engine: Engine) -> None:
    c = await engine.container_create(
        spec("dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4", resources=Resources(memory=32 * MiB)))
    await engine.container_start(c.id)
    assert await engine.container_wait(c.id) == 0
    assert not engine.container_inspect(c.id).state.oom_killed


async def test_pids_limit_contains_a_fork_loop(engine: Engine) -> None:
    c = await engine.container_create(
        sh("while true; do sleep 1000 & done", resources=Resources(pids_limit=20)))
    await engine.container_start(c.id)
    peak = 0
    while engine.container_inspect(c.id).state.status is Status.RUNNING:
        peak = max(peak, (await engine.container_stats(c.id)).pids_current)
        await asyncio.sleep(0.01)
    assert peak <= 20
    # the shell gives up on "can't fork" (exit 2), as busybox ash does; the host is unharmed
    assert engine.container_inspect(c.id).state.exit_code == 2
    _, err = await output(engine, c.id)
    assert b"can't fork" in err


async def test_update_memory_live(engine: Engine) -> None:
    c = await engine.container_create(spec("sleep", "1000"))
    await engine.container_start(c.id)
    await engine.container_update(c.id, resources=Resources(memory=64 * MiB))
    assert (await engine.container_stats(c.id)).memory_limit == 64 * MiB
    assert engine.container_inspect(c.id).spec.resources.memory == 64 * MiB
    await engine.container_stop(c.id, timeout=0)


async def test_image_in_use_cannot_be_removed(engine: Engine) -> None:
    from engine.errors import Conflict
    import pytest

    await engine.container_create(spec("true"))
    with pytest.raises(Conflict):
        engine.image_remove("busybox")
    assert engine.image_inspect("busybox")
    out = engine.image_remove("busybox", force=True)
    assert {"Untagged": "busybox:latest"} in out or any("Untagged" in o for o in out)
