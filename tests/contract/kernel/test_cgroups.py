"""Kernel contract: the Cgroups role (limits, accounting, freezer, kill, errors)."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from engine.kernel import SIGKILL, ExitStatus, Resources, StdioSpec
from tests.contract.kernel.rootfs import Box, box  # noqa: F401

MiB = 1024**2


async def test_create_stats_remove(kernel: Any) -> None:
    await kernel.cgroup_create("wharfie-test/a", Resources(memory=64 * MiB, pids_limit=10))
    with pytest.raises(FileExistsError):
        await kernel.cgroup_create("wharfie-test/a", Resources())
    stats = await kernel.cgroup_stats("wharfie-test/a")
    assert stats.memory_limit == 64 * MiB
    assert stats.pids_limit == 10
    assert stats.pids_current == 0 and stats.oom_kills == 0 and not stats.frozen
    assert await kernel.cgroup_procs("wharfie-test/a") == []
    await kernel.cgroup_remove("wharfie-test/a")
    with pytest.raises(FileNotFoundError):
        await kernel.cgroup_remove("wharfie-test/a")


async def test_missing_cgroup(kernel: Any) -> None:
    path = "wharfie-test/missing"
    for call in (kernel.cgroup_update(path, Resources()), kernel.cgroup_freeze(path),
                 kernel.cgroup_thaw(path), kernel.cgroup_stats(path), kernel.cgroup_procs(path),
                 kernel.cgroup_kill(path), kernel.cgroup_remove(path)):
        with pytest.raises(FileNotFoundError):
            await call


@pytest.mark.parametrize("resources", [
    Resources(cpu_shares=1), Resources(cpu_shares=262145), Resources(memory=-5),
    Resources(memory=64 * MiB, memory_swap=32 * MiB), Resources(io_weight=5),
    Resources(cpu_period=10), Resources(cpu_quota=5), Resources(cpuset_cpus="0-999"),
    Resources(cpuset_cpus="zero"),
])
async def test_invalid_values(kernel: Any, resources: Resources) -> None:
    with pytest.raises(OSError) as ei:
        await kernel.cgroup_create("wharfie-test/bad", resources)
    assert ei.value.errno == errno.EINVAL
    assert "cgroups" not in kernel.leaks()


async def test_valid_values(kernel: Any) -> None:
    r = Resources(memory=64 * MiB, memory_swap=-1, memory_reservation=32 * MiB, cpu_shares=512,
                  cpu_quota=50_000, cpu_period=100_000, cpuset_cpus="0", pids_limit=-1,
                  io_weight=500)
    await kernel.cgroup_create("wharfie-test/ok", r)
    assert (await kernel.cgroup_stats("wharfie-test/ok")).pids_limit is None
    await kernel.cgroup_update("wharfie-test/ok", Resources(cpu_shares=1024, pids_limit=5))
    assert (await kernel.cgroup_stats("wharfie-test/ok")).pids_limit == 5
    with pytest.raises(OSError) as ei:
        await kernel.cgroup_update("wharfie-test/ok", Resources(cpu_shares=1))
    assert ei.value.errno == errno.EINVAL
    await kernel.cgroup_remove("wharfie-test/ok")


async def test_procs_accounting_and_remove_busy(kernel: Any, box: Box) -> None:
    cg = await box.cgroup()
    init = await box.spawn("sh", "-c", "sleep 1000 & yes > /dev/null", cgroup=cg)
    await asyncio.sleep(2)
    procs = await kernel.cgroup_procs(cg)
    assert init in procs and len(procs) == 2  # sh execs its last command: yes, sleep
    stats = await kernel.cgroup_stats(cg)
    assert stats.pids_current == 2
    assert stats.memory_usage > 0 and stats.memory_max_usage >= stats.memory_usage
    assert stats.cpu_usage_ns > 0.5e9  # yes is busy
    with pytest.raises(OSError) as ei:
        await kernel.cgroup_remove(cg)
    assert ei.value.errno == errno.EBUSY
    await kernel.cgroup_kill(cg)
    assert await kernel.wait(init, timeout=5) == ExitStatus(signal=SIGKILL)
    assert await kernel.cgroup_procs(cg) == []
    await box.release(init)


async def test_freeze_and_thaw(kernel: Any, box: Box) -> None:
    cg = await box.cgroup()
    init = await box.spawn("sh", "-c", "while true; do echo x; sleep 1; done", cgroup=cg)
    stdio = await kernel.stdio(init)
    assert await asyncio.wait_for(stdio.read(), 5) == (1, b"x\n")
    await kernel.cgroup_freeze(cg)
    await kernel.cgroup_freeze(cg)  # idempotent
    assert (await kernel.cgroup_stats(cg)).frozen
    assert {p.state for p in await kernel.processes(init)} == {"T"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stdio.read(), 5)  # nothing while frozen
    await kernel.cgroup_thaw(cg)
    await kernel.cgroup_thaw(cg)
    assert not (await kernel.cgroup_stats(cg)).frozen
    assert await asyncio.wait_for(stdio.read(), 5) == (1, b"x\n")
    stdio.close()
    await kernel.signal(init, SIGKILL)
    await kernel.wait(init)


async def test_kill_frozen_cgroup(kernel: Any, box: Box) -> None:
    cg = await box.cgroup()
    init = await box.spawn("sleep", "1000", cgroup=cg)
    await kernel.cgroup_freeze(cg)
    await kernel.cgroup_kill(cg)
    assert await kernel.wait(init, timeout=5) == ExitStatus(signal=SIGKILL)
    await kernel.cgroup_thaw(cg)
    await box.release(init)


async def test_sigterm_to_frozen_process_waits_for_thaw(kernel: Any, box: Box) -> None:
    cg = await box.cgroup()
    init = await box.spawn("sh", "-c", 'trap "exit 9" TERM; while true; do sleep 1; done',
                           cgroup=cg)
    await asyncio.sleep(0.5)
    await kernel.cgroup_freeze(cg)
    await kernel.signal(init, 15)
    assert await kernel.wait(init, timeout=3) is None
    await kernel.cgroup_thaw(cg)
    assert await kernel.wait(init, timeout=5) == ExitStatus(code=9)
    await box.release(init)


async def test_oom_on_update(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(memory=512 * MiB))
    init = await box.spawn("sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M & sleep 1000",
                           cgroup=cg)
    await asyncio.sleep(1)
    assert (await kernel.cgroup_stats(cg)).memory_usage >= 64 * MiB
    await kernel.cgroup_update(cg, Resources(memory=32 * MiB, memory_swap=32 * MiB))
    await asyncio.sleep(0.5)
    stats = await kernel.cgroup_stats(cg)
    assert stats.oom_kills >= 1
    assert stats.memory_usage <= 32 * MiB
    # which members die is the OOM killer's choice: Linux 6.1 on cgroup v2 kills the hog and,
    # while its memory is still being freed, often the container's init too (`echo 32M >
    # memory.max` by hand does the same, so does runc). Whatever is left goes with cgroup.kill.
    await kernel.cgroup_kill(cg)
    assert await kernel.wait(init, timeout=5) == ExitStatus(signal=SIGKILL)


async def test_oom_memory_hog_in_shell(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(memory=32 * MiB, memory_swap=32 * MiB))
    code, out, err = await box.run(
        "sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo status=$?", cgroup=cg,
        stdio=StdioSpec())
    assert code == 0
    assert out == b"status=137\n"
    assert (await kernel.cgroup_stats(cg)).oom_kills >= 1


@pytest.mark.sim
async def test_fault_injection(kernel: Any) -> None:
    kernel.faults.fail_next("cgroup_create", errno.ENOSPC)
    with pytest.raises(OSError) as ei:
        await kernel.cgroup_create("wharfie-test/f", Resources())
    assert ei.value.errno == errno.ENOSPC
    assert kernel.leaks() == {}
