"""Registry endpoints: pull (``POST /images/create?fromImage=``, dispatched from
``images.create``), push (``POST /images/{name}/push``) and login (``POST /auth``).

Pull and push stream Docker's NDJSON progress. As dockerd does, an error before the first
progress message is a plain HTTP error (so ``docker pull`` of a missing repository says
"Error response from daemon: …" and a 404 stays a 404); after it, errors are sent in-band as
``{"error": …, "errorDetail": {"message": …}}``. A client that goes away cancels the transfer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.api.keys import ENGINE
from engine.api.params import json_body, json_response, q_str
from engine.api.streams import ndjson_response, send_json_line
from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied
from engine.registry.credentials import Credentials, decode_registry_auth

Progress = Callable[[dict[str, Any]], None]


async def _stream(request: web.Request, run: Callable[[Progress, threading.Event], Awaitable[Any]]) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def progress(msg: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, msg)

    task = asyncio.ensure_future(run(progress, cancel))
    resp: web.StreamResponse | None = None
    try:
        while not task.done():
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                break
            resp = resp or await ndjson_response(request)
            await send_json_line(resp, get.result())
        await asyncio.sleep(0)
        while not queue.empty():
            resp = resp or await ndjson_response(request)
            await send_json_line(resp, queue.get_nowait())
        exc = task.exception()
        if exc is not None:
            if resp is None:
                raise exc
            if not isinstance(exc, EngineError):
                raise exc
            await send_json_line(resp, {"errorDetail": {"message": exc.message}, "error": exc.message})
    except BaseException:
        cancel.set()
        if not task.done():
            task.cancel()
        raise
    if resp is None:
        resp = await ndjson_response(request)
    await resp.write_eof()
    return resp


def _auth(request: web.Request) -> Credentials | None:
    return decode_registry_auth(request.headers.get("X-Registry-Auth", ""))


async def pull(request: web.Request, image: str) -> web.StreamResponse:
    """``fromImage`` (+ ``tag``, which may be a digest) → one pull."""
    tag = q_str(request, "tag")
    reference = image
    if tag:
        reference = f"{image}@{tag}" if tag.startswith("sha256:") else f"{image}:{tag}"
    platform = q_str(request, "platform") or None
    e, auth = request.app[ENGINE], _auth(request)
    return await _stream(request, lambda progress, cancel: e.image_pull(reference, platform, auth, progress, cancel))


async def push(request: web.Request) -> web.StreamResponse:
    e, auth = request.app[ENGINE], _auth(request)
    name, tag = request.match_info["name"], q_str(request, "tag")
    if tag:
        targets = [f"{name}:{tag}"]
    else:  # like dockerd: every local tag of the repository (or the reference given whole)
        from engine import refs

        parsed = refs.parse(name, default_tag=False)
        if parsed.tag or parsed.digest:
            targets = [name]
        else:
            targets = sorted(str(refs.parse(t)) for t in e.image_store.meta.list_tags()
                             if refs.parse(t).repository == parsed.repository)
            if not targets:
                raise NotFound(f"An image does not exist locally with the tag: {parsed.name}")

    async def run(progress: Progress, cancel: threading.Event) -> None:
        for target in targets:
            await e.image_push(target, auth, progress, cancel)

    return await _stream(request, run)


async def auth(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid login request: want a JSON object")
    try:
        status = await request.app[ENGINE].registry_login(str(body.get("serveraddress") or ""),
                                                          str(body.get("username") or ""),
                                                          str(body.get("password") or ""))
    except PermissionDenied as err:
        # dockerd answers a refused login with 401 (the one status our error map does not make)
        return web.json_response({"message": err.message, "kind": err.kind}, status=401)
    return json_response({"Status": status["Status"], "IdentityToken": ""})


ROUTES = [
    ("POST", "/images/{name:.+}/push", push),
    ("POST", "/auth", auth),
]
