"""The real docker CLI drives wharfied (sim backend) through ``DOCKER_HOST=unix://…``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.api.daemon import Daemon, busybox_tar

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
pytestmark = pytest.mark.skipif(not os.path.exists(DOCKER), reason="the docker CLI is not installed "
                                "(/usr/local/bin/docker; Debian package docker.io)")
TIMEOUT = 20


@pytest.fixture(scope="module")
def docker(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = tmp_path_factory.mktemp("docker-config")
    env = {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CONFIG": str(config), "DOCKER_CLI_HINTS": "false"}
    env.pop("DOCKER_CONTEXT", None)

    def run(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([DOCKER, *args], input=input.decode() if input is not None else None, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} → {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    run.env = env  # type: ignore[attr-defined]
    return run


def test_version_and_info(docker: Any) -> None:
    v = json.loads(docker("version", "--format", "{{json .Server}}").stdout)
    assert v["ApiVersion"] == "1.47"
    assert "1.47" in docker("version").stdout
    info = docker("info", "--format", "{{.ServerVersion}} {{.Swarm.LocalNodeState}} {{.OSType}}").stdout
    assert info.split() == [v["Version"], "inactive", "linux"]


def test_import_images_tag_rmi(docker: Any, tmp_path: Any) -> None:
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(busybox_tar())
    out = docker("import", "-c", 'CMD ["sh"]', "-m", "from test", str(tar), "imported:v1").stdout
    assert out.strip().startswith("sha256:")
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "imported:v1" in listing and "busybox:latest" in listing
    assert "REPOSITORY" in docker("images").stdout.splitlines()[0]
    docker("tag", "imported:v1", "imported:v2")
    assert docker("image", "inspect", "-f", "{{.Comment}}", "imported:v2").stdout.strip() == "from test"
    rmi = docker("rmi", "imported:v1").stdout
    assert "Untagged: imported:v1" in rmi
    rmi = docker("rmi", "imported:v2").stdout
    assert "Deleted: sha256:" in rmi
    p = docker("rmi", "imported:v2", check=False)
    assert p.returncode != 0 and "No such image" in p.stderr


def test_run_attached_output_and_exit_code(docker: Any) -> None:
    p = docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    assert docker("run", "--rm", "busybox", "echo", "hello").stdout == "hello\n"


def test_run_exit_codes_for_bad_commands(docker: Any) -> None:
    p = docker("run", "--rm", "busybox", "no-such-command", check=False)
    assert p.returncode == 127, p.stderr
    p = docker("run", "--rm", "no-such-image:1", "true", check=False)
    assert p.returncode == 125 and "pull" in p.stderr.lower()


def test_run_interactive_with_piped_stdin(docker: Any) -> None:
    p = docker("run", "--rm", "-i", "busybox", "cat", input=b"line one\nline two\n")
    assert p.stdout == "line one\nline two\n"


def test_run_tty(docker: Any) -> None:
    p = subprocess.run(["script", "-qec", f"{DOCKER} run --rm -t busybox sh -c 'echo tty; exit 4'", "/dev/null"],
                       env=docker.env, capture_output=True, timeout=TIMEOUT)
    assert b"tty" in p.stdout
    assert p.returncode == 4


def test_detached_ps_logs_exec_top_stats(docker: Any) -> None:
    cid = docker("run", "-d", "--name", "ticker", "-l", "suite=cli", "busybox", "sh", "-c",
                 "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done").stdout.strip()
    try:
        assert len(cid) == 64
        names = docker("ps", "--format", "{{.Names}}\t{{.Status}}").stdout
        assert "ticker\tUp" in names
        assert cid[:12] in docker("ps", "-q").stdout
        assert docker("ps", "-q", "--filter", "label=suite=cli").stdout.strip() == cid[:12]
        assert docker("ps", "-q", "--filter", "name=nomatch").stdout.strip() == ""
        deadline = time.monotonic() + 5
        while "tick 2" not in docker("logs", "ticker").stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        tail = docker("logs", "--tail", "1", "ticker").stdout.splitlines()
        assert len(tail) == 1 and tail[0].startswith("tick ")
        assert docker("exec", "ticker", "echo", "inside").stdout == "inside\n"
        assert docker("exec", "ticker", "sh", "-c", "exit 5", check=False).returncode == 5
        assert docker("exec", "ticker", "nope", check=False).returncode in (126, 127)
        top = docker("top", "ticker").stdout
        assert "PID" in top and "sh -c" in top
        stats = docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "ticker").stdout.split()
        assert stats[0] == "ticker" and int(stats[1]) >= 1
    finally:
        docker("rm", "-f", "ticker")
    assert docker("ps", "-aq", "--filter", "name=ticker").stdout.strip() == ""


def test_logs_follow_ends_with_container(docker: Any) -> None:
    docker("run", "-d", "--name", "short", "busybox", "sh", "-c", "echo a; sleep 0.3; echo b")
    p = docker("logs", "-f", "short")
    assert p.stdout == "a\nb\n"
    docker("rm", "short")


def test_stop_kill_restart_pause_wait_rename_inspect(docker: Any) -> None:
    docker("run", "-d", "--name", "life", "busybox", "sleep", "60")
    try:
        docker("pause", "life")
        assert docker("inspect", "-f", "{{.State.Status}}", "life").stdout.strip() == "paused"
        assert "(Paused)" in docker("ps", "--format", "{{.Status}}", "--filter", "name=life").stdout
        docker("unpause", "life")
        docker("restart", "-t", "1", "life")
        assert docker("inspect", "-f", "{{.State.Running}}", "life").stdout.strip() == "true"
        docker("rename", "life", "life2")
        doc = json.loads(docker("inspect", "life2").stdout)[0]
        assert doc["Name"] == "/life2" and doc["Config"]["Cmd"] == ["sleep", "60"]
        assert doc["State"]["StartedAt"].endswith("Z")
        docker("kill", "life2")
        assert docker("wait", "life2").stdout.strip() == "137"
        docker("start", "life2")
        docker("stop", "-t", "1", "life2")
        assert docker("ps", "-a", "--filter", "name=life2", "--format", "{{.State}}").stdout.strip() == "exited"
        assert "Exited (" in docker("ps", "-a", "--filter", "status=exited", "--format", "{{.Status}}").stdout
    finally:
        docker("rm", "-f", "life", "life2", check=False)


def test_errors_exit_nonzero_with_message(docker: Any) -> None:
    p = docker("stop", "no-such-container", check=False)
    assert p.returncode == 1 and "No such container" in p.stderr
    p = docker("run", "--name", "bad name!", "busybox", "true", check=False)
    assert p.returncode == 125 and "Invalid container name" in p.stderr


def test_events_since_until(docker: Any) -> None:
    start = time.time()
    docker("run", "--rm", "--name", "evt", "busybox", "true")
    out = docker("events", "--since", str(int(start) - 1), "--until", str(int(time.time()) + 1),
                 "--filter", "container=evt", "--format", "{{.Action}}").stdout.split()
    assert out[:3] == ["create", "start", "die"] or {"create", "start", "die", "destroy"} <= set(out)
