"""The short paths of a container start and removal, for real: the pre-forked init (and the
spawns that cannot use it), volatile write layers, deferred deletion through the trash."""

from __future__ import annotations

import asyncio
import io
import os
import pathlib
import tarfile

import pytest

from backends.linux import overlay
from engine.kernel import Namespace, SpawnSpec
from tests.privileged.layers_kit import SnapKernel, run, tar_of, ti
from tests.privileged.monitor_rig import Rig, loop, rig  # noqa: F401

pytestmark = pytest.mark.privileged


def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("privileged test needs root")


async def test_prefork_gives_pid_1_and_a_fresh_one_each_time(rig: Rig) -> None:
    """Each spawn gets the pre-forked child of its spare: PID 1 of its own pid namespace."""
    k = rig.kernel
    pids = []
    for _ in range(3):
        pid = await rig.spawn("sh", "-c", "echo $$; readlink /proc/self/ns/pid")
        out, _ = await rig.output(pid)
        assert (await k.wait(pid)).exit_code == 0
        pids.append(out.split())
        await k.release(pid)
    assert [p[0] for p in pids] == [b"1", b"1", b"1"]
    assert all(p[1].decode() != os.readlink("/proc/self/ns/pid") for p in pids)


async def test_spawn_without_pid_namespace_forks_in_ours(rig: Rig) -> None:
    """A spawn that keeps the host's pid namespace cannot use the pre-forked child (it is in a
    new one): the monitor forks in its own namespace instead."""
    k = rig.kernel
    spec = rig.spec("sh", "-c", "echo $$; readlink /proc/self/ns/pid")
    spec = SpawnSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__},
                        "namespaces": spec.namespaces - {Namespace.PID}})
    pid = await k.spawn(spec)
    out, _ = await rig.output(pid)
    assert (await k.wait(pid)).exit_code == 0
    shown, ns = out.split()
    assert int(shown) == pid and int(shown) != 1
    assert ns.decode() == os.readlink("/proc/self/ns/pid")
    await k.release(pid)


async def test_exec_after_prefork_spawns(rig: Rig) -> None:
    """An exec's monitor discards its spare's pre-forked child and joins the target's pid
    namespace; the next spawn still gets a pre-forked one."""
    k = rig.kernel
    init = await rig.spawn("sleep", "30")
    e = await rig.exec(init, "sh", "-c", "echo $$; readlink /proc/1/ns/pid; readlink /proc/self/ns/pid")
    out, _ = await rig.output(e)
    assert (await k.wait(e)).exit_code == 0
    shown, one, mine = out.split()
    assert shown != b"1" and one == mine
    await k.release(e)
    again = await rig.spawn("sh", "-c", "echo $$")
    out, _ = await rig.output(again)
    assert out.strip() == b"1"
    for p in (init, again):
        if (await k.wait(p, timeout=0)) is None:
            await k.signal(p, 9)
        await k.wait(p)
        await k.release(p)


async def test_released_record_leaves_at_once_and_trash_empties(rig: Rig) -> None:
    """``release`` takes the record out of ``sandboxes/`` at once; the trash is emptied in the
    background, and what a crash left there is emptied by the next kernel."""
    k = rig.kernel
    pid = await rig.spawn("true")
    await k.wait(pid)
    await k.release(pid)
    assert os.listdir(os.path.join(k.exec_root, "sandboxes")) == []
    await asyncio.to_thread(k._px_trash.flush)
    assert os.listdir(os.path.join(k.exec_root, "trash")) == []
    left = pathlib.Path(k.exec_root, "trash", "crashed.1234", "sub")
    left.mkdir(parents=True)
    (left / "f").write_text("x")
    from tests.privileged.monitor_rig import new_kernel

    k2 = new_kernel(rig.tmp)
    try:
        assert os.listdir(os.path.join(k.exec_root, "trash")) == []
    finally:
        await k2.close()


def test_volatile_write_layer_remounts_and_keeps_data(tmp_path: pathlib.Path) -> None:
    """A volatile mount (``run --rm``) skips syncs; its marker does not block a later mount of
    the same write layer, which sees what was written."""
    _root()
    k = SnapKernel(str(tmp_path / "root"))
    run(k.apply_layer("base", None, _tar()))
    run(k.prepare("rw", "base"))
    target = str(tmp_path / "mnt")
    run(k.mount("rw", target, volatile=True))
    try:
        assert {"volatile", "fsync=volatile"} & set(_mount_options(target))  # (6.x spelling)
        pathlib.Path(target, "new").write_text("data")
        os.sync()  # would flush the upper fs; volatile: nothing to do with us
    finally:
        run(k.unmount(target))
    work = k._snap_path(k._meta("rw").n, "work")
    assert os.path.isdir(os.path.join(work, "work", "incompat", "volatile"))
    run(k.mount("rw", target))  # the marker is cleared first (overlayfs refuses it otherwise)
    try:
        assert not {"volatile", "fsync=volatile"} & set(_mount_options(target))
        assert pathlib.Path(target, "new").read_text() == "data"
    finally:
        run(k.unmount(target))
    run(k.remove("rw"))
    run(k.remove("base"))
    assert k.leaks() == {}


def test_removed_snapshot_goes_through_the_trash(tmp_path: pathlib.Path) -> None:
    """``remove`` is done when it returns (no meta, no dir under snapshots/); the files are
    deleted in the background; a crash's leftovers in the trash go at the next start."""
    _root()
    k = SnapKernel(str(tmp_path / "root"))
    run(k.apply_layer("base", None, _tar()))
    run(k.prepare("rw", "base"))
    n = k._meta("rw").n
    run(k.remove("rw"))
    assert not os.path.exists(k._snap_path(n))
    assert [m["key"] for m in k._metas()] == ["base"]
    k._snap_trash.flush()
    assert os.listdir(k._snap_trash.path) == []
    os.makedirs(os.path.join(k._snap_trash.path, "7.cafe", "fs", "deep"))
    k2 = SnapKernel(str(tmp_path / "root"))
    assert os.listdir(k2._snap_trash.path) == []
    run(k2.remove("base"))
    assert k2.leaks() == {}


def _tar() -> io.BytesIO:
    return io.BytesIO(tar_of((ti("etc", tarfile.DIRTYPE), None), (ti("etc/hostname"), b"base\n")))


def _mount_options(target: str) -> list[str]:
    """The super options of the mount at ``target`` (mountinfo's last field)."""
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            f = line.split()
            if f[4] == target:
                return f[-1].split(",")
    raise AssertionError(f"{target} is not mounted")


def test_overlay_clear_volatile_is_a_noop_without_marker(tmp_path: pathlib.Path) -> None:
    overlay.clear_volatile(str(tmp_path))  # nothing there: nothing happens
    assert os.listdir(tmp_path) == []
