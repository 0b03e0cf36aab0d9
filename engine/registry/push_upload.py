"""Blob uploads for ``push`` (distribution spec "pushing blobs"), used by :mod:`.push`.

One upload: ``POST /v2/<name>/blobs/uploads/`` opens a session, then

* a blob that ends within ``MONOLITHIC`` bytes (or within ``chunk_size`` when that is set)
  goes as ONE ``PUT <location>?digest=`` carrying the whole blob;
* a larger one, with ``chunk_size`` 0 (the default), as ONE streamed ``PATCH`` (chunked
  transfer encoding, no ``Content-Range``: what ``docker push`` sends, which every registry
  docker pushes to takes) whose body is produced while it is sent — the registry writes and
  hashes the blob while we are still compressing it — closed by an empty ``PUT ?digest=``;
* with ``chunk_size`` > 0, as ``PATCH`` chunks of that size with ``Content-Range`` (the OCI
  spec's chunked upload), closed by an empty ``PUT ?digest=``.

The digest is computed on the fly. The blob's pieces come from a producer thread that runs
ahead into a bounded queue (:class:`Prefetch`), so reading and compressing go on while bytes
are on the wire. A failed attempt (broken connection, 429, 5xx, a streamed PATCH the registry
wants again) cancels its session (``DELETE``, sent even when the push was cancelled) and the
upload restarts from a new one, at most ``max_retries`` times, waiting as the registry's
``Retry-After`` asks (capped at ``max_backoff``) or else with exponential back-off; the pieces
are produced again and must come out the same.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Self

from engine.errors import InvalidArgument, Unavailable
from engine.registry.options import RegistryOptions
from engine.registry.session import Session

MONOLITHIC = 1024 * 1024  # blobs up to this size go as one PUT (configs, small layers)
PREFETCH_PIECES = 256  # compressed pieces (~1/4 MiB each on layer data) queued ahead of the upload

Pieces = Callable[[], Iterator[bytes]]


class Uploader:
    """Uploads blobs into repository ``path`` over session ``s`` (thread-safe: one call per blob)."""

    def __init__(self, s: Session, options: RegistryOptions, path: str) -> None:
        self.s, self.options, self.path = s, options, path
        self.scopes = (f"repository:{path}:pull,push",)

    def upload(self, pieces: Pieces, ident: str, digest: str | None = None, *,
               big: bool = False) -> tuple[str, int]:
        """Upload the blob ``pieces()`` yields: ``(digest, size)``.

        Args:
            pieces: called once per attempt; each call must give the same bytes.
            ident: names the blob in messages.
            digest: when known, checked against what was sent.
            big: the caller expects more than ``MONOLITHIC`` bytes (a layer to compress that is
                larger than that): with ``chunk_size`` 0 the streamed PATCH starts with the first
                piece instead of after ``MONOLITHIC`` bytes are buffered (so the registry stores
                while we compress from the start, as ``docker push`` does for every layer).

        Raises:
            Unavailable: still failing after ``max_retries`` retries (or cancelled).
            PermissionDenied / NotFound / InvalidArgument: as the registry answers (not retried);
            InvalidArgument: ``digest`` differs from what was read.
        """
        attempt = 0
        while True:
            try:
                return self._upload_once(pieces, ident, digest, big)
            except Unavailable as e:
                if attempt >= self.options.max_retries or self.s.cancelled():
                    raise
                self.s._backoff(attempt, getattr(e, "retry_after", None))
                attempt += 1

    def cancel_upload(self, loc: str) -> None:
        """DELETE an unfinished upload session (best effort, as the spec asks of clients)."""
        try:
            self.s.request("DELETE", loc, self.scopes, retry=False, cancellable=False).close()
        except Exception:  # noqa: BLE001, S110 - best effort: the registry times sessions out anyway
            pass

    def _upload_once(self, pieces: Pieces, ident: str, expect: str | None, big: bool) -> tuple[str, int]:
        what = f"upload blob {ident}"
        # the producer (compression) starts before the session is open: it overlaps the POST
        with Prefetch(pieces, self.s.check_cancel) as src:
            r = self.s.request("POST", f"/v2/{self.path}/blobs/uploads/", self.scopes, ok=(202,), what=what,
                               retry=False)
            loc = [location(r, what)]  # the session's current location (each PATCH answer moves it)
            try:
                return self._send(src, loc, what, expect, big)
            except BaseException:
                src.close()  # stop producing before the session is cancelled
                self.cancel_upload(loc[0])
                raise

    def _send(self, src: Prefetch, loc: list[str], what: str, expect: str | None,
              big: bool) -> tuple[str, int]:
        """Send the blob ``src`` gives into the open session ``loc[0]`` (one PUT, a streamed PATCH
        or PATCH chunks: see the module doc) and close it with ``PUT ?digest=``: ``(digest, size)``."""
        chunk = self.options.chunk_size
        h = hashlib.sha256()
        buf = bytearray()
        ended = False
        while len(buf) <= (chunk if chunk > 0 else 0 if big else MONOLITHIC):
            piece = src.next()
            if piece is None:
                ended = True
                break
            buf += piece
        if ended:  # monolithic: PUT with the whole blob
            data = bytes(buf)
            h.update(data)
            digest = _checked("sha256:" + h.hexdigest(), expect, what)
            r = self.s.request("PUT", with_digest(loc[0], digest), self.scopes, body=data,
                               headers={"Content-Type": "application/octet-stream",
                                        "Content-Length": str(len(data))},
                               ok=(201,), what=f"{what} ({digest})", retry=False)
            check_stored(r, digest, what)
            return digest, len(data)
        if chunk > 0:
            size = self._patch_chunks(src, buf, chunk, h, loc, what)
        else:
            size = self._patch_stream(src, bytes(buf), h, loc, what)
        digest = _checked("sha256:" + h.hexdigest(), expect, what)
        r = self.s.request("PUT", with_digest(loc[0], digest), self.scopes, headers={"Content-Length": "0"},
                           ok=(201,), what=f"{what} ({digest})", retry=False)
        check_stored(r, digest, what)
        return digest, size

    def _patch_chunks(self, src: Prefetch, buf: bytearray, chunk: int, h: Any, loc: list[str],
                      what: str) -> int:
        """PATCH ``buf`` + the rest of ``src`` in chunks of ``chunk`` bytes (``Content-Range``)."""
        offset = 0
        ended = False
        while not ended or buf:
            while not ended and len(buf) <= chunk:
                piece = src.next()
                if piece is None:
                    ended = True
                    break
                buf += piece
            while len(buf) > chunk or (ended and buf):
                data = bytes(buf[:chunk])
                del buf[:chunk]
                h.update(data)
                hdrs = {"Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}", "Content-Length": str(len(data))}
                r = self.s.request("PATCH", loc[0], self.scopes, body=data, headers=hdrs, ok=(202,),
                                   what=what, retry=False)
                loc[0] = location(r, what)
                offset += len(data)
        return offset

    def _patch_stream(self, src: Prefetch, first: bytes, h: Any, loc: list[str], what: str) -> int:
        """One ``PATCH`` whose body is ``first`` + the rest of ``src`` as it comes. The body can
        be sent once only: a redirect or a 401 that would need it again fails this attempt
        (Unavailable: :meth:`upload` starts over, as docker retries a layer).

        Raises:
            InvalidArgument: the registry acknowledged another length than was sent.
            Unavailable: the PATCH had to be sent again.
        """
        sent = 0
        started = False

        def body() -> Iterator[bytes]:
            nonlocal sent, started
            if started:  # a redirect, or a 401 asking for a new token: retried as a whole upload
                raise Unavailable(f"{what}: the registry asked for the streamed upload again (a redirect "
                                  "or new credentials); it cannot be replayed")
            started = True
            piece: bytes | None = first
            while piece is not None:
                h.update(piece)
                sent += len(piece)
                yield piece
                piece = src.next()

        r = self.s.request("PATCH", loc[0], self.scopes, body=body,
                           headers={"Content-Type": "application/octet-stream"}, ok=(202,), what=what,
                           retry=False)
        loc[0] = location(r, what)
        acked = range_end(r.headers.get("range"))
        if acked is not None and acked != sent:
            raise InvalidArgument(f"{what}: the registry took {acked} of the {sent} bytes sent")
        return sent


class Prefetch:
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

    def close(self) -> None:
        """Stop the producer and wait for it (idempotent)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked(digest: str, expect: str | None, what: str) -> str:
    """``digest`` if it is the one expected (checked before the closing PUT: a wrong blob is
    never committed). Raises InvalidArgument otherwise."""
    if expect is not None and digest != expect:
        raise InvalidArgument(f"{what}: read {digest}, expected {expect}: the local blob is damaged or "
                              "changed while it was read; nothing was committed")
    return digest


def check_stored(r: Any, digest: str, what: str) -> None:
    got = r.headers.get("docker-content-digest")
    if got and got != digest:
        raise InvalidArgument(f"{what}: the registry stored it as {got}, not {digest}")


def location(r: Any, what: str) -> str:
    loc = r.headers.get("location")
    if not loc:
        raise InvalidArgument(f"{what}: the registry gave no upload location")
    return str(loc)


def range_end(header: str | None) -> int | None:
    """The byte count an upload's ``Range: 0-<last>`` header acknowledges (None if absent/odd)."""
    m = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", header or "")
    return int(m.group(1)) + 1 if m else None


def with_digest(loc: str, digest: str) -> str:
    return loc + ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})
