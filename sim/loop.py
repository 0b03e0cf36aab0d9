"""A virtual-time asyncio event loop: simulated time passes instantly when nothing is runnable.

``loop.time()`` is a virtual clock starting at 0. When the loop would block in its selector
waiting for the next timer, and no real I/O is ready and no executor job is in flight, the clock
jumps straight to that timer instead. Real sockets and threads still work: while an executor job
runs, or when no timer is scheduled at all, the loop blocks on the real selector as usual. So a
``docker stop`` with a 10 s timeout, a restart back-off or a healthcheck interval takes
microseconds, deterministically.

The sim kernel schedules its simulated processes on this loop (``call_at``), which makes the loop
clock the sim's clock; with a normal loop the same sim runs in real time (the daemon's case).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        loop = self.loop
        if ready or timeout == 0 or loop is None:
            return ready
        if timeout is None or loop._in_flight:
            # Nothing scheduled (only real I/O can wake us) or a thread is working: block
            # for real, but never so long that a virtual timer would be starved.
            return super().select(None if timeout is None else min(timeout, 0.05))
        loop._now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        sel = _VirtualSelector()
        super().__init__(selector=sel)
        sel.loop = self
        self._now = start
        self._in_flight = 0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand (timers then due run on the next iteration)."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._now += seconds

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self._in_flight += 1
        fut = super().run_in_executor(executor, func, *args)

        def _done(_: object) -> None:
            self._in_flight -= 1

        fut.add_done_callback(_done)
        return fut
