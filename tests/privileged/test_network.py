"""The Linux Network role beyond the contract suite: the private hooks (``_netns_path``,
``_live_netns``), leak reporting, the namespace files themselves. Only 10.231.x.x, only inside
namespaces the test makes; everything is removed. Root only (fails, not skips, otherwise).
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux.netlink import _in_thread
from backends.linux.network import LinuxNetwork
from backends.linux import libc

pytestmark = pytest.mark.privileged
NS = "wh-ptest-net"


class K(LinuxNetwork):
    def __init__(self, live: set[str] | None = None) -> None:
        self.netns_dir = "/run/netns"
        self.live = live if live is not None else set()
        self._init_network()

    def _live_netns(self) -> set[str]:
        return self.live


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def k() -> Iterator[K]:
    if os.geteuid() != 0:
        pytest.fail("privileged test needs root")
    kernel = K()
    yield kernel
    leaks = kernel._leaks_network()
    kernel.live.clear()
    for name in ("whp-h0", "whp-h1"):
        try:
            run(kernel.link_remove(name))
        except OSError:
            pass
    for name in list(kernel._net_made):
        try:
            run(kernel.netns_remove(name))
        except OSError:
            pass
    assert leaks == []


def test_netns_path_is_a_namespace(k: K) -> None:
    run(k.netns_create(NS))
    path = k._netns_path(NS)
    assert path == f"/run/netns/{NS}"

    def inode_after_setns() -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            libc.setns(fd, libc.CLONE_NEWNET)
        finally:
            os.close(fd)
        return os.stat("/proc/thread-self/ns/net").st_ino

    assert _in_thread(inode_after_setns) == os.stat(path).st_ino
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    assert k._leaks_network() == [NS]
    run(k.netns_remove(NS))
    assert not os.path.exists(path) and k._leaks_network() == []
    with pytest.raises(FileNotFoundError):
        k._netns_path(NS)
    for bad in ("", "a/b", "..", "host"):
        with pytest.raises(OSError) as ei:
            run(k.netns_create(bad))
        assert ei.value.errno == errno.EINVAL


def test_netns_dir_is_a_shared_mount(k: K) -> None:
    run(k.netns_create(NS))
    mounts = pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
    entry = [m for m in mounts if m.split()[4] == "/run/netns"]
    assert entry and "shared:" in entry[-1]
    run(k.netns_remove(NS))


def test_remove_busy_while_a_sandbox_uses_it(k: K) -> None:
    run(k.netns_create(NS))
    k.live.add(NS)
    with pytest.raises(OSError) as ei:
        run(k.netns_remove(NS))
    assert ei.value.errno == errno.EBUSY
    k.live.clear()
    run(k.netns_remove(NS))


def test_host_links_are_tracked_and_veth_peers_resolved(k: K) -> None:
    run(k.netns_create(NS))
    run(k.link_add("whp-h0", "veth", peer="whp-h1"))
    assert sorted(k._leaks_network()) == sorted([NS, "whp-h0", "whp-h1"])
    run(k.link_set("whp-h1", None, move_to=NS))
    run(k.addr_add("whp-h1", "10.231.7.2/24", NS))
    run(k.link_set("whp-h1", NS, up=True))
    host = {i.name: i for i in run(k.links(None))}
    inside = {i.name: i for i in run(k.links(NS))}
    assert host["whp-h0"].peer == "whp-h1" and inside["whp-h1"].peer == "whp-h0"
    assert "10.231.7.2/24" in run(k.addrs("whp-h1", NS))
    run(k.netns_remove(NS))  # the host end goes with its peer
    assert "whp-h0" not in {i.name for i in run(k.links(None))}
    assert k._leaks_network() == []


def test_dummy_kind_is_reported_as_dummy(k: K) -> None:
    run(k.netns_create(NS))
    run(k.link_add("whp-d0", "dummy", netns=NS))  # an ifb stand-in where CONFIG_DUMMY is off
    (info,) = [i for i in run(k.links(NS)) if i.name == "whp-d0"]
    assert info.kind == "dummy" and not info.up
    run(k.link_set("whp-d0", NS, up=True))
    run(k.addr_add("whp-d0", "10.231.8.2/24", NS))
    assert any(r.dest == "10.231.8.0/24" for r in run(k.routes(NS)))
    run(k.netns_remove(NS))
