"""The sim's world state: everything a SimKernel instance knows, per instance, seeded.

Each role module (processes, snapshots, cgroups, network) keeps its tables here so that they
can see each other (a process sits in a cgroup and a mount namespace, a sandbox owns a netns),
and so that tests can introspect the whole world and assert that nothing leaked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from sim.faults import Faults

# 2026-01-01T00:00:00Z: the sim's wall clock starts here plus the loop's virtual time, so
# timestamps are deterministic in tests.
DEFAULT_EPOCH = 1767225600.0


@dataclass
class World:
    seed: int = 0
    hostname: str = "simhost"
    cpus: int = 2
    memory: int = 8 * 1024**3
    epoch: float = DEFAULT_EPOCH
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(init=False)
    next_pid: int = 1000
    # role tables (filled by the role mixins; typed loosely here to keep modules independent)
    processes: dict[int, Any] = field(default_factory=dict)   # pid -> sim.processes.SimProcess
    sandboxes: dict[str, Any] = field(default_factory=dict)   # id -> sim.processes.Sandbox
    snapshots: dict[str, Any] = field(default_factory=dict)   # key -> sim.snapshots.Snapshot
    mounts: dict[str, Any] = field(default_factory=dict)      # host target -> sim.snapshots.MountRec
    cgroups: dict[str, Any] = field(default_factory=dict)     # path -> sim.cgroups.Cgroup
    netns: dict[str | None, Any] = field(default_factory=dict)  # name (None = host) -> sim.network.NetNs

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def new_pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def random_hex(self, nbytes: int) -> str:
        return self.rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()
