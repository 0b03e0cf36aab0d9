"""Linux capabilities: names, Docker's default set, ``--cap-add/--cap-drop``, and applying a set.

Docker's rule (moby ``oci/caps.TweakCapabilities``): start from the default set (or every
capability with ``--privileged``); ``--cap-add ALL`` means every capability, ``--cap-drop ALL``
means none; then remove the drops and add the adds. Names are accepted with or without the
``CAP_`` prefix and in any case.

Applying a set follows runc's ``finalizeNamespace``: drop the rest of the bounding set, keep the
permitted set across ``setuid`` (``PR_SET_KEEPCAPS``), switch user, then set effective =
permitted = the set, inheritable and ambient empty. ``execve`` then recomputes the sets: uid 0
gets the bounding set, any other uid gets nothing (no file capabilities, no ambient set), which
is exactly Docker's behaviour for ``-u 1000`` (CapEff 0, CapBnd = the set).
"""

from __future__ import annotations

import errno
import os

from backends.linux import libc

# linux/capability.h, in bit order
NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
NUMBERS: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

#: Docker's default capability set (moby ``oci/caps/defaults.go``); mask 0xa80425fb.
DEFAULT_CAPS: frozenset[str] = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})

PR_SET_KEEPCAPS = 8


_LAST_CAP: list[int] = []  # cached: a constant of the running kernel


def last_cap() -> int:
    """The highest capability number this kernel knows (``/proc/sys/kernel/cap_last_cap``).

    Read once per process (a fork server reads it before forking: see ``sandbox.preload``)."""
    if not _LAST_CAP:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as fh:
                _LAST_CAP.append(min(int(fh.read()), len(NAMES) - 1))
        except (OSError, ValueError):
            return len(NAMES) - 1
    return _LAST_CAP[0]


def all_caps() -> frozenset[str]:
    """Every capability the running kernel supports."""
    return frozenset(NAMES[: last_cap() + 1])


def normalize(name: str) -> str:
    """``"cap_net_admin"`` → ``"NET_ADMIN"``; ``"all"`` → ``"ALL"``.

    Raises:
        OSError(EINVAL): unknown capability.
    """
    up = name.strip().upper().removeprefix("CAP_")
    if up != "ALL" and up not in NUMBERS:
        raise OSError(errno.EINVAL, f"unknown capability: {name!r}")
    return up


def resolve(cap_add: tuple[str, ...] | list[str] = (), cap_drop: tuple[str, ...] | list[str] = (),
            privileged: bool = False) -> frozenset[str]:
    """The capability set of a container (Docker's ``TweakCapabilities``)."""
    adds = [normalize(c) for c in cap_add]
    drops = [normalize(c) for c in cap_drop]
    everything = all_caps()
    if privileged:  # --privileged ignores --cap-add/--cap-drop, as Docker does
        return everything
    if "ALL" in adds:
        base = set(everything)
    elif "ALL" in drops:
        base = set()
    else:
        base = set(DEFAULT_CAPS & everything)
    base -= {d for d in drops if d != "ALL"}
    base |= {a for a in adds if a != "ALL"} & everything
    return frozenset(base)


def mask(caps: frozenset[str] | set[str]) -> int:
    """The 64-bit mask of ``caps`` (as shown in /proc/<pid>/status)."""
    m = 0
    for c in caps:
        m |= 1 << NUMBERS[c]
    return m


def from_mask(value: int) -> frozenset[str]:
    return frozenset(NAMES[i] for i in range(len(NAMES)) if value >> i & 1)


def drop_bounding(caps: frozenset[str]) -> None:
    """Drop every capability not in ``caps`` from the bounding set (needs CAP_SETPCAP)."""
    for i in range(last_cap() + 1):
        if NAMES[i] not in caps:
            try:
                libc.prctl(libc.PR_CAPBSET_DROP, i)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: the kernel does not know this cap
                    raise OSError(e.errno, f"drop capability {NAMES[i]} from the bounding set: "
                                           f"{e.strerror}") from None


def switch_user(uid: int, gid: int, groups: tuple[int, ...] | list[int], caps: frozenset[str]) -> None:
    """setgroups/setgid/setuid keeping ``caps`` permitted and effective, ambient cleared.

    Must be called while still uid 0 with the capabilities to change ids (before any
    capability was dropped from the effective set).
    """
    # what we do not hold ourselves (e.g. CAP_SYS_RESOURCE on this VM) we cannot grant
    held = proc_caps()["CapPrm"]
    libc.prctl(PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise OSError(e.errno, f"switch to user {uid}:{gid}: {e.strerror}") from None
    libc.prctl(PR_SET_KEEPCAPS, 0)
    m = mask(caps) & held
    try:
        libc.capset(m, m, 0)
    except OSError as e:
        raise OSError(e.errno, f"set capabilities: {e.strerror}") from None
    try:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: kernel without ambient capabilities (< 4.3)
            raise


def proc_caps(pid: int | str = "self") -> dict[str, int]:
    """The Cap* masks of a process from /proc/<pid>/status (``{"CapEff": …, "CapBnd": …}``)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Cap"):
                key, _, val = line.partition(":")
                out[key] = int(val.strip(), 16)
    return out
