"""Endpoints between a container's filesystem and images: commit, changes (diff), export, and the
archive endpoints ``docker cp`` uses (HEAD/GET/PUT ``/containers/{id}/archive``).

Tars never pass through the event loop whole: export and archive downloads stream from a worker
thread or a spooled file in chunks; an archive upload is spooled to a temp file first (the
kernel's extract reads it as a plain file).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import IO, Any, BinaryIO, Protocol

from aiohttp import web

from engine.api import wire_images
from engine.api.keys import ENGINE
from engine.api.params import json_body, json_response, q_bool, q_str, ref, tmp_dir
from engine.api.streams import ThreadWriter, spool_body, stream_from_thread
from engine.errors import InvalidArgument

PATH_STAT = "X-Docker-Container-Path-Stat"
CHUNK = 1 << 20


class Backend(Protocol):
    """The engine verbs these routes use (see ``engine.engine.Engine``)."""

    async def container_commit(self, ref: str, reference: str | None = None, changes: Any = (),
                               comment: str = "", author: str = "", pause: bool = True) -> str: ...
    async def container_diff(self, ref: str) -> list[tuple[str, str]]: ...
    async def container_export(self, ref: str, out: IO[bytes]) -> None: ...
    async def container_archive_stat(self, ref: str, path: str) -> dict[str, Any]: ...
    async def container_archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], IO[bytes]]: ...
    async def container_archive_put(self, ref: str, path: str, tar_stream: BinaryIO,
                                    no_overwrite_dir_non_dir: bool = False) -> None: ...


def _engine(request: web.Request) -> Any:
    return request.app[ENGINE]


async def commit(request: web.Request) -> web.Response:
    container = q_str(request, "container")
    if not container:
        raise InvalidArgument("container is required")
    repo, tag = q_str(request, "repo"), q_str(request, "tag")
    if tag and not repo:
        raise InvalidArgument("a tag needs a repository name (repo=)")
    changes = wire_images.commit_changes(await json_body(request)) + request.query.getall("changes", [])
    image_id = await _engine(request).container_commit(
        container, f"{repo}:{tag}" if tag else repo or None, changes, q_str(request, "comment"),
        q_str(request, "author"), q_bool(request, "pause", True))
    return json_response({"Id": image_id}, 201)


async def changes(request: web.Request) -> web.Response:
    return json_response(wire_images.changes(await _engine(request).container_diff(ref(request))))


async def export(request: web.Request) -> web.StreamResponse:
    e, cid = _engine(request), ref(request)

    async def produce(w: ThreadWriter) -> None:
        await e.container_export(cid, w)

    return await stream_from_thread(request, produce)


def _path(request: web.Request) -> str:
    path = q_str(request, "path")
    if not path:
        raise InvalidArgument("path is required")
    return path


async def archive_head(request: web.Request) -> web.Response:
    st = await _engine(request).container_archive_stat(ref(request), _path(request))
    return web.Response(headers={PATH_STAT: wire_images.path_stat_header(st),
                                 "Content-Type": "application/json"})


async def archive_get(request: web.Request) -> web.StreamResponse:
    st, spool = await _engine(request).container_archive_get(ref(request), _path(request))
    loop = asyncio.get_running_loop()
    with spool:
        resp = web.StreamResponse(headers={PATH_STAT: wire_images.path_stat_header(st),
                                           "Content-Type": "application/x-tar"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client left
            while data := await loop.run_in_executor(None, spool.read, CHUNK):
                await resp.write(data)
            await resp.write_eof()
    return resp


async def archive_put(request: web.Request) -> web.Response:
    e, cid, path = _engine(request), ref(request), _path(request)
    no_overwrite = q_bool(request, "noOverwriteDirNonDir")
    e.container_inspect(cid)  # 404 before reading a body for nothing
    with await spool_body(request, tmp_dir(e)) as tar:
        await e.container_archive_put(cid, path, tar, no_overwrite)
    return web.Response(status=200)


ROUTES = [
    ("POST", "/commit", commit),
    ("GET", "/containers/{id}/changes", changes),
    ("GET", "/containers/{id}/export", export),
    ("HEAD", "/containers/{id}/archive", archive_head),
    ("GET", "/containers/{id}/archive", archive_get),
    ("PUT", "/containers/{id}/archive", archive_put),
]
