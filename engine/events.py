"""The engine's event stream (``docker events``): a bounded history plus live subscribers."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from engine.errors import InvalidArgument

HISTORY = 1024
FILTER_KEYS = {"type", "event", "container", "image", "label", "scope", "network", "volume", "daemon"}


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # "container", "image", "network", "volume", "daemon"
    action: str  # "create", "start", "die", "health_status: healthy", …
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    time: float = 0.0  # wall epoch seconds
    scope: str = "local"


def check_filters(filters: Mapping[str, list[str]]) -> None:
    for key in filters:
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'")


def matches(ev: Event, filters: Mapping[str, list[str]]) -> bool:
    """Docker semantics: values of one key are OR'ed, different keys AND'ed."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = ev.type in values
        elif key == "event":
            ok = ev.action in values or ev.action.split(":")[0] in values
        elif key in ("container", "image", "network", "volume"):
            if key == "image" and ev.type == "container":
                ok = ev.attributes.get("image") in values or ev.actor_id in values
            else:
                ok = ev.type == key and (ev.actor_id in values or ev.attributes.get("name") in values
                                         or any(ev.actor_id.startswith(v) for v in values if len(v) >= 3))
        elif key == "label":
            ok = any(_label_match(ev.attributes, v) for v in values)
        elif key == "scope":
            ok = ev.scope in values
        else:
            ok = True
        if not ok:
            return False
    return True


def _label_match(attrs: Mapping[str, str], spec: str) -> bool:
    k, eq, v = spec.partition("=")
    return k in attrs and (not eq or attrs[k] == v)


class EventBus:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._history: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        self._subs: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        """Call ``fn`` synchronously as each event is emitted, before the emitter's next
        ``await``: for work that must happen at that exact point (``attach`` opens a container's
        log the moment it starts, before its process can write and exit). ``fn`` must not raise."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, type_: str, action: str, actor_id: str, attributes: Mapping[str, str] | None = None) -> Event:
        ev = Event(type_, action, actor_id, dict(attributes or {}), self._clock())
        self._history.append(ev)
        for q in list(self._subs):
            q.put_nowait(ev)
        for fn in list(self._listeners):
            fn(ev)
        return ev

    def history(self, filters: Mapping[str, list[str]] | None = None, since: float | None = None,
                until: float | None = None) -> list[Event]:
        f = filters or {}
        return [e for e in self._history
                if (since is None or e.time >= since) and (until is None or e.time <= until) and matches(e, f)]

    async def stream(self, filters: Mapping[str, list[str]] | None = None, since: float | None = None,
                     until: float | None = None) -> AsyncIterator[Event]:
        """Past events from ``since`` then live ones, until ``until`` (wall time) if given."""
        f = filters or {}
        check_filters(f)
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subs.add(q)
        try:
            if since is not None:
                for ev in self.history(f, since, until):
                    yield ev
            if until is not None and until <= self._clock():
                return
            while True:
                if until is not None:
                    remaining = until - self._clock()
                    if remaining <= 0:
                        return
                    try:
                        ev = await asyncio.wait_for(q.get(), remaining)
                    except TimeoutError:
                        return
                else:
                    ev = await q.get()
                if until is not None and ev.time > until:
                    return
                if matches(ev, f):
                    yield ev
        finally:
            self._subs.discard(q)
