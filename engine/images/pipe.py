"""A bounded in-memory byte pipe between two threads (one writer, one reader).

The writer ``write``\\ s chunks as a layer arrives (from an archive or a download) and ``close``\\ s
it at the end; the reader (``Snapshots.apply_layer`` unpacking it) ``read``\\ s it like a file.
``max_chunks`` bounds the memory: a writer ahead of its reader waits.

Neither side can wait forever on the other: the writer's ``abort()`` makes the reader's next
``read`` fail with :class:`BrokenPipeError`; the reader's ``detach()`` (it is done, with or
without an error — a tar reader stops at the end-of-archive marker, before the padding) makes
every later ``write`` a no-op, so the writer carries on with its other consumers.
"""

from __future__ import annotations

import collections
import threading


class Pipe:
    """Bytes from one thread to another, bounded to ``max_chunks`` pending writes."""

    def __init__(self, max_chunks: int = 16) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._max = max(1, max_chunks)
        self._cond = threading.Condition()
        self._closed = False  # the writer is done: EOF after the pending chunks
        self._aborted: str | None = None
        self._detached = False  # the reader is gone: writes are dropped
        self._head = b""  # the chunk being read, from ``_off`` on
        self._off = 0
        self.written = 0

    # -- writer side ---------------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        """Queue ``data`` (waits while the pipe is full); dropped once the reader detached or
        the pipe was aborted."""
        if not data:
            return 0
        with self._cond:
            while len(self._chunks) >= self._max and self._aborted is None and not self._detached:
                self._cond.wait()
            if self._aborted is not None or self._detached:
                return len(data)
            if self._closed:
                raise ValueError("write to a closed pipe")
            self._chunks.append(bytes(data))
            self.written += len(data)
            self._cond.notify_all()
        return len(data)

    def close(self) -> None:
        """End of data: the reader gets EOF once it has read what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self, why: str = "the writer gave up") -> None:
        """The data will not be complete: the reader's next ``read`` raises BrokenPipeError."""
        with self._cond:
            if self._aborted is None:
                self._aborted = why
            self._chunks.clear()
            self._cond.notify_all()

    # -- reader side ---------------------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is queued when ``n < 0``); ``b""`` at EOF.

        Raises BrokenPipeError if the pipe was aborted before the writer closed it.
        """
        if self._off >= len(self._head):
            with self._cond:
                while not self._chunks and not self._closed and self._aborted is None:
                    self._cond.wait()
                if self._aborted is not None:
                    raise BrokenPipeError(f"pipe aborted: {self._aborted}")
                if not self._chunks:
                    return b""
                if n is None or n < 0:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    self._cond.notify_all()
                    return data
                self._head, self._off = self._chunks.popleft(), 0
                self._cond.notify_all()
        if self._off == 0 and (n is None or n < 0 or n >= len(self._head)):
            data, self._head = self._head, b""
            return data
        end = len(self._head) if n is None or n < 0 else min(len(self._head), self._off + n)
        data = self._head[self._off:end]
        self._off = end
        return data

    def detach(self) -> None:
        """The reader is done: queued and later writes are dropped (the writer never blocks)."""
        with self._cond:
            self._detached = True
            self._chunks.clear()
            self._cond.notify_all()

    def readable(self) -> bool:
        return True
