"""OCI image-layout and Docker schema2 documents: media types, descriptors, manifests, indexes.

What ``save`` writes (the layout of ``docker save`` since Docker 25, which is an OCI image
layout with Docker's ``manifest.json`` beside it)::

    blobs/sha256/<config>     the image config, byte for byte (its digest is the image id)
    blobs/sha256/<layer>      uncompressed layer tars (digest == diff_id), or gzip/zstd ones
    blobs/sha256/<manifest>   an OCI image manifest per image
    index.json                one descriptor per tag (annotated with the name), or one untagged
    manifest.json             Docker's [{"Config", "RepoTags", "Layers"}]
    oci-layout                {"imageLayoutVersion": "1.0.0"}
    repositories              Docker's legacy {repo: {tag: top-layer hex}}

Documents are serialised with :func:`dump` (compact, fixed key order), so equal inputs give
equal bytes and the manifest digest is stable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import InvalidArgument
from engine.images.archive import Compression

OCI_LAYOUT = "oci-layout"
OCI_LAYOUT_VERSION = "1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP,
               "application/vnd.docker.image.rootfs.diff.tar.zstd")
FOREIGN_TYPES = (DOCKER_FOREIGN, OCI_LAYER_ND, OCI_LAYER_ND + "+gzip", OCI_LAYER_ND + "+zstd")

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"

LAYER_MEDIA_TYPE = {Compression.NONE: OCI_LAYER, Compression.GZIP: OCI_LAYER_GZIP,
                    Compression.ZSTD: OCI_LAYER_ZSTD}

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

JSON = dict[str, Any]


def dump(doc: Any) -> bytes:
    """Compact JSON bytes in insertion order (the order the builders below use)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(media_type: str, digest: str, size: int,
               annotations: Mapping[str, str] | None = None,
               platform: Mapping[str, str] | None = None) -> JSON:
    d: JSON = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        d["annotations"] = dict(annotations)
    if platform:
        d["platform"] = dict(platform)
    return d


def manifest(config: JSON, layers: Sequence[JSON]) -> JSON:
    """An OCI image manifest."""
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": list(layers)}


def index(manifests: Sequence[JSON]) -> JSON:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(manifests)}


def blob_path(digest: str) -> str:
    """``sha256:<hex>`` → ``blobs/sha256/<hex>``."""
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid archive: {what} is not valid JSON: {e}") from None


def check_descriptor(d: Any, what: str) -> tuple[str, str, int]:
    """``(mediaType, digest, size)`` of a descriptor. Raises InvalidArgument."""
    if not isinstance(d, dict):
        raise InvalidArgument(f"invalid archive: {what}: descriptor is not an object")
    digest, size, mt = d.get("digest"), d.get("size"), d.get("mediaType", "")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid archive: {what}: bad or unsupported digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"invalid archive: {what}: bad size {size!r} for {digest}")
    if not isinstance(mt, str):
        raise InvalidArgument(f"invalid archive: {what}: bad mediaType for {digest}")
    return mt, digest, size


def ref_names(annotations: Mapping[str, Any] | None) -> str | None:
    """The image name an index descriptor's annotations give, if a full reference.

    ``io.containerd.image.name`` (Docker, containerd) wins; ``org.opencontainers.image.ref.name``
    counts only when it is a whole reference (skopeo and umoci put a bare tag there, which names
    no repository: such images load untagged, as Docker does).
    """
    if not annotations:
        return None
    full = annotations.get(ANNOTATION_IMAGE_NAME)
    if isinstance(full, str) and full:
        return full
    name = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(name, str) and ("/" in name or ":" in name or "@" in name):
        return name
    return None
