"""Proposed addition to the Kernel's Snapshots role: file access inside a mounted view
(``docker cp``'s archive endpoints). Lives here until it is merged into ``engine/kernel.py``.

The engine uses it only when the kernel has it (``isinstance(kernel, PathOps)``); otherwise the
archive endpoints answer NotImplemented_. The sim implements it (``sim/tarcopy.py``); the Linux
backend is expected to resolve every path with ``openat2(RESOLVE_IN_ROOT)`` (or an equivalent
``O_PATH`` walk) below the mount target, so that a symlink inside the container can never lead
outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from engine.kernel import LayerLimits


@dataclass(frozen=True, slots=True)
class PathStat:
    """What ``lstat`` says about a path inside a view."""

    name: str  # the last path component ("/" for the root)
    kind: str  # "file", "dir", "symlink", "char", "block", "fifo"
    mode: int  # permission bits (& 0o7777)
    size: int
    mtime: float
    link_target: str = ""  # for a symlink


@runtime_checkable
class PathOps(Protocol):
    """File access inside the view mounted at ``target`` (see :meth:`Snapshots.mount`).

    Paths are absolute inside the view. Every symlink met while resolving a path — in its
    parent components, and in the entries of an extracted tar — resolves *inside* the view's
    root (``..`` stops at ``/``, absolute targets start at the root), as ``chroot`` would; the
    last component of ``path`` itself is not followed (``lstat`` semantics) unless ``path``
    ends with ``/`` or ``/.``.
    """

    async def path_stat(self, target: str, path: str) -> PathStat:
        """``lstat`` of ``path``. Raises ``FileNotFoundError``, ``NotADirectoryError``,
        ``OSError(EINVAL)`` if nothing is mounted at ``target``."""

    async def archive(self, target: str, path: str, out: BinaryIO) -> PathStat:
        """Write ``path`` as a tar to ``out``: a file or symlink as one entry named after its
        last component, a directory recursively under its name (``path`` ending in ``/.``: its
        contents, under ``.``). Symlinks inside are archived as symlinks, never followed;
        sub-mounts of the view are included. Returns the stat of ``path``. Raises as
        :meth:`path_stat`."""

    async def extract(self, target: str, path: str, tar: BinaryIO,
                      no_overwrite_dir_non_dir: bool = False,
                      limits: LayerLimits | None = None) -> None:
        """Unpack the uncompressed tar stream ``tar`` into the existing directory ``path``.

        Entries with ``..`` climbing above ``path``'s root are refused (``OSError(EINVAL)``
        naming the entry); a leading ``/`` is stripped. An existing symlink at an entry's path
        is replaced, not written through. With ``no_overwrite_dir_non_dir`` replacing a
        directory by a non-directory (or the reverse) fails with ``OSError(EEXIST)``;
        without it a non-directory is replaced and a directory is merged into. Limits as
        :meth:`Snapshots.apply_layer` (``OSError(EFBIG)``). Raises ``FileNotFoundError``,
        ``NotADirectoryError`` (``path``), ``OSError(EROFS)`` (read-only view). Entries already
        extracted stay when a later one fails (as ``docker cp``).
        """
