"""What a registry's answers mean: errors, ``Retry-After`` and auth challenges.

* An error answer becomes an EngineError (:func:`error_for`) carrying the registry's own error
  code and message (``{"errors": [{"code", "message"}]}``) in its text: 401/403 →
  PermissionDenied, 404 → NotFound, 429/5xx → :class:`RegistryBusy` (with the ``Retry-After``
  it asked for), anything else → InvalidArgument.
* ``Retry-After`` (:func:`parse_retry_after`): delay-seconds or an HTTP date.
* ``WWW-Authenticate`` (:func:`parse_challenge`): the scheme and its parameters.

Used by :mod:`.session` (which applies them to each request) and its callers.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time

import httpx

from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied, Unavailable

MAX_ERROR_BODY = 64 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class Cancelled(Unavailable):
    """The transfer was cancelled (the API client went away)."""


class RegistryBusy(Unavailable):
    """A 429 or 5xx answer; ``retry_after``: the seconds its ``Retry-After`` asked to wait
    (None when it sent none or an unreadable one)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (RFC 9110: delay-seconds or an HTTP date) → seconds from ``now``
    (``time.time()``), never negative; None if absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate`` → ``(scheme lower-cased, params)``; ``("", {})`` if absent."""
    header = header.strip()
    if not header:
        return "", {}
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3) or "")
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def registry_errors(resp: httpx.Response) -> str:
    """The registry's error list as ``code: message`` text (or the start of the body)."""
    try:
        data = resp.content[:MAX_ERROR_BODY]
    except httpx.HTTPError:
        return ""
    try:
        doc = json.loads(data)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            parts = []
            for e in errs[:5]:
                if isinstance(e, dict):
                    code, msg = str(e.get("code", "")).lower(), str(e.get("message", ""))
                    parts.append(f"{code}: {msg}" if code else msg)
            return "; ".join(parts)
    except (ValueError, UnicodeDecodeError):
        pass
    text = data.decode("utf-8", "replace").strip()
    return text[:200]


def error_for(resp: httpx.Response, what: str) -> EngineError:
    """The EngineError for a failed registry answer (``what`` says what was attempted)."""
    detail = registry_errors(resp) or resp.reason_phrase or f"HTTP {resp.status_code}"
    status = resp.status_code
    msg = f"{what}: {detail} (HTTP {status})"
    if status == 401:
        return PermissionDenied(msg if "unauthorized" in detail.lower() else
                                f"{what}: unauthorized: authentication required ({detail}) (HTTP 401)")
    if status == 403:
        return PermissionDenied(msg if "denied" in detail.lower() else f"{what}: denied: {detail} (HTTP 403)")
    if status == 404:
        return NotFound(msg)
    if status == 429 or status >= 500:
        return RegistryBusy(msg, parse_retry_after(resp.headers.get("retry-after")))
    return InvalidArgument(msg)
