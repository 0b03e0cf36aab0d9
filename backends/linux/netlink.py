"""rtnetlink plumbing for the Network role (``backends.linux.network``), and its address and
route half.

A netlink socket *inside* a named namespace is opened by a throw-away thread that setns(2)s
there (a socket stays in the namespace it was created in; only that thread moved) and is handed
to ``pyroute2.IPRoute(fileno=...)``: no fork, no ``ip`` binary. pyroute2 is imported on first use.
Kernel errors arrive as ``NetlinkError`` whose ``code`` is the errno; they are re-raised as
``OSError(code, strerror, name)``.

Routes: only the main table's unicast routes are listed; ``route_add`` tags its routes
``proto boot`` (as ``ip route add`` does) and ``route_remove`` deletes only those, never the
kernel's connected routes (``proto kernel``), as the contract's "no such route" (ESRCH) says.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from backends.linux import libc
from engine.kernel import RouteInfo

T = TypeVar("T")
KINDS = ("bridge", "veth", "dummy")
IFNAMSIZ = 16
IFF_UP = 1
ARPHRD_LOOPBACK = 772
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_BOOT = 3  # what `ip route add` uses; the kernel's connected routes are RTPROT_KERNEL
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
NETLINK_ROUTE = 0
MS_SHARED = 1 << 20
FAKE_DUMMY = "wharfie:dummy"  # IFLA_IFALIAS of an ifb standing in for a dummy (see link_add)


def _pyroute2() -> tuple[Any, type[Exception]]:
    """pyroute2's IPRoute and NetlinkError, imported on first use (~100 ms of imports that a
    kernel which never touches the network, or a monitor process, should not pay)."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    return IPRoute, NetlinkError


def NetlinkError() -> type[Exception]:  # noqa: N802 - used as ``except NetlinkError() as e``
    return _pyroute2()[1]


def _code(e: Exception) -> int:
    """The errno a NetlinkError carries."""
    return int(getattr(e, "code", 0) or errno.EIO)


def _bad(what: str, value: object) -> OSError:
    return OSError(errno.EINVAL, f"invalid {what}: {value!r}", str(value))


def _enoent(what: str, name: str) -> OSError:
    return FileNotFoundError(errno.ENOENT, f"no such {what}: {name}", name)


def _check_ifname(name: str) -> None:
    if (not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", "..")
            or any(c.isspace() for c in name)):
        raise _bad("link name", name)


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that dies afterwards (it may have changed namespaces)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["err"] = e

    t = threading.Thread(target=body, name="wharfie-netns")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["ok"]  # type: ignore[no-any-return]


def _socket_in(path: str) -> int:
    """A NETLINK_ROUTE socket created inside the namespace bind-mounted at ``path``."""
    def body() -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(fd, libc.CLONE_NEWNET)
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()

    return _in_thread(body)


class NetlinkOps:
    """Netlink access for ``LinuxNetwork`` plus the address and route methods of the role."""

    def _netns_path(self, name: str) -> str:
        raise NotImplementedError  # LinuxNetwork

    async def _net_run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @contextmanager
    def _ipr(self, netns: str | None) -> Iterator[Any]:
        iproute = _pyroute2()[0]
        if netns is None:
            ipr = iproute(groups=0)
        else:
            ipr = iproute(fileno=_socket_in(self._netns_path(netns)), groups=0)
        try:
            yield ipr
        except NetlinkError() as e:
            raise OSError(_code(e), os.strerror(_code(e))) from None
        finally:
            ipr.close()

    @staticmethod
    def _call(name: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return fn(*args, **kw)
        except NetlinkError() as e:
            raise OSError(_code(e), os.strerror(_code(e)), name) from None

    @staticmethod
    def _index(ipr: Any, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise _enoent("link", name)
        return int(found[0])

    # ---- addresses ----------------------------------------------------------------------------
    @staticmethod
    def _iface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        try:
            return ipaddress.ip_interface(cidr)
        except ValueError:
            raise _bad("address", cidr) from None

    async def addr_add(self, link: str, cidr: str, netns: str | None = None) -> None:
        await self._net_run(self._addr, "add", link, cidr, netns)

    async def addr_remove(self, link: str, cidr: str, netns: str | None = None) -> None:
        await self._net_run(self._addr, "del", link, cidr, netns)

    def _addr(self, op: str, link: str, cidr: str, netns: str | None) -> None:
        with self._ipr(netns) as ipr:
            index = self._index(ipr, link)
            iface = self._iface(cidr)
            self._call(cidr, ipr.addr, op, index=index, address=str(iface.ip),
                       prefixlen=iface.network.prefixlen)

    async def addrs(self, link: str, netns: str | None = None) -> list[str]:
        return await self._net_run(self._addrs, link, netns)

    def _addrs(self, link: str, netns: str | None) -> list[str]:
        with self._ipr(netns) as ipr:
            index = self._index(ipr, link)
            return [f"{m.get_attr('IFA_LOCAL') or m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                    for m in ipr.get_addr(index=index)]

    # ---- routes -------------------------------------------------------------------------------
    @staticmethod
    def _dest(dest: str, family: int) -> dict[str, Any]:
        if dest == "default":
            return {"family": family, "dst_len": 0}
        try:
            net = ipaddress.ip_network(dest, strict=True)
        except ValueError:
            raise _bad("route destination", dest) from None
        fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
        if net.prefixlen == 0:
            return {"family": fam, "dst_len": 0}
        return {"family": fam, "dst": str(net.network_address), "dst_len": net.prefixlen}

    async def route_add(self, dest: str, dev: str, via: str | None = None,
                        netns: str | None = None) -> None:
        await self._net_run(self._route_add, dest, dev, via, netns)

    def _route_add(self, dest: str, dev: str, via: str | None, netns: str | None) -> None:
        gw = None
        if via is not None:
            try:
                gw = ipaddress.ip_address(via)
            except ValueError:
                raise _bad("gateway", via) from None
        family = socket.AF_INET6 if gw is not None and gw.version == 6 else socket.AF_INET
        spec = self._dest(dest, family)
        with self._ipr(netns) as ipr:
            index = self._index(ipr, dev)
            extra: dict[str, Any] = {"gateway": str(gw)} if gw is not None else {}
            self._call(via or dest, ipr.route, "add", oif=index, table=RT_TABLE_MAIN,
                       proto=RTPROT_BOOT, scope=RT_SCOPE_UNIVERSE if gw else RT_SCOPE_LINK,
                       **spec, **extra)

    async def route_remove(self, dest: str, netns: str | None = None) -> None:
        await self._net_run(self._route_remove, dest, netns)

    def _route_remove(self, dest: str, netns: str | None) -> None:
        families = [socket.AF_INET, socket.AF_INET6] if dest == "default" else [socket.AF_INET]
        with self._ipr(netns) as ipr:
            for i, family in enumerate(families):
                try:
                    # proto BOOT: only routes added through route_add, never the kernel's own
                    ipr.route("del", table=RT_TABLE_MAIN, proto=RTPROT_BOOT,
                              **self._dest(dest, family))
                    return
                except NetlinkError() as e:
                    if _code(e) != errno.ESRCH or i == len(families) - 1:
                        raise OSError(_code(e), os.strerror(_code(e)), dest) from None

    async def routes(self, netns: str | None = None) -> list[RouteInfo]:
        return await self._net_run(self._routes, netns)

    def _routes(self, netns: str | None) -> list[RouteInfo]:
        with self._ipr(netns) as ipr:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            out = []
            for family in (socket.AF_INET, socket.AF_INET6):
                for m in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                    if m["type"] != RTN_UNICAST or m.get_attr("RTA_OIF") not in names:
                        continue
                    dst = m.get_attr("RTA_DST")
                    out.append(RouteInfo(
                        dest=f"{dst}/{m['dst_len']}" if m["dst_len"] else "default",
                        via=m.get_attr("RTA_GATEWAY"), dev=names[m.get_attr("RTA_OIF")],
                        netns=netns))
            return out
