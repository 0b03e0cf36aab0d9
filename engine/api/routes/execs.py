"""Exec endpoints: create, start (hijacked or detached), inspect, resize."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from engine.api import wire
from engine.api.keys import ENGINE
from engine.api.params import json_body, json_response, q_int, ref
from engine.api.routes.streams import DETACH_KEYS, session
from engine.api.streams import MULTIPLEXED, RAW, Hijack, frame
from engine.errors import EngineError, InvalidArgument

HEADERS_ALONE = 0.02


async def create(request: web.Request) -> web.Response:
    kw = wire.exec_config(await json_body(request, required=True))
    rec = request.app[ENGINE].exec_create(ref(request), **kw)
    return json_response({"Id": rec.id}, 201)


async def start(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    detach = wire.get_bool(body, "Detach", "container.ExecStartOptions")
    rec = e.exec_inspect(ref(request))
    if detach:
        await e.exec_start(rec.id)
        return json_response({})
    hj = await Hijack.start(request, RAW if rec.tty else MULTIPLEXED)
    # docker-py reads the 101 through a buffered reader and then the raw socket: output sent in
    # the same segment as the headers would be lost in its buffer. Let the headers travel alone.
    await asyncio.sleep(HEADERS_ALONE)
    try:
        await e.exec_start(rec.id)
    except EngineError as err:  # after the 101 the error can only travel in the stream (as moby does)
        msg = (err.message + "\r\n").encode()
        with contextlib.suppress(ConnectionResetError):
            await hj.write(msg if rec.tty else frame(2, msg))
        hj.close()
        return hj.response
    att: Any = e.exec_attach(rec.id)
    await session(hj, _WaitExit(att, e, rec.id), rec.tty, rec.open_stdin, DETACH_KEYS if rec.tty else b"")
    return hj.response


class _WaitExit:
    """Delays the end of the output until the exec's exit code is recorded, so the client's
    ``GET /exec/{id}/json`` right after the stream ends sees it."""

    def __init__(self, att: Any, engine: Any, exec_id: str) -> None:
        self._att, self._engine, self._id = att, engine, exec_id

    async def output(self) -> Any:
        async for item in self._att.output():
            yield item
        await self._engine.exec_wait(self._id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._att, name)


async def inspect(request: web.Request) -> web.Response:
    return json_response(wire.exec_inspect(request.app[ENGINE].exec_inspect(ref(request))))


async def resize(request: web.Request) -> web.Response:
    h, w = q_int(request, "h", 0) or 0, q_int(request, "w", 0) or 0
    await request.app[ENGINE].exec_resize(ref(request), h, w)
    return web.Response(status=201)


ROUTES = [
    ("POST", "/containers/{id}/exec", create),
    ("POST", "/exec/{id}/start", start),
    ("GET", "/exec/{id}/json", inspect),
    ("POST", "/exec/{id}/resize", resize),
]
