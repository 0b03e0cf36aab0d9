"""LinuxSnapshots beyond the contract: persistence across instances, long layer chains (the
one-page mount data limit), diff fidelity, read_file confinement, crash leftovers."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import stat
import tarfile

import pytest

from backends.linux import overlay
from tests.contract.kernel.layers import make_tar
from tests.privileged.layers_kit import SnapKernel, layer_dir, run, snaps, tar_of, ti

pytestmark = pytest.mark.privileged
__all__ = ["snaps"]


def test_state_survives_a_new_instance(snaps: SnapKernel, tmp_path: pathlib.Path) -> None:
    run(snaps.apply_layer("sha256:base", None, io.BytesIO(make_tar(("file", "f", b"base")))))
    run(snaps.prepare("c1", "sha256:base"))
    target = str(tmp_path / "mnt" / "deep")
    run(snaps.mount("c1", target))
    pathlib.Path(target, "g").write_bytes(b"written")
    # a half-applied layer of a crashed daemon: a numeric dir without meta.json
    junk = pathlib.Path(snaps._snapshots_dir, "99")
    (junk / "fs").mkdir(parents=True)
    again = SnapKernel(snaps.root)
    assert not junk.exists()
    assert {(i.key, i.kind, i.size) for i in run(again.list())} == {
        ("sha256:base", "committed", 4), ("c1", "active", 7)}
    assert run(again.read_file(target, "/g")) == b"written"
    with pytest.raises(OSError) as exc:
        run(again.remove("c1"))
    assert exc.value.errno == errno.EBUSY
    run(again.unmount(target))
    assert not os.path.exists(target) and os.path.isdir(tmp_path / "mnt")
    run(again.remove("c1"))
    run(again.remove("sha256:base"))
    assert snaps.leaks() == {}


def test_mount_refuses_a_foreign_mount_point_and_keeps_existing_dirs(snaps: SnapKernel,
                                                                      tmp_path: pathlib.Path) -> None:
    from backends.linux import libc

    run(snaps.apply_layer("l", None, io.BytesIO(make_tar(("file", "f", b"x")))))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    libc.mount("tmpfs", str(foreign), "tmpfs", 0, "size=64k")
    try:
        with pytest.raises(OSError) as exc:
            run(snaps.mount("l", str(foreign)))
        assert exc.value.errno == errno.EBUSY
        with pytest.raises(OSError) as exc:
            run(snaps.unmount(str(foreign)))  # not ours
        assert exc.value.errno == errno.EINVAL
    finally:
        libc.umount2(str(foreign))
    existing = tmp_path / "existing"
    existing.mkdir()
    link = tmp_path / "link"
    link.symlink_to(existing)
    run(snaps.mount("l", str(link)))  # normalised to the real path
    assert run(snaps.read_file(str(existing), "f")) == b"x"
    run(snaps.unmount(str(existing)))
    assert existing.is_dir()  # not ours to remove
    run(snaps.remove("l"))


def test_a_long_chain_exceeds_the_mount_data_page(snaps: SnapKernel, tmp_path: pathlib.Path) -> None:
    parent = None
    for i in range(130):
        key = f"sha256:{i:064x}"
        entries: list[tuple[object, ...]] = [("file", f"layer{i}", str(i).encode())]
        if i == 129:
            entries.append(("whiteout", "layer0"))
        run(snaps.apply_layer(key, parent, io.BytesIO(make_tar(*entries))))
        parent = key
    assert len(overlay.overlay_data(snaps._chain(parent))) > overlay.MAX_MOUNT_DATA
    run(snaps.prepare("rw", parent))
    t = str(tmp_path / "rootfs")
    run(snaps.mount("rw", t))
    assert run(snaps.read_file(t, "layer1")) == b"1"
    assert run(snaps.read_file(t, "layer128")) == b"128"
    with pytest.raises(FileNotFoundError):
        run(snaps.read_file(t, "layer0"))
    pathlib.Path(t, "new").write_bytes(b"n")
    run(snaps.unmount(t))
    assert parent is not None
    run(snaps.mount(parent, t))  # committed, read-only
    with pytest.raises(OSError) as exc:
        pathlib.Path(t, "x").write_bytes(b"")
    assert exc.value.errno == errno.EROFS
    run(snaps.unmount(t))
    run(snaps.remove("rw"))
    for i in reversed(range(130)):
        run(snaps.remove(f"sha256:{i:064x}"))


def test_new_mount_api_path(tmp_path: pathlib.Path) -> None:
    low1, low2, up, work, mnt = (tmp_path / n for n in ("l1", "l2", "up", "work", "mnt"))
    for d in (low1, low2, up, work, mnt):
        d.mkdir()
    (low2 / "a").write_bytes(b"low2")
    (low1 / "a").write_bytes(b"low1")
    overlay.mount_overlay(str(mnt), [str(low1), str(low2)], str(up), str(work), force_new_api=True)
    try:
        assert (mnt / "a").read_bytes() == b"low1"
        (mnt / "b").write_bytes(b"b")
        assert (up / "b").read_bytes() == b"b"
        assert str(mnt) in overlay.mount_points()
    finally:
        overlay.unmount(str(mnt))
    overlay.mount_overlay(str(mnt), [str(low2), str(low1)], readonly=True, force_new_api=True)
    try:
        assert (mnt / "a").read_bytes() == b"low2"
        with pytest.raises(OSError):
            (mnt / "c").write_bytes(b"")
    finally:
        overlay.unmount(str(mnt))


def test_read_file_stays_inside_the_view(snaps: SnapKernel, tmp_path: pathlib.Path) -> None:
    run(snaps.apply_layer("l", None, io.BytesIO(make_tar(
        ("symlink", "hostpw", "/etc/passwd"), ("symlink", "up", "../../../../../../../etc/passwd"),
        ("symlink", "viaproc", "/proc/self/root/etc/passwd"), ("fifo", "fifo"), ("dir", "etc"),
        ("file", "etc/passwd", b"inside")))))
    t = str(tmp_path / "v")
    run(snaps.mount("l", t))
    for p in ("hostpw", "up", "/hostpw"):
        assert run(snaps.read_file(t, p)) == b"inside"
    with pytest.raises(FileNotFoundError):
        run(snaps.read_file(t, "viaproc"))
    assert run(snaps.read_file(t, "fifo")) == b""  # does not block
    run(snaps.unmount(t))
    with pytest.raises(FileNotFoundError):
        run(snaps.read_file(t, "etc/passwd"))
    run(snaps.remove("l"))


def test_diff_fidelity(snaps: SnapKernel, tmp_path: pathlib.Path) -> None:
    run(snaps.apply_layer("base", None, io.BytesIO(make_tar(
        ("dir", "d"), ("file", "d/keep", b"k"), ("file", "d/gone", b"g"), ("dir", "o"),
        ("file", "o/old", b"o"), ("file", "f", b"f")))))
    run(snaps.prepare("rw", "base"))
    t = pathlib.Path(tmp_path / "rw")
    run(snaps.mount("rw", str(t)))
    (t / "d/gone").unlink()
    (t / "o/old").unlink()
    (t / "o").rmdir()
    (t / "o").mkdir()
    (t / "o/n").write_bytes(b"n")
    (t / "h1").write_bytes(b"hard")
    os.link(t / "h1", t / "h2")
    os.setxattr(t / "h1", "user.note", b"v")
    os.utime(t / "h1", (1_500_000_000, 1_500_000_000))
    os.mkfifo(t / "p")
    os.symlink("/f", t / "s")
    outs = [io.BytesIO(), io.BytesIO()]
    for out in outs:
        assert run(snaps.diff("rw", out)) == len(out.getvalue())
    assert outs[0].getvalue() == outs[1].getvalue()  # deterministic
    with tarfile.open(fileobj=io.BytesIO(outs[0].getvalue())) as tf:
        ms = {m.name: m for m in tf}
    names = list(ms)
    assert names == sorted(names, key=lambda n: n.split("/"))  # sorted, parents first
    assert "d/.wh.gone" in ms and "o/.wh..wh..opq" in ms and "o/n" in ms
    assert ms["h1"].isreg() and ms["h1"].mtime == 1_500_000_000
    assert ms["h1"].pax_headers.get("SCHILY.xattr.user.note") == "v"
    assert ms["h2"].islnk() and ms["h2"].linkname == "h1"
    assert ms["p"].isfifo() and ms["s"].issym() and ms["s"].linkname == "/f"
    assert not any(k.startswith("SCHILY.xattr.trusted") for m in ms.values() for k in m.pax_headers)
    run(snaps.apply_layer("c", "base", io.BytesIO(outs[0].getvalue())))
    c = layer_dir(snaps, "c")
    assert (c / "h1").stat().st_ino == (c / "h2").stat().st_ino
    assert os.getxattr(c / "o", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR((c / "d/gone").lstat().st_mode)
    run(snaps.unmount(str(t)))
    for k in ("c", "rw", "base"):
        run(snaps.remove(k))


def test_failed_apply_leaves_no_lower_mount(snaps: SnapKernel) -> None:
    run(snaps.apply_layer("base", None, io.BytesIO(make_tar(("dir", "tmp", 0o1777)))))
    # an implicit dir (lower view mounted) and then a hostile entry
    mem = ti("dev/mem", tarfile.CHRTYPE)
    mem.devmajor, mem.devminor = 1, 1
    data = tar_of((ti("tmp/x"), b"x"), (mem, None))
    with pytest.raises(OSError):
        run(snaps.apply_layer("evil", "base", io.BytesIO(data)))
    assert [i.key for i in run(snaps.list())] == ["base"]
    run(snaps.remove("base"))


def test_relative_path_fallback_for_kernels_without_lowerdir_plus(tmp_path: pathlib.Path) -> None:
    """Older kernels (6.1) have no ``lowerdir+``: a long chain mounts with relative paths."""
    base = tmp_path / "snapshots"
    lowers = []
    for i in range(150):  # absolute paths here would overflow one page
        d = base / str(i) / "fs"
        d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(str(i).encode())
        lowers.append(str(d))
    lowers.reverse()  # top first
    assert len(overlay.overlay_data(lowers).encode()) > overlay.MAX_MOUNT_DATA or len(str(base)) > 20
    up, work, mnt = base / "rw" / "fs", base / "rw" / "work", tmp_path / "mnt"
    for d in (up, work, mnt):
        d.mkdir(parents=True)
    cwd = os.getcwd()
    overlay.mount_overlay(str(mnt), lowers, str(up), str(work), force_relative=True)
    try:
        assert os.getcwd() == cwd  # the daemon's cwd never moved
        assert (mnt / "f0").read_bytes() == b"0" and (mnt / "f149").read_bytes() == b"149"
        (mnt / "new").write_bytes(b"n")
        assert (up / "new").read_bytes() == b"n"
    finally:
        overlay.unmount(str(mnt))
