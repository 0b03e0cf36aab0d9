"""``docker pull``: manifest → platform → config → layers (in parallel, resumable) → image.

Per layer, the compressed blob is streamed into a partial file
``<root>/blobs/../tmp/pull/<hex>`` while it is hashed; an interrupted stream is resumed with
``Range: bytes=<reached>-`` (a previous pull's partial file too — Docker starts over,
moby#48539). Once the size and digest match the manifest's descriptor, the blob is decompressed
(gzip, zstd or none, sniffed), checked against the layer rules (``LayerPolicy``: no escaping
paths, no devices…) and ingested as its uncompressed tar, which must hash to the config's
``diff_id`` — so the store holds layers exactly as ``load`` and ``import`` leave them, and the
kernel unpacks them the same way.

All or nothing: the image and its tag are recorded in one metadata transaction at the end; on
any error the layer blobs this pull added are discarded (partial downloads of intact prefixes are
kept for a later resume; corrupt ones are deleted).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

from engine import refs
from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from engine.images import compress
from engine.images.config import parse_config
from engine.images.tarscan import LayerPolicy, ScanLimits, TarError, TarReader
from engine.images.unpack import Staged, Unpacker
from engine.registry import credentials as _creds
from engine.registry import endpoints, manifests
from engine.registry.options import RegistryOptions
from engine.registry.progress import Progress, Reporter, short
from engine.registry.session import Session

if TYPE_CHECKING:
    from engine.images.store import ImageStore

CHUNK = 256 * 1024
MAX_CONFIG = 8 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True, slots=True)
class PullResult:
    image_id: str
    reference: str  # what the user asked for, familiar ("busybox:latest", "x@sha256:…")
    digest: str  # the manifest (or index) digest: RepoDigests
    updated: bool  # the tag moved (or the image is new)


class Transfers:
    """Per-engine transfer state: the partial-download directory and one lock per digest, so
    two pulls of the same layer share the work instead of racing on one partial file."""

    def __init__(self, blobs_root: str) -> None:
        self.partial_dir = os.path.join(blobs_root, "tmp", "pull")
        os.makedirs(self.partial_dir, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def partial(self, digest: str) -> str:
        return os.path.join(self.partial_dir, digest.split(":", 1)[1])


def session_for(ref: refs.Reference, options: RegistryOptions, creds: _creds.Credentials | None,
                cancel: threading.Event | None) -> Session:
    ep = endpoints.endpoint(ref.domain, options)
    if creds is None:
        creds = _creds.lookup(options.credentials_path(), ep.auth_key)
    return Session(ep, options, creds, cancel)


def fetch_manifest(s: Session, path: str, ref_or_digest: str, scopes: tuple[str, ...],
                   options: RegistryOptions, what: str) -> tuple[bytes, str, str]:
    """GET a manifest: ``(bytes, content type, digest)``; the digest is verified when
    ``ref_or_digest`` is one, and against ``Docker-Content-Digest`` when the registry sends it.

    Raises:
        InvalidArgument: over the size cap, or a digest mismatch. NotFound / PermissionDenied…
    """
    cap = options.max_manifest_size
    resp = s.request("GET", f"/v2/{path}/manifests/{ref_or_digest}", scopes,
                     headers={"Accept": manifests.ACCEPT}, stream=True, ok=(200,), what=what)
    with contextlib.closing(resp):
        length = resp.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise InvalidArgument(f"{what}: manifest is {length} bytes, over the {cap}-byte limit")
        buf = bytearray()
        try:
            for chunk in resp.iter_raw(CHUNK):
                buf += chunk
                if len(buf) > cap:
                    raise InvalidArgument(f"{what}: manifest is over the {cap}-byte limit")
        except httpx.HTTPError as e:
            raise Unavailable(f"{what}: reading the manifest: {e}") from None
        ctype = resp.headers.get("content-type", "")
        header_digest = resp.headers.get("docker-content-digest", "")
    data = bytes(buf)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if ref_or_digest.startswith("sha256:") and digest != ref_or_digest:
        raise InvalidArgument(f"{what}: manifest verification failed: expected digest {ref_or_digest}, "
                              f"got {digest}")
    if header_digest.startswith("sha256:") and header_digest != digest:
        raise InvalidArgument(f"{what}: manifest verification failed: the registry says "
                              f"{header_digest}, the content hashes to {digest}")
    return data, ctype, digest


def fetch_small_blob(s: Session, path: str, digest: str, size: int, scopes: tuple[str, ...],
                     what: str, cap: int = MAX_CONFIG) -> bytes:
    if size > cap:
        raise InvalidArgument(f"{what}: {digest} is {size} bytes, over the {cap}-byte limit")
    resp = s.request("GET", f"/v2/{path}/blobs/{digest}", scopes, headers={"Accept-Encoding": "identity"},
                     stream=True, ok=(200,), what=what)
    buf = bytearray()
    with contextlib.closing(resp):
        try:
            for chunk in resp.iter_raw(CHUNK):
                buf += chunk
                if len(buf) > size:
                    break
        except httpx.HTTPError as e:
            raise Unavailable(f"{what}: {e}") from None
    data = bytes(buf)
    if len(data) != size:
        raise InvalidArgument(f"{what}: {digest}: size mismatch: expected {size} bytes, got "
                              f"{len(data)}{' or more' if len(data) > size else ''}")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise InvalidArgument(f"{what}: digest mismatch: expected {digest}, got {got}")
    return data


class _Counting:
    """Counts compressed bytes consumed (for "Extracting" progress)."""

    def __init__(self, raw: BinaryIO, report: Callable[[int], None]) -> None:
        self.raw, self.report, self.n = raw, report, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.n += len(data)
        self.report(self.n)
        return data

    def readable(self) -> bool:
        return True


class _Checked:
    """Feeds the decompressed tar to the layer checker as ``ingest`` reads it."""

    def __init__(self, inner: Any, what: str) -> None:
        self.inner, self.what = inner, what
        self.checker = TarReader(on_entry=LayerPolicy(), limits=ScanLimits())

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        try:
            if data:
                self.checker.feed(data)
            else:
                self.checker.close()
        except TarError as e:
            raise InvalidArgument(f"{self.what} refused: {e}") from None
        return data


class _Tee:
    """Passes reads through and writes them to a staged unpack as well."""

    def __init__(self, inner: Any, staged: Staged) -> None:
        self.inner, self.staged = inner, staged

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        if data:
            self.staged.write(data)
        return data


class _LayerJob:
    def __init__(self, puller: _Puller, desc: manifests.Descriptor, diff_id: str) -> None:
        self.p, self.desc, self.diff_id = puller, desc, diff_id
        self.ident = short(desc.digest)
        self.what = f"layer {desc.digest}"

    def run(self) -> int:
        p = self.p
        with p.transfers.lock(self.desc.digest):
            p.session.check_cancel()
            if p.store.blobs.exists(self.diff_id):  # another pull finished it meanwhile
                p.lease.add(self.diff_id)
                if p.store.blobs.exists(self.diff_id):
                    p.report.status("Already exists", self.ident)
                    return p.store.blobs.size(self.diff_id)
            partial = p.transfers.partial(self.desc.digest)
            self.download(partial)
            p.report.status("Verifying Checksum", self.ident)
            p.report.status("Download complete", self.ident)
            size = self.extract(partial)
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
        p.report.status("Pull complete", self.ident)
        return size

    def download(self, partial: str) -> None:
        p, d = self.p, self.desc
        h = hashlib.sha256()
        offset = 0
        if os.path.exists(partial):
            if os.path.getsize(partial) > d.size:
                os.unlink(partial)
            else:
                with open(partial, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                        offset += len(chunk)
        failures = 0
        url = f"/v2/{p.path}/blobs/{d.digest}"
        with open(partial, "ab") as out:
            while offset < d.size:
                p.session.check_cancel()
                headers = {"Accept-Encoding": "identity"}
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                resp = p.session.request("GET", url, p.scopes, headers=headers, stream=True, ok=(200, 206, 416),
                                         what=f"download {self.what}")
                reached = offset
                with contextlib.closing(resp):
                    if resp.status_code == 416:
                        resp.read()
                        out.close()
                        os.unlink(partial)
                        raise InvalidArgument(f"download {self.what}: truncated: the registry has no bytes "
                                              f"past {offset}, the manifest says {d.size}")
                    if resp.status_code == 206:
                        m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                        start = int(m.group(1)) if m else -1
                        if start != offset:
                            start = -1
                    else:
                        start = 0 if not offset else -1
                    if start < 0:  # no usable range support: start over
                        out.seek(0)
                        out.truncate(0)
                        h, offset = hashlib.sha256(), 0
                        if resp.status_code == 206:
                            continue
                    try:
                        # no chunk_size: httpx would hold back a partial chunk, and those bytes
                        # would be lost to the resume if the connection broke
                        for chunk in resp.iter_raw():
                            if offset + len(chunk) > d.size:
                                out.close()
                                os.unlink(partial)
                                raise InvalidArgument(f"download {self.what}: size mismatch: more than the "
                                                      f"{d.size} bytes the manifest says")
                            out.write(chunk)
                            h.update(chunk)
                            offset += len(chunk)
                            p.report.bytes("Downloading", self.ident, offset, d.size)
                            p.session.check_cancel()
                    except httpx.HTTPError as e:
                        out.flush()
                        failures = 1 if offset > reached else failures + 1
                        if failures > p.options.max_retries:
                            raise Unavailable(f"download {self.what}: {e} (at byte {offset} of "
                                              f"{d.size}; a new pull resumes from there)") from None
                        p.session._backoff(failures, None)
                        continue
                if offset < d.size:
                    out.flush()
                    failures = 1 if offset > reached else failures + 1
                    if failures > p.options.max_retries:
                        raise InvalidArgument(f"download {self.what}: truncated: got {offset} of {d.size} "
                                              "bytes")
            # no fsync: the partial file only serves a resume, and a resumed download is hashed
            # from its first byte again (a torn partial fails the digest check and starts over)
            out.flush()
        got = "sha256:" + h.hexdigest()
        if got != d.digest:
            os.unlink(partial)
            raise InvalidArgument(f"download {self.what}: digest mismatch: expected {d.digest}, got {got}")
        p.report.bytes("Downloading", self.ident, offset, d.size, force=True)

    def extract(self, partial: str) -> int:
        p = self.p
        existed = p.store.blobs.exists(self.diff_id)
        staged = None
        with open(partial, "rb") as raw:
            counted = _Counting(raw, lambda n: p.report.bytes("Extracting", self.ident, n, self.desc.size))
            dec = compress.open_sniffed(counted, self.what)  # type: ignore[arg-type]
            try:
                reader: Any = _Checked(dec, self.what)
                if p.unpacker is not None:  # unpack while decompressing, hashing and storing
                    staged = p.unpacker.stage()
                    reader = _Tee(reader, staged)
                try:
                    _d, size = p.store.blobs.ingest(reader, expected_digest=self.diff_id,  # type: ignore[arg-type]
                                                    lease=p.lease)
                except InvalidArgument as e:
                    if "digest mismatch" in str(e):
                        os.unlink(partial)
                        raise InvalidArgument(f"{self.what}: uncompressed content does not match diff_id "
                                              f"{self.diff_id} of the image config") from None
                    raise
            except BaseException as e:
                if staged is not None:
                    staged.abort(str(e) or type(e).__name__)
                raise
            finally:
                dec.close()
        if staged is not None:
            staged.finish()
            with p.new_lock:
                p.staged[self.diff_id] = staged
        p.report.bytes("Extracting", self.ident, self.desc.size, self.desc.size, force=True)
        if not existed:
            with p.new_lock:
                p.new_blobs.add(self.diff_id)
        return size


class _Puller:
    def __init__(self, store: ImageStore, transfers: Transfers, options: RegistryOptions,
                 session: Session, path: str, report: Reporter, lease: Any,
                 unpacker: Unpacker | None = None) -> None:
        self.store, self.transfers, self.options = store, transfers, options
        self.session, self.path, self.report, self.lease = session, path, report, lease
        self.unpacker = unpacker
        self.scopes = (f"repository:{path}:pull",)
        self.new_blobs: set[str] = set()
        self.staged: dict[str, Staged] = {}  # diff_id → layer unpacked while it was stored
        self.new_lock = threading.Lock()


def pull(store: ImageStore, transfers: Transfers, options: RegistryOptions, reference: str,
         platform: str | None = None, creds: _creds.Credentials | None = None,
         progress: Progress | None = None, cancel: threading.Event | None = None,
         unpacker: Unpacker | None = None) -> PullResult:
    """Pull ``reference`` (``name[:tag]`` or ``name@sha256:…``) into ``store``.

    With an ``unpacker`` the layers are unpacked into their snapshots too, as dockerd's pull
    does: each one while it is decompressed, hashed and stored (staged, bound to its chain id
    once every layer is verified), before the image is recorded.

    Args:
        platform: ``os/arch[/variant]`` to pick from an index (default the host's); for a
            single-platform image it must match when given.
        creds: credentials (default: those ``config.json`` holds for the registry).
        progress: gets Docker's progress messages (on worker threads).
        cancel: set it to abort (the API client went away).

    Returns:
        The :class:`PullResult`.

    Raises:
        InvalidArgument: bad reference or platform; bad content from the registry (wrong digest
            or size, truncated blob, oversized manifest, media-type confusion, hostile layer).
        NotFound: no such repository, tag or platform. PermissionDenied: 401/403.
        Unavailable: unreachable registry, 429/5xx after retries, cancelled.
    """
    ref = endpoints.parse_reference(reference)
    plat = manifests.parse_platform_arg(platform)
    report = Reporter(progress)
    cancel = cancel or threading.Event()
    if ref.domain == refs.DEFAULT_DOMAIN and options.mirrors:
        for ep in endpoints.mirror_endpoints(options):
            attempt = threading.Event()  # a failed mirror must not cancel the next try
            try:
                with Session(ep, options, None, attempt, parent_cancel=cancel) as s:
                    return _pull_with(store, transfers, options, s, ref, plat, platform, report, attempt,
                                      unpacker)
            except (Unavailable, NotFound, PermissionDenied):
                if cancel.is_set():
                    raise
                continue  # next mirror, then the hub itself (as dockerd)
    with session_for(ref, options, creds, cancel) as s:
        return _pull_with(store, transfers, options, s, ref, plat, platform, report, cancel, unpacker)


def _pull_with(store: ImageStore, transfers: Transfers, options: RegistryOptions, s: Session,
               ref: refs.Reference, plat: tuple[str, str, str | None], platform: str | None,
               report: Reporter, cancel: threading.Event, unpacker: Unpacker | None = None) -> PullResult:
    wanted = ref.digest or ref.tag or refs.DEFAULT_TAG
    shown = str(ref)
    what = f"pull {shown}"
    with store.blobs.lease() as lease:
        p = _Puller(store, transfers, options, s, ref.path, report, lease, unpacker)
        try:
            data, ctype, top_digest = fetch_manifest(s, ref.path, wanted, p.scopes, options, what)
            # after the manifest, as dockerd: a missing or forbidden image fails before any output
            report.status(f"Pulling from {ref.name if ref.domain == refs.DEFAULT_DOMAIN else ref.path}", wanted)
            man = manifests.parse(data, ctype, what)
            if man.is_index:
                chosen = manifests.select(man, plat, what)
                data, ctype, _d = fetch_manifest(s, ref.path, chosen.digest, p.scopes, options, what)
                man = manifests.parse(data, ctype, f"{what} ({chosen.digest})")
                if man.is_index:
                    raise InvalidArgument(f"{what}: nested index {chosen.digest} is not supported")
            assert man.config is not None
            config = fetch_small_blob(s, ref.path, man.config.digest, man.config.size, p.scopes,
                                      f"{what}: config")
            try:
                doc = parse_config(config)
            except InvalidArgument as e:
                raise InvalidArgument(f"{what}: config {man.config.digest}: {e}") from None
            if platform and not man.media_type.endswith("index.v1+json") and (
                    doc.get("os") != plat[0] or doc.get("architecture") != plat[1]):
                raise NotFound(f"{what}: image is for {doc.get('os')}/{doc.get('architecture')}, "
                               f"not the requested platform {platform}")
            diff_ids = list(doc["rootfs"]["diff_ids"])
            if len(diff_ids) != len(man.layers):
                raise InvalidArgument(f"{what}: the manifest has {len(man.layers)} layers but the config "
                                      f"has {len(diff_ids)} diff_ids")
            sizes = _layers(p, list(zip(man.layers, diff_ids)), cancel)
            tags = [ref] if ref.digest is None else []

            def record() -> tuple[str, list[tuple[str, str | None]]]:
                recorded = store.record_loaded([(config, [(d, d, sizes[d]) for d in diff_ids], tags)])
                store.meta.set_repo_digest(f"{ref.repository}@{top_digest}", recorded[0][0])
                for desc, diff_id in zip(man.layers, diff_ids):
                    store.meta.add_layer_source(diff_id, desc.digest, desc.size, desc.media_type,
                                                ref.repository)
                return recorded[0]

            if unpacker is None:
                image_id, moved = record()
            else:
                image_id, moved = unpacker.commit([[(d, p.staged.get(d)) for d in diff_ids]], record)
        except BaseException:
            cancel.set()
            for digest in sorted(p.new_blobs):
                with store.lock:
                    if not store.meta.blob_referenced(digest):
                        store.blobs.discard(digest)
            raise
        finally:
            if unpacker is not None:
                unpacker.close()
    updated = not moved or moved[0][1] != image_id
    report.status(f"Digest: {top_digest}")
    report.status(f"Status: {'Downloaded newer image' if updated else 'Image is up to date'} for {shown}")
    return PullResult(image_id, shown, top_digest, updated)


def _layers(p: _Puller, layers: list[tuple[manifests.Descriptor, str]],
            cancel: threading.Event) -> dict[str, int]:
    sizes: dict[str, int] = {}
    jobs: dict[str, _LayerJob] = {}
    for desc, diff_id in layers:
        if diff_id in sizes or diff_id in jobs:
            continue
        if p.store.blobs.exists(diff_id):
            p.lease.add(diff_id)
            if p.store.blobs.exists(diff_id):
                sizes[diff_id] = p.store.blobs.size(diff_id)
                p.report.status("Already exists", short(desc.digest))
                continue
        jobs[diff_id] = _LayerJob(p, desc, diff_id)
        p.report.status("Pulling fs layer", short(desc.digest))
    for i, job in enumerate(jobs.values()):
        if i >= p.options.max_concurrent_downloads:
            p.report.status("Waiting", job.ident)
    if not jobs:
        return sizes
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, p.options.max_concurrent_downloads),
                            thread_name_prefix="pull") as pool:
        futures: list[tuple[str, Future[int]]] = [(d, pool.submit(job.run)) for d, job in jobs.items()]
        for diff_id, fut in futures:
            try:
                sizes[diff_id] = fut.result()
            except BaseException as e:  # noqa: BLE001 - the first error wins; the rest stop
                cancel.set()
                errors.append(e)
    if errors:
        first = next((e for e in errors if not _is_cancel(e)), errors[0])
        raise first
    return sizes


def _is_cancel(e: BaseException) -> bool:
    from engine.registry.session import Cancelled

    return isinstance(e, Cancelled)


__all__ = ["EngineError", "PullResult", "Transfers", "pull"]
