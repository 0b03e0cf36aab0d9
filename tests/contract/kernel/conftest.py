"""The ``kernel`` fixture: the same contract tests over every backend chosen by ``--backend``.

* ``sim``: a fresh seeded ``SimKernel``;
* ``linux``: ``backends.linux.LinuxKernel`` over a temporary root. It needs root: when asked for
  and not root, the test *fails* (a misconfigured privileged run must not pass by skipping).

Each test must leave nothing behind: at teardown ``kernel.leaks()`` must be ``{}``. The ``tidy``
fixture helps tests that fail half-way: it unmounts and removes what they registered, *before*
the leak check, so one failure does not cascade into leak errors everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import zlib
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def kernel(backend: str, loop: asyncio.AbstractEventLoop, tmp_path: pathlib.Path,
           request: pytest.FixtureRequest) -> Iterator[Any]:
    if backend == "sim":
        from sim import SimKernel

        k: Any = SimKernel(seed=zlib.crc32(request.node.nodeid.encode()))
    else:
        geteuid = getattr(os, "geteuid", None)
        if geteuid is None or geteuid() != 0:
            pytest.fail("--backend linux needs root (run the privileged suite as root, e.g. in the VM)")
        from backends.linux import LinuxKernel  # type: ignore[import-not-found]

        k = LinuxKernel(root=str(tmp_path / "kernel-root"))
    yield k
    leaks = k.leaks()
    loop.run_until_complete(k.close())
    assert leaks == {}, f"kernel objects leaked by the test: {leaks}"


class Tidy:
    """Registers kernel objects a test creates, to clean up after a failed test."""

    def __init__(self, kernel: Any, tmp_path: pathlib.Path) -> None:
        self.kernel = kernel
        self.tmp_path = tmp_path
        self.targets: list[str] = []
        self.netns: list[str] = []
        self.host_links: list[str] = []
        self._n = 0

    def target(self) -> str:
        """A fresh host path to mount on (not yet existing: ``mount`` creates it)."""
        self._n += 1
        t = str(self.tmp_path / f"mnt{self._n}")
        self.targets.append(t)
        return t

    async def mount(self, key: str, readonly: bool = False) -> str:
        t = self.target()
        await self.kernel.mount(key, t, readonly=readonly)
        return t

    async def cleanup(self) -> None:
        k = self.kernel
        for t in self.targets:
            with contextlib.suppress(OSError):
                await k.unmount(t)
        for _ in range(20):  # children before parents
            infos = await k.list()
            if not infos:
                break
            parents = {i.parent for i in infos}
            for info in infos:
                if info.key not in parents:
                    with contextlib.suppress(OSError):
                        await k.remove(info.key)
        for name in self.host_links:
            with contextlib.suppress(OSError):
                await k.link_remove(name)
        for name in self.netns:
            with contextlib.suppress(OSError):
                await k.netns_remove(name)


@pytest.fixture
def tidy(kernel: Any, loop: asyncio.AbstractEventLoop, tmp_path: pathlib.Path) -> Iterator[Tidy]:
    t = Tidy(kernel, tmp_path)
    yield t
    loop.run_until_complete(t.cleanup())


@pytest.fixture(autouse=True)
def _sim_only(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.sim`` tests (fault injection) run on the sim backend only."""
    if (request.node.get_closest_marker("sim") and "backend" in request.fixturenames
            and request.getfixturevalue("backend") != "sim"):
        pytest.skip("sim only (fault injection)")


class HostFs:
    """Changes made *from the host* inside a mounted snapshot, as root would make them in the
    mounted directory on Linux. The Kernel protocol has no write door into a mount (processes
    write there), so this adapter is the one thing these tests do outside the protocol.
    """

    def __init__(self, kernel: Any, backend: str) -> None:
        self.kernel, self.backend = kernel, backend

    def _sim(self, target: str) -> Any:
        return self.kernel._view_at(target)

    def _p(self, target: str, path: str) -> str:
        return os.path.join(target, path.lstrip("/"))

    def write(self, target: str, path: str, data: bytes) -> None:
        if self.backend == "sim":
            self._sim(target).write(path, data)
        else:
            with open(self._p(target, path), "wb") as f:
                f.write(data)

    def mkdir(self, target: str, path: str) -> None:
        if self.backend == "sim":
            self._sim(target).mkdir(path)
        else:
            os.mkdir(self._p(target, path))

    def unlink(self, target: str, path: str) -> None:
        if self.backend == "sim":
            self._sim(target).unlink(path)
        else:
            os.unlink(self._p(target, path))

    def rmdir(self, target: str, path: str) -> None:
        if self.backend == "sim":
            self._sim(target).rmdir(path)
        else:
            os.rmdir(self._p(target, path))

    def symlink(self, target: str, link_target: str, path: str) -> None:
        if self.backend == "sim":
            self._sim(target).symlink(link_target, path)
        else:
            os.symlink(link_target, self._p(target, path))

    def link(self, target: str, src: str, dst: str) -> None:
        if self.backend == "sim":
            self._sim(target).link(src, dst)
        else:
            os.link(self._p(target, src), self._p(target, dst))

    def chmod(self, target: str, path: str, mode: int) -> None:
        if self.backend == "sim":
            self._sim(target).chmod(path, mode)
        else:
            os.chmod(self._p(target, path), mode)


@pytest.fixture
def hostfs(kernel: Any, backend: str) -> HostFs:
    return HostFs(kernel, backend)
