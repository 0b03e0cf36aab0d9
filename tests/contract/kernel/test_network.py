"""Contract: the Network role (engine.kernel.Network), the same on every backend.

Most tests work inside a fresh network namespace, so that on Linux they do not disturb the
host's links and routes; names start with "wh" to stay clear of real ones.
"""

from __future__ import annotations

import errno
import re
from typing import Any

import pytest

from engine.kernel import LinkInfo, RouteInfo
from tests.contract.kernel.conftest import Tidy

NS = "wh-test-a"
NS2 = "wh-test-b"


async def netns(kernel: Any, tidy: Tidy, name: str = NS) -> str:
    await kernel.netns_create(name)
    tidy.netns.append(name)
    return name


async def link(kernel: Any, name: str, ns: str | None = NS) -> LinkInfo:
    for info in await kernel.links(ns):
        if info.name == name:
            return info
    raise AssertionError(f"no link {name} in {ns}")


async def names(kernel: Any, ns: str | None = NS) -> set[str]:
    return {i.name for i in await kernel.links(ns)}


def oserr(exc: pytest.ExceptionInfo[OSError]) -> int | None:
    return exc.value.errno


# ---- namespaces --------------------------------------------------------------------------------

async def test_netns_create_list_remove(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    assert NS in await kernel.netns_list()
    with pytest.raises(FileExistsError):
        await kernel.netns_create(NS)
    lo = await link(kernel, "lo")
    assert (lo.kind, lo.up, lo.netns) == ("loopback", False, NS)
    assert await names(kernel) == {"lo"}
    await kernel.netns_remove(NS)
    assert NS not in await kernel.netns_list()
    with pytest.raises(FileNotFoundError):
        await kernel.netns_remove(NS)
    with pytest.raises(FileNotFoundError):
        await kernel.links(NS)


async def test_host_loopback_is_up(kernel: Any, tidy: Tidy) -> None:
    lo = await link(kernel, "lo", None)
    assert lo.up and lo.kind == "loopback" and lo.netns is None
    assert "127.0.0.1/8" in await kernel.addrs("lo")


async def test_loopback_of_a_new_netns_comes_up_with_127(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_set("lo", NS, up=True)
    assert (await link(kernel, "lo")).up
    assert "127.0.0.1/8" in await kernel.addrs("lo", NS)
    await kernel.netns_remove(NS)


async def test_netns_remove_takes_links_and_veth_peers(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await netns(kernel, tidy, NS2)
    await kernel.link_add("wh0", "veth", peer="wh1", netns=NS)
    await kernel.link_set("wh1", NS, move_to=NS2)
    await kernel.link_add("whbr", "bridge", netns=NS)
    await kernel.netns_remove(NS)
    assert await names(kernel, NS2) == {"lo"}  # the peer went with it
    await kernel.netns_remove(NS2)


# ---- links ---------------------------------------------------------------------------------------

async def test_link_add_kinds(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whbr0", "bridge", netns=NS)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    infos = {i.name: i for i in await kernel.links(NS)}
    assert set(infos) == {"lo", "whbr0", "whd0", "whv0", "whv1"}
    assert infos["whbr0"].kind == "bridge" and infos["whd0"].kind == "dummy"
    assert infos["whv0"].kind == "veth" and infos["whv0"].peer == "whv1"
    assert infos["whv1"].peer == "whv0"
    for name in ("whbr0", "whd0", "whv0", "whv1"):
        info = infos[name]
        assert not info.up and info.netns == NS and info.master is None
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", info.mac)
        assert int(info.mac[:2], 16) & 1 == 0  # unicast
    assert len({infos[n].mac for n in ("whd0", "whv0", "whv1")}) == 3
    await kernel.netns_remove(NS)


async def test_link_add_errors(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    with pytest.raises(FileExistsError):
        await kernel.link_add("whd0", "bridge", netns=NS)
    with pytest.raises(FileExistsError):
        await kernel.link_add("whv0", "veth", peer="whd0", netns=NS)
    with pytest.raises(FileExistsError):
        await kernel.link_add("lo", "dummy", netns=NS)
    with pytest.raises(OSError) as exc:
        await kernel.link_add("whx", "wormhole", netns=NS)
    assert oserr(exc) == errno.EINVAL
    with pytest.raises(OSError) as exc:
        await kernel.link_add("wh" + "x" * 14, "dummy", netns=NS)  # 16 bytes
    assert oserr(exc) == errno.EINVAL
    with pytest.raises(OSError) as exc:
        await kernel.link_add("whv0", "veth", peer="wh" + "p" * 14, netns=NS)
    assert oserr(exc) == errno.EINVAL
    await kernel.link_add("wh" + "x" * 13, "dummy", netns=NS)  # 15 bytes is fine
    with pytest.raises(FileNotFoundError):
        await kernel.link_add("whd1", "dummy", netns="wh-no-such-ns")
    assert await names(kernel) == {"lo", "whd0", "wh" + "x" * 13}
    await kernel.netns_remove(NS)


async def test_link_set_up_and_mtu(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.link_set("whd0", NS, up=True, mtu=1400)
    info = await link(kernel, "whd0")
    assert info.up and info.mtu == 1400
    await kernel.link_set("whd0", NS, up=False)
    assert not (await link(kernel, "whd0")).up
    await kernel.netns_remove(NS)


async def test_link_set_master(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whbr0", "bridge", netns=NS)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    await kernel.link_set("whv0", NS, master="whbr0")
    assert (await link(kernel, "whv0")).master == "whbr0"
    await kernel.link_set("whv0", NS, master="")
    assert (await link(kernel, "whv0")).master is None
    with pytest.raises(FileNotFoundError):
        await kernel.link_set("whv0", NS, master="whbr9")
    with pytest.raises(OSError) as exc:
        await kernel.link_set("whv0", NS, master="whv1")  # not a bridge
    assert oserr(exc) == errno.EINVAL
    await kernel.netns_remove(NS)


async def test_link_set_errors(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    with pytest.raises(FileNotFoundError):
        await kernel.link_set("whnope", NS, up=True)
    with pytest.raises(FileNotFoundError):
        await kernel.link_set("lo", "wh-no-such-ns", up=True)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    with pytest.raises(FileNotFoundError):
        await kernel.link_set("whv0", NS, move_to="wh-no-such-ns")
    await kernel.netns_remove(NS)


async def test_link_move_between_namespaces(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await netns(kernel, tidy, NS2)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    await kernel.link_set("whv1", NS, move_to=NS2)
    assert await names(kernel) == {"lo", "whv0"}
    moved = await link(kernel, "whv1", NS2)
    assert moved.netns == NS2 and moved.peer == "whv0"
    assert (await link(kernel, "whv0")).peer == "whv1"
    # the name is taken in the destination
    await kernel.link_add("whv0", "dummy", netns=NS2)
    with pytest.raises(FileExistsError):
        await kernel.link_set("whv0", NS, move_to=NS2)
    assert "whv0" in await names(kernel)
    await kernel.netns_remove(NS2)
    await kernel.netns_remove(NS)


async def test_link_move_to_host_and_back(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    tidy.host_links.append("whv1")
    await kernel.link_set("whv1", NS, move_to="host")
    host = await link(kernel, "whv1", None)
    assert host.netns is None and host.peer == "whv0"
    await kernel.link_set("whv1", None, move_to=NS)
    assert await names(kernel) == {"lo", "whv0", "whv1"}
    await kernel.link_set("whv1", NS, move_to="host")
    await kernel.netns_remove(NS)  # takes the host end along
    assert "whv1" not in await names(kernel, None)


async def test_link_remove(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await netns(kernel, tidy, NS2)
    await kernel.link_add("whv0", "veth", peer="whv1", netns=NS)
    await kernel.link_set("whv1", NS, move_to=NS2)
    await kernel.link_remove("whv0", NS)
    assert await names(kernel) == {"lo"}
    assert await names(kernel, NS2) == {"lo"}  # the peer went too
    with pytest.raises(FileNotFoundError):
        await kernel.link_remove("whv0", NS)
    await kernel.link_add("whbr0", "bridge", netns=NS)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.link_set("whd0", NS, master="whbr0")
    await kernel.link_remove("whbr0", NS)
    assert (await link(kernel, "whd0")).master is None
    await kernel.netns_remove(NS2)
    await kernel.netns_remove(NS)


async def test_host_links(kernel: Any, tidy: Tidy) -> None:
    tidy.host_links.append("whbr-t0")
    await kernel.link_add("whbr-t0", "bridge")
    info = await link(kernel, "whbr-t0", None)
    assert info.netns is None and info.kind == "bridge"
    await kernel.link_remove("whbr-t0")
    assert "whbr-t0" not in await names(kernel, None)


# ---- addresses -------------------------------------------------------------------------------

async def test_addresses(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.addr_add("whd0", "10.88.0.2/24", NS)
    await kernel.addr_add("whd0", "fd00:88::2/64", NS)
    assert set(await kernel.addrs("whd0", NS)) >= {"10.88.0.2/24", "fd00:88::2/64"}
    with pytest.raises(FileExistsError):
        await kernel.addr_add("whd0", "10.88.0.2/24", NS)
    for bad in ("10.88.0.300/24", "10.88.0.2/33", "not-an-ip", ""):
        with pytest.raises(OSError) as exc:
            await kernel.addr_add("whd0", bad, NS)
        assert oserr(exc) == errno.EINVAL, bad
    with pytest.raises(FileNotFoundError):
        await kernel.addr_add("whnope", "10.88.0.3/24", NS)
    await kernel.addr_remove("whd0", "10.88.0.2/24", NS)
    assert "10.88.0.2/24" not in await kernel.addrs("whd0", NS)
    with pytest.raises(OSError) as exc:
        await kernel.addr_remove("whd0", "10.88.0.2/24", NS)
    assert oserr(exc) == errno.EADDRNOTAVAIL
    await kernel.netns_remove(NS)


# ---- routes ----------------------------------------------------------------------------------

async def test_connected_and_gateway_routes(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.addr_add("whd0", "10.88.0.2/24", NS)
    await kernel.link_set("whd0", NS, up=True)
    connected = RouteInfo("10.88.0.0/24", None, "whd0", NS)
    assert connected in await kernel.routes(NS)
    await kernel.route_add("default", "whd0", via="10.88.0.1", netns=NS)
    await kernel.route_add("10.99.0.0/16", "whd0", via="10.88.0.254", netns=NS)
    await kernel.route_add("10.77.0.0/16", "whd0", netns=NS)
    routes = await kernel.routes(NS)
    assert RouteInfo("default", "10.88.0.1", "whd0", NS) in routes
    assert RouteInfo("10.99.0.0/16", "10.88.0.254", "whd0", NS) in routes
    assert RouteInfo("10.77.0.0/16", None, "whd0", NS) in routes
    await kernel.route_remove("10.99.0.0/16", NS)
    assert RouteInfo("10.99.0.0/16", "10.88.0.254", "whd0", NS) not in await kernel.routes(NS)
    await kernel.route_remove("default", NS)
    await kernel.netns_remove(NS)


async def test_route_errors(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.addr_add("whd0", "10.88.0.2/24", NS)
    # the link is down: its subnet is not connected yet
    with pytest.raises(OSError) as exc:
        await kernel.route_add("default", "whd0", via="10.88.0.1", netns=NS)
    assert oserr(exc) == errno.ENETUNREACH
    await kernel.link_set("whd0", NS, up=True)
    with pytest.raises(OSError) as exc:
        await kernel.route_add("default", "whd0", via="192.168.200.1", netns=NS)
    assert oserr(exc) == errno.ENETUNREACH
    with pytest.raises(FileNotFoundError):
        await kernel.route_add("default", "whnope", via="10.88.0.1", netns=NS)
    await kernel.route_add("default", "whd0", via="10.88.0.1", netns=NS)
    with pytest.raises(FileExistsError):
        await kernel.route_add("default", "whd0", via="10.88.0.1", netns=NS)
    with pytest.raises(FileExistsError):
        await kernel.route_add("10.88.0.0/24", "whd0", netns=NS)  # the connected route
    await kernel.route_remove("default", NS)
    with pytest.raises(OSError) as exc:
        await kernel.route_remove("default", NS)
    assert oserr(exc) == errno.ESRCH
    with pytest.raises(OSError) as exc:
        await kernel.route_remove("10.55.0.0/16", NS)
    assert oserr(exc) == errno.ESRCH
    await kernel.netns_remove(NS)


async def test_routes_through_a_link_go_with_it(kernel: Any, tidy: Tidy) -> None:
    await netns(kernel, tidy)
    await kernel.link_add("whd0", "dummy", netns=NS)
    await kernel.addr_add("whd0", "10.88.0.2/24", NS)
    await kernel.link_set("whd0", NS, up=True)
    await kernel.route_add("default", "whd0", via="10.88.0.1", netns=NS)
    await kernel.link_remove("whd0", NS)
    assert [r for r in await kernel.routes(NS) if r.dev == "whd0"] == []
    await kernel.netns_remove(NS)


# ---- fault injection (sim) -------------------------------------------------------------------

@pytest.mark.sim
async def test_network_fault_injection(kernel: Any, tidy: Tidy) -> None:
    kernel.faults.fail_next("netns_create", errno.ENOSPC)
    with pytest.raises(OSError) as exc:
        await kernel.netns_create(NS)
    assert oserr(exc) == errno.ENOSPC
    assert await kernel.netns_list() == []
    await netns(kernel, tidy)
    kernel.faults.fail_next("link_add", errno.EAGAIN)
    with pytest.raises(OSError) as exc:
        await kernel.link_add("whd0", "dummy", netns=NS)
    assert oserr(exc) == errno.EAGAIN
    assert await names(kernel) == {"lo"}
    await kernel.netns_remove(NS)
