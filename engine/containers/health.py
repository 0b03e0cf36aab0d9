"""Healthchecks: a probe exec'd in the container every interval; status in inspect and ps.

Docker's rules: the first probe runs one interval after start (``start_interval`` during the
start period); a probe that exits 0 makes the container healthy; ``retries`` consecutive
failures make it unhealthy, but failures inside the start period do not count; a probe that
outlives ``timeout`` is killed and counts as a failure. The last five results are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from engine.containers.record import HEALTH_LOG_KEEP, Container, HealthResult, HealthState
from engine.errors import EngineError
from engine.model import Health, Status

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_START_INTERVAL = 5.0
OUTPUT_LIMIT = 4096


class HealthMixin:
    async def _health_loop(self: ContainerService, c: Container, pid: int) -> None:
        hc = c.healthcheck
        assert hc is not None
        argv = hc.argv()
        if argv is None:
            return
        interval = hc.interval or DEFAULT_INTERVAL
        timeout = hc.timeout or DEFAULT_TIMEOUT
        retries = hc.retries or DEFAULT_RETRIES
        start_interval = hc.start_interval or DEFAULT_START_INTERVAL
        started = asyncio.get_running_loop().time()
        while c.state.status in (Status.RUNNING, Status.PAUSED) and c.state.pid == pid:
            in_start = asyncio.get_running_loop().time() - started < hc.start_period
            await asyncio.sleep(start_interval if in_start and hc.start_period else interval)
            if c.state.status is not Status.RUNNING or c.state.pid != pid:
                if c.state.status is Status.PAUSED:
                    continue
                return
            in_start = asyncio.get_running_loop().time() - started < hc.start_period
            begin = self.ctx.wall()
            try:
                res = await self.exec_run(c.id, argv, timeout=timeout)
                code, output = res.exit_code, (res.stdout + res.stderr)[:OUTPUT_LIMIT].decode("utf-8", "replace")
                if code == 137 and self.ctx.wall() - begin >= timeout:
                    code, output = -1, f"Health check exceeded timeout ({timeout:g}s)"
            except EngineError as e:
                if c.state.status is not Status.RUNNING:
                    return
                code, output = -1, str(e)
            self._record_health(c, HealthResult(begin, self.ctx.wall(), code, output), retries, in_start)

    def _record_health(self: ContainerService, c: Container, res: HealthResult, retries: int, in_start: bool) -> None:
        h = c.state.health
        if h is None:
            h = c.state.health = HealthState()
        before = h.status
        h.log = (h.log + [res])[-HEALTH_LOG_KEEP:]
        if res.exit_code == 0:
            h.status, h.failing_streak = Health.HEALTHY, 0
        elif not in_start:
            h.failing_streak += 1
            if h.failing_streak >= retries:
                h.status = Health.UNHEALTHY
        with contextlib.suppress(EngineError):
            self.save(c)
        if h.status is not before:
            self.emit(c, f"health_status: {h.status.value}")
