"""Container lifecycle verbs: create, start, stop, kill, restart, pause, unpause, wait, remove.

Every verb that touches the kernel translates ``OSError`` at the call site into an
``EngineError`` naming the container and the step, and undoes what it had done so far, so a
failed start leaves the container ``created`` (or ``exited``) with nothing leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
from typing import TYPE_CHECKING

from engine.containers import names
from engine.containers.record import Container, HealthState, State
from engine.containers.spec import ContainerSpec, normalize_resources, parse_signal, validate_name
from engine.errors import AlreadyExists, Conflict, EngineError, InvalidArgument, NotFound, from_os_error
from engine.kernel import LogSpec, SpawnSpec, StdioSpec
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_TIMEOUT = 10
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET_AFTER = 0.1, 60.0, 10.0


def merge_env(*layers: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Later layers override earlier ones by key, keeping first-seen order."""
    out: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key = item.split("=", 1)[0]
            out[key] = item
    return tuple(out.values())


class LifecycleMixin:
    # -- create -----------------------------------------------------------------------------

    async def create(self: ContainerService, spec: ContainerSpec, name: str | None = None) -> Container:
        """Create a container from ``spec`` (image config fills the gaps).

        Raises:
            NotFound: the image does not exist.
            AlreadyExists: the name is taken.
            InvalidArgument: bad name, no command, bad stop signal.
        """
        if name:
            name = validate_name(name)
            for other in self._all.values():
                if other.name == name:
                    raise AlreadyExists(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{other.id}". You have to remove (or rename) that container to be able to reuse that name.')
        spec = dataclasses.replace(spec, resources=normalize_resources(spec.resources))
        image_id = self.images.resolve(spec.image)
        cfg = (self.images.config(image_id).get("config") or {})
        if spec.entrypoint is not None:
            entrypoint, cmd = list(spec.entrypoint), list(spec.cmd or ())
        else:
            entrypoint = list(cfg.get("Entrypoint") or ())
            cmd = list(spec.cmd) if spec.cmd is not None else list(cfg.get("Cmd") or ())
        argv = entrypoint + cmd
        if not argv or not argv[0]:
            raise InvalidArgument("no command specified")
        cid = self.ctx.new_id()
        hostname = spec.hostname or cid[:12]
        env = merge_env([f"PATH={DEFAULT_PATH}"], cfg.get("Env") or (), [f"HOSTNAME={hostname}"],
                        ["TERM=xterm"] if spec.tty else [], spec.env)
        stop_signal = parse_signal(spec.stop_signal or cfg.get("StopSignal") or "SIGTERM")
        if spec.stop_timeout is not None and spec.stop_timeout < -1:
            raise InvalidArgument(f"invalid stop timeout {spec.stop_timeout}")
        from engine.containers.spec import Healthcheck

        hc = spec.healthcheck if spec.healthcheck and spec.healthcheck.test else \
            Healthcheck.from_image(cfg.get("Healthcheck"))
        if hc is not None and hc.argv() is None:
            hc = None
        if spec.healthcheck is not None and spec.healthcheck.test[:1] == ("NONE",):
            hc = None
        labels = {**(cfg.get("Labels") or {}), **spec.labels}
        name = name or names.random_name(self.ctx.rng, {c.name for c in self._all.values()})
        parent = await self._ensure_layers(image_id)
        try:
            await self.kernel.prepare(cid, parent)
        except OSError as e:
            raise from_os_error(f"cannot create container {name}: prepare write layer", e) from None
        self.ctx.crash_point("create:after-prepare")
        c = Container(
            id=cid, name=name, created=self.ctx.wall(), image_id=image_id, image_ref=spec.image,
            spec=spec, path=argv[0], args=tuple(argv[1:]), env=env,
            workdir=spec.workdir or cfg.get("WorkingDir") or "/", user=spec.user or cfg.get("User") or "",
            hostname=hostname, stop_signal=stop_signal,
            stop_timeout=DEFAULT_STOP_TIMEOUT if spec.stop_timeout is None else spec.stop_timeout,
            healthcheck=hc, labels=labels, snapshot=cid, parent_snapshot=parent,
            log_path=os.path.join(self.ctx.container_dir(cid), f"{cid}-json.log"),
        )
        try:
            self.save(c)
        except BaseException:
            with contextlib.suppress(OSError):
                await self.kernel.remove(cid)
            raise
        self.emit(c, "create")
        return c

    async def _ensure_layers(self: ContainerService, image_id: str) -> str | None:
        """Unpack the image's layers into committed snapshots (once); return the top key."""
        parent: str | None = None
        async with self._snapshot_lock:
            for chain_id, _diff_id, digest in self.images.layer_chain(image_id):
                try:  # one stat per layer, not a list(): that sizes every container's write layer
                    await self.kernel.stat(chain_id)
                except FileNotFoundError:
                    with self.images.open_layer(digest) as fh:
                        try:
                            await self.kernel.apply_layer(chain_id, parent, fh)
                        except OSError as e:
                            raise from_os_error(f"cannot unpack layer {chain_id[:19]} of image {image_id[:19]}", e) from None
                parent = chain_id
        return parent

    # -- start ------------------------------------------------------------------------------

    async def start(self: ContainerService, ref: str) -> bool:
        """Start a created or exited container. Returns False if it was already running.

        Raises:
            Conflict: the container is paused or being removed.
            InvalidArgument/NotFound/...: the process could not be started (the container keeps
                its previous status and ``State.Error`` says why).
        """
        c = self.get(ref)
        rt = self.rt(c.id)
        async with rt.lock:
            if c.state.status in (Status.RUNNING,):
                return False
            if c.state.status is Status.PAUSED:
                raise Conflict(f"cannot start a paused container {c.id[:12]}, try unpause instead")
            if c.state.status is Status.RESTARTING and rt.restart_task is not None:
                rt.restart_task.cancel()
                rt.restart_task = None
            if c.state.status is Status.REMOVING:
                raise Conflict(f"container {c.id[:12]} is marked for removal and cannot be started")
            c.state.manually_stopped = False
            await self._start_locked(c)
            return True

    async def _start_locked(self: ContainerService, c: Container) -> None:
        k = self.kernel
        target = self.ctx.rootfs_target(c.id)
        cgroup = self.ctx.cgroup_path(c.id)
        undo: list[tuple[str, object]] = []

        async def make_cgroup() -> None:
            try:
                await k.cgroup_create(cgroup, c.spec.resources)
            except FileExistsError:  # left by a crash: reuse after emptying
                await k.cgroup_kill(cgroup)
                await k.cgroup_update(cgroup, c.spec.resources)

        try:
            # the rootfs and the cgroup are independent: made side by side
            # an auto-removed container's writes are discarded at its exit: its rootfs need not
            # be synced to disk, not even at unmount (which otherwise flushes the whole disk)
            mounted, made = await asyncio.gather(
                k.mount(c.snapshot, target, volatile=c.spec.auto_remove), make_cgroup(),
                return_exceptions=True)
            if not isinstance(mounted, BaseException):
                undo.append(("unmount", target))
            if not isinstance(made, BaseException):
                undo.append(("cgroup", cgroup))
            for failed, what in ((mounted, "mount rootfs"), (made, "create cgroup")):
                if isinstance(failed, OSError):
                    raise from_os_error(f"cannot start container {c.id[:12]}: {what}", failed) from None
                if isinstance(failed, BaseException):
                    raise failed
            spec = self._spawn_spec(c, target, cgroup)
            try:
                pid = await k.spawn(spec)
            except OSError as e:
                c.state.exit_code, msg = _exec_failure(c, e)
                c.state.error = msg
                self.save(c)
                err = InvalidArgument(msg) if e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC,
                                                          errno.EINVAL, errno.EPERM) \
                    else from_os_error(f"cannot start container {c.id[:12]}", e)
                raise err from None
        except BaseException:
            await self._undo(undo)
            raise
        st = c.state
        st.status, st.pid, st.error, st.exit_code = Status.RUNNING, pid, "", 0
        st.oom_killed, st.started_at, st.finished_at = False, self.ctx.wall(), 0.0
        st.health = HealthState() if c.healthcheck else None
        self.save(c, runtime=True)
        self.emit(c, "start")
        rt = self.rt(c.id)
        rt.watcher = asyncio.get_running_loop().create_task(self._watch(c, pid))
        if c.healthcheck:
            rt.health_task = asyncio.get_running_loop().create_task(self._health_loop(c, pid))
        await self.notify(c)

    def _spawn_spec(self: ContainerService, c: Container, target: str, cgroup: str) -> SpawnSpec:
        s = c.spec
        from engine.kernel import MountSpec

        mounts = tuple(s.mounts) + tuple(MountSpec("tmpfs", path, options=tuple(o for o in opts.split(",") if o))
                                         for path, opts in s.tmpfs.items())
        caps_unconfined = "seccomp=unconfined" in s.security_opt or "seccomp:unconfined" in s.security_opt
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        return SpawnSpec(
            id=c.id, argv=c.argv, rootfs=target, env=c.env, cwd=c.workdir, user=c.user,
            hostname=c.hostname, cgroup=cgroup,
            stdio=StdioSpec(log=LogSpec(c.log_path, s.log_max_size, s.log_max_files),
                            stdin_open=s.open_stdin, tty=s.tty),
            mounts=mounts, readonly_rootfs=s.read_only, rlimits=s.ulimits, privileged=s.privileged,
            cap_add=s.cap_add, cap_drop=s.cap_drop,
            no_new_privileges="no-new-privileges" in s.security_opt or "no-new-privileges:true" in s.security_opt,
            seccomp_profile="unconfined" if caps_unconfined or s.privileged else None,
            etc_files=(("/etc/hostname", f"{c.hostname}\n".encode()), ("/etc/hosts", hosts.encode())),
            create_cwd=True,
        )

    async def _undo(self: ContainerService, undo: list[tuple[str, object]]) -> None:
        for kind, arg in reversed(undo):
            with contextlib.suppress(OSError):
                if kind == "unmount":
                    await self.kernel.unmount(str(arg))
                elif kind == "cgroup":
                    await self.kernel.cgroup_kill(str(arg))
                    await self.kernel.cgroup_remove(str(arg))

    # -- exit handling and restart policy ---------------------------------------------------

    async def _watch(self: ContainerService, c: Container, pid: int) -> None:
        try:
            status = await self.kernel.wait(pid)  # type: ignore[arg-type]
        except ProcessLookupError:
            status = None
        await self._on_exit(c, pid, status.exit_code if status else 255)

    async def _on_exit(self: ContainerService, c: Container, pid: int, exit_code: int) -> None:
        rt = self.rt(c.id)
        if rt.health_task is not None:
            rt.health_task.cancel()
            rt.health_task = None
        cgroup = self.ctx.cgroup_path(c.id)
        oom = False
        with contextlib.suppress(OSError):
            oom = exit_code == 137 and (await self.kernel.cgroup_stats(cgroup)).oom_kills > 0
        removing = c.spec.auto_remove and c.spec.restart_policy.name == "no"  # (--rm forbids others)
        await self._release_kernel(c, pid, drop_snapshot=removing)
        self._end_execs(c.id)
        st = c.state
        ran_for = self.ctx.wall() - st.started_at
        st.status, st.pid, st.exit_code, st.oom_killed = Status.EXITED, 0, exit_code, oom
        st.finished_at = self.ctx.wall()
        if oom:
            self.emit(c, "oom")
        restart = self._should_restart(c)
        if restart or not c.spec.auto_remove:
            # (an auto-removed one is deleted next: a crash before that finds it "running" with
            # its sandbox ended, and restore removes it then)
            self.save(c, runtime=True)
        self.emit(c, "die", exitCode=str(exit_code))
        rt.exits += 1
        rt.watcher = None
        if restart:
            st.status = Status.RESTARTING
            self.save(c)
            delay = self._backoff(c, ran_for)
            rt.restart_task = asyncio.get_running_loop().create_task(self._restart_later(c, delay))
        elif c.spec.auto_remove:
            await self.notify(c)
            asyncio.get_running_loop().create_task(self._auto_remove(c))
            return
        await self.notify(c)

    async def _release_kernel(self: ContainerService, c: Container, pid: int,
                              drop_snapshot: bool = False) -> None:
        """Give back the kernel objects of a stopped container (cgroup, mount, process), and
        with ``drop_snapshot`` its write layer too, right after the unmount (an auto-removed
        container: ``remove`` then finds it gone). Errors are ignored: ``remove`` reports a
        write layer that could not be deleted."""
        cgroup = self.ctx.cgroup_path(c.id)

        async def cgroup_gone() -> None:
            with contextlib.suppress(OSError):
                await self.kernel.cgroup_kill(cgroup)
            with contextlib.suppress(OSError):
                await self.kernel.cgroup_remove(cgroup)

        async def unmounted() -> None:
            with contextlib.suppress(OSError):
                await self.kernel.unmount(self.ctx.rootfs_target(c.id))
            if drop_snapshot:  # (a crash from here on: restore removes the container anyway)
                with contextlib.suppress(OSError):
                    await self.kernel.remove(c.snapshot)
                    self.rt(c.id).layer_gone = True

        async def released() -> None:
            if pid:
                with contextlib.suppress(OSError):
                    await self.kernel.release(pid)  # type: ignore[arg-type]

        # independent objects: side by side (the unmount syncs the upper filesystem, ~1-10 ms)
        await asyncio.gather(cgroup_gone(), unmounted(), released())

    def _should_restart(self: ContainerService, c: Container) -> bool:
        pol = c.spec.restart_policy
        if c.state.manually_stopped or pol.name == "no" or self._rt[c.id].removed:
            return False
        if pol.name == "on-failure":
            return c.state.exit_code != 0 and (pol.max_retries == 0 or c.state.restart_count < pol.max_retries)
        return True

    def _backoff(self: ContainerService, c: Container, ran_for: float) -> float:
        # Docker: 100 ms doubling per consecutive restart, capped at 1 min; reset once a run
        # lasted 10 s or more.
        if ran_for >= BACKOFF_RESET_AFTER:
            self._backoff_next[c.id] = BACKOFF_START
        delay = self._backoff_next.get(c.id, BACKOFF_START)
        self._backoff_next[c.id] = min(delay * 2, BACKOFF_MAX)
        return delay

    async def _restart_later(self: ContainerService, c: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        rt = self.rt(c.id)
        async with rt.lock:
            rt.restart_task = None
            if c.state.status is not Status.RESTARTING:
                return
            c.state.restart_count += 1
            try:
                await self._start_locked(c)
            except EngineError as e:
                c.state.status, c.state.error = Status.EXITED, str(e)
                self.save(c)
                await self.notify(c)

    async def _auto_remove(self: ContainerService, c: Container) -> None:
        with contextlib.suppress(EngineError):
            await self.remove(c.id, force=True)

def _exec_failure(c: Container, e: OSError) -> tuple[int, str]:
    """Docker's exit code and message for a process that could not be executed."""
    what = str(e.filename or c.path)
    if e.errno == errno.ENOENT:
        if what == c.path or what.endswith("/" + c.path.lstrip("/")):
            where = "executable file not found in $PATH" if "/" not in c.path else "no such file or directory"
            return 127, f'exec: "{c.path}": {where}'
        return 127, f"{e.strerror}: {what}"
    if e.errno in (errno.EACCES, errno.EPERM):
        return 126, f'exec: "{c.path}": permission denied'
    if e.errno == errno.ENOEXEC:
        return 126, f'exec: "{c.path}": exec format error'
    return 128, f"cannot start container {c.id[:12]}: {e.strerror or e}"


__all__ = ["LifecycleMixin", "merge_env", "State", "NotFound"]
