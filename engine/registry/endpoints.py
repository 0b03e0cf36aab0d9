"""Where a reference lives: registry host, repository path, and the URLs to try.

``docker.io/library/busybox`` is served by ``registry-1.docker.io`` (credentials are filed under
``https://index.docker.io/v1/`` in ``config.json``, as the docker CLI does); any other domain is
its own registry host. Hosts that are insecure (see :class:`RegistryOptions`) are tried over
HTTPS without certificate verification first, then plain HTTP, as Docker does.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import refs
from engine.errors import InvalidArgument
from engine.registry.options import RegistryOptions

HUB_HOST = "registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registry: ``host`` (``name[:port]``), ``bases`` in the order to try, and whether
    TLS certificates are verified."""

    host: str
    bases: tuple[str, ...]
    insecure: bool
    auth_key: str  # the key credentials are stored under in config.json


def parse_reference(text: str) -> refs.Reference:
    """Parse a pull/push reference early, with a clear message. Raises InvalidArgument."""
    try:
        return refs.parse(text)
    except InvalidArgument as e:
        raise InvalidArgument(f"invalid reference {text!r}: {e}") from None


def registry_host(domain: str) -> str:
    return HUB_HOST if domain == refs.DEFAULT_DOMAIN else domain


def auth_key(domain_or_server: str) -> str:
    """The ``config.json`` key for a registry (``docker login`` normalisation)."""
    s = domain_or_server.strip()
    for prefix in ("https://", "http://"):
        s = s.removeprefix(prefix)
    s = s.rstrip("/")
    if s.endswith("/v1") or s.endswith("/v2"):
        s = s[:-3]
    if s in ("", refs.DEFAULT_DOMAIN, refs.LEGACY_DEFAULT_DOMAIN, HUB_HOST):
        return HUB_AUTH_KEY
    return s


def endpoint(domain: str, options: RegistryOptions) -> Endpoint:
    """The endpoint serving ``domain`` (a reference's domain, or a ``login`` server)."""
    key = auth_key(domain)
    host = HUB_HOST if key == HUB_AUTH_KEY else key
    if "/" in host:
        raise InvalidArgument(f"invalid registry address {domain!r}")
    insecure = options.is_insecure(host)
    bases = (f"https://{host}", f"http://{host}") if insecure else (f"https://{host}",)
    return Endpoint(host=host, bases=bases, insecure=insecure, auth_key=key)


def mirror_endpoints(options: RegistryOptions) -> list[Endpoint]:
    """Endpoints of the configured Docker Hub mirrors (tried before the hub for pulls)."""
    out = []
    for url in options.mirrors:
        u = url.rstrip("/")
        host = u.split("://", 1)[-1]
        plain = u.startswith("http://")
        out.append(Endpoint(host=host, bases=(u,) if "://" in u else (f"https://{host}",),
                            insecure=plain or options.is_insecure(host), auth_key=host))
    return out
