"""The streaming tar loop of the safe unpacker, shared by layer extraction
(:mod:`backends.linux.layers`) and ``docker cp`` into a container (``pathops_extract``).

tarfile only *parses* the stream (one entry at a time, no TarInfo kept) from :class:`TarSource`,
our own forward-only buffer: tarfile's ``"r|"`` ``_Stream`` copies its whole read-ahead on every
512-byte header read, and reads a PAX or GNU long-name header into memory whole, whatever size it
declares. File content goes from the buffer straight to the new file (:meth:`TarSource.copy_to`).
The caller's ``apply`` creates each entry (the rules are in :mod:`backends.linux.layers`).
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable
from typing import IO

from backends.linux import libc
from backends.linux.layer_root import BUFSIZE, DIR, HEADER_CAP, RESOLVE, LayerRoot


class TarSource:
    """The raw stream as tarfile's (forward-only) file object.

    Our own buffering instead of tarfile's ``"r|"`` ``_Stream``, whose ``buf = t[size:]``
    copies the whole read-ahead on every 512-byte header read. It remembers the last read (to
    check the end-of-archive marker, which tarfile does not insist on) and refuses to read far
    past what the limits allow (tarfile reads a PAX or GNU long-name header into memory whole).
    """

    SLACK = 2 * BUFSIZE + 4 * tarfile.RECORDSIZE  # read-ahead, end blocks, record padding

    def __init__(self, raw: IO[bytes], x: LayerRoot) -> None:
        self.raw, self.x = raw, x
        self.buf = b""  # unread bytes are buf[off:]
        self.off = 0
        self.base = 0  # stream offset of buf[0]
        self.consumed = 0  # bytes taken from ``raw``
        self.last: tuple[int, bytes] = (-1, b"")

    def tell(self) -> int:
        return self.base + self.off

    def seekable(self) -> bool:
        return False

    def _raw_read(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.consumed += len(data)
        x, lim = self.x, self.x.limits
        if (self.consumed > lim.max_bytes + (x.entries + 1) * x.per_entry + self.SLACK
                or self.consumed - x.mark > HEADER_CAP + self.SLACK):
            raise OSError(errno.EFBIG, f"layer headers exceed the limits near entry {x.current!r}",
                          x.current)
        return data

    def read(self, n: int = -1) -> bytes:
        start = self.tell()
        if n < 0:
            n = 1 << 62
        if n <= len(self.buf) - self.off:
            out = self.buf[self.off:self.off + n]
            self.off += n
        else:
            parts = [self.buf[self.off:]]
            need = n - len(parts[0])
            self.base, self.buf, self.off = self.base + len(self.buf), b"", 0
            while need > 0:
                data = self._raw_read(BUFSIZE)  # never more: a header may claim any size
                if not data:
                    break
                if len(data) <= need:
                    parts.append(data)
                    self.base += len(data)
                    need -= len(data)
                else:
                    parts.append(data[:need])
                    self.buf, self.off, need = data, need, 0
            out = b"".join(parts)
        self.last = (start, out)
        return out

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next ``n`` bytes of the stream to ``fd``, one ``write`` per ``BUFSIZE``:
        straight from the buffer when it holds them (no copy), else gathered by :meth:`read`;
        a short stream raises ``tarfile.ReadError``."""
        while n:
            k = min(n, BUFSIZE)
            if len(self.buf) - self.off >= k:
                view = memoryview(self.buf)[self.off:self.off + k]
                self.off += k
            else:
                view = memoryview(self.read(k))
                if len(view) < k:
                    raise tarfile.ReadError("unexpected end of data")
            while view:
                view = view[os.write(fd, view):]
            n -= k

    def seek(self, pos: int, whence: int = 0) -> int:
        assert whence == 0
        if self.base <= pos <= self.base + len(self.buf):
            self.off = pos - self.base
        elif pos > self.tell():
            left = pos - self.tell()
            while left > 0 and self.read(min(left, BUFSIZE)):
                left = pos - self.tell()
        else:
            raise tarfile.ReadError("layer stream cannot seek backwards")
        return self.tell()

    def block_at(self, offset: int) -> bytes:
        """The 512 bytes at ``offset`` if they were the last thing read (the end marker)."""
        start, data = self.last
        return data if start == offset else b""


def stream_into(x: LayerRoot, tar: IO[bytes],
                apply: Callable[[tarfile.TarFile, tarfile.TarInfo], None], what: str) -> None:
    """Stream the tar ``tar`` entry by entry through ``apply`` (no TarInfo kept), require the
    end-of-archive marker, then set the directory times ``x`` deferred. A corrupt, truncated or
    unterminated archive raises ``OSError(EINVAL)`` "``what`` at <entry>: …" naming the entry;
    ``x`` forgets its cached directory fds whatever happens."""
    reader = TarSource(tar, x)
    try:
        with tarfile.open(fileobj=reader, mode="r:") as tf:  # type: ignore[call-overload]
            while True:
                m = tf.next()
                if m is None:
                    break
                tf.members.clear()  # streaming: do not keep every TarInfo
                x.current = m.name
                apply(tf, m)
                x.mark = tf.offset
            end = reader.block_at(tf.offset)
        if len(end) != tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("missing end-of-archive marker")
        _fix_dir_times(x)
    except (tarfile.TarError, EOFError, UnicodeError) as e:
        raise OSError(errno.EINVAL, f"{what} at {x.current!r}: {e}", x.current) from None
    finally:
        x.forget()


def _fix_dir_times(x: LayerRoot) -> None:
    """Directory mtimes last: creating entries inside a dir changes its mtime."""
    for path, mtime in sorted(x.dir_times.items(), reverse=True):
        try:
            fd = libc.openat2(x.rootfd, path or ".", DIR, resolve=RESOLVE)
        except OSError:
            continue  # replaced by a non-dir later in the stream
        try:
            ns = int(mtime * 1_000_000_000)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
