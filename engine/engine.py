"""The Engine facade: every verb the API and CLI offer, bound to a kernel and the stores.

Built by ``engine.bootstrap.make_engine`` (the one place a backend is chosen). Call
``await engine.start()`` before use (it reconciles containers with the kernel: live-restore)
and ``await engine.close()`` at the end (containers keep running).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import AsyncIterator, Mapping
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
from engine.engine_images import ImageVerbs
from engine.events import Event, check_filters
from engine.images.store import ImageStore
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


class Engine(ImageVerbs):
    """The engine facade. The image verbs (store, save/load, pull/push/login) are
    :class:`engine.engine_images.ImageVerbs`'; the container verbs delegate to
    ``ContainerService`` (``engine.containers``) and ``engine.images.container_fs``."""

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

    # -- commit, diff, export, cp, history, df, prune (issue 5) ---------------------------------
    # The filesystem work runs on worker threads (see ``engine.images.container_fs``).

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



def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m or "amd64")
