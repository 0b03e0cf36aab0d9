"""``docker pull``: manifest → platform → config → layers (in parallel, resumable) → image.

Per layer (:mod:`engine.registry.pull_layer`): the compressed blob is downloaded into a partial
file ``<root>/tmp/pull/<hex>`` (``max_concurrent_downloads`` at once, 3 by default; resumed
with ``Range: bytes=<reached>-`` after an interruption, a previous pull's too — Docker starts
over, moby#48539) while, on another thread, the file is read as it grows: decompressed (gzip,
zstd or none, sniffed), checked against the layer rules (``LayerPolicy``), hashed (the config's
``diff_id``) and — with an unpacker — unpacked into a staged snapshot. A slow unpack never
holds up a download. Once the digest and the diff_id match, the partial file itself is renamed
into the blob store as the layer's blob (compressed, as downloaded: no uncompressed copy is
written; see :mod:`engine.images.layerblob`). A layer the store has in either form is not
downloaded.

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from engine import refs
from engine.errors import EngineError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from engine.images.config import parse_config
from engine.images.layerblob import StoredLayer
from engine.images.unpack import Staged, Unpacker
from engine.registry import credentials as _creds
from engine.registry import endpoints, manifests
from engine.registry.options import RegistryOptions
from engine.registry.progress import Progress, Reporter, short
from engine.registry.pull_layer import LayerJob
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
            stored = _layers(p, list(zip(man.layers, diff_ids)), cancel)
            tags = [ref] if ref.digest is None else []

            def record() -> tuple[str, list[tuple[str, str | None]]]:
                layers = [(d, stored[d].blob, stored[d].size, stored[d].media_type) for d in diff_ids]
                recorded = store.record_loaded([(config, layers, tags)])
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
            with p.new_lock:
                lease.digests.difference_update(p.new_blobs)  # our own lease must not keep them
            for digest in sorted(p.new_blobs):  # (another pull's lease keeps a blob it shares)
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
            cancel: threading.Event) -> dict[str, StoredLayer]:
    """Every layer stored (leased): ``{diff_id: where}``; those stored before are reused."""
    sizes: dict[str, StoredLayer] = {}
    jobs: dict[str, LayerJob] = {}
    # downloads: max_concurrent_downloads at once; decodes (decompress, check, unpack) of the
    # layers in flight each on its own thread, reading the download as it grows, so a slow
    # unpack never holds a download slot (engine.registry.pull_layer)
    downloads = ThreadPoolExecutor(max_workers=max(1, p.options.max_concurrent_downloads),
                                   thread_name_prefix="pull-dl")
    try:
        return _run_jobs(p, layers, cancel, sizes, jobs, downloads)
    finally:
        downloads.shutdown(wait=True)


def _run_jobs(p: _Puller, layers: list[tuple[manifests.Descriptor, str]], cancel: threading.Event,
              sizes: dict[str, StoredLayer], jobs: dict[str, LayerJob],
              downloads: ThreadPoolExecutor) -> dict[str, StoredLayer]:
    for desc, diff_id in layers:
        if diff_id in sizes or diff_id in jobs:
            continue
        found = p.store.stored_layer(diff_id, p.lease)
        if found is not None:
            sizes[diff_id] = found
            p.report.status("Already exists", short(desc.digest))
            continue
        jobs[diff_id] = LayerJob(p, desc, diff_id, downloads)
        p.report.status("Pulling fs layer", short(desc.digest))
    for i, job in enumerate(jobs.values()):
        if i >= p.options.max_concurrent_downloads:
            p.report.status("Waiting", job.ident)
    if not jobs:
        return sizes
    errors: list[BaseException] = []
    unpacks = max(1, min(len(jobs), p.options.max_concurrent_downloads + 2))
    with ThreadPoolExecutor(max_workers=unpacks, thread_name_prefix="pull") as pool:
        futures: list[tuple[str, Future[StoredLayer]]] = [(d, pool.submit(job.run)) for d, job in jobs.items()]
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
