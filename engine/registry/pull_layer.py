"""One pulled layer: a download and an unpack that overlap, each at its own pace.

* The **download** (at most ``max_concurrent_downloads`` at once, on the pull's download pool)
  streams the compressed blob into the partial file ``<root>/tmp/pull/<hex>``, hashing it; a
  broken connection resumes with ``Range: bytes=<reached>-`` (a previous pull's partial file
  too — Docker starts over, moby#48539). It never waits for the unpack: the layer after the one
  being unpacked keeps downloading.
* The **decode** (one per layer in flight, on the pull's decode pool) reads the partial file as
  it grows — it waits for the download only when it has caught up — and decompresses (gzip,
  zstd or none, sniffed), checks the layer rules (``LayerPolicy``), hashes (the config's
  ``diff_id``) and, with an unpacker, feeds the staged snapshot.
* When the download's size and digest match the manifest's descriptor and the content matches
  the diff_id, the partial file itself is renamed into the blob store (the layer's compressed
  blob, :mod:`engine.images.layerblob`): no uncompressed copy is written. Nothing is recorded
  here; the pull records the image once every layer is in.

Errors: content refused before the download ended waits for the download, so a blob that is not
what the manifest says is reported as the digest mismatch it is. A corrupt or refused blob
deletes the partial file; an interrupted one keeps it for a later resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

import httpx

from engine.errors import EngineError, InvalidArgument, Unavailable
from engine.images import compress
from engine.images.layerblob import StoredLayer, media_type_for
from engine.images.tarscan import CheckedStream, LayerPolicy, ScanLimits, TarReader
from engine.images.unpack import Staged
from engine.registry import manifests
from engine.registry.progress import short

if TYPE_CHECKING:
    from engine.registry.pull import _Puller

CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _Restart(Exception):
    """The download started over from byte 0 (the registry ignored ``Range``)."""


class _Failed(Exception):
    """The download failed (its error is the job's)."""


class _State:
    """What the download has written, for the decode: ``size`` bytes of the partial file are
    flushed; ``generation`` counts restarts from byte 0; ``done`` / ``error`` at the end."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.started = False  # the partial file is open for appending (a stale one was removed)
        self.size = 0
        self.generation = 0
        self.done = False
        self.error: BaseException | None = None
        self.stop = threading.Event()  # the decode gave up: stop downloading

    def grew(self, size: int) -> None:
        with self.cond:
            self.started = True
            self.size = size
            self.cond.notify_all()

    def restart(self) -> None:
        """Called *before* the file is truncated (a reader re-checks the generation after each
        read, so it never takes bytes of the new download for the old one's)."""
        with self.cond:
            self.size = 0
            self.generation += 1
            self.cond.notify_all()

    def end(self, error: BaseException | None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    def wait_end(self) -> BaseException | None:
        with self.cond:
            while not self.done:
                self.cond.wait()
            return self.error


class _Tail:
    """Reads the partial file as the download grows it (see :class:`_State`).

    Raises (from ``read``): _Restart, _Failed.
    """

    def __init__(self, st: _State, partial: str) -> None:
        self.st = st
        with st.cond:
            while not st.started and not st.done:
                st.cond.wait()
            self.generation = st.generation
            try:
                self.fh: BinaryIO | None = open(partial, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:  # the download failed and removed it
                self.fh = None
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        want = CHUNK if n is None or n < 0 else n
        st = self.st
        with st.cond:
            while self.pos >= st.size and not st.done and st.generation == self.generation:
                st.cond.wait()
            if st.generation != self.generation:
                raise _Restart()
            if st.error is not None:
                raise _Failed()
            avail = st.size - self.pos
        if avail <= 0 or self.fh is None:
            return b""
        data = self.fh.read(min(want, avail))
        with st.cond:
            if st.generation != self.generation:  # truncated while it was read
                raise _Restart()
        self.pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class LayerJob:
    """Download + decode of one layer (see the module docstring); :meth:`run` on the decode pool."""

    def __init__(self, puller: _Puller, desc: manifests.Descriptor, diff_id: str,
                 downloads: ThreadPoolExecutor) -> None:
        self.p, self.desc, self.diff_id, self.downloads = puller, desc, diff_id, downloads
        self.ident = short(desc.digest)
        self.what = f"layer {desc.digest}"

    def run(self) -> StoredLayer:
        p = self.p
        with p.transfers.lock(self.desc.digest):  # two pulls of one layer share the work
            p.session.check_cancel()
            found = p.store.stored_layer(self.diff_id, p.lease)  # another pull finished it meanwhile
            if found is not None:
                p.report.status("Already exists", self.ident)
                return found
            partial = p.transfers.partial(self.desc.digest)
            st = _State()
            fut = self.downloads.submit(self._download, partial, st)
            try:
                layer = self._decode(partial, st)
            except BaseException:
                st.stop.set()
                raise
            finally:
                fut.result()  # the download has ended (it reports through ``st``)
        p.report.status("Pull complete", self.ident)
        return layer

    # -- the decode -------------------------------------------------------------------------------
    def _decode(self, partial: str, st: _State) -> StoredLayer:
        p = self.p
        while True:
            staged = p.unpacker.stage() if p.unpacker is not None else None
            try:
                layer = self._attempt(partial, st, staged)
            except _Restart:
                if staged is not None:
                    staged.abort("the download restarted")
                continue
            except BaseException as e:
                if staged is not None:
                    staged.abort(str(e) or type(e).__name__)
                raise
            if staged is not None:
                staged.finish()
            if p.store.adopt_layer(partial, layer, self.desc.size, p.lease):
                with p.new_lock:
                    p.new_blobs.add(layer.blob)
            if staged is not None:
                with p.new_lock:
                    p.staged[self.diff_id] = staged
            return layer

    def _attempt(self, partial: str, st: _State, staged: Staged | None) -> StoredLayer:
        p, d = self.p, self.desc
        tail = _Tail(st, partial)
        try:
            h, size = hashlib.sha256(), 0
            try:
                dec = compress.open_sniffed(tail, self.what)  # type: ignore[arg-type]
                try:
                    reader = CheckedStream(dec, TarReader(on_entry=LayerPolicy(), limits=ScanLimits()),
                                           lambda e: InvalidArgument(f"{self.what} refused: {e}"))
                    while data := reader.read(CHUNK):
                        h.update(data)
                        size += len(data)
                        if staged is not None:
                            staged.write(data)
                        p.report.bytes("Extracting", self.ident, tail.pos, d.size)
                    while tail.read(CHUNK):  # bytes past the end of the compressed stream
                        pass
                finally:
                    dec.close()
            except _Failed:
                raise st.error or Unavailable(f"download {self.what} failed") from None
            except InvalidArgument:
                error = st.wait_end()  # the digest mismatch, if any, explains it best
                if error is not None:
                    raise error from None
                _unlink(partial)  # corrupt or refused content: nothing worth resuming
                raise
            kind = dec.kind
        finally:
            tail.close()
        error = st.wait_end()
        if error is not None:
            raise error
        got = "sha256:" + h.hexdigest()
        if got != self.diff_id:
            _unlink(partial)
            raise InvalidArgument(f"{self.what}: uncompressed content does not match diff_id "
                                  f"{self.diff_id} of the image config (it hashes to {got})")
        p.report.bytes("Extracting", self.ident, d.size, d.size, force=True)
        return StoredLayer(self.diff_id, d.digest, size, media_type_for(kind, d.media_type))

    # -- the download -----------------------------------------------------------------------------
    def _download(self, partial: str, st: _State) -> None:
        try:
            self._fetch(partial, st)
        except BaseException as e:  # noqa: BLE001 - handed to the decode through ``st``
            st.end(e)
            return
        st.end(None)

    def _fetch(self, partial: str, st: _State) -> None:
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
            st.grew(offset)
            while offset < d.size:
                self._check_stop(st)
                headers = {"Accept-Encoding": "identity"}
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                resp = p.session.request("GET", url, p.scopes, headers=headers, stream=True,
                                         ok=(200, 206, 416), what=f"download {self.what}")
                reached = offset
                with contextlib.closing(resp):
                    if resp.status_code == 416:
                        resp.read()
                        out.close()
                        _unlink(partial)
                        raise InvalidArgument(f"download {self.what}: truncated: the registry has no "
                                              f"bytes past {offset}, the manifest says {d.size}")
                    if resp.status_code == 206:
                        m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                        start = int(m.group(1)) if m else -1
                        if start != offset:
                            start = -1
                    else:
                        start = 0 if not offset else -1
                    if start < 0:  # no usable range support: start over
                        st.restart()
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
                                _unlink(partial)
                                raise InvalidArgument(f"download {self.what}: size mismatch: more than "
                                                      f"the {d.size} bytes the manifest says")
                            out.write(chunk)
                            out.flush()
                            h.update(chunk)
                            offset += len(chunk)
                            st.grew(offset)
                            p.report.bytes("Downloading", self.ident, offset, d.size)
                            self._check_stop(st)
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
                        raise InvalidArgument(f"download {self.what}: truncated: got {offset} of "
                                              f"{d.size} bytes")
            # no fsync here: the blob store fsyncs the file when it adopts it
            out.flush()
        got = "sha256:" + h.hexdigest()
        if got != d.digest:
            _unlink(partial)
            raise InvalidArgument(f"download {self.what}: digest mismatch: expected {d.digest}, got {got}")
        p.report.bytes("Downloading", self.ident, offset, d.size, force=True)
        p.report.status("Verifying Checksum", self.ident)
        p.report.status("Download complete", self.ident)

    def _check_stop(self, st: _State) -> None:
        self.p.session.check_cancel()
        if st.stop.is_set():
            raise Unavailable(f"download {self.what}: stopped (the layer was refused)")


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


__all__ = ["EngineError", "LayerJob"]
