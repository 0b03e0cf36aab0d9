"""Reading processes from /proc: identities that survive pid reuse, and ``top`` for a sandbox."""

from __future__ import annotations

import errno
import os

from backends.linux.monitor_wire import start_ticks
from engine.kernel import Pid, ProcessInfo

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_boot: float | None = None


def boot_time() -> float:
    global _boot
    if _boot is None:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    _boot = float(line.split()[1])
                    break
            else:
                _boot = 0.0
    return _boot


def open_pidfd(pid: int, start: int) -> int | None:
    """A pidfd for ``pid`` if it is still the process that started at ``start`` ticks, else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if start_ticks(pid) == start:
            os.set_inheritable(fd, False)
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _info(pid: int) -> ProcessInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{pid}/status", "rb") as fh:
            uid = next((int(line.split()[2]) for line in fh if line.startswith(b"Uid:")), 0)
    except (FileNotFoundError, ProcessLookupError):
        return None  # gone meanwhile
    close = raw.rindex(b")")
    comm = raw[raw.index(b"(") + 1:close].decode(errors="replace")
    f = raw[close + 2:].split()
    argv = tuple(a.decode(errors="replace") for a in cmdline.split(b"\0")[:-1]) or (comm,)
    return ProcessInfo(pid=Pid(pid), ppid=int(f[1]), uid=uid, argv=argv, state=f[0].decode(),
                       start_time=boot_time() + int(f[19]) / _TICK,
                       cpu_seconds=(int(f[11]) + int(f[12])) / _TICK, rss=int(f[21]) * _PAGE)


def sandbox_processes(init: int, start: int) -> list[ProcessInfo]:
    """Live processes in the pid namespace of ``init`` (or its descendants when it has none of its
    own), init first. Raises ``ProcessLookupError`` if ``init`` is gone."""
    try:
        ns = os.readlink(f"/proc/{init}/ns/pid")
        if start_ticks(init) != start:
            raise FileNotFoundError
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(errno.ESRCH, f"no such process: {init}") from None
    pids: list[int] = []
    same_as_host = ns == os.readlink("/proc/self/ns/pid")
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    pids.append(int(name))
            except OSError:
                continue
    infos = [i for i in map(_info, sorted(pids)) if i is not None]
    if same_as_host:  # no pid namespace: the init and its descendants
        keep, grew = {init}, True
        while grew:
            grew = False
            for i in infos:
                if i.ppid in keep and i.pid not in keep:
                    keep.add(i.pid)
                    grew = True
        infos = [i for i in infos if i.pid in keep]
    infos.sort(key=lambda i: (i.pid != init, i.pid))
    if not infos or infos[0].pid != init:
        raise ProcessLookupError(errno.ESRCH, f"no such process: {init}")
    return infos
