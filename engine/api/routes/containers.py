"""Container endpoints (the streaming ones — logs, attach, stats — live in ``routes.streams``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Protocol

from aiohttp import web

from engine.api import wire
from engine.api.keys import ENGINE
from engine.api.params import json_body, json_response, no_content, q_bool, q_int, q_str, ref
from engine.api.routes import streams
from engine.api.wire_images import parse_filters
from engine.errors import EngineError, InvalidArgument


class Backend(Protocol):
    """The engine verbs these routes use (see ``engine.engine.Engine``)."""

    async def container_create(self, spec: Any, name: str | None = None) -> Any: ...
    async def container_start(self, ref: str) -> bool: ...
    async def container_stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool: ...
    async def container_kill(self, ref: str, signal: str | int = "SIGKILL") -> None: ...
    async def container_wait(self, ref: str, condition: str = "not-running") -> int: ...
    def container_inspect(self, ref: str) -> Any: ...
    def container_list(self, all: bool = False, filters: Any = None, limit: int = -1) -> list[Any]: ...


def _engine(request: web.Request) -> Any:
    return request.app[ENGINE]


async def create(request: web.Request) -> web.Response:
    spec = wire.parse_create(await json_body(request, required=True))
    name = q_str(request, "name") or None
    c = await _engine(request).container_create(spec, name)
    return json_response({"Id": c.id, "Warnings": []}, 201)


async def list_(request: web.Request) -> web.Response:
    e = _engine(request)
    size = q_bool(request, "size")
    cs = e.container_list(all=q_bool(request, "all"), filters=parse_filters(q_str(request, "filters") or None),
                          limit=q_int(request, "limit", -1) or -1)
    return json_response([wire.list_item(c, e.container_logs_size(c.id) if size else None) for c in cs])


async def inspect(request: web.Request) -> web.Response:
    e = _engine(request)
    c = e.container_inspect(ref(request))
    size = e.container_logs_size(c.id) if q_bool(request, "size") else None
    return json_response(wire.inspect(c, size, 0 if size is not None else None))


async def start(request: web.Request) -> web.Response:
    e = _engine(request)
    try:
        started = await e.container_start(ref(request))
    except EngineError:
        # moby removes an AutoRemove container whose start failed; the docker CLI waits for that
        c = e.container_inspect(ref(request))
        if c.spec.auto_remove:
            with contextlib.suppress(EngineError):
                await e.container_remove(c.id, force=True)
        raise
    return no_content(204 if started else 304)


def _timeout(request: web.Request) -> int | None:
    return q_int(request, "t", None) if "t" in request.query else q_int(request, "timeout", None)


async def stop(request: web.Request) -> web.Response:
    stopped = await _engine(request).container_stop(ref(request), _timeout(request), q_str(request, "signal") or None)
    return no_content(204 if stopped else 304)


async def kill(request: web.Request) -> web.Response:
    await _engine(request).container_kill(ref(request), q_str(request, "signal") or "SIGKILL")
    return no_content()


async def restart(request: web.Request) -> web.Response:
    await _engine(request).container_restart(ref(request), _timeout(request))
    return no_content()


async def pause(request: web.Request) -> web.Response:
    await _engine(request).container_pause(ref(request))
    return no_content()


async def unpause(request: web.Request) -> web.Response:
    await _engine(request).container_unpause(ref(request))
    return no_content()


async def wait(request: web.Request) -> web.StreamResponse:
    """Headers go out at once (the docker CLI waits for them before ``start``); the body when done."""
    e = _engine(request)
    condition = q_str(request, "condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidArgument(f"invalid condition: {condition!r}")
    c = e.container_inspect(ref(request))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    code = await e.container_wait(c.id, condition)
    error = c.state.error if c.state.exit_code else ""
    with contextlib.suppress(ConnectionResetError):
        # the result and the chunked body's end in one write: the client reads to the end
        await resp.write_eof(json.dumps(wire.wait_result(code, error)).encode() + b"\n")
    return resp


async def remove(request: web.Request) -> web.Response:
    await _engine(request).container_remove(ref(request), force=q_bool(request, "force"), volumes=q_bool(request, "v"))
    return no_content()


async def rename(request: web.Request) -> web.Response:
    name = q_str(request, "name")
    if not name:
        raise InvalidArgument("name is required")
    _engine(request).container_rename(ref(request), name)
    return no_content()


async def update(request: web.Request) -> web.Response:
    resources, policy = wire.parse_update(await json_body(request, required=True))
    warnings = await _engine(request).container_update(ref(request), resources, policy)
    return json_response({"Warnings": warnings})


async def top(request: web.Request) -> web.Response:
    return json_response(wire.top(await _engine(request).container_top(ref(request))))


async def resize(request: web.Request) -> web.Response:
    h, w = q_int(request, "h", 0) or 0, q_int(request, "w", 0) or 0
    if h < 0 or w < 0:
        raise InvalidArgument("invalid tty size")
    await _engine(request).container_resize(ref(request), h, w)
    return web.Response(status=200)


async def prune(request: web.Request) -> web.Response:
    e = _engine(request)
    filters = parse_filters(q_str(request, "filters") or None)
    for key in filters:
        if key not in ("label", "until"):
            raise InvalidArgument(f"invalid filter '{key}'")
    deleted, space = [], 0
    label_f = {"label": filters["label"]} if "label" in filters else {}
    for c in e.container_list(all=True, filters={"status": ["exited", "created", "dead"], **label_f}):
        size = e.container_logs_size(c.id)
        with contextlib.suppress(Exception):
            await e.container_remove(c.id)
            deleted.append(c.id)
            space += size
    return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": space})


ROUTES = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_),
    ("POST", "/containers/prune", prune),
    ("GET", "/containers/{id}/json", inspect),
    ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/stop", stop),
    ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/restart", restart),
    ("POST", "/containers/{id}/pause", pause),
    ("POST", "/containers/{id}/unpause", unpause),
    ("POST", "/containers/{id}/wait", wait),
    ("DELETE", "/containers/{id}", remove),
    ("POST", "/containers/{id}/rename", rename),
    ("POST", "/containers/{id}/update", update),
    ("GET", "/containers/{id}/top", top),
    ("POST", "/containers/{id}/resize", resize),
    ("GET", "/containers/{id}/logs", streams.logs),
    ("GET", "/containers/{id}/stats", streams.stats),
    ("POST", "/containers/{id}/attach", streams.attach),
]
