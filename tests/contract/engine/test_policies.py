"""Restart policies (with Docker's back-off) and healthchecks."""

from __future__ import annotations

import asyncio

from engine.containers.spec import Healthcheck, RestartPolicy
from engine.engine import Engine
from engine.model import Health, Status
from tests.contract.engine.helpers import sh, spec

import pytest


async def starts_of(engine: Engine, cid: str) -> list[float]:
    t = engine.kernel.wall_time()
    return [e.time for e in engine.events.history({"container": [cid], "event": ["start"]}, until=t)]


async def test_on_failure_retries_then_gives_up(engine: Engine) -> None:
    c = await engine.container_create(sh("exit 3", restart_policy=RestartPolicy.parse("on-failure:2")))
    await engine.container_start(c.id)
    await asyncio.sleep(3)
    c = engine.container_inspect(c.id)
    assert c.state.status is Status.EXITED and c.state.exit_code == 3
    assert c.state.restart_count == 2
    assert len(await starts_of(engine, c.id)) == 3


async def test_on_failure_does_not_restart_success(engine: Engine) -> None:
    c = await engine.container_create(spec("true", restart_policy=RestartPolicy.parse("on-failure")))
    await engine.container_start(c.id)
    await asyncio.sleep(1)
    assert engine.container_inspect(c.id).state.restart_count == 0


async def test_always_restarts_with_doubling_backoff_until_stopped(engine: Engine, backend: str) -> None:
    c = await engine.container_create(spec("true", restart_policy=RestartPolicy.parse("always")))
    await engine.container_start(c.id)
    await asyncio.sleep(3.5)
    evs = engine.events.history({"container": [c.id], "event": ["die", "start"]}, until=engine.kernel.wall_time())
    # the back-off is the pause between an exit and the next start: 100 ms, 200 ms, 400 ms, …
    waits = [round(b.time - a.time, 2) for a, b in zip(evs, evs[1:]) if a.action == "die" and b.action == "start"]
    # (on a real kernel each wait also holds the start's own cost: tens of ms here, up to a second
    # in an emulated VM — the upper bound only catches a back-off that grows too fast)
    slack = 0.5 if backend == "sim" else 1.5
    assert len(waits) >= 4, waits
    for i, w in enumerate(waits):
        assert 0.1 * 2**i * 0.95 <= w <= 0.1 * 2**i + slack, waits
    await engine.container_stop(c.id)
    n = len(await starts_of(engine, c.id))
    await asyncio.sleep(3)
    assert len(await starts_of(engine, c.id)) == n
    assert engine.container_inspect(c.id).state.status is Status.EXITED


@pytest.mark.virtual_time
async def test_backoff_resets_after_a_long_run(engine: Engine) -> None:
    c = await engine.container_create(sh("sleep 11; exit 1", restart_policy=RestartPolicy.parse("always")))
    await engine.container_start(c.id)
    await asyncio.sleep(60)
    starts = await starts_of(engine, c.id)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps and all(11.0 <= g <= 11.2 for g in gaps), gaps
    await engine.container_stop(c.id, timeout=0)


async def test_unless_stopped_and_always_on_daemon_restart(harness: object, engine: Engine) -> None:
    a = await engine.container_create(spec("sleep", "1000", restart_policy=RestartPolicy.parse("always")))
    u = await engine.container_create(spec("sleep", "1000", restart_policy=RestartPolicy.parse("unless-stopped")))
    for c in (a, u):
        await engine.container_start(c.id)
        await engine.container_stop(c.id, timeout=0)
    await engine.close()
    eng2 = await harness.new()  # type: ignore[attr-defined]
    assert eng2.container_inspect(a.id).state.status is Status.RUNNING
    assert eng2.container_inspect(u.id).state.status is Status.EXITED


async def test_restart_policy_update(engine: Engine) -> None:
    c = await engine.container_create(sh("exit 1"))
    await engine.container_update(c.id, restart_policy=RestartPolicy.parse("on-failure:1"))
    await engine.container_start(c.id)
    await asyncio.sleep(2)
    assert engine.container_inspect(c.id).state.restart_count == 1


def test_restart_policy_parse_errors() -> None:
    from engine.errors import InvalidArgument

    for bad in ("sometimes", "always:3", "on-failure:x", "on-failure:-1"):
        with pytest.raises(InvalidArgument):
            RestartPolicy.parse(bad)
    assert str(RestartPolicy.parse("on-failure:5")) == "on-failure:5"


async def test_healthcheck_goes_healthy(engine: Engine) -> None:
    hc = Healthcheck(test=("CMD-SHELL", "test -f /tmp/ready"), interval=0.4, timeout=1, retries=2)
    c = await engine.container_create(sh("sleep 1; touch /tmp/ready; sleep 1000", healthcheck=hc))
    await engine.container_start(c.id)
    await asyncio.sleep(0.2)
    assert engine.container_inspect(c.id).state.health.status is Health.STARTING  # type: ignore[union-attr]
    await asyncio.sleep(2)
    h = engine.container_inspect(c.id).state.health
    assert h is not None and h.status is Health.HEALTHY and h.failing_streak == 0
    assert h.log[-1].exit_code == 0 and len(h.log) <= 5
    assert [c.id for c in engine.container_list(filters={"health": ["healthy"]})] == [c.id]
    evs = engine.events.history({"container": [c.id]})
    assert "health_status: healthy" in [e.action for e in evs]
    await engine.container_stop(c.id, timeout=0)


async def test_healthcheck_goes_unhealthy_and_times_out(engine: Engine) -> None:
    hc = Healthcheck(test=("CMD", "sleep", "10"), interval=0.3, timeout=0.3, retries=3)
    c = await engine.container_create(spec("sleep", "1000", healthcheck=hc))
    await engine.container_start(c.id)
    await asyncio.sleep(3)
    h = engine.container_inspect(c.id).state.health
    assert h is not None and h.status is Health.UNHEALTHY and h.failing_streak >= 3
    assert "exceeded timeout" in h.log[-1].output
    await engine.container_stop(c.id, timeout=0)


async def test_healthcheck_start_period_does_not_count_failures(engine: Engine) -> None:
    hc = Healthcheck(test=("CMD", "false"), interval=0.3, timeout=1, retries=1, start_period=2, start_interval=0.3)
    c = await engine.container_create(spec("sleep", "1000", healthcheck=hc))
    await engine.container_start(c.id)
    await asyncio.sleep(1.5)
    assert engine.container_inspect(c.id).state.health.status is Health.STARTING  # type: ignore[union-attr]
    await asyncio.sleep(1.5)
    assert engine.container_inspect(c.id).state.health.status is Health.UNHEALTHY  # type: ignore[union-attr]
    await engine.container_stop(c.id, timeout=0)
