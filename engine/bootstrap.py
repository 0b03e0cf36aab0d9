"""The composition root: the one place where a kernel backend is chosen and wired in."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from engine.context import Context
from engine.engine import Engine
from engine.events import EventBus
from engine.kernel import Kernel
from engine.registry.options import RegistryOptions
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore

BACKENDS = ("linux", "sim")
DEFAULT_ROOT = "/var/lib/wharfie"
DEFAULT_EXEC_ROOT = "/run/wharfie"


def make_kernel(backend: str, root: str, exec_root: str, seed: int | None = None,
                realtime: bool = False) -> Kernel:
    """Instantiate a backend by name. Raises ValueError for an unknown name.

    ``realtime`` applies to the sim: a daemon runs it on a normal loop with the host's clock;
    tests run it on a virtual-time loop.
    """
    if backend == "sim":
        from sim import SimKernel

        return SimKernel(seed=seed or 0, realtime=realtime)
    if backend == "linux":
        from backends.linux import LinuxKernel  # type: ignore[import-not-found]

        return LinuxKernel(root=os.path.join(root, "kernel"), exec_root=exec_root)  # type: ignore[no-any-return]
    raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def best_backend() -> str:
    """Linux when this is a Linux host where we are root and the backend is present, else sim."""
    import sys

    if sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0:
        try:
            import backends.linux  # noqa: F401
            from backends.linux import LinuxKernel  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            return "sim"
        return "linux"
    return "sim"


def make_engine(backend: str = "sim", root: str = DEFAULT_ROOT, exec_root: str = DEFAULT_EXEC_ROOT, *,
                kernel: Kernel | None = None, seed: int | None = None,
                crash_hook: Callable[[str], None] | None = None, realtime: bool = False,
                registry: RegistryOptions | None = None) -> Engine:
    """Build an Engine over ``root`` (state) and ``exec_root`` (runtime).

    Args:
        backend: "linux" or "sim"; ignored when ``kernel`` is given.
        kernel: an existing kernel to reuse (tests: a "restarted daemon" over the same sim).
        seed: makes ids and names reproducible (tests).
        crash_hook: called at named crash points (tests simulate a daemon crash there).
        realtime: the daemon's case (see :func:`make_kernel`).
        registry: insecure registries, mirrors, CAs, transfer limits (default: Docker's).
    """
    os.makedirs(root, exist_ok=True)
    os.makedirs(exec_root, exist_ok=True)
    k = kernel if kernel is not None else make_kernel(backend, root, exec_root, seed, realtime)
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    ctx = Context(kernel=k, root=root, exec_root=exec_root, events=EventBus(k.wall_time), rng=rng,
                  crash_hook=crash_hook)
    engine = Engine(ctx, MetaStore(root), BlobStore(root))
    if registry is not None:
        engine.registry_options = registry
    return engine
