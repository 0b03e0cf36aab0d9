"""``load``, step 1: the archive streamed once, every member spooled, every layer checked and
staged on the way (see :mod:`engine.images.load` for the whole).

Each regular member of the archive goes to its own spool file, hashed as it is written. A member
that looks like a layer is handled in the same pass:

* an **uncompressed** tar is checked against the layer rules (:class:`LayerPolicy`) and, when
  an unpacker is given and the member is large enough, unpacked into a staging snapshot, all on
  the archive's thread;
* a **gzip or zstd** one (as ``docker save`` of pulled images and OCI archives hold) is decoded
  while it spools by a thread of its own (:class:`Decoding`): decompressed (bomb-guarded),
  checked, hashed (its would-be ``diff_id``) and staged likewise. The archive's thread only
  hands it the compressed bytes, so reading the archive and decoding a layer overlap.

Nothing here decides what a member is for: a failed check is remembered on the member
(``layer_error`` / the decoding's ``error``) and only fails the load if a manifest names that
member as a layer.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.errors import InvalidArgument
from engine.images import compress
from engine.images.archive import Compression
from engine.images.pipe import Pipe
from engine.images.tarscan import CheckedStream, LayerPolicy, ScanLimits, TarError, TarReader, clean_name
from engine.images.unpack import Staged, Unpacker

Progress = Any  # Callable[[dict[str, Any]], None]
CHUNK = 1024 * 1024
BLOB_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_PROGRESS_STEP = 512 * 1024
DECODED = (Compression.GZIP, Compression.ZSTD)  # layer compressions decoded while they spool
MAX_DECODES = 3  # decodes at once (each holds up to ~32 MB in its pipes): a 4th waits for the 1st


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


def bad(msg: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image archive: {msg}")


def describe(e: TarError) -> str:
    return f"{e} (entry {e.entry!r})" if e.entry and e.entry not in str(e) else str(e)


class _Refused(Exception):
    """The decoded layer broke a layer rule (the message names the entry)."""


class Decoding:
    """A compressed layer member decoded on a thread of its own while the archive spools it.

    The archive's thread :meth:`write`\\ s the compressed bytes and :meth:`close`\\ s at the
    member's end; :meth:`result` waits for the decode. Errors never escape the thread: a refused
    layer, corrupt or truncated data or a bomb ends up in :attr:`error` (InvalidArgument) and the
    staged snapshot, if any, is aborted. :meth:`abort` stops it early (the archive is bad).
    """

    def __init__(self, kind: Compression, what: str, limits: LoadLimits, staged: Staged | None) -> None:
        self.what = what
        self.staged = staged
        self.diff_id = ""  # sha256 of the decompressed tar, once decoded without error
        self.size = 0  # its size
        self.error: BaseException | None = None
        self._pipe = Pipe()
        self._thread = threading.Thread(target=self._run, args=(kind, limits), name="load-decode",
                                        daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        self._pipe.write(data)

    def close(self) -> None:
        """All compressed bytes are written."""
        self._pipe.close()

    def abort(self, why: str) -> None:
        self._pipe.abort(why)

    def result(self) -> Decoding:
        """Wait for the decode to end; then :attr:`diff_id`, :attr:`size` or :attr:`error`."""
        self._thread.join()
        return self

    def _run(self, kind: Compression, limits: LoadLimits) -> None:
        h, size = hashlib.sha256(), 0
        try:
            dec = compress.Decompressed(self._pipe, kind, self.what, limits.bomb)
            try:
                reader = CheckedStream(dec, TarReader(on_entry=LayerPolicy(), limits=limits.layer),
                                       lambda e: _Refused(describe(e)))
                while data := reader.read(CHUNK):
                    h.update(data)
                    size += len(data)
                    if self.staged is not None:
                        self.staged.write(data)
            finally:
                dec.close()
        except _Refused as e:
            self.error = bad(f"{self.what} refused: {e}")
        except BrokenPipeError as e:  # aborted: the archive is bad, its error is the load's
            self.error = bad(f"{self.what}: {e}")
        except BaseException as e:  # noqa: BLE001 - InvalidArgument (corrupt, bomb), NotImplemented_ …
            self.error = e
        finally:
            self._pipe.detach()  # the archive's thread never waits on a decode that ended
        if self.error is None:
            self.diff_id, self.size = "sha256:" + h.hexdigest(), size
            if self.staged is not None:
                self.staged.finish()
        elif self.staged is not None:
            self.staged.abort(str(self.error))
            self.staged = None


@dataclass
class Member:
    name: str
    path: str | None = None  # spool file of a regular member
    size: int = 0
    digest: str = ""
    head: bytes = b""
    link: str | None = None  # symlink/hardlink: the archive path it points at
    checked: bool = False  # the layer check ran over it
    layer_error: str | None = None
    staged: Staged | None = None  # unpacked into a staging snapshot while it streamed
    decoding: Decoding | None = None  # a compressed layer, decoded while it streamed

    def staged_for(self, diff_id: str) -> Staged | None:
        """The staged snapshot of this member if it unpacked the layer ``diff_id``."""
        if self.decoding is not None:
            d = self.decoding.result()
            return d.staged if d.error is None and d.diff_id == diff_id else None
        return self.staged if self.digest == diff_id else None


class Spooler:
    """Callbacks of the outer :class:`TarReader`: one spool file per regular member."""

    def __init__(self, spool: str, limits: LoadLimits, progress: Progress | None,
                 unpacker: Unpacker | None = None, stage_min: int = 0) -> None:
        self.spool = spool
        self.limits = limits
        self.progress = progress
        self.unpacker = unpacker
        self.stage_min = stage_min  # smaller layers are unpacked afterwards (costs next to nothing)
        self.members: dict[str, Member] = {}
        self._cur: Member | None = None
        self._fh: BinaryIO | None = None
        self._hash: Any = None
        self._check: TarReader | None = None
        self._pending = b""  # first bytes, until we know whether the member is a tar
        self._decided = False
        self._done = 0
        self._reported = 0
        self._decoding: list[Decoding] = []  # maybe still running, oldest first

    def entry(self, e: Any) -> None:
        self.finish()
        try:
            name = clean_name(e.name, e.name, "member")
        except TarError as err:
            raise bad(str(err)) from None
        if e.is_dir or not name:
            return
        m = Member(name=name)
        if e.type in (b"1", b"2"):
            base = "" if e.type == b"1" else posixpath.dirname(name)
            target = e.linkname if e.linkname.startswith("/") or not base \
                else posixpath.join(base, e.linkname)
            try:
                m.link = clean_name(target.lstrip("/"), e.name, "link target")
            except TarError as err:
                raise bad(str(err)) from None
            self.members[name] = m
            return
        if not e.is_file:
            raise bad(f"member {e.name!r} is not a regular file, directory or link")
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
        elif self._cur.decoding is not None:
            self._cur.decoding.write(chunk)
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
        ident = short_id(self._cur.name)
        self.progress({"status": "Loading layer", "id": ident,
                       "progressDetail": {"current": self._done, "total": self._cur.size}})

    def _stage(self) -> Staged | None:
        assert self._cur is not None
        if self.unpacker is not None and self._cur.size >= self.stage_min:
            return self.unpacker.stage()
        return None

    def _decide(self) -> None:
        assert self._cur is not None
        self._decided = True
        head = self._pending
        self._cur.head = head[:8]
        kind = compress.sniff(head)
        if kind is Compression.NONE and head.lstrip()[:1] not in (b"{", b"["):
            self._check = TarReader(on_entry=LayerPolicy(), limits=self.limits.layer)
            self._cur.checked = True
            self._cur.staged = self._stage()
            self._feed(head)
            if self._cur.staged is not None:
                self._cur.staged.write(head)
        elif kind in DECODED:
            while len(self._decoding) >= MAX_DECODES:  # bounded memory and threads
                self._decoding.pop(0).result()
            self._cur.decoding = Decoding(kind, f"layer {self._cur.name!r}", self.limits, self._stage())
            self._decoding.append(self._cur.decoding)
            self._cur.decoding.write(head)
        self._pending = b""

    def _feed(self, chunk: bytes) -> None:
        assert self._check is not None and self._cur is not None
        try:
            self._check.feed(chunk)
        except TarError as e:
            self._cur.layer_error = describe(e)
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
                self._cur.layer_error = describe(e)
            self._check = None
        if self._cur.staged is not None:
            if self._cur.layer_error is None:
                self._cur.staged.finish()
            else:
                self._cur.staged.abort(self._cur.layer_error)
                self._cur.staged = None
        if self._cur.decoding is not None:
            self._cur.decoding.close()  # it finishes on its own; ``result`` waits for it
        if self._is_layerish() and self._cur.size:
            self._done = self._cur.size
            self._report()
        self._cur = None

    def abort(self) -> None:
        """The archive ended badly: stop the member being read."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._cur is not None:
            if self._cur.staged is not None:
                self._cur.staged.abort("the archive is truncated or corrupt")
            if self._cur.decoding is not None:
                self._cur.decoding.abort("the archive is truncated or corrupt")

    def stop_decodes(self) -> None:
        """Stop every decode still running and wait for them all (the load is over)."""
        decodes = [m.decoding for m in self.members.values() if m.decoding is not None]
        for d in decodes:
            d.abort("the load ended")
        for d in decodes:
            d.result()


def short_id(name: str) -> str:
    m = BLOB_RE.match(name)
    if m:
        return m.group(1)[:12]
    return name.split("/", 1)[0][:12]


def read(stream: Any, spool: str, lim: LoadLimits, progress: Progress | None,
         unpacker: Unpacker | None, stage_min: int) -> Spooler:
    """Stream the archive ``stream`` (plain or compressed) once into ``spool``.

    Returns:
        The spooler, whose ``members`` maps each cleaned archive path to its :class:`Member`;
        call its ``stop_decodes`` when the load is over, whatever happened.

    Raises:
        InvalidArgument: a malformed, truncated or hostile archive (naming the member).
    """
    spooler = Spooler(spool, lim, progress, unpacker, stage_min)
    reader = TarReader(on_entry=spooler.entry, on_data=spooler.data, limits=lim.archive)
    src = compress.open_sniffed(stream, "image archive", lim.bomb)
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
        spooler.abort()
        spooler.stop_decodes()
        raise bad(describe(e)) from None
    except BaseException:
        spooler.abort()
        spooler.stop_decodes()
        raise
    finally:
        spooler.abort()  # a no-op after finish()
        src.close()
    if not spooler.members:
        raise bad("the archive holds no files")
    return spooler
