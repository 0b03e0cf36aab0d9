"""Docker's NDJSON progress messages for pull and push (``jsonmessage.JSONMessage``).

A message is ``{"status", "id"?, "progressDetail"?, "progress"?}``; the docker CLI draws one
line per ``id`` from ``progressDetail`` on a terminal and prints ``status`` lines otherwise.
Callbacks may run on worker threads; :class:`Reporter` throttles byte counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[dict[str, Any]], None]
STEP_SECONDS = 0.1


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"  # pragma: no cover


def bar(current: int, total: int, width: int = 50) -> str:
    """Docker's ``[====>    ]  1.2MB/3.4MB`` (no bar without a total)."""
    if total <= 0:
        return human(current)
    filled = min(width, int(width * current / total))
    arrow = ">" if filled < width else ""
    return f"[{'=' * filled}{arrow}{' ' * (width - filled - len(arrow))}] {human(current):>8}/{human(total)}"


class Reporter:
    """Sends messages to ``progress`` (if any), serialised, with byte counters throttled."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, float]] = {}

    def status(self, status: str, ident: str | None = None, **extra: Any) -> None:
        if self.progress is None:
            return
        msg: dict[str, Any] = {"status": status} if status else {}
        if ident is not None:
            msg["progressDetail"] = {}
            msg["id"] = ident
        msg.update(extra)
        with self._lock:
            self.progress(msg)

    def bytes(self, status: str, ident: str, current: int, total: int, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        key = status + ident
        _last_n, last_t = self._last.get(key, (0, -STEP_SECONDS))
        if not force and current < total and now - last_t < STEP_SECONDS:
            return
        self._last[key] = (current, now)
        msg = {"status": status, "progressDetail": {"current": current, "total": total},
               "progress": bar(current, total), "id": ident}
        with self._lock:
            self.progress(msg)
