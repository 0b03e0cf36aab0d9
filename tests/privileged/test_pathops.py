"""LinuxKernel's PathOps (``docker cp``) and snapshot removal beyond the contract: trees nested
deeper than Python's recursion limit (a container can make them; the sim's path walk is too slow
for this to be a contract test) must not break cp, diff or rm.

Root only: fails (not skips) when not root, like every privileged test.
"""

from __future__ import annotations

import asyncio
import io
import os
import pathlib
import resource
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract.kernel.layers import make_tar

pytestmark = pytest.mark.privileged
DEPTH = 1500  # > sys.getrecursionlimit()


@pytest.fixture
def kernel(tmp_path: pathlib.Path) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.fail("privileged test needs root")
    from backends.linux import LinuxKernel

    k = LinuxKernel(root=str(tmp_path / "kernel-root"))
    try:
        yield k
        leaks = k.leaks()
    finally:
        asyncio.run(k.close())
        _scrub(k, tmp_path)
    assert leaks == {}


def _scrub(k: Any, tmp_path: pathlib.Path) -> None:
    """After a failure: unmount and delete the deep trees here, iteratively (pytest's own
    recursive rmtree of old temp dirs would die on them with RecursionError)."""
    from backends.linux import overlay
    from backends.linux.layer_root import rmtree_at

    for point in overlay.mount_points():
        if point.startswith(str(tmp_path) + "/"):
            overlay.unmount_quietly(point)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            rmtree_at(fd, name, ignore_errors=True)
    finally:
        os.close(fd)


def deep_tree(top: pathlib.Path) -> str:
    """``top/n/n/…/n/leaf`` (``DEPTH`` dirs), made with dir fds (the path exceeds no limit per call)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir("n", dir_fd=fd)
            sub = os.open("n", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)
    return "/".join(["n"] * DEPTH) + "/leaf"


@pytest.fixture
def default_fd_limit() -> Iterator[None]:
    """The soft RLIMIT_NOFILE of a stock login (1024), where this CI host's is higher: a walk
    holding one fd per level fails at this depth (EMFILE, as it did in the Debian VM)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("default_fd_limit")
def test_deep_trees_archive_extract_diff_and_remove(kernel: Any, tmp_path: pathlib.Path) -> None:
    assert DEPTH > resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    async def scenario() -> None:
        await kernel.apply_layer("base", None, io.BytesIO(make_tar(("dir", "tmp"), ("dir", "w"))))
        await kernel.prepare("ctr", "base")
        t = str(tmp_path / "mnt")
        await kernel.mount("ctr", t)
        try:
            rel = deep_tree(pathlib.Path(t, "tmp"))
            out = io.BytesIO()
            await kernel.archive(t, "/tmp/n", out)
            with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
                names = tf.getnames()
            assert len(names) == DEPTH + 1 and names[-1] == rel
            # unpack the deep tree elsewhere, then replace it by a file (a deep rmtree)
            out.seek(0)
            await kernel.extract(t, "/w", out)
            assert (await kernel.path_stat(t, "/w/" + rel)).size == 4
            await kernel.extract(t, "/w", io.BytesIO(make_tar(("file", "n", b"flat"))))
            assert (await kernel.path_stat(t, "/w/n")).kind == "file"
            diff = io.BytesIO()
            await kernel.diff("ctr", diff)
            with tarfile.open(fileobj=io.BytesIO(diff.getvalue())) as tf:
                assert "tmp/" + rel in tf.getnames()
        finally:
            await kernel.unmount(t)
        await kernel.remove("ctr")
        await kernel.remove("base")
        assert await kernel.list() == []

    asyncio.run(scenario())
