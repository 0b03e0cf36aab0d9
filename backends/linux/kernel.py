"""LinuxKernel: the Kernel interface on a real Linux kernel (see ``engine.kernel`` for the spec).

Composed of one mixin per role, like ``sim.kernel.SimKernel``. The mixins share a few private
hooks (documented here so each role module can be written and tested on its own):

* cgroups  → ``_cgroup_procs_files(path) -> list[str]``: the ``cgroup.procs`` file(s) a new process
  writes its pid into (one per v1 controller, one on v2); ``FileNotFoundError`` if absent.
* network  → ``_netns_path(name) -> str``: the bind-mounted namespace file to ``setns`` into;
  ``FileNotFoundError`` if absent.
* snapshots → ``_norm_target(target)`` and ``_record(target)``: PathOps (``docker cp``) checks a
  target is one of our mounts with them.
* processes → ``_live_rootfs() -> set[str]`` and ``_live_netns() -> set[str]``: mount targets and
  netns names held by live sandboxes (``unmount`` / ``netns_remove`` answer EBUSY for them).

Every role has ``_init_<role>()`` (called by the constructor) and ``_leaks_<role>()`` (objects
still alive that this kernel made), which ``leaks()`` gathers.
"""

from __future__ import annotations

import asyncio
import os
import platform

from backends.linux.cgroups import LinuxCgroups
from backends.linux.network import LinuxNetwork
from backends.linux.pathops import LinuxPathOps
from backends.linux.processes import LinuxProcesses
from backends.linux.snapshots import LinuxSnapshots
from engine.kernel import KernelInfo


class LinuxKernel(LinuxProcesses, LinuxSnapshots, LinuxPathOps, LinuxCgroups, LinuxNetwork):
    """The real backend.

    Args:
        root: persistent state (unpacked layers under ``<root>/snapshots``).
        exec_root: runtime state (monitor sockets, exit files); default ``<root>/run``.
        cgroup_root: where cgroupfs is mounted (``/sys/fs/cgroup``); v1 or v2 is detected there.
        netns_dir: where named network namespaces are bind-mounted (``/run/netns``, as iproute2).
    """

    def __init__(self, root: str, exec_root: str | None = None, cgroup_root: str = "/sys/fs/cgroup",
                 netns_dir: str = "/run/netns") -> None:
        self.root = os.path.abspath(root)
        self.exec_root = os.path.abspath(exec_root or os.path.join(root, "run"))
        self.cgroup_root = cgroup_root
        self.netns_dir = netns_dir
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.exec_root, exist_ok=True)
        self._init_cgroups()
        self._init_network()
        self._init_snapshots()
        self._init_pathops()
        self._init_processes()

    def info(self) -> KernelInfo:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return KernelInfo(backend="linux", os=_os_name(), kernel_version=platform.release(),
                          cgroup_version=self._cgroup_version(), cpus=os.cpu_count() or 1, memory=mem,
                          features=frozenset({"overlay", "seccomp", f"cgroup{self._cgroup_version()}"}))

    def wall_time(self) -> float:
        import time

        return time.time()

    async def close(self) -> None:
        await self._close_processes()
        for trash in (self._snap_trash, self._px_trash):  # deletions still in flight
            await asyncio.to_thread(trash.flush)

    def leaks(self) -> dict[str, list[str]]:
        found = {
            "processes": self._leaks_processes(),
            "mounts": self._leaks_snapshots_mounts(),
            "snapshots": self._leaks_snapshots(),
            "pathops": self._leaks_pathops(),
            "cgroups": self._leaks_cgroups(),
            "network": self._leaks_network(),
        }
        return {k: v for k, v in found.items() if v}


def _os_name() -> str:
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"
