"""The sim's Network role: namespaces, links, addresses and routes, kept like the kernel keeps
them (see ``engine.kernel.Network`` for the contract).

Behaviour mirrored from Linux beyond the docstrings: a new namespace's ``lo`` is down and gets
127.0.0.1/8 when brought up; connected routes appear for the addresses of up links (none for
/32 and /128, none for loopback: those live in the ``local`` table); routes through a link go
when it goes down, leaves the namespace or is deleted; a link moved to another namespace comes up
down, without addresses or master; ``lo`` and bridges cannot change namespace (EINVAL) and ``lo``
cannot be deleted (EOPNOTSUPP); a route without gateway over a down link is ENETDOWN.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.kernel import LinkInfo, RouteInfo
from sim.fsnodes import oserror

if TYPE_CHECKING:
    from sim.world import World

IfAddr = ipaddress.IPv4Interface | ipaddress.IPv6Interface
KINDS = ("bridge", "veth", "dummy")
IFNAMSIZ = 16  # names are at most IFNAMSIZ - 1 bytes


@dataclass(eq=False)
class Link:
    name: str
    kind: str
    ns: str | None
    ifindex: int
    mac: str
    up: bool = False
    mtu: int = 1500
    master: str | None = None
    peer: Link | None = None
    addrs: list[IfAddr] = field(default_factory=list)

    def info(self) -> LinkInfo:
        return LinkInfo(name=self.name, kind=self.kind, up=self.up, netns=self.ns,
                        master=self.master, peer=self.peer.name if self.peer else None,
                        mtu=self.mtu, mac=self.mac)


@dataclass
class NetNs:
    name: str | None
    links: dict[str, Link] = field(default_factory=dict)
    routes: list[RouteInfo] = field(default_factory=list)  # explicit routes only


def _bad(what: str, value: object) -> OSError:
    return oserror(errno.EINVAL, str(value), f"invalid {what}: {value!r}")


def _parse_cidr(cidr: str) -> IfAddr:
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError:
        raise _bad("address", cidr) from None


def _parse_dest(dest: str) -> str:
    if dest == "default":
        return dest
    try:
        net = ipaddress.ip_network(dest, strict=True)
    except ValueError:
        raise _bad("route destination", dest) from None
    return "default" if net.prefixlen == 0 else str(net)


class SimNetwork:
    """Network mixin of ``SimKernel``; state in ``world.netns`` (None = the host)."""

    world: World

    def _init_network(self) -> None:
        self.world.netns.clear()
        self._next_ifindex = 1  # lo is 1 in every namespace
        host = self._new_ns(None)
        lo = host.links["lo"]
        lo.up = True
        lo.addrs.append(ipaddress.ip_interface("127.0.0.1/8"))

    def _leaks_network(self) -> list[str]:
        names = [n for n in self.world.netns if n is not None]
        host = self.world.netns[None]
        return sorted(names) + sorted(n for n in host.links if n != "lo")

    # ---- helpers --------------------------------------------------------------------------
    def _new_ns(self, name: str | None) -> NetNs:
        ns = NetNs(name)
        ns.links["lo"] = Link("lo", "loopback", name, 1, "00:00:00:00:00:00", mtu=65536)
        self.world.netns[name] = ns
        return ns

    def _ns(self, name: str | None) -> NetNs:
        ns: NetNs | None = self.world.netns.get(name)
        if ns is None:
            raise oserror(errno.ENOENT, str(name), f"no such network namespace: {name}")
        return ns

    def _link(self, name: str, netns: str | None) -> Link:
        link = self._ns(netns).links.get(name)
        if link is None:
            raise oserror(errno.ENOENT, name, f"no such link: {name}")
        return link

    def _mac(self) -> str:
        octets = [self.world.rng.getrandbits(8) for _ in range(6)]
        octets[0] = (octets[0] & 0xFE) | 0x02  # unicast, locally administered
        return ":".join(f"{o:02x}" for o in octets)

    def _check_name(self, name: str) -> None:
        if (not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", "..")
                or any(c.isspace() for c in name)):
            raise _bad("link name", name)

    def _make(self, name: str, kind: str, ns: NetNs) -> Link:
        self._next_ifindex += 1
        link = Link(name, kind, ns.name, self._next_ifindex, self._mac())
        ns.links[name] = link
        return link

    def _drop_routes(self, ns: NetNs, dev: str) -> None:
        ns.routes = [r for r in ns.routes if r.dev != dev]

    def _unlink(self, link: Link) -> None:
        """Remove ``link`` (not its peer) and everything pointing at it in its namespace."""
        ns = self.world.netns[link.ns]
        del ns.links[link.name]
        self._drop_routes(ns, link.name)
        if link.kind == "bridge":
            for other in ns.links.values():
                if other.master == link.name:
                    other.master = None

    def _delete(self, link: Link) -> None:
        self._unlink(link)
        if link.peer is not None:
            self._unlink(link.peer)
            link.peer.peer = None

    def _connected(self, ns: NetNs) -> list[RouteInfo]:
        out: list[RouteInfo] = []
        for link in sorted(ns.links.values(), key=lambda lk: lk.ifindex):
            if not link.up or link.kind == "loopback":
                continue
            for a in link.addrs:
                if a.network.prefixlen < a.max_prefixlen:
                    out.append(RouteInfo(str(a.network), None, link.name, ns.name))
        return out

    @staticmethod
    def _reachable(link: Link, gw: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return link.up and any(a.version == gw.version and gw in a.network for a in link.addrs)

    # ---- namespaces ---------------------------------------------------------------------
    async def netns_create(self, name: str) -> None:
        self.world.faults.check("netns_create")
        if not name or "/" in name or name in (".", "..", "host"):
            raise _bad("network namespace name", name)
        if name in self.world.netns:
            raise oserror(errno.EEXIST, name, f"network namespace {name} exists")
        self._new_ns(name)

    async def netns_remove(self, name: str) -> None:
        self.world.faults.check("netns_remove")
        if name is None or name not in self.world.netns:
            raise oserror(errno.ENOENT, str(name), f"no such network namespace: {name}")
        for sb in self.world.sandboxes.values():
            if getattr(sb, "netns", None) == name and getattr(sb, "alive", False):
                raise oserror(errno.EBUSY, name, f"network namespace {name} is in use")
        for link in list(self.world.netns[name].links.values()):
            if link.name in self.world.netns[name].links:
                self._delete(link)
        del self.world.netns[name]

    async def netns_list(self) -> list[str]:
        self.world.faults.check("netns_list")
        return sorted(n for n in self.world.netns if n is not None)

    # ---- links ----------------------------------------------------------------------------
    async def link_add(self, name: str, kind: str, peer: str | None = None,
                       netns: str | None = None) -> None:
        self.world.faults.check("link_add")
        ns = self._ns(netns)
        if kind not in KINDS:
            raise _bad("link kind", kind)
        self._check_name(name)
        if kind == "veth":
            if peer is None:
                raise _bad("veth without peer", name)
            self._check_name(peer)
        elif peer is not None:
            raise _bad(f"peer for a {kind}", peer)
        for n in (name, peer):
            if n is not None and n in ns.links:
                raise oserror(errno.EEXIST, n, f"link {n} exists")
        if peer == name:
            raise oserror(errno.EEXIST, peer, f"link {peer} exists")
        link = self._make(name, kind, ns)
        if peer is not None:
            other = self._make(peer, kind, ns)
            link.peer, other.peer = other, link

    async def link_set(self, name: str, netns: str | None = None, *, up: bool | None = None,
                       master: str | None = None, move_to: str | None = None,
                       mtu: int | None = None) -> None:
        self.world.faults.check("link_set")
        link = self._link(name, netns)
        dest = self._ns(None if move_to == "host" else move_to) if move_to is not None else None
        moving = dest is not None and dest.name != link.ns
        final = dest if (dest is not None and moving) else self.world.netns[link.ns]
        if moving:
            if link.kind in ("loopback", "bridge"):
                raise _bad(f"move of {link.kind}", name)  # NETIF_F_NETNS_LOCAL
            if name in final.links:
                raise oserror(errno.EEXIST, name, f"link {name} exists in {final.name}")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise _bad("mtu", mtu)
        if master:
            br = final.links.get(master)
            if br is None:
                raise oserror(errno.ENOENT, master, f"no such link: {master}")
            if br.kind != "bridge" or br is link:
                raise _bad("master (not a bridge)", master)
        if moving:
            assert dest is not None
            self._unlink(link)
            link.ns, link.up, link.master, link.addrs = dest.name, False, None, []
            dest.links[name] = link
        if mtu is not None:
            link.mtu = mtu
        if master is not None:
            link.master = master or None
        if up is not None:
            link.up = up
            if not up:
                self._drop_routes(final, name)
            elif link.kind == "loopback" and not link.addrs:
                link.addrs.append(ipaddress.ip_interface("127.0.0.1/8"))

    async def link_remove(self, name: str, netns: str | None = None) -> None:
        self.world.faults.check("link_remove")
        link = self._link(name, netns)
        if link.kind == "loopback":
            raise oserror(errno.EOPNOTSUPP, name, "lo cannot be deleted")
        self._delete(link)

    async def links(self, netns: str | None = None) -> list[LinkInfo]:
        self.world.faults.check("links")
        ns = self._ns(netns)
        return [lk.info() for lk in sorted(ns.links.values(), key=lambda lk: lk.ifindex)]

    # ---- addresses ----------------------------------------------------------------------
    async def addr_add(self, link: str, cidr: str, netns: str | None = None) -> None:
        self.world.faults.check("addr_add")
        lk = self._link(link, netns)
        addr = _parse_cidr(cidr)
        if any(a.ip == addr.ip for a in lk.addrs):
            raise oserror(errno.EEXIST, cidr, f"{cidr} is already on {link}")
        lk.addrs.append(addr)

    async def addr_remove(self, link: str, cidr: str, netns: str | None = None) -> None:
        self.world.faults.check("addr_remove")
        lk = self._link(link, netns)
        addr = _parse_cidr(cidr)
        if addr not in lk.addrs:
            raise oserror(errno.EADDRNOTAVAIL, cidr, f"{cidr} is not on {link}")
        lk.addrs.remove(addr)
        ns = self.world.netns[lk.ns]
        ns.routes = [r for r in ns.routes if r.dev != link or r.via is None
                     or self._reachable(lk, ipaddress.ip_address(r.via))]

    async def addrs(self, link: str, netns: str | None = None) -> list[str]:
        self.world.faults.check("addrs")
        return [str(a) for a in self._link(link, netns).addrs]

    # ---- routes ---------------------------------------------------------------------------
    async def route_add(self, dest: str, dev: str, via: str | None = None,
                        netns: str | None = None) -> None:
        self.world.faults.check("route_add")
        ns = self._ns(netns)
        lk = self._link(dev, netns)
        key = _parse_dest(dest)
        gw = None
        if via is not None:
            try:
                gw = ipaddress.ip_address(via)
            except ValueError:
                raise _bad("gateway", via) from None
        if any(r.dest == key for r in [*self._connected(ns), *ns.routes]):
            raise oserror(errno.EEXIST, dest, f"route to {dest} exists")
        if gw is not None and not self._reachable(lk, gw):
            raise oserror(errno.ENETUNREACH, via, f"gateway {via} is not on a connected subnet of {dev}")
        if gw is None and not lk.up:
            raise oserror(errno.ENETDOWN, dev, f"{dev} is down")
        ns.routes.append(RouteInfo(key, str(gw) if gw else None, dev, netns))

    async def route_remove(self, dest: str, netns: str | None = None) -> None:
        self.world.faults.check("route_remove")
        ns = self._ns(netns)
        key = _parse_dest(dest)
        for r in ns.routes:
            if r.dest == key:
                ns.routes.remove(r)
                return
        raise oserror(errno.ESRCH, dest, f"no route to {dest}")

    async def routes(self, netns: str | None = None) -> list[RouteInfo]:
        self.world.faults.check("routes")
        ns = self._ns(netns)
        return self._connected(ns) + list(ns.routes)
