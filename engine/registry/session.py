"""One HTTP session with one registry: scheme discovery, auth challenges, retries, redirects.

Rules the session enforces for every request:

* ``GET /v2/`` is pinged first over each base URL of the :class:`Endpoint` (HTTPS, then plain
  HTTP for insecure registries); the first that answers HTTP at all is used from then on, and its
  ``401`` challenge tells how to authenticate.
* Auth: ``WWW-Authenticate: Basic`` → the user's credentials on each request;
  ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` → a token from the realm (with the
  user's credentials, if any) per scope set, cached; a 401 refreshes it once per request.
* ``Authorization`` goes only to the registry's own origin (scheme, host, port). Redirects are
  followed by hand (at most 5 hops) and a hop to any other origin — typically blob storage —
  gets no credentials at all (moby follows the same rule; S3 refuses a second auth scheme).
* 429 and 5xx answers and broken connections are retried with exponential back-off, at most
  ``max_retries`` times; a ``Retry-After`` (seconds or an HTTP date) replaces the back-off,
  capped at ``max_backoff``. A 429/5xx that is not retried here raises :class:`RegistryBusy`,
  which carries the ``Retry-After`` to callers that retry a whole transfer (push uploads).

Failures become EngineErrors: unreachable → Unavailable; the registry's error answers as
:mod:`.answers` reads them (401/403 → PermissionDenied, 404 → NotFound, 429/5xx →
RegistryBusy, …, with the registry's own code and message in the text).
"""

from __future__ import annotations

import base64
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from engine import __version__
from engine.errors import InvalidArgument, Unavailable
from engine.registry.answers import Cancelled, RegistryBusy, error_for, parse_challenge, parse_retry_after
from engine.registry.credentials import Credentials
from engine.registry.endpoints import Endpoint
from engine.registry.options import RegistryOptions

__all__ = ["Cancelled", "RegistryBusy", "Session", "error_for", "iter_raw", "origin", "parse_challenge",
           "parse_retry_after"]

USER_AGENT = f"wharfie/{__version__}"
RETRY_STATUSES = (429, 500, 502, 503, 504)
REDIRECTS = (301, 302, 303, 307, 308)
MAX_HOPS = 5

Body = bytes | Callable[[], Iterable[bytes]] | None


def origin(url: str) -> tuple[str, str, int]:
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, (u.hostname or "").lower(), port


class Session:
    """Requests to one registry endpoint; thread-safe (layers transfer in parallel).

    Args:
        ep: the endpoint. options: timeouts, retries, CAs.
        creds: the user's credentials, or None for anonymous access.
        cancel: set it to abort transfers (checked between chunks and retries); the session
            sets it itself when one parallel transfer fails. ``parent_cancel`` aborts too.
        sleep: how to wait between retries (tests pass a fake).
    """

    def __init__(self, ep: Endpoint, options: RegistryOptions, creds: Credentials | None = None,
                 cancel: threading.Event | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 parent_cancel: threading.Event | None = None) -> None:
        self.ep = ep
        self.options = options
        self.creds = creds
        self.cancel = cancel or threading.Event()
        self.parent_cancel = parent_cancel
        self.sleep = sleep
        self.base: str | None = None
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] = ("", {})
        self._tokens: dict[tuple[str, ...], str] = {}
        verify: Any
        if ep.insecure:
            verify = False
        else:
            verify = ssl.create_default_context()
            for ca in options.ca_files(ep.host):
                verify.load_verify_locations(cafile=ca)
        self.client = httpx.Client(
            verify=verify, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(options.read_timeout, connect=options.connect_timeout),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- discovery and auth ----------------------------------------------------------------------

    def cancelled(self) -> bool:
        return self.cancel.is_set() or (self.parent_cancel is not None and self.parent_cancel.is_set())

    def check_cancel(self) -> None:
        if self.cancelled():
            raise Cancelled("cancelled")

    def ping(self) -> httpx.Response:
        """``GET /v2/`` over each base until one answers; remembers the base and the challenge.

        Raises:
            Unavailable: no base answered (names each failure).
        """
        with self._lock:
            if self.base is not None:
                return httpx.Response(200)
            failures = []
            for base in self.ep.bases:
                for attempt in range(2):
                    try:
                        resp = self.client.get(base + "/v2/")
                    except httpx.HTTPError as e:
                        failures.append(f"{base}: {_describe(e)}")
                        if isinstance(e, httpx.ConnectError) or attempt:
                            break
                        continue
                    self.base = base
                    if resp.status_code == 401:
                        self._challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
                    return resp
            raise Unavailable(f"cannot reach registry {self.ep.host}: " + "; ".join(failures))

    def login(self) -> None:
        """Check the credentials: ping, then authenticate for no particular scope.

        Raises:
            PermissionDenied: the registry refused them. Unavailable: unreachable.
        """
        resp = self.ping()
        scheme, _ = self._challenge
        if resp.status_code != 401 and not scheme:
            return  # an open registry: nothing to check, as docker login
        if scheme == "bearer":
            self._token(())
            return
        r = self.request("GET", "/v2/", (), ok=(200,), what=f"login to {self.ep.host}")
        r.close()

    def _basic(self) -> str | None:
        if self.creds is None or not (self.creds.username or self.creds.password):
            return None
        raw = f"{self.creds.username}:{self.creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scopes: tuple[str, ...]) -> str | None:
        scheme, _ = self._challenge
        if scheme == "basic":
            return self._basic()
        if scheme == "bearer":
            return "Bearer " + self._token(scopes)
        return None

    def _token(self, scopes: tuple[str, ...], refresh: bool = False) -> str:
        with self._lock:
            if not refresh and scopes in self._tokens:
                return self._tokens[scopes]
            _, params = self._challenge
            realm = params.get("realm", "")
            if not realm.startswith(("http://", "https://")):
                raise InvalidArgument(f"registry {self.ep.host}: bad auth challenge (realm {realm!r})")
            q: list[tuple[str, str | int | float | bool | None]] = []
            if params.get("service"):
                q.append(("service", params["service"]))
            q.extend(("scope", s) for s in scopes)
            try:
                if self.creds is not None and self.creds.identity_token:
                    form = dict(q) | {"grant_type": "refresh_token", "client_id": "wharfie",
                                      "refresh_token": self.creds.identity_token}
                    resp = self.client.post(realm, data=form)
                else:
                    headers = {}
                    basic = self._basic()
                    if basic:
                        headers["Authorization"] = basic
                        q.append(("account", self.creds.username if self.creds else ""))
                    resp = self.client.get(realm, params=q, headers=headers)
            except httpx.HTTPError as e:
                raise Unavailable(f"cannot get a token from {realm}: {_describe(e)}") from None
            if resp.status_code != 200:
                raise error_for(resp, f"get a token from {realm}")
            try:
                doc = resp.json()
                token = doc.get("token") or doc.get("access_token")
            except (ValueError, AttributeError):
                token = None
            if not isinstance(token, str) or not token:
                raise InvalidArgument(f"token server {realm} answered without a token")
            self._tokens[scopes] = token
            return token

    # -- requests -------------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, scopes: Iterable[str], *,
                headers: dict[str, str] | None = None, body: Body = None, stream: bool = False,
                what: str = "", ok: tuple[int, ...] = (), retry: bool = True,
                cancellable: bool = True) -> httpx.Response:
        """Send a request to the registry (following redirects, authenticating, retrying).

        Args:
            path_or_url: ``/v2/…`` or an absolute URL (an upload ``Location``).
            scopes: token scopes (``repository:name:pull``).
            body: bytes, or a factory giving a fresh iterable per attempt (uploads).
            stream: leave the body unread (the caller iterates and closes).
            what: for messages ("pull manifest x:1").
            ok: statuses returned as they are; any other 4xx/5xx raises. Empty: return all.
            retry: retry broken connections and 429/5xx (safe for GET/HEAD and idempotent PUTs).
            cancellable: False sends it even once the session is cancelled (clean-up requests).

        Raises:
            Unavailable, PermissionDenied, NotFound, InvalidArgument (see the module doc).
        """
        try:
            self.ping()
        except Unavailable as e:
            raise Unavailable(f"{what}: {e}" if what else str(e)) from None
        assert self.base is not None
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        scope_key = tuple(scopes)
        refreshed = False
        attempt = 0
        while True:
            if cancellable:
                self.check_cancel()
            try:
                resp = self._send(method, url, scope_key, headers or {}, body, stream)
            except httpx.HTTPError as e:
                if not retry or attempt >= self.options.max_retries:
                    raise Unavailable(f"{what or method + ' ' + url}: {_describe(e)}") from None
                self._backoff(attempt, None)
                attempt += 1
                continue
            if resp.status_code == 401 and not refreshed:
                scheme, params = parse_challenge(resp.headers.get("www-authenticate", ""))
                if scheme and (self.creds is not None or scheme == "bearer"):
                    resp.close()
                    refreshed = True
                    with self._lock:
                        self._challenge = (scheme, params)
                        self._tokens.pop(scope_key, None)
                    continue
            if resp.status_code in RETRY_STATUSES and retry and attempt < self.options.max_retries:
                retry_after = resp.headers.get("retry-after")
                resp.close()
                self._backoff(attempt, retry_after)
                attempt += 1
                continue
            if ok and resp.status_code not in ok and resp.status_code >= 300:
                if stream:
                    resp.read()
                err = error_for(resp, what or f"{method} {url}")
                resp.close()
                raise err
            return resp

    def _send(self, method: str, url: str, scopes: tuple[str, ...], headers: dict[str, str],
              body: Body, stream: bool) -> httpx.Response:
        assert self.base is not None
        home = origin(self.base)
        for _hop in range(MAX_HOPS + 1):
            hdrs = dict(headers)
            if origin(url) == home:
                auth = self._auth_header(scopes)
                if auth:
                    hdrs["Authorization"] = auth
            content: Any = body() if callable(body) else body
            req = self.client.build_request(method, url, headers=hdrs, content=content)
            resp = self.client.send(req, stream=True)
            if resp.status_code in REDIRECTS and resp.headers.get("location"):
                resp.close()
                url = urllib.parse.urljoin(url, resp.headers["location"])
                if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                    method, body = "GET", None
                continue
            if not stream:
                try:
                    resp.read()
                finally:
                    resp.close()
            return resp
        raise InvalidArgument(f"{method} {url}: more than {MAX_HOPS} redirects")

    def _backoff(self, attempt: int, retry_after: str | float | None) -> None:
        """Wait before retry ``attempt`` (0-based): ``retry_after`` (a ``Retry-After`` header
        or seconds) if given and readable, else ``backoff * 2**attempt``; capped at
        ``max_backoff``. Raises Cancelled as soon as the transfer is cancelled."""
        wait = parse_retry_after(retry_after) if isinstance(retry_after, str) else retry_after
        delay = self.options.backoff * (2 ** attempt) if wait is None else wait
        delay = max(0.0, min(delay, self.options.max_backoff))
        deadline = time.monotonic() + delay
        while True:
            self.check_cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sleep(min(left, 0.1))


def iter_raw(resp: httpx.Response, size: int = 256 * 1024) -> Iterator[bytes]:
    yield from resp.iter_raw(size)


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, httpx.ConnectError):
        return f"connection refused or unreachable ({text})"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({text or type(e).__name__})"
    return text
