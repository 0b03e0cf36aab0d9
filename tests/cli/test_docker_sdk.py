"""The docker Python SDK (docker >= 7) drives wharfied (sim backend)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.daemon import Daemon, busybox_tar

docker = pytest.importorskip("docker", minversion="7")


@pytest.fixture(scope="module")
def sdk(daemon: Daemon) -> Iterator[Any]:
    client = docker.DockerClient(base_url=daemon.host, version="auto", timeout=30)
    yield client
    client.close()


def test_version_info_ping(sdk: Any) -> None:
    assert sdk.ping() is True
    assert sdk.version()["ApiVersion"] == "1.47"
    assert sdk.info()["Swarm"]["LocalNodeState"] == "inactive"


def test_images(sdk: Any) -> None:
    img = sdk.images.get("busybox:latest")
    assert "busybox:latest" in img.tags
    assert img.tag("sdk-copy", "1") is True
    assert "sdk-copy:1" in [t for i in sdk.images.list() for t in i.tags]
    sdk.images.remove("sdk-copy:1")
    with pytest.raises(docker.errors.ImageNotFound):
        sdk.images.get("sdk-copy:1")
    with pytest.raises(docker.errors.APIError):
        sdk.images.pull("nothing-here", tag="1")
    resp = sdk.api.import_image_from_data(busybox_tar(), repository="sdk-import", tag="x")
    assert "sha256:" in str(resp)
    sdk.images.remove("sdk-import:x")


def test_run_output_and_exit_code(sdk: Any) -> None:
    out = sdk.containers.run("busybox", ["sh", "-c", "echo hi; echo err >&2"], remove=True, stderr=True)
    assert out == b"hi\nerr\n"
    with pytest.raises(docker.errors.ContainerError) as info:
        sdk.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert info.value.exit_status == 3


def test_container_lifecycle(sdk: Any) -> None:
    c = sdk.containers.run("busybox", ["sh", "-c", "while true; do echo x; sleep 0.05; done"], detach=True,
                           name="sdk-life", labels={"suite": "sdk"})
    try:
        c.reload()
        assert c.status == "running" and c.name == "sdk-life"
        assert [x.id for x in sdk.containers.list(filters={"label": "suite=sdk"})] == [c.id]
        code, out = c.exec_run(["sh", "-c", "echo from-exec; exit 2"])
        assert (code, out) == (2, b"from-exec\n")
        assert c.top()["Titles"][1] == "PID"
        s = c.stats(stream=False)
        assert s["memory_stats"]["limit"] > 0 and "cpu_stats" in s and "precpu_stats" in s
        c.pause()
        c.reload()
        assert c.status == "paused"
        c.unpause()
        c.rename("sdk-life2")
        c.reload()
        assert c.name == "sdk-life2"
        deadline = time.monotonic() + 5
        while b"x\n" not in c.logs(tail=1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.logs(tail=1) == b"x\n"
        c.restart(timeout=1)
        c.kill()
        assert c.wait(timeout=10)["StatusCode"] == 137
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        sdk.containers.get(c.id)


def test_attach_socket_with_stdin(sdk: Any) -> None:
    c = sdk.containers.create("busybox", ["cat"], stdin_open=True)
    try:
        sock = sdk.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        c.start()
        raw = sock._sock
        raw.sendall(b"ping\n")
        data = b""
        deadline = time.monotonic() + 5
        raw.settimeout(5)
        while b"ping\n" not in data and time.monotonic() < deadline:
            data += raw.recv(4096)
        assert data[8:] == b"ping\n" and data[0] == 1  # one stdout frame
        sock.close()
        raw.close()  # docker-py's SocketIO does not own the socket
    finally:
        c.remove(force=True)


def test_events_stream(sdk: Any) -> None:
    since = time.time() - 1
    c = sdk.containers.run("busybox", "true", detach=True, name="sdk-evt")
    c.wait(timeout=10)
    c.remove()
    events = sdk.events(since=since, until=time.time() + 0.5, decode=True,
                        filters={"container": "sdk-evt"})
    try:
        actions = [e["Action"] for e in events]
    finally:
        events.close()
    assert actions[:3] == ["create", "start", "die"] and "destroy" in actions
