"""Layer extraction against hostile tars (backends.linux.layers via LinuxSnapshots.apply_layer).

Each test also checks that nothing was written outside the layer: a canary dir next to the
kernel root stays empty, host files keep their content, and a refused layer leaves no trace.
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
import stat
import struct
import tarfile

import pytest

from engine.kernel import LayerLimits
from tests.contract.kernel.layers import make_tar
from tests.privileged.layers_kit import SnapKernel, layer_dir, run, sha, snaps, tar_of, ti, tree

pytestmark = pytest.mark.privileged
__all__ = ["snaps"]  # the fixture


@pytest.fixture
def canary(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "canary"
    d.mkdir()
    return d


def _refused(k: SnapKernel, data: bytes, entry: str | None, err: int = errno.EINVAL,
             parent: str | None = None, limits: LayerLimits | None = None) -> OSError:
    before = sorted(os.listdir(k._snapshots_dir))
    with pytest.raises(OSError) as exc:
        run(k.apply_layer("evil", parent, io.BytesIO(data), limits))
    assert exc.value.errno == err, exc.value
    if entry is not None:
        assert exc.value.filename == entry and entry in str(exc.value)
    assert sorted(os.listdir(k._snapshots_dir)) == before  # nothing of "evil" remains
    assert "evil" not in {i.key for i in run(k.list())}
    return exc.value


def test_dotdot_and_absolute_names_stay_inside(snaps: SnapKernel, canary: pathlib.Path) -> None:
    rel = os.path.relpath(canary, "/")
    _refused(snaps, make_tar(("file", "../../../../../../../../" + rel + "/x", b"x")),
             "../../../../../../../../" + rel + "/x")
    run(snaps.apply_layer("abs", None, io.BytesIO(make_tar(("file", str(canary / "abs"), b"abs")))))
    assert list(canary.iterdir()) == []
    assert tree(layer_dir(snaps, "abs"))[rel + "/abs"] == "file abs"
    run(snaps.remove("abs"))


def test_symlink_then_write_through_it_lands_inside(snaps: SnapKernel, canary: pathlib.Path) -> None:
    host_passwd = sha("/etc/passwd")
    rel = os.path.relpath(canary, "/")
    data = make_tar(("symlink", "a", "/etc"), ("file", "a/passwd", b"pwned"),
                    ("symlink", "b", "../../../../../../../../../" + rel),
                    ("file", "b/through-relative", b"r"),
                    ("symlink", "c", str(canary)), ("dir", "c/sub"), ("file", "c/sub/f", b"c"),
                    ("symlink", "loop1", "loop2"), ("symlink", "loop2", "loop1"))
    run(snaps.apply_layer("l", None, io.BytesIO(data)))
    assert sha("/etc/passwd") == host_passwd
    assert list(canary.iterdir()) == []
    t = tree(layer_dir(snaps, "l"))
    assert t["a"] == "-> /etc" and t["etc/passwd"] == "file pwned"
    assert t[rel + "/through-relative"] == "file r"
    assert t[rel + "/sub/f"] == "file c"
    run(snaps.remove("l"))


def test_write_through_a_symlink_loop_is_refused(snaps: SnapKernel, canary: pathlib.Path) -> None:
    _refused(snaps, make_tar(("symlink", "l1", "l2"), ("symlink", "l2", "l1"), ("file", "l1/x", b"x")),
             "l1/x")


def _cve_2025_4517_tar(escape_to: str) -> bytes:
    """The published PoC shape: a chain of symlinks whose resolved length exceeds PATH_MAX, so
    ``os.path.realpath`` gives up and tarfile's "data" filter lets "escape" point outside."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = ""
    for step in steps:
        members.append((ti(os.path.join(path, comp), tarfile.DIRTYPE), None))
        members.append((ti(os.path.join(path, step), tarfile.SYMTYPE, comp), None))
        path = os.path.join(path, comp)
    linkpath = os.path.join("/".join(steps), "l" * 254)
    members.append((ti(linkpath, tarfile.SYMTYPE, "../" * len(steps)), None))
    members.append((ti("escape", tarfile.SYMTYPE, linkpath + "/.." * 30 + escape_to), None))
    members.append((ti("escape/pwned", tarfile.REGTYPE), b"pwned"))
    members.append((ti("flaglink", tarfile.LNKTYPE, "escape/passwd"), None))
    return tar_of(*members)


def test_cve_2025_4517_symlink_chain_longer_than_path_max(snaps: SnapKernel, canary: pathlib.Path) -> None:
    host_passwd, nlink = sha("/etc/passwd"), os.stat("/etc/passwd").st_nlink
    big = LayerLimits(max_path=1 << 16)
    # the hardlink to escape/passwd must not reach the host's /etc/passwd: refused (not in layer)
    _refused(snaps, _cve_2025_4517_tar("/etc"), "flaglink", limits=big)
    assert sha("/etc/passwd") == host_passwd and os.stat("/etc/passwd").st_nlink == nlink
    # without the hardlink the write through "escape" lands inside the layer
    data = _cve_2025_4517_tar(str(canary))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None)  # type: ignore[union-attr]
                   for m in tf if m.name != "flaglink"]
    run(snaps.apply_layer("cve", None, io.BytesIO(tar_of(*members)), big))
    assert list(canary.iterdir()) == []
    found = [p for p, d in tree(layer_dir(snaps, "cve")).items() if d == "file pwned"]
    assert len(found) == 1
    run(snaps.remove("cve"))
    # with default limits the long names are refused outright
    _refused(snaps, data, None)


def test_hardlinks_to_outside_are_refused(snaps: SnapKernel) -> None:
    nlink = os.stat("/etc/passwd").st_nlink
    for target in ("/etc/passwd", "../../../../../etc/passwd", "etc/passwd"):
        _refused(snaps, make_tar(("hardlink", "pw", target)), "pw")
    _refused(snaps, make_tar(("symlink", "e", "/etc"), ("hardlink", "pw", "e/passwd")), "pw")
    _refused(snaps, make_tar(("dir", "d"), ("hardlink", "pw", "d")), "pw")  # to a dir
    assert os.stat("/etc/passwd").st_nlink == nlink


def test_hardlink_to_a_parent_layer_file_is_copied_up(snaps: SnapKernel) -> None:
    run(snaps.apply_layer("base", None, io.BytesIO(make_tar(
        ("dir", "bin"), ("file", "bin/busybox", b"BB", 0o4755), ("symlink", "bin/sh", "busybox")))))
    run(snaps.apply_layer("top", "base", io.BytesIO(make_tar(
        ("hardlink", "bin/ls", "bin/busybox"), ("hardlink", "bin/sh2", "/bin/sh")))))
    d = layer_dir(snaps, "top")
    a, b = (d / "bin/busybox").lstat(), (d / "bin/ls").lstat()
    assert a.st_ino == b.st_ino and (d / "bin/ls").read_bytes() == b"BB"
    assert stat.S_IMODE(a.st_mode) == 0o4755
    assert os.readlink(d / "bin/sh2") == "busybox"
    assert not os.path.ismount(d.parent / "lower") and not (d.parent / "lower").exists()
    assert run(snaps.stat("top")).size == 2
    for key in ("top", "base"):
        run(snaps.remove(key))


def test_device_nodes_refused_whiteouts_kept(snaps: SnapKernel) -> None:
    _refused(snaps, make_tar(("char", "dev/null", 1, 3)), "dev/null")
    _refused(snaps, make_tar(("block", "sda", 8, 0)), "sda")
    run(snaps.apply_layer("w", None, io.BytesIO(make_tar(
        ("char", "gone", 0, 0), ("whiteout", "d/x"), ("opaque", "o"), ("file", "o/f", b"f"),
        ("fifo", "p")))))
    d = layer_dir(snaps, "w")
    for p in ("gone", "d/x"):
        st = (d / p).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(d / "o", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISFIFO((d / "p").lstat().st_mode)
    assert not (d / "d/.wh.x").exists() and not (d / "o/.wh..wh..opq").exists()
    run(snaps.remove("w"))
    _refused(snaps, make_tar(("file", "d/.wh.", b"")), "d/.wh.")


def test_metadata_and_replacement(snaps: SnapKernel) -> None:
    data = _with_xattrs(tar_of((ti("d/g", mode=0o640, uid=1000, gid=1000, mtime=1_200_000_000), b"")))
    run(snaps.apply_layer("m", None, io.BytesIO(tar_of(
        (ti("d", tarfile.DIRTYPE, mode=0o1777, uid=7, gid=8, mtime=1_000_000_000), None),
        (ti("d/f", mode=0o4755, uid=1000, gid=1000, mtime=1_200_000_000), b"one"),
        (ti("d/f", mode=0o600), b"two, replaced"),
        (ti("x", tarfile.DIRTYPE), None), (ti("x/inner"), b"i"),
        (ti("x", tarfile.SYMTYPE, "d"), None),  # a dir replaced by a symlink: its tree goes
        (ti("x/through"), b"t"),  # … and this now lands in d/
        (ti("s"), b"file"), (ti("s", tarfile.DIRTYPE, mode=0o700), None)))))
    d = layer_dir(snaps, "m")
    st = (d / "d").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o1777, 7, 8, 1_000_000_000)
    assert (d / "d/f").read_bytes() == b"two, replaced" and stat.S_IMODE((d / "d/f").stat().st_mode) == 0o600
    assert os.readlink(d / "x") == "d" and (d / "d/through").read_bytes() == b"t"
    assert (d / "s").is_dir() and not (d / "s").is_symlink()
    run(snaps.remove("m"))
    run(snaps.apply_layer("x", None, io.BytesIO(data)))
    g = layer_dir(snaps, "x") / "d/g"
    st = g.lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, int(st.st_mtime)) == (0o640, 1000, 1_200_000_000)
    assert os.getxattr(g, "user.k") == b"v"
    with pytest.raises(OSError):
        os.getxattr(g, "trusted.overlay.redirect")
    run(snaps.remove("x"))


def _with_xattrs(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmembers()[0]
    m.pax_headers = {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.overlay.redirect": "/etc"}
    return tar_of((m, b""))


def test_implicit_parent_dirs_take_the_lower_layers_metadata(snaps: SnapKernel) -> None:
    tmp = tar_of((ti("tmp", tarfile.DIRTYPE, mode=0o1777, uid=3), None))
    run(snaps.apply_layer("base", None, io.BytesIO(tmp)))
    top = make_tar(("file", "tmp/x", b"x"), ("file", "new/y", b"y"))
    run(snaps.apply_layer("top", "base", io.BytesIO(top)))
    d = layer_dir(snaps, "top")
    st = (d / "tmp").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o1777, 3)
    assert stat.S_IMODE((d / "new").lstat().st_mode) == 0o755
    for key in ("top", "base"):
        run(snaps.remove(key))


def test_header_bombs_and_truncation(snaps: SnapKernel) -> None:
    longname = tarfile.TarInfo("n" * (20 << 20))  # a 20 MiB GNU long name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(longname, io.BytesIO(b""))
    _refused(snaps, buf.getvalue(), None, errno.EFBIG)
    # a header claiming 1 GiB of data over a short stream
    head = tarfile.TarInfo("big")
    head.size = 1 << 30
    _refused(snaps, head.tobuf(tarfile.PAX_FORMAT) + b"x" * 4096, "big")
    _refused(snaps, make_tar(*[("file", f"f{i}", b"x" * 100) for i in range(10)]), None, errno.EFBIG,
             limits=LayerLimits(max_bytes=550))


def test_enospc_leaves_nothing(tmp_path: pathlib.Path) -> None:
    from backends.linux import libc

    if os.geteuid() != 0:
        pytest.fail("needs root")
    small = tmp_path / "small"
    small.mkdir()
    libc.mount("tmpfs", str(small), "tmpfs", 0, "size=1m")
    try:
        k = SnapKernel(str(small / "root"))
        with pytest.raises(OSError) as exc:
            run(k.apply_layer("full", None, io.BytesIO(make_tar(*[("file", f"f{i}", b"x" * 300_000)
                                                                   for i in range(5)]))))
        assert exc.value.errno == errno.ENOSPC
        assert run(k.list()) == [] and [n for n in os.listdir(k._snapshots_dir) if n.isdigit()] == []
    finally:
        libc.umount2(str(small))


def _meta(p: pathlib.Path) -> tuple[int, int, int, int]:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0])
def test_owner_and_mode_shortcuts_keep_exact_metadata(snaps: SnapKernel, umask: int) -> None:
    """The unpacker skips fchown/fchmod when open(O_CREAT) already gives the entry's owner and
    mode: set-gid dirs (also reached through a symlink alias, and made set-gid after files
    went in), set-id bits, bits the umask takes, and a dir replaced by a symlink all still
    end with exactly the entry's metadata."""
    t = 1_300_000_000
    data = tar_of(
        (ti("p", tarfile.DIRTYPE, mode=0o755), None),
        (ti("p/a", mode=0o644, mtime=t), b"a"),  # ours, plain bits: neither chown nor chmod
        (ti("l", tarfile.SYMTYPE, "p"), None),
        (ti("l/b", mode=0o640, uid=1000, gid=1000, mtime=t), b"b"),  # via an alias: chown
        (ti("p", tarfile.DIRTYPE, mode=0o2775, gid=50), None),  # the same dir becomes set-gid
        (ti("l/c", mode=0o644, mtime=t), b"c"),  # would inherit gid 50: chown back to 0
        (ti("p/d", mode=0o644, gid=50, mtime=t), b"d"),  # gid 50 is the inherited one
        (ti("p/e", mode=0o4755, mtime=t), b"e"),  # set-uid: fchmod after the data
        (ti("p/g", mode=0o2755, uid=1000, gid=1000, mtime=t), b"g"),  # set-gid kept past chown
        (ti("p/w", mode=0o666, mtime=t), b"w"),  # bits a 022 umask takes
        (ti("p/z", mode=0o000, mtime=t), b"z"),
        (ti("q", tarfile.DIRTYPE), None), (ti("q/x"), b"x"),
        (ti("q", tarfile.SYMTYPE, "p"), None),  # the dir goes, its name is now a symlink …
        (ti("q/y", mode=0o600, uid=7, gid=8, mtime=t), b"y"))  # … this lands in p/
    old = os.umask(umask)
    try:
        run(snaps.apply_layer("o", None, io.BytesIO(data)))
    finally:
        os.umask(old)
    d = layer_dir(snaps, "o")
    want = {"a": (0o644, 0, 0), "b": (0o640, 1000, 1000), "c": (0o644, 0, 0), "d": (0o644, 0, 50),
            "e": (0o4755, 0, 0), "g": (0o2755, 1000, 1000), "w": (0o666, 0, 0), "z": (0o000, 0, 0),
            "y": (0o600, 7, 8)}
    assert {n: _meta(d / "p" / n) for n in want} == {n: (*w, t) for n, w in want.items()}
    assert (d / "p/y").read_bytes() == b"y" and os.readlink(d / "q") == "p"
    assert _meta(d / "p")[:3] == (0o2775, 0, 50) and not (d / "p/x").exists()
    run(snaps.remove("o"))


def test_file_capabilities_survive_the_owner_change(snaps: SnapKernel) -> None:
    """security.capability is set after fchown (chown drops it), for any owner."""
    cap = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # v2, effective cap_net_raw
    members = []
    for name, uid in (("ping", 0), ("ping1000", 1000)):
        m = ti(name, mode=0o755, uid=uid, gid=uid)
        m.pax_headers = {"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}
        members.append((m, b"\x7fELF"))
    run(snaps.apply_layer("c", None, io.BytesIO(tar_of(*members))))
    d = layer_dir(snaps, "c")
    for name, uid in (("ping", 0), ("ping1000", 1000)):
        assert os.getxattr(d / name, "security.capability") == cap
        assert _meta(d / name)[:3] == (0o755, uid, uid)
    run(snaps.remove("c"))
