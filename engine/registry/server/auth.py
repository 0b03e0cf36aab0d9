"""Auth for ``wharfie registry serve``: htpasswd basic auth, or token auth (Docker's registry
token scheme: a token endpoint issues signed bearer tokens for htpasswd users).

Token auth, as the distribution reference registry with a token server:

* a request without a valid token is answered ``401`` with
  ``WWW-Authenticate: Bearer realm="<scheme>://<host>/token",service="<service>",scope="<scope>"``
  naming the scope the request needs (``repository:NAME:pull`` to read, ``…:pull,push`` to
  write, ``…:delete`` to delete, ``registry:catalog:*`` for the catalog);
* ``GET /token?service=…&scope=…`` (HTTP basic credentials of an htpasswd user, or none) and
  ``POST /token`` (form ``grant_type=password&username=…&password=…``) answer
  ``{"token", "access_token", "expires_in", "issued_at"}``. Wrong credentials → ``401``.
  An authenticated user is granted every action asked for (pull, push, delete, catalog); an
  anonymous caller gets a token that grants nothing;
* tokens are JWTs (HS256, a per-process random key unless one is given; ``aud`` = the
  service, ``exp`` = ``ttl`` seconds) carrying the granted ``access`` list; a token that lacks
  the scope a request needs is answered ``401`` with ``error="insufficient_scope"``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ISSUER = "wharfie-registry"
ACTIONS = ("pull", "push", "delete")


class Htpasswd:
    """``user:hash`` lines; bcrypt (``$2y$``/``$2b$``/``$2a$``) hashes only. Successful checks
    are cached (by a sha256 of the password) so bcrypt runs once per client, not per request."""

    def __init__(self, path: str) -> None:
        self.users: dict[str, bytes] = {}
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and ":" in line:
                    user, _, h = line.partition(":")
                    self.users[user] = h.encode()
        self._ok: set[tuple[str, bytes]] = set()

    def verify(self, user: str, pw: str) -> bool:
        key = (user, hashlib.sha256(pw.encode()).digest())
        if key in self._ok:
            return True
        h = self.users.get(user)
        if h is None or not h.startswith((b"$2y$", b"$2b$", b"$2a$")):
            return False
        import bcrypt

        if bcrypt.checkpw(pw.encode(), b"$2b$" + h[4:]):
            self._ok.add(key)
            return True
        return False

    def check(self, header: str) -> bool:
        """True if ``header`` is ``Basic`` credentials of a user with the right password."""
        creds = basic_credentials(header)
        return creds is not None and self.verify(*creds)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``Authorization: Basic …`` → ``(user, password)``; None if absent or malformed."""
    if not header.lower().startswith("basic "):
        return None
    try:
        user, sep, pw = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, pw) if sep else None


@dataclass(frozen=True, slots=True)
class Scope:
    """``type:name:actions`` (``repository:lib/bb:pull,push``; ``registry:catalog:*``)."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @staticmethod
    def parse(text: str) -> Scope | None:
        kind, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            return None
        return Scope(kind, name, tuple(a for a in actions.split(",") if a))


class TokenAuth:
    """Issues and checks bearer tokens (see the module doc).

    Args:
        users: who may authenticate. service: the ``service`` (and token audience).
        realm: the token endpoint URL; None → ``<scheme>://<Host>/token`` of each request.
        key: the HMAC key (random per process if None). ttl: token lifetime, seconds.
    """

    path = "/token"

    def __init__(self, users: Htpasswd, service: str = ISSUER, realm: str | None = None,
                 key: bytes | None = None, ttl: int = 300) -> None:
        import jwt  # PyJWT: imported only when token auth is on

        self._jwt = jwt
        self.users, self.service, self.realm = users, service, realm
        self.key = key or secrets.token_bytes(32)
        self.ttl = ttl

    # -- the token endpoint ---------------------------------------------------------------------

    def grant(self, user: str | None, wanted: list[Scope]) -> list[dict[str, Any]]:
        """The access ``user`` gets for ``wanted`` (anonymous: none)."""
        if not user:
            return []
        out = []
        for s in wanted:
            if s.type == "repository":
                acts = [a for a in s.actions if a in ACTIONS]
            elif s.type == "registry" and s.name == "catalog":
                acts = ["*"] if "*" in s.actions else []
            else:
                acts = []
            if acts:
                out.append({"type": s.type, "name": s.name, "actions": acts})
        return out

    def issue(self, user: str | None, wanted: list[Scope]) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": self.service, "iat": now, "nbf": now - 5,
                  "exp": now + self.ttl, "jti": secrets.token_hex(16), "access": self.grant(user, wanted)}
        token = self._jwt.encode(claims, self.key, algorithm="HS256")
        issued = _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat().replace("+00:00", "Z")
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}

    async def token_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            form = await request.post()
            if form.get("grant_type") != "password":
                return _error(400, "UNSUPPORTED", "only grant_type=password is supported")
            user, pw = str(form.get("username", "")), str(form.get("password", ""))
            scopes = str(form.get("scope", "")).split()
            service = str(form.get("service", self.service))
        elif request.method == "GET":
            header = request.headers.get("Authorization", "")
            creds = basic_credentials(header)
            if header and creds is None:
                return _error(401, "UNAUTHORIZED", "malformed credentials")
            user, pw = creds or ("", "")
            scopes = [x for s in request.query.getall("scope", []) for x in s.split()]
            service = request.query.get("service", self.service)
        else:
            return _error(405, "UNSUPPORTED", f"{request.method} not supported here")
        if service != self.service:
            return _error(400, "UNSUPPORTED", f"unknown service {service!r} (this is {self.service!r})")
        if user and not self.users.verify(user, pw):
            return _error(401, "UNAUTHORIZED", "invalid username or password")
        wanted = [s for s in (Scope.parse(x) for x in scopes) if s is not None]
        return web.json_response(self.issue(user or None, wanted))

    # -- checking requests ----------------------------------------------------------------------

    def challenge(self, request: web.Request, needed: list[Scope], error: str | None = None) -> str:
        realm = self.realm or f"{request.scheme}://{request.host}{self.path}"
        parts = [f'realm="{realm}"', f'service="{self.service}"']
        if needed:
            parts.append(f'scope="{" ".join(str(s) for s in needed)}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def access(self, request: web.Request) -> list[dict[str, Any]] | None:
        """The access list of the request's valid bearer token; None if there is none."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        try:
            claims = self._jwt.decode(header[7:].strip(), self.key, algorithms=["HS256"],
                                      audience=self.service, issuer=ISSUER)
        except self._jwt.PyJWTError:
            return None
        acc = claims.get("access")
        return acc if isinstance(acc, list) else []

    @staticmethod
    def allows(access: list[dict[str, Any]], scope: Scope) -> bool:
        for entry in access:
            if isinstance(entry, dict) and entry.get("type") == scope.type and entry.get("name") == scope.name:
                got = entry.get("actions") or []
                if "*" in got or all(a in got for a in scope.actions):
                    return True
        return False

    def check(self, request: web.Request, needed: list[Scope]) -> web.Response | None:
        """None if the request may go on (its token grants ``needed``), else the 401 answer."""
        access = self.access(request)
        if access is None:
            err = "invalid_token" if request.headers.get("Authorization") else None
            return _error(401, "UNAUTHORIZED", "authentication required",
                          headers={"WWW-Authenticate": self.challenge(request, needed, err)})
        missing = [s for s in needed if not self.allows(access, s)]
        if missing:
            return _error(401, "UNAUTHORIZED",
                          "insufficient scope: the token does not grant " + " ".join(map(str, missing)),
                          detail=[{"Type": s.type, "Name": s.name, "Action": ",".join(s.actions)} for s in missing],
                          headers={"WWW-Authenticate": self.challenge(request, missing, "insufficient_scope")})
        request["access"] = access
        return None


def _error(status: int, code: str, message: str, detail: object = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.json_response(body, status=status,
                             headers={"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})})
