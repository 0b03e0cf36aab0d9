"""The sim's in-memory union filesystem (sim.fs.FsView) and layer tars (sim.tario)."""

from __future__ import annotations

import errno
import io
import tarfile

import pytest

from engine.kernel import LayerLimits
from sim.faults import Faults
from sim.fs import FsView
from sim.fsnodes import Dir, File, Tree, Whiteout
from sim.tario import apply_tar, diff_tar
from tests.contract.kernel.layers import make_tar


def layer(*entries: tuple[object, ...], parent: FsView | None = None) -> Tree:
    tree = Tree()
    apply_tar(tree, parent, io.BytesIO(make_tar(*entries)), LayerLimits())
    return tree


@pytest.fixture
def lower() -> Tree:
    return layer(("dir", "etc"), ("file", "etc/hostname", b"base"), ("dir", "d"),
                 ("file", "d/x", b"dx"), ("file", "d/y", b"dy"), ("dir", "d/sub"),
                 ("file", "d/sub/z", b"dz"), ("file", "bin/busybox", b"BB", 0o755),
                 ("hardlink", "bin/sh", "bin/busybox"), ("symlink", "lib", "/usr/lib"),
                 ("file", "usr/lib/libc.so", b"libc"), ("symlink", "loop1", "loop2"),
                 ("symlink", "loop2", "loop1"), ("symlink", "dangling", "/nowhere/file"))


@pytest.fixture
def view(lower: Tree) -> FsView:
    return FsView([lower], Tree())


def errno_of(fn: object, *args: object) -> int | None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as e:
        return e.errno
    return None


# ---- lookups and merging ---------------------------------------------------------------------

def test_reads_merge_layers(lower: Tree) -> None:
    top = layer(("file", "d/new", b"n"), ("whiteout", "d/x"), ("opaque", "d/sub"),
                ("file", "d/sub/only", b"o"), parent=FsView([lower], None))
    v = FsView([top, lower], None)
    assert v.listdir("/d") == ["new", "sub", "y"]
    assert v.listdir("/d/sub") == ["only"]
    assert not v.exists("/d/x")
    assert v.read("/d/y") == b"dy"


def test_upper_non_dir_hides_lower_dir(lower: Tree) -> None:
    top = layer(("file", "d", b"now a file"))
    v = FsView([top, lower], None)
    assert v.read("/d") == b"now a file"
    assert errno_of(v.listdir, "/d") == errno.ENOTDIR
    assert errno_of(v.read, "/d/x") == errno.ENOTDIR


def test_stat(view: FsView) -> None:
    st = view.stat("/bin/busybox")
    assert (st.kind, st.mode, st.size, st.nlink) == ("file", 0o755, 2, 2)
    assert view.stat("/lib", follow=False).kind == "symlink"
    assert view.stat("/lib").kind == "dir"
    assert view.stat("/").kind == "dir"


def test_errors_carry_errno_and_filename(view: FsView) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        view.read("/etc/nope")
    assert exc.value.filename == "/etc/nope"
    with pytest.raises(FileNotFoundError):
        view.write("/nodir/file", b"")
    with pytest.raises(NotADirectoryError):
        view.write("/etc/hostname/x", b"")
    with pytest.raises(IsADirectoryError):
        view.read("/etc")
    with pytest.raises(IsADirectoryError):
        view.unlink("/etc")
    with pytest.raises(IsADirectoryError):
        view.write("/etc", b"")
    with pytest.raises(NotADirectoryError):
        view.listdir("/etc/hostname")
    with pytest.raises(NotADirectoryError):
        view.rmdir("/etc/hostname")
    with pytest.raises(FileExistsError):
        view.mkdir("/etc")
    with pytest.raises(FileExistsError):
        view.mkdir("/dangling")  # a dangling symlink still exists
    assert errno_of(view.rmdir, "/d") == errno.ENOTEMPTY
    assert errno_of(view.rmdir, "/") == errno.EBUSY
    assert errno_of(view.readlink, "/etc") == errno.EINVAL


# ---- symlinks --------------------------------------------------------------------------------

def test_symlinks_resolve_inside_the_root(view: FsView) -> None:
    assert view.read("/lib/libc.so") == b"libc"
    assert view.resolve("/lib/libc.so") == "/usr/lib/libc.so"
    view.symlink("../../../../../etc/hostname", "/usr/up")
    assert view.read("/usr/up") == b"base"
    assert view.resolve("/../../etc/../etc/hostname") == "/etc/hostname"
    assert view.readlink("/lib") == "/usr/lib"
    assert view.resolve("/lib/..") == "/usr"  # ".." applies to the link's target


def test_symlink_loops_and_dangling(view: FsView) -> None:
    assert errno_of(view.read, "/loop1") == errno.ELOOP
    assert errno_of(view.resolve, "/loop1") == errno.ELOOP
    assert not view.exists("/loop1")
    assert view.exists("/loop1", follow=False)
    assert not view.exists("/dangling")
    with pytest.raises(FileNotFoundError):
        view.write("/dangling", b"x")  # /nowhere does not exist
    view.mkdir("/nowhere")
    view.write("/dangling", b"x")  # creates the target, like open(O_CREAT)
    assert view.read("/nowhere/file") == b"x"


def test_40_links_is_the_limit() -> None:
    v = FsView([], Tree())
    v.write("/f", b"end")
    prev = "/f"
    for i in range(40):
        v.symlink(prev, f"/l{i}")
        prev = f"/l{i}"
    assert v.read("/l39") == b"end"
    v.symlink("/l39", "/l40")
    assert errno_of(v.read, "/l40") == errno.ELOOP


# ---- copy-up, whiteouts, opaque ---------------------------------------------------------------

def test_copy_up_shares_content_and_leaves_lower_alone(lower: Tree, view: FsView) -> None:
    before = view.read("/etc/hostname")
    view.chmod("/etc/hostname", 0o600)
    assert view.upper is not None
    node = view.upper.root.children["etc"].children["hostname"]  # type: ignore[attr-defined]
    assert isinstance(node, File) and node.data is before  # shared, not copied
    view.write("/etc/hostname", b"!", append=True)
    assert view.read("/etc/hostname") == b"base!"
    assert view.stat("/etc/hostname").mode == 0o600
    assert FsView([lower], None).read("/etc/hostname") == b"base"
    assert view.du() == 5


def test_delete_of_lower_path_leaves_whiteout(view: FsView) -> None:
    view.unlink("/d/x")
    assert view.upper is not None
    d = view.upper.root.children["d"]
    assert isinstance(d, Dir) and isinstance(d.children["x"], Whiteout)
    assert view.listdir("/d") == ["sub", "y"]
    view.write("/d/x", b"again")  # a file over a whiteout
    assert view.read("/d/x") == b"again"
    view.write("/d/new", b"n")
    view.unlink("/d/new")  # upper-only: no whiteout needed
    assert "new" not in d.children


def test_rmdir_then_mkdir_makes_opaque(view: FsView) -> None:
    view.unlink("/d/sub/z")
    view.rmdir("/d/sub")
    assert not view.exists("/d/sub")
    view.mkdir("/d/sub")
    assert view.listdir("/d/sub") == []
    assert view.upper is not None
    sub = view.upper.root.children["d"].children["sub"]  # type: ignore[attr-defined]
    assert isinstance(sub, Dir) and sub.opaque


def test_hardlinks(view: FsView) -> None:
    view.write("/a", b"1")
    view.link("/a", "/b")
    view.write("/b", b"2")
    assert view.read("/a") == b"2"
    assert view.stat("/a").nlink == 2
    view.unlink("/a")
    assert view.stat("/b").nlink == 1
    # copy-up breaks a lower hardlink, as on overlayfs without index=on
    view.write("/bin/sh", b"new sh")
    assert view.read("/bin/busybox") == b"BB"
    assert errno_of(view.link, "/etc", "/etc2") == errno.EPERM


def test_rename(view: FsView) -> None:
    view.rename("/etc/hostname", "/etc/hn")
    assert view.read("/etc/hn") == b"base" and not view.exists("/etc/hostname")
    view.rename("/d", "/e")  # a dir with lower content: copied up whole
    assert view.listdir("/e") == ["sub", "x", "y"] and view.read("/e/sub/z") == b"dz"
    assert not view.exists("/d")
    view.mkdir("/d")
    assert view.listdir("/d") == []
    view.mkdir("/u")
    view.write("/u/f", b"f")
    view.rename("/u", "/d")  # replaces an empty dir
    assert view.listdir("/d") == ["f"]
    assert errno_of(view.rename, "/e", "/e/sub/inside") == errno.EINVAL
    assert errno_of(view.rename, "/etc/hn", "/e") == errno.EISDIR
    assert errno_of(view.rename, "/e", "/etc/hn") == errno.ENOTDIR
    assert errno_of(view.rename, "/d", "/e") == errno.ENOTEMPTY
    assert errno_of(view.rename, "/missing", "/x") == errno.ENOENT
    view.rename("/e", "/e")  # no-op


def test_readonly_views(lower: Tree) -> None:
    for v in (FsView([lower], None), FsView([lower], Tree(), readonly=True)):
        for fn, args in ((v.write, ("/x", b"")), (v.mkdir, ("/x",)), (v.unlink, ("/etc/hostname",)),
                         (v.chmod, ("/etc", 0o700)), (v.symlink, ("a", "/x")),
                         (v.rename, ("/etc", "/x"))):
            assert errno_of(fn, *args) == errno.EROFS


def test_write_calls_faults() -> None:
    faults = Faults()
    v = FsView([], Tree(), world_faults=faults)
    faults.fail_next("write", errno.ENOSPC, after=1)
    v.write("/a", b"1")
    with pytest.raises(OSError) as exc:
        v.write("/b", b"2")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == "/b"
    assert not v.exists("/b")


def test_mkdir_parents_chown_walk(view: FsView) -> None:
    view.mkdir("/p/q/r", parents=True)
    view.mkdir("/p/q/r", parents=True)  # idempotent
    view.chown("/p/q", 1000, 1000)
    assert (view.stat("/p/q").uid, view.stat("/p/q").gid) == (1000, 1000)
    paths = [p for p, _ in view.walk("/p")]
    assert paths == ["/p/q", "/p/q/r"]


# ---- sub-mounts ----------------------------------------------------------------------------------

def test_tmpfs_mount(view: FsView) -> None:
    view.mkdir("/tmp")
    tmpfs = FsView([], Tree())
    view.mount_at("/tmp", tmpfs)
    view.write("/tmp/f", b"in tmpfs")
    assert tmpfs.read("/f") == b"in tmpfs"
    assert view.listdir("/tmp") == ["f"]
    tmpfs.symlink("/etc/hostname", "/hn")  # absolute: the *sandbox* root
    assert view.read("/tmp/hn") == b"base"
    assert errno_of(view.rename, "/tmp/f", "/f") == errno.EXDEV
    assert errno_of(view.rmdir, "/tmp") == errno.EBUSY
    assert errno_of(view.mount_at, "/tmp", FsView([], Tree())) == errno.EBUSY
    assert errno_of(view.mount_at, "/etc/hostname", FsView([], Tree())) == errno.ENOTDIR
    assert "/tmp/f" in [p for p, _ in view.walk()]
    assert view.unmount_at("/tmp") is tmpfs
    assert view.listdir("/tmp") == []
    assert errno_of(view.unmount_at, "/tmp") == errno.EINVAL


def test_readonly_sub_mount(view: FsView, lower: Tree) -> None:
    view.mkdir("/ro")
    view.mount_at("/ro", FsView([lower], None))
    assert view.read("/ro/etc/hostname") == b"base"
    assert errno_of(view.write, "/ro/new", b"") == errno.EROFS


# ---- apply_tar details -----------------------------------------------------------------------

def test_apply_tar_entry_through_layer_symlink_stays_inside() -> None:
    t = layer(("symlink", "evil", "../../.."), ("file", "evil/etc/x", b"x"))
    v = FsView([t], None)
    assert v.read("/etc/x") == b"x"
    assert v.listdir("/") == ["etc", "evil"]


def test_apply_tar_hardlink_to_lower_file_copies_it_up(lower: Tree) -> None:
    t = layer(("hardlink", "sh2", "etc/hostname"), parent=FsView([lower], None))
    assert t.root.children["sh2"] is t.root.children["etc"].children["hostname"]  # type: ignore[attr-defined]


def test_apply_tar_later_dir_entry_updates_implicit_dir() -> None:
    t = layer(("file", "a/f", b"1"), ("dir", "a", 0o700))
    a = t.root.children["a"]
    assert isinstance(a, Dir) and a.mode == 0o700 and "f" in a.children


def test_apply_tar_refuses_file_as_parent() -> None:
    with pytest.raises(OSError) as exc:
        layer(("file", "a", b"1"), ("file", "a/b", b"2"))
    assert exc.value.errno == errno.EINVAL and exc.value.filename == "a/b"


def test_apply_tar_counts_limits_per_layer() -> None:
    tree = Tree()
    tar = make_tar(("file", "a", b"12345"), ("hardlink", "b", "a"))
    assert apply_tar(tree, None, io.BytesIO(tar), LayerLimits(max_bytes=5)) == 5


def test_diff_tar_is_deterministic_and_skips_useless_whiteouts(view: FsView) -> None:
    view.write("/z", b"z")
    view.write("/a", b"a")
    view.unlink("/etc/hostname")
    assert view.upper is not None
    view.upper.root.children["ghost"] = Whiteout()  # hides nothing
    lowers = FsView(view.layers, None)
    one, two = io.BytesIO(), io.BytesIO()
    assert diff_tar(view.upper, lowers, one) == diff_tar(view.upper, lowers, two)
    assert one.getvalue() == two.getvalue()
    with tarfile.open(fileobj=io.BytesIO(one.getvalue())) as tf:
        assert tf.getnames() == ["a", "etc", "etc/.wh.hostname", "z"]
