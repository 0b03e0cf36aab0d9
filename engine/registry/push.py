"""``docker push``: layers (skipped, mounted or uploaded compressed), config, then the manifest.

Per layer, in order of preference:

1. a compressed form we know (``layer_sources``: pulled from, or pushed to, this registry, or
   our own deterministic gzip of it — docker's "v2 metadata") that the target repository
   already has (``HEAD`` → 200): "Layer already exists", nothing is compressed or sent;
2. one another repository of the same registry has: cross-repository mount
   (``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`` → 201): "Mounted from …";
3. otherwise the layer is gzip-compressed (:mod:`engine.images.pgzip`: parallel, one member,
   deterministic — the same diff gives the same bytes, so the digest is remembered and a later
   push to a registry that has it is a skip) WHILE it is uploaded (:mod:`.push_upload`: by
   default one streamed ``PATCH``, as docker, so the registry stores it as it is compressed).
   A layer blob the store keeps compressed already is sent as it is.

Layers go up ``max_concurrent_uploads`` at a time, the config alongside them; the manifest —
Docker schema 2 (as ``docker push``) or OCI (``oci_manifest=True``) — last. What the push
learnt (each layer's blob digest here) is recorded in one metadata transaction at the end,
also when the push failed part-way.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine import refs
from engine.errors import InvalidArgument, NotFound
from engine.images import compress, oci, pgzip
from engine.images.archive import Compression
from engine.registry import credentials as _creds
from engine.registry import endpoints
from engine.registry.options import RegistryOptions
from engine.registry.progress import Progress, Reporter, short
from engine.registry.pull import session_for
from engine.registry.push_upload import MONOLITHIC, Uploader
from engine.registry.session import Cancelled, Session

if TYPE_CHECKING:
    from engine.images.store import ImageStore
    from engine.store.meta import LayerRow

CHUNK = 1024 * 1024
_DOCKER_LAYER = {Compression.NONE: oci.DOCKER_LAYER, Compression.GZIP: oci.DOCKER_LAYER_GZIP,
                 Compression.ZSTD: "application/vnd.docker.image.rootfs.diff.tar.zstd"}
_KIND_OF = {oci.DOCKER_LAYER: Compression.NONE, oci.OCI_LAYER: Compression.NONE,
            oci.DOCKER_LAYER_GZIP: Compression.GZIP, oci.OCI_LAYER_GZIP: Compression.GZIP,
            oci.OCI_LAYER_ZSTD: Compression.ZSTD, _DOCKER_LAYER[Compression.ZSTD]: Compression.ZSTD}


@dataclass(frozen=True, slots=True)
class PushResult:
    tag: str
    digest: str
    size: int
    pushed: tuple[str, ...]  # layer digests uploaded
    skipped: tuple[str, ...]  # layer digests the registry had (or mounted)


class _Pusher(Uploader):
    def __init__(self, store: ImageStore, options: RegistryOptions, s: Session, ref: refs.Reference,
                 report: Reporter, oci_manifest: bool) -> None:
        super().__init__(s, options, ref.path)
        self.store, self.ref = store, ref
        self.report, self.oci = report, oci_manifest
        self.sources: list[tuple[str, str, int, str, str]] = []  # layer_sources rows to record
        self.pushed: list[str] = []
        self.skipped: list[str] = []
        self.lock = threading.Lock()

    def media_type(self, kind: Compression) -> str:
        return oci.LAYER_MEDIA_TYPE[kind] if self.oci else _DOCKER_LAYER[kind]

    def exists(self, digest: str) -> bool:
        r = self.s.request("HEAD", f"/v2/{self.path}/blobs/{digest}", self.scopes, ok=(200, 404),
                           what=f"check blob {digest}")
        return r.status_code == 200

    def layer(self, lr: LayerRow) -> dict[str, Any]:
        ident = short(lr.diff_id)
        sources = self.store.meta.layer_sources(lr.diff_id)
        here = [src for src in sources if src[3] == "" or refs.parse(src[3] + ":x").domain == self.ref.domain]
        seen: set[str] = set()
        for digest, size, mt, _repo in here:
            if digest in seen or mt not in _KIND_OF:
                continue
            seen.add(digest)
            if self.exists(digest):
                self.report.status("Layer already exists", ident)
                return self.done(lr, digest, size, mt, skipped=True)
        for digest, size, mt, repo in here:
            if not repo or mt not in _KIND_OF or repo == self.ref.repository:
                continue
            src_path = refs.parse(repo + ":x").path
            if self.mount(digest, src_path):
                self.report.status(f"Mounted from {src_path}", ident)
                return self.done(lr, digest, size, mt, skipped=True)
        with self.store.blobs.open(lr.blob) as src:
            kind = compress.sniff(src.read(6))
        if kind is Compression.NONE:
            total = lr.size or self.store.blobs.size(lr.blob)
            digest, size = self.upload(lambda: self._gzip_pieces(lr, ident, total), ident,
                                       big=total > MONOLITHIC)
            kind = Compression.GZIP
        else:  # kept compressed in the store (content-addressed: its name is its digest): sent as it is
            digest, size = lr.blob, self.store.blobs.size(lr.blob)
            if digest not in seen and self.exists(digest):
                self.report.status("Layer already exists", ident)
                return self.done(lr, digest, size, self.media_type(kind), skipped=True)
            self.upload(lambda: self._file_pieces(lr.blob, ident, size), ident, digest)
        self.report.status("Pushed", ident)
        return self.done(lr, digest, size, self.media_type(kind), skipped=False, local=True)

    def done(self, lr: LayerRow, digest: str, size: int, mt: str, skipped: bool,
             local: bool = False) -> dict[str, Any]:
        kind = _KIND_OF[mt]
        mt = self.media_type(kind)
        with self.lock:
            (self.skipped if skipped else self.pushed).append(digest)
            self.sources.append((lr.diff_id, digest, size, mt, self.ref.repository))
            if local:
                self.sources.append((lr.diff_id, digest, size, mt, ""))
        return oci.descriptor(mt, digest, size)

    def config(self, image_id: str, config: bytes) -> None:
        if not self.exists(image_id):
            self.upload(lambda: iter((config,)), short(image_id), image_id)

    def record(self, repo_digest: str | None, image_id: str) -> None:
        """Store what this push learnt (which blob each layer is, here and in our own gzip; the
        repo digest once the manifest is in) in ONE metadata transaction: one disk sync."""
        with self.store.meta.transaction():
            for row in self.sources:
                self.store.meta.add_layer_source(*row)
            if repo_digest is not None:
                self.store.meta.set_repo_digest(repo_digest, image_id)

    def mount(self, digest: str, src_path: str) -> bool:
        q = urllib.parse.urlencode({"mount": digest, "from": src_path})
        r = self.s.request("POST", f"/v2/{self.path}/blobs/uploads/?{q}",
                           self.scopes + (f"repository:{src_path}:pull",), ok=(201, 202),
                           what=f"mount blob {digest} from {src_path}", retry=False)
        if r.status_code == 201:
            return True
        loc = r.headers.get("location")
        if loc:  # the registry opened an upload instead: cancel it
            self.cancel_upload(loc)
        return False

    def _gzip_pieces(self, lr: LayerRow, ident: str, total: int) -> Iterator[bytes]:
        """The layer gzip-compressed (:func:`pgzip.gzip_stream`), reporting input progress.

        Raises:
            InvalidArgument: the stored layer is not as long as recorded (truncated).
        """
        with self.store.blobs.open(lr.blob) as src:  # read with readinto into reused buffers
            count = 0
            for piece in pgzip.gzip_stream(src):
                count = src.tell()  # the bytes read so far
                self.report.bytes("Pushing", ident, count, total)
                if lr.size and count > lr.size:
                    break
                yield piece
            count = src.tell()
        if lr.size and count != lr.size:
            raise InvalidArgument(f"layer {lr.diff_id} in the local store is {count} bytes, recorded as "
                                  f"{lr.size}: the store is damaged; nothing was pushed")

    def _file_pieces(self, blob: str, ident: str, total: int) -> Iterator[bytes]:
        with self.store.blobs.open(blob) as fh:
            done = 0
            while data := fh.read(CHUNK):
                done += len(data)
                self.report.bytes("Pushing", ident, done, total)
                yield data


def push(store: ImageStore, options: RegistryOptions, reference: str,
         creds: _creds.Credentials | None = None, progress: Progress | None = None,
         cancel: threading.Event | None = None, oci_manifest: bool = False) -> PushResult:
    """Push the local tag ``reference`` (``name[:tag]``) to its registry.

    Raises:
        InvalidArgument: bad reference (or one with a digest). NotFound: no such local tag.
        PermissionDenied / Unavailable / InvalidArgument: as the registry answers.
    """
    ref = endpoints.parse_reference(reference)
    if ref.digest is not None:
        raise InvalidArgument(f"cannot push {reference}: push a tag, not a digest")
    image_id = store.meta.get_tag(ref.full)
    if image_id is None:
        raise NotFound(f"An image does not exist locally with the tag: {ref.name}")
    row = store.meta.get_image(image_id)
    if row is None:
        raise NotFound(f"No such image: {reference}")
    config = row.config.encode()
    report = Reporter(progress)
    report.status(f"The push refers to repository [{ref.name}]")
    cancel = cancel or threading.Event()
    tag = ref.tag or refs.DEFAULT_TAG
    try:
        with store.blobs.lease() as lease, session_for(ref, options, creds, cancel) as s:
            layers = store.meta.image_layers(image_id)
            for lr in layers:
                lease.add(lr.blob)
            p = _Pusher(store, options, s, ref, report, oci_manifest)
            for lr in reversed(layers):
                report.status("Preparing", short(lr.diff_id))
            pushed: str | None = None
            try:
                descs = _parallel(p, layers, image_id, config, cancel)
                cfg_type = oci.OCI_CONFIG if oci_manifest else oci.DOCKER_CONFIG
                doc: dict[str, Any] = {"schemaVersion": 2,
                                       "mediaType": oci.OCI_MANIFEST if oci_manifest else oci.DOCKER_MANIFEST,
                                       "config": oci.descriptor(cfg_type, image_id, len(config)),
                                       "layers": descs}
                data = oci.dump(doc)
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                r = s.request("PUT", f"/v2/{ref.path}/manifests/{tag}", p.scopes, body=data,
                              headers={"Content-Type": doc["mediaType"]}, ok=(201,),
                              what=f"push manifest {ref.name}:{tag}")
                got = r.headers.get("docker-content-digest")
                if got and got != digest:
                    raise InvalidArgument(f"push {ref.name}:{tag}: the registry stored the manifest as {got}, "
                                          f"not {digest}")
                pushed = f"{ref.repository}@{digest}"
            finally:  # what the registry has now is worth remembering even if the push failed
                p.record(pushed, image_id)
    except BaseException:
        cancel.set()
        raise
    report.status(f"{tag}: digest: {digest} size: {len(data)}")
    report.status("", None, aux={"Tag": tag, "Digest": digest, "Size": len(data)}, progressDetail={})
    return PushResult(tag, digest, len(data), tuple(p.pushed), tuple(p.skipped))


def _parallel(p: _Pusher, layers: list[LayerRow], image_id: str, config: bytes,
              cancel: threading.Event) -> list[dict[str, Any]]:
    """Push the layers on ``max_concurrent_uploads`` threads and the config beside them, first,
    on a thread of its own (its round trips then overlap the layers' compression instead of
    adding to the push's tail; with ``max_concurrent_uploads`` 1, one upload at a time: the
    config first); the layers' descriptors in order. The first failure cancels the rest and is
    raised."""
    errors: list[BaseException] = []
    out: list[dict[str, Any]] = []
    limit = max(1, p.options.max_concurrent_uploads)
    with ThreadPoolExecutor(max_workers=limit + (1 if limit > 1 else 0), thread_name_prefix="push") as pool:
        cfg = pool.submit(p.config, image_id, config)
        futs = [pool.submit(p.layer, lr) for lr in layers]
        for f in futs:
            try:
                out.append(f.result())
            except BaseException as e:  # noqa: BLE001 - first error wins
                cancel.set()
                errors.append(e)
        try:
            cfg.result()
        except BaseException as e:  # noqa: BLE001
            cancel.set()
            errors.append(e)
    if errors:
        raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
    return out
