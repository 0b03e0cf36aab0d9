"""The Network role of ``LinuxKernel`` (see ``engine.kernel.Network`` for the contract), on rtnetlink
through pyroute2.

Named namespaces live as bind mounts of ``/proc/.../ns/net`` in ``self.netns_dir`` (``/run/netns``
by default, so ``ip netns`` sees them), made shared like iproute2 does so that a mount namespace
cloned later does not pin a removed netns. A namespace is made by a short-lived thread that
unshares CLONE_NEWNET (only that thread moves) and bind-mounts its own ``/proc/thread-self/ns/net``.
Netlink plumbing, addresses and routes are in ``backends.linux.netlink``. No fork, no ``ip`` binary.

Linux answers most errors itself (EEXIST, EADDRNOTAVAIL, ENETUNREACH, ESRCH, EOPNOTSUPP for
deleting ``lo``, EINVAL for moving ``lo`` or a bridge); pyroute2's ``NetlinkError.code`` is that
errno and is re-raised as ``OSError(code, strerror, name)``. What the kernel spells differently
from the contract is checked first: unknown kind / long name (EINVAL, not EOPNOTSUPP/ERANGE), a
master that is not a bridge (EINVAL, not EOPNOTSUPP), unknown links and namespaces (ENOENT).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from backends.linux import libc
from backends.linux.netlink import (ARPHRD_LOOPBACK, FAKE_DUMMY, IFF_UP, KINDS, MS_SHARED,
                                    NetlinkError, NetlinkOps, _bad, _check_ifname, _code,
                                    _enoent, _in_thread)
from engine.kernel import LinkInfo


class LinuxNetwork(NetlinkOps):
    """Mixin of ``LinuxKernel``: network namespaces in ``self.netns_dir``, links over rtnetlink."""

    netns_dir: str

    def _init_network(self) -> None:
        self._net_made: set[str] = set()  # netns names this kernel created
        self._net_host_links: set[str] = set()  # host links this kernel created or moved there
        self._net_dir_ready = False
        self._net_lock = threading.Lock()

    def _leaks_network(self) -> list[str]:
        found = sorted(n for n in self._net_made if os.path.exists(self._netns_file(n)))
        if self._net_host_links:
            with self._ipr(None) as ipr:
                host = {m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            found += sorted(self._net_host_links & host)
        return found

    def _netns_file(self, name: str) -> str:
        return os.path.join(self.netns_dir, name)

    def _netns_path(self, name: str) -> str:
        """The bind-mounted namespace file to setns(2) into; ``FileNotFoundError`` if absent."""
        path = self._netns_file(name)
        if not name or "/" in name or name in (".", "..") or not os.path.exists(path):
            raise _enoent("network namespace", name)
        return path


    # ---- namespaces -----------------------------------------------------------------------
    def _prepare_netns_dir(self) -> None:
        """mkdir -p the directory and make it a shared mount (iproute2 ``netns_add``)."""
        if self._net_dir_ready:
            return
        os.makedirs(self.netns_dir, exist_ok=True)
        try:
            libc.mount("none", self.netns_dir, "none", MS_SHARED | libc.MS_REC)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
                raise
            libc.mount(self.netns_dir, self.netns_dir, "none", libc.MS_BIND | libc.MS_REC)
            libc.mount("none", self.netns_dir, "none", MS_SHARED | libc.MS_REC)
        self._net_dir_ready = True

    async def netns_create(self, name: str) -> None:
        await self._net_run(self._netns_create, name)

    def _netns_create(self, name: str) -> None:
        if not name or "/" in name or name in (".", "..", "host") or len(name.encode()) > 255:
            raise _bad("network namespace name", name)
        with self._net_lock:
            self._prepare_netns_dir()
            path = self._netns_file(name)
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, f"network namespace {name} exists", name) from None

            def body() -> None:
                libc.unshare(libc.CLONE_NEWNET)
                libc.mount("/proc/thread-self/ns/net", path, "none", libc.MS_BIND)

            try:
                _in_thread(body)
            except BaseException:
                os.unlink(path)
                raise
            self._net_made.add(name)

    async def netns_remove(self, name: str) -> None:
        await self._net_run(self._netns_remove, name)

    def _netns_remove(self, name: str) -> None:
        path = self._netns_path(name)
        live = getattr(self, "_live_netns", None)
        if live is not None and name in live():
            raise OSError(errno.EBUSY, f"network namespace {name} is in use", name)
        # Delete the links now: the kernel would too, but asynchronously (cleanup_net), and a
        # veth peer in another namespace must be gone when we return.
        try:
            with self._ipr(name) as ipr:
                for m in ipr.get_links():
                    if m["ifi_type"] != ARPHRD_LOOPBACK:
                        try:
                            ipr.link("del", index=m["index"])
                        except NetlinkError() as e:
                            if _code(e) not in (errno.ENODEV, errno.ENOENT):  # a peer went first
                                raise
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: a stale file that is not a namespace
                raise
        try:
            libc.umount2(path, libc.MNT_DETACH)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        os.unlink(path)
        self._net_made.discard(name)

    async def netns_list(self) -> list[str]:
        try:
            return sorted(os.listdir(self.netns_dir))
        except FileNotFoundError:
            return []

    # ---- links ----------------------------------------------------------------------------
    async def link_add(self, name: str, kind: str, peer: str | None = None,
                       netns: str | None = None) -> None:
        await self._net_run(self._link_add, name, kind, peer, netns)

    def _link_add(self, name: str, kind: str, peer: str | None, netns: str | None) -> None:
        if netns is not None:
            self._netns_path(netns)
        if kind not in KINDS:
            raise _bad("link kind", kind)
        _check_ifname(name)
        if kind == "veth":
            if peer is None:
                raise _bad("veth without peer", name)
            _check_ifname(peer)
        elif peer is not None:
            raise _bad(f"peer for a {kind}", peer)
        with self._ipr(netns) as ipr:
            for n in (name, peer):
                if n is not None and ipr.link_lookup(ifname=n):
                    raise FileExistsError(errno.EEXIST, f"link {n} exists", n)
            if peer == name:
                raise FileExistsError(errno.EEXIST, f"link {peer} exists", peer)
            extra = {"peer": peer} if peer is not None else {}
            try:
                self._call(name, ipr.link, "add", ifname=name, kind=kind, **extra)
            except OSError as e:
                if kind != "dummy" or e.errno != errno.EOPNOTSUPP:
                    raise
                self._add_fake_dummy(ipr, name)
        if netns is None:
            self._net_host_links.update(n for n in (name, peer) if n)

    def _add_fake_dummy(self, ipr: Any, name: str) -> None:
        """A kernel built without CONFIG_DUMMY (this CI VM's) refuses kind "dummy"; an ifb device
        (also a carrier-on, traffic-sinking virtual link) tagged with an alias stands in for it
        and is reported as "dummy". The tag lives in the kernel, so it survives a restart."""
        self._call(name, ipr.link, "add", ifname=name, kind="ifb")
        try:
            self._call(name, ipr.link, "set", index=self._index(ipr, name), ifalias=FAKE_DUMMY)
        except BaseException:
            ipr.link("del", ifname=name)
            raise

    async def link_set(self, name: str, netns: str | None = None, *, up: bool | None = None,
                       master: str | None = None, move_to: str | None = None,
                       mtu: int | None = None) -> None:
        await self._net_run(self._link_set, name, netns, up, master, move_to, mtu)

    def _link_set(self, name: str, netns: str | None, up: bool | None, master: str | None,
                  move_to: str | None, mtu: int | None) -> None:
        dest = None if move_to in (None, "host") else move_to
        dest_path = self._netns_path(dest) if dest is not None else None
        moving = move_to is not None and dest != netns
        final = dest if moving else netns
        if mtu is not None and not 68 <= mtu <= 65535:
            raise _bad("mtu", mtu)
        with self._ipr(netns) as ipr:
            index = self._index(ipr, name)
            if moving:
                fd = os.open(dest_path or "/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if master:  # validate before moving: nothing changes on error
                        self._master_index(final, master, name)
                    self._call(name, ipr.link, "set", index=index, net_ns_fd=fd)
                finally:
                    os.close(fd)
                if final is None:
                    self._net_host_links.add(name)
        changes: dict[str, Any] = {}
        if mtu is not None:
            changes["mtu"] = mtu
        if up is not None:
            changes["state"] = "up" if up else "down"
        if master is not None or changes:
            with self._ipr(final) as ipr:
                index = self._index(ipr, name)
                if master is not None:
                    changes["master"] = self._master_index(final, master, name, ipr) if master else 0
                self._call(name, ipr.link, "set", index=index, **changes)

    def _master_index(self, netns: str | None, master: str, name: str, ipr: Any = None) -> int:
        if ipr is None:
            with self._ipr(netns) as own:
                return self._master_index(netns, master, name, own)
        msgs = ipr.get_links(*ipr.link_lookup(ifname=master)) if ipr.link_lookup(ifname=master) else []
        if not msgs:
            raise _enoent("link", master)
        if self._kind(msgs[0]) != "bridge" or master == name:
            raise _bad("master (not a bridge)", master)
        return int(msgs[0]["index"])

    async def link_remove(self, name: str, netns: str | None = None) -> None:
        await self._net_run(self._link_remove, name, netns)

    def _link_remove(self, name: str, netns: str | None) -> None:
        with self._ipr(netns) as ipr:
            self._call(name, ipr.link, "del", index=self._index(ipr, name))

    @staticmethod
    def _kind(m: Any) -> str:
        if m["ifi_type"] == ARPHRD_LOOPBACK:
            return "loopback"
        info = m.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind == "ifb" and m.get_attr("IFLA_IFALIAS") == FAKE_DUMMY:
            return "dummy"
        return str(kind) if kind else "device"

    async def links(self, netns: str | None = None) -> list[LinkInfo]:
        return await self._net_run(self._links, netns)

    def _links(self, netns: str | None) -> list[LinkInfo]:
        with self._ipr(netns) as ipr:
            msgs = list(ipr.get_links())
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
            out = []
            for m in sorted(msgs, key=lambda m: m["index"]):
                kind = self._kind(m)
                peer = None
                if kind == "veth" and (link := m.get_attr("IFLA_LINK")) is not None:
                    nsid = m.get_attr("IFLA_LINK_NETNSID")
                    peer = names.get(link) if nsid is None else self._peer_name(ipr, netns, nsid, link)
                master = m.get_attr("IFLA_MASTER")
                out.append(LinkInfo(
                    name=m.get_attr("IFLA_IFNAME"), kind=kind, up=bool(m["flags"] & IFF_UP),
                    netns=netns, master=names.get(master) if master else None, peer=peer,
                    mtu=m.get_attr("IFLA_MTU") or 0, mac=m.get_attr("IFLA_ADDRESS") or ""))
            return out

    def _peer_name(self, ipr: Any, netns: str | None, nsid: int, index: int) -> str | None:
        """The name of ifindex ``index`` in the namespace known as ``nsid`` from ``netns``:
        match the nsid against each namespace we can name (the host and ``netns_dir``)."""
        candidates: list[str | None] = [None, *sorted(os.listdir(self.netns_dir))] \
            if os.path.isdir(self.netns_dir) else [None]
        for cand in candidates:
            if cand == netns:
                continue
            try:
                fd = os.open(self._netns_file(cand) if cand else "/proc/self/ns/net",
                             os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                found = ipr.get_netnsid(fd=fd)
            except NetlinkError():
                continue
            finally:
                os.close(fd)
            if found and found.get("nsid") == nsid:
                with self._ipr(cand) as other:
                    msgs = other.get_links(index)
                    return str(msgs[0].get_attr("IFLA_IFNAME")) if msgs else None
        return None
