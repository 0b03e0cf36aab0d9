"""Cleanup paths under injected faults, crash consistency and live-restore (sim only)."""

from __future__ import annotations

import asyncio
import errno

import pytest

from engine.context import SimulatedCrash
from engine.engine import Engine
from engine.errors import Conflict, EngineError
from engine.model import Status
from tests.contract.engine.helpers import sh, spec

pytestmark = pytest.mark.sim


@pytest.fixture(autouse=True)
def _sim_only(backend: str) -> None:
    if backend != "sim":
        pytest.skip("fault injection needs the sim backend")


@pytest.mark.parametrize("op,err", [("mount", errno.EBUSY), ("cgroup_create", errno.ENOSPC),
                                    ("spawn", errno.EAGAIN)])
async def test_failed_start_leaves_created_and_nothing_leaked(engine: Engine, op: str, err: int) -> None:
    c = await engine.container_create(spec("sleep", "100"))
    engine.kernel.faults.fail_next(op, err)  # type: ignore[attr-defined]
    with pytest.raises(EngineError) as exc:
        await engine.container_start(c.id)
    assert c.id[:12] in str(exc.value) or "exec" in str(exc.value)
    assert engine.container_inspect(c.id).state.status is Status.CREATED
    leaks = engine.kernel.leaks()  # type: ignore[attr-defined]
    assert "processes" not in leaks and "mounts" not in leaks and "cgroups" not in leaks
    assert await engine.container_start(c.id)  # and it starts fine afterwards
    await engine.container_remove(c.id, force=True)


async def test_kill_racing_an_exit(engine: Engine) -> None:
    c = await engine.container_create(sh("exit 5"))
    await engine.container_start(c.id)
    # the process exits at once; the kill lands after the exit but before the engine noticed
    await asyncio.sleep(0)
    try:
        await engine.container_kill(c.id)
    except Conflict:
        pass  # the engine had already seen the exit: also fine
    assert await engine.container_wait(c.id) in (5, 137)
    assert engine.container_inspect(c.id).state.status is Status.EXITED


async def test_failed_remove_keeps_container_and_can_retry(engine: Engine) -> None:
    c = await engine.container_create(spec("true"))
    engine.kernel.faults.fail_next("remove", errno.EBUSY)  # type: ignore[attr-defined]
    with pytest.raises(Conflict):
        await engine.container_remove(c.id)
    assert engine.container_inspect(c.id).state.status is Status.DEAD
    await engine.container_remove(c.id)


@pytest.mark.parametrize("point", ["create:after-prepare", "remove:after-snapshot"])
async def test_crash_between_writes_leaves_a_consistent_store(harness: object, point: str) -> None:
    from tests.contract.engine.conftest import busybox_binary

    crashed = {"armed": False}

    def hook(name: str) -> None:
        if crashed["armed"] and name == point:
            raise SimulatedCrash(name)

    eng = await harness.new(crash_hook=hook)  # type: ignore[attr-defined]
    eng.image_bootstrap_busybox("busybox", busybox_binary())
    c = await eng.container_create(spec("true"))
    crashed["armed"] = True
    with pytest.raises(SimulatedCrash):
        if point.startswith("create"):
            await eng.container_create(spec("true"))
        else:
            await eng.container_remove(c.id)
    await eng.containers.shutdown()
    eng.meta.close()
    eng.closed = True
    eng2 = await harness.new()  # type: ignore[attr-defined]
    report = eng2.check()
    assert report.ok, report
    # no write layer is left without its container, and every container has its write layer
    snaps = {s.key: s for s in await eng2.kernel.list()}
    actives = {k for k, s in snaps.items() if s.kind == "active"}
    assert actives == {x.id for x in eng2.container_list(all=True)}


async def test_live_restore_keeps_running_and_reports_real_exit_codes(harness: object) -> None:
    from tests.contract.engine.conftest import busybox_binary

    eng = await harness.new()  # type: ignore[attr-defined]
    eng.image_bootstrap_busybox("busybox", busybox_binary())
    long = await eng.container_create(sh("while true; do echo tick; sleep 1; done"))
    short = await eng.container_create(sh("sleep 3; exit 42"))
    for c in (long, short):
        await eng.container_start(c.id)
    await eng.close()  # the daemon goes away; sandboxes stay
    await asyncio.sleep(10)  # meanwhile `short` exits
    eng2 = await harness.new()  # type: ignore[attr-defined]
    assert eng2.container_inspect(long.id).state.status is Status.RUNNING
    s = eng2.container_inspect(short.id).state
    assert s.status is Status.EXITED and s.exit_code == 42
    ticks = [e.data async for e in eng2.container_logs(long.id)]
    assert len(ticks) >= 10, "logs have a gap while the daemon was away"
    await eng2.container_stop(long.id, timeout=1)
    assert eng2.container_inspect(long.id).state.status is Status.EXITED


async def test_restore_after_kernel_loss_marks_exited_255(harness: object) -> None:
    from tests.contract.engine.conftest import busybox_binary

    eng = await harness.new()  # type: ignore[attr-defined]
    eng.image_bootstrap_busybox("busybox", busybox_binary())
    c = await eng.container_create(spec("sleep", "1000"))
    await eng.container_start(c.id)
    old_kernel = harness.kernel  # type: ignore[attr-defined]
    await eng.close()
    # "reboot": a fresh sim kernel knows nothing of the old sandboxes
    harness.kernel = None  # type: ignore[attr-defined]
    eng2 = await harness.new()  # type: ignore[attr-defined]
    st = eng2.container_inspect(c.id).state
    assert st.status is Status.EXITED and st.exit_code == 255
    # layers are unpacked again on demand, so the container can start again
    assert await eng2.container_start(c.id)
    await eng2.container_remove(c.id, force=True)
    for p in list(old_kernel.world.processes):
        if old_kernel.world.processes[p].state != "Z":
            await old_kernel.signal(p, 9)
    await asyncio.sleep(0.1)
    for s in await old_kernel.sandboxes():
        await old_kernel.release(s.pid)
    for m in list(old_kernel.world.mounts):
        await old_kernel.unmount(m)
    for cg in sorted(old_kernel.world.cgroups, key=len, reverse=True):
        if cg:
            await old_kernel.cgroup_remove(cg)


async def test_removed_container_dirs_go_even_across_a_crash(harness: object) -> None:
    """``rm`` renames the container's dir out of sight and deletes it in the background; what a
    crash left (a ``.removed-*`` dir, a dir without its record) goes at the next start."""
    import os

    from tests.contract.engine.conftest import busybox_binary

    eng = await harness.new()  # type: ignore[attr-defined]
    eng.image_bootstrap_busybox("busybox", busybox_binary())
    keep = await eng.container_create(spec("true"))
    gone = await eng.container_create(spec("true"))
    base = os.path.join(eng.ctx.root, "containers")
    await eng.container_remove(gone.id)
    assert not os.path.exists(os.path.join(base, gone.id))
    await eng.containers.shutdown()  # waits for the deferred deletions
    assert sorted(os.listdir(base)) == [keep.id]
    for leftover in (".removed-" + "a" * 64, "b" * 64):
        os.makedirs(os.path.join(base, leftover, "sub"))
    eng.meta.close()
    eng.closed = True
    eng2 = await harness.new()  # type: ignore[attr-defined]
    assert sorted(os.listdir(base)) == [keep.id]
    assert [c.id for c in eng2.container_list(all=True)] == [keep.id]
