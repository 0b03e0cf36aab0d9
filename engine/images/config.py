"""Image config documents (OCI image-spec config / Docker schema2 ``application/vnd.docker.
container.image.v1+json``), image ids and chain ids.

A config is a plain JSON object::

    {"architecture": "amd64", "os": "linux", "created": "2024-…Z", "author": "…",
     "comment": "Imported from -",
     "config": {"Cmd": [...], "Entrypoint": [...], "Env": [...], "WorkingDir": "…", "User": "…",
                "ExposedPorts": {"80/tcp": {}}, "Labels": {...}, "Volumes": {"/data": {}},
                "StopSignal": "…", "Healthcheck": {...}},
     "rootfs": {"type": "layers", "diff_ids": ["sha256:…"]},
     "history": [{"created": "…", "created_by": "…", "comment": "…", "empty_layer": false}]}

Only keys that are set appear in ``config`` (the API layer fills Docker's defaults).

The image id is the sha256 of the exact config bytes; we produce them with
:func:`canonical_json` (Go's field order, no whitespace, UTF-8) so equal configs get equal ids
and tools that re-marshal configs (skopeo) keep them byte for byte.
Chain ids follow the OCI spec: ``ChainID(L0) = DiffID(L0)``,
``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform as _platform
import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import InvalidArgument

JSONDict = dict[str, Any]

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

# container-config keys we understand, with the JSON type each must have
CONTAINER_CONFIG_KEYS: dict[str, type | tuple[type, ...]] = {
    "Cmd": list, "Entrypoint": list, "Env": list, "WorkingDir": str, "User": str,
    "ExposedPorts": dict, "Labels": dict, "Volumes": dict, "StopSignal": str,
    "Healthcheck": dict, "OnBuild": list, "Shell": list,
}

_MACHINE_TO_GOARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le",
    "s390x": "s390x", "riscv64": "riscv64",
}


def host_platform() -> tuple[str, str]:
    """``(os, architecture)`` in Go's vocabulary for the machine we run on (os is "linux")."""
    machine = _platform.machine().lower()
    return "linux", _MACHINE_TO_GOARCH.get(machine, machine or "amd64")


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """Parse ``os[/arch[/variant]]`` (e.g. ``linux/arm64/v8``) into ``(os, arch, variant)``.

    Raises:
        InvalidArgument: empty components or more than three of them.
    """
    parts = text.strip().lower().split("/")
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise InvalidArgument(f"invalid platform {text!r}: want os[/arch[/variant]]")
    host_os, host_arch = host_platform()
    arch = parts[1] if len(parts) > 1 else host_arch
    return parts[0], arch, parts[2] if len(parts) == 3 else None


def format_time(ts: float) -> str:
    """RFC 3339 UTC as Go's ``time.RFC3339Nano`` writes it (trailing fraction zeros trimmed):
    ``2024-01-02T03:04:05.123456789Z``, ``2024-01-02T03:04:05.5Z``, ``2024-01-02T03:04:05Z``.
    Go's form keeps configs byte-stable through tools that re-marshal them (skopeo)."""
    whole = int(ts // 1)
    nanos = int(round((ts - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = _dt.datetime.fromtimestamp(whole, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_time(text: str) -> float:
    """Parse an RFC 3339 timestamp (any fraction length, ``Z`` or offset) to epoch seconds.

    Raises:
        InvalidArgument: not RFC 3339.
    """
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if m is None:
        raise InvalidArgument(f"invalid timestamp {text!r}: want RFC 3339")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = float(_dt.datetime.fromisoformat(m.group(1) + tz).timestamp())
    frac = m.group(2) or "0"
    return base + float(f"0.{frac}")


# Field order of the OCI image-spec Go structs (``v1.Image``, ``ImageConfig``, ``History``):
# tools written in Go (skopeo, containers/image) re-marshal configs through them when they
# convert a Docker manifest to OCI, so a config already in that form keeps its digest.
_IMAGE_KEYS = ("created", "author", "architecture", "variant", "os", "os.version", "os.features",
               "config", "rootfs", "history")
_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                "Labels", "StopSignal", "ArgsEscaped")
_HISTORY_KEYS = ("created", "created_by", "author", "comment", "empty_layer")


def _ordered(doc: Mapping[str, Any], keys: Sequence[str]) -> JSONDict:
    out: JSONDict = {k: doc[k] for k in keys if k in doc}
    out.update({k: doc[k] for k in sorted(doc) if k not in out})
    return out


def _go_ordered(doc: Mapping[str, Any]) -> JSONDict:
    out = _ordered(doc, _IMAGE_KEYS)
    if isinstance(out.get("config"), dict):
        out["config"] = _ordered({k: v for k, v in out["config"].items()
                                  if v not in (None, "", [], {}, False)}, _CONFIG_KEYS)
        for key in ("ExposedPorts", "Volumes", "Labels"):
            if isinstance(out["config"].get(key), dict):
                out["config"][key] = dict(sorted(out["config"][key].items()))
    if isinstance(out.get("rootfs"), dict):
        out["rootfs"] = _ordered(out["rootfs"], ("type", "diff_ids"))
    if isinstance(out.get("history"), list):
        out["history"] = [_ordered(h, _HISTORY_KEYS) if isinstance(h, dict) else h
                          for h in out["history"]]
    return out


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Deterministic config bytes, as Go's ``encoding/json`` writes the OCI image config:
    struct field order (other keys sorted after), no whitespace, UTF-8, ``<>&`` escaped,
    empty ``config`` fields omitted."""
    text = json.dumps(_go_ordered(doc), separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def image_id(config_bytes: bytes) -> str:
    """The image id of a config: ``sha256:`` + hex sha256 of its exact bytes."""
    return "sha256:" + hashlib.sha256(config_bytes).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI chain ids for a stack of diff ids (bottom first).

    Raises:
        InvalidArgument: a diff id is not ``sha256:<64 hex>``.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        if not _DIGEST_RE.match(diff_id):
            raise InvalidArgument(f"invalid diff id {diff_id!r}")
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def new_config(*, diff_ids: Sequence[str], created: float, architecture: str | None = None,
               os: str | None = None, variant: str | None = None, author: str = "",
               comment: str = "", container_config: Mapping[str, Any] | None = None,
               history: Sequence[Mapping[str, Any]] | None = None,
               parent_config: Mapping[str, Any] | None = None) -> JSONDict:
    """Build a config document.

    Args:
        diff_ids: uncompressed layer digests, bottom first.
        created: epoch seconds.
        architecture, os, variant: default to the host platform.
        author, comment: image-level fields (omitted when empty).
        container_config: the runtime defaults (``Cmd``, ``Env``…), validated.
        history: full history; if None, one entry per layer is made from ``comment``.
        parent_config: when given (commit), its history is extended and ``history`` appended.

    Returns:
        The config dict, already validated by :func:`validate_config`.
    """
    host_os, host_arch = host_platform()
    stamp = format_time(created)
    doc: JSONDict = {
        "architecture": architecture or host_arch,
        "os": os or host_os,
        "created": stamp,
        "config": dict(container_config or {}),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    if variant:
        doc["variant"] = variant
    if author:
        doc["author"] = author
    # The image-level "comment" is Docker-only (not in the OCI struct, so lost by conversion);
    # the comment lives in the history entry, where ``ImageRecord.comment`` finds it.
    if history is None:
        entry: JSONDict = {"created": stamp}
        if author:
            entry["author"] = author
        if comment:
            entry["comment"] = comment
        history = [dict(entry) for _ in range(max(1, len(diff_ids)))] if diff_ids else \
            [dict(entry, empty_layer=True)]
    base_history = list((parent_config or {}).get("history") or [])
    doc["history"] = base_history + [dict(h) for h in history]
    return validate_config(doc)


def validate_config(doc: Any) -> JSONDict:
    """Check the structure of a config document and return it.

    Raises:
        InvalidArgument: naming the first offending field.
    """
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid image config: not a JSON object")
    for key in ("architecture", "os"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InvalidArgument(f"invalid image config: {key!r} must be a non-empty string")
    if "created" in doc:
        if not isinstance(doc["created"], str):
            raise InvalidArgument("invalid image config: 'created' must be a string")
        parse_time(doc["created"])
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument("invalid image config: rootfs.type must be 'layers'")
    diffs = rootfs.get("diff_ids")
    if not isinstance(diffs, list) or not all(isinstance(d, str) and _DIGEST_RE.match(d)
                                              for d in diffs):
        raise InvalidArgument("invalid image config: rootfs.diff_ids must be sha256 digests")
    cfg = doc.get("config")
    if cfg is not None:
        if not isinstance(cfg, dict):
            raise InvalidArgument("invalid image config: 'config' must be an object")
        for key, want in CONTAINER_CONFIG_KEYS.items():
            if cfg.get(key) is not None and not isinstance(cfg[key], want):
                raise InvalidArgument(f"invalid image config: config.{key} has the wrong type")
        for key in ("Cmd", "Entrypoint", "Env"):
            if cfg.get(key) is not None and not all(isinstance(x, str) for x in cfg[key]):
                raise InvalidArgument(f"invalid image config: config.{key} must be strings")
    history = doc.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise InvalidArgument("invalid image config: 'history' must be a list of objects")
    if history:
        non_empty = sum(1 for h in history if not h.get("empty_layer"))
        if non_empty != len(diffs):
            raise InvalidArgument(f"invalid image config: history has {non_empty} non-empty "
                                  f"layers but rootfs has {len(diffs)} diff_ids")
    return doc


def parse_config(data: bytes | str) -> JSONDict:
    """Decode and validate config JSON. Raises InvalidArgument."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid image config: {e}") from e
    return validate_config(doc)


def diff_ids(doc: Mapping[str, Any]) -> list[str]:
    """``rootfs.diff_ids`` of a validated config."""
    return list(doc["rootfs"]["diff_ids"])


def container_config(doc: Mapping[str, Any]) -> JSONDict:
    """The ``config`` section (runtime defaults) of a config, ``{}`` if absent."""
    return dict(doc.get("config") or {})
