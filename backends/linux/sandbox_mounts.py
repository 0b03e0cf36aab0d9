"""The container's mount namespace: rootfs, /proc, /sys, /dev, extra mounts, pivot_root, masks.

Runs in the container's init after ``unshare(CLONE_NEWNS)`` (see :mod:`backends.linux.sandbox`).
Follows runc's ``prepareRootfs`` / ``finalizeRootfs`` and Docker's defaults. Every mount target
inside the rootfs is resolved with ``openat2(RESOLVE_IN_ROOT)`` and mounted through its
``/proc/self/fd/N`` magic link, so a symlink planted in the image (``/dev -> /etc``) can never make
us mount over a host path (runc's securejoin / CVE-2019-16884 class of bugs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import posixpath
import stat
from collections.abc import Iterator

from backends.linux import libc
from engine.kernel import MountSpec

L = libc
NOSUID_NODEV_NOEXEC = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC

#: Docker's masked paths: files get /dev/null bound over them, directories an empty read-only tmpfs.
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
#: Docker's read-only paths.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# (name, major, minor): Docker's default devices, all 0666 root:root
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0))
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))

_FLAG_OPTS = {"ro": (L.MS_RDONLY, True), "rw": (L.MS_RDONLY, False), "nosuid": (L.MS_NOSUID, True),
              "suid": (L.MS_NOSUID, False), "nodev": (L.MS_NODEV, True), "dev": (L.MS_NODEV, False),
              "noexec": (L.MS_NOEXEC, True), "exec": (L.MS_NOEXEC, False), "sync": (16, True),
              "async": (16, False), "noatime": (1024, True), "atime": (1024, False),
              "nodiratime": (2048, True), "diratime": (2048, False), "relatime": (1 << 21, True),
              "norelatime": (1 << 21, False), "strictatime": (L.MS_STRICTATIME, True),
              "bind": (0, True), "rbind": (L.MS_REC, True)}
_PROPAGATION = {"private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC, "slave": L.MS_SLAVE,
                "rslave": L.MS_SLAVE | L.MS_REC, "shared": 1 << 20, "rshared": (1 << 20) | L.MS_REC,
                "unbindable": 1 << 17, "runbindable": (1 << 17) | L.MS_REC}
_MOVE_MOUNT_T_EMPTY_PATH = 0x40


def _mount(what: str, source: str | None, target: str, fstype: str | None, flags: int = 0,
           data: str | None = None, shown: str | None = None) -> None:
    """mount(2) with a "mount <what> on <path>: <error>" message (``shown`` is the container path)."""
    try:
        L.mount(source, target, fstype, flags, data)
    except OSError as e:
        where = shown or target
        raise OSError(e.errno, f"mount {what} on {where}: {e.strerror}", where) from None


def _parse_options(options: tuple[str, ...] | list[str], flags: int) -> tuple[int, int, str]:
    """Mount options → (flags, propagation flags, data string)."""
    prop, data = 0, []
    for opt in options:
        for part in opt.split(","):
            if not part:
                continue
            if part in _FLAG_OPTS:
                bit, on = _FLAG_OPTS[part]
                flags = flags | bit if on else flags & ~bit
            elif part in _PROPAGATION:
                prop = _PROPAGATION[part]
            else:
                data.append(part)
    return flags, prop, ",".join(data)


def _locked_flags(path: str) -> int:
    """The nosuid/nodev/noexec flags a bind remount must repeat (or it clears them)."""
    f = os.statvfs(path).f_flag
    return f & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)  # same bits as MS_*


def remount_ro(path: str, shown: str | None = None) -> None:
    """Make the (bind) mount at ``path`` read-only, keeping its other flags."""
    _mount("read-only", None, path, None,
           L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | _locked_flags(path), shown=shown)


class Root:
    """The rootfs while it is being prepared: an O_PATH fd resolving paths inside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"rootfs {path}: {e.strerror}", path) from None

    def close(self) -> None:
        os.close(self.fd)

    def _open(self, path: str, create: str | None) -> int:
        try:
            return L.openat2(self.fd, path, os.O_PATH)
        except FileNotFoundError:
            if create is None:
                raise
        self._create(path, create, 0)
        return L.openat2(self.fd, path, os.O_PATH)

    def _create(self, path: str, kind: str, depth: int) -> None:
        """``mkdir -p`` (the last component a file when ``kind`` is "file") inside the root.

        A dangling symlink on the way is followed *inside* the root and its target created,
        like runc's securejoin.MkdirAll; nothing is ever created outside the root.
        """
        if depth > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        parts = [p for p in path.split("/") if p and p != "."]
        cur = "/"
        for i, name in enumerate(parts):
            nxt = posixpath.join(cur, name)
            last = i == len(parts) - 1
            try:
                os.close(L.openat2(self.fd, nxt, os.O_PATH))
                cur = nxt
                continue
            except FileNotFoundError:
                pass
            pfd = L.openat2(self.fd, cur, os.O_PATH | os.O_DIRECTORY)
            try:
                try:
                    link: str | None = os.readlink(name, dir_fd=pfd)
                except OSError:
                    link = None
                if link is not None:  # dangling: create its target, resolved in the root
                    dest = posixpath.normpath(link if link.startswith("/") else posixpath.join(cur, link))
                    self._create(dest, kind if last else "dir", depth + 1)
                elif last and kind == "file":  # O_EXCL: never follows a symlink
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                                     dir_fd=pfd))
                else:
                    os.mkdir(name, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass  # raced with someone else: the next openat2 checks
            finally:
                os.close(pfd)
            cur = nxt

    @contextlib.contextmanager
    def target_fd(self, path: str, create: str | None = "dir") -> Iterator[int]:
        """An O_PATH fd for ``path`` inside the root (created if missing: ``create`` is "dir",
        "file" or None)."""
        try:
            fd = self._open(path, create)
        except OSError as e:
            raise OSError(e.errno, f"mount target {path}: {e.strerror}", path) from None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def target(self, path: str, create: str | None = "dir") -> Iterator[str]:
        """A mountable ``/proc/self/fd/N`` path for ``path`` inside the root (see ``target_fd``)."""
        with self.target_fd(path, create) as fd:
            yield f"/proc/self/fd/{fd}"


def mount_proc_sys(root: Root, privileged: bool) -> None:
    with root.target("/proc") as t:
        _mount("proc", "proc", t, "proc", NOSUID_NODEV_NOEXEC, shown="/proc")
    ro = 0 if privileged else L.MS_RDONLY
    with root.target("/sys") as t:
        try:
            _mount("sysfs", "sysfs", t, "sysfs", NOSUID_NODEV_NOEXEC | ro, shown="/sys")
        except PermissionError:  # a net namespace we may not mount sysfs for: the host's, read-only
            _mount("sysfs", "/sys", t, None, L.MS_BIND | L.MS_REC, shown="/sys")
    if ro and not _is_fresh_sysfs(root):
        with root.target("/sys", None) as t:
            remount_ro(t, "/sys")
    _mount_cgroups(root, ro)


def _is_fresh_sysfs(root: Root) -> bool:
    with root.target("/sys", None) as t:
        return bool(os.statvfs(t).f_flag & os.ST_RDONLY)


def _host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of the host's cgroup mounts below /sys/fs/cgroup."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4]
            fstype, _, sopts = right.split()[:3]
            if fstype in ("cgroup", "cgroup2") and (mnt == "/sys/fs/cgroup"
                                                     or mnt.startswith("/sys/fs/cgroup/")):
                out.append((mnt, fstype, sopts))
    return out


def _mount_cgroups(root: Root, ro: int) -> None:
    """/sys/fs/cgroup as Docker shows it: cgroup2 itself, or (v1) a tmpfs holding each hierarchy.
    In a private cgroup namespace each shows the container's cgroup as its root."""
    mounts = _host_cgroup_mounts()
    flags = NOSUID_NODEV_NOEXEC | ro
    if any(m == "/sys/fs/cgroup" for m, _, _ in mounts):
        with root.target("/sys/fs/cgroup", None) as t:
            _mount("cgroup2", "cgroup", t, "cgroup2", flags, shown="/sys/fs/cgroup")
        return
    if not mounts:
        return
    with root.target("/sys/fs/cgroup", None) as t:
        _mount("tmpfs", "tmpfs", t, "tmpfs", NOSUID_NODEV_NOEXEC, "mode=755", shown="/sys/fs/cgroup")
    # our fresh tmpfs: nothing in it is the image's, so plain mkdir under its fd (no openat2 walk)
    cgfd = L.openat2(root.fd, "/sys/fs/cgroup", os.O_PATH | os.O_DIRECTORY)
    try:
        base = f"/proc/self/fd/{cgfd}"
        for mnt, fstype, sopts in mounts:
            rel = mnt[len("/sys/fs/cgroup/"):]
            if not rel or rel.startswith(".") or "/.." in rel or "/./" in rel:
                raise OSError(errno.EINVAL, f"unexpected cgroup mount point {mnt}", mnt)
            os.makedirs(f"{base}/{rel}", 0o755, exist_ok=True)
            opts = ",".join(o for o in sopts.split(",") if o not in ("rw", "ro"))
            _mount(fstype, "cgroup", f"{base}/{rel}", fstype, flags, opts or None, shown=mnt)
    finally:
        os.close(cgfd)
    if ro:
        with root.target("/sys/fs/cgroup", None) as t:
            _mount("read-only", None, t, None, L.MS_REMOUNT | NOSUID_NODEV_NOEXEC | L.MS_RDONLY,
                   "mode=755", shown="/sys/fs/cgroup")


def mount_dev(root: Root) -> None:
    """A tmpfs /dev with Docker's devices, devpts, shm, mqueue, symlinks and the console."""
    with root.target("/dev") as t:
        _mount("tmpfs", "tmpfs", t, "tmpfs", L.MS_NOSUID | L.MS_STRICTATIME, "mode=755,size=65536k",
               shown="/dev")
    devfd = L.openat2(root.fd, "/dev", os.O_PATH | os.O_DIRECTORY)
    try:
        dev = f"/proc/self/fd/{devfd}"  # our fresh tmpfs: nothing in it is the image's
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(f"{dev}/{name}", 0o755)
        _mount("devpts", "devpts", f"{dev}/pts", "devpts", L.MS_NOSUID | L.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5", shown="/dev/pts")
        _mount("tmpfs", "shm", f"{dev}/shm", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k",
               shown="/dev/shm")
        _mount("mqueue", "mqueue", f"{dev}/mqueue", "mqueue", NOSUID_NODEV_NOEXEC,
               shown="/dev/mqueue")
        for name, major, minor in DEVICES:
            path = f"{dev}/{name}"
            try:
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
                os.chmod(path, 0o666)
            except PermissionError:  # mknod refused (e.g. a user namespace): bind the host's node
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
                _mount("bind", f"/dev/{name}", path, None, L.MS_BIND, shown=f"/dev/{name}")
        for name, dest in DEV_SYMLINKS:
            if name != "core" or os.path.exists("/proc/kcore"):
                os.symlink(dest, f"{dev}/{name}")
        if os.isatty(0):
            _bind_console(dev)
    finally:
        os.close(devfd)


def _bind_console(dev: str) -> None:
    """The caller made fd 0 our pty slave: bind it on /dev/console, as runc does.

    The bind source must be a path in *our* mount namespace (the fd's own mount belongs to the
    namespace we were copied from, so binding ``/proc/self/fd/0`` fails with EINVAL): use the
    slave's name. A pty we cannot name (from a devpts not mounted here) gets no console.
    """
    try:
        name = os.ttyname(0)
    except OSError:
        return
    os.close(os.open(f"{dev}/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    _mount("bind", name, f"{dev}/console", None, L.MS_BIND, shown="/dev/console")


def mount_extra(root: Root, spec: MountSpec) -> None:
    """One ``--tmpfs`` or bind mount from the spec."""
    if spec.kind == "tmpfs":
        flags, prop, data = _parse_options(spec.options, NOSUID_NODEV_NOEXEC)
        if spec.readonly:
            flags |= L.MS_RDONLY
        with root.target(spec.target) as t:
            _mount("tmpfs", "tmpfs", t, "tmpfs", flags, data or None, shown=spec.target)
        if prop:  # on the new mount: open the path again (the old fd is the covered directory)
            with root.target(spec.target, None) as t:
                _mount("propagation", None, t, None, prop, shown=spec.target)
        return
    if spec.kind != "bind":
        raise OSError(errno.EINVAL, f"mount {spec.target}: unknown mount kind {spec.kind!r}", spec.target)
    try:
        st = os.stat(spec.source)
    except OSError as e:
        raise OSError(e.errno, f"bind mount source {spec.source}: {e.strerror}", spec.source) from None
    flags, prop, _ = _parse_options(spec.options, 0)
    with root.target(spec.target, "dir" if stat.S_ISDIR(st.st_mode) else "file") as t:
        _mount("bind", spec.source, t, None, L.MS_BIND | L.MS_REC, shown=spec.target)
    with root.target(spec.target, None) as t:  # the new mount, not the covered directory
        _mount("propagation", None, t, None, prop or (L.MS_PRIVATE | L.MS_REC), shown=spec.target)
        if spec.readonly or flags & L.MS_RDONLY:
            remount_ro(t, spec.target)


def mount_etc_files(root: Root, files: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> None:
    """Bind generated files (/etc/hostname, /etc/hosts …) from a detached tmpfs.

    Like Docker's bind mounts from the container's state dir, they do not land in the container's
    writable layer (``diff`` does not show them) and stay writable under ``--read-only``.
    """
    if not files:
        return
    try:
        _etc_files_detached(root, files)
    except OSError as e:
        # Kernels before ~6.5 refuse open_tree(OPEN_TREE_CLONE) of a file in a detached
        # (fsmount) tree with EINVAL: use a tmpfs mounted for a moment in this (private) mount
        # namespace instead, bind the files from it, and detach it again.
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            raise
        _etc_files_classic(root, files)


def _etc_files_classic(root: Root, files: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> None:
    tmp = tempfile.mkdtemp(prefix="wharfie-etc-")
    try:
        _mount("tmpfs", "tmpfs", tmp, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=0755",
               shown="/etc files")
        try:
            for i, (path, data) in enumerate(files):
                src = os.path.join(tmp, f"f{i}")
                with open(src, "wb") as fh:
                    fh.write(data)
                with root.target(path, "file") as t:
                    _mount("bind", src, t, None, L.MS_BIND, shown=path)
        finally:
            L.umount2(tmp, L.MNT_DETACH)  # the binds keep the files alive
    finally:
        os.rmdir(tmp)


def _etc_files_detached(root: Root, files: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> None:
    fsfd = L.fsopen("tmpfs")
    try:
        L.fsconfig(fsfd, L.FSCONFIG_SET_STRING, "mode", "0755")
        L.fsconfig(fsfd, L.FSCONFIG_CMD_CREATE)
        mntfd = L.fsmount(fsfd, L.FSMOUNT_CLOEXEC, 0)
    finally:
        os.close(fsfd)
    try:
        for i, (path, data) in enumerate(files):
            fd = os.open(f"f{i}", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=mntfd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            tree = L.open_tree(mntfd, f"f{i}")
            try:
                with root.target_fd(path, "file") as tfd:
                    try:
                        L.move_mount(tree, "", to_dirfd=tfd,
                                     flags=L.MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH)
                    except OSError as e:
                        raise OSError(e.errno, f"mount {path}: {e.strerror}", path) from None
            finally:
                os.close(tree)
    finally:
        os.close(mntfd)


def pivot(rootfs: str) -> None:
    """pivot_root(".", ".") then detach the old root (runc's trick: no put_old directory)."""
    os.chdir(rootfs)
    try:
        L.pivot_root(".", ".")
    except OSError as e:
        raise OSError(e.errno, f"pivot_root {rootfs}: {e.strerror}", rootfs) from None
    # the old root is stacked under "/": make it a slave so detaching it cannot propagate to the host
    L.mount(None, ".", None, L.MS_SLAVE | L.MS_REC)
    L.umount2(".", L.MNT_DETACH)
    os.chdir("/")


def mask_paths() -> None:
    """Docker's masked and read-only paths (after pivot_root, in the container's /proc and /sys)."""
    for path in READONLY_PATHS:
        if os.path.exists(path):
            _mount("bind", path, path, None, L.MS_BIND | L.MS_REC)
            remount_ro(path)
    for path in MASKED_PATHS:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            _mount("tmpfs", "tmpfs", path, "tmpfs", L.MS_RDONLY)
        else:
            _mount("/dev/null", "/dev/null", path, None, L.MS_BIND)
