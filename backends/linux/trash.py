"""Deferred deletion: a directory is renamed into a trash directory (atomic, microseconds) and
deleted a little later by a background thread, so the caller's reply does not wait for
``rmtree``.

The rename is the commit point: from then on the directory is out of every listing its owner
makes (``snapshots/``, ``sandboxes/``…). The deletion waits ``DELAY`` seconds and takes
everything put meanwhile in one go: a container's teardown (and the reply after it) does not
share the CPU and the GIL with it. A crash before the deletion is harmless: :meth:`Trash.empty`
(called when a kernel starts over the same state) deletes whatever is left. The trash directory
must be on the same filesystem as the directories moved into it (one trash per state root).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time

from backends.linux.layer_root import rmtree_at

DELAY = 0.1  # seconds between a put and the deletion (a burst of puts shares one pass)
IDLE = 5.0  # seconds the deleting thread waits for more before it ends


class Trash:
    """Directories awaiting deletion under ``path`` (created if missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._wake = threading.Condition(self._lock)
        # one thread per trash, kept while puts come (starting one per put, as a Timer does,
        # costs the caller a start handshake with the new thread under the GIL)
        self._worker: threading.Thread | None = None
        self._deleting = threading.Lock()  # held while a pass deletes

    def put(self, src: str) -> None:
        """Move directory ``src`` out of sight now and delete it in the background.

        Raises the ``OSError`` of the rename (``FileNotFoundError`` if ``src`` is gone); nothing
        is moved then. Deletion errors are ignored (what cannot be deleted stays in the trash
        until :meth:`empty` tries again).
        """
        name = f"{os.path.basename(src.rstrip('/'))}.{secrets.token_hex(4)}"
        os.rename(src, os.path.join(self.path, name))
        with self._lock:
            self._pending.append(name)
            if self._worker is None:
                # a daemon thread: what an exit leaves, the next start empties
                self._worker = threading.Thread(target=self._run, name="trash", daemon=True)
                self._worker.start()
            else:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._wake.wait(IDLE)
                    if not self._pending:
                        self._worker = None
                        return
            time.sleep(DELAY)
            self._pass()

    def _pass(self) -> None:
        with self._deleting:
            with self._lock:
                names, self._pending = self._pending, []
            for name in names:
                self._delete(name)

    def _delete(self, name: str) -> None:
        try:
            dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            with contextlib.suppress(OSError):  # e.g. another kernel emptying the same trash
                rmtree_at(dfd, name, ignore_errors=True)
        finally:
            os.close(dfd)

    def empty(self) -> None:
        """Delete everything in the trash now (start-up: leftovers of a crash)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.path):
                self._delete(name)

    def flush(self) -> None:
        """Delete now what was put so far (waiting for a pass in progress)."""
        self._pass()
