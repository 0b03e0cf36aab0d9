"""The ``wharfie`` CLI itself against wharfied (sim backend): the docker scenarios, docker's
output shapes and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.api.daemon import ROOT, Daemon, busybox_tar

TIMEOUT = 20


@pytest.fixture(scope="module")
def wharfie(daemon: Daemon) -> Any:
    env = {**os.environ, "WHARFIE_HOST": daemon.host, "PYTHONPATH": ROOT, "WHARFIE_NO_AUTOSTART": "1"}
    env.pop("DOCKER_HOST", None)

    def run(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "engine.cli.main", *args], env=env, cwd=ROOT,
                           input=input.decode() if input is not None else None, capture_output=True, text=True,
                           timeout=TIMEOUT)
        if check and p.returncode != 0:
            raise AssertionError(f"wharfie {' '.join(args)} → {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    run.env = env  # type: ignore[attr-defined]
    return run


def test_version_info(wharfie: Any, backend: str) -> None:
    assert wharfie("--version").stdout.startswith("wharfie version ")
    out = wharfie("version").stdout
    assert "Server: wharfie" in out and "API version:      1.47" in out
    assert f"Backend: {backend}" in wharfie("info").stdout
    assert wharfie("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"


def test_import_images_tag_rmi(wharfie: Any, tmp_path: Any) -> None:
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(busybox_tar())
    assert wharfie("import", "-c", 'CMD ["sh"]', str(tar), "wimp:1").stdout.strip().startswith("sha256:")
    header = wharfie("images").stdout.splitlines()[0]
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    wharfie("tag", "wimp:1", "wimp:2")
    assert sorted(wharfie("images", "--format", "{{.Repository}}:{{.Tag}}", "wimp").stdout.split()) == \
        ["wimp:1", "wimp:2"]
    assert len(wharfie("images", "-q", "wimp").stdout.split()) == 1
    doc = json.loads(wharfie("image", "inspect", "wimp:1").stdout)[0]
    assert doc["Config"]["Cmd"] == ["sh"]
    assert "Untagged: wimp:1" in wharfie("rmi", "wimp:1").stdout
    assert "Deleted: sha256:" in wharfie("image", "rm", "wimp:2").stdout
    p = wharfie("rmi", "wimp:2", check=False)
    assert p.returncode == 1 and "No such image" in p.stderr


def test_bootstrap_busybox(wharfie: Any) -> None:
    out = wharfie("image", "bootstrap", "busybox", "-t", "bb:boot").stdout
    assert out.startswith("bb:boot sha256:")
    assert wharfie("run", "--rm", "bb:boot", "echo", "booted").stdout == "booted\n"
    wharfie("rmi", "bb:boot")


def test_run_attached_and_exit_codes(wharfie: Any) -> None:
    p = wharfie("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    assert wharfie("run", "--rm", "busybox", "no-such-cmd", check=False).returncode == 127
    p = wharfie("run", "--rm", "missing-image:1", "true", check=False)
    assert p.returncode == 125 and "Unable to find image" in p.stderr
    p = wharfie("run", "--rm", "-i", "busybox", "cat", input=b"piped in\n")
    assert p.stdout == "piped in\n"
    p = wharfie("run", "--bogus-flag", "busybox", check=False)
    assert p.returncode == 125


def test_run_it_without_a_terminal_creates_nothing(wharfie: Any) -> None:
    """``run -it`` with stdin not a terminal fails before the create, as docker's CLI does."""
    before = wharfie("ps", "-aq", "--no-trunc").stdout.split()
    p = wharfie("run", "-it", "busybox", "true", input=b"", check=False)
    assert (p.returncode, p.stderr.strip()) == (125, "the input device is not a TTY")
    assert wharfie("ps", "-aq", "--no-trunc").stdout.split() == before


def test_run_forwards_signals(wharfie: Any) -> None:
    """docker's --sig-proxy: a SIGTERM to the attached CLI reaches the container's process."""
    import signal

    p = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "run", "--rm", "busybox", "sh", "-c",
                          'trap "echo got-term; exit 7" TERM; echo ready; sleep 30 & wait'],
                         env=wharfie.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert (p.returncode, out) == (7, "got-term\n"), err


def test_run_tty_through_a_pty(wharfie: Any) -> None:
    cmd = f"{sys.executable} -m engine.cli.main run --rm -t busybox sh -c 'echo tty; exit 4'"
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=wharfie.env, cwd=ROOT, capture_output=True,
                       timeout=TIMEOUT)
    assert b"tty" in p.stdout and p.returncode == 4


def test_detached_ps_logs_exec_top_stats_inspect(wharfie: Any) -> None:
    cid = wharfie("run", "-d", "--name", "wt", "-e", "GREETING=hi", "busybox", "sh", "-c",
                  "while true; do echo $GREETING; sleep 0.05; done").stdout.strip()
    try:
        lines = wharfie("ps").stdout.splitlines()
        assert lines[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"] and cid[:12] in lines[1]
        assert wharfie("ps", "--format", "{{.Names}}\t{{.Status}}").stdout.startswith("wt\tUp ")
        assert wharfie("ps", "-q", "--no-trunc").stdout.strip() == cid
        assert json.loads(wharfie("ps", "--format", "json").stdout)["Names"] == "wt"
        deadline = time.monotonic() + 5
        while "hi" not in wharfie("logs", "--tail", "1", "wt").stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wharfie("logs", "--tail", "1", "wt").stdout == "hi\n"
        assert wharfie("exec", "-e", "X=1", "wt", "sh", "-c", "echo $X; exit 6", check=False).returncode == 6
        assert wharfie("exec", "wt", "env").stdout.count("GREETING=hi") == 1
        assert "sh -c" in wharfie("top", "wt").stdout
        assert wharfie("stats", "--no-stream", "--format", "{{.Name}}", "wt").stdout.strip() == "wt"
        assert wharfie("inspect", "-f", "{{.State.Status}} {{.Name}}", "wt").stdout.strip() == "running /wt"
        assert wharfie("inspect", "-f", "{{index .Config.Env 0}}", "wt").stdout.startswith("PATH=")
        wharfie("pause", "wt")
        assert "(Paused)" in wharfie("ps", "--format", "{{.Status}}").stdout
        wharfie("unpause", "wt")
        wharfie("restart", "-t", "1", "wt")
        wharfie("rename", "wt", "wt2")
        wharfie("kill", "wt2")
        assert wharfie("wait", "wt2").stdout.strip() == "137"
        assert wharfie("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}").stdout.split() == ["wt2"]
    finally:
        wharfie("rm", "-f", "wt", "wt2", check=False)
    assert wharfie("ps", "-aq").stdout.strip() == ""


def test_logs_follow_and_events(wharfie: Any) -> None:
    since = str(int(time.time()) - 1)
    wharfie("run", "-d", "--name", "wf", "busybox", "sh", "-c", "echo a; sleep 0.2; echo b")
    assert wharfie("logs", "-f", "wf").stdout == "a\nb\n"
    wharfie("rm", "wf")
    out = wharfie("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", "container=wf",
                  "--format", "{{.Action}}").stdout.split()
    assert out[:3] == ["create", "start", "die"] and "destroy" in out


def test_errors(wharfie: Any) -> None:
    p = wharfie("stop", "nope", check=False)
    assert p.returncode == 1 and "No such container: nope" in p.stderr
    p = wharfie("inspect", "nope", check=False)
    assert p.returncode == 1 and "No such object" in p.stderr
    p = wharfie("ps", "--format", "{{.Nope", check=False)
    assert p.returncode == 125
    p = wharfie("-H", "unix:///nonexistent/sock", "ps", check=False)
    assert p.returncode == 125 and "Cannot connect" in p.stderr
