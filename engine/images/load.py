"""``docker load``: images from a docker-archive or an OCI image-layout archive.

Accepted input (sniffed, never guessed from a name):

* the archive plain or compressed (gzip, bzip2, xz; zstd with the ``zstandard`` package);
* Docker's ``manifest.json`` (``[{"Config", "RepoTags", "Layers"}]``) with either the old
  per-layer directories (``<id>/layer.tar``, layers possibly symlinked to each other) or the
  ``blobs/sha256`` layout of Docker 25+; ``manifest.json`` wins when both it and ``index.json``
  are present (it carries the tags);
* an OCI image layout (``oci-layout`` + ``index.json`` → manifests, or nested indexes narrowed to
  the host platform → config + layers), names from the descriptor annotations;
* layers uncompressed, gzip or zstd.

How (bounded memory, all or nothing):

1. The archive is streamed once; every member is spooled to a private directory under the state
   root (``<root>/tmp/load-*``), hashed on the way, and — when it looks like a tar — checked
   against the layer rules (:class:`~engine.images.tarscan.LayerPolicy`) in the same pass.
2. The manifests are resolved: every blob named by a descriptor must exist with the size and
   digest it claims; configs must be valid and their ``diff_ids`` must match the layers.
3. Layers are ingested under a blob-store lease: uncompressed ones are *moved* into the store
   (already hashed and checked), compressed ones are decompressed (bomb-guarded), checked and
   hashed in one pass; each must hash to its config ``diff_id``.
4. One metadata transaction records every image and tag.

Any failure raises InvalidArgument (naming the member or digest) and leaves the stores as they
were: blobs this load added are discarded, the spool directory is removed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from engine import refs
from engine.errors import InvalidArgument
from engine.images import compress, oci
from engine.images.archive import Compression
from engine.images.config import host_platform, parse_config
from engine.images.layerblob import StoredLayer
from engine.images.tarscan import CheckedStream, LayerPolicy, ScanLimits, TarError, TarReader, clean_name
from engine.images.unpack import Staged, Unpacker

if TYPE_CHECKING:
    from engine.images.store import ImageStore

Progress = Callable[[dict[str, Any]], None]
CHUNK = 1024 * 1024
_BLOB_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_PROGRESS_STEP = 512 * 1024
_STAGE_MIN = 1024 * 1024  # smaller layers: unpacking them afterwards costs next to nothing


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """Caps for one ``load`` (all configurable; the defaults suit real images).

    ``archive`` bounds the archive's members (total bytes, count, header sizes); ``layer``
    bounds each layer's tar; ``bomb`` bounds decompression of the archive and of each layer.
    """

    archive: ScanLimits = ScanLimits(max_bytes=256 * 1024**3, max_entries=200_000)
    layer: ScanLimits = ScanLimits()
    bomb: compress.BombLimits = compress.BombLimits(max_bytes=256 * 1024**3)
    max_json: int = 16 * 1024 * 1024


DEFAULT_LIMITS = LoadLimits()


@dataclass
class _Member:
    name: str
    path: str | None = None  # spool file of a regular member
    size: int = 0
    digest: str = ""
    head: bytes = b""
    link: str | None = None  # symlink/hardlink: the archive path it points at
    checked: bool = False  # the layer check ran over it
    layer_error: str | None = None
    staged: Staged | None = None  # unpacked into a staging snapshot while it streamed


@dataclass
class _Layer:
    member: _Member
    diff_id: str


@dataclass
class _Plan:
    config: bytes
    image_id: str
    layers: list[_Layer]
    tags: list[refs.Reference] = field(default_factory=list)


def _bad(msg: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image archive: {msg}")


class _Spooler:
    """Callbacks of the outer :class:`TarReader`: one spool file per regular member."""

    def __init__(self, spool: str, limits: LoadLimits, progress: Progress | None,
                 unpacker: Unpacker | None = None) -> None:
        self.spool = spool
        self.limits = limits
        self.progress = progress
        self.unpacker = unpacker
        self.members: dict[str, _Member] = {}
        self._cur: _Member | None = None
        self._fh: BinaryIO | None = None
        self._hash: Any = None
        self._check: TarReader | None = None
        self._pending = b""  # first bytes, until we know whether the member is a tar
        self._decided = False
        self._done = 0
        self._reported = 0

    def entry(self, e: Any) -> None:
        self.finish()
        try:
            name = clean_name(e.name, e.name, "member")
        except TarError as err:
            raise _bad(str(err)) from None
        if e.is_dir or not name:
            return
        m = _Member(name=name)
        if e.type in (b"1", b"2"):
            base = "" if e.type == b"1" else posixpath.dirname(name)
            target = e.linkname if e.linkname.startswith("/") or not base \
                else posixpath.join(base, e.linkname)
            try:
                m.link = clean_name(target.lstrip("/"), e.name, "link target")
            except TarError as err:
                raise _bad(str(err)) from None
            self.members[name] = m
            return
        if not e.is_file:
            raise _bad(f"member {e.name!r} is not a regular file, directory or link")
        m.path = os.path.join(self.spool, f"m{len(self.members)}")
        m.size = e.size
        self.members[name] = m
        self._cur, self._fh = m, open(m.path, "xb")
        self._hash = hashlib.sha256()
        self._check, self._pending, self._decided = None, b"", False
        self._done = self._reported = 0

    def data(self, _e: Any, chunk: bytes) -> None:
        assert self._fh is not None and self._cur is not None
        self._fh.write(chunk)
        self._hash.update(chunk)
        if not self._decided:
            self._pending += chunk
            if len(self._pending) >= 8:
                self._decide()
        elif self._check is not None:
            self._feed(chunk)
            if self._cur.staged is not None:
                self._cur.staged.write(chunk)
        self._done += len(chunk)
        if self._decided and self._is_layerish() and \
                self._done - self._reported >= _PROGRESS_STEP:
            self._report()

    def _is_layerish(self) -> bool:
        return self._cur is not None and (self._check is not None or self._cur.checked or
                                          compress.sniff(self._cur.head) is not Compression.NONE)

    def _report(self) -> None:
        if self.progress is None or self._cur is None:
            return
        self._reported = self._done
        ident = _short_id(self._cur.name)
        self.progress({"status": "Loading layer", "id": ident,
                       "progressDetail": {"current": self._done, "total": self._cur.size}})

    def _decide(self) -> None:
        assert self._cur is not None
        self._decided = True
        head = self._pending
        self._cur.head = head[:8]
        if compress.sniff(head) is Compression.NONE and head.lstrip()[:1] not in (b"{", b"["):
            self._check = TarReader(on_entry=LayerPolicy(), limits=self.limits.layer)
            self._cur.checked = True
            if self.unpacker is not None and self._cur.size >= _STAGE_MIN:
                self._cur.staged = self.unpacker.stage()
            self._feed(head)
            if self._cur.staged is not None:
                self._cur.staged.write(head)
        self._pending = b""

    def _feed(self, chunk: bytes) -> None:
        assert self._check is not None and self._cur is not None
        try:
            self._check.feed(chunk)
        except TarError as e:
            self._cur.layer_error = _describe(e)
            self._check = None
            if self._cur.staged is not None:  # refused: the load will fail anyway
                self._cur.staged.abort(self._cur.layer_error)
                self._cur.staged = None

    def finish(self) -> None:
        """Close the current member's spool file (called at the next header and at EOF)."""
        if self._fh is None or self._cur is None:
            return
        if not self._decided:
            self._decide()
        self._fh.close()
        self._fh = None
        self._cur.digest = "sha256:" + self._hash.hexdigest()
        if self._check is not None:
            try:
                self._check.close()
            except TarError as e:
                self._cur.layer_error = _describe(e)
            self._check = None
        if self._cur.staged is not None:
            if self._cur.layer_error is None:
                self._cur.staged.finish()
            else:
                self._cur.staged.abort(self._cur.layer_error)
                self._cur.staged = None
        if self._is_layerish() and self._cur.size:
            self._done = self._cur.size
            self._report()
        self._cur = None

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._cur is not None and self._cur.staged is not None:
            self._cur.staged.abort("the archive is truncated or corrupt")


def _describe(e: TarError) -> str:
    return f"{e} (entry {e.entry!r})" if e.entry and e.entry not in str(e) else str(e)


def _short_id(name: str) -> str:
    m = _BLOB_RE.match(name)
    if m:
        return m.group(1)[:12]
    return name.split("/", 1)[0][:12]


class _Archive:
    def __init__(self, members: dict[str, _Member], limits: LoadLimits) -> None:
        self.members = members
        self.limits = limits

    def get(self, name: str, what: str) -> _Member:
        """The regular member ``name`` (links followed). Raises InvalidArgument if absent."""
        seen = 0
        key = name
        try:
            key = clean_name(name, name, what)
        except TarError as e:
            raise _bad(str(e)) from None
        while True:
            m = self.members.get(key)
            if m is None:
                raise _bad(f"{what} {name!r} is missing from the archive")
            if m.link is None:
                return m
            seen += 1
            if seen > 16:
                raise _bad(f"{what} {name!r}: too many levels of links")
            key = m.link

    def read_json(self, m: _Member, what: str) -> Any:
        return oci.parse_json(self.read(m, what), what)

    def read(self, m: _Member, what: str) -> bytes:
        if m.size > self.limits.max_json:
            raise _bad(f"{what} {m.name!r} is {m.size} bytes, more than {self.limits.max_json}")
        assert m.path is not None
        with open(m.path, "rb") as fh:
            return fh.read()

    def blob(self, digest: str, size: int | None, what: str) -> _Member:
        """The blob ``digest`` of an OCI layout, verified against its digest and size."""
        m = self.get(oci.blob_path(digest), what)
        if m.digest != digest:
            raise _bad(f"{what}: blob {digest} has the wrong digest {m.digest} (corrupt)")
        if size is not None and m.size != size:
            raise _bad(f"{what}: blob {digest} is {m.size} bytes, its descriptor says {size}")
        return m

    def verify_named(self, m: _Member, what: str) -> None:
        """A ``blobs/sha256/<hex>`` member must hash to its name."""
        match = _BLOB_RE.match(m.name)
        if match and m.digest != "sha256:" + match.group(1):
            raise _bad(f"{what} {m.name!r} has the wrong digest {m.digest} (corrupt)")


def _config_of(arc: _Archive, m: _Member, what: str) -> tuple[bytes, list[str]]:
    data = arc.read(m, what)
    try:
        doc = parse_config(data)
    except InvalidArgument as e:
        raise _bad(f"{what} {m.name!r}: {e}") from None
    return data, list(doc["rootfs"]["diff_ids"])


def _parse_tags(values: Any, what: str) -> list[refs.Reference]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _bad(f"{what}: RepoTags must be a list of strings")
    out = []
    for v in values:
        try:
            r = refs.parse(v)
        except InvalidArgument as e:
            raise _bad(f"{what}: bad tag {v!r}: {e}") from None
        if r.digest is not None:
            raise _bad(f"{what}: tag {v!r} contains a digest")
        out.append(r)
    return out


def _plan_docker(arc: _Archive, doc: Any) -> list[_Plan]:
    if not isinstance(doc, list):
        raise _bad("manifest.json is not a list")
    plans: list[_Plan] = []
    for i, item in enumerate(doc):
        what = f"manifest.json entry {i}"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list) \
                or not all(isinstance(x, str) for x in item["Layers"]):
            raise _bad(f"{what}: want an object with Config and Layers")
        if item.get("LayerSources"):
            raise _bad(f"{what}: foreign (non-distributable) layers are not supported")
        cfg_member = arc.get(item["Config"], f"{what}: config")
        arc.verify_named(cfg_member, "config")
        config, diff_ids = _config_of(arc, cfg_member, "config")
        if len(item["Layers"]) != len(diff_ids):
            raise _bad(f"{what} names {len(item['Layers'])} layers but its config has "
                       f"{len(diff_ids)} diff_ids")
        layers = []
        for path, diff_id in zip(item["Layers"], diff_ids):
            m = arc.get(path, f"{what}: layer")
            arc.verify_named(m, "layer")
            layers.append(_Layer(m, diff_id))
        plans.append(_Plan(config, "sha256:" + hashlib.sha256(config).hexdigest(), layers,
                           _parse_tags(item.get("RepoTags"), what)))
    return plans


def _plan_oci(arc: _Archive, doc: Any) -> list[_Plan]:
    plans: dict[str, _Plan] = {}
    _walk_index(arc, doc, "index.json", plans, None, 0)
    return list(plans.values())


def _walk_index(arc: _Archive, doc: Any, what: str, plans: dict[str, _Plan], name: str | None,
                depth: int) -> None:
    if depth > 4:
        raise _bad(f"{what}: indexes nested too deeply")
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise _bad(f"{what}: not an image index (no manifests list)")
    descs = doc["manifests"]
    if depth:  # a multi-platform index: keep the host's platform
        host_os, host_arch = host_platform()
        matching = [d for d in descs if isinstance(d, dict) and isinstance(d.get("platform"), dict)
                    and d["platform"].get("os") == host_os
                    and d["platform"].get("architecture") == host_arch]
        if matching:
            descs = matching[:1]
        elif len(descs) > 1:
            raise _bad(f"{what}: no manifest for platform {host_os}/{host_arch}")
    for i, d in enumerate(descs):
        dwhat = f"{what} manifest {i}"
        mt, digest, size = oci.check_descriptor(d, dwhat)
        dname = oci.ref_names(d.get("annotations")) or name
        m = arc.blob(digest, size, dwhat)
        child = arc.read_json(m, f"{dwhat} ({digest})")
        if mt in oci.INDEX_TYPES or (not mt and isinstance(child, dict) and "manifests" in child):
            _walk_index(arc, child, f"index {digest}", plans, dname, depth + 1)
            continue
        if mt and mt not in oci.MANIFEST_TYPES:
            continue  # attestations and other artifacts: not images
        plan = plans.get(digest)
        if plan is None:
            plan = plans[digest] = _plan_manifest(arc, child, f"manifest {digest}")
        if dname:
            try:
                r = refs.parse(dname)
            except InvalidArgument as e:
                raise _bad(f"{dwhat}: bad image name {dname!r}: {e}") from None
            if r.digest is None and r not in plan.tags:
                plan.tags.append(r)


def _plan_manifest(arc: _Archive, doc: Any, what: str) -> _Plan:
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise _bad(f"{what}: not an image manifest (no layers list)")
    _mt, cdigest, csize = oci.check_descriptor(doc.get("config"), f"{what} config")
    cm = arc.blob(cdigest, csize, f"{what} config")
    config, diff_ids = _config_of(arc, cm, "config")
    if len(doc["layers"]) != len(diff_ids):
        raise _bad(f"{what} names {len(doc['layers'])} layers but its config has "
                   f"{len(diff_ids)} diff_ids")
    layers = []
    for i, (d, diff_id) in enumerate(zip(doc["layers"], diff_ids)):
        lmt, ldigest, lsize = oci.check_descriptor(d, f"{what} layer {i}")
        if lmt in oci.FOREIGN_TYPES:
            raise _bad(f"{what} layer {ldigest}: non-distributable layers are not supported")
        layers.append(_Layer(arc.blob(ldigest, lsize, f"{what} layer {i}"), diff_id))
    return _Plan(config, cdigest, layers)


def load(store: ImageStore, stream: BinaryIO | IO[bytes], progress: Progress | None = None,
         limits: LoadLimits | None = None, unpacker: Unpacker | None = None,
         ) -> list[tuple[str, list[str], list[tuple[str, str | None]]]]:
    """Load every image of the archive ``stream``.

    With an ``unpacker`` the layers are also unpacked into their snapshots (chain ids), as
    dockerd's load does: large uncompressed layers while they stream (staged, bound once the
    manifest says what they are), the others from the store afterwards; the snapshots are made
    before the images are recorded, and removed again if anything fails.

    Returns:
        Per image ``(image_id, [familiar tags], [(full tag, image it was moved from or None)])``.

    Raises:
        InvalidArgument: malformed, truncated, corrupt or hostile input (the message names the
            member or digest). NotImplemented_: zstd without the ``zstandard`` package.
    """
    lim = limits or DEFAULT_LIMITS
    base = os.path.join(store.blobs.root, "tmp")
    os.makedirs(base, exist_ok=True)
    spool = tempfile.mkdtemp(prefix="load-", dir=base)
    new_blobs: set[str] = set()
    try:
        with store.blobs.lease() as lease:
            arc = _Archive(_read(stream, spool, lim, progress, unpacker), lim)
            plans = _plan(arc)
            done: dict[str, StoredLayer] = {}
            for plan in plans:
                for layer in plan.layers:
                    if layer.diff_id not in done:
                        done[layer.diff_id] = _ingest(store, layer, lim, lease, new_blobs)

            def record() -> list[tuple[str, list[tuple[str, str | None]]]]:
                return store.record_loaded(
                    [(p.config, [(lr.diff_id, done[lr.diff_id].blob, done[lr.diff_id].size,
                                  done[lr.diff_id].media_type) for lr in p.layers],
                      p.tags) for p in plans])

            if unpacker is None:
                recorded = record()
            else:
                recorded = unpacker.commit(
                    [[(lr.diff_id, lr.member.staged if lr.member.digest == lr.diff_id else None)
                      for lr in p.layers] for p in plans], record)
        new_blobs.clear()  # recorded: they belong to the store now
        return [(image_id, [str(t) for t in plan.tags], moved)
                for plan, (image_id, moved) in zip(plans, recorded)]
    finally:
        if unpacker is not None:
            unpacker.close()
        for digest in sorted(new_blobs):
            with store.lock:
                if not store.meta.blob_referenced(digest):
                    store.blobs.discard(digest)
        shutil.rmtree(spool, ignore_errors=True)


def _read(stream: BinaryIO | IO[bytes], spool: str, lim: LoadLimits,
          progress: Progress | None, unpacker: Unpacker | None = None) -> dict[str, _Member]:
    spooler = _Spooler(spool, lim, progress, unpacker)
    reader = TarReader(on_entry=spooler.entry, on_data=spooler.data, limits=lim.archive)
    src = compress.open_sniffed(stream, "image archive", lim.bomb)  # type: ignore[arg-type]
    try:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            reader.feed(chunk)
            if reader.ended:
                break
        reader.close()
        spooler.finish()
    except TarError as e:
        raise _bad(_describe(e)) from None
    finally:
        spooler.abort()
        src.close()
    if not spooler.members:
        raise _bad("the archive holds no files")
    return spooler.members


def _plan(arc: _Archive) -> list[_Plan]:
    names = arc.members
    if "manifest.json" in names:
        plans = _plan_docker(arc, arc.read_json(arc.get("manifest.json", "manifest"),
                                                "manifest.json"))
    elif "index.json" in names:
        if oci.OCI_LAYOUT in names:
            layout = arc.read_json(arc.get(oci.OCI_LAYOUT, "layout"), oci.OCI_LAYOUT)
            if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != \
                    oci.OCI_LAYOUT_VERSION:
                raise _bad(f"unsupported OCI layout version in {oci.OCI_LAYOUT}")
        plans = _plan_oci(arc, arc.read_json(arc.get("index.json", "index"), "index.json"))
    elif "repositories" in names:
        raise _bad("legacy (pre Docker 1.10) archives without manifest.json are not supported")
    else:
        raise _bad("neither manifest.json nor index.json found: not a docker or OCI archive")
    if not plans:
        raise _bad("the archive holds no image")
    return plans


def _ingest(store: ImageStore, layer: _Layer, lim: LoadLimits, lease: Any,
            new_blobs: set[str]) -> StoredLayer:
    """Store one layer (uncompressed, as ``diff_id``) unless the store has it in either form
    (engine.images.layerblob); returns where it is stored."""
    m, diff_id = layer.member, layer.diff_id
    what = f"layer {m.name!r}"
    found = store.stored_layer(diff_id, lease)
    if found is not None:
        return found
    kind = compress.sniff(m.head)
    if kind is Compression.NONE:
        if m.digest != diff_id:
            raise _bad(f"{what}: content digest {m.digest} does not match diff_id {diff_id} "
                       "of the image config")
        if m.layer_error is not None:
            raise _bad(f"{what} ({diff_id}) refused: {m.layer_error}")
        if not m.checked:
            raise _bad(f"{what} ({diff_id}) is not a tar archive")
        assert m.path is not None
        if store.blobs.adopt(m.path, diff_id, m.size, lease=lease):
            new_blobs.add(diff_id)
        m.path = None
        return StoredLayer(diff_id, diff_id, m.size)
    assert m.path is not None
    with open(m.path, "rb") as raw:
        dec = compress.Decompressed(raw, kind, f"{what} ({m.digest})", lim.bomb)
        reader = CheckedStream(dec, TarReader(on_entry=LayerPolicy(), limits=lim.layer),
                               lambda e: _bad(f"{what} ({m.digest}): {_describe(e)}"))
        try:
            _got, size = store.blobs.ingest(reader, expected_digest=diff_id,  # type: ignore[arg-type]
                                            lease=lease)
        except InvalidArgument as e:
            if "digest mismatch" in str(e):
                raise _bad(f"{what}: uncompressed content does not match diff_id {diff_id} of "
                           f"the image config ({e})") from None
            raise
        finally:
            dec.close()
    new_blobs.add(diff_id)
    return StoredLayer(diff_id, diff_id, size)
