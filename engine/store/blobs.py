"""Content-addressed blob store: ``<root>/blobs/sha256/<hex>``.

Contract (containerd's content store, reduced):

* A blob is written to a temp file in ``<root>/blobs/tmp``, hashed while it is copied, and its
  size and digest are verified *before* an atomic ``os.replace`` into place (file fsync'd, then
  the directory). So a blob at its final path is always complete and matches its name.
* Ingesting content that is already present is not an error: the temp file is dropped and the
  existing blob is reported (dedupe).
* On any failure (mismatch, short stream, ENOSPC) nothing is left behind.
* Temp files left by a crash are removed when the store is opened (``clean_temp=True``).
* Garbage collection (:meth:`BlobStore.gc`) never deletes a blob held by an active
  :meth:`BlobStore.lease`, so an import can ingest first and record metadata second without a
  concurrent prune deleting the fresh blob in between.

Only ``sha256`` digests are accepted.
"""

from __future__ import annotations

import builtins

import hashlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, NewType

from engine.errors import InvalidArgument, NotFound, from_os_error

Digest = NewType("Digest", str)

CHUNK = 1024 * 1024
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TMP_PREFIX = "ingest-"


def validate_digest(digest: str) -> Digest:
    """Return ``digest`` typed as :data:`Digest`.

    Raises:
        InvalidArgument: not ``sha256:`` followed by 64 lowercase hex digits.
    """
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        algo = digest.split(":", 1)[0] if isinstance(digest, str) and ":" in digest else ""
        if algo and algo != "sha256":
            raise InvalidArgument(f"invalid digest {digest!r}: unsupported algorithm {algo!r}")
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 lowercase hex>")
    return Digest(digest)


def digest_bytes(data: bytes) -> Digest:
    """The sha256 digest of ``data``."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


class Lease:
    """A set of digests protected from :meth:`BlobStore.gc` while the lease is active."""

    def __init__(self) -> None:
        self.digests: set[Digest] = set()

    def add(self, digest: str) -> None:
        self.digests.add(validate_digest(digest))


class BlobStore:
    """Blobs under ``<root>/blobs``; thread-safe.

    Args:
        root: the state root; ``blobs/sha256`` and ``blobs/tmp`` are created below it.
        clean_temp: remove leftover temp files (a previous crash) now.
    """

    def __init__(self, root: str | os.PathLike[str], clean_temp: bool = True) -> None:
        self.root = os.fspath(root)
        self.blob_dir = os.path.join(self.root, "blobs", "sha256")
        self.tmp_dir = os.path.join(self.root, "blobs", "tmp")
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self._lock = threading.Lock()
        self._leases: list[Lease] = []
        if clean_temp:
            self.clean_temp()

    # -- reading -------------------------------------------------------------------------------

    def path(self, digest: str) -> str:
        """Where blob ``digest`` lives (whether or not it exists). Raises InvalidArgument."""
        d = validate_digest(digest)
        return os.path.join(self.blob_dir, d.split(":", 1)[1])

    def exists(self, digest: str) -> bool:
        """True if the blob is present. Raises InvalidArgument for a malformed digest."""
        return os.path.isfile(self.path(digest))

    def open(self, digest: str) -> BinaryIO:
        """Open blob ``digest`` for reading (the caller closes it).

        Raises:
            NotFound: "blob not found: sha256:…".
        """
        p = self.path(digest)
        try:
            return open(p, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob not found: {digest}") from None

    def read_bytes(self, digest: str) -> bytes:
        """The whole content of blob ``digest``. Raises NotFound."""
        with self.open(digest) as f:
            return f.read()

    def size(self, digest: str) -> int:
        """Size in bytes of blob ``digest``. Raises NotFound."""
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob not found: {digest}") from None

    def list(self) -> list[Digest]:
        """Every stored blob's digest, sorted. Stray files with non-hex names are ignored."""
        out = []
        for name in os.listdir(self.blob_dir):
            d = "sha256:" + name
            if _DIGEST_RE.match(d):
                out.append(Digest(d))
        return sorted(out)

    def temp_files(self) -> builtins.list[str]:
        """Paths of temp files in ``blobs/tmp`` (in-flight ingests or crash leftovers)."""
        return sorted(os.path.join(self.tmp_dir, n) for n in os.listdir(self.tmp_dir))

    # -- writing -------------------------------------------------------------------------------

    def ingest(self, stream: BinaryIO, expected_digest: str | None = None,
               expected_size: int | None = None, lease: Lease | None = None) -> tuple[Digest, int]:
        """Copy ``stream`` to EOF into the store, verifying it.

        Args:
            stream: a readable binary stream (not closed here).
            expected_digest: if given, the content must hash to it.
            expected_size: if given, the content must have exactly this many bytes (reading
                stops early once it is exceeded).
            lease: if given, the digest is added to it (protects it from :meth:`gc`).

        Returns:
            ``(digest, size)`` of the stored blob.

        Raises:
            InvalidArgument: malformed expected digest, size or digest mismatch.
            Unavailable / Internal: the write failed (ENOSPC, EIO…), naming the temp file.
        """
        want = validate_digest(expected_digest) if expected_digest is not None else None
        if expected_size is not None and expected_size < 0:
            raise InvalidArgument(f"invalid expected size {expected_size}")
        tmp = os.path.join(self.tmp_dir, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        h = hashlib.sha256()
        size = 0
        try:
            try:
                out = open(tmp, "xb")
            except OSError as e:
                raise from_os_error(f"cannot create blob temp file {tmp}", e) from e
            with out:
                while True:
                    chunk = stream.read(CHUNK)  # source errors propagate unchanged
                    if not chunk:
                        break
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise InvalidArgument(f"blob ingest: size mismatch: expected "
                                              f"{expected_size} bytes, got more than that")
                    h.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise from_os_error(f"cannot write blob temp file {tmp}", e) from e
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as e:
                    raise from_os_error(f"cannot sync blob temp file {tmp}", e) from e
            got = Digest("sha256:" + h.hexdigest())
            if expected_size is not None and size != expected_size:
                raise InvalidArgument(
                    f"blob ingest: size mismatch: expected {expected_size} bytes, got {size}")
            if want is not None and got != want:
                raise InvalidArgument(f"blob ingest: digest mismatch: expected {want}, got {got}")
            final = self.path(got)
            with self._lock:
                if lease is not None:
                    lease.add(got)
                if os.path.isfile(final):
                    return got, size  # dedupe: the finally drops the temp file
                try:
                    os.replace(tmp, final)
                    self._fsync_dir(self.blob_dir)
                except OSError as e:
                    raise from_os_error(f"cannot commit blob {got}", e) from e
            return got, size
        finally:
            _unlink_quiet(tmp)

    def adopt(self, path: str, digest: str, size: int, lease: Lease | None = None) -> bool:
        """Move an already verified file into the store as blob ``digest`` (no copy).

        The caller has hashed ``path`` while writing it (e.g. an archive member spooled under
        the state root, on the same filesystem) and vouches for ``digest``; the size is checked
        here. If the blob is already present ``path`` is deleted instead (dedupe).

        Returns:
            True if the file was moved in, False if the blob was already there.

        Raises:
            InvalidArgument: size mismatch or malformed digest. Internal: the rename failed.
        """
        final = self.path(digest)
        if os.stat(path).st_size != size:
            raise InvalidArgument(f"blob adopt: size mismatch for {digest}")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            if lease is not None:
                lease.add(digest)
            if os.path.isfile(final):
                _unlink_quiet(path)
                return False
            try:
                os.replace(path, final)
            except OSError as e:
                raise from_os_error(f"cannot commit blob {digest}", e) from e
            self._fsync_dir(self.blob_dir)
        return True

    def put_bytes(self, data: bytes, lease: Lease | None = None) -> Digest:
        """Store ``data`` and return its digest (see :meth:`ingest`)."""
        with io.BytesIO(data) as buf:
            digest, _ = self.ingest(buf, lease=lease)
        return digest

    def delete(self, digest: str) -> None:
        """Delete blob ``digest``. Raises NotFound if it is absent."""
        p = self.path(digest)
        with self._lock:
            try:
                os.unlink(p)
            except FileNotFoundError:
                raise NotFound(f"blob not found: {digest}") from None
            except OSError as e:
                raise from_os_error(f"cannot delete blob {digest}", e) from e

    def discard(self, digest: str) -> bool:
        """Delete blob ``digest`` unless it is absent or leased; True if it was deleted.

        The lease check and the unlink happen under the store lock, so a concurrent ingest of the
        same content either sees the blob (and leases it first) or re-creates it.
        """
        p = self.path(digest)
        with self._lock:
            if any(digest in lease.digests for lease in self._leases):
                return False
            try:
                os.unlink(p)
            except FileNotFoundError:
                return False
            return True

    # -- leases and gc -------------------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """Protect blobs ingested with this lease from :meth:`gc` until the block exits."""
        lease = Lease()
        with self._lock:
            self._leases.append(lease)
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.remove(lease)

    def leased(self) -> set[Digest]:
        """Digests held by active leases."""
        with self._lock:
            return {d for lease in self._leases for d in lease.digests}

    def gc(self, keep: Iterable[str]) -> builtins.list[Digest]:
        """Delete every blob not in ``keep`` and not leased.

        Returns:
            The digests deleted, sorted.
        """
        keep_set = set(keep)
        removed: builtins.list[Digest] = []
        with self._lock:
            held = {d for lease in self._leases for d in lease.digests}
            for d in self.list():
                if d in keep_set or d in held:
                    continue
                _unlink_quiet(self.path(d))
                removed.append(d)
        return removed

    def clean_temp(self) -> builtins.list[str]:
        """Remove every temp file (call only when no ingest is in flight). Returns their paths."""
        removed = self.temp_files()
        for p in removed:
            _unlink_quiet(p)
        return removed

    @staticmethod
    def _fsync_dir(path: str) -> None:
        # Directory fsync makes the rename durable on Linux; Windows cannot open directories.
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
