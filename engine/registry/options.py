"""Registry configuration: the daemon's ``--insecure-registry``, ``--registry-mirror``,
certificate directory and transfer knobs (Docker's ``daemon.json`` keys of the same names)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8", "::1/128")  # Docker's default (registry.DefaultInsecure…)


@dataclass(frozen=True)
class RegistryOptions:
    """How the engine talks to registries.

    Attributes:
        insecure_registries: hosts (``host:port``) or CIDRs reached over plain HTTP, or over
            HTTPS without certificate verification. 127.0.0.0/8 is always insecure, as in Docker.
        mirrors: base URLs tried first for Docker Hub pulls (``https://mirror.example``).
        certs_dir: Docker's ``certs.d``: ``<dir>/<host:port>/ca.crt`` (and ``*.crt``) are
            trusted for that registry.
        config_path: the credentials file (Docker's ``config.json``); default
            ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
        max_concurrent_downloads / max_concurrent_uploads: per pull / push (Docker: 3 / 5).
        max_retries: attempts after the first for 429/5xx answers and broken connections.
        backoff: first retry delay in seconds (doubles, capped at ``max_backoff``).
        chunk_size: 0 (default): a blob over 1 MiB is uploaded as ONE streamed PATCH (chunked
            transfer encoding, as ``docker push``), so the registry stores it while it is being
            compressed; > 0: blobs larger than this go as PATCH chunks of this size with
            ``Content-Range`` (the OCI spec's chunked upload).
        max_manifest_size: manifests larger than this are refused (4 MiB, as containerd).
        connect_timeout / read_timeout: seconds.
    """

    insecure_registries: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    certs_dir: str | None = None
    config_path: str | None = None
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    max_retries: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0
    chunk_size: int = 0
    max_manifest_size: int = 4 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)

    def credentials_path(self) -> str:
        if self.config_path:
            return self.config_path
        base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        return os.path.join(base, "config.json")

    def is_insecure(self, host: str) -> bool:
        """True if ``host`` (``name[:port]``) may be reached without verified TLS."""
        if host in self.insecure_registries:
            return True
        name = _hostname(host)
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return name == "localhost" and "localhost" in self.insecure_registries
        for cidr in DEFAULT_INSECURE_CIDRS + tuple(self.insecure_registries):
            try:
                if ip in ipaddress.ip_network(cidr, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def ca_files(self, host: str) -> list[str]:
        """CA certificates ``certs_dir`` holds for ``host`` (sorted; none if no dir)."""
        if not self.certs_dir:
            return []
        d = os.path.join(self.certs_dir, host)
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".crt"))


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host
