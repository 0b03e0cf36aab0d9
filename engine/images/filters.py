"""``docker images`` filters: reference globs, dangling, label, before/since.

Filters arrive as ``{name: [values…]}`` (the API layer normalises Docker's two JSON shapes).
Values of one filter are OR'ed (``reference``) or AND'ed (``label``), as Docker does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from engine.errors import InvalidArgument
from engine.refs import Reference

KNOWN = frozenset({"reference", "dangling", "label", "before", "since"})


def normalise(filters: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    """Copy ``filters`` to lists, rejecting unknown names ("invalid filter 'x'")."""
    out: dict[str, list[str]] = {}
    for key, values in (filters or {}).items():
        if key not in KNOWN:
            raise InvalidArgument(f"invalid filter '{key}'")
        out[key] = [values] if isinstance(values, str) else list(values)
    return out


def parse_bool(key: str, values: list[str]) -> bool:
    """A boolean filter such as ``dangling=true``. Raises InvalidArgument."""
    got = {v.lower() for v in values}
    if got <= {"true", "1"}:
        return True
    if got <= {"false", "0"}:
        return False
    raise InvalidArgument(f"invalid filter '{key}={','.join(values)}'")


@lru_cache(maxsize=256)
def _glob_re(pattern: str) -> re.Pattern[str]:
    """Go's ``path.Match`` syntax: ``*`` and ``?`` do not cross ``/``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise InvalidArgument(f"invalid reference filter pattern {pattern!r}: syntax error")
            body = pattern[i + 1:end]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def glob_match(pattern: str, text: str) -> bool:
    """``path.Match(pattern, text)``. Raises InvalidArgument for a malformed pattern."""
    return bool(_glob_re(pattern).match(text))


def reference_matches(pattern: str, ref: Reference) -> bool:
    """moby's ``FamiliarMatch``: the pattern against ``busybox:latest`` or ``busybox``."""
    return glob_match(pattern, str(ref)) or glob_match(pattern, ref.name)


def labels_match(wanted: list[str], labels: Mapping[str, str]) -> bool:
    """Every ``key`` or ``key=value`` in ``wanted`` holds for ``labels``."""
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True
