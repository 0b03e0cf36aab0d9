"""Human-readable durations and sizes, exactly as Docker prints them (go-units).

Dependency-free: the daemon (container ``Status`` strings) and the CLI (``CREATED`` columns)
both use it, and the CLI must start fast.
"""

from __future__ import annotations

import re
import time

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtpKMGTP]?)(i?)[bB]?$")


def duration(seconds: float) -> str:
    """go-units ``HumanDuration``: "Less than a second", "5 seconds", "About a minute"…"""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(ts: float, now: float | None = None) -> str:
    """"5 minutes ago" for an epoch timestamp."""
    return duration((time.time() if now is None else now) - ts) + " ago"


def _fmt(size: float, base: float, units: tuple[str, ...], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def size(n: float, precision: int = 4) -> str:
    """go-units ``HumanSizeWithPrecision`` (decimal): "4.41MB"."""
    return _fmt(float(n), 1000.0, _DECIMAL, precision)


def bytes_size(n: float) -> str:
    """go-units ``BytesSize`` (binary): "1.5MiB"."""
    return _fmt(float(n), 1024.0, _BINARY, 4)


def parse_size(text: str | int) -> int:
    """"512m", "1g", "10k", "100" (bytes) → bytes, binary multiples as Docker's RAMInBytes.

    Raises ValueError for anything else (callers turn it into InvalidArgument).
    """
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    num, unit = float(m.group(1)), m.group(2).lower()
    mult = 1024 ** ("bkmgtp".index(unit) if unit else 0)
    return int(num * mult)


def progress_bar(current: int, total: int, width: int = 200) -> str:
    """jsonmessage ``JSONProgress.String``: ``"[=====>     ]  1.24MB/3.5MB"`` (the bar only when
    ``width`` > 110, as on a wide terminal; the daemon uses 200, as moby's stream formatter)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{size(current):>8}"
    pct = min(int(current / total * 100) // 2, 50)
    bar = f"[{'=' * pct}>{' ' * (50 - pct)}] " if width > 110 else ""
    numbers = f"{size(current):>8}/{size(total)}" if current <= total else f"{size(current):>8}"
    return bar + numbers
