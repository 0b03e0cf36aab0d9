"""Container verbs that act on a live container: stop, kill, restart, pause, unpause, wait,
remove, rename, update."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
from typing import TYPE_CHECKING

from engine import model
from engine.containers.spec import normalize_resources, parse_signal, validate_name
from engine.errors import AlreadyExists, Conflict, InvalidArgument, from_os_error
from engine.kernel import SIGKILL, SIGSTOP
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.record import Container
    from engine.containers.service import ContainerService


DISCARD_DELAY = 0.1  # a removed container's dir is deleted this much later (see _discard_dir)


class ControlMixin:
    # -- stop / kill / restart --------------------------------------------------------------

    async def stop(self: ContainerService, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        """Send the stop signal, wait ``timeout`` seconds (-1 = forever), then SIGKILL.

        Returns False if the container was not running (Docker's 304).
        """
        c = self.get(ref)
        rt = self.rt(c.id)
        async with rt.lock:
            c.state.manually_stopped = True
            if c.state.status is Status.RESTARTING:
                if rt.restart_task:
                    rt.restart_task.cancel()
                    rt.restart_task = None
                c.state.status = Status.EXITED
                self.save(c)
                await self.notify(c)
                return True
            if not model.is_alive(c.state.status):
                self.save(c)
                return False
            self.save(c)
            t = c.stop_timeout if timeout is None else timeout
            sig = parse_signal(signal) if signal else c.stop_signal
            exits = rt.exits
            await self._signal(c, sig)
            if not await self._wait_exit(c, exits, None if t < 0 else float(t)):
                await self._signal(c, SIGKILL)
                await self._wait_exit(c, exits, None)
        self.emit(c, "stop")
        return True

    async def _signal(self: ContainerService, c: Container, sig: int) -> None:
        self.emit(c, "kill", signal=str(sig))
        try:
            await self.kernel.signal(c.state.pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:
            return  # it exited meanwhile: the watcher reports it
        except OSError as e:
            raise from_os_error(f"cannot kill container {c.id[:12]}", e) from None
        if c.state.status is Status.PAUSED and sig == SIGKILL:
            # a frozen task cannot die until thawed (cgroup v1 freezer semantics)
            with contextlib.suppress(OSError):
                await self.kernel.cgroup_thaw(self.ctx.cgroup_path(c.id))

    async def _wait_exit(self: ContainerService, c: Container, exits_before: int, timeout: float | None) -> bool:
        rt = self.rt(c.id)

        async def exited() -> None:
            async with rt.changed:
                await rt.changed.wait_for(lambda: rt.exits > exits_before or rt.removed)

        try:
            await asyncio.wait_for(exited(), timeout)
            return True
        except TimeoutError:
            return False

    async def kill(self: ContainerService, ref: str, signal: str | int = "SIGKILL") -> None:
        """Raises Conflict "Container <id> is not running"; InvalidArgument for a bad signal."""
        sig = parse_signal(signal)
        c = self.get(ref)
        if not model.can_kill(c.state.status):
            raise Conflict(f"Container {c.id} is not running")
        if sig in (SIGKILL, c.stop_signal):
            c.state.manually_stopped = True
            self.save(c)
        await self._signal(c, sig)
        if sig == SIGSTOP:
            return

    async def restart(self: ContainerService, ref: str, timeout: int | None = None) -> None:
        c = self.get(ref)
        await self.stop(c.id, timeout)
        await self.start(c.id)
        self.emit(c, "restart")

    # -- pause ------------------------------------------------------------------------------

    async def pause(self: ContainerService, ref: str) -> None:
        c = self.get(ref)
        async with self.rt(c.id).lock:
            if c.state.status is Status.PAUSED:
                raise Conflict(f"Container {c.id} is already paused")
            if not model.can_pause(c.state.status):
                raise Conflict(f"Container {c.id} is not running")
            try:
                await self.kernel.cgroup_freeze(self.ctx.cgroup_path(c.id))
            except OSError as e:
                raise from_os_error(f"cannot pause container {c.id[:12]}", e) from None
            c.state.status = Status.PAUSED
            self.save(c)
            self.emit(c, "pause")

    async def unpause(self: ContainerService, ref: str) -> None:
        c = self.get(ref)
        async with self.rt(c.id).lock:
            if not model.can_unpause(c.state.status):
                raise Conflict(f"Container {c.id} is not paused")
            try:
                await self.kernel.cgroup_thaw(self.ctx.cgroup_path(c.id))
            except OSError as e:
                raise from_os_error(f"cannot unpause container {c.id[:12]}", e) from None
            c.state.status = Status.RUNNING
            self.save(c)
            self.emit(c, "unpause")

    # -- wait -------------------------------------------------------------------------------

    async def wait(self: ContainerService, ref: str, condition: str = "not-running") -> int:
        """Block until ``condition`` ("not-running", "next-exit", "removed"); return the exit code."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        c = self.get(ref)
        rt = self.rt(c.id)
        start_exits = rt.exits

        def done() -> bool:
            if condition == "removed":
                return rt.removed
            if condition == "next-exit":
                return rt.exits > start_exits or rt.removed
            return rt.removed or c.state.status in (Status.CREATED, Status.EXITED, Status.DEAD)

        async with rt.changed:
            await rt.changed.wait_for(done)
        return c.state.exit_code

    # -- remove / rename --------------------------------------------------------------------

    async def remove(self: ContainerService, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.get(ref)
        rt = self.rt(c.id)
        if not model.can_remove(c.state.status, force):
            state = "paused" if c.state.status is Status.PAUSED else "running"
            raise Conflict(f"cannot remove container \"/{c.name}\": container is {state}: "
                           "stop the container before removing or force remove")
        if c.state.status is Status.REMOVING:
            raise Conflict(f"removal of container {c.id[:12]} is already in progress")
        if rt.restart_task is not None:
            rt.restart_task.cancel()
            rt.restart_task = None
        if model.is_alive(c.state.status):
            c.state.manually_stopped = True
            exits = rt.exits
            await self._signal(c, SIGKILL)
            await self._wait_exit(c, exits, None)
        async with rt.lock:
            if c.id not in self._all:
                return
            c.state.status = Status.REMOVING
            try:
                if not rt.layer_gone:
                    await self.kernel.remove(c.snapshot)
            except FileNotFoundError:
                pass
            except OSError as e:
                c.state.status = Status.DEAD
                self.save(c)
                raise from_os_error(f"cannot remove container {c.id[:12]}: remove write layer", e) from None
            self.ctx.crash_point("remove:after-snapshot")
            self.meta.delete_container(c.id, durable=not self.transient(c))
            del self._all[c.id]
            self._discard_dir(c.id)
            self._backoff_next.pop(c.id, None)
            rt.removed = True
        self.emit(c, "destroy")
        await self.notify(c)

    def _discard_dir(self: ContainerService, cid: str) -> None:
        """Delete a removed container's directory (its logs) off the reply's path: renamed
        out of sight now (``.removed-<id>``), deleted by a worker thread; a crash in between
        leaves it to ``restore``, which deletes every ``.removed-*`` and record-less dir."""
        base = os.path.join(self.ctx.root, "containers")
        gone = os.path.join(base, f".removed-{cid}")
        try:
            os.rename(os.path.join(base, cid), gone)
        except FileNotFoundError:
            return
        except OSError:
            shutil.rmtree(os.path.join(base, cid), ignore_errors=True)
            return

        async def later() -> None:  # not while the rest of the removal needs the CPU
            await asyncio.sleep(DISCARD_DELAY)
            await asyncio.to_thread(shutil.rmtree, gone, ignore_errors=True)

        task = asyncio.get_running_loop().create_task(later())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def rename(self: ContainerService, ref: str, new_name: str) -> None:
        c = self.get(ref)
        new = validate_name(new_name)
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        for other in self._all.values():
            if other.name == new:
                raise AlreadyExists(f'Conflict. The container name "/{new}" is already in use by container '
                                    f'"{other.id}". You have to remove (or rename) that container to be able to reuse that name.')
        old = c.name
        c.name = new
        try:
            self.save(c)
        except BaseException:
            c.name = old
            raise
        self.emit(c, "rename", oldName=f"/{old}")

    async def update(self: ContainerService, ref: str, resources: object | None = None,
                     restart_policy: object | None = None) -> list[str]:
        """Change resources (live, through the cgroup) and/or the restart policy."""
        from engine.containers.spec import RestartPolicy
        from engine.kernel import Resources

        c = self.get(ref)
        spec = c.spec
        if isinstance(resources, Resources):
            resources = normalize_resources(resources)
            merged = Resources(**{f.name: getattr(resources, f.name) if getattr(resources, f.name) is not None
                                  else getattr(spec.resources, f.name) for f in dataclasses.fields(Resources)})
            if model.is_alive(c.state.status):
                try:
                    await self.kernel.cgroup_update(self.ctx.cgroup_path(c.id), resources)
                except OSError as e:
                    raise from_os_error(f"Cannot update container {c.id}", e) from None
            spec = dataclasses.replace(spec, resources=merged)
        if isinstance(restart_policy, RestartPolicy):
            if spec.auto_remove and restart_policy.name != "no":
                raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled for the container")
            spec = dataclasses.replace(spec, restart_policy=restart_policy)
        c.spec = spec
        self.save(c)
        self.emit(c, "update")
        return []
