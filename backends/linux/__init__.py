"""The real Linux backend: namespaces, overlayfs, cgroups v1/v2, netlink, per-container monitors."""

from typing import Any

__all__ = ["LinuxKernel"]


def __getattr__(name: str) -> Any:
    if name == "LinuxKernel":
        from backends.linux.kernel import LinuxKernel

        return LinuxKernel
    raise AttributeError(name)
