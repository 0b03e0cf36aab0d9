"""The bag of collaborators every engine service receives (built once in ``engine.bootstrap``)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.events import EventBus
from engine.kernel import Kernel


class SimulatedCrash(BaseException):
    """Raised by a crash hook to stop the engine dead between two writes (tests only).

    A BaseException so that no ``except Exception`` cleanup path runs, as with a real SIGKILL.
    """


@dataclass
class Context:
    kernel: Kernel
    root: str  # persistent state: metadata, blobs, container logs
    exec_root: str  # runtime state: mount targets
    events: EventBus
    rng: random.Random = field(default_factory=random.SystemRandom)
    crash_hook: Callable[[str], None] | None = None
    cgroup_parent: str = "wharfie"

    def crash_point(self, name: str) -> None:
        """A named point between two durable writes where tests may simulate a daemon crash."""
        if self.crash_hook is not None:
            self.crash_hook(name)

    def wall(self) -> float:
        return self.kernel.wall_time()

    def new_id(self) -> str:
        return self.rng.getrandbits(256).to_bytes(32, "big").hex()

    def container_dir(self, cid: str) -> str:
        path = os.path.join(self.root, "containers", cid)
        os.makedirs(path, exist_ok=True)
        return path

    def rootfs_target(self, cid: str) -> str:
        return os.path.join(self.exec_root, "containers", cid, "rootfs")

    def cgroup_path(self, cid: str) -> str:
        return f"{self.cgroup_parent}/{cid}"
