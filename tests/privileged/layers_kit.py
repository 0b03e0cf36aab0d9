"""Shared bits of the fs-role privileged tests: the Snapshots mixin alone over a tmp root, and
helpers to look at what landed where."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import pathlib
import stat
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux.snapshots import LinuxSnapshots


class SnapKernel(LinuxSnapshots):
    """Just the Snapshots role (no other role's init runs)."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._init_snapshots()

    def leaks(self) -> dict[str, list[str]]:
        found = {"mounts": self._leaks_snapshots_mounts(), "snapshots": self._leaks_snapshots()}
        return {k: v for k, v in found.items() if v}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def snaps(tmp_path: pathlib.Path) -> Iterator[SnapKernel]:
    if os.geteuid() != 0:
        pytest.fail("privileged layer tests need root")
    k = SnapKernel(str(tmp_path / "kernel-root"))
    yield k
    leaks = k.leaks()
    assert leaks == {}, leaks
    assert mounts_under(tmp_path) == [], "mount leaked"


def mounts_under(path: pathlib.Path) -> list[str]:
    """Mount points below ``path`` (other tests of the machine may mount elsewhere)."""
    from backends.linux.overlay import mount_points

    prefix = str(path) + "/"
    return [p for p in mount_points() if p.startswith(prefix)]


def layer_dir(k: SnapKernel, key: str) -> pathlib.Path:
    return pathlib.Path(k._snap_path(k._meta(key).n, "fs"))


def tree(root: pathlib.Path) -> dict[str, str]:
    """Every path below ``root`` → a short description, without following symlinks (fd-based:
    paths longer than PATH_MAX are fine)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames, dfd in os.fwalk(root):
        for name in dirnames + filenames:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(name, dir_fd=dfd)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
                try:
                    out[rel] = "file " + os.read(fd, 40).decode(errors="replace")
                finally:
                    os.close(fd)
            else:
                out[rel] = f"special {st.st_mode:o} {st.st_rdev}"
    return out


def sha(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644,
       uid: int = 0, gid: int = 0, mtime: int = 1_600_000_000) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mode, t.uid, t.gid, t.mtime = kind, linkname, mode, uid, gid, mtime
    if kind == tarfile.DIRTYPE:
        t.mode = mode if mode != 0o644 else 0o755
    return t
