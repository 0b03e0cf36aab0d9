"""Unpacking layers into kernel snapshots while ``load`` and ``pull`` run (as dockerd does).

``load`` and ``pull`` run on worker threads; the Kernel is async and lives on the event loop.
:class:`Unpacker` is the bridge, used from those threads:

1. **Stage** — as soon as a stream looks like a layer (an archive member, a decompressed
   download), :meth:`Unpacker.stage` starts ``apply_layer(<staging key>, None, pipe)`` on the
   loop and the worker writes the layer's bytes into the pipe while it also hashes and stores
   them. Nobody knows yet which layer it is, nor its parent: the kernel unpacks it parentless.
2. **Commit** — once every digest is verified, :meth:`Unpacker.commit` holds the engine's
   snapshot lock and, bottom layer first, makes each chain id's snapshot: the staged one is bound
   to it (``bind_layer``, which gives implied dirs the parent's metadata); when staging did not
   fit (a hardlink into a parent layer, a stage that failed, a layer stored before) the layer is
   applied over its parent from the blob store, as container creation does. Then the caller's
   ``record`` (the metadata transaction) runs, still under the lock; if anything fails, the
   snapshots this commit made are removed again.
3. :meth:`Unpacker.close` removes staged snapshots nobody bound (an aborted load, a duplicate).

Staged snapshots have keys ``staging-<hex>``; :data:`STAGING_PREFIX` lets garbage collection
recognise a crash's leftovers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.errors import from_os_error
from engine.images.config import chain_ids
from engine.images.pipe import Pipe

T = TypeVar("T")
STAGING_PREFIX = "staging-"


@dataclass(eq=False)
class Staged:
    """One layer being unpacked into the staging snapshot ``key`` while it streams."""

    key: str
    pipe: Pipe
    future: concurrent.futures.Future[Any] = field(repr=False)
    bound: bool = False

    def write(self, data: bytes) -> None:
        self.pipe.write(data)

    def finish(self) -> None:
        """All bytes written (the unpack completes on its own)."""
        self.pipe.close()

    def abort(self, why: str) -> None:
        """The stream is bad or was cut: the staged unpack fails and leaves nothing."""
        self.pipe.abort(why)


class Unpacker:
    """Makes layer snapshots for ``load``/``pull`` (see the module docstring).

    Args:
        kernel: the Snapshots role.
        loop: the loop the kernel runs on (the caller's threads are not that loop's).
        lock: the engine's snapshot lock (serialises with container creation and snapshot GC).
        open_blob: opens a stored layer by diff_id as its uncompressed tar, whatever form the
            store keeps it in (``ImageStore.open_layer``), for the fallback apply.
    """

    def __init__(self, kernel: Any, loop: asyncio.AbstractEventLoop, lock: asyncio.Lock,
                 open_blob: Callable[[str], Any]) -> None:
        self.kernel, self.loop, self.lock, self.open_blob = kernel, loop, lock, open_blob
        self._staged: list[Staged] = []

    # -- on worker threads ----------------------------------------------------------------------
    def stage(self) -> Staged:
        """Start unpacking a layer that is about to stream (write it, then ``finish``)."""
        pipe = Pipe()
        key = STAGING_PREFIX + uuid.uuid4().hex
        fut = asyncio.run_coroutine_threadsafe(self._apply(key, pipe), self.loop)
        st = Staged(key, pipe, fut)
        self._staged.append(st)
        return st

    async def _apply(self, key: str, pipe: Pipe) -> Any:
        try:
            return await self.kernel.apply_layer(key, None, pipe)
        finally:
            pipe.detach()  # the writer must never wait on a reader that is gone

    def commit(self, chains: Sequence[Sequence[tuple[str, Staged | None]]],
               record: Callable[[], T]) -> T:
        """Make the snapshots of every image's layers, then ``record()``; all or nothing.

        Args:
            chains: per image, ``(diff_id, staged or None)`` bottom layer first.
            record: the metadata transaction (runs on a worker thread under the snapshot lock).

        Returns:
            What ``record`` returns.

        Raises:
            InvalidArgument / Internal …: a layer the kernel refuses (named), or ``record``'s
                error. The snapshots made here are removed again.
        """
        return asyncio.run_coroutine_threadsafe(self._commit(chains, record), self.loop).result()

    def close(self) -> None:
        """Abort unfinished stages and remove staged snapshots that were not bound."""
        for st in self._staged:
            st.abort("cancelled")
        if self._staged:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()

    # -- on the loop ----------------------------------------------------------------------------
    async def _commit(self, chains: Sequence[Sequence[tuple[str, Staged | None]]],
                      record: Callable[[], T]) -> T:
        made: list[str] = []
        async with self.lock:
            try:
                present = {s.key for s in await self.kernel.list()}
                for chain in chains:
                    parent: str | None = None
                    for chain_id, (diff_id, st) in zip(chain_ids([d for d, _ in chain]), chain):
                        if chain_id not in present:
                            if await self._make(chain_id, parent, diff_id, st):
                                made.append(chain_id)
                            present.add(chain_id)
                        parent = chain_id
                return await asyncio.to_thread(record)
            except BaseException:
                for key in reversed(made):
                    with contextlib.suppress(OSError):
                        await self.kernel.remove(key)
                raise

    async def _make(self, key: str, parent: str | None, diff_id: str, st: Staged | None) -> bool:
        """Bind the staged layer as ``key``, else apply the blob; False if it existed."""
        if st is not None and not st.bound:
            try:
                await asyncio.wrap_future(st.future)
            except OSError:
                st = None  # did not fit unparented (or failed): apply it for real below
        if st is not None and not st.bound:
            try:
                await self.kernel.bind_layer(st.key, key, parent)
                st.bound = True
                return True
            except FileExistsError:
                return False
            except OSError:
                pass
        with self.open_blob(diff_id) as fh:
            try:
                await self.kernel.apply_layer(key, parent, fh)
            except FileExistsError:
                return False
            except OSError as e:
                raise from_os_error(f"cannot unpack layer {diff_id}", e) from None
        return True

    async def _close(self) -> None:
        for st in self._staged:
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(st.future)
            if not st.bound and st.future.done() and not st.future.cancelled() \
                    and st.future.exception() is None:
                with contextlib.suppress(OSError):
                    await self.kernel.remove(st.key)
        self._staged.clear()
