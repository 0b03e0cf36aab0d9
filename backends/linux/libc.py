"""ctypes bindings to the libc calls Python's ``os`` module lacks.

Loads "libc.so.6" directly (``ctypes.util.find_library`` costs ~15 ms). Every wrapper raises
``OSError(errno, strerror, path)`` on failure, so callers get ``FileNotFoundError``,
``PermissionError`` … exactly like ``os`` functions.
"""

from __future__ import annotations

import ctypes
import os
import platform

_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# clone/unshare flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
MNT_FORCE = 1
UMOUNT_NOFOLLOW = 8

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2 resolve flags (linux/openat2.h)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "setns": 308, "openat2": 437, "pidfd_open": 434,
               "pidfd_send_signal": 424, "capset": 126, "capget": 125, "close_range": 436},
    "aarch64": {"pivot_root": 41, "setns": 268, "openat2": 437, "pidfd_open": 434,
                "pidfd_send_signal": 424, "capset": 91, "capget": 90, "close_range": 436},
}
NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, *paths: str | bytes | None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        filename = paths[0] if paths else None
        if isinstance(filename, bytes):
            filename = filename.decode(errors="replace")
        raise OSError(err, os.strerror(err), filename) if filename else OSError(err, os.strerror(err))
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    return s.encode() if isinstance(s, str) else s


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype))


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(NR["pivot_root"], _b(new_root), _b(put_old)), new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_IN_ROOT) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` with RESOLVE_* confinement."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _libc.syscall(NR["openat2"], ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                        ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(ret, path)


def pidfd_open(pid: int) -> int:
    if hasattr(os, "pidfd_open"):
        return os.pidfd_open(pid)
    return _check(_libc.syscall(NR["pidfd_open"], ctypes.c_int(pid), ctypes.c_uint(0)))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(_libc.syscall(NR["pidfd_send_signal"], ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets (64-bit masks)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(
        _CapData(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
        _CapData(effective >> 32, permitted >> 32, inheritable >> 32))
    _check(_libc.syscall(NR["capset"], ctypes.byref(hdr), data))


MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault the range in writable (breaks copy-on-write)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def madvise(addr: int, length: int, advice: int) -> None:
    _check(_libc.madvise(addr, length, advice))


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_libc.syscall(NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)))


# ---- the new mount API (fsopen/fsconfig/fsmount/move_mount; Linux ≥ 5.2) -------------------
# Syscall numbers ≥ 403 are shared by every architecture (asm-generic unified table).
_NEW_MOUNT_NR = {"move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432}
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    """fsopen(2): a filesystem context fd for ``fstype``."""
    return _check(_libc.syscall(_NEW_MOUNT_NR["fsopen"], _b(fstype), ctypes.c_uint(flags)))


def fsconfig(fsfd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    """fsconfig(2); ``filename`` of a failure is ``key=value`` (which parameter was refused)."""
    ret = _libc.syscall(_NEW_MOUNT_NR["fsconfig"], ctypes.c_int(fsfd), ctypes.c_uint(cmd), _b(key),
                        _b(value), ctypes.c_int(aux))
    _check(ret, f"{key}={value}" if key else None)


def fsmount(fsfd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    """fsmount(2): a detached mount fd from a created filesystem context."""
    return _check(_libc.syscall(_NEW_MOUNT_NR["fsmount"], ctypes.c_int(fsfd), ctypes.c_uint(flags),
                                ctypes.c_uint(attr_flags)))


def move_mount(from_fd: int, to_path: str, from_path: str = "", to_dirfd: int = AT_FDCWD,
               flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    """move_mount(2): attach the detached mount ``from_fd`` at ``to_path``."""
    _check(_libc.syscall(_NEW_MOUNT_NR["move_mount"], ctypes.c_int(from_fd), _b(from_path),
                         ctypes.c_int(to_dirfd), _b(to_path), ctypes.c_uint(flags)), to_path)


OPEN_TREE_CLONE = 0x1


def open_tree(dirfd: int, path: str, flags: int = OPEN_TREE_CLONE) -> int:
    """open_tree(2): a detached clone (bind) of the mount at ``path`` (close-on-exec fd)."""
    return _check(_libc.syscall(428, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags | os.O_CLOEXEC)), path)
