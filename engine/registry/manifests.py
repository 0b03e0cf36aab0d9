"""Manifests from a registry: what we ask for, what we accept, and platform selection.

A document is accepted only if its three type claims agree: the ``Content-Type`` the registry
sent, the document's own ``mediaType`` field, and its shape (an index has ``manifests``, an
image manifest has ``config`` + ``layers``, never both). Anything else — a manifest served as an
index, a config served as a manifest, schema 1 — is refused as media-type confusion, since a
digest only vouches for bytes, not for how they are interpreted (CVE-2021-41190).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidArgument, NotFound
from engine.images import oci
from engine.images.config import host_platform

ACCEPT = ", ".join((oci.OCI_INDEX, oci.DOCKER_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST))
CONFIG_TYPES = (oci.OCI_CONFIG, oci.DOCKER_CONFIG)
_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed image manifest or index."""

    media_type: str
    is_index: bool
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]


def _desc(d: Any, what: str) -> Descriptor:
    try:
        mt, digest, size = oci.check_descriptor(d, what)
    except InvalidArgument as e:
        raise InvalidArgument(str(e).replace("invalid archive: ", "invalid manifest: ")) from None
    plat = d.get("platform") if isinstance(d.get("platform"), dict) else None
    return Descriptor(mt, digest, size, plat)


def parse(data: bytes, content_type: str, what: str, artifacts: bool = False) -> Manifest:
    """Validate and parse a manifest or index. ``artifacts`` (a registry storing any OCI
    artifact): the config and layers may have any media type, not only an image's.

    Raises:
        InvalidArgument: not JSON, schema 1, unknown type, or type claims that disagree.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in _SCHEMA1:
        raise InvalidArgument(f"{what}: Docker image manifest schema 1 is not supported")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what}: manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: manifest is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what}: unsupported manifest schemaVersion {doc.get('schemaVersion')!r}")
    field_mt = doc.get("mediaType")
    if field_mt is not None and not isinstance(field_mt, str):
        raise InvalidArgument(f"{what}: bad mediaType field")
    has_manifests, has_layers = "manifests" in doc, "layers" in doc or "config" in doc
    if has_manifests and has_layers:
        raise InvalidArgument(f"{what}: media-type confusion: the document is both an index and a manifest")
    known = oci.INDEX_TYPES + oci.MANIFEST_TYPES
    claims = {c for c in (ctype if ctype in known else None, field_mt) if c}
    if field_mt and field_mt not in known:
        raise InvalidArgument(f"{what}: unsupported manifest media type {field_mt!r}")
    if len(claims) > 1:
        raise InvalidArgument(f"{what}: media-type confusion: served as {ctype!r} but the document "
                              f"says {field_mt!r}")
    mt = claims.pop() if claims else (oci.OCI_INDEX if has_manifests else oci.OCI_MANIFEST)
    if ctype and ctype not in known and ctype not in ("application/json", "application/octet-stream",
                                                       "text/plain"):
        raise InvalidArgument(f"{what}: unsupported manifest media type {ctype!r}")
    is_index = mt in oci.INDEX_TYPES
    if is_index != has_manifests or (not is_index and not has_layers):
        raise InvalidArgument(f"{what}: media-type confusion: {mt} does not describe this document")
    if is_index:
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise InvalidArgument(f"{what}: manifests is not a list")
        return Manifest(mt, True, None, (), tuple(_desc(d, f"{what} manifests[{i}]") for i, d in enumerate(ms)))
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument(f"{what}: layers is not a list")
    config = _desc(doc.get("config"), f"{what} config")
    if config.media_type not in CONFIG_TYPES and not artifacts:
        raise InvalidArgument(f"{what}: config media type {config.media_type!r} is not an image config "
                              "(not a container image?)")
    descs = tuple(_desc(d, f"{what} layers[{i}]") for i, d in enumerate(layers))
    for d in () if artifacts else descs:
        if d.media_type in oci.FOREIGN_TYPES:
            raise InvalidArgument(f"{what}: layer {d.digest}: non-distributable layers are not supported")
        if d.media_type not in oci.LAYER_TYPES:
            raise InvalidArgument(f"{what}: layer {d.digest} has media type {d.media_type!r}, "
                                  "not an image layer")
    return Manifest(mt, False, config, descs, ())


def parse_platform_arg(text: str | None) -> tuple[str, str, str | None]:
    """``--platform`` (``os/arch[/variant]``), default the host's."""
    if not text:
        os_, arch = host_platform()
        return os_, arch, ("v8" if arch == "arm64" else None)
    from engine.images.config import parse_platform

    return parse_platform(text)


def select(index: Manifest, platform: tuple[str, str, str | None], what: str) -> Descriptor:
    """The index entry for ``platform``: os and architecture must match; a variant matches
    exactly when both give one (arm64 without variant means v8).

    Raises:
        NotFound: Docker's "no matching manifest for linux/amd64 in the manifest list entries".
    """
    want_os, want_arch, want_variant = platform
    best: Descriptor | None = None
    for d in index.manifests:
        if d.media_type and d.media_type not in oci.MANIFEST_TYPES + oci.INDEX_TYPES:
            continue
        p = d.platform or {}
        if p.get("os") != want_os or p.get("architecture") != want_arch:
            continue
        variant = p.get("variant") or ("v8" if want_arch == "arm64" else None)
        if want_variant and variant and variant != want_variant:
            continue
        if best is None or (want_variant and variant == want_variant):
            best = d
    if best is None:
        shown = "/".join(x for x in platform if x)
        raise NotFound(f"{what}: no matching manifest for {shown} in the manifest list entries")
    return best
