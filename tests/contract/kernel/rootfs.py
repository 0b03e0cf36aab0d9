"""A busybox rootfs built through the Kernel protocol, and a ``Box`` helper that spawns in it and
cleans up every sandbox and cgroup it made (so a failing test does not cascade into leaks).

/bin/busybox is the host's real static busybox when there is one (Debian's busybox-static), so
the Linux backend runs real programs; otherwise a stub carrying the "BusyBox v" marker, which is
all the sim needs to recognise it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from engine.kernel import SIGKILL, ExecSpec, Pid, Resources, SpawnSpec, StdioSpec
from tests.contract.kernel.conftest import Tidy
from tests.contract.kernel.layers import make_tar

BUSYBOX_STUB = b"\x7fELF\x02\x01\x01" + bytes(9) + b"BusyBox v1.35.0 (sim) multi-call binary.\n"
APPLETS = ("sh", "ash", "echo", "printf", "cat", "sleep", "true", "false", "env", "printenv",
           "hostname", "id", "whoami", "pwd", "ls", "ps", "head", "tail", "wc", "yes", "touch",
           "mkdir", "rm", "rmdir", "cp", "mv", "ln", "test", "[", "seq", "kill", "dd", "top",
           "grep", "uname", "date", "chmod", "basename", "dirname", "nproc")
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n" \
         b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nwheel:x:10:root\nalice:x:1000:\nstaff:x:50:alice\nnogroup:x:65534:\n"
ATTACH_GRACE = 1.0
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def busybox_binary() -> bytes:
    real = "/bin/busybox"
    if os.path.isfile(real):
        with open(real, "rb") as f:
            data = f.read()
        if b"BusyBox v" in data:
            return data
    return BUSYBOX_STUB


def busybox_tar() -> bytes:
    entries: list[tuple[Any, ...]] = [("dir", d) for d in (
        "bin", "etc", "tmp", "root", "proc", "dev", "sys", "home", "home/alice", "usr",
        "usr/bin", "var", "data")]
    entries.append(("file", "bin/busybox", busybox_binary(), 0o755))
    entries += [("symlink", f"bin/{a}", "busybox") for a in APPLETS]
    entries += [("file", "etc/passwd", PASSWD), ("file", "etc/group", GROUP),
                ("file", "etc/motd", b"hello from the image\n"),
                ("file", "bin/notexec", b"#!/bin/sh\necho nope\n", 0o644),
                ("file", "bin/garbage", b"\x00\x01 not a program", 0o755),
                ("file", "bin/script", b"#!/bin/sh\necho script $1\nexit 4\n", 0o755)]
    return make_tar(*entries)


class Box:
    """A mounted busybox rootfs plus the sandboxes and cgroups a test makes in it."""

    def __init__(self, kernel: Any, tidy: Tidy, tmp_path: Any) -> None:
        self.kernel = kernel
        self.tidy = tidy
        self.tmp_path = tmp_path
        self.target = ""
        self.pids: list[Pid] = []
        self.cgroups: list[str] = []
        self._n = 0

    async def setup(self) -> Box:
        k = self.kernel
        await k.apply_layer("busybox", None, io.BytesIO(busybox_tar()))
        await k.prepare("box", "busybox")
        self.target = await self.tidy.mount("box")
        return self

    def new_id(self) -> str:
        self._n += 1
        return f"c{self._n}"

    async def spawn(self, *argv: str, env: tuple[str, ...] = (PATH_ENV,), **kw: Any) -> Pid:
        kw.setdefault("id", self.new_id())
        # Box.run attaches right after spawn: hold the output for it (see StdioSpec.attach_grace)
        kw["stdio"] = dataclasses.replace(kw.get("stdio", StdioSpec()),
                                          attach_grace=kw.pop("attach_grace", ATTACH_GRACE))
        spec = SpawnSpec(argv=tuple(argv), rootfs=kw.pop("rootfs", self.target), env=env, **kw)
        pid = await self.kernel.spawn(spec)
        self.pids.append(pid)
        return pid

    async def exec(self, target: Pid, *argv: str, env: tuple[str, ...] = (PATH_ENV,),
                   **kw: Any) -> Pid:
        kw["stdio"] = dataclasses.replace(kw.get("stdio", StdioSpec()),
                                          attach_grace=kw.pop("attach_grace", ATTACH_GRACE))
        pid = await self.kernel.exec(target, ExecSpec(argv=tuple(argv), env=env, **kw))
        self.pids.append(pid)
        return pid

    async def cgroup(self, resources: Resources | None = None) -> str:
        path = f"wharfie-test/{self.new_id()}"
        await self.kernel.cgroup_create(path, resources or Resources())
        self.cgroups.append(path)
        return path

    async def run(self, *argv: str, timeout: float = 60, **kw: Any) -> tuple[int, bytes, bytes]:
        """Spawn, collect stdout/stderr through an attach, wait, release: ``(code, out, err)``."""
        pid = await self.spawn(*argv, **kw)
        out, err = await self.collect(pid, timeout)
        status = await self.kernel.wait(pid, timeout=timeout)
        assert status is not None, f"{argv} did not exit within {timeout}s"
        await self.release(pid)
        return status.exit_code, out, err

    async def collect(self, pid: Pid, timeout: float = 60) -> tuple[bytes, bytes]:
        stdio = await self.kernel.stdio(pid)
        out, err = bytearray(), bytearray()

        async def drain() -> None:
            while (item := await stdio.read()) is not None:
                (out if item[0] == 1 else err).extend(item[1])

        await asyncio.wait_for(drain(), timeout)
        stdio.close()
        return bytes(out), bytes(err)

    async def release(self, pid: Pid) -> None:
        await self.kernel.release(pid)
        if pid in self.pids:
            self.pids.remove(pid)

    async def kill_all(self) -> None:
        k = self.kernel
        for pid in reversed(self.pids):
            with contextlib.suppress(OSError):
                await k.signal(pid, SIGKILL)
            with contextlib.suppress(OSError):
                await k.wait(pid, timeout=10)
            with contextlib.suppress(OSError):
                await k.release(pid)
        self.pids.clear()
        for path in reversed(self.cgroups):
            with contextlib.suppress(OSError):
                await k.cgroup_kill(path)
            await asyncio.sleep(0.01)
            with contextlib.suppress(OSError):
                await k.cgroup_remove(path)
        self.cgroups.clear()


@pytest.fixture
def box(kernel: Any, tidy: Tidy, tmp_path: Any, loop: asyncio.AbstractEventLoop) -> Iterator[Box]:
    b = loop.run_until_complete(Box(kernel, tidy, tmp_path).setup())
    yield b
    loop.run_until_complete(b.kill_all())


def stdio_log(path: str) -> StdioSpec:
    from engine.kernel import LogSpec
    return StdioSpec(log=LogSpec(path))
