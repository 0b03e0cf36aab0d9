"""Request parsing helpers shared by the route modules: query parameters and JSON bodies.

Every failure is an ``InvalidArgument`` (→ 400 through the error middleware), never a 500.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from engine.errors import InvalidArgument

TRUE = {"1", "true", "True", "TRUE", "yes"}
FALSE = {"", "0", "false", "False", "FALSE", "no"}


def q_bool(request: web.Request, key: str, default: bool = False) -> bool:
    v = request.query.get(key)
    if v is None:
        return default
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise InvalidArgument(f"invalid value for {key}: {v!r} (expected a boolean)")


def q_int(request: web.Request, key: str, default: int | None = None) -> int | None:
    v = request.query.get(key)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise InvalidArgument(f"invalid value for {key}: {v!r} (expected an integer)") from None


def q_str(request: web.Request, key: str, default: str = "") -> str:
    return request.query.get(key, default)


def ref(request: web.Request, key: str = "id") -> str:
    return request.match_info[key]


async def json_body(request: web.Request, required: bool = False) -> Any:
    """The request body as JSON; ``{}`` when empty and not ``required``. Raises InvalidArgument."""
    data = await request.read()
    if not data.strip():
        if required:
            raise InvalidArgument("request body is required")
        return {}
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument("invalid JSON: nested too deeply") from None


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(), content_type="application/json")


def no_content(status: int = 204) -> web.Response:
    return web.Response(status=status)


def tmp_dir(engine: object) -> str | None:
    """``<root>/tmp`` of the engine's state (for spooled uploads), or None (the system's)."""
    root = getattr(getattr(engine, "ctx", None), "root", None)
    if root:
        path = os.path.join(root, "tmp")
        os.makedirs(path, exist_ok=True)
        return path
    return None
