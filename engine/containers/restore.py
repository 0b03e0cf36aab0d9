"""Daemon start and stop: reconcile stored containers with what the kernel still runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import TYPE_CHECKING

from engine import model
from engine.containers.record import Container
from engine.errors import EngineError
from engine.model import Status

if TYPE_CHECKING:
    from engine.containers.service import ContainerService


class RestoreMixin:
    # -- daemon start / stop ----------------------------------------------------------------

    async def restore(self: ContainerService) -> None:
        """Load containers and reconcile them with the kernel (live-restore).

        Running containers whose sandbox still runs are watched again; those whose process
        ended while we were away get their real exit code; those the kernel no longer knows
        (host reboot, sim restart) are marked exited with 255. Orphan write layers are removed.
        Then restart policies ``always``/``unless-stopped`` apply as on daemon start.
        """
        docs = self.meta.list_container_docs()
        for doc in docs:
            c = Container.from_dict(doc)
            self._all[c.id] = c
        sandboxes = {s.id: s for s in await self.kernel.sandboxes()}
        for c in list(self._all.values()):
            st = c.state
            if not model.is_alive(st.status) and st.status is not Status.RESTARTING:
                if st.status is Status.REMOVING:
                    st.status = Status.DEAD
                    self.save(c)
                continue
            sb = sandboxes.get(c.id)
            if sb is not None and sb.pid == st.pid and sb.exit_status is None:
                rt = self.rt(c.id)
                rt.watcher = asyncio.get_running_loop().create_task(self._watch(c, st.pid))
                if c.healthcheck:
                    rt.health_task = asyncio.get_running_loop().create_task(self._health_loop(c, st.pid))
                continue
            code = sb.exit_status.exit_code if sb is not None and sb.exit_status is not None else 255
            await self._on_exit(c, st.pid, code)
        known = set(self._all)
        await asyncio.to_thread(self._sweep_dirs, known)
        present = {s.key: s for s in await self.kernel.list()}
        for snap in present.values():
            if snap.kind == "active" and snap.key not in known:
                with contextlib.suppress(OSError):
                    await self.kernel.remove(snap.key)
        for c in self._all.values():
            if c.snapshot not in present:
                # The kernel lost the write layer (the sim's world is in memory; a wiped
                # exec-root on Linux): give the container a fresh one so it can start again.
                with contextlib.suppress(EngineError, OSError):
                    parent = await self._ensure_layers(c.image_id)
                    await self.kernel.prepare(c.snapshot, parent)
        for c in list(self._all.values()):
            pol = c.spec.restart_policy.name
            if c.state.status is Status.EXITED and (pol == "always" or (pol == "unless-stopped" and not c.state.manually_stopped)):
                with contextlib.suppress(EngineError):
                    await self.start(c.id)

    def _sweep_dirs(self: ContainerService, known: set[str]) -> None:
        """Delete container dirs of removed containers (a removal's deferred deletion that a
        crash interrupted, or a crash between the record's deletion and the dir's)."""
        base = os.path.join(self.ctx.root, "containers")
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(base):
                if name.startswith(".removed-") or name not in known:
                    shutil.rmtree(os.path.join(base, name), ignore_errors=True)

    async def shutdown(self: ContainerService) -> None:
        """Stop watching (containers keep running: live-restore)."""
        tasks = list(self._bg)  # deferred deletions: let them finish
        for rt in self._rt.values():
            for t in (rt.watcher, rt.restart_task, rt.health_task):
                if t is not None and not t.done():
                    t.cancel()
                    tasks.append(t)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
