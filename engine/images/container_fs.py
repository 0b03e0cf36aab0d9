"""Verbs between a container's filesystem and images: commit, diff, export, cp (archive
endpoints), plus ``system df`` / ``system prune``. Bound to the Engine in ``engine/engine.py``.

* commit: the write layer comes from ``Snapshots.diff`` (an OCI layer tar, whiteouts included),
  is spooled under the state root, and becomes the top layer of a new image whose config is the
  parent image's plus the container's own settings, then ``--change`` lines;
* diff and export read the image layers straight from the blob store and the write layer from
  ``Snapshots.diff`` (see :mod:`engine.images.flatten`): no mount, same result on every backend;
* cp uses the proposed ``PathOps`` kernel role (``engine/kernel_fs.py``): inside the running
  container's mounted root, or a temporary mount of a stopped container's snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from engine import refs
from engine.containers.lifecycle import DEFAULT_PATH
from engine.containers.logfile import logs_size
from engine.errors import (
    Conflict,
    EngineError,
    InvalidArgument,
    NotFound,
    NotImplemented_,
    from_os_error,
)
from engine.images import flatten
from engine.images.config import format_time, parse_time
from engine.images.tarscan import TarError
from engine.kernel_fs import PathOps, PathStat
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.record import Container
    from engine.engine import Engine

T = TypeVar("T")
NS = 1_000_000_000


def tmp_dir(eng: Engine) -> str:
    path = os.path.join(eng.ctx.root, "tmp")
    os.makedirs(path, exist_ok=True)
    return path


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


async def _diff(eng: Engine, c: Container, what: str) -> IO[bytes]:
    """The container's write layer as a tar in an anonymous temp file (position 0)."""
    spool = tempfile.TemporaryFile(dir=tmp_dir(eng))
    try:
        await eng.kernel.diff(c.snapshot, spool)
    except OSError as e:
        spool.close()
        raise from_os_error(f"cannot {what} container {c.id[:12]}: read the write layer", e) from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


# -- commit ------------------------------------------------------------------------------------

def commit_config(c: Container, image_cfg: dict[str, Any]) -> dict[str, Any]:
    """The runtime config a commit records: the image's, overridden by what the container was
    created with (as moby's ``merge(containerConfig, imageConfig)``)."""
    cfg = dict(image_cfg)
    s = c.spec
    if s.entrypoint is not None:
        cfg["Entrypoint"] = list(s.entrypoint) or None
        cfg["Cmd"] = list(s.cmd or ()) or None
    elif s.cmd is not None:
        cfg["Cmd"] = list(s.cmd)
    env: dict[str, str] = {}
    for item in [*(image_cfg.get("Env") or ()), *s.env]:
        env[item.partition("=")[0]] = item
    if "PATH" not in env:
        env = {"PATH": f"PATH={DEFAULT_PATH}", **env}
    cfg["Env"] = list(env.values())
    if s.workdir:
        cfg["WorkingDir"] = s.workdir
    if s.user:
        cfg["User"] = s.user
    if c.labels:
        cfg["Labels"] = dict(c.labels)
    if s.stop_signal:
        cfg["StopSignal"] = s.stop_signal
    if s.exposed_ports:
        ports = dict(cfg.get("ExposedPorts") or {})
        ports.update({p if "/" in p else f"{p}/tcp": {} for p in s.exposed_ports})
        cfg["ExposedPorts"] = ports
    if s.healthcheck is not None and s.healthcheck.test:
        hc = s.healthcheck
        cfg["Healthcheck"] = {k: v for k, v in (
            ("Test", list(hc.test)), ("Interval", int(hc.interval * NS)),
            ("Timeout", int(hc.timeout * NS)), ("StartPeriod", int(hc.start_period * NS)),
            ("StartInterval", int(hc.start_interval * NS)), ("Retries", hc.retries)) if v}
    return {k: v for k, v in cfg.items() if v is not None}


async def commit(eng: Engine, ref: str, reference: str | None, changes: tuple[str, ...] | list[str],
                 comment: str, author: str, pause: bool) -> str:
    c = eng.containers.get(ref)
    if reference:
        target = refs.parse(reference)
        if target.digest is not None:
            raise InvalidArgument(f"cannot commit to {reference}: a tag cannot contain a digest")
    image_cfg = dict(eng.image_store.config(c.image_id).get("config") or {}) \
        if eng.meta.get_image(c.image_id) else None
    if image_cfg is None:
        raise Conflict(f"cannot commit container {c.id[:12]}: its image {c.image_id[:19]} was removed")
    paused_here = False
    if pause and c.state.status is Status.RUNNING:
        await eng.containers.pause(c.id)
        paused_here = True
    try:
        layer = await _diff(eng, c, "commit")
    finally:
        if paused_here:
            with contextlib.suppress(Conflict):  # it may have been killed meanwhile
                await eng.containers.unpause(c.id)
    with layer:
        cfg = commit_config(c, image_cfg)
        image_id: str = await _in_thread(functools.partial(
            eng.image_store.commit, cast(BinaryIO, layer), c.image_id, cfg, reference=reference,
            changes=list(changes), author=author, comment=comment,
            created_by=" ".join(c.argv)))
    eng.containers.emit(c, "commit", comment=comment, imageID=image_id)
    if reference:
        eng.events.emit("image", "tag", image_id, {"name": reference})
    return image_id


# -- diff and export ---------------------------------------------------------------------------

def _open_layers(eng: Engine, image_id: str) -> list[BinaryIO]:
    if eng.meta.get_image(image_id) is None:
        raise Conflict(f"the image {image_id[:19]} of the container was removed")
    files: list[BinaryIO] = []
    try:
        for _chain, _diff_id, blob in eng.image_store.layer_chain(image_id):
            files.append(eng.image_store.open_layer(blob, seekable=True))
    except BaseException:
        for f in files:
            f.close()
        raise
    return files


async def diff(eng: Engine, ref: str) -> list[tuple[str, str]]:
    c = eng.containers.get(ref)
    layer = await _diff(eng, c, "diff")
    files = _open_layers(eng, c.image_id)
    try:
        def work() -> list[tuple[str, str]]:
            lower = flatten.merged(files)
            return flatten.changes(lower, cast(BinaryIO, layer))

        return await _in_thread(work)
    except TarError as e:
        raise InvalidArgument(f"cannot diff container {c.id[:12]}: {e}") from None
    finally:
        layer.close()
        for f in files:
            f.close()


async def export(eng: Engine, ref: str, out: BinaryIO | IO[bytes]) -> None:
    c = eng.containers.get(ref)
    layer = await _diff(eng, c, "export")
    files = _open_layers(eng, c.image_id) + [cast(BinaryIO, layer)]
    try:
        def work() -> None:
            m = flatten.merged(files)
            flatten.export(m, files, out)

        await _in_thread(work)
    except TarError as e:
        raise InvalidArgument(f"cannot export container {c.id[:12]}: {e}") from None
    finally:
        for f in files:
            f.close()
    eng.containers.emit(c, "export")


# -- cp: the archive endpoints -----------------------------------------------------------------

def _path_ops(eng: Engine) -> PathOps:
    k = eng.kernel
    if not isinstance(k, PathOps):
        raise NotImplemented_("copying files to or from containers is not supported by the "
                              f"{k.info().backend} backend yet")
    return k


@contextlib.asynccontextmanager
async def _view(eng: Engine, c: Container) -> AsyncIterator[str]:
    """The host path where ``c``'s filesystem is mounted (temporarily, if it is not running)."""
    rt = eng.containers.rt(c.id)
    async with rt.lock:
        if c.state.status in (Status.RUNNING, Status.PAUSED, Status.RESTARTING) and c.state.pid:
            yield eng.ctx.rootfs_target(c.id)
            return
        target = os.path.join(eng.ctx.exec_root, "cp", uuid.uuid4().hex)
        try:
            await eng.kernel.mount(c.snapshot, target)
        except OSError as e:
            raise from_os_error(f"cannot mount container {c.id[:12]}", e) from None
        try:
            yield target
        finally:
            with contextlib.suppress(OSError):
                await eng.kernel.unmount(target)
            with contextlib.suppress(OSError):
                os.rmdir(target)


def _check_path(path: str) -> str:
    if not path or not path.startswith("/"):
        raise InvalidArgument(f"invalid path {path!r}: must be absolute inside the container")
    if "\0" in path:
        raise InvalidArgument("invalid path: contains a NUL byte")
    return path


def _path_error(c: Container, path: str, e: OSError, what: str) -> EngineError:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"Could not find the file {path} in container {c.name}")
    if e.errno in (errno.EEXIST, errno.EISDIR, errno.EINVAL, errno.ELOOP):
        return InvalidArgument(f"cannot {what} {path} in container {c.name}: "
                               f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}")
    if e.errno == errno.EROFS:
        return InvalidArgument(f"cannot {what} {path}: the container's root filesystem is read-only")
    return from_os_error(f"cannot {what} {path} in container {c.name}", e)


def stat_dict(st: PathStat) -> dict[str, Any]:
    """Engine form of ``X-Docker-Container-Path-Stat`` (``wire`` maps ``mode`` with
    :func:`go_file_mode`)."""
    return {"name": st.name, "size": st.size, "mode": st.mode, "kind": st.kind,
            "mtime": format_time(st.mtime), "link_target": st.link_target}


_GO_MODE = {"dir": 1 << 31, "symlink": 1 << 27, "block": 1 << 26, "char": (1 << 26) | (1 << 21),
            "fifo": 1 << 25, "file": 0}


def go_file_mode(kind: str, perm: int) -> int:
    """Go's ``os.FileMode`` bits, as Docker puts them in the path-stat header."""
    mode = _GO_MODE.get(kind, 0) | (perm & 0o777)
    if perm & 0o4000:
        mode |= 1 << 23
    if perm & 0o2000:
        mode |= 1 << 22
    if perm & 0o1000:
        mode |= 1 << 20
    return mode


async def archive_stat(eng: Engine, ref: str, path: str) -> dict[str, Any]:
    c = eng.containers.get(ref)
    ops = _path_ops(eng)
    _check_path(path)
    async with _view(eng, c) as target:
        try:
            return stat_dict(await ops.path_stat(target, path))
        except OSError as e:
            raise _path_error(c, path, e, "stat") from None


async def archive_get(eng: Engine, ref: str, path: str) -> tuple[dict[str, Any], IO[bytes]]:
    c = eng.containers.get(ref)
    ops = _path_ops(eng)
    _check_path(path)
    spool = tempfile.TemporaryFile(dir=tmp_dir(eng))
    try:
        async with _view(eng, c) as target:
            try:
                st = await ops.archive(target, path, spool)
            except OSError as e:
                raise _path_error(c, path, e, "read") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    eng.containers.emit(c, "archive-path")
    return stat_dict(st), spool


async def archive_put(eng: Engine, ref: str, path: str, tar: BinaryIO | IO[bytes],
                      no_overwrite_dir_non_dir: bool = False) -> None:
    c = eng.containers.get(ref)
    ops = _path_ops(eng)
    _check_path(path)
    if c.spec.read_only:
        raise InvalidArgument(f"cannot copy to {path}: container {c.name} has a read-only root "
                              "filesystem")
    async with _view(eng, c) as target:
        try:
            st = await ops.path_stat(target, path.rstrip("/") + "/." if path != "/" else "/.")
            if st.kind != "dir":
                raise InvalidArgument(f"extraction point is not a directory: {path}")
            await ops.extract(target, path, tar, no_overwrite_dir_non_dir)  # type: ignore[arg-type]
        except NotADirectoryError as e:
            if e.filename in (path, path.rstrip("/")):
                raise _path_error(c, path, e, "extract to") from None
            raise InvalidArgument(f"cannot extract to {path} in container {c.name}: a parent of "
                                  f"{e.filename} is not a directory") from None
        except OSError as e:
            raise _path_error(c, path, e, "extract to") from None
    eng.containers.emit(c, "extract-to-dir")


# -- history, df, prune --------------------------------------------------------------------

def history(eng: Engine, ref: str) -> list[dict[str, Any]]:
    """``docker history``: newest first; ``id`` is the image id on the top entry and
    ``<missing>`` below (as Docker shows for images it did not build), ``size`` the bytes of
    the layer each non-empty entry made."""
    rec = eng.image_store.inspect(ref)
    sizes = [lr.size for lr in eng.meta.image_layers(rec.id)]
    out: list[dict[str, Any]] = []
    layer = 0
    for h in rec.history:
        size = 0
        if not h.get("empty_layer"):
            size = sizes[layer] if layer < len(sizes) else 0
            layer += 1
        try:
            created = int(parse_time(h["created"])) if h.get("created") else 0
        except InvalidArgument:
            created = 0
        out.append({"id": "<missing>", "created": created, "created_by": h.get("created_by", ""),
                    "tags": [], "size": size, "comment": h.get("comment", "")})
    out.reverse()
    if out:
        out[0]["id"], out[0]["tags"] = rec.id, list(rec.repo_tags)
    return out


async def system_df(eng: Engine) -> dict[str, Any]:
    images = eng.image_store.list(all=True)
    layer_users: dict[str, int] = {}
    layer_size: dict[str, int] = {}
    per_image: dict[str, list[str]] = {}
    for img in images:
        rows = eng.meta.image_layers(img.id)
        per_image[img.id] = [lr.chain_id for lr in rows]
        for lr in rows:
            layer_users[lr.chain_id] = layer_users.get(lr.chain_id, 0) + 1
            layer_size[lr.chain_id] = lr.size
    containers = eng.containers.all()
    out_images = []
    for img in images:
        shared = sum(layer_size[ch] for ch in per_image[img.id] if layer_users[ch] > 1)
        out_images.append({"id": img.id, "repo_tags": list(img.repo_tags),
                           "repo_digests": list(img.repo_digests), "created": img.created,
                           "size": img.size, "shared_size": shared, "labels": img.labels,
                           "containers": sum(c.image_id == img.id for c in containers)})
    out_containers = []
    logs_total = 0
    for c in containers:
        try:
            size_rw = (await eng.kernel.stat(c.snapshot)).size
        except OSError:
            size_rw = 0
        logs = logs_size(c.log_path)
        logs_total += logs
        base = next((i.size for i in images if i.id == c.image_id), 0)
        out_containers.append({"id": c.id, "names": [c.name], "image": c.image_ref,
                               "image_id": c.image_id, "command": " ".join(c.argv),
                               "created": c.created, "status": str(c.state.status),
                               "size_rw": size_rw, "size_root_fs": base + size_rw,
                               "logs_size": logs, "labels": dict(c.labels)})
    return {"layers_size": sum(layer_size.values()), "images": out_images,
            "containers": out_containers, "volumes": [], "build_cache": [],
            "logs_size": logs_total}


async def system_prune(eng: Engine, all: bool = False) -> dict[str, Any]:
    deleted: list[str] = []
    reclaimed = 0
    for c in list(eng.containers.all()):
        if c.state.status in (Status.EXITED, Status.CREATED, Status.DEAD):
            try:
                size = (await eng.kernel.stat(c.snapshot)).size
            except OSError:
                size = 0
            try:
                await eng.container_remove(c.id)
            except (Conflict, NotFound):
                continue
            deleted.append(c.id)
            reclaimed += size
    images = eng.image_prune(all=all)
    await eng.forget_image_snapshots()
    return {"containers_deleted": deleted, "images_deleted": images["ImagesDeleted"],
            "space_reclaimed": reclaimed + int(images["SpaceReclaimed"])}
