"""Image endpoints: import (``POST /images/create?fromSrc=-``), list, inspect, history, tag,
remove, prune. Pulling (``fromImage``) answers 501 until registry support exists."""

from __future__ import annotations

import os
import tempfile

from aiohttp import web

from engine.api import wire_images
from engine.api.keys import ENGINE
from engine.api.params import json_response, q_bool, q_str, ref
from engine.api.streams import ndjson_response, send_json_line
from engine.errors import InvalidArgument, NotImplemented_
from engine.images.filters import parse_bool

CHUNK = 1 << 16


async def create(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    src, image = q_str(request, "fromSrc"), q_str(request, "fromImage")
    if image:
        tag = q_str(request, "tag")
        what = f"{image}:{tag}" if tag and ":" not in image.rsplit("/", 1)[-1] else image
        raise NotImplemented_(f"cannot pull {what}: pulling images from a registry is not available yet; "
                              "use 'wharfie import' or 'wharfie image bootstrap busybox' instead")
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
    with tempfile.TemporaryFile(dir=_tmpdir(e)) as fh:
        while chunk := await request.content.read(CHUNK):
            fh.write(chunk)
        fh.seek(0)
        image_id = await e.image_import_async(fh, reference, changes, message, platform)
    resp = await ndjson_response(request)
    await send_json_line(resp, {"status": image_id})
    await resp.write_eof()
    return resp


def _tmpdir(e: object) -> str | None:
    root = getattr(getattr(e, "ctx", None), "root", None)
    if root:
        path = os.path.join(root, "tmp")
        os.makedirs(path, exist_ok=True)
        return path
    return None


async def list_(request: web.Request) -> web.Response:
    filters = wire_images.parse_filters(q_str(request, "filters") or None)
    if q_str(request, "filter"):  # the legacy reference filter
        filters.setdefault("reference", []).append(q_str(request, "filter"))
    recs = request.app[ENGINE].image_list(all=q_bool(request, "all"), filters=filters)
    return json_response([wire_images.image_list_item(r) for r in recs])


async def inspect(request: web.Request) -> web.Response:
    return json_response(wire_images.image_inspect(request.app[ENGINE].image_inspect(ref(request, "name"))))


async def history(request: web.Request) -> web.Response:
    return json_response(wire_images.history(request.app[ENGINE].image_inspect(ref(request, "name"))))


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
    ("POST", "/images/prune", prune),
    ("GET", NAME + "/json", inspect),
    ("GET", NAME + "/history", history),
    ("POST", NAME + "/tag", tag),
    ("DELETE", NAME, remove),
]
