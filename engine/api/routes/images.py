"""Image endpoints: import (``POST /images/create?fromSrc=-``), list, inspect, history, tag,
remove, prune, save (``GET /images/get``) and load (``POST /images/load``). Pulling
(``fromImage``) answers 501 until registry support exists."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from typing import Any

from aiohttp import web

from engine.api import wire_images
from engine.api.keys import ENGINE
from engine.api.params import json_response, q_bool, q_str, ref, tmp_dir
from engine.api.streams import (
    ThreadReader,
    ThreadWriter,
    ndjson_response,
    send_json_line,
    stream_from_thread,
)
from engine.errors import EngineError, InvalidArgument, NotImplemented_
from engine.images.filters import parse_bool

CHUNK = 1 << 16


async def create(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    src, image = q_str(request, "fromSrc"), q_str(request, "fromImage")
    if image:
        from engine.api.routes import registry

        return await registry.pull(request, image)
    if not src:
        raise InvalidArgument("fromSrc or fromImage is required")
    if src != "-":
        raise NotImplemented_(f"importing from a URL is not supported: {src}")
    repo, tag = q_str(request, "repo"), q_str(request, "tag")
    reference = (f"{repo}:{tag}" if tag else repo) or None
    changes = request.query.getall("changes", [])
    message = q_str(request, "message")
    platform = q_str(request, "platform") or None
    # Spool the upload (it may be large) and import it off the event loop.
    with tempfile.TemporaryFile(dir=tmp_dir(e)) as fh:
        while chunk := await request.content.read(CHUNK):
            fh.write(chunk)
        fh.seek(0)
        image_id = await e.image_import_async(fh, reference, changes, message, platform)
    resp = await ndjson_response(request)
    await send_json_line(resp, {"status": image_id})
    await resp.write_eof()
    return resp


async def list_(request: web.Request) -> web.Response:
    filters = wire_images.parse_filters(q_str(request, "filters") or None)
    if q_str(request, "filter"):  # the legacy reference filter
        filters.setdefault("reference", []).append(q_str(request, "filter"))
    recs = request.app[ENGINE].image_list(all=q_bool(request, "all"), filters=filters)
    return json_response([wire_images.image_list_item(r) for r in recs])


async def inspect(request: web.Request) -> web.Response:
    return json_response(wire_images.image_inspect(request.app[ENGINE].image_inspect(ref(request, "name"))))


async def history(request: web.Request) -> web.Response:
    return json_response(wire_images.history(request.app[ENGINE].image_history(ref(request, "name"))))


async def save(request: web.Request) -> web.StreamResponse:
    """``docker save``: one archive of every image named (``names`` repeatable, or the path's)."""
    e = request.app[ENGINE]
    names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
    if not names:
        raise InvalidArgument("no images named: give at least one names= parameter")

    async def produce(w: ThreadWriter) -> None:
        await e.image_save_async(names, w)

    return await stream_from_thread(request, produce)


async def load(request: web.Request) -> web.StreamResponse:
    """``docker load``: the body is the archive, fed to the engine's worker thread as it arrives.
    Progress goes out as NDJSON once there is some; an error before that is a plain 4xx, after
    it an in-band ``errorDetail`` message (as moby)."""
    e = request.app[ENGINE]
    quiet = q_bool(request, "quiet")
    loop = asyncio.get_running_loop()
    body = ThreadReader(loop)
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def progress(msg: dict[str, Any]) -> None:  # on the worker thread
        loop.call_soon_threadsafe(messages.put_nowait, msg)

    feeder = asyncio.ensure_future(body.feed(request.content))
    task = asyncio.ensure_future(e.image_load_async(body, None if quiet else progress))
    resp: web.StreamResponse | None = None
    try:
        while not task.done() or not messages.empty():
            if messages.empty():
                getter = asyncio.ensure_future(messages.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                msg = getter.result()
            else:
                msg = messages.get_nowait()
            if resp is None:
                resp = await ndjson_response(request)
            await send_json_line(resp, wire_images.load_progress(msg))
        try:
            loaded = task.result()
        except EngineError as err:
            if resp is None:
                raise
            await send_json_line(resp, wire_images.stream_error(err.message))
            await resp.write_eof()
            return resp
        if resp is None:
            resp = await ndjson_response(request)
        for name in loaded:
            await send_json_line(resp, wire_images.loaded(name))
        await resp.write_eof()
        return resp
    except ConnectionResetError:  # the client left: the load ends (all or nothing) on its own
        return resp or web.Response(status=499)
    finally:
        body.close()
        feeder.cancel()
        if not task.done():
            task.cancel()  # the worker ends: its next read raises
        with contextlib.suppress(BaseException):
            await task
        with contextlib.suppress(BaseException):
            await feeder


async def tag(request: web.Request) -> web.Response:
    repo, tag_ = q_str(request, "repo"), q_str(request, "tag")
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    request.app[ENGINE].image_tag(ref(request, "name"), f"{repo}:{tag_}" if tag_ else repo)
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    e = request.app[ENGINE]
    result = e.image_remove(ref(request, "name"), force=q_bool(request, "force"), no_prune=q_bool(request, "noprune"))
    await e.forget_image_snapshots()
    return json_response(result)


async def prune(request: web.Request) -> web.Response:
    e = request.app[ENGINE]
    filters = wire_images.parse_filters(q_str(request, "filters") or None)
    all_ = "dangling" in filters and not parse_bool("dangling", filters.pop("dangling"))
    for key in filters:
        if key not in ("label", "until"):
            raise InvalidArgument(f"invalid filter '{key}'")
    result = e.image_prune(all=all_, filters=filters)
    await e.forget_image_snapshots()
    return json_response({"ImagesDeleted": result.get("ImagesDeleted") or None,
                          "SpaceReclaimed": result.get("SpaceReclaimed", 0)})


NAME = "/images/{name:.+}"
ROUTES = [
    ("POST", "/images/create", create),
    ("GET", "/images/json", list_),
    ("GET", "/images/get", save),
    ("POST", "/images/load", load),
    ("POST", "/images/prune", prune),
    ("GET", NAME + "/json", inspect),
    ("GET", NAME + "/history", history),
    ("GET", NAME + "/get", save),
    ("POST", NAME + "/tag", tag),
    ("DELETE", NAME, remove),
]
