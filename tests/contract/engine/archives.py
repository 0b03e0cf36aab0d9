"""Builders for image archives (good and hostile) used by the load tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence

TarMutator = Callable[[tarfile.TarFile], None]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes] | None = None, extra: TarMutator | None = None,
          fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer tar with regular ``files`` (dirs implied), then whatever ``extra`` adds."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in sorted((files or {}).items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tf.addfile(ti, io.BytesIO(data))
        if extra is not None:
            extra(tf)
    return buf.getvalue()


def config(diff_ids: Sequence[str], cmd: Sequence[str] = ("sh",)) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": {"Cmd": list(cmd)},
           "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
           "history": [{"created": "2024-01-01T00:00:00Z"} for _ in diff_ids]}
    return json.dumps(doc).encode()


def tar_of(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """An archive with the given files (and symlinks: name → target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
    return buf.getvalue()


def docker_archive(layers: Sequence[bytes], tags: Sequence[str] = ("hostile:1",),
                   cfg: bytes | None = None, compress_layers: bool = False,
                   legacy: bool = False) -> bytes:
    """A docker-archive (Docker 25 blob layout, or the old per-layer-dir one)."""
    diff_ids = [sha(x) for x in layers]
    cfg = cfg if cfg is not None else config(diff_ids)
    members: dict[str, bytes] = {}
    links: dict[str, str] = {}
    paths = []
    for i, data in enumerate(layers):
        blob = gzip.compress(data, mtime=0) if compress_layers else data
        if legacy:
            d = hashlib.sha256(f"layer{i}".encode()).hexdigest()
            members[f"{d}/layer.tar"] = blob
            members[f"{d}/VERSION"] = b"1.0"
            paths.append(f"{d}/layer.tar")
        else:
            members["blobs/sha256/" + sha(blob)[7:]] = blob
            paths.append("blobs/sha256/" + sha(blob)[7:])
    cfg_name = f"{sha(cfg)[7:]}.json" if legacy else "blobs/sha256/" + sha(cfg)[7:]
    members[cfg_name] = cfg
    members["manifest.json"] = json.dumps(
        [{"Config": cfg_name, "RepoTags": list(tags), "Layers": paths}]).encode()
    return tar_of(members, links)


def oci_archive(layers: Sequence[bytes], name: str | None = "docker.io/library/oci:1",
                ref_name: str | None = "1", nested: bool = False) -> bytes:
    """An OCI image layout archive (no manifest.json)."""
    diff_ids = [sha(x) for x in layers]
    cfg = config(diff_ids)
    members: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}

    def blob(data: bytes) -> str:
        members["blobs/sha256/" + sha(data)[7:]] = data
        return sha(data)

    gz = [gzip.compress(x, mtime=0) for x in layers]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg),
                   "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(g),
                    "size": len(g)} for g in gz]}).encode()
    ann = {}
    if name:
        ann["io.containerd.image.name"] = name
    if ref_name:
        ann["org.opencontainers.image.ref.name"] = ref_name
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
            "size": len(manifest), "platform": {"os": "linux", "architecture": "amd64"}}
    if nested:
        import platform as _p

        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(_p.machine(), _p.machine())
        other = dict(desc, platform={"os": "linux", "architecture": "s390x-nope"})
        desc["platform"] = {"os": "linux", "architecture": arch}
        idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": [other, desc]}).encode()
        # the "other" platform's manifest is absent on purpose: it must not be needed
        other["digest"] = sha(b"absent")
        idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": [other, desc]}).encode()
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": blob(idx),
                "size": len(idx)}
    if ann:
        desc["annotations"] = ann
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    return tar_of(members)
