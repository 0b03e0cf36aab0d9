"""A busybox rootfs bind-mounted on itself (no snapshots role needed) and LinuxKernel helpers for
the monitor tests. Everything made here is undone by the fixtures."""

from __future__ import annotations

import dataclasses

import asyncio
import contextlib
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux import libc
from engine.kernel import StdioSpec, SIGKILL, ExecSpec, Pid, SpawnSpec

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
APPLETS = ("sh", "cat", "echo", "sleep", "true", "false", "ls", "id", "tty", "stty", "readlink",
           "wc", "hostname", "printf", "kill", "head", "pwd", "env")


def make_rootfs(base: pathlib.Path) -> str:
    root = base / "rootfs"
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    libc.mount(str(root), str(root), None, libc.MS_BIND)  # a mount point, as the snapshots make
    return str(root)


def new_kernel(root: pathlib.Path) -> Any:
    from backends.linux import LinuxKernel

    return LinuxKernel(root=str(root / "kernel-root"))


class Rig:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.rootfs = make_rootfs(tmp)
        self.kernel = new_kernel(tmp)
        self._n = 0

    def spec(self, *argv: str, **kw: Any) -> SpawnSpec:
        self._n += 1
        kw.setdefault("id", f"m{self._n}")
        kw.setdefault("rootfs", self.rootfs)
        # the rig attaches right after spawn: hold the output for it (StdioSpec.attach_grace)
        kw["stdio"] = dataclasses.replace(kw.get("stdio", StdioSpec()), attach_grace=kw.pop("attach_grace", 0.5))
        return SpawnSpec(argv=argv, env=kw.pop("env", (PATH_ENV,)), **kw)

    async def spawn(self, *argv: str, **kw: Any) -> Pid:
        return Pid(await self.kernel.spawn(self.spec(*argv, **kw)))

    async def exec(self, target: Pid, *argv: str, **kw: Any) -> Pid:
        kw["stdio"] = dataclasses.replace(kw.get("stdio", StdioSpec()), attach_grace=kw.pop("attach_grace", 0.5))
        return Pid(await self.kernel.exec(target, ExecSpec(argv=argv, env=(PATH_ENV,), **kw)))

    async def output(self, pid: Pid, timeout: float = 20) -> tuple[bytes, bytes]:
        stdio = await self.kernel.stdio(pid)
        out, err = bytearray(), bytearray()

        async def drain() -> None:
            while (item := await stdio.read()) is not None:
                (out if item[0] == 1 else err).extend(item[1])
        try:
            await asyncio.wait_for(drain(), timeout)
        finally:
            stdio.close()
        return bytes(out), bytes(err)

    async def cleanup(self) -> None:
        k = self.kernel
        for info in await k.sandboxes():
            with contextlib.suppress(OSError):
                await k.signal(info.pid, SIGKILL)
        for pid in list(k._px_procs):
            with contextlib.suppress(OSError):
                await k.wait(pid, timeout=10)
            with contextlib.suppress(OSError):
                await k.release(pid)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A real event loop (the suite's default for tests without a backend is virtual time)."""
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    try:
        pending = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            lp.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        lp.run_until_complete(lp.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        lp.close()


@pytest.fixture
def rig(tmp_path: pathlib.Path, loop: asyncio.AbstractEventLoop) -> Iterator[Rig]:
    if os.geteuid() != 0:
        pytest.fail("privileged test needs root")
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        try:
            loop.run_until_complete(r.cleanup())
            leaks = r.kernel._leaks_processes()
            loop.run_until_complete(r.kernel.close())
        finally:
            libc.umount2(r.rootfs, libc.MNT_DETACH)
        assert leaks == []
