"""``docker push``: layers (skipped, mounted or uploaded compressed), config, then the manifest.

Per layer, in order of preference:

1. a compressed form we know (``layer_sources``: pulled from, or pushed to, this registry, or
   our own deterministic gzip of it — docker's "v2 metadata") that the target repository
   already has (``HEAD`` → 200): "Layer already exists", nothing is compressed or sent;
2. one another repository of the same registry has: cross-repository mount
   (``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`` → 201): "Mounted from …";
3. otherwise the layer is gzip-compressed (:mod:`engine.images.pgzip`: parallel, one member,
   deterministic — the same diff gives the same bytes, so the digest is remembered and a later
   push to a registry that has it is a skip) WHILE it is uploaded: a producer thread compresses
   ahead into a bounded queue, the digest is computed on the fly, and the bytes go out as one
   ``PUT ?digest=`` if the whole blob fits in ``chunk_size``, else as ``PATCH`` chunks of
   ``chunk_size`` with ``Content-Range`` (OCI distribution spec) closed by ``PUT ?digest=``.
   A layer blob the store keeps compressed already is sent as it is.

A failed upload (broken connection, 5xx) restarts from a new session, recompressing (the bytes
and digest come out the same), at most ``max_retries`` times with back-off. The manifest is
Docker schema 2 (as ``docker push``) or OCI (``oci=True``).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from engine import refs
from engine.errors import InvalidArgument, NotFound, Unavailable
from engine.images import compress, oci, pgzip
from engine.images.archive import Compression
from engine.registry import credentials as _creds
from engine.registry import endpoints
from engine.registry.options import RegistryOptions
from engine.registry.progress import Progress, Reporter, short
from engine.registry.pull import session_for
from engine.registry.session import Session

if TYPE_CHECKING:
    from engine.images.store import ImageStore
    from engine.store.meta import LayerRow

CHUNK = 1024 * 1024
PREFETCH_PIECES = 256  # compressed pieces (~1/4 MiB each on layer data) queued ahead of the upload
_DOCKER_LAYER = {Compression.NONE: oci.DOCKER_LAYER, Compression.GZIP: oci.DOCKER_LAYER_GZIP,
                 Compression.ZSTD: "application/vnd.docker.image.rootfs.diff.tar.zstd"}
_KIND_OF = {oci.DOCKER_LAYER: Compression.NONE, oci.OCI_LAYER: Compression.NONE,
            oci.DOCKER_LAYER_GZIP: Compression.GZIP, oci.OCI_LAYER_GZIP: Compression.GZIP,
            oci.OCI_LAYER_ZSTD: Compression.ZSTD, _DOCKER_LAYER[Compression.ZSTD]: Compression.ZSTD}

Pieces = Callable[[], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class PushResult:
    tag: str
    digest: str
    size: int
    pushed: tuple[str, ...]  # layer digests uploaded
    skipped: tuple[str, ...]  # layer digests the registry had (or mounted)


class _Pusher:
    def __init__(self, store: ImageStore, options: RegistryOptions, s: Session, ref: refs.Reference,
                 report: Reporter, oci_manifest: bool) -> None:
        self.store, self.options, self.s, self.ref = store, options, s, ref
        self.report, self.oci = report, oci_manifest
        self.path = ref.path
        self.scopes = (f"repository:{ref.path}:pull,push",)
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
            digest, size = self.upload(lambda: self._gzip_pieces(lr, ident, total), ident, total)
            kind = Compression.GZIP
        else:  # kept compressed in the store: sent as it is
            digest, size = _hash_file(self.store.blobs.path(lr.blob))
            if digest not in seen and self.exists(digest):
                self.report.status("Layer already exists", ident)
                return self.done(lr, digest, size, self.media_type(kind), skipped=True)
            self.upload(lambda: self._file_pieces(lr.blob, ident, size), ident, size, digest)
        self.report.status("Pushed", ident)
        return self.done(lr, digest, size, self.media_type(kind), skipped=False, local=True)

    def done(self, lr: LayerRow, digest: str, size: int, mt: str, skipped: bool,
             local: bool = False) -> dict[str, Any]:
        kind = _KIND_OF[mt]
        mt = self.media_type(kind)
        with self.lock:
            (self.skipped if skipped else self.pushed).append(digest)
        self.store.meta.add_layer_source(lr.diff_id, digest, size, mt, self.ref.repository)
        if local:
            self.store.meta.add_layer_source(lr.diff_id, digest, size, mt, "")
        return oci.descriptor(mt, digest, size)

    def mount(self, digest: str, src_path: str) -> bool:
        q = urllib.parse.urlencode({"mount": digest, "from": src_path})
        r = self.s.request("POST", f"/v2/{self.path}/blobs/uploads/?{q}",
                           self.scopes + (f"repository:{src_path}:pull",), ok=(201, 202),
                           what=f"mount blob {digest} from {src_path}", retry=False)
        if r.status_code == 201:
            return True
        loc = r.headers.get("location")
        if loc:  # the registry opened an upload instead: cancel it
            self._cancel_upload(loc)
        return False

    def _gzip_pieces(self, lr: LayerRow, ident: str, total: int) -> Iterator[bytes]:
        """The layer gzip-compressed (:func:`pgzip.gzip_stream`), reporting input progress.

        Raises:
            InvalidArgument: the stored layer is not as long as recorded (truncated).
        """
        with self.store.blobs.open(lr.blob) as src:
            counted = compress.CountingReader(src)
            for piece in pgzip.gzip_stream(counted):
                self.report.bytes("Pushing", ident, counted.count, total)
                if lr.size and counted.count > lr.size:
                    break
                yield piece
        if lr.size and counted.count != lr.size:
            raise InvalidArgument(f"layer {lr.diff_id} in the local store is {counted.count} bytes, recorded as "
                                  f"{lr.size}: the store is damaged; nothing was pushed")

    def _file_pieces(self, blob: str, ident: str, total: int) -> Iterator[bytes]:
        with self.store.blobs.open(blob) as fh:
            done = 0
            while data := fh.read(CHUNK):
                done += len(data)
                self.report.bytes("Pushing", ident, done, total)
                yield data

    def upload(self, pieces: Pieces, ident: str, total: int, digest: str | None = None) -> tuple[str, int]:
        """Upload the blob ``pieces()`` yields: ``(digest, size)``. ``digest``, when known, is
        checked against what was sent. Restarted from a new session on a broken connection or
        5xx, at most ``max_retries`` times (``pieces`` is called again: it must give the same
        bytes)."""
        attempt = 0
        while True:
            try:
                got, size = self._upload_once(pieces, ident)
            except Unavailable:
                if attempt >= self.options.max_retries:
                    raise
                self.s._backoff(attempt, None)
                attempt += 1
                continue
            if digest is not None and got != digest:
                raise InvalidArgument(f"upload of {ident}: the blob changed while it was read "
                                      f"({got}, expected {digest})")
            return got, size

    def _upload_once(self, pieces: Pieces, ident: str) -> tuple[str, int]:
        """POST a session; then one PUT if the blob fits in ``chunk_size``, else PATCH chunks
        with ``Content-Range`` and an empty closing PUT. ``pieces`` runs ahead in a producer
        thread (so compression goes on while a chunk is on the wire)."""
        what = f"upload blob {ident}"
        r = self.s.request("POST", f"/v2/{self.path}/blobs/uploads/", self.scopes, ok=(202,), what=what,
                           retry=False)
        loc = [_location(r, what)]  # the session's current location (each PATCH answer moves it)
        try:
            return self._send(pieces, loc, what)
        except BaseException:
            self._cancel_upload(loc[0])
            raise

    def _cancel_upload(self, loc: str) -> None:
        """DELETE an unfinished upload session (best effort, as the spec asks of clients)."""
        try:
            self.s.request("DELETE", loc, self.scopes, retry=False).close()
        except Exception:  # noqa: BLE001, S110 - best effort: the registry times sessions out anyway
            pass

    def _send(self, pieces: Pieces, loc: list[str], what: str) -> tuple[str, int]:
        chunk = max(1, self.options.chunk_size)
        octet = {"Content-Type": "application/octet-stream"}
        h = hashlib.sha256()
        offset = 0
        buf = bytearray()
        with _Prefetch(pieces, self.s.check_cancel) as src:
            ended = False
            while not ended:
                while len(buf) <= chunk:
                    piece = src.next()
                    if piece is None:
                        ended = True
                        break
                    buf += piece
                if ended and offset == 0:  # monolithic: POST, then PUT with the whole blob
                    data = bytes(buf)
                    h.update(data)
                    digest = "sha256:" + h.hexdigest()
                    r = self.s.request("PUT", _with_digest(loc[0], digest), self.scopes, body=data,
                                       headers=octet | {"Content-Length": str(len(data))}, ok=(201,),
                                       what=f"{what} ({digest})", retry=False)
                    _check_stored(r, digest, what)
                    return digest, len(data)
                while len(buf) > chunk or (ended and buf):
                    data = bytes(buf[:chunk])
                    del buf[:chunk]
                    h.update(data)
                    hdrs = octet | {"Content-Range": f"{offset}-{offset + len(data) - 1}",
                                    "Content-Length": str(len(data))}
                    r = self.s.request("PATCH", loc[0], self.scopes, body=data, headers=hdrs, ok=(202,),
                                       what=what, retry=False)
                    loc[0] = _location(r, what)
                    offset += len(data)
        digest = "sha256:" + h.hexdigest()
        r = self.s.request("PUT", _with_digest(loc[0], digest), self.scopes, headers={"Content-Length": "0"},
                           ok=(201,), what=f"{what} ({digest})", retry=False)
        _check_stored(r, digest, what)
        return digest, offset


class _Prefetch:
    """Runs ``pieces()`` in a producer thread into a bounded queue; :meth:`next` gives the
    pieces in order (None at the end) and re-raises the producer's error. Leaving the
    context stops the producer (and closes its generator) without reading the rest."""

    _END = object()

    def __init__(self, pieces: Pieces, check_cancel: Callable[[], None]) -> None:
        self.pieces = pieces
        self.check_cancel = check_cancel
        self.q: queue.Queue[Any] = queue.Queue(PREFETCH_PIECES)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="push-prefetch", daemon=True)

    def _run(self) -> None:
        gen: Iterator[bytes] | None = None
        try:
            gen = self.pieces()
            for piece in gen:
                if not self._put(piece):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.error = e
        finally:
            try:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
            finally:
                self._put(self._END)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> bytes | None:
        while True:
            self.check_cancel()
            try:
                item = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return None
            return item  # type: ignore[no-any-return]

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _hash_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK):
            h.update(data)
            size += len(data)
    return "sha256:" + h.hexdigest(), size


def _check_stored(r: Any, digest: str, what: str) -> None:
    got = r.headers.get("docker-content-digest")
    if got and got != digest:
        raise InvalidArgument(f"{what}: the registry stored it as {got}, not {digest}")


def _location(r: Any, what: str) -> str:
    loc = r.headers.get("location")
    if not loc:
        raise InvalidArgument(f"{what}: the registry gave no upload location")
    return str(loc)


def _with_digest(loc: str, digest: str) -> str:
    return loc + ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})


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
    try:
        with store.blobs.lease() as lease, session_for(ref, options, creds, cancel) as s:
            layers = store.meta.image_layers(image_id)
            for lr in layers:
                lease.add(lr.blob)
            p = _Pusher(store, options, s, ref, report, oci_manifest)
            for lr in reversed(layers):
                report.status("Preparing", short(lr.diff_id))
            descs = _parallel(p, layers, cancel)
            if not p.exists(image_id):
                p.upload(lambda: iter((config,)), short(image_id), len(config), image_id)
            cfg_type = oci.OCI_CONFIG if oci_manifest else oci.DOCKER_CONFIG
            doc: dict[str, Any] = {"schemaVersion": 2,
                                   "mediaType": oci.OCI_MANIFEST if oci_manifest else oci.DOCKER_MANIFEST,
                                   "config": oci.descriptor(cfg_type, image_id, len(config)),
                                   "layers": descs}
            data = oci.dump(doc)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            tag = ref.tag or refs.DEFAULT_TAG
            r = s.request("PUT", f"/v2/{ref.path}/manifests/{tag}", p.scopes, body=data,
                          headers={"Content-Type": doc["mediaType"]}, ok=(201,),
                          what=f"push manifest {ref.name}:{tag}")
            got = r.headers.get("docker-content-digest")
            if got and got != digest:
                raise InvalidArgument(f"push {ref.name}:{tag}: the registry stored the manifest as {got}, "
                                      f"not {digest}")
            store.meta.set_repo_digest(f"{ref.repository}@{digest}", image_id)
    except BaseException:
        cancel.set()
        raise
    report.status(f"{tag}: digest: {digest} size: {len(data)}")
    report.status("", None, aux={"Tag": tag, "Digest": digest, "Size": len(data)}, progressDetail={})
    return PushResult(tag, digest, len(data), tuple(p.pushed), tuple(p.skipped))


def _parallel(p: _Pusher, layers: list[LayerRow], cancel: threading.Event) -> list[dict[str, Any]]:
    if not layers:
        return []
    errors: list[BaseException] = []
    out: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, p.options.max_concurrent_uploads),
                            thread_name_prefix="push") as pool:
        futs = [pool.submit(p.layer, lr) for lr in layers]
        for f in futs:
            try:
                out.append(f.result())
            except BaseException as e:  # noqa: BLE001 - first error wins
                cancel.set()
                errors.append(e)
    if errors:
        from engine.registry.session import Cancelled

        raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
    return out
