"""A Hypothesis state machine drives the engine against a pure model of container statuses.

After every step: the engine's list equals the model (ids, names, statuses) and the sim world
holds exactly the kernel objects the model's live containers need — no leaked process, mount
or cgroup.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from engine.bootstrap import make_engine
from engine.containers.spec import ContainerSpec
from engine.errors import AlreadyExists, Conflict
from engine.model import Status
from sim.loop import VirtualTimeLoop
from tests.contract.engine.conftest import busybox_binary

BUSYBOX = busybox_binary()
NAMES = st.sampled_from(["ab", "bc", "cd", "web", "db"])


class LifecycleMachine(RuleBasedStateMachine):
    containers = Bundle("containers")

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        asyncio.set_event_loop(self.loop)
        self.dir = tempfile.mkdtemp(prefix="wharfie-stateful-")
        self.engine = make_engine("sim", f"{self.dir}/root", f"{self.dir}/run", seed=3)
        self.run(self.engine.start())
        self.engine.image_bootstrap_busybox("busybox", BUSYBOX)
        self.model: dict[str, dict[str, Any]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def settle(self) -> None:
        self.run(asyncio.sleep(0.5))

    @rule(target=containers, forever=st.booleans(), name=st.one_of(st.none(), NAMES))
    def create(self, forever: bool, name: str | None) -> str:
        cmd = ("sleep", "1000") if forever else ("true",)
        taken = {m["name"] for m in self.model.values()}
        try:
            c = self.run(self.engine.container_create(ContainerSpec(image="busybox", cmd=cmd), name))
        except AlreadyExists:
            assert name in taken
            return "missing"
        assert name is None or name not in taken
        self.model[c.id] = {"status": Status.CREATED, "name": c.name, "forever": forever}
        return c.id

    def _known(self, cid: str) -> bool:
        return cid in self.model

    @rule(cid=containers)
    def start(self, cid: str) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_start(cid))
        except Conflict:
            assert m["status"] is Status.PAUSED
            return
        self.settle()
        m["status"] = Status.RUNNING if m["forever"] else Status.EXITED

    @rule(cid=containers)
    def stop(self, cid: str) -> None:
        if not self._known(cid):
            return
        self.run(self.engine.container_stop(cid, timeout=1))
        m = self.model[cid]
        if m["status"] in (Status.RUNNING, Status.PAUSED):
            m["status"] = Status.EXITED

    @rule(cid=containers)
    def kill(self, cid: str) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_kill(cid, "KILL"))
        except Conflict:
            assert m["status"] not in (Status.RUNNING, Status.PAUSED)
            return
        self.settle()
        m["status"] = Status.EXITED

    @rule(cid=containers)
    def pause(self, cid: str) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_pause(cid))
        except Conflict:
            assert m["status"] is not Status.RUNNING
            return
        assert m["status"] is Status.RUNNING
        m["status"] = Status.PAUSED

    @rule(cid=containers)
    def unpause(self, cid: str) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_unpause(cid))
        except Conflict:
            assert m["status"] is not Status.PAUSED
            return
        m["status"] = Status.RUNNING

    @rule(cid=containers)
    def restart(self, cid: str) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_restart(cid, timeout=1))
        except Conflict:
            assert m["status"] is Status.PAUSED
            return
        self.settle()
        m["status"] = Status.RUNNING if m["forever"] else Status.EXITED

    @rule(cid=containers, name=NAMES)
    def rename(self, cid: str, name: str) -> None:
        if not self._known(cid):
            return
        taken = {m["name"] for k, m in self.model.items() if k != cid}
        try:
            self.engine.container_rename(cid, name)
        except AlreadyExists:
            assert name in taken
            return
        except Exception:
            assert self.model[cid]["name"] == name  # same-name rename is refused
            return
        self.model[cid]["name"] = name

    @rule(cid=consumes(containers), force=st.booleans())
    def remove(self, cid: str, force: bool) -> None:
        if not self._known(cid):
            return
        m = self.model[cid]
        try:
            self.run(self.engine.container_remove(cid, force=force))
        except Conflict:
            assert not force and m["status"] in (Status.RUNNING, Status.PAUSED)
            return
        del self.model[cid]

    @invariant()
    def engine_matches_model(self) -> None:
        got = {c.id: (c.state.status, c.name) for c in self.engine.container_list(all=True)}
        want = {cid: (m["status"], m["name"]) for cid, m in self.model.items()}
        assert got == want

    @invariant()
    def no_leaks(self) -> None:
        live = sum(m["status"] in (Status.RUNNING, Status.PAUSED) for m in self.model.values())
        leaks = self.engine.kernel.leaks()  # type: ignore[attr-defined]
        assert len(leaks.get("processes", [])) == live
        assert len(leaks.get("mounts", [])) == live
        cgroups = [p for p in leaks.get("cgroups", []) if p.count("/") >= 1]
        assert len(cgroups) == live

    def teardown(self) -> None:
        try:
            for cid in list(self.model):
                self.run(self.engine.container_remove(cid, force=True))
            self.run(self.engine.close())
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.run(asyncio.gather(*pending, return_exceptions=True))
            leaks = self.engine.kernel.leaks()  # type: ignore[attr-defined]
            assert "processes" not in leaks and "mounts" not in leaks
        finally:
            asyncio.set_event_loop(None)
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


LifecycleMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_lifecycle_machine = pytest.mark.slow(LifecycleMachine.TestCase)
