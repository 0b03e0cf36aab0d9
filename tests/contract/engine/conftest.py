"""Engine suite fixtures: an Engine over the chosen backend with a busybox image imported."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from engine.bootstrap import make_engine
from engine.engine import Engine
from engine.images.busybox import STUB_BINARY, find_busybox


def busybox_binary() -> bytes:
    path = find_busybox()
    if path is None:
        return STUB_BINARY
    with open(path, "rb") as fh:
        return fh.read()


class EngineHarness:
    """Builds engines over one root and one kernel, so a test can 'restart the daemon'."""

    def __init__(self, backend: str, root: str, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.root = os.path.join(root, "state")
        self.exec_root = os.path.join(root, "run")
        self.loop = loop
        self.kernel: Any = None
        self.engines: list[Engine] = []

    async def new(self, **kw: Any) -> Engine:
        eng = make_engine(self.backend, self.root, self.exec_root, kernel=self.kernel,
                          # seeded ids on the sim; random on a real host, whose cgroups are shared
                          seed=len(self.engines) + 7 if self.backend == "sim" else None,
                          **kw)
        self.kernel = eng.kernel
        await eng.start()
        self.engines.append(eng)
        return eng


@pytest.fixture
def harness(backend: str, tmp_path: Any, loop: asyncio.AbstractEventLoop) -> Iterator[EngineHarness]:
    h = EngineHarness(backend, str(tmp_path), loop)
    yield h

    async def teardown() -> None:
        live = [e for e in h.engines if not e.closed]
        if not live:
            return
        eng = live[-1]
        for c in eng.container_list(all=True):
            try:
                await eng.container_remove(c.id, force=True)
            except Exception:  # noqa: BLE001 - report through the leak check below
                pass
        for _ in range(8):  # children first: a parent refuses removal while a child exists
            for img in eng.image_list(all=True):
                try:
                    eng.image_remove(img.id, force=True)
                except Exception:  # noqa: BLE001
                    pass
            if not eng.image_list(all=True):
                break
        await eng.forget_image_snapshots()
        for e in live:
            await e.close()

    loop.run_until_complete(teardown())
    if h.kernel is not None:
        assert h.kernel.leaks() == {}, "kernel objects leaked"


@pytest.fixture
def engine(harness: EngineHarness, loop: asyncio.AbstractEventLoop) -> Engine:
    eng = loop.run_until_complete(harness.new())
    eng.image_bootstrap_busybox("busybox:latest", busybox_binary())
    return eng
