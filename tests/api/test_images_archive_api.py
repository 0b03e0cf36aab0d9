"""Images and container filesystems over HTTP: save/load (``/images/get``, ``/images/load``),
commit, changes, export, the archive endpoints ``docker cp`` uses, history, disk usage and the
prune endpoints ``docker system prune`` calls."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import socket
import tarfile
import time
from typing import Any

import pytest

from engine import errors
from engine.client import Client
from tests.api.daemon import Daemon


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
    return buf.getvalue()


def members(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f is not None else m
    return out


def run(client: Client, *cmd: str, image: str = "busybox") -> str:
    cid = str(client.create({"Image": image, "Cmd": list(cmd)})["Id"])
    client.start(cid)
    assert client.wait(cid) == 0
    return cid


def output(client: Client, cid: str) -> bytes:
    return b"".join(data for _fd, data in client.logs(cid))


def images(client: Client) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((i["Id"], tuple(sorted(i["RepoTags"]))) for i in client.images(all=True))


@pytest.fixture(scope="module")
def saved(daemon: Daemon) -> bytes:
    return b"".join(daemon.client().save(["busybox:latest"]).chunks())


def test_save_is_a_docker_and_oci_archive(client: Client, saved: bytes) -> None:
    got = members(saved)
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= set(got)
    [entry] = json.loads(got["manifest.json"])
    assert entry["RepoTags"] == ["busybox:latest"]
    assert entry["Config"] == "blobs/sha256/" + client.image("busybox")["Id"].split(":")[1]
    # the path form answers the same bytes, and saving is deterministic
    resp = client.request("GET", "/images/busybox:latest/get", stream=True)
    assert resp.headers["Content-Type"] == "application/x-tar"
    assert b"".join(resp.chunks()) == saved
    client.tag("busybox", "second", "1")
    both = members(b"".join(client.save(["busybox:latest", "second:1"]).chunks()))
    [entry] = json.loads(both["manifest.json"])
    assert sorted(entry["RepoTags"]) == ["busybox:latest", "second:1"]
    client.remove_image("second:1")
    with pytest.raises(errors.NotFound):
        client.save(["no-such-image:1"])
    with pytest.raises(errors.InvalidArgument):
        client.request("GET", "/images/get").read()


def test_load_round_trip_keeps_the_image_id(client: Client, saved: bytes) -> None:
    image_id = client.image("busybox")["Id"]
    client.tag("busybox", "rt-copy", "1")
    cid = run(client, "true")
    client.remove(cid)
    client.remove_image("busybox:latest")
    client.remove_image("rt-copy:1")
    with pytest.raises(errors.NotFound):
        client.image(image_id)
    docs = list(client.load(saved))
    progress = [d for d in docs if d.get("status") == "Loading layer"]
    assert progress, docs
    last = progress[-1]
    assert len(last["id"]) == 12 and last["progressDetail"]["current"] == last["progressDetail"]["total"]
    assert last["progress"].startswith("[" + "=" * 50 + ">]")
    assert docs[-1] == {"stream": "Loaded image: busybox:latest\n"}
    assert client.image("busybox:latest")["Id"] == image_id
    # quiet: only the result; loading again is harmless
    assert list(client.load(saved, quiet=True)) == [{"stream": "Loaded image: busybox:latest\n"}]
    assert list(client.load(gzip.compress(saved, 1), quiet=True)) == [{"stream": "Loaded image: busybox:latest\n"}]
    assert client.image("busybox:latest")["Id"] == image_id


def test_load_of_an_untagged_image_names_its_id(client: Client) -> None:
    image_id = client.image("busybox")["Id"]
    data = b"".join(client.save([image_id]).chunks())
    assert list(client.load(data, quiet=True)) == [{"stream": f"Loaded image ID: {image_id}\n"}]


def _inside(saved: bytes, name: str) -> int:
    """An offset in the middle of member ``name``'s data."""
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        m = tf.getmember(name)
        return m.offset_data + m.size // 2


@pytest.mark.parametrize("cut", [100, 3000, 700_000, "manifest.json"])
def test_truncated_archives_are_refused_and_the_daemon_keeps_serving(client: Client, saved: bytes,
                                                                     cut: int | str) -> None:
    before = images(client)
    data = saved[:cut if isinstance(cut, int) else _inside(saved, cut)]
    try:
        docs = list(client.load(data))
    except errors.InvalidArgument as e:
        assert "truncated" in str(e) or "invalid image archive" in str(e)
    else:  # progress had started: the error comes in-band, as moby's
        assert "error" in docs[-1] and docs[-1]["errorDetail"]["message"] == docs[-1]["error"]
        assert "truncated" in docs[-1]["error"]
    with pytest.raises(errors.InvalidArgument):
        list(client.load(data, quiet=True))
    assert client.ping()
    assert images(client) == before


def test_load_of_garbage_is_400(client: Client) -> None:
    with pytest.raises(errors.InvalidArgument):
        list(client.load(b"this is not an archive" * 100))
    with pytest.raises(errors.InvalidArgument):
        list(client.load(b""))
    assert client.ping()


def test_commit_with_config_body_and_changes_then_run(client: Client) -> None:
    cid = run(client, "sh", "-c", "echo committed > /hello; rm /bin/true")
    kinds = {(c["Kind"], c["Path"]) for c in client.changes(cid)}
    assert {(1, "/hello"), (2, "/bin/true"), (0, "/bin")} <= kinds
    q = {"container": cid, "repo": "api-commit", "tag": "v1", "comment": "a message", "author": "me <me@x>",
         "changes": ["ENV FOO=bar", "LABEL via=change"], "pause": "false"}
    resp = client.request("POST", "/commit", q, body={"Cmd": ["cat", "/hello"], "Env": ["A=b c"], "Hostname": "x",
                                                      "Unknown": {"is": "ignored"}})
    assert resp.status == 201
    new_id = resp.json()["Id"]
    assert new_id.startswith("sha256:")
    doc = client.image("api-commit:v1")
    assert doc["Id"] == new_id and doc["Comment"] == "a message" and doc["Author"] == "me <me@x>"
    assert doc["Config"]["Cmd"] == ["cat", "/hello"]
    assert {"A=b c", "FOO=bar"} <= set(doc["Config"]["Env"]) and doc["Config"]["Labels"] == {"via": "change"}
    assert len(doc["RootFS"]["Layers"]) == len(client.image("busybox")["RootFS"]["Layers"]) + 1
    cid2 = run(client, image="api-commit:v1")
    assert output(client, cid2) == b"committed\n"
    # the deletion is a whiteout in the new image; the original image is untouched
    check = client.create({"Image": "api-commit:v1", "Cmd": ["ls", "/bin/true"]})["Id"]
    client.start(check)
    assert client.wait(check) != 0
    run(client, "ls", "/bin/true")
    history = client.image_history("api-commit:v1")
    assert history[0]["Id"] == new_id and history[0]["Tags"] == ["api-commit:v1"]
    assert history[0]["Comment"] == "a message" and history[0]["Size"] > 0
    assert set(history[0]) == {"Id", "Created", "CreatedBy", "Tags", "Size", "Comment"}
    assert history[-1]["Id"] == "<missing>" or len(history) == 2


def test_commit_errors(client: Client) -> None:
    with pytest.raises(errors.NotFound):
        client.commit("no-such-container")
    with pytest.raises(errors.InvalidArgument):
        client.request("POST", "/commit").read()
    cid = run(client, "true")
    with pytest.raises(errors.InvalidArgument):
        client.commit(cid, changes=["RUN echo no"])
    with pytest.raises(errors.InvalidArgument):
        client.request("POST", "/commit", {"container": cid}, body=[1, 2]).read()


def test_export_is_the_merged_filesystem(client: Client) -> None:
    cid = run(client, "sh", "-c", "echo x > /exported; rm /bin/true")
    resp = client.export(cid)
    assert resp.headers["Content-Type"] == "application/x-tar"
    got = members(b"".join(resp.chunks()))
    assert got["exported"] == b"x\n" and "bin/sh" in got and "bin/true" not in got
    with pytest.raises(errors.NotFound):
        client.export("no-such-container")


def test_archive_head_get_put(client: Client) -> None:
    cid = run(client, "sh", "-c", "mkdir -p /d/e; echo 1 > /d/a; echo 22 > /d/e/b; ln -s /d/a /d/l")
    resp = client.request("HEAD", f"/containers/{cid}/archive", {"path": "/d/a"})
    resp.read()
    st = json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))
    assert set(st) == {"name", "size", "mode", "mtime", "linkTarget"}
    assert (st["name"], st["size"], st["mode"] & 0o777, st["linkTarget"]) == ("a", 2, 0o644, "")
    assert st["mtime"].endswith("Z")
    assert client.archive_stat(cid, "/d")["mode"] & (1 << 31)  # Go's os.ModeDir
    link = client.archive_stat(cid, "/d/l")
    assert link["mode"] & (1 << 27) and link["linkTarget"] == "/d/a"
    st, resp = client.archive_get(cid, "/d")
    assert st["name"] == "d" and resp.headers["Content-Type"] == "application/x-tar"
    got = members(resp.read())
    assert got["d/a"] == b"1\n" and got["d/e/b"] == b"22\n" and got["d/l"].linkname == "/d/a"
    client.archive_put(cid, "/d/e", io.BytesIO(tar_of({"new/f": b"put\n"})))
    _st, resp = client.archive_get(cid, "/d/e/new/f")
    assert members(resp.read()) == {"f": b"put\n"}
    assert (1, "/d/e/new/f") in {(c["Kind"], c["Path"]) for c in client.changes(cid)}


def test_archive_errors(daemon: Daemon, client: Client) -> None:
    cid = run(client, "true")
    name = client.container(cid)["Name"].lstrip("/")
    with pytest.raises(errors.NotFound) as info:
        client.archive_get(cid, "/nope")
    assert str(info.value) == f"Could not find the file /nope in container {name}"
    with pytest.raises(errors.NotFound):
        client.archive_stat(cid, "/nope")
    with pytest.raises(errors.NotFound):
        client.archive_put(cid, "/nope", io.BytesIO(tar_of({"f": b""})))
    with pytest.raises(errors.InvalidArgument):
        client.archive_put(cid, "/bin/sh", io.BytesIO(tar_of({"f": b""})))
    with pytest.raises(errors.InvalidArgument):
        client.request("GET", f"/containers/{cid}/archive").read()
    with pytest.raises(errors.NotFound):
        client.archive_get("no-such-container", "/")
    assert client.ping()


def test_cp_cannot_escape_through_symlinks(client: Client, tmp_path: Any) -> None:
    cid = run(client, "sh", "-c", "ln -s ../../../../../ /esc; mkdir /box; ln -s /etc/passwd /pw")
    outside = tmp_path / "outside"
    # a symlinked directory resolves inside the container's root
    client.archive_put(cid, "/esc/box", io.BytesIO(tar_of({"f": b"in\n"})))
    _st, resp = client.archive_get(cid, "/box/f")
    assert members(resp.read()) == {"f": b"in\n"}
    # entries climbing out, or written through a link pointing at the host, stay inside
    with pytest.raises(errors.InvalidArgument):
        client.archive_put(cid, "/box", io.BytesIO(tar_of({f"../../../../{outside}": b"x"})))
    client.archive_put(cid, "/box", io.BytesIO(tar_of({}, {"hostlink": str(tmp_path)})))
    with contextlib.suppress(errors.InvalidArgument):  # refused, or replaced the link: never written through
        client.archive_put(cid, "/box", io.BytesIO(tar_of({"hostlink/planted": b"x"})))
    assert not outside.exists() and not (tmp_path / "planted").exists()
    _st, resp = client.archive_get(cid, "/esc/etc/passwd")
    assert b"root:" in members(resp.read())["passwd"]
    assert client.ping()


def test_disk_usage_and_prune_endpoints(client: Client) -> None:
    cid = run(client, "sh", "-c", "echo some log output; echo data > /file")
    df = client.df()
    assert {"LayersSize", "Images", "Containers", "Volumes", "BuildCache", "LogsSize"} <= set(df)
    [c] = [c for c in df["Containers"] if c["Id"] == cid]
    assert c["SizeRw"] > 0 and c["SizeRootFs"] >= c["SizeRw"] and "LogsSize" in c
    [img] = [i for i in df["Images"] if "busybox:latest" in i["RepoTags"]]
    assert img["Containers"] >= 1 and img["Size"] > 0 and img["SharedSize"] >= 0
    assert df["LayersSize"] >= img["Size"]
    assert client.prune("networks") == {"NetworksDeleted": None}
    assert client.prune("volumes") == {"VolumesDeleted": None, "SpaceReclaimed": 0}
    assert client.prune("build") == {"CachesDeleted": None, "SpaceReclaimed": 0}
    assert cid in client.prune_containers()["ContainersDeleted"]
    client.commit(run(client, "true"), "dangling-soon:1")
    client.remove_image("dangling-soon:1")
    assert client.prune_images()["SpaceReclaimed"] >= 0


def test_client_vanishing_mid_save_or_load(daemon: Daemon, client: Client, saved: bytes) -> None:
    """A client that leaves half-way through a save or a load does not wedge the daemon."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.socket)
        s.sendall(b"GET /images/get?names=busybox HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.socket)
        s.sendall(b"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(saved) + saved[:len(saved) // 2])
    before = images(client)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert client.ping()
        if images(client) == before:
            break
        time.sleep(0.1)
    assert list(client.load(saved, quiet=True)) == [{"stream": "Loaded image: busybox:latest\n"}]
