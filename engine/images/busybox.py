"""A minimal root filesystem around a static busybox binary, as a tar stream.

``wharfie image bootstrap busybox`` imports it as an image: the offline way to get a first image
on a fresh machine (Debian's ``busybox-static`` puts the binary at /bin/busybox). The same tar is
the fixture image of the test suites, on the sim and on Linux alike.
"""

from __future__ import annotations

import io
import tarfile
import time

DEFAULT_BINARY_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox")

# Applets linked into /bin. Debian's busybox-static provides all of them; the sim implements
# the ones its tests use and answers "not found" for the rest.
APPLETS = (
    "sh ash echo cat sleep true false env printenv hostname id whoami pwd ls ps head tail wc yes "
    "touch mkdir rm rmdir cp mv ln test [ seq kill dd top printf grep sed awk sort uniq cut tr "
    "chmod chown date df du find free mount umount uname which xargs basename dirname readlink "
    "stat tee nproc usleep timeout wget nc ping ip ifconfig hexdump md5sum sha256sum vi less more "
    "tar gzip gunzip init"
).split()

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nnogroup:x:65534:\nalice:x:1000:\n"


def find_busybox(paths: tuple[str, ...] = DEFAULT_BINARY_PATHS) -> str | None:
    import os

    for p in paths:
        if os.path.isfile(p):
            return p
    return None


def rootfs_tar_bytes(binary: bytes | None = None, binary_path: str | None = None,
                     mtime: float | None = None) -> bytes:
    """Build the rootfs tar.

    Args:
        binary: the busybox executable's bytes; if None it is read from ``binary_path`` or the
            first of :data:`DEFAULT_BINARY_PATHS` that exists.
        mtime: timestamp for every entry (default: now); fixed values give identical tars.

    Raises:
        FileNotFoundError: no busybox binary was given or found.
    """
    if binary is None:
        path = binary_path or find_busybox()
        if path is None:
            raise FileNotFoundError(2, "no busybox binary found (install Debian's busybox-static)",
                                    DEFAULT_BINARY_PATHS[0])
        with open(path, "rb") as fh:
            binary = fh.read()
    ts = int(time.time() if mtime is None else mtime)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, ts
            tar.addfile(ti)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, ts
            tar.addfile(ti, io.BytesIO(data))

        for d in ("bin", "dev", "etc", "home", "home/alice", "proc", "root", "sys", "usr",
                  "usr/bin", "usr/sbin", "var", "var/spool", "var/www", "sbin"):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", binary, 0o755)
        for applet in APPLETS:
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, ts
            tar.addfile(ti)
        add_file("etc/passwd", PASSWD.encode())
        add_file("etc/group", GROUP.encode())
        add_file("etc/hostname", b"busybox\n")
        add_file("etc/hosts", b"127.0.0.1\tlocalhost\n")
        add_file("etc/resolv.conf", b"")
        add_file("etc/os-release", b'NAME="BusyBox"\nID=busybox\nPRETTY_NAME="BusyBox (wharfie bootstrap)"\n')
    return buf.getvalue()


STUB_BINARY = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"BusyBox v1.35.0 (wharfie sim stub)\n"
"""Stands in for the real binary where none is installed: the sim recognises it, Linux cannot."""
