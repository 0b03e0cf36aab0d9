"""The Docker Engine API over HTTP with ``engine.client.Client``: shapes, headers, streams, and
errors that come back as the engine's own exception classes."""

from __future__ import annotations

import json
import time

import pytest

from engine import errors
from engine.client import Client


def raw_get(client: Client, path: str) -> tuple[int, bytes]:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(client.host[len("unix://"):])

    conn = Conn("x")
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_ping_headers_and_versioned_paths(client: Client) -> None:
    r = client.request("GET", "/_ping")
    assert r.read() == b"OK"
    for h in ("Api-Version", "Ostype", "Server", "Docker-Experimental", "Swarm", "Builder-Version"):
        assert h in r.headers, h
    assert r.headers["Api-Version"] == "1.47" and r.headers["Swarm"] == "inactive"
    for path in ("/version", "/v1.40/version", "/v1.47/version"):
        status, body = raw_get(client, path)
        assert status == 200 and json.loads(body)["ApiVersion"] == "1.47"


def test_api_version_out_of_range(client: Client) -> None:
    for path, status in (("/v1.99/version", 400), ("/v1.12/version", 400), ("/nope", 404)):
        got, body = raw_get(client, path)
        assert got == status and json.loads(body)["message"]


def test_container_inspect_and_list_shapes(client: Client) -> None:
    cid = client.create({"Image": "busybox", "Cmd": ["sleep", "30"], "Labels": {"k": "v"}}, "shapes")["Id"]
    try:
        doc = client.container("shapes")
        assert doc["Id"] == cid and doc["Name"] == "/shapes" and doc["State"]["Status"] == "created"
        assert doc["Created"].endswith("Z") and doc["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
        for key in ("Path", "Args", "Image", "HostConfig", "Config", "NetworkSettings", "Mounts", "LogPath",
                    "RestartCount"):
            assert key in doc
        client.start(cid)
        [item] = client.containers(filters={"label": ["k=v"]})
        assert item["Names"] == ["/shapes"] and item["State"] == "running"
        assert item["Status"].startswith("Up ") and isinstance(item["Created"], int)
        assert client.containers(all=True, filters={"name": ["shapes"]}, size=True)[0]["SizeRw"] >= 0
        top = client.top(cid)
        assert top["Titles"][:3] == ["UID", "PID", "PPID"]
        [stats] = list(client.stats(cid))
        assert {"read", "preread", "cpu_stats", "precpu_stats", "memory_stats", "pids_stats"} <= set(stats)
        assert client.update(cid, {"Memory": 64 * 1024 * 1024}) == {"Warnings": []}
        assert client.container(cid)["HostConfig"]["Memory"] == 64 * 1024 * 1024
    finally:
        client.remove(cid, force=True)


def test_errors_round_trip_as_engine_errors(client: Client) -> None:
    with pytest.raises(errors.NotFound):
        client.container("does-not-exist")
    with pytest.raises(errors.NotFound):
        client.image("nothing:here")
    cid = client.create({"Image": "busybox", "Cmd": ["true"]})["Id"]
    with pytest.raises(errors.Conflict):
        client.kill(cid)
    with pytest.raises(errors.AlreadyExists):
        client.create({"Image": "busybox", "Cmd": ["true"]}, client.container(cid)["Name"][1:])
    with pytest.raises(errors.InvalidArgument):
        client.create({"Image": "busybox"}, "bad name!")
    with pytest.raises((errors.Unavailable, errors.NotFound, errors.PermissionDenied)):  # no hub from tests
        list(client.request("POST", "/images/create", {"fromImage": "alpine", "tag": "3"}).lines())
    client.remove(cid)


def test_attach_before_start_gets_all_output_and_stdin(client: Client) -> None:
    cid = client.create({"Image": "busybox", "Cmd": ["sh", "-c", "read x; echo got $x; echo e >&2"],
                         "OpenStdin": True, "StdinOnce": True})["Id"]
    hj = client.attach(cid, stdin=True)
    waiter = client.wait_response(cid, "next-exit")
    client.start(cid)
    hj.send(b"hello\n")
    hj.close_write()
    out = list(hj.output())
    hj.close()
    assert out == [(1, b"got hello\n"), (2, b"e\n")]
    assert waiter.json() == {"StatusCode": 0, "Error": None}
    assert list(client.logs(cid, tail="1")) == [(2, b"e\n")]
    client.remove(cid)


def test_exec_hijacked_and_detached(client: Client) -> None:
    cid = client.create({"Image": "busybox", "Cmd": ["sleep", "30"]})["Id"]
    client.start(cid)
    try:
        eid = client.exec_create(cid, {"Cmd": ["sh", "-c", "echo a; echo b >&2; exit 4"]})
        hj = client.exec_start(eid)
        assert hj is not None
        assert list(hj.output()) == [(1, b"a\n"), (2, b"b\n")]
        hj.close()
        info = client.exec_inspect(eid)
        assert info["ExitCode"] == 4 and info["Running"] is False
        eid = client.exec_create(cid, {"Cmd": ["touch", "/made-by-exec"]})
        assert client.exec_start(eid, detach=True) is None
        deadline = time.monotonic() + 5
        while client.exec_inspect(eid)["ExitCode"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.exec_inspect(eid)["ExitCode"] == 0
        with pytest.raises(errors.NotFound):
            client.exec_inspect("0" * 64)
    finally:
        client.remove(cid, force=True)


def test_images_list_inspect_tag_remove_prune(client: Client) -> None:
    [img] = [i for i in client.images() if "busybox:latest" in i["RepoTags"]]
    for key in ("Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size", "SharedSize", "VirtualSize",
                "Labels", "Containers"):
        assert key in img
    client.tag("busybox:latest", "api-tag", "1")
    assert client.image("api-tag:1")["Id"] == img["Id"]
    assert client.remove_image("api-tag:1") == [{"Untagged": "api-tag:1"}]
    assert "ImagesDeleted" in client.prune_images()
    assert client.images(filters={"reference": ["busybox"]})[0]["Id"] == img["Id"]


def test_events_since_until_filters(client: Client) -> None:
    since = time.time() - 0.5
    cid = client.create({"Image": "busybox", "Cmd": ["true"]}, "evts")["Id"]
    client.remove(cid)
    evs = list(client.events(since=str(since), until=str(time.time() + 0.2), filters={"container": ["evts"]}))
    assert [e["Action"] for e in evs] == ["create", "destroy"]
    e = evs[0]
    assert e["Type"] == "container" and e["Actor"]["ID"] == cid and e["Actor"]["Attributes"]["name"] == "evts"
    assert e["status"] == "create" and e["id"] == cid and e["from"] == "busybox"
    assert e["scope"] == "local" and isinstance(e["timeNano"], int)
    with pytest.raises(errors.InvalidArgument):
        list(client.events(filters={"bogus": ["x"]}))


def test_container_prune_and_df(client: Client) -> None:
    cid = client.create({"Image": "busybox", "Cmd": ["true"]})["Id"]
    assert cid in client.prune_containers()["ContainersDeleted"]
    df = client.df()
    assert {"Images", "Containers", "Volumes", "LayersSize"} <= set(df)
