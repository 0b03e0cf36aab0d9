"""Overlay mounts of snapshot chains, and reading the host's mount table.

``mount_overlay`` stacks ``lowers`` (top first) with an optional ``upper``/``work`` pair.

Why two mount paths: the classic ``mount(2)`` data string is limited to one page (4096 bytes,
options included), so a long chain of lower dirs does not fit. Snapshot dirs are short
(``<root>/snapshots/<n>/fs``) which keeps ~100 layers under the limit; beyond it we use the new
mount API, where each lower is its own ``fsconfig(FSCONFIG_SET_STRING, "lowerdir+", path)`` call
(overlayfs accepts ``lowerdir+`` since Linux 6.8; this machine runs 6.18). Older kernels (the VM's
6.1) refuse that; they get the classic call with paths relative to the snapshots directory, made
from a forked child that chdirs there first (Docker's overlay2 trick), so ~500 layers fit the page.

Options always pinned, whatever the kernel's defaults: ``redirect_dir=off`` and ``metacopy=off``
(so an upper dir is a plain, self-contained diff: no redirect xattrs, no metadata-only copy-ups
that ``diff`` would mis-read) and ``index=off`` (a snapshot may be mounted twice).
"""

from __future__ import annotations

import contextlib
import errno
import os

from backends.linux import libc

# The page, minus a little for the kernel's own needs (the terminating NUL).
MAX_MOUNT_DATA = 4000
_PINNED = (("redirect_dir", "off"), ("metacopy", "off"), ("index", "off"))


def _escape(path: str) -> str:
    """Escape a path for the classic overlay option string (``,`` ``:`` ``\\`` are special)."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlay_data(lowers: list[str], upper: str | None = None, work: str | None = None,
                 volatile: bool = False) -> str:
    """The classic ``mount(2)`` data string for an overlay of ``lowers`` (top first)."""
    opts = ["lowerdir=" + ":".join(_escape(p) for p in lowers)]
    if upper is not None:
        assert work is not None
        opts += [f"upperdir={_escape(upper)}", f"workdir={_escape(work)}"]
        if volatile:
            opts.append("volatile")
    opts += [f"{k}={v}" for k, v in _PINNED]
    return ",".join(opts)


def mount_overlay(target: str, lowers: list[str], upper: str | None = None, work: str | None = None,
                  readonly: bool = False, force_new_api: bool = False, force_relative: bool = False,
                  volatile: bool = False) -> None:
    """Mount an overlay at ``target``. Needs at least two lowers without an upper on kernels
    before 6.x, so callers pad a lone lower with an empty dir.

    ``volatile`` (with an upper; Linux 5.10+): overlayfs skips every sync of the upper
    filesystem, including the ``syncfs`` that unmounting otherwise does (which flushes the
    whole upper filesystem: other tenants' dirty data too). It leaves ``work/work/incompat/
    volatile`` behind, which refuses any later mount of the same upper/work pair until removed
    (see :func:`clear_volatile`).

    Raises the ``OSError`` of the failing syscall (``filename`` = target or the refused option).
    """
    if not lowers:
        raise OSError(errno.EINVAL, "overlay needs at least one lower dir", target)
    data = overlay_data(lowers, upper, work, volatile)
    flags = libc.MS_RDONLY if readonly else 0
    if not force_new_api and not force_relative and len(data.encode()) <= MAX_MOUNT_DATA:
        libc.mount("overlay", target, "overlay", flags, data)
        return
    if not force_relative:
        try:
            _mount_overlay_fsconfig(target, lowers, upper, work, readonly, volatile)
            return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):  # "lowerdir+" is Linux >= 6.8
                raise
    _mount_overlay_relative(target, lowers, upper, work, flags, volatile)


def clear_volatile(work: str) -> None:
    """Remove the marker a ``volatile`` mount leaves in ``work`` (if any), so the upper/work
    pair can be mounted again (what containers/storage does for podman's ``--rm`` mounts)."""
    marker = os.path.join(work, "work", "incompat", "volatile")
    if os.path.isdir(marker):
        for name in os.listdir(marker):
            os.unlink(os.path.join(marker, name))
        os.rmdir(marker)


def _mount_overlay_relative(target: str, lowers: list[str], upper: str | None, work: str | None,
                            flags: int, volatile: bool = False) -> None:
    """Older kernels: the classic call with paths relative to the lowers' common directory
    (``12/fs`` instead of ``/var/lib/…/snapshots/12/fs``), as Docker's overlay2 does, made in a
    forked child so the daemon's working directory (shared by its threads) never changes."""
    paths = [p for p in (*lowers, upper, work) if p is not None]
    base = os.path.commonpath(paths)
    rel = [os.path.relpath(p, base) for p in paths]
    data = overlay_data(rel[:len(lowers)], rel[len(lowers)] if upper is not None else None,
                        rel[len(lowers) + 1] if upper is not None else None, volatile)
    if len(data.encode()) > MAX_MOUNT_DATA:
        raise OSError(errno.E2BIG, f"overlay of {len(lowers)} layers: options exceed one page", target)
    abs_target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # the child: chdir + mount(2) + _exit, nothing else
        code = 0
        try:
            os.chdir(base)
            libc.mount("overlay", abs_target, "overlay", flags, data)
        except OSError as e:
            code = e.errno or 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = code if code > 0 else errno.EIO
        raise OSError(err, f"mount overlay ({len(lowers)} layers, relative paths): {os.strerror(err)}",
                      target)


def _mount_overlay_fsconfig(target: str, lowers: list[str], upper: str | None, work: str | None,
                            readonly: bool, volatile: bool = False) -> None:
    fsfd = libc.fsopen("overlay")
    try:
        for lower in lowers:  # top first, as in "lowerdir=top:…:bottom"
            libc.fsconfig(fsfd, libc.FSCONFIG_SET_STRING, "lowerdir+", lower)
        if upper is not None:
            assert work is not None
            libc.fsconfig(fsfd, libc.FSCONFIG_SET_STRING, "upperdir", upper)
            libc.fsconfig(fsfd, libc.FSCONFIG_SET_STRING, "workdir", work)
            if volatile:
                libc.fsconfig(fsfd, libc.FSCONFIG_SET_FLAG, "volatile")
        for key, value in _PINNED:
            libc.fsconfig(fsfd, libc.FSCONFIG_SET_STRING, key, value)
        libc.fsconfig(fsfd, libc.FSCONFIG_CMD_CREATE)
        mntfd = libc.fsmount(fsfd, libc.FSMOUNT_CLOEXEC, libc.MOUNT_ATTR_RDONLY if readonly else 0)
    finally:
        os.close(fsfd)
    try:
        libc.move_mount(mntfd, target)
    finally:
        os.close(mntfd)  # a detached mount that was never attached vanishes with its last fd


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    if "\\" not in field:
        return field
    out, i = bytearray(), 0
    raw = field.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Every mount point of this mount namespace → its filesystem type (last mount wins)."""
    found: dict[str, str] = {}
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 7:
                continue
            sep = fields.index("-", 6)
            found[_unescape(fields[4])] = fields[sep + 1]
    return found


def is_mount_point(path: str) -> bool:
    return path in mount_points()


def unmount(target: str) -> None:
    """Unmount ``target`` (never following a symlink there); a busy mount is detached lazily
    (open files keep it alive until closed, as ``umount -l``)."""
    try:
        libc.umount2(target, libc.UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        libc.umount2(target, libc.UMOUNT_NOFOLLOW | libc.MNT_DETACH)


def unmount_quietly(target: str) -> None:
    with contextlib.suppress(OSError):
        unmount(target)
