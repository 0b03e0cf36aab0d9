"""The Kernel interface: the only door from the engine to the operating system.

The engine core (``engine/``) is pure policy. Everything that touches the OS — processes,
namespaces, the union filesystem, cgroups, network links — goes through the Protocols below.
Two implementations exist and must behave alike:

* ``backends.linux.LinuxKernel`` — the real thing (namespaces, overlayfs, cgroup v1/v2, netlink);
* ``sim.SimKernel`` — an in-memory behavioural twin with a virtual clock and fault injection.

The contract suite ``tests/contract/kernel`` runs unchanged against both. **These docstrings are
the specification**: if a docstring does not say it, the sim is not obliged to do it; if it does,
both backends must.

Vocabulary
----------
pid
    A process id *as the host sees it*. Only processes created by :meth:`Processes.spawn` or
    :meth:`Processes.exec` of the same kernel (or adopted through :meth:`Processes.sandboxes`)
    may be addressed; any other pid is "no such process" (``ProcessLookupError``, ESRCH).
sandbox
    The set of namespaces created for one spawned process (its "init"); identified by the
    caller's ``SpawnSpec.id`` (the container id). ``exec`` joins a sandbox.
snapshot key
    A caller-chosen name for a snapshot (containerd style). *Committed* snapshots are read-only
    layers made by :meth:`Snapshots.apply_layer`; *active* snapshots are writable and made by
    :meth:`Snapshots.prepare`. A snapshot's *parent* is another committed snapshot (or None);
    the chain parent→…→root is the stack of lower layers.
cgroup path
    A relative path such as ``"wharfie/<id>"`` below the backend's cgroup root.

Errors
------
Every failure is an :class:`OSError` with a real errno, raised alike by both backends:
``FileNotFoundError`` (ENOENT), ``FileExistsError`` (EEXIST), ``ProcessLookupError`` (ESRCH),
``PermissionError`` (EPERM/EACCES), ``OSError(EBUSY)``, ``OSError(EINVAL)``,
``OSError(ENOSPC)``, ``OSError(EAGAIN)``. The engine translates them into ``EngineError``\\ s at the
call site, adding what it was doing and on what.

Concurrency
-----------
Methods are coroutines. A backend does any blocking work off the event loop (thread pool); the
sim completes instantly except where a method waits on simulated time (``wait``, ``Stdio.read``).
Durations are measured on the running event loop's clock (``loop.time()``); the sim's virtual
clock *is* that loop clock (see ``sim.loop.VirtualTimeLoop``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import BinaryIO, NewType, Protocol, runtime_checkable

Pid = NewType("Pid", int)

# Linux signal numbers, spelled out so the engine and the sim never depend on the host's
# ``signal`` module (Windows and macOS numbers differ or are missing).
SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "PWR": 30, "SYS": 31,
}
SIGKILL = SIGNALS["KILL"]
SIGTERM = SIGNALS["TERM"]
SIGSTOP = SIGNALS["STOP"]
SIGRTMIN, SIGRTMAX = 34, 64


class Namespace(enum.StrEnum):
    """Linux namespace kinds (the names of /proc/<pid>/ns entries)."""

    PID = "pid"
    MOUNT = "mnt"
    UTS = "uts"
    IPC = "ipc"
    NET = "net"
    CGROUP = "cgroup"
    USER = "user"


DEFAULT_NAMESPACES = frozenset(
    {Namespace.PID, Namespace.MOUNT, Namespace.UTS, Namespace.IPC, Namespace.NET, Namespace.CGROUP}
)


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: exactly one of ``code`` (normal exit) or ``signal`` (killed) is set."""

    code: int | None = None
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        """The shell/Docker convention: the code, or 128 + the signal number."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 0


@dataclass(frozen=True, slots=True)
class LogSpec:
    """Where a process's stdout/stderr go: a json-file log (see ``engine.containers.logfile``).

    ``max_size`` bytes per file before rotation (0 = never rotate), ``max_files`` kept in all.
    """

    path: str
    max_size: int = 10 * 1024 * 1024
    max_files: int = 3


@dataclass(frozen=True, slots=True)
class StdioSpec:
    """The stdio of a spawned or exec'd process.

    Output is always written to ``log`` (when set) by the backend itself (the per-container
    monitor on Linux), so it is kept while the daemon is down. ``stdin_open`` keeps a stdin pipe
    that :meth:`Processes.stdio` can write to; otherwise stdin is /dev/null. With ``tty`` the
    process gets a pseudo-terminal: stdout and stderr are one stream (reported as fd 1).

    ``attach_grace`` holds the output back (in the pipe) for up to that many seconds until a
    first :meth:`Processes.stdio` attach, so a caller that attaches right after ``spawn`` sees
    the output from the very start. 0 = output flows to the log at once (the engine's case: it
    reads the log).
    """

    log: LogSpec | None = None
    stdin_open: bool = False
    tty: bool = False
    attach_grace: float = 0.0


@dataclass(frozen=True, slots=True)
class MountSpec:
    """An extra mount inside the sandbox: ``kind`` is "tmpfs" or "bind"."""

    kind: str
    target: str
    source: str = ""
    readonly: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rlimit:
    name: str  # e.g. "nofile", "nproc"
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """Everything needed to start a sandboxed process (a container's init).

    ``rootfs`` is a path where a snapshot is mounted (:meth:`Snapshots.mount`); ``argv[0]`` is
    looked up in ``PATH`` from ``env`` inside that rootfs when it has no slash. ``user`` uses
    Docker's syntax (``""``, ``uid``, ``uid:gid``, ``name``, ``name:group``) resolved against the
    rootfs's /etc/passwd and /etc/group. ``cgroup`` (if set) must exist (:meth:`Cgroups.create`).
    ``netns`` names an existing network namespace to join instead of creating one.
    With ``create_cwd`` a missing ``cwd`` is created (``mkdir -p``, mode 0755, owned by root),
    as Docker does for an image's WorkingDir; without it a missing cwd is an error.
    """

    id: str
    argv: tuple[str, ...]
    rootfs: str
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    namespaces: frozenset[Namespace] = DEFAULT_NAMESPACES
    netns: str | None = None
    cgroup: str | None = None
    stdio: StdioSpec = field(default_factory=StdioSpec)
    mounts: tuple[MountSpec, ...] = ()
    readonly_rootfs: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    seccomp_profile: str | None = None  # None = the default profile, "unconfined" = none
    etc_files: tuple[tuple[str, bytes], ...] = ()  # generated /etc/hostname, hosts, resolv.conf
    create_cwd: bool = False


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """A process to start inside a running sandbox (``docker exec``)."""

    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = ""  # "" = the sandbox init's cwd
    user: str = ""
    stdio: StdioSpec = field(default_factory=StdioSpec)
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process as ``top`` shows it (pids are host pids)."""

    pid: Pid
    ppid: int
    uid: int
    argv: tuple[str, ...]
    state: str  # "R", "S", "T" (frozen/stopped), "Z"
    start_time: float  # wall-clock epoch seconds
    cpu_seconds: float = 0.0
    rss: int = 0


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """A sandbox the backend knows of, for re-adoption after a daemon restart."""

    id: str
    pid: Pid
    exit_status: ExitStatus | None  # None while running


@runtime_checkable
class Stdio(Protocol):
    """A live attachment to a process's stdio (``docker attach``).

    A backend whose stdio has a log may also set ``log_position``: ``(inode, size)`` of the live
    log file at the moment the attachment began — output logged below ``size`` is not delivered
    by :meth:`read`, everything logged after is (lets a caller that also reads the log take each
    chunk exactly once). Absent or None: the backend does not tell.
    """

    async def read(self) -> tuple[int, bytes] | None:
        """Next chunk of output as ``(fd, data)`` (fd 1 or 2) produced after the attach began.

        Returns None once the process has exited and all its output was delivered.
        """

    async def write(self, data: bytes) -> None:
        """Write to the process's stdin. ``BrokenPipeError`` (EPIPE) if stdin is closed."""

    async def close_stdin(self) -> None:
        """Close stdin: the process reads EOF. Idempotent."""

    async def resize(self, rows: int, cols: int) -> None:
        """Resize the tty. ``OSError(ENOTTY)`` if the process has no tty."""

    def close(self) -> None:
        """Detach; the process keeps running."""


class Processes(Protocol):
    """Processes role: spawn sandboxed processes, signal, wait, exec, list, attach."""

    async def spawn(self, spec: SpawnSpec) -> Pid:
        """Start ``spec.argv`` in new namespaces over ``spec.rootfs``.

        Returns once the process has been exec'd (so a failed exec is reported here, not as an
        exit). Raises ``FileNotFoundError`` if the rootfs, the executable or ``cwd`` does not
        exist (``filename`` names the missing path); ``PermissionError`` if the executable is not
        executable; ``OSError(ENOEXEC)`` if it is not a program the backend can run;
        ``OSError(EINVAL)`` for an unknown user or group (message says which);
        ``FileNotFoundError`` if ``cgroup`` or ``netns`` does not exist; ``FileExistsError`` if a
        sandbox with ``spec.id`` is still running (an exited, unreleased one is replaced; its pid
        stays valid until released). Nothing is left behind on failure.
        """

    async def exec(self, target: Pid, spec: ExecSpec) -> Pid:
        """Start a process inside the sandbox of ``target`` (all its namespaces and its cgroup).

        Raises ``ProcessLookupError`` if ``target`` is unknown or has exited, and the errors of
        :meth:`spawn` for the executable, cwd and user. A frozen sandbox refuses with
        ``OSError(EBUSY)``; a sandbox at its pids limit with ``OSError(EAGAIN)``.
        """

    async def signal(self, pid: Pid, sig: int) -> None:
        """Send ``sig`` (1..64) to ``pid``.

        As on Linux, the init of a pid namespace ignores signals it has no handler for, except
        SIGKILL (and SIGSTOP). Raises ``ProcessLookupError`` if ``pid`` is unknown or has exited,
        ``OSError(EINVAL)`` for an invalid signal number.
        """

    async def wait(self, pid: Pid, timeout: float | None = None) -> ExitStatus | None:
        """Wait for ``pid`` to exit; return its status, or None if ``timeout`` seconds passed.

        ``timeout=0`` polls. The status stays available (wait may be repeated) until
        :meth:`release`. When a sandbox's init exits, every other process in its pid namespace is
        killed (SIGKILL), as the kernel does. Raises ``ProcessLookupError`` for an unknown pid.
        """

    async def release(self, pid: Pid) -> None:
        """Forget an exited process (and its sandbox's namespaces).

        Raises ``ProcessLookupError`` if unknown, ``OSError(EBUSY)`` if it is still running.
        """

    async def processes(self, pid: Pid) -> list[ProcessInfo]:
        """All live processes of the sandbox whose init is ``pid`` (init first).

        Raises ``ProcessLookupError`` if ``pid`` is not a live sandbox init.
        """

    async def stdio(self, pid: Pid) -> Stdio:
        """Attach to the stdio of a live spawned/exec'd process.

        Raises ``ProcessLookupError`` if it is unknown or has exited.
        """

    async def sandboxes(self) -> list[SandboxInfo]:
        """Every sandbox this backend knows of (running or exited and not yet released).

        On Linux this includes sandboxes started by an earlier daemon (their monitors kept them),
        which makes live-restore possible; the returned pids may then be used with every method.
        """


class SnapshotKind(enum.StrEnum):
    COMMITTED = "committed"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    key: str
    kind: SnapshotKind
    parent: str | None
    size: int  # bytes of file content held by this snapshot alone (not its parents)


@dataclass(frozen=True, slots=True)
class LayerLimits:
    """Caps applied while unpacking a layer (size and header bombs)."""

    max_bytes: int = 64 * 1024**3
    max_entries: int = 2_000_000
    max_path: int = 4096


class Snapshots(Protocol):
    """Snapshots role: the union filesystem (image layers and container write layers).

    Overlay semantics: a file in an upper snapshot hides the same path below; a *whiteout*
    hides a lower path; an *opaque* directory hides everything below it. In a layer tar these
    are spelled the OCI way: ``dir/.wh.name`` (whiteout of ``name``) and ``dir/.wh..wh..opq``
    (opaque ``dir``).
    """

    async def apply_layer(
        self, key: str, parent: str | None, tar: BinaryIO, limits: LayerLimits | None = None
    ) -> SnapshotInfo:
        """Unpack an *uncompressed* tar stream as the committed snapshot ``key`` over ``parent``.

        Entries are placed inside the layer only: a name with ``..`` climbing above the root is
        refused, a leading ``/`` is stripped (as Docker does), an entry whose path runs through a
        symlink is resolved inside the layer root, never outside it. Symlinks themselves are
        stored as they are (absolute and ``../`` targets are normal; they resolve inside the
        container's root at run time). Hardlinks must point to an entry of the same layer or a
        file of a parent layer (copied up). Device nodes are refused; fifos are fine.
        A truncated stream, a corrupt header, a missing end-of-archive marker or an empty stream
        is malformed.

        ``tar`` is only ever ``read()`` (forward, from the calling or a worker thread): a pipe
        fed by another thread while the layer arrives is fine.

        Raises ``FileExistsError`` if ``key`` exists, ``FileNotFoundError`` if ``parent`` does
        not, ``OSError(EINVAL)`` if ``parent`` is active, or for a malformed or hostile entry
        (message and ``filename`` name the entry), ``OSError(EFBIG)`` when a limit is exceeded
        (total bytes, entries, or a huge PAX/long-name header), ``OSError(ENOSPC)`` when the disk
        is full. On any failure nothing of ``key`` remains.
        """

    async def bind_layer(self, staged: str, key: str, parent: str | None) -> SnapshotInfo:
        """Turn the parentless committed snapshot ``staged`` into the committed ``key`` over
        ``parent`` — the result is exactly what ``apply_layer(key, parent, tar)`` would have
        made from the tar that ``apply_layer(staged, None, tar)`` unpacked.

        This lets a layer be unpacked *while it arrives*, before anyone knows which layer it
        is: directories the tar implies without an entry of their own (``a/b/f`` with no ``a/``
        entry) take the owner, mode and mtime of the same directory in ``parent``'s chain, as
        ``apply_layer`` with that parent gives them. (A hardlink to a file of a parent layer
        cannot be staged: ``apply_layer(staged, None, …)`` refuses it with ``OSError(EINVAL)``;
        apply such a layer with its real parent.) ``staged`` no longer exists afterwards.

        Raises ``FileNotFoundError`` if ``staged`` or ``parent`` does not exist,
        ``FileExistsError`` if ``key`` does, ``OSError(EINVAL)`` if ``staged`` is active or has
        a parent, or ``parent`` is active, ``OSError(EBUSY)`` if ``staged`` is mounted or is
        the parent of a snapshot. On failure nothing changes.
        """

    async def prepare(self, key: str, parent: str | None) -> None:
        """Create the active (writable) snapshot ``key`` over the committed ``parent``.

        Raises ``FileExistsError``, ``FileNotFoundError`` (parent), ``OSError(EINVAL)`` if the
        parent is not committed.
        """

    async def mount(self, key: str, target: str, readonly: bool = False, volatile: bool = False) -> None:
        """Mount the union view of ``key`` (and its parents) at ``target`` (created if needed).

        A committed snapshot is always mounted read-only, whatever ``readonly`` says.
        ``volatile``: the caller will discard what is written through this view (``run --rm``),
        so the backend may skip making it durable: ``fsync`` inside the view and ``unmount``
        then flush nothing to disk (overlayfs ``volatile``). Reads, ``diff`` and a later
        non-volatile mount of the same snapshot see every write as usual.

        Raises ``FileNotFoundError`` (key), ``OSError(EBUSY)`` if ``target`` already has a mount.
        """

    async def unmount(self, target: str) -> None:
        """Unmount ``target``. Raises ``OSError(EINVAL)`` if nothing is mounted there,
        ``OSError(EBUSY)`` if a live process still uses it as its root."""

    async def diff(self, key: str, out: BinaryIO) -> int:
        """Write the changes of active ``key`` against its parent as an OCI layer tar.

        Deleted paths become ``.wh.`` whiteouts, replaced directories ``.wh..wh..opq``. Returns
        the number of bytes written. Raises ``FileNotFoundError``, ``OSError(EINVAL)`` if ``key``
        is not active.
        """

    async def remove(self, key: str) -> None:
        """Delete snapshot ``key``. Raises ``FileNotFoundError``; ``OSError(EBUSY)`` if it is
        mounted or is the parent of another snapshot."""

    async def stat(self, key: str) -> SnapshotInfo:
        """Raises ``FileNotFoundError``."""

    async def list(self) -> list[SnapshotInfo]:
        """Every snapshot, in no particular order."""

    async def read_file(self, target: str, path: str, limit: int = 1 << 20) -> bytes:
        """Read a regular file at ``path`` inside the view mounted at ``target`` (symlinks are
        resolved inside that root). Raises ``FileNotFoundError``, ``IsADirectoryError``,
        ``OSError(EFBIG)`` if larger than ``limit``."""


@dataclass(frozen=True, slots=True)
class Resources:
    """cgroup limits; None means "no limit" (or leave unchanged, for :meth:`Cgroups.update`).

    Values are taken literally (``memory=0`` is a zero-byte limit): the engine turns Docker's
    "0 = unset" into None before it gets here.
    """

    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory+swap bytes; -1 = unlimited swap
    memory_reservation: int | None = None
    cpu_shares: int | None = None  # v1 shares (2..262144); v2 maps to weight
    cpu_quota: int | None = None  # microseconds per period; -1 = none
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None  # <=0 = unlimited
    io_weight: int | None = None  # 10..1000 (blkio weight)


@dataclass(frozen=True, slots=True)
class CgroupStats:
    memory_usage: int
    memory_limit: int | None
    memory_max_usage: int
    oom_kills: int
    pids_current: int
    pids_limit: int | None
    cpu_usage_ns: int
    frozen: bool


class Cgroups(Protocol):
    """Cgroups role: resource limits, accounting, freezing. v1 or v2 is the backend's affair."""

    async def cgroup_create(self, path: str, resources: Resources) -> None:
        """Create cgroup ``path`` with limits. Raises ``FileExistsError``; ``OSError(EINVAL)``
        for an out-of-range value (e.g. cpu_shares 1)."""

    async def cgroup_update(self, path: str, resources: Resources) -> None:
        """Change limits of a live cgroup (None fields unchanged). Lowering ``memory`` below the
        current usage reclaims or OOM-kills as the kernel would. Raises ``FileNotFoundError``,
        ``OSError(EINVAL)``."""

    async def cgroup_freeze(self, path: str) -> None:
        """Freeze every process in ``path`` (idempotent). Raises ``FileNotFoundError``."""

    async def cgroup_thaw(self, path: str) -> None:
        """Thaw (idempotent). Raises ``FileNotFoundError``."""

    async def cgroup_stats(self, path: str) -> CgroupStats:
        """Raises ``FileNotFoundError``."""

    async def cgroup_procs(self, path: str) -> list[Pid]:
        """Live pids in ``path``. Raises ``FileNotFoundError``."""

    async def cgroup_kill(self, path: str) -> None:
        """SIGKILL every process in ``path`` (frozen ones too). Raises ``FileNotFoundError``."""

    async def cgroup_remove(self, path: str) -> None:
        """Remove an empty cgroup. Raises ``FileNotFoundError``; ``OSError(EBUSY)`` while it
        holds live processes."""


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    kind: str  # "loopback", "bridge", "veth", "dummy"
    up: bool
    netns: str | None  # None = the host namespace
    master: str | None = None
    peer: str | None = None
    mtu: int = 1500
    mac: str = ""


@dataclass(frozen=True, slots=True)
class RouteInfo:
    dest: str  # CIDR or "default"
    via: str | None
    dev: str
    netns: str | None


class Network(Protocol):
    """Network role: namespaces, links, addresses, routes. ``netns=None`` is the host."""

    async def netns_create(self, name: str) -> None:
        """A new network namespace with a down ``lo``. Raises ``FileExistsError``."""

    async def netns_remove(self, name: str) -> None:
        """Remove it and every link in it (a veth's peer goes too). Raises
        ``FileNotFoundError``; ``OSError(EBUSY)`` while a live sandbox uses it."""

    async def netns_list(self) -> list[str]: ...

    async def link_add(
        self, name: str, kind: str, peer: str | None = None, netns: str | None = None
    ) -> None:
        """Create a link (``kind`` "bridge", "veth" (needs ``peer``) or "dummy"), down.
        Raises ``FileExistsError`` if ``name`` (or ``peer``) exists in that namespace,
        ``OSError(EINVAL)`` for an unknown kind or a name longer than 15 bytes,
        ``FileNotFoundError`` for an unknown netns."""

    async def link_set(
        self,
        name: str,
        netns: str | None = None,
        *,
        up: bool | None = None,
        master: str | None = None,
        move_to: str | None = None,
        mtu: int | None = None,
    ) -> None:
        """Change a link in ``netns``: state, bridge master (``""`` detaches), namespace
        (``move_to``; ``"host"`` for the host), MTU. Raises ``FileNotFoundError`` (link, netns,
        master), ``OSError(EINVAL)`` (master not a bridge), ``FileExistsError`` (name taken in
        the destination)."""

    async def link_remove(self, name: str, netns: str | None = None) -> None:
        """Delete a link (a veth takes its peer along). Raises ``FileNotFoundError``."""

    async def links(self, netns: str | None = None) -> list[LinkInfo]: ...

    async def addr_add(self, link: str, cidr: str, netns: str | None = None) -> None:
        """Raises ``FileNotFoundError`` (link), ``FileExistsError`` (address already there),
        ``OSError(EINVAL)`` (malformed CIDR)."""

    async def addr_remove(self, link: str, cidr: str, netns: str | None = None) -> None:
        """Raises ``OSError(EADDRNOTAVAIL)`` if the address is not there."""

    async def addrs(self, link: str, netns: str | None = None) -> list[str]: ...

    async def route_add(
        self, dest: str, dev: str, via: str | None = None, netns: str | None = None
    ) -> None:
        """Raises ``FileExistsError``; ``OSError(ENETUNREACH)`` if ``via`` is not on a
        connected subnet of an up link; ``FileNotFoundError`` (dev)."""

    async def route_remove(self, dest: str, netns: str | None = None) -> None:
        """Raises ``OSError(ESRCH)`` if there is no such route."""

    async def routes(self, netns: str | None = None) -> list[RouteInfo]: ...


@dataclass(frozen=True, slots=True)
class KernelInfo:
    backend: str  # "linux" or "sim"
    os: str
    kernel_version: str
    cgroup_version: int  # 1 or 2
    cpus: int
    memory: int
    features: frozenset[str] = frozenset()


class Kernel(Processes, Snapshots, Cgroups, Network, Protocol):
    """The whole interface the engine sees."""

    def info(self) -> KernelInfo: ...

    def wall_time(self) -> float:
        """Wall-clock epoch seconds (virtual in the sim) for timestamps."""

    async def close(self) -> None:
        """Release backend resources; sandboxes keep running (live-restore)."""
