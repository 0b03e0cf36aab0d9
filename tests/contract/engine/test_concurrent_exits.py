"""Many containers ending at once: every exit is recorded and everything is given back.

Seen once in the benchmark on Linux: ``rm -f`` of twenty running containers at once left one
"running" forever — the unmount's worker thread read the process table while the event loop
released other sandboxes from it, and the exit handling of that container died half-way. The
race is too narrow to trigger on demand; these check the outcome the fix guarantees.
"""

from __future__ import annotations

import asyncio

from engine.engine import Engine
from tests.contract.engine.helpers import spec

N = 12


async def test_force_remove_of_many_running_containers_at_once(engine: Engine) -> None:
    ids = []
    for _ in range(N):
        c = await engine.container_create(spec("sleep", "1000"))
        await engine.container_start(c.id)
        ids.append(c.id)
    await asyncio.wait_for(asyncio.gather(*(engine.container_remove(i, force=True) for i in ids)), 60)
    assert engine.container_list(all=True) == []
    leaks = engine.kernel.leaks()  # type: ignore[attr-defined]
    assert "processes" not in leaks and "mounts" not in leaks and "cgroups" not in leaks


async def test_many_auto_removed_containers_ending_together(engine: Engine) -> None:
    waits = []
    for _ in range(N):
        c = await engine.container_create(spec("sleep", "1", auto_remove=True))
        waits.append(asyncio.ensure_future(engine.container_wait(c.id, "removed")))
        await asyncio.sleep(0)  # the wait is in place before the start
        await engine.container_start(c.id)
    codes = await asyncio.wait_for(asyncio.gather(*waits), 60)
    assert codes == [0] * N
    assert engine.container_list(all=True) == []
    leaks = engine.kernel.leaks()  # type: ignore[attr-defined]
    assert "processes" not in leaks and "mounts" not in leaks and "cgroups" not in leaks
