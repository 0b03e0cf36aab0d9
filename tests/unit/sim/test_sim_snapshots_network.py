"""Sim-only behaviour of the Snapshots and Network mixins: what the contract suite cannot
reach through the protocol (live sandboxes faked in the world, leak reports, Linux quirks)."""

from __future__ import annotations

import errno
import io
from dataclasses import dataclass

import pytest

from sim import SimKernel
from sim.fs import FsView
from tests.contract.kernel.layers import make_tar


@dataclass
class FakeSandbox:
    rootfs: str
    netns: str | None
    alive: bool = True


async def test_unmount_busy_while_a_live_sandbox_uses_the_root() -> None:
    k = SimKernel()
    await k.apply_layer("base", None, io.BytesIO(make_tar(("file", "f", b"x"))))
    await k.prepare("rw", "base")
    await k.mount("rw", "/run/c1/rootfs")
    k.world.sandboxes["c1"] = sb = FakeSandbox("/run/c1/rootfs", None)
    with pytest.raises(OSError) as exc:
        await k.unmount("/run/c1/rootfs/")  # same target, spelled differently
    assert exc.value.errno == errno.EBUSY
    sb.alive = False
    await k.unmount("/run/c1/rootfs")
    del k.world.sandboxes["c1"]
    await k.remove("rw")
    await k.remove("base")
    assert k.leaks() == {}


async def test_view_at_and_leak_report() -> None:
    k = SimKernel()
    await k.prepare("rw", None)
    await k.mount("rw", "/m")
    view = k._view_at("/m")
    assert isinstance(view, FsView)
    view.write("/hello", b"hi")
    assert await k.read_file("/m", "/hello") == b"hi"
    assert (await k.stat("rw")).size == 2
    with pytest.raises(FileNotFoundError):
        k._view_at("/elsewhere")
    await k.netns_create("n1")
    await k.link_add("br0", "bridge")
    assert k.leaks() == {"mounts": ["/m"], "snapshots": ["rw"], "network": ["n1", "br0"]}
    await k.unmount("/m")
    await k.remove("rw")
    await k.netns_remove("n1")
    await k.link_remove("br0")
    assert k.leaks() == {}


async def test_every_snapshot_op_checks_faults() -> None:
    k = SimKernel()
    await k.prepare("rw", None)
    await k.mount("rw", "/m")
    calls = {
        "prepare": lambda: k.prepare("x", None),
        "apply_layer": lambda: k.apply_layer("y", None, io.BytesIO(make_tar())),
        "mount": lambda: k.mount("rw", "/m2"),
        "unmount": lambda: k.unmount("/m"),
        "diff": lambda: k.diff("rw", io.BytesIO()),
        "remove": lambda: k.remove("rw"),
        "stat": lambda: k.stat("rw"),
        "list": lambda: k.list(),
        "read_file": lambda: k.read_file("/m", "/f"),
    }
    for op, call in calls.items():
        k.faults.fail_next(op, errno.EIO)
        with pytest.raises(OSError) as exc:
            await call()
        assert exc.value.errno == errno.EIO, op
    assert [op for op, _ in k.faults.fired] == list(calls)
    await k.unmount("/m")
    await k.remove("rw")


async def test_netns_busy_while_a_live_sandbox_uses_it() -> None:
    k = SimKernel()
    await k.netns_create("n1")
    k.world.sandboxes["c1"] = sb = FakeSandbox("/r", "n1")
    with pytest.raises(OSError) as exc:
        await k.netns_remove("n1")
    assert exc.value.errno == errno.EBUSY
    sb.alive = False
    await k.netns_remove("n1")


async def test_linux_network_quirks() -> None:
    k = SimKernel(seed=7)
    await k.netns_create("n1")
    with pytest.raises(OSError) as exc:
        await k.netns_create("host")  # would clash with move_to="host"
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        await k.link_remove("lo", "n1")
    assert exc.value.errno == errno.EOPNOTSUPP
    await k.link_add("br0", "bridge", netns="n1")
    with pytest.raises(OSError) as exc:
        await k.link_set("br0", "n1", move_to="host")  # bridges are netns-local
    assert exc.value.errno == errno.EINVAL
    await k.link_add("d0", "dummy", netns="n1")
    await k.addr_add("d0", "10.0.0.2/24", "n1")
    with pytest.raises(OSError) as exc:
        await k.route_add("10.9.0.0/16", "d0", netns="n1")  # link down
    assert exc.value.errno == errno.ENETDOWN
    with pytest.raises(OSError) as exc:
        await k.route_add("10.9.0.1/16", "d0", netns="n1")  # host bits set
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        await k.link_set("d0", "n1", mtu=10)
    assert exc.value.errno == errno.EINVAL
    await k.link_set("d0", "n1", up=True, master="br0")
    await k.route_add("0.0.0.0/0", "d0", via="10.0.0.1", netns="n1")
    assert [r.dest for r in await k.routes("n1")] == ["10.0.0.0/24", "default"]
    await k.link_set("d0", "n1", up=False)  # routes through a downed link go
    assert await k.routes("n1") == []
    await k.link_set("d0", "n1", up=True)
    await k.route_add("default", "d0", via="10.0.0.1", netns="n1")
    await k.addr_remove("d0", "10.0.0.2/24", "n1")  # the gateway is unreachable now
    assert await k.routes("n1") == []
    await k.addr_add("d0", "10.0.0.2/32", "n1")
    assert await k.routes("n1") == []  # no prefix route for a /32
    await k.link_set("d0", "n1", move_to="host")  # moved: down, no addresses, no master
    d0 = next(i for i in await k.links() if i.name == "d0")
    assert (d0.up, d0.master, await k.addrs("d0")) == (False, None, [])
    await k.link_remove("d0")
    await k.netns_remove("n1")
    assert k.leaks() == {}


async def test_macs_are_seeded() -> None:
    macs = []
    for _ in range(2):
        k = SimKernel(seed=3)
        await k.link_add("d0", "dummy")
        macs.append(next(i.mac for i in await k.links() if i.name == "d0"))
        await k.link_remove("d0")
    assert macs[0] == macs[1]
