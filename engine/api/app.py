"""The aiohttp application: route table, the one error middleware, Docker's response headers.

Every route is served both unversioned and under ``/v1.NN`` (``MIN_API_VERSION`` ≤ NN ≤
``API_VERSION``). Errors: an ``EngineError`` becomes ``{"message": …, "kind": …}`` with its
``http_status`` (moby ``httpstatus.FromError``: handlers never catch errors themselves); aiohttp's
own HTTP errors (404 route, 405, 413) get the same body shape; anything else is a logged 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine import __version__
from engine.api.keys import ENGINE
from engine.errors import EngineError, InvalidArgument

log = logging.getLogger("wharfied.api")

API_VERSION = "1.47"
MIN_API_VERSION = "1.40"
MAX_BODY = 2 * 1024 * 1024  # JSON bodies; image import streams are read separately
SERVER = f"wharfie/{__version__} (linux)"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"message": message, "kind": kind}).encode(),
                        content_type="application/json")


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return (0,)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("version")
    if version:
        v = _version_tuple(version[1:])
        if v > _version_tuple(API_VERSION):
            return _error(400, f"client version {version[1:]} is too new. Maximum supported API version is "
                               f"{API_VERSION}", "invalid")
        if v < _version_tuple(MIN_API_VERSION):
            return _error(400, f"client version {version[1:]} is too old. Minimum supported API version is "
                               f"{MIN_API_VERSION}, please upgrade your client to a newer version", "invalid")
    try:
        return await handler(request)
    except EngineError as e:
        if e.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return _error(e.http_status, e.message, e.kind)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kind = "not_found" if e.status == 404 else "invalid"
        text = {404: "page not found", 405: "method not allowed"}.get(e.status, e.reason)
        if e.status == 413:
            text = f"request body too large (limit {MAX_BODY} bytes)"
        return _error(e.status, text, kind)
    except (ConnectionResetError, BrokenPipeError):
        raise
    except UnicodeDecodeError as e:
        return _error(400, f"invalid request: {e}", InvalidArgument.kind)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return _error(500, "internal server error (see the daemon log)", "internal")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Api-Version", API_VERSION)
    h.setdefault("Docker-Experimental", "false")
    h.setdefault("Ostype", "linux")
    h["Server"] = SERVER


def make_app(engine: object) -> web.Application:
    from engine.api.routes import container_fs, containers, execs, images, system, registry

    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[ENGINE] = engine
    app.on_response_prepare.append(_headers)
    for module in (registry, system, containers, container_fs, execs, images):
        for method, path, handler in module.ROUTES:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, r"/{version:v[0-9]+\.[0-9]+}" + path, handler)
    return app
