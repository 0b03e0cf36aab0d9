"""SimKernel: the Kernel interface over an in-memory world (see ``engine.kernel`` for the spec)."""

from __future__ import annotations

import asyncio
import time

from engine.kernel import KernelInfo
from sim.cgroups import SimCgroups
from sim.network import SimNetwork
from sim.processes import SimProcesses
from sim.snapshots import SimSnapshots
from sim.world import DEFAULT_EPOCH, World


class SimKernel(SimProcesses, SimSnapshots, SimCgroups, SimNetwork):
    """A behavioural twin of ``LinuxKernel``.

    Args:
        seed: seeds every id and random choice, so runs are reproducible.
        hostname, cpus, memory: what ``info()`` reports for the simulated host.
        epoch: wall-clock time at loop time 0 (virtual time).
        realtime: the wall clock is the host's (``time.time()``), for a daemon running the sim
            on a normal event loop; otherwise it is ``epoch`` + the loop's (virtual) time.
    """

    def __init__(self, *, seed: int = 0, hostname: str = "simhost", cpus: int = 2,
                 memory: int = 8 * 1024**3, epoch: float = DEFAULT_EPOCH, realtime: bool = False) -> None:
        self.world = World(seed=seed, hostname=hostname, cpus=cpus, memory=memory, epoch=epoch)
        self.realtime = realtime
        self.faults = self.world.faults
        self._init_processes()
        self._init_snapshots()
        self._init_cgroups()
        self._init_network()

    def info(self) -> KernelInfo:
        return KernelInfo(backend="sim", os="Wharfie Sim", kernel_version="6.1.0-sim",
                          cgroup_version=2, cpus=self.world.cpus, memory=self.world.memory,
                          features=frozenset({"overlay", "cgroup2", "freezer", "pids", "memory"}))

    def wall_time(self) -> float:
        if self.realtime:
            return time.time()
        try:
            return self.world.epoch + asyncio.get_running_loop().time()
        except RuntimeError:
            return self.world.epoch

    async def close(self) -> None:
        """Nothing to release: sandboxes live on in the world (the sim's live-restore)."""

    def leaks(self) -> dict[str, list[str]]:
        """Kernel objects still alive, by kind; empty when everything was cleaned up.

        Live processes, mounts, cgroups (other than the root), network namespaces, host links
        other than ``lo``, and snapshots.
        """
        found = {
            "processes": self._leaks_processes(),
            "mounts": self._leaks_snapshots_mounts(),
            "snapshots": self._leaks_snapshots(),
            "cgroups": self._leaks_cgroups(),
            "network": self._leaks_network(),
        }
        return {k: v for k, v in found.items() if v}
