"""The Engine facade: every verb the API and CLI offer, bound to a kernel and the stores.

Built by ``engine.bootstrap.make_engine`` (the one place a backend is chosen). Call
``await engine.start()`` before use (it reconciles containers with the kernel: live-restore)
and ``await engine.close()`` at the end (containers keep running).
"""

from __future__ import annotations

import contextlib
import io
import platform
from collections.abc import AsyncIterator, Callable, Mapping
from typing import IO, Any, BinaryIO

from engine import __version__
from engine.containers import attach
from engine.containers.attach import Attachment
from engine.containers.exec import ExecRecord, ExecResult
from engine.containers.logfile import LogEntry, logs_size
from engine.containers.query import Stats, TopResult
from engine.containers.record import Container
from engine.containers.service import ContainerService
from engine.containers.spec import ContainerSpec, RestartPolicy
from engine.context import Context
from engine.events import Event, check_filters
from engine.images.store import ImageRecord, ImageStore
from engine.kernel import Resources
from engine.model import Status
from engine.store import fsck
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore

API_VERSION = "1.47"
MIN_API_VERSION = "1.40"


class _ImageSource:
    """Adapts the image store to what containers need (see ``ContainerService.ImageSource``)."""

    def __init__(self, images: ImageStore, blobs: BlobStore) -> None:
        self._images = images
        self._blobs = blobs

    def resolve(self, ref: str) -> str:
        return self._images.lookup(ref)

    def config(self, image_id: str) -> dict[str, Any]:
        return self._images.config(image_id)  # (inspect would also build tags, digests, chain ids)

    def layer_chain(self, image_id: str) -> list[tuple[str, str, str]]:
        return self._images.layer_chain(image_id)

    def open_layer(self, blob_digest: str) -> BinaryIO:
        return self._images.open_layer(blob_digest)  # type: ignore[no-any-return]


class _ContainerMeta:
    """Adapts the metadata store's container rows to plain documents."""

    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta

    def put_container(self, id: str, name: str, image_id: str, doc: dict[str, Any],
                      durable: bool = True) -> None:
        self._meta.put_container(id, name, image_id, doc, durable=durable)

    def delete_container(self, id: str, durable: bool = True) -> None:
        self._meta.delete_container(id, durable=durable)

    def list_container_docs(self) -> list[dict[str, Any]]:
        return [row.doc for row in self._meta.list_containers()]


class Engine:
    def __init__(self, ctx: Context, meta: MetaStore, blobs: BlobStore) -> None:
        self.ctx = ctx
        self.kernel = ctx.kernel
        self.meta = meta
        self.blobs = blobs
        self.events = ctx.events
        self.image_store = ImageStore(meta, blobs, clock=ctx.wall)
        self.containers = ContainerService(ctx, _ImageSource(self.image_store, blobs), _ContainerMeta(meta))
        self._started = False
        self.closed = False

    async def start(self) -> None:
        """Collect garbage a crash may have left, then reconcile containers (live-restore)."""
        if not self._started:
            self._started = True
            self.image_store.gc()
            for snap in await self.kernel.list():  # staged layers of a load/pull a crash cut
                if snap.key.startswith("staging-"):
                    with contextlib.suppress(OSError):
                        await self.kernel.remove(snap.key)
            await self.containers.restore()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.containers.shutdown()
        self.meta.close()
        await self.kernel.close()  # containers keep running (live-restore)

    # -- system -----------------------------------------------------------------------------

    def version(self) -> dict[str, str]:
        info = self.kernel.info()
        return {"version": __version__, "api_version": API_VERSION, "min_api_version": MIN_API_VERSION,
                "os": "linux", "arch": _arch(), "kernel_version": info.kernel_version,
                "backend": info.backend, "python": platform.python_version()}

    def info(self) -> dict[str, Any]:
        k = self.kernel.info()
        cs = self.containers.all()
        return {
            "containers": len(cs),
            "running": sum(c.state.status is Status.RUNNING for c in cs),
            "paused": sum(c.state.status is Status.PAUSED for c in cs),
            "stopped": sum(c.state.status not in (Status.RUNNING, Status.PAUSED) for c in cs),
            "images": len(self.image_store.list(all=True)),
            "backend": k.backend, "os": k.os, "kernel_version": k.kernel_version,
            "cgroup_version": k.cgroup_version, "cpus": k.cpus, "memory": k.memory,
            "root": self.ctx.root, "exec_root": self.ctx.exec_root, "arch": _arch(),
            "version": __version__,
        }

    def check(self) -> fsck.Report:
        """Consistency check of the stores (dangling references and orphans)."""
        return fsck.check(self.meta, self.blobs, None)

    async def events_stream(self, filters: Mapping[str, list[str]] | None = None, since: float | None = None,
                            until: float | None = None) -> AsyncIterator[Event]:
        check_filters(filters or {})
        async for ev in self.events.stream(filters, since, until):
            yield ev

    # -- images -----------------------------------------------------------------------------

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

    # -- containers -------------------------------------------------------------------------

    async def container_create(self, spec: ContainerSpec, name: str | None = None) -> Container:
        return await self.containers.create(spec, name)

    async def container_start(self, ref: str) -> bool:
        return await self.containers.start(ref)

    async def container_stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        return await self.containers.stop(ref, timeout, signal)

    async def container_kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        await self.containers.kill(ref, signal)

    async def container_restart(self, ref: str, timeout: int | None = None) -> None:
        await self.containers.restart(ref, timeout)

    async def container_pause(self, ref: str) -> None:
        await self.containers.pause(ref)

    async def container_unpause(self, ref: str) -> None:
        await self.containers.unpause(ref)

    async def container_wait(self, ref: str, condition: str = "not-running") -> int:
        return await self.containers.wait(ref, condition)

    async def container_remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        await self.containers.remove(ref, force, volumes)

    def container_rename(self, ref: str, new_name: str) -> None:
        self.containers.rename(ref, new_name)

    async def container_update(self, ref: str, resources: Resources | None = None,
                               restart_policy: RestartPolicy | None = None) -> list[str]:
        return await self.containers.update(ref, resources, restart_policy)

    def container_inspect(self, ref: str) -> Container:
        return self.containers.get(ref)

    def container_list(self, all: bool = False, filters: Mapping[str, list[str]] | None = None,
                       limit: int = -1) -> list[Container]:
        return self.containers.list(all, filters, limit)

    def container_logs(self, ref: str, **kw: Any) -> AsyncIterator[LogEntry]:
        return self.containers.logs(ref, **kw)

    def container_logs_size(self, ref: str) -> int:
        return logs_size(self.containers.get(ref).log_path)

    async def container_top(self, ref: str) -> TopResult:
        return await self.containers.top(ref)

    async def container_stats(self, ref: str) -> Stats:
        return await self.containers.stats(ref)

    def exec_create(self, ref: str, argv: list[str], **kw: Any) -> ExecRecord:
        return self.containers.exec_create(ref, argv, **kw)

    async def exec_start(self, exec_id: str) -> ExecRecord:
        return await self.containers.exec_start(exec_id)

    def exec_inspect(self, exec_id: str) -> ExecRecord:
        return self.containers.exec_get(exec_id)

    async def exec_wait(self, exec_id: str) -> int:
        return await self.containers.exec_wait(exec_id)

    async def exec_run(self, ref: str, argv: list[str], **kw: Any) -> ExecResult:
        return await self.containers.exec_run(ref, argv, **kw)

    async def run(self, spec: ContainerSpec, name: str | None = None) -> tuple[Container, int]:
        """create + start + wait: the engine half of ``docker run`` (attached)."""
        c = await self.container_create(spec, name)
        await self.container_start(c.id)
        code = await self.container_wait(c.id, "next-exit" if c.state.status is Status.RUNNING else "not-running")
        return c, code

    # -- attach (added for the API: hijacked attach/exec streams, tty resize) -----------------

    def container_attach(self, ref: str, stdout: bool = True, stderr: bool = True, logs: bool = False,
                         stdin_once: bool = False) -> Attachment:
        """Attach to a container's current or next run (see ``engine.containers.attach``)."""
        return attach.attach(self.containers, ref, stdout, stderr, logs, stdin_once)

    def exec_attach(self, exec_id: str) -> Attachment:
        """Attach to an exec process just started with ``exec_start``."""
        return attach.exec_attach(self.containers, exec_id)

    async def container_resize(self, ref: str, rows: int, cols: int) -> None:
        await attach.resize(self.containers, ref, rows, cols)

    async def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        await attach.exec_resize(self.containers, exec_id, rows, cols)

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

    # -- images: save/load, commit, diff, export, cp, history, df (issue 5) --------------------
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

    def image_history(self, ref: str) -> list[dict[str, Any]]:
        """``docker history``: ``[{"id", "created", "created_by", "tags", "size", "comment"}]``
        newest first (``id`` is ``<missing>`` below the top, as Docker shows)."""
        from engine.images import container_fs

        return container_fs.history(self, ref)

    async def container_commit(self, ref: str, reference: str | None = None,
                               changes: list[str] | tuple[str, ...] = (), comment: str = "",
                               author: str = "", pause: bool = True) -> str:
        """``docker commit``: the container's write layer (whiteouts for deletions) on top of its
        image, config = image config + the container's settings + ``changes``; a running
        container is paused meanwhile unless ``pause=False``. Returns the new image id.

        Raises NotFound (container), Conflict (its image was removed), InvalidArgument.
        """
        from engine.images import container_fs

        return await container_fs.commit(self, ref, reference, changes, comment, author, pause)

    async def container_diff(self, ref: str) -> list[tuple[str, str]]:
        """``docker diff``: ``[(kind, path)]`` sorted by path; kind ``"C"`` changed, ``"A"``
        added, ``"D"`` deleted (the API's Kind 0, 1, 2)."""
        from engine.images import container_fs

        return await container_fs.diff(self, ref)

    async def container_export(self, ref: str, out: BinaryIO | IO[bytes]) -> None:
        """``docker export``: the container's merged filesystem (image layers + write layer,
        whiteouts applied, no mounts) as one plain tar, written to the blocking writer ``out``
        from a worker thread."""
        from engine.images import container_fs

        await container_fs.export(self, ref, out)

    async def container_archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        """``HEAD /containers/{id}/archive``: ``{"name", "size", "mode", "kind", "mtime",
        "link_target"}`` of ``path`` (``mode`` is permission bits; the wire form is
        ``engine.images.container_fs.go_file_mode(kind, mode)``). Raises NotFound."""
        from engine.images import container_fs

        return await container_fs.archive_stat(self, ref, path)

    async def container_archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], IO[bytes]]:
        """``GET /containers/{id}/archive``: the stat of ``path`` and a tar of it (an open,
        spooled temp file at position 0; the caller closes it). Symlinks resolve inside the
        container's root. Raises NotFound, NotImplemented_ (backend without file access)."""
        from engine.images import container_fs

        return await container_fs.archive_get(self, ref, path)

    async def container_archive_put(self, ref: str, path: str, tar_stream: BinaryIO | IO[bytes],
                                    no_overwrite_dir_non_dir: bool = False) -> None:
        """``PUT /containers/{id}/archive``: unpack the tar ``tar_stream`` into the directory
        ``path`` inside the container (entries cannot escape its root). Raises NotFound,
        InvalidArgument (not a directory, hostile entry, read-only rootfs)."""
        from engine.images import container_fs

        await container_fs.archive_put(self, ref, path, tar_stream, no_overwrite_dir_non_dir)

    async def system_df(self) -> dict[str, Any]:
        """``docker system df``: ``{"layers_size", "images", "containers", "volumes",
        "build_cache", "logs_size"}``; each container has ``size_rw`` (its write layer) and
        ``logs_size`` (its log files, rotated ones included)."""
        from engine.images import container_fs

        return await container_fs.system_df(self)

    async def system_prune(self, all: bool = False) -> dict[str, Any]:
        """``docker system prune``: stopped containers, then dangling (``all``: unused) images.
        Returns ``{"containers_deleted", "images_deleted", "space_reclaimed"}``."""
        from engine.images import container_fs

        return await container_fs.system_prune(self, all)

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


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m or "amd64")
