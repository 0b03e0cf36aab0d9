"""The registry server: OCI distribution-spec endpoints on aiohttp over :mod:`.storage`.

Endpoints (``<name>`` may contain ``/``)::

    GET      /v2/                                  API check (Docker-Distribution-API-Version)
    GET      /v2/_catalog?n=&last=                 repositories, paginated (Link: rel="next")
    GET      /v2/<name>/tags/list?n=&last=         tags, paginated
    GET/HEAD /v2/<name>/manifests/<tag|digest>
    PUT      /v2/<name>/manifests/<tag|digest>     referenced blobs/manifests must exist
    DELETE   /v2/<name>/manifests/<tag|digest>
    GET/HEAD /v2/<name>/blobs/<digest>             Range supported
    DELETE   /v2/<name>/blobs/<digest>
    POST     /v2/<name>/blobs/uploads/             session; ?digest= monolithic; ?mount=&from=
    PATCH    /v2/<name>/blobs/uploads/<uuid>       chunk (Content-Range must continue: else 416)
    PUT      /v2/<name>/blobs/uploads/<uuid>?digest=   last chunk + commit (digest verified)
    GET      /v2/<name>/blobs/uploads/<uuid>       status (Range: 0-<end>)
    DELETE   /v2/<name>/blobs/uploads/<uuid>       cancel
    GET      /v2/<name>/referrers/<digest>?artifactType=   manifests whose subject is <digest>
    GET/POST /token                                 bearer tokens (token auth only)

Errors use the spec's body ``{"errors": [{"code", "message", "detail"}]}``. Auth (optional,
:mod:`.auth`): htpasswd basic auth (bcrypt lines, as ``htpasswd -B``) on every endpoint, or
token auth — a token endpoint issuing signed bearer tokens for the htpasswd users, and every
endpoint checking the scope it needs (``repository:NAME:pull`` / ``pull,push`` / ``delete``).

Referrers (distribution spec 1.1): a manifest pushed with a ``subject`` is listed (as a
descriptor with its ``artifactType`` — the config's media type if it has none — and its
annotations) by ``GET /v2/<name>/referrers/<subject digest>``, optionally filtered by
``artifactType`` (then ``OCI-Filters-Applied: artifactType``); the ``PUT`` answers with
``OCI-Subject: <subject digest>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.errors import InvalidArgument
from engine.registry import manifests as _manifests
from engine.registry.server.auth import Htpasswd, Scope, TokenAuth
from engine.registry.server.storage import DIGEST_RE, NAME_RE, TAG_RE, Storage

__all__ = ["Htpasswd", "Registry", "TokenAuth", "serve"]

MAX_MANIFEST = 4 * 1024 * 1024
CHUNK = 1 << 16
API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_ROUTES = [
    ("catalog", re.compile(r"^/v2/_catalog$")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("uploads", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$")),
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")),
]
_READS = ("GET", "HEAD")


def error(status: int, code: str, message: str, detail: object = None,
          headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.json_response(body, status=status, headers={**API_HEADER, **(headers or {})})


class Registry:
    """The registry app over ``storage``; ``htpasswd`` turns on basic auth, ``token`` token auth
    (one or the other)."""

    def __init__(self, storage: Storage, htpasswd: Htpasswd | None = None, realm: str = "wharfie-registry",
                 token: TokenAuth | None = None) -> None:
        if htpasswd is not None and token is not None:
            raise InvalidArgument("basic auth and token auth are exclusive: token auth uses the htpasswd users")
        self.s = storage
        self.htpasswd = htpasswd
        self.realm = realm
        self.token = token

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MANIFEST)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.token is not None and request.path == self.token.path:
            return await self.token.token_endpoint(request)
        if self.htpasswd is not None and not self.htpasswd.check(request.headers.get("Authorization", "")):
            return error(401, "UNAUTHORIZED", "authentication required",
                         headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})
        path = request.path
        if path in ("/v2", "/v2/"):
            return self._denied(request, []) or web.json_response({}, headers=API_HEADER)
        for kind, rx in _ROUTES:
            m = rx.match(path)
            if m is None:
                continue
            params = m.groupdict()
            if "name" in params and not NAME_RE.match(params["name"]):
                return error(400, "NAME_INVALID", "invalid repository name", params["name"])
            denied = self._denied(request, self._needs(kind, request.method, params.get("name", "")))
            if denied is not None:
                return denied
            handler: Callable[..., Awaitable[web.StreamResponse]] | None = getattr(
                self, f"{kind}_{request.method.lower()}", None)
            if handler is None:
                return error(405, "UNSUPPORTED", f"{request.method} not supported here")
            return await handler(request, **params)
        return error(404, "NOT_FOUND", "no such endpoint", path)

    # -- token auth -----------------------------------------------------------------------------

    @staticmethod
    def _needs(kind: str, method: str, name: str) -> list[Scope]:
        if kind == "catalog":
            return [Scope("registry", "catalog", ("*",))]
        if method == "DELETE" and kind in ("manifest", "blob"):
            return [Scope("repository", name, ("delete",))]
        if method in _READS and kind in ("tags", "manifest", "blob", "referrers"):
            return [Scope("repository", name, ("pull",))]
        return [Scope("repository", name, ("pull", "push"))]

    def _denied(self, request: web.Request, needed: list[Scope]) -> web.Response | None:
        return None if self.token is None else self.token.check(request, needed)

    def _may_pull(self, request: web.Request, name: str) -> bool:
        if self.token is None:
            return True
        return self.token.allows(request.get("access") or [], Scope("repository", name, ("pull",)))

    # -- listing --------------------------------------------------------------------------------

    @staticmethod
    def _page(request: web.Request, items: list[str], base: str) -> tuple[list[str], dict[str, str]]:
        last = request.query.get("last", "")
        if last:
            items = [i for i in items if i > last]
        n_text = request.query.get("n", "")
        headers = dict(API_HEADER)
        if n_text:
            try:
                n = max(0, int(n_text))
            except ValueError:
                n = len(items)
            if len(items) > n:
                items = items[:n]
                if items:
                    headers["Link"] = f'<{base}?n={n}&last={items[-1]}>; rel="next"'
        return items, headers

    async def catalog_get(self, request: web.Request) -> web.StreamResponse:
        repos, headers = self._page(request, self.s.catalog(), "/v2/_catalog")
        return web.json_response({"repositories": repos}, headers=headers)

    async def tags_get(self, request: web.Request, name: str) -> web.StreamResponse:
        if not self.s.has_repo(name):
            return error(404, "NAME_UNKNOWN", "repository name not known to registry", name)
        tags, headers = self._page(request, self.s.tags(name), f"/v2/{name}/tags/list")
        return web.json_response({"name": name, "tags": tags}, headers=headers)

    # -- manifests ------------------------------------------------------------------------------

    def _manifest_ref_ok(self, ref: str) -> bool:
        return bool(DIGEST_RE.match(ref) or TAG_RE.match(ref))

    async def manifest_get(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        if not self._manifest_ref_ok(ref):
            return error(400, "TAG_INVALID" if ":" not in ref else "DIGEST_INVALID", "invalid reference", ref)
        digest = self.s.resolve(name, ref)
        if digest is None:
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": name, "reference": ref})
        data, media_type = self.s.manifest(name, digest)
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "Content-Type": media_type,
                   "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        return web.Response(body=data, headers=headers)

    manifest_head = manifest_get

    async def manifest_put(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        if not self._manifest_ref_ok(ref):
            return error(400, "TAG_INVALID", "invalid tag", ref)
        data = await request.content.read(MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            return error(413, "SIZE_INVALID", f"manifest over {MAX_MANIFEST} bytes")
        ctype = request.headers.get("Content-Type", "")
        try:
            man = _manifests.parse(data, ctype, "manifest", artifacts=True)
        except InvalidArgument as e:
            return error(400, "MANIFEST_INVALID", str(e))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if DIGEST_RE.match(ref) and ref != digest:
            return error(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                         {"expected": ref, "got": digest})
        missing = []
        if man.is_index:
            missing = [d.digest for d in man.manifests if not self.s.has_manifest(name, d.digest)]
            code = "MANIFEST_UNKNOWN"
        else:
            assert man.config is not None
            missing = [d.digest for d in (man.config, *man.layers) if not self.s.has_blob(name, d.digest)]
            code = "MANIFEST_BLOB_UNKNOWN"
        if missing:
            return error(400, code, "manifest references unknown content", missing)
        tag = None if DIGEST_RE.match(ref) else ref
        subject = self.s.put_manifest(name, data, man.media_type, tag)
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"}
        if subject:
            headers["OCI-Subject"] = subject
        return web.Response(status=201, headers=headers)

    async def manifest_delete(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        if DIGEST_RE.match(ref):
            ok = self.s.delete_manifest(name, ref)
        elif TAG_RE.match(ref):
            ok = self.s.delete_tag(name, ref)
        else:
            return error(400, "TAG_INVALID", "invalid reference", ref)
        if not ok:
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown", ref)
        return web.Response(status=202, headers=API_HEADER)

    async def referrers_get(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        if not DIGEST_RE.match(digest):
            return error(400, "DIGEST_INVALID", "invalid digest", digest)
        found = self.s.referrers(name, digest)
        headers = {**API_HEADER, "Content-Type": "application/vnd.oci.image.index.v1+json"}
        want = request.query.get("artifactType")
        if want is not None:
            found = [d for d in found if d.get("artifactType") == want]
            headers["OCI-Filters-Applied"] = "artifactType"
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": found}
        return web.Response(body=json.dumps(doc).encode(), headers=headers)

    # -- blobs ----------------------------------------------------------------------------------

    async def blob_get(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        if not DIGEST_RE.match(digest):
            return error(400, "DIGEST_INVALID", "invalid digest", digest)
        if not self.s.has_blob(name, digest):
            return error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Cache-Control": "max-age=31536000", "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(self.s.blobs.size(digest))})
        return web.FileResponse(self.s.blobs.path(digest), headers=headers)

    blob_head = blob_get

    async def blob_delete(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        if not DIGEST_RE.match(digest):
            return error(400, "DIGEST_INVALID", "invalid digest", digest)
        if not self.s.unlink_blob(name, digest):
            return error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        return web.Response(status=202, headers=API_HEADER)

    # -- uploads --------------------------------------------------------------------------------

    def _upload_headers(self, name: str, uid: str, size: int) -> dict[str, str]:
        return {**API_HEADER, "Location": f"/v2/{name}/blobs/uploads/{uid}", "Docker-Upload-UUID": uid,
                "Range": f"0-{max(size - 1, 0)}" if size else "0-0", "Content-Length": "0"}

    async def _append(self, request: web.Request, path: str) -> int:
        with open(path, "ab") as fh:
            async for chunk in request.content.iter_chunked(CHUNK):
                fh.write(chunk)
            return fh.tell()

    async def _commit(self, name: str, uid: str, digest: str) -> web.StreamResponse:
        got = await asyncio.get_running_loop().run_in_executor(None, self.s.finish_upload, name, uid, digest)
        if got is not None:
            return error(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                         {"expected": digest, "got": got})
        return web.Response(status=201, headers={**API_HEADER, "Location": f"/v2/{name}/blobs/{digest}",
                                                 "Docker-Content-Digest": digest, "Content-Length": "0"})

    async def uploads_post(self, request: web.Request, name: str) -> web.StreamResponse:
        mount, source = request.query.get("mount", ""), request.query.get("from", "")
        if mount and DIGEST_RE.match(mount) and NAME_RE.match(source) and self.s.has_blob(source, mount) \
                and self._may_pull(request, source):
            self.s.link_blob(name, mount)
            return web.Response(status=201, headers={**API_HEADER, "Location": f"/v2/{name}/blobs/{mount}",
                                                     "Docker-Content-Digest": mount, "Content-Length": "0"})
        digest = request.query.get("digest", "")
        uid = self.s.new_upload()
        if digest:
            if not DIGEST_RE.match(digest):
                self.s.cancel_upload(uid)
                return error(400, "DIGEST_INVALID", "invalid digest", digest)
            await self._append(request, os.path.join(self.s.uploads, uid))
            return await self._commit(name, uid, digest)
        return web.Response(status=202, headers=self._upload_headers(name, uid, 0))

    async def upload_get(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        path = self.s.upload_path(uuid)
        if path is None:
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", uuid)
        return web.Response(status=204, headers=self._upload_headers(name, uuid, os.path.getsize(path)))

    async def upload_patch(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        path = self.s.upload_path(uuid)
        if path is None:
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", uuid)
        size = os.path.getsize(path)
        crange = request.headers.get("Content-Range", "")
        if crange:
            m = _RANGE.match(crange.strip())
            if m is None or int(m.group(1)) != size or int(m.group(2)) < int(m.group(1)):
                return error(416, "BLOB_UPLOAD_INVALID", "invalid content range",
                             {"have": size, "range": crange},
                             headers={"Range": f"0-{max(size - 1, 0)}", "Location": f"/v2/{name}/blobs/uploads/{uuid}"})
            want = int(m.group(2)) - int(m.group(1)) + 1
            if request.content_length is not None and request.content_length != want:
                return error(416, "BLOB_UPLOAD_INVALID", "Content-Range does not match Content-Length")
        size = await self._append(request, path)
        return web.Response(status=202, headers=self._upload_headers(name, uuid, size))

    async def upload_put(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        path = self.s.upload_path(uuid)
        if path is None:
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", uuid)
        digest = request.query.get("digest", "")
        if not DIGEST_RE.match(digest):
            return error(400, "DIGEST_INVALID", "a sha256 digest query parameter is required", digest)
        await self._append(request, path)
        return await self._commit(name, uuid, digest)

    async def upload_delete(self, request: web.Request, name: str, uuid: str) -> web.StreamResponse:
        if not self.s.cancel_upload(uuid):
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", uuid)
        return web.Response(status=204, headers=API_HEADER)


def serve(addr: str, root: str, tls_cert: str | None = None, tls_key: str | None = None,
          htpasswd: str | None = None, token_auth: bool = False, token_realm: str | None = None,
          service: str = "wharfie-registry") -> None:
    """Run the registry until interrupted (``addr`` is ``host:port``).

    ``htpasswd`` alone: basic auth. With ``token_auth``: token auth for its users (the token
    endpoint is ``/token`` on this server unless ``token_realm`` names another URL).

    Raises:
        InvalidArgument: bad ``addr``, half a TLS pair, token auth without ``htpasswd``.
    """
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"invalid --addr {addr!r}: want host:port")
    ctx = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise InvalidArgument("--tls-cert and --tls-key go together")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_cert, tls_key)
    if token_auth and not htpasswd:
        raise InvalidArgument("--token-auth needs --htpasswd: tokens are issued to its users")
    users = Htpasswd(htpasswd) if htpasswd else None
    if token_auth:
        assert users is not None
        reg = Registry(Storage(root), token=TokenAuth(users, service=service, realm=token_realm))
    else:
        reg = Registry(Storage(root), users)
    web.run_app(reg.app(), host=host.strip("[]"), port=int(port), ssl_context=ctx, access_log=None,
                print=None, handle_signals=True)
