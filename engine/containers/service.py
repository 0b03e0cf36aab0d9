"""ContainerService: the container verbs, composed from one module per concern.

State lives in the metadata store (durable) and in ``self._all`` (the in-memory copy every
read is served from). Each container has a ``Runtime`` with a lock serialising its verbs and a
condition that waiters (``wait``, ``stop``) watch. The exit of a container's process is noticed
by a watcher task awaiting ``kernel.wait``; everything that follows an exit (cleanup, restart
policy, auto-remove) happens in ``lifecycle._on_exit``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import refs
from engine.containers.control import ControlMixin
from engine.containers.exec import ExecMixin
from engine.containers.health import HealthMixin
from engine.containers.lifecycle import LifecycleMixin
from engine.containers.query import QueryMixin
from engine.containers.restore import RestoreMixin
from engine.containers.record import Container
from engine.context import Context
from engine.errors import NotFound


class ImageSource(Protocol):
    """What containers need from the image store."""

    def resolve(self, ref: str) -> str:
        """Image id for a reference, id or id prefix. Raises NotFound."""

    def config(self, image_id: str) -> dict[str, Any]:
        """The image's OCI config document (with its ``config`` section)."""

    def layer_chain(self, image_id: str) -> list[tuple[str, str, str]]:
        """[(chain_id, diff_id, blob_digest)] bottom to top."""

    def open_layer(self, blob_digest: str) -> Any:
        """A binary file object with the uncompressed layer tar."""


class MetaStore(Protocol):
    def put_container(self, id: str, name: str, image_id: str, doc: dict[str, Any],
                      durable: bool = True) -> None: ...
    def delete_container(self, id: str, durable: bool = True) -> None: ...
    def list_container_docs(self) -> list[dict[str, Any]]: ...


@dataclass
class Runtime:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    watcher: asyncio.Task[None] | None = None
    restart_task: asyncio.Task[None] | None = None
    health_task: asyncio.Task[None] | None = None
    exits: int = 0  # how many times the process exited (for wait next-exit)
    removed: bool = False
    layer_gone: bool = False  # the write layer was removed at the exit (auto-remove)


class ContainerService(LifecycleMixin, ControlMixin, RestoreMixin, QueryMixin, ExecMixin, HealthMixin):
    def __init__(self, ctx: Context, images: ImageSource, meta: MetaStore) -> None:
        self.ctx = ctx
        self.kernel = ctx.kernel
        self.images = images
        self.meta = meta
        self._all: dict[str, Container] = {}
        self._rt: dict[str, Runtime] = {}
        self._snapshot_lock = asyncio.Lock()
        self._backoff_next: dict[str, float] = {}
        self._bg: set[asyncio.Task[None]] = set()  # deferred deletions (see control._discard_dir)
        self._init_exec()

    # -- lookup and persistence -------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """By full id, name (with or without "/"), or unique id prefix.

        Raises:
            NotFound: "No such container: <ref>".
            AmbiguousReference: a prefix matching several containers.
        """
        if not ref:
            raise NotFound("No such container: ")
        c = self._all.get(ref)
        if c is not None:
            return c
        name = ref.lstrip("/")
        for c in self._all.values():
            if c.name == name:
                return c
        try:
            cid = refs.resolve_prefix(self._all.keys(), ref)
        except NotFound:
            raise NotFound(f"No such container: {ref}") from None
        return self._all[cid]

    def rt(self, cid: str) -> Runtime:
        rt = self._rt.get(cid)
        if rt is None:
            rt = self._rt[cid] = Runtime()
        return rt

    def save(self, c: Container, runtime: bool = False) -> None:
        """Store ``c``, synced to disk unless :meth:`transient` says the commit may be lost
        to a power cut (``runtime``: only its run state changed)."""
        self.meta.put_container(c.id, c.name, c.image_id, c.to_dict(),
                                durable=not self.transient(c, runtime))
        self._all[c.id] = c

    @staticmethod
    def transient(c: Container, runtime: bool = False) -> bool:
        """Whether a commit about ``c`` may skip the disk sync (a power cut may lose it, a crash
        of the daemon never does). An auto-removed container (``run --rm``) lives no longer
        than its run: every commit about it (a power cut then at worst leaves a record that
        restore removes, or drops one whose write layer restore removes). A run state change
        (``runtime``: started, exited) of a container whose restart policy is "no": a power
        cut stops every container, and losing that commit only shows it in its state before
        that run, which no policy acts on either way. Everything else is durable."""
        return c.spec.auto_remove or (runtime and c.spec.restart_policy.name == "no")

    async def notify(self, c: Container) -> None:
        rt = self.rt(c.id)
        async with rt.changed:
            rt.changed.notify_all()

    def emit(self, c: Container, action: str, **extra: str) -> None:
        attrs = {"name": c.name, "image": c.image_ref, **c.labels, **extra}
        self.ctx.events.emit("container", action, c.id, attrs)

    def all(self) -> list[Container]:
        # newest first; insertion order breaks ties (the sim's clock may not move between creates)
        ordered = list(self._all.values())
        return [c for _, c in sorted(enumerate(ordered), key=lambda ic: (ic[1].created, ic[0]), reverse=True)]

    def uses_image(self, image_id: str) -> list[str]:
        return [c.id for c in self._all.values() if c.image_id == image_id]

    def running_with_image(self, image_id: str) -> list[str]:
        from engine.model import is_alive

        return [c.id for c in self._all.values() if c.image_id == image_id and is_alive(c.state.status)]
