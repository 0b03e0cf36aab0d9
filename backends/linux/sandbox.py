"""The child side of spawning a container process: from a freshly forked child to ``execve``.

Two entry points, called by the processes role (``backends.linux.processes`` / the monitor) in
a forked, single-threaded child whose fds 0-2 are already set up:

* :func:`init_main` — becomes the container's init. The caller has unshared CLONE_NEWPID and
  forked, so this process is PID 1 of the new pid namespace.
* :func:`exec_main` — a ``docker exec`` process. The caller has joined the target's pid
  namespace and forked.

Both either ``execve`` the container's program or raise ``OSError`` (with errno, a "what on
what" message and ``filename``), which the caller sends to the daemon over its error pipe. Fds
above 2 are marked close-on-exec (``close_range(3, ~0, CLOSE_RANGE_CLOEXEC)``) just before
``execve``: nothing of the daemon leaks into the container, while the caller's error pipe keeps
working until the exec succeeds. ``execve`` replaces the whole image, so /proc/self/exe is the
container's own binary, never the host's Python.

Order (runc's ``standard_init_linux`` / ``setns_init_linux``): join the cgroup, then namespaces,
then the mount namespace (rootfs, /proc, /sys, /dev, mounts, pivot_root, masked paths,
read-only root), hostname, rlimits; resolve the user inside the container; then security:
without no_new_privs the seccomp filter needs CAP_SYS_ADMIN, so it is loaded *before* dropping
capabilities; with no_new_privs it is loaded last, right before ``execve``. Everything that
needs the host's filesystem (libseccomp, a profile file, Python modules) is loaded before
``pivot_root``.

Callers: after ``pivot_root`` / ``setns(mnt)`` this process can import nothing more (the
container has no Python); serialise errors with modules imported beforehand.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import socket
import struct
from collections.abc import Callable
from typing import NoReturn

from backends.linux import caps, libc, sandbox_mounts, seccomp
from backends.linux.caps import DEFAULT_CAPS
from backends.linux.sandbox_user import check_cwd, env_get, look_path, resolve_user
from backends.linux.seccomp import default_profile
from engine.kernel import ExecSpec, Namespace, Rlimit, SpawnSpec

__all__ = ["DEFAULT_CAPS", "default_profile", "exec_main", "init_main", "preload", "resolve_user"]

CLOSE_RANGE_CLOEXEC = 4
#: If set, called (and never raising) right before the child waits for its gate, its sandbox
#: set up: a pre-forked child that learns its pages reports them there (``monitor_child``).
before_gate: Callable[[], None] | None = None
_RLIMITS = {
    "as": resource.RLIMIT_AS, "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA, "fsize": resource.RLIMIT_FSIZE, "locks": 10,
    "memlock": resource.RLIMIT_MEMLOCK, "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO, "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
}
# namespaces exec joins, in runc's order (mnt last: it changes root and cwd)
_EXEC_NS = (("cgroup", libc.CLONE_NEWCGROUP), ("ipc", libc.CLONE_NEWIPC), ("uts", libc.CLONE_NEWUTS),
            ("net", libc.CLONE_NEWNET), ("mnt", libc.CLONE_NEWNS))
_PRIVATE_NS = ((Namespace.UTS, libc.CLONE_NEWUTS), (Namespace.IPC, libc.CLONE_NEWIPC),
               (Namespace.CGROUP, libc.CLONE_NEWCGROUP))


def init_main(spec: SpawnSpec, *, cgroup_procs: list[str], netns_path: str | None,
              gate: int | None = None) -> NoReturn:
    """Turn this process (PID 1 of a new pid namespace) into the container's init and exec it.

    Raises:
        OSError: any step failed (``FileNotFoundError`` for a missing rootfs, cgroup, netns,
        cwd or executable; ``PermissionError`` for a non-executable; ``OSError(EINVAL)`` for
        an unknown user/group or capability; ``OSError(EPERM)`` naming an rlimit that cannot
        be raised; ``OSError(ECANCELED)`` when the caller closed ``gate`` without a byte).

    ``gate``: an fd to read one byte from before the security steps and ``execve`` (see
    :func:`wait_gate`), so the caller can prepare its side in parallel and still stop us
    before anything of the container runs.
    """
    os.umask(0o022)
    if not os.path.isdir(spec.rootfs):
        raise FileNotFoundError(errno.ENOENT, f"rootfs {spec.rootfs} does not exist", spec.rootfs)
    join_cgroup(cgroup_procs)
    new_net = netns_path is None and Namespace.NET in spec.namespaces
    if netns_path is not None:
        _setns_path(netns_path, libc.CLONE_NEWNET)
    flags = libc.CLONE_NEWNS | (libc.CLONE_NEWNET if new_net else 0)
    for kind, flag in _PRIVATE_NS:
        if kind in spec.namespaces:
            flags |= flag
    try:
        libc.unshare(flags)
    except OSError as e:
        raise OSError(e.errno, f"unshare namespaces: {e.strerror}") from None
    if new_net:
        _loopback_up()
    capset = caps.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
    profile = None if spec.privileged else _compile(spec.seccomp_profile, capset)
    _setup_mounts(spec)
    if Namespace.UTS in spec.namespaces and spec.hostname:
        try:
            libc.sethostname(spec.hostname)
        except OSError as e:
            raise OSError(e.errno, f"sethostname {spec.hostname!r}: {e.strerror}") from None
    set_rlimits(spec.rlimits)
    if spec.create_cwd and spec.cwd:
        try:  # Docker creates a missing WorkingDir (root-owned, 0755) before the process starts
            os.makedirs(spec.cwd, 0o755, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"create working directory {spec.cwd}: {e.strerror}", spec.cwd) from None
    _finish(spec.argv, spec.env, spec.cwd or "/", spec.user, capset, spec.no_new_privileges, profile,
            gate)


def exec_main(target_pid: int, spec: ExecSpec, init_spec_cwd: str, *, cgroup_procs: list[str],
              init_spec: SpawnSpec | None = None, gate: int | None = None) -> NoReturn:
    """Join the sandbox of ``target_pid`` (already in its pid namespace) and exec ``spec.argv``.

    The container's security settings are taken from ``init_spec`` when given, otherwise read
    from the target itself: its bounding set is the container's capability set, its
    NoNewPrivs flag, and (when it runs under seccomp) Docker's default profile for those
    capabilities. ``spec.privileged`` grants every capability, as ``docker exec --privileged``.

    Raises:
        ProcessLookupError: the target is gone; otherwise as :func:`init_main`.
    """
    os.umask(0o022)
    fds: list[tuple[str, int, int]] = []
    try:
        for name, flag in _EXEC_NS:
            path = f"/proc/{target_pid}/ns/{name}"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ProcessLookupError(errno.ESRCH, f"process {target_pid} has exited") from None
            if _same_file(fd, f"/proc/self/ns/{name}"):
                os.close(fd)
            else:
                fds.append((name, flag, fd))
        status = _proc_status(target_pid)
        if init_spec is not None:
            capset = caps.resolve(init_spec.cap_add, init_spec.cap_drop, init_spec.privileged)
            nnp = init_spec.no_new_privileges
            profile = None if init_spec.privileged else _compile(init_spec.seccomp_profile, capset)
        else:
            capset = caps.from_mask(int(status.get("CapBnd", "0"), 16)) & caps.all_caps()
            nnp = status.get("NoNewPrivs", "0") == "1"
            profile = _compile(None, capset) if status.get("Seccomp", "0") != "0" else None
        if spec.privileged:
            capset = caps.all_caps()
        _copy_rlimits(target_pid)
        join_cgroup(cgroup_procs)
        for name, flag, fd in fds:
            try:
                libc.setns(fd, flag)
            except OSError as e:
                raise OSError(e.errno, f"join {name} namespace of {target_pid}: {e.strerror}") from None
    finally:
        for _, _, fd in fds:
            os.close(fd)
    os.chdir("/")  # setns(mnt) moved root and cwd to the container's root already
    _finish(spec.argv, spec.env, spec.cwd or init_spec_cwd or "/", spec.user, capset, nnp, profile, gate)


# ---- steps ---------------------------------------------------------------------------------
def join_cgroup(cgroup_procs: list[str]) -> None:
    """Move this process into the cgroup (one ``cgroup.procs`` file per v1 controller).

    The caller is single-threaded, so on v1 it writes its own thread into the sibling ``tasks``
    file instead: the same move, but migrating only ``current`` lets the kernel skip the global
    threadgroup lock, whose first writer waits a whole RCU grace period (1-15 ms here, the
    largest single cost of a container start). v2 has no ``tasks`` file: ``cgroup.procs`` there.
    """
    for procs in cgroup_procs:
        path = procs[:-len("cgroup.procs")] + "tasks" if procs.endswith("/cgroup.procs") else procs
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if path == procs:
                    raise
                path = procs  # v2: no tasks file (or no such cgroup: this open says so)
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"join cgroup {path}: {e.strerror}", path) from None


def set_rlimits(rlimits: tuple[Rlimit, ...] | list[Rlimit]) -> None:
    """Apply ``--ulimit`` values; raising a hard limit fails (EPERM) without CAP_SYS_RESOURCE."""
    for rl in rlimits:
        name = rl.name.lower().removeprefix("rlimit_")
        if name not in _RLIMITS:
            raise OSError(errno.EINVAL, f"unknown rlimit {rl.name!r}")
        soft = resource.RLIM_INFINITY if rl.soft < 0 else rl.soft
        hard = resource.RLIM_INFINITY if rl.hard < 0 else rl.hard
        try:
            resource.setrlimit(_RLIMITS[name], (soft, hard))
        except (ValueError, OSError) as e:
            code = errno.EINVAL if soft > hard and hard != resource.RLIM_INFINITY else errno.EPERM
            raise OSError(code, f"setrlimit {name} {rl.soft}:{rl.hard}: {e}") from None


def _setup_mounts(spec: SpawnSpec) -> None:
    libc.mount(None, "/", None, libc.MS_SLAVE | libc.MS_REC)
    sandbox_mounts._mount("rootfs", spec.rootfs, spec.rootfs, None, libc.MS_BIND | libc.MS_REC)
    root = sandbox_mounts.Root(spec.rootfs)
    try:
        sandbox_mounts.mount_proc_sys(root, spec.privileged)
        sandbox_mounts.mount_dev(root)
        for m in spec.mounts:
            sandbox_mounts.mount_extra(root, m)
        sandbox_mounts.mount_etc_files(root, spec.etc_files)
    finally:
        root.close()
    sandbox_mounts.pivot(spec.rootfs)
    if not spec.privileged:
        sandbox_mounts.mask_paths()
    if spec.readonly_rootfs:
        sandbox_mounts.remount_ro("/")


def wait_gate(gate: int | None) -> None:
    """Block until the caller writes a byte on ``gate`` (None: no gate); EOF means give up.

    Raises:
        OSError(ECANCELED): the caller closed the gate without a byte.
    """
    if gate is None:
        return
    while True:
        try:
            go = os.read(gate, 1)
            break
        except InterruptedError:
            continue
    os.close(gate)
    if not go:
        raise OSError(errno.ECANCELED, "start cancelled by the monitor")


def _finish(argv: tuple[str, ...], env: tuple[str, ...], cwd: str, user: str, capset: frozenset[str],
            nnp: bool, profile: bytes | None, gate: int | None = None) -> NoReturn:
    """Inside the container: (the gate), user, capabilities, no_new_privs, seccomp, fds, execve."""
    if not argv:
        raise OSError(errno.EINVAL, "empty command")
    if before_gate is not None:
        before_gate()
    wait_gate(gate)
    uid, gid, groups, home = resolve_user("/", user)
    envl = list(env)
    if env_get(envl, "HOME") is None:
        envl.append(f"HOME={home}")
    check_cwd(cwd)
    if profile is not None and not nnp:
        seccomp.install_bpf(profile)  # needs CAP_SYS_ADMIN: before the capabilities go
    caps.drop_bounding(capset)
    caps.switch_user(uid, gid, groups, capset)
    try:
        os.chdir(cwd)
    except OSError as e:
        raise OSError(e.errno, f"chdir to {cwd}: {e.strerror}", cwd) from None
    path = look_path(argv[0], envl, cwd)
    if nnp:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
        if profile is not None:
            seccomp.install_bpf(profile)
    libc.close_range(3, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC)
    try:
        os.execve(path, list(argv), dict(_split_env(envl)))
    except OSError as e:
        raise OSError(e.errno, f"exec {argv[0]}: {e.strerror}", path) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _split_env(env: list[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in (item.partition("=") for item in env) if k]


def preload() -> None:
    """Warm a fork server (the zygote): build Docker's default seccomp program for the default
    capabilities once (~30 ms), so containers forked from here install it in microseconds."""
    _compile(None, DEFAULT_CAPS)
    caps.last_cap()


def _compile(profile_spec: str | None, capset: frozenset[str]) -> bytes | None:
    """The seccomp BPF program for ``--security-opt seccomp=<profile_spec>`` (None: none).

    Runs before pivot_root: a profile file and libseccomp are host files."""
    if not profile_spec:
        cached = seccomp.cached_bpf("default", capset)
        if cached is not None:  # the fork server built it (no profile to build per container)
            return cached
    profile = seccomp.resolve_profile(profile_spec)
    if profile is None:
        return None
    return seccomp.bpf_for(profile, capset, "default" if not profile_spec else None)


def _setns_path(path: str, flag: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"namespace {path}: {e.strerror}", path) from None
    try:
        libc.setns(fd, flag)
    except OSError as e:
        raise OSError(e.errno, f"join namespace {path}: {e.strerror}", path) from None
    finally:
        os.close(fd)


def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (Docker's ``--network none`` has lo up)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def _same_file(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return {k: v.strip() for k, _, v in (ln.partition(":") for ln in fh)}
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited") from None


def _copy_rlimits(pid: int) -> None:
    """Give the exec'd process the container init's rlimits (best effort: lowering always works,
    raising above our hard limit does not without CAP_SYS_RESOURCE)."""
    for res in set(_RLIMITS.values()):
        try:
            resource.setrlimit(res, resource.prlimit(pid, res))
        except (OSError, ValueError):
            pass
