"""HTTP client for the wharfie (Docker Engine) API, over a UNIX socket or TCP+TLS.

Stdlib only, and not even ``http.client`` (see ``engine.client_http``) or the ``json`` module
(``engine.client_json`` runs json's C part without it), so the CLI starts fast.
Results are Docker's JSON documents (the wire shape, as ``docker inspect`` shows them). Error
bodies come back as the same ``EngineError`` subclass the daemon raised — ``{"kind": …}`` maps
through ``errors.from_kind`` (the status code when ``kind`` is absent, e.g. from a real dockerd)
— so ``pytest.raises(NotFound)`` holds in-process and over HTTP alike.

Layers: ``engine.client_http`` (one HTTP/1.1 exchange on one connection), ``client_transport``
(addresses, connections, errors), ``client_streams`` (what comes back: a streaming
:class:`Response`; for attach and exec start a :class:`Hijacked` raw connection after ``101
UPGRADED``, with :func:`demux` for Docker's 8-byte multiplexed framing), and here the endpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

from engine import errors
from engine.client_http import body_reader
from engine.client_json import dumps, loads
from engine.client_streams import Hijacked, Response, closing, demux
from engine.client_transport import API_PREFIX, SAFE, TLSConfig, Transport

__all__ = ["API_PREFIX", "Client", "Hijacked", "Response", "TLSConfig", "Transport", "demux", "host_from_env"]


class Client(Transport):
    """One method per endpoint the CLI uses, over :class:`Transport` (``request``, ``json``,
    ``hijack`` for anything else)."""

    # -- system ---------------------------------------------------------------------------------

    def ping(self) -> bool:
        return self.request("GET", "/_ping").read() == b"OK"

    def version(self) -> Any:
        return self.json("GET", "/version")

    def info(self) -> Any:
        return self.json("GET", "/info")

    def events(self, since: str | None = None, until: str | None = None,
               filters: dict[str, list[str]] | None = None) -> Iterator[Any]:
        q = {"since": since, "until": until, "filters": dumps(filters) if filters else None}
        return self.request("GET", "/events", q, stream=True).lines()

    def df(self) -> Any:
        return self.json("GET", "/system/df")

    def prune(self, resource: str, filters: dict[str, list[str]] | None = None) -> Any:
        """``POST /{resource}/prune`` for networks, volumes and build (cache)."""
        return self.json("POST", f"/{resource}/prune", {"filters": dumps(filters) if filters else None})

    # -- containers -----------------------------------------------------------------------------

    def containers(self, all: bool = False, filters: dict[str, list[str]] | None = None, limit: int | None = None,
                   size: bool = False) -> Any:
        q = {"all": all, "limit": limit, "size": size, "filters": dumps(filters) if filters else None}
        return self.json("GET", "/containers/json", q)

    def container(self, ref: str, size: bool = False) -> Any:
        return self.json("GET", f"/containers/{_q(ref)}/json", {"size": size or None})

    def create(self, config: dict[str, Any], name: str | None = None) -> Any:
        return self.json("POST", "/containers/create", {"name": name}, config)

    def start(self, ref: str) -> None:
        self.request("POST", f"/containers/{_q(ref)}/start").read()

    def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{_q(ref)}/stop", {"t": timeout, "signal": signal}).read()

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self.request("POST", f"/containers/{_q(ref)}/restart", {"t": timeout}).read()

    def kill(self, ref: str, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{_q(ref)}/kill", {"signal": signal}).read()

    def pause(self, ref: str) -> None:
        self.request("POST", f"/containers/{_q(ref)}/pause").read()

    def unpause(self, ref: str) -> None:
        self.request("POST", f"/containers/{_q(ref)}/unpause").read()

    def wait_response(self, ref: str, condition: str = "not-running") -> Response:
        """Start a wait; the headers arrive at once, ``.json()`` blocks until the condition."""
        return self.request("POST", f"/containers/{_q(ref)}/wait", {"condition": condition}, stream=True)

    def wait(self, ref: str, condition: str = "not-running") -> int:
        return int(self.wait_response(ref, condition).json()["StatusCode"])

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        self.request("DELETE", f"/containers/{_q(ref)}", {"force": force or None, "v": volumes or None}).read()

    def rename(self, ref: str, name: str) -> None:
        self.request("POST", f"/containers/{_q(ref)}/rename", {"name": name}).read()

    def update(self, ref: str, body: dict[str, Any]) -> Any:
        return self.json("POST", f"/containers/{_q(ref)}/update", body=body)

    def top(self, ref: str) -> Any:
        return self.json("GET", f"/containers/{_q(ref)}/top")

    def stats(self, ref: str, stream: bool = False) -> Iterator[Any]:
        return self.request("GET", f"/containers/{_q(ref)}/stats", {"stream": stream}, stream=True).lines()

    def logs(self, ref: str, follow: bool = False, stdout: bool = True, stderr: bool = True,
             timestamps: bool = False, tail: str | None = None, since: str | None = None,
             until: str | None = None) -> Iterator[tuple[int, bytes]]:
        q = {"follow": follow, "stdout": stdout, "stderr": stderr, "timestamps": timestamps, "tail": tail,
             "since": since, "until": until}
        resp = self.request("GET", f"/containers/{_q(ref)}/logs", q, stream=True)
        if "multiplexed" in resp.headers.get("Content-Type", ""):
            return closing(demux(resp.raw), resp)
        return closing(((1, c) for c in resp.chunks()), resp)

    def attach(self, ref: str, stdin: bool = False, logs: bool = False, detach_keys: str | None = None) -> Hijacked:
        q = {"stream": True, "stdout": True, "stderr": True, "stdin": stdin, "logs": logs or None,
             "detachKeys": detach_keys}
        return self.hijack(f"/containers/{_q(ref)}/attach", q)

    def attach_and_wait(self, ref: str, stdin: bool = False, detach_keys: str | None = None,
                        condition: str = "next-exit") -> tuple[Hijacked, Response]:
        """:meth:`attach` and :meth:`wait_response` with both requests in flight at once (one
        round trip of waiting, not two); both are in place when this returns. Raises as they do
        (and then closes both)."""
        q = {"stream": True, "stdout": True, "stderr": True, "stdin": stdin, "detachKeys": detach_keys}
        a_sock, a_reader = self._send_hijack(f"/containers/{_q(ref)}/attach", q, None)
        try:
            w_sock, w_reader = self._send("POST", self._url(f"/containers/{_q(ref)}/wait", {"condition": condition}),
                                          {}, None, None)
        except BaseException:
            a_reader.close()
            a_sock.close()
            raise
        try:
            _, a_hdrs = self._receive(a_sock, a_reader, "POST")
        except BaseException:
            w_reader.close()
            w_sock.close()
            raise
        hj = Hijacked(a_sock, a_reader, a_hdrs.get("content-type", ""))
        try:
            status, w_hdrs = self._receive(w_sock, w_reader, "POST")
        except BaseException:
            hj.close()
            raise
        return hj, Response(w_sock, status, w_hdrs, body_reader(w_reader, "POST", status, w_hdrs))

    def resize(self, ref: str, rows: int, cols: int) -> None:
        self.request("POST", f"/containers/{_q(ref)}/resize", {"h": rows, "w": cols}).read()

    def prune_containers(self, filters: dict[str, list[str]] | None = None) -> Any:
        return self.json("POST", "/containers/prune", {"filters": dumps(filters) if filters else None})

    def commit(self, ref: str, reference: str | None = None, changes: list[str] | None = None,
               comment: str | None = None, author: str | None = None, pause: bool = True) -> str:
        repo, tag = reference, None
        if reference and ":" in reference.rsplit("/", 1)[-1]:
            repo, _, tag = reference.rpartition(":")
        q = {"container": ref, "repo": repo, "tag": tag, "changes": changes or None, "comment": comment,
             "author": author, "pause": pause}
        return str(self.json("POST", "/commit", q)["Id"])

    def changes(self, ref: str) -> Any:
        return self.json("GET", f"/containers/{_q(ref)}/changes")

    def export(self, ref: str) -> Response:
        """The container's filesystem as a tar: read it with ``.chunks()``."""
        return self.request("GET", f"/containers/{_q(ref)}/export", stream=True)

    def archive_stat(self, ref: str, path: str) -> Any:
        """``HEAD /containers/{id}/archive``: the decoded path stat (``name``, ``size``, ``mode``
        as Go file-mode bits, ``mtime``, ``linkTarget``). Raises NotFound."""
        try:
            resp = self.request("HEAD", f"/containers/{_q(ref)}/archive", {"path": path})
        except errors.EngineError as e:
            if isinstance(e, errors.NotFound) and str(e).startswith("HTTP "):
                raise errors.NotFound(f"Could not find the file {path} in container {ref}") from None
            raise
        resp.read()
        return _path_stat(resp.headers)

    def archive_get(self, ref: str, path: str) -> tuple[Any, Response]:
        """``GET /containers/{id}/archive``: (path stat, the tar response to read)."""
        resp = self.request("GET", f"/containers/{_q(ref)}/archive", {"path": path}, stream=True)
        return _path_stat(resp.headers), resp

    def archive_put(self, ref: str, path: str, tar: IO[bytes], no_overwrite_dir_non_dir: bool = False,
                    copy_uid_gid: bool = False) -> None:
        q = {"path": path, "noOverwriteDirNonDir": no_overwrite_dir_non_dir or None,
             "copyUIDGID": copy_uid_gid or None}
        self.request("PUT", f"/containers/{_q(ref)}/archive", q, body=tar, stream=True).read()

    # -- exec -----------------------------------------------------------------------------------

    def exec_create(self, ref: str, config: dict[str, Any]) -> str:
        return str(self.json("POST", f"/containers/{_q(ref)}/exec", body=config)["Id"])

    def exec_start(self, exec_id: str, tty: bool = False, detach: bool = False) -> Hijacked | None:
        if detach:
            self.request("POST", f"/exec/{exec_id}/start", body={"Detach": True, "Tty": tty}).read()
            return None
        return self.hijack(f"/exec/{exec_id}/start", body={"Detach": False, "Tty": tty})

    def exec_inspect(self, exec_id: str) -> Any:
        return self.json("GET", f"/exec/{exec_id}/json")

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        self.request("POST", f"/exec/{exec_id}/resize", {"h": rows, "w": cols}).read()

    # -- images ---------------------------------------------------------------------------------

    def images(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> Any:
        return self.json("GET", "/images/json", {"all": all, "filters": dumps(filters) if filters else None})

    def image(self, ref: str) -> Any:
        return self.json("GET", f"/images/{_q(ref)}/json")

    def image_history(self, ref: str) -> Any:
        return self.json("GET", f"/images/{_q(ref)}/history")

    def import_image(self, data: IO[bytes] | bytes, reference: str | None = None, changes: list[str] | None = None,
                     message: str | None = None, platform: str | None = None) -> Iterator[Any]:
        q = {"fromSrc": "-", "repo": reference, "changes": changes or None, "message": message, "platform": platform}
        body = data if hasattr(data, "read") else _BytesReader(data)
        return self.request("POST", "/images/create", q, body=body, stream=True).lines()

    def save(self, names: list[str]) -> Response:
        """``GET /images/get``: the archive as a streaming response (``.chunks()``)."""
        return self.request("GET", "/images/get", {"names": names}, stream=True)

    def load(self, data: IO[bytes] | bytes, quiet: bool = False) -> Iterator[Any]:
        """``POST /images/load``: the NDJSON progress and ``Loaded image…`` messages."""
        body = data if hasattr(data, "read") else _BytesReader(data)
        return self.request("POST", "/images/load", {"quiet": quiet}, body=body, stream=True).lines()

    def tag(self, source: str, repo: str, tag: str | None = None) -> None:
        self.request("POST", f"/images/{_q(source)}/tag", {"repo": repo, "tag": tag}).read()

    def remove_image(self, ref: str, force: bool = False, noprune: bool = False) -> Any:
        return self.json("DELETE", f"/images/{_q(ref)}", {"force": force or None, "noprune": noprune or None})

    # -- registries (issue 6) -------------------------------------------------------------------

    def pull(self, reference: str, tag: str | None = None, platform: str | None = None,
             registry_auth: str | None = None) -> Iterator[Any]:
        """``POST /images/create?fromImage=``: Docker's NDJSON progress (errors in-band as
        ``{"error", "errorDetail"}``). ``registry_auth`` is the X-Registry-Auth value."""
        headers = {"X-Registry-Auth": registry_auth} if registry_auth else None
        return self.request("POST", "/images/create", {"fromImage": reference, "tag": tag, "platform": platform},
                            headers=headers, stream=True).lines()

    def push(self, reference: str, tag: str | None = None, registry_auth: str | None = None) -> Iterator[Any]:
        """``POST /images/{name}/push``: NDJSON progress, errors in-band."""
        return self.request("POST", f"/images/{_q(reference)}/push", {"tag": tag},
                            headers={"X-Registry-Auth": registry_auth or "e30="}, stream=True).lines()

    def login(self, username: str, password: str, server: str = "") -> Any:
        """``POST /auth``: ``{"Status": "Login Succeeded"}`` or PermissionDenied."""
        return self.json("POST", "/auth", body={"username": username, "password": password,
                                                "serveraddress": server})

    def prune_images(self, all: bool = False) -> Any:
        filters = {"dangling": ["false"]} if all else None
        return self.json("POST", "/images/prune", {"filters": dumps(filters) if filters else None})


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return out


def _path_stat(headers: Any) -> Any:
    import base64

    raw = headers.get("X-Docker-Container-Path-Stat")
    if not raw:
        return None
    try:
        return loads(base64.b64decode(raw))
    except ValueError:
        return None


def _q(ref: str) -> str:
    if SAFE.fullmatch(ref):
        return ref  # what quote would give
    import urllib.parse

    return urllib.parse.quote(ref, safe="/:@")


def host_from_env() -> str | None:
    return os.environ.get("WHARFIE_HOST") or os.environ.get("DOCKER_HOST") or None
