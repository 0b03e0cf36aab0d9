"""save/load, commit, diff, export, cp, history and system df/prune through the real docker CLI,
the docker SDK and wharfie's own CLI, against one wharfied (sim backend)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import tarfile
from typing import Any

import pytest

from tests.api.daemon import ROOT, Daemon
from tests.cli.test_docker_cli import DOCKER

TIMEOUT = 30


def _runner(argv: list[str], env: dict[str, str]) -> Any:
    def run(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        p = subprocess.run([*argv, *args], check=False, input=input, env=env, cwd=ROOT, capture_output=True, timeout=TIMEOUT)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv[-1:])} {' '.join(args)} → {p.returncode}\n"
                                 f"{p.stdout.decode(errors='replace')[-2000:]}\n{p.stderr.decode(errors='replace')}")
        return p

    run.env = env  # type: ignore[attr-defined]
    run.argv = argv  # type: ignore[attr-defined]
    return run


@pytest.fixture(scope="module")
def docker(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not os.path.exists(DOCKER):
        pytest.skip("the docker CLI is not installed (/usr/local/bin/docker; Debian package docker.io)")
    env = {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CONFIG": str(tmp_path_factory.mktemp("dcfg")),
           "DOCKER_CLI_HINTS": "false"}
    env.pop("DOCKER_CONTEXT", None)
    return _runner([DOCKER], env)


@pytest.fixture(scope="module")
def wharfie(daemon: Daemon) -> Any:
    env = {**os.environ, "WHARFIE_HOST": daemon.host, "PYTHONPATH": ROOT, "WHARFIE_NO_AUTOSTART": "1"}
    env.pop("DOCKER_HOST", None)
    return _runner([sys.executable, "-m", "engine.cli.main"], env)


@pytest.fixture(scope="module")
def sdk(daemon: Daemon) -> Any:
    docker_sdk = pytest.importorskip("docker", minversion="7")
    client = docker_sdk.DockerClient(base_url=daemon.host, version="auto", timeout=30)
    yield client
    client.close()


def image_id(run: Any, ref: str) -> str:
    return str(run("image", "inspect", "-f", "{{.Id}}", ref).stdout.decode().strip())


def names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return set(tf.getnames())


def container(run: Any, script: str, image: str = "busybox") -> str:
    cid = run("run", "-d", image, "sh", "-c", script).stdout.decode().strip()
    assert run("wait", cid).stdout.strip() == b"0"
    return str(cid)


# -- the docker CLI ------------------------------------------------------------------------

def test_docker_save_load_round_trip(docker: Any, tmp_path: Any) -> None:
    before = image_id(docker, "busybox")
    out = tmp_path / "bb.tar"
    docker("save", "-o", str(out), "busybox")
    assert {"manifest.json", "index.json", "oci-layout"} <= names(out.read_bytes())
    assert docker("save", "busybox:latest").stdout == out.read_bytes()  # deterministic, streamed to stdout
    docker("tag", "busybox", "dsave:1")
    docker("rmi", "dsave:1")
    assert docker("load", "-i", str(out)).stdout == b"Loaded image: busybox:latest\n"
    assert docker("load", input=out.read_bytes()).stdout == b"Loaded image: busybox:latest\n"
    assert image_id(docker, "busybox") == before
    p = docker("load", input=out.read_bytes()[:5000], check=False)
    assert p.returncode != 0 and b"truncated" in p.stderr
    p = docker("save", "-o", str(tmp_path / "x.tar"), "no-such:image", check=False)
    assert p.returncode != 0 and b"No such image" in p.stderr
    assert docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == b"1.47"  # still serving


def test_docker_commit_diff_history_export(docker: Any, tmp_path: Any) -> None:
    cid = container(docker, "echo changed > /hello; rm /bin/true")
    diff = docker("diff", cid).stdout.decode().splitlines()
    assert {"A /hello", "D /bin/true", "C /bin"} <= set(diff)
    new = docker("commit", "-m", "via docker", "-a", "tester", "-c", 'CMD ["cat", "/hello"]', cid,
                 "dcommit:1").stdout.decode().strip()
    assert new.startswith("sha256:") and image_id(docker, "dcommit:1") == new
    assert docker("run", "--rm", "dcommit:1").stdout == b"changed\n"
    assert docker("run", "--rm", "dcommit:1", "ls", "/bin/true", check=False).returncode != 0
    assert docker("run", "--rm", "busybox", "ls", "/bin/true").returncode == 0  # the base is untouched
    hist = docker("history", "dcommit:1").stdout.decode().splitlines()
    assert hist[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert hist[1].startswith(new[7:19]) and hist[1].endswith("via docker")
    assert docker("history", "-q", "--no-trunc", "dcommit:1").stdout.decode().split()[0] == new
    docker("export", "-o", str(tmp_path / "fs.tar"), cid)
    got = names((tmp_path / "fs.tar").read_bytes())
    assert "hello" in got and "bin/sh" in got and "bin/true" not in got
    assert names(docker("export", cid).stdout) == got


def test_docker_cp_in_and_out(docker: Any, tmp_path: Any) -> None:
    cid = container(docker, "mkdir -p /d/e; echo 1 > /d/a; echo 2 > /d/e/b; ln -s /d/a /d/l")
    docker("cp", f"{cid}:/d", str(tmp_path / "new"))  # a new name: the directory's contents
    assert (tmp_path / "new" / "e" / "b").read_text() == "2\n" and os.readlink(tmp_path / "new" / "l") == "/d/a"
    (tmp_path / "into").mkdir()
    docker("cp", f"{cid}:/d", str(tmp_path / "into"))  # an existing directory: copied into it
    assert (tmp_path / "into" / "d" / "a").read_text() == "1\n"
    docker("cp", f"{cid}:/d/.", str(tmp_path / "into"))  # "/.": the contents
    assert (tmp_path / "into" / "a").read_text() == "1\n"
    docker("cp", "-L", f"{cid}:/d/l", str(tmp_path / "followed"))
    assert (tmp_path / "followed").read_text() == "1\n" and not os.path.islink(tmp_path / "followed")
    assert names(docker("cp", f"{cid}:/d/a", "-").stdout) == {"a"}
    p = docker("cp", f"{cid}:/nope", str(tmp_path / "x"), check=False)
    # the daemon's 404 message; docker clients before 23 print their own "No such container:path"
    assert p.returncode != 0 and (b"Could not find the file /nope in container" in p.stderr
                                  or b"No such container:path" in p.stderr), p.stderr
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("hello\n")
    docker("cp", str(src), f"{cid}:/copied")
    docker("cp", str(src / "sub" / "f"), f"{cid}:/d/a")  # an existing file is replaced
    assert names(docker("cp", f"{cid}:/copied/sub/f", "-").stdout) == {"f"}
    diff = docker("diff", cid).stdout.decode().splitlines()
    assert "A /copied/sub/f" in diff and "A /d/a" in diff


def test_docker_system_df_and_prune(docker: Any) -> None:
    container(docker, "echo x > /y")
    lines = docker("system", "df").stdout.decode().splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [ln.split()[0] for ln in lines[1:]] == ["Images", "Containers", "Local", "Build"]
    assert "Images space usage:" in docker("system", "df", "-v").stdout.decode()
    docker("tag", "busybox", "keep:me")
    out = docker("system", "prune", "-f").stdout.decode()
    assert "Deleted Containers:" in out and "Total reclaimed space:" in out
    assert docker("ps", "-aq").stdout == b""
    assert image_id(docker, "keep:me")


# -- the docker SDK ------------------------------------------------------------------------

def test_sdk_save_load_commit_diff_export_archive(sdk: Any) -> None:
    img = sdk.images.get("busybox:latest")
    data = b"".join(img.save())
    assert "manifest.json" in names(data)
    [loaded] = sdk.images.load(data)
    assert loaded.id == img.id
    c = sdk.containers.run("busybox", ["sh", "-c", "echo sdk > /sdk"], detach=True)
    c.wait()
    assert {"Path": "/sdk", "Kind": 1} in c.diff()
    new = c.commit("sdkcommit", "1", message="from sdk", changes=["ENV K=v"], conf={"Cmd": ["cat", "/sdk"]})
    assert new.attrs["Comment"] == "from sdk" and "K=v" in new.attrs["Config"]["Env"]
    assert sdk.containers.run("sdkcommit:1", remove=True) == b"sdk\n"
    assert "sdk" in names(b"".join(c.export()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("put.txt")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    assert c.put_archive("/tmp", buf.getvalue()) is True
    stream, stat = c.get_archive("/tmp/put.txt")
    assert stat["name"] == "put.txt" and stat["size"] == 3
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        assert tf.extractfile("put.txt").read() == b"abc"  # type: ignore[union-attr]
    import docker as docker_sdk

    with pytest.raises(docker_sdk.errors.NotFound):
        c.get_archive("/nope")
    with pytest.raises(docker_sdk.errors.ImageLoadError):
        sdk.images.load(data[: len(data) // 2])
    c.remove()


# -- wharfie's own CLI ---------------------------------------------------------------------

def test_wharfie_save_load_history(wharfie: Any, tmp_path: Any) -> None:
    before = image_id(wharfie, "busybox")
    out = tmp_path / "w.tar"
    wharfie("save", "-o", str(out), "busybox")
    assert wharfie("image", "save", "busybox").stdout == out.read_bytes()
    p = wharfie("load", "-i", str(out))
    lines = p.stdout.decode().splitlines()
    assert lines[-1] == "Loaded image: busybox:latest"
    assert re.fullmatch(r"[0-9a-f]{12}: Loading layer [0-9.]+[kMG]?B", lines[0]), lines
    assert wharfie("image", "load", "-q", input=out.read_bytes()).stdout == b"Loaded image: busybox:latest\n"
    assert image_id(wharfie, "busybox") == before
    p = wharfie("load", input=out.read_bytes()[:4000], check=False)
    assert p.returncode != 0 and b"truncated" in p.stderr
    hist = wharfie("history", "busybox").stdout.decode().splitlines()
    assert hist[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert wharfie("image", "history", "-q", "--no-trunc", "busybox").stdout.decode().split()[0] == before


def test_wharfie_save_and_export_refuse_a_terminal(wharfie: Any) -> None:
    for args in (["save", "busybox"], ["export", "whatever"]):
        main, secondary = pty.openpty()
        try:
            p = subprocess.run([*wharfie.argv, *args], check=False, env=wharfie.env, cwd=ROOT, stdout=secondary,
                               stderr=subprocess.PIPE, timeout=TIMEOUT)
        finally:
            os.close(secondary)
            os.close(main)
        assert p.returncode != 0
        assert b"cowardly refusing to save to a terminal. Use the -o flag or redirect" in p.stderr


def test_wharfie_commit_diff_export_cp(wharfie: Any, tmp_path: Any) -> None:
    cid = container(wharfie, "mkdir /w; echo w > /w/f; rm /bin/true")
    assert {"A /w", "A /w/f", "D /bin/true"} <= set(wharfie("diff", cid).stdout.decode().splitlines())
    new = wharfie("commit", "-m", "msg", "-c", "ENV A=1", "--pause=false", cid, "wcommit:2").stdout.decode().strip()
    assert new == image_id(wharfie, "wcommit:2")
    assert json.loads(wharfie("image", "inspect", "wcommit:2").stdout)[0]["Comment"] == "msg"
    assert wharfie("run", "--rm", "wcommit:2", "cat", "/w/f").stdout == b"w\n"
    assert wharfie("commit", "-p=false", cid).stdout.startswith(b"sha256:")
    wharfie("container", "export", "-o", str(tmp_path / "e.tar"), cid)
    assert "w/f" in names((tmp_path / "e.tar").read_bytes())
    p = wharfie("cp", f"{cid}:/w", str(tmp_path / "out"))
    assert b"Successfully copied" in p.stderr and (tmp_path / "out" / "f").read_text() == "w\n"
    (tmp_path / "dir").mkdir()
    wharfie("cp", f"{cid}:/w/.", str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "f").read_text() == "w\n"
    (tmp_path / "local.txt").write_text("local\n")
    wharfie("cp", str(tmp_path / "local.txt"), f"{cid}:/w/")
    wharfie("container", "cp", str(tmp_path / "local.txt"), f"{cid}:/renamed")
    tar = wharfie("cp", f"{cid}:/w", "-").stdout
    assert names(tar) == {"w", "w/f", "w/local.txt"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("v/g")
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"stdin\n"))
    wharfie("cp", "-", f"{cid}:/", input=buf.getvalue())
    diff = wharfie("diff", cid).stdout.decode().splitlines()
    assert {"A /renamed", "A /v/g", "A /w/local.txt"} <= set(diff)
    for args, message in (([f"{cid}:/nope", str(tmp_path / "x")], b"Could not find the file /nope"),
                          ([f"{cid}:/w/f", str(tmp_path / "missing") + "/"], b"must exist"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], b"at least one container"),
                          ([f"{cid}:/w", f"{cid}:/v"], b"between containers")):
        p = wharfie("cp", *args, check=False)
        assert p.returncode != 0 and message in p.stderr, p.stderr


def test_wharfie_cp_out_stays_inside_the_destination(wharfie: Any, tmp_path: Any) -> None:
    cid = container(wharfie, "mkdir /t; ln -s /etc/passwd /t/pw; ln -s ../../../../.. /t/up")
    dest = tmp_path / "dest"
    wharfie("cp", f"{cid}:/t", str(dest))
    assert os.readlink(dest / "pw") == "/etc/passwd" and os.path.islink(dest / "up")
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.unlink(dest / "pw")
    os.symlink(victim, dest / "pw")  # a local symlink at an entry's name is replaced, never written through
    wharfie("cp", f"{cid}:/t/.", str(dest))
    assert victim.read_text() == "keep\n" and os.readlink(dest / "pw") == "/etc/passwd"


def test_wharfie_system_df_and_prune(wharfie: Any) -> None:
    container(wharfie, "echo logged; echo x > /y")
    lines = wharfie("system", "df").stdout.decode().splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [ln.split()[0] for ln in lines[1:]] == ["Images", "Containers", "Local", "Build", "Logs"]
    assert lines[-1].split()[1] != "0"
    verbose = wharfie("system", "df", "-v").stdout.decode()
    assert "Images space usage:" in verbose and "LOGS SIZE" in verbose
    out = wharfie("system", "prune", "-f").stdout.decode()
    assert "Deleted Containers:" in out and out.rstrip().splitlines()[-1].startswith("Total reclaimed space:")
    assert wharfie("ps", "-aq").stdout == b""
    assert "Total reclaimed space" in wharfie("container", "prune", "-f").stdout.decode()
    assert "Total reclaimed space" in wharfie("image", "prune", "-f").stdout.decode()
    p = wharfie("system", "prune", input=b"n\n")
    assert b"WARNING! This will remove:" in p.stdout and b"all dangling images" in p.stdout


def test_load_progress_bars_on_a_terminal() -> None:
    from engine.cli.progress import render

    docs = [{"status": "Loading layer", "id": "aaaaaaaaaaaa", "progressDetail": {"current": 5, "total": 10}},
            {"status": "Loading layer", "id": "bbbbbbbbbbbb", "progressDetail": {"current": 1, "total": 10}},
            {"status": "Loading layer", "id": "aaaaaaaaaaaa", "progressDetail": {"current": 10, "total": 10}},
            {"stream": "Loaded image: x:1\n"}]
    out = io.StringIO()
    render(docs, tty=True, out=out)
    text = out.getvalue()
    assert "aaaaaaaaaaaa: Loading layer [" in text and "\x1b[2A" in text and "\x1b[2K" in text
    assert "=" * 50 + ">]" in text and text.endswith("Loaded image: x:1\n")
    plain = io.StringIO()
    render(docs, tty=False, out=plain)
    assert plain.getvalue() == "aaaaaaaaaaaa: Loading layer 10B\nLoaded image: x:1\n"
