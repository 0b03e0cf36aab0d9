"""A test rig for ``backends.linux.sandbox``: a busybox rootfs, and children forked the way the
processes role forks them (unshare(CLONE_NEWPID) + fork, then ``init_main`` in the grandchild).

Every process a rig starts is killed and reaped, and every mount it makes is unmounted, by
``Rig.close()`` (the ``rig`` fixture calls it even when a test fails).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

from backends.linux import libc
from backends.linux.sandbox import exec_main, init_main, preload
from engine.kernel import ExecSpec, SpawnSpec

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n" \
         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nwheel:x:10:root\nalice:x:1000:\nstaff:x:50:alice\nnogroup:x:65534:\n"


def require_root() -> None:
    if os.geteuid() != 0:
        raise AssertionError("privileged sandbox tests need root (run them as root, e.g. in the VM)")


def make_rootfs(path: str) -> None:
    """A busybox rootfs: /bin/busybox, a symlink per applet, passwd/group, the usual dirs."""
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "home/alice", "mnt", "usr/bin"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(path, "bin/busybox"))
    with os.popen("/bin/busybox --list") as fh:
        applets = fh.read().split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", os.path.join(path, "bin", applet))
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        with open(os.path.join(path, "etc", name), "w") as fh:
            fh.write(text)
    with open(os.path.join(path, "bin/notexec"), "w") as fh:
        fh.write("#!/bin/sh\necho nope\n")
    os.chmod(os.path.join(path, "bin/notexec"), 0o644)


@dataclass
class Result:
    code: int  # exit code, or 128+signal
    out: bytes
    err: bytes


class Proc:
    """A container init started by the rig: ``pid`` is its host pid, ``waiter`` our child."""

    def __init__(self, waiter: int, pid: int, out_fd: int, err_fd: int) -> None:
        self.waiter, self.pid, self.out_fd, self.err_fd = waiter, pid, out_fd, err_fd
        self.status: int | None = None

    def collect(self, timeout: float = 20) -> Result:
        out, err = _read_all(self.out_fd, self.err_fd, timeout)
        self.out_fd = self.err_fd = -1
        return Result(self.wait(timeout), out, err)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.waiter, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.pid} still running")
            time.sleep(0.01)
        return self.status if self.status >= 0 else 128 - self.status

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                self.wait(10)
        for fd in (self.out_fd, self.err_fd):
            if fd >= 0:
                os.close(fd)
        self.out_fd = self.err_fd = -1


def _read_all(out_fd: int, err_fd: int, timeout: float) -> tuple[bytes, bytes]:
    bufs = {out_fd: b"", err_fd: b""}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(bufs)
        while open_fds and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    bufs[key.fd] += chunk
                else:
                    sel.unregister(key.fd)
                    open_fds.discard(key.fd)
    os.close(out_fd)
    os.close(err_fd)
    return bufs[out_fd], bufs[err_fd]


def _child_report(errw: int, exc: BaseException) -> None:
    if isinstance(exc, OSError):
        msg = {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
    else:
        msg = {"errno": errno.EIO, "strerror": "".join(traceback.format_exception_only(exc)),
               "filename": None}
    os.write(errw, json.dumps(msg).encode())


def _raise_reported(data: bytes) -> None:
    if data:
        msg = json.loads(data)
        args = (msg["errno"], msg["strerror"]) + ((msg["filename"],) if msg["filename"] else ())
        raise OSError(*args)


class Rig:
    """A mounted busybox rootfs and the containers started in it."""

    def __init__(self, tmp_path: Any) -> None:
        require_root()
        preload()  # as the zygote does: the default seccomp program is built once, here
        self.rootfs = str(tmp_path / "rootfs")
        make_rootfs(self.rootfs)
        libc.mount(self.rootfs, self.rootfs, None, libc.MS_BIND)  # stands in for the overlay
        self.procs: list[Proc] = []

    def spec(self, *argv: str, **kw: Any) -> SpawnSpec:
        kw.setdefault("env", (PATH_ENV,))
        kw.setdefault("rootfs", self.rootfs)
        return SpawnSpec(id="t", argv=argv, **kw)

    def start(self, spec: SpawnSpec, netns_path: str | None = None,
              cgroup_procs: tuple[str, ...] = (), leak_fd: bool = True) -> Proc:
        """Fork like the processes role: unshare(CLONE_NEWPID) + fork, init_main in the child."""
        outr, outw = os.pipe()
        errr, errw = os.pipe()
        rep_r, rep_w = os.pipe()  # error pipe: EOF on a successful exec (it is close-on-exec)
        pid_r, pid_w = os.pipe()
        waiter = os.fork()
        if waiter == 0:  # the "monitor": reaps the init, exits with its status
            code = 125
            try:
                for fd in (outr, errr, rep_r, pid_r):
                    os.close(fd)
                libc.unshare(libc.CLONE_NEWPID)
                child = os.fork()
                if child == 0:
                    try:
                        null = os.open("/dev/null", os.O_RDONLY)
                        os.dup2(null, 0)
                        os.dup2(outw, 1)
                        os.dup2(errw, 2)
                        if leak_fd:  # an inheritable daemon fd that must not reach the container
                            os.set_inheritable(os.open("/", os.O_RDONLY), True)
                        init_main(spec, cgroup_procs=list(cgroup_procs), netns_path=netns_path)
                    except BaseException as e:  # noqa: BLE001 - reported to the test
                        _child_report(rep_w, e)
                    finally:
                        os._exit(127)
                os.write(pid_w, str(child).encode())
                os.close(pid_w)
                for fd in (outw, errw, rep_w):
                    os.close(fd)
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code
            finally:
                os._exit(code)
        for fd in (outw, errw, rep_w, pid_w):
            os.close(fd)
        with os.fdopen(pid_r, "rb") as fh:
            pid = int(fh.read() or b"0")
        proc = Proc(waiter, pid, outr, errr)
        self.procs.append(proc)
        with os.fdopen(rep_r, "rb") as fh:
            report = fh.read()
        if report:
            proc.kill()
            _raise_reported(report)
        return proc

    def run(self, *argv: str, **kw: Any) -> Result:
        netns_path = kw.pop("netns_path", None)
        cgroup_procs = kw.pop("cgroup_procs", ())
        return self.start(self.spec(*argv, **kw), netns_path, cgroup_procs).collect()

    def sh(self, script: str, **kw: Any) -> Result:
        return self.run("sh", "-c", script, **kw)

    def exec(self, init: Proc, *argv: str, init_cwd: str = "/", init_spec: SpawnSpec | None = None,
             **kw: Any) -> Result:
        """Fork like the processes role's exec: setns(pid) + fork, exec_main in the child."""
        kw.setdefault("env", (PATH_ENV,))
        spec = ExecSpec(argv=argv, **kw)
        outr, outw = os.pipe()
        errr, errw = os.pipe()
        rep_r, rep_w = os.pipe()
        waiter = os.fork()
        if waiter == 0:
            code = 125
            try:
                for fd in (outr, errr, rep_r):
                    os.close(fd)
                fd = os.open(f"/proc/{init.pid}/ns/pid", os.O_RDONLY)
                libc.setns(fd, libc.CLONE_NEWPID)
                os.close(fd)
                child = os.fork()
                if child == 0:
                    try:
                        null = os.open("/dev/null", os.O_RDONLY)
                        os.dup2(null, 0)
                        os.dup2(outw, 1)
                        os.dup2(errw, 2)
                        extra = {"init_spec": init_spec} if init_spec is not None else {}
                        exec_main(init.pid, spec, init_cwd, cgroup_procs=[], **extra)
                    except BaseException as e:  # noqa: BLE001
                        _child_report(rep_w, e)
                    finally:
                        os._exit(127)
                for fd in (outw, errw, rep_w):
                    os.close(fd)
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code
            finally:
                os._exit(code)
        for fd in (outw, errw, rep_w):
            os.close(fd)
        proc = Proc(waiter, -1, outr, errr)
        with os.fdopen(rep_r, "rb") as fh:
            report = fh.read()
        if report:
            proc.collect()
            _raise_reported(report)
        return proc.collect()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        libc.umount2(self.rootfs, libc.MNT_DETACH)


def with_spec(spec: SpawnSpec, **kw: Any) -> SpawnSpec:
    return replace(spec, **kw)
