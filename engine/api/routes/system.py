"""System endpoints: ping, version, info, events, disk usage, and the prune endpoints of the
resources wharfie does not have yet (networks, volumes, build cache: nothing to prune), so that
``docker system prune`` works."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from aiohttp import web

from engine.api import wire, wire_images
from engine.api.keys import ENGINE
from engine.api.params import json_response, q_str
from engine.api.streams import ndjson_response, send_json_line


class Backend(Protocol):
    def version(self) -> dict[str, str]: ...
    def info(self) -> dict[str, Any]: ...
    def events_stream(self, filters: Mapping[str, list[str]] | None = None, since: float | None = None,
                      until: float | None = None) -> AsyncIterator[Any]: ...


PING_HEADERS = {"Builder-Version": "1", "Swarm": "inactive", "Cache-Control": "no-cache, no-store, must-revalidate",
                "Pragma": "no-cache"}


async def ping(request: web.Request) -> web.Response:
    body = b"" if request.method == "HEAD" else b"OK"
    return web.Response(body=body, content_type="text/plain", headers=PING_HEADERS)


async def version(request: web.Request) -> web.Response:
    return json_response(wire_images.version(request.app[ENGINE].version()))


async def info(request: web.Request) -> web.Response:
    return json_response(wire_images.info(request.app[ENGINE].info(), socket.gethostname()))


async def events(request: web.Request) -> web.StreamResponse:
    """Past events (``since``) then live ones until ``until`` or the client leaves."""
    engine = request.app[ENGINE]
    now = time.time()
    since = wire_images.parse_time_param(q_str(request, "since") or None, now)
    until = wire_images.parse_time_param(q_str(request, "until") or None, now)
    filters = wire_images.parse_filters(q_str(request, "filters") or None)
    stream = engine.events_stream(filters, since, until)
    first = asyncio.ensure_future(anext(stream, None))  # validates filters before headers go out
    try:
        await asyncio.wait_for(asyncio.shield(first), 0.05)
    except TimeoutError:
        pass
    except BaseException:
        await stream.aclose()
        raise
    resp = await ndjson_response(request)
    try:
        ev = await first
        while ev is not None:
            await send_json_line(resp, wire_images.event(ev))
            ev = await anext(stream, None)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if not first.done():
            first.cancel()
        with contextlib.suppress(Exception):
            await stream.aclose()
    return resp


async def disk_usage(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    df = await engine.system_df()
    containers = [wire.list_item(c) for c in engine.container_list(all=True)]
    return json_response(wire_images.disk_usage(df, containers))


async def prune_nothing(request: web.Request) -> web.Response:
    wire_images.parse_filters(q_str(request, "filters") or None)
    key = {"networks": "NetworksDeleted", "volumes": "VolumesDeleted", "build": "CachesDeleted"}[
        request.path.rstrip("/").split("/")[-2]]
    doc: dict[str, Any] = {key: None}
    if key != "NetworksDeleted":
        doc["SpaceReclaimed"] = 0
    return json_response(doc)


ROUTES = [
    ("GET", "/_ping", ping),
    ("HEAD", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("GET", "/events", events),
    ("GET", "/system/df", disk_usage),
    ("POST", "/networks/prune", prune_nothing),
    ("POST", "/volumes/prune", prune_nothing),
    ("POST", "/build/prune", prune_nothing),
]
