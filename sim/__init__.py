"""The simulated kernel: an in-memory behavioural twin of the Linux backend.

Pure Python, no Linux-only imports: runs on Linux, macOS and Windows. See ``sim.kernel.SimKernel``.
"""

from typing import Any

__all__ = ["SimKernel"]


def __getattr__(name: str) -> Any:
    if name == "SimKernel":
        from sim.kernel import SimKernel

        return SimKernel
    raise AttributeError(name)
