"""The image verbs of the Engine (``Engine``'s base): the image store, archives, registries.

``ImageVerbs`` is a mixin of :class:`engine.engine.Engine`, which gives it the stores, the kernel,
the event bus and the container service (which images are in use; the snapshot lock). Contract:
every verb that creates, names or removes an image emits the matching ``image`` event (``import``,
``tag``, ``untag``, ``delete``, ``save``, ``load``, ``pull``, ``push``) on the event loop once the
stores have changed. Blocking work (archive streaming, hashing, unpacking, registry transfers)
runs on a worker thread in the ``*_async`` verbs and in ``image_pull``/``image_push``/
``registry_login``; the sync verbs are for callers already on a worker thread. Errors are the
engine's (``engine.errors``: NotFound, Conflict, InvalidArgument, …), as each verb says.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping
from typing import IO, Any, BinaryIO

from engine.containers.service import ContainerService
from engine.events import EventBus
from engine.images.store import ImageRecord, ImageStore
from engine.kernel import Kernel
from engine.store.blobs import BlobStore


class ImageVerbs:
    """``docker image …``, ``save``/``load``, ``pull``/``push``/``login``."""

    kernel: Kernel
    blobs: BlobStore
    events: EventBus
    image_store: ImageStore
    containers: ContainerService

    # -- the image store --------------------------------------------------------------------


    def image_import(self, stream: IO[bytes], reference: str | None = None, changes: list[str] | None = None,
                     message: str = "") -> str:
        image_id = self.image_store.import_tar(stream, reference, changes or [], message)
        self.events.emit("image", "import", image_id, {"name": reference or image_id})
        return image_id

    def image_bootstrap_busybox(self, reference: str = "busybox:latest", binary: bytes | None = None) -> str:
        """Import a rootfs around the host's static busybox as ``reference`` (offline first image)."""
        from engine.images.busybox import rootfs_tar_bytes

        data = rootfs_tar_bytes(binary)
        changes = ['CMD ["sh"]']
        return self.image_import(io.BytesIO(data), reference, changes, "bootstrapped from host busybox")

    def image_list(self, all: bool = False, filters: Mapping[str, list[str]] | None = None) -> list[ImageRecord]:
        return self.image_store.list(all=all, filters=dict(filters or {}))

    def image_inspect(self, ref: str) -> ImageRecord:
        return self.image_store.inspect(ref)

    def image_tag(self, source: str, target: str) -> None:
        self.image_store.tag(source, target)
        self.events.emit("image", "tag", self.image_store.lookup(target), {"name": target})

    def image_remove(self, ref: str, force: bool = False, no_prune: bool = False) -> list[dict[str, str]]:
        result = self.image_store.remove(ref, force=force, no_prune=no_prune, in_use=self.containers.uses_image,
                                         running=self.containers.running_with_image)
        for item in result:
            for action, what in item.items():
                self.events.emit("image", action.lower().replace("untagged", "untag").replace("deleted", "delete"),
                                 what, {"name": what})
        return result

    def image_prune(self, all: bool = False, filters: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
        return self.image_store.prune(dangling_only=not all, in_use=self.containers.uses_image)

    async def forget_image_snapshots(self) -> None:
        """Remove committed snapshots no image refers to any more (after rmi); not the
        staging snapshots of a load or pull in flight (engine.images.unpack)."""
        async with self.containers._snapshot_lock:
            wanted: set[str] = set()
            for img in self.image_store.list(all=True):
                wanted.update(chain for chain, _d, _b in self.image_store.layer_chain(img.id))
            snaps = await self.kernel.list()
            parents = {s.parent for s in snaps if s.parent}
            changed = True
            while changed:
                changed = False
                for s in await self.kernel.list():
                    if s.kind == "committed" and s.key not in wanted and s.key not in parents \
                            and not s.key.startswith("staging-"):
                        with contextlib.suppress(OSError):
                            await self.kernel.remove(s.key)
                            changed = True
                parents = {s.parent for s in await self.kernel.list() if s.parent}


    async def image_import_async(self, stream: BinaryIO, reference: str | None = None,
                                 changes: list[str] | None = None, message: str = "",
                                 platform: str | None = None) -> str:
        """``image_import`` with the unpacking and hashing on a worker thread (big tarballs must
        not stall the daemon's event loop); the event is emitted back on the loop."""
        import asyncio
        import functools

        loop = asyncio.get_running_loop()
        image_id: str = await loop.run_in_executor(None, functools.partial(
            self.image_store.import_tar, stream, reference, changes or [], message, platform))
        self.events.emit("image", "import", image_id, {"name": reference or image_id})
        return image_id

    # -- save/load (issue 5) ---------------------------------------------------------------
    # Blocking work (archive streaming, hashing, unpacking) runs on a worker thread in the
    # ``*_async`` variants; the sync ones are for callers already on a worker thread.

    def image_save(self, refs: list[str], out: BinaryIO | IO[bytes],
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   compression: str = "none") -> list[str]:
        """``docker save``: write ``refs`` (tags, repository names, ids) as one docker-archive
        that is also an OCI image layout (Docker 25's layout) to the blocking writer ``out``.

        Deterministic: the same images give the same bytes. ``progress`` gets Docker's
        ``{"status": "Saving layer", "progressDetail": {"current", "total"}, "id"}`` messages;
        ``compression`` is ``"none"`` (as Docker), ``"gzip"`` or ``"zstd"``.

        Returns:
            The image ids written. Raises NotFound / InvalidArgument.
        """
        from engine.images import save as _save

        ids = _save.save(self.image_store, refs, out, progress, compression)
        for image_id in ids:
            self.events.emit("image", "save", image_id, {"name": image_id})
        return ids

    async def image_save_async(self, refs: list[str], out: BinaryIO | IO[bytes],
                               progress: Callable[[dict[str, Any]], None] | None = None,
                               compression: str = "none") -> list[str]:
        """:meth:`image_save` on a worker thread (``progress`` is called on that thread)."""
        import asyncio
        import functools

        from engine.images import save as _save

        ids: list[str] = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            _save.save, self.image_store, refs, out, progress, compression))
        for image_id in ids:
            self.events.emit("image", "save", image_id, {"name": image_id})
        return ids

    def image_load(self, stream: BinaryIO | IO[bytes],
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   limits: Any = None) -> list[str]:
        """``docker load``: every image of a docker-archive or OCI-layout archive (plain, gzip,
        bzip2, xz or zstd) read from the blocking reader ``stream``.

        All or nothing: on any error (InvalidArgument naming the member or digest, for
        truncated, corrupt, mismatching, incomplete or hostile input, decompression bombs) the
        stores are left as they were. ``progress`` gets ``{"status": "Loading layer", …}``
        messages; ``limits`` is an ``engine.images.load.LoadLimits``.

        Returns:
            ``"busybox:latest"`` per loaded tag, or the image id for an untagged image (the
            API prints "Loaded image: …" / "Loaded image ID: …").
        """
        from engine.images import load as _load

        result = _load.load(self.image_store, stream, progress, limits)
        return self._loaded(result)

    async def image_load_async(self, stream: BinaryIO | IO[bytes],
                               progress: Callable[[dict[str, Any]], None] | None = None,
                               limits: Any = None) -> list[str]:
        """:meth:`image_load` on a worker thread (``progress`` is called on that thread)."""
        import asyncio
        import functools

        from engine.images import load as _load

        result = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            _load.load, self.image_store, stream, progress, limits, self._unpacker()))
        return self._loaded(result)

    def _unpacker(self) -> Any:
        """Unpacks layers into snapshots while ``load``/``pull`` run (engine.images.unpack)."""
        import asyncio

        from engine.images.unpack import Unpacker

        return Unpacker(self.kernel, asyncio.get_running_loop(), self.containers._snapshot_lock,
                        self.image_store.open_layer)

    def _loaded(self, result: list[tuple[str, list[str], list[tuple[str, str | None]]]]) -> list[str]:
        out: list[str] = []
        for image_id, tags, moved in result:
            for tag, old in moved:
                if old is not None and old != image_id:
                    self.events.emit("image", "untag", old, {"name": tag})
            self.events.emit("image", "load", image_id, {"name": tags[0] if tags else image_id})
            out.extend(tags or [image_id])
        return out

    # -- registries: pull, push, login (issue 6) -------------------------------------------------
    # The transfers run on a worker thread (sync httpx; layers in parallel on a small pool), so
    # hashing and file IO never stall the event loop; ``progress`` is called on those threads.

    @property
    def registry_options(self) -> Any:
        """The :class:`engine.registry.options.RegistryOptions` in force (Docker's defaults)."""
        opts = self.__dict__.get("_registry_options")
        if opts is None:
            from engine.registry.options import RegistryOptions

            opts = self.__dict__["_registry_options"] = RegistryOptions()
        return opts

    @registry_options.setter
    def registry_options(self, value: Any) -> None:
        self.__dict__["_registry_options"] = value

    def _transfers(self) -> Any:
        t = self.__dict__.get("_registry_transfers")
        if t is None:
            from engine.registry.pull import Transfers

            t = self.__dict__["_registry_transfers"] = Transfers(self.blobs.root)
        return t

    async def image_pull(self, reference: str, platform: str | None = None, auth: Any = None,
                         progress: Callable[[dict[str, Any]], None] | None = None,
                         cancel: Any = None) -> str:
        """``docker pull``: fetch ``reference`` (``name[:tag]`` or ``name@sha256:…``) from its
        registry (see ``engine.registry.pull``).

        Args:
            platform: ``os/arch[/variant]``, default the host's.
            auth: ``engine.registry.credentials.Credentials`` (default: ``config.json``'s).
            progress: Docker's NDJSON progress messages (called on worker threads).
            cancel: a ``threading.Event`` that aborts the transfer when set.

        Returns:
            The image id. Raises InvalidArgument, NotFound, PermissionDenied, Unavailable; on
            any error no image, tag or blob of this pull is left (partial downloads are kept
            for a resume).
        """
        import asyncio
        import functools

        from engine.registry import pull as _pull

        result = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            _pull.pull, self.image_store, self._transfers(), self.registry_options, reference, platform,
            auth, progress, cancel, self._unpacker()))
        self.events.emit("image", "pull", result.image_id, {"name": result.reference})
        return str(result.image_id)

    async def image_push(self, reference: str, auth: Any = None,
                         progress: Callable[[dict[str, Any]], None] | None = None,
                         cancel: Any = None, oci: bool = False) -> Any:
        """``docker push`` of the local tag ``reference`` (see ``engine.registry.push``).

        Returns:
            ``engine.registry.push.PushResult`` (tag, manifest digest and size, layers pushed
            and skipped). Raises NotFound (no such local tag), PermissionDenied, Unavailable…
        """
        import asyncio
        import functools

        from engine.registry import push as _push

        result = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            _push.push, self.image_store, self.registry_options, reference, auth, progress, cancel, oci))
        self.events.emit("image", "push", self.image_store.lookup(reference), {"name": reference})
        return result

    async def registry_login(self, server: str | None, username: str, password: str) -> dict[str, str]:
        """``docker login`` on the daemon side: check the credentials against ``server``
        (default Docker Hub). Returns ``{"Status": "Login Succeeded"}``; raises
        PermissionDenied (refused) or Unavailable (unreachable). Storing them is the client's
        business (``config.json``), as with Docker."""
        import asyncio

        from engine.registry import endpoints
        from engine.registry.credentials import Credentials
        from engine.registry.session import Session

        ep = endpoints.endpoint(server or endpoints.HUB_AUTH_KEY, self.registry_options)

        def check() -> None:
            with Session(ep, self.registry_options, Credentials(username, password)) as s:
                s.login()

        await asyncio.get_running_loop().run_in_executor(None, check)
        return {"Status": "Login Succeeded"}
