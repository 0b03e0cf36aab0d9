"""Through wharfied (sim backend): the real docker CLI pulls and pushes, and wharfie's own
pull / push / login / logout / run, against Debian's reference registry on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.daemon import ROOT, Daemon, daemon_fixture
from tests.registry.conftest import PASSWORD, USER
from tests.registry.rigs import RefRegistry

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
TIMEOUT = 60
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from daemon_fixture("sim")


@pytest.fixture
def env(daemon: Daemon, tmp_path: Any) -> dict[str, str]:
    e = {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CONFIG": str(tmp_path / "cfg"), "DOCKER_CLI_HINTS": "false",
         "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    e.pop("DOCKER_CONTEXT", None)
    return e


def run(argv: list[str], env: dict[str, str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def wharfie(env: dict[str, str], *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "engine.cli.main", *args], env, **kw)


def docker(env: dict[str, str], *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(DOCKER):
        pytest.skip("the docker CLI is not installed")
    return run([DOCKER, *args], env, **kw)


def test_docker_cli_push_and_pull_through_wharfied(daemon: Daemon, env: dict[str, str], registry: RefRegistry) -> None:
    ref = f"{registry.host}/dk/bb:1"
    docker(env, "tag", "busybox:latest", ref)
    out = docker(env, "push", ref).stdout
    assert "1: digest: sha256:" in out, out
    image_id = docker(env, "image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
    docker(env, "rmi", ref)
    pulled = docker(env, "pull", ref)
    assert "Status: Downloaded newer image for" in pulled.stdout or "Image is up to date" in pulled.stdout, pulled.stdout
    assert docker(env, "image", "inspect", "-f", "{{.Id}}", ref).stdout.strip() == image_id
    digests = docker(env, "image", "inspect", "-f", "{{json .RepoDigests}}", ref).stdout
    assert f"{registry.host}/dk/bb@sha256:" in digests
    # a missing repository: docker's error, no image
    p = docker(env, "pull", f"{registry.host}/dk/nothing:1", check=False)
    assert p.returncode != 0 and ("not found" in p.stderr.lower() or "unknown" in p.stderr.lower()), p.stderr


def test_docker_run_pulls_missing_image(daemon: Daemon, env: dict[str, str], registry: RefRegistry) -> None:
    ref = f"{registry.host}/dk/runme:1"
    docker(env, "tag", "busybox:latest", ref)
    docker(env, "push", ref)
    docker(env, "rmi", ref)
    p = docker(env, "run", "--rm", ref, "echo", "hi")
    assert p.stdout == "hi\n"
    assert "Unable to find image" in p.stderr


def test_wharfie_cli_pull_push_login_logout(daemon: Daemon, env: dict[str, str], auth_registry: RefRegistry,
                                            tmp_path: Any) -> None:
    host = auth_registry.host
    ref = f"{host}/wh/bb:1"
    wharfie(env, "tag", "busybox:latest", ref)
    p = wharfie(env, "push", ref, check=False)
    assert p.returncode != 0 and "unauthorized" in p.stderr.lower(), p.stderr
    p = wharfie(env, "login", "-u", USER, "--password-stdin", host, input="wrong\n", check=False)
    assert p.returncode != 0
    p = wharfie(env, "login", "-u", USER, "--password-stdin", host, input=PASSWORD + "\n")
    assert "Login Succeeded" in p.stdout
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert host in cfg["auths"]
    out = wharfie(env, "push", ref).stdout
    assert "Pushed" in out and "1: digest: sha256:" in out
    wharfie(env, "rmi", ref)
    out = wharfie(env, "pull", ref).stdout
    assert "Pull complete" in out or "Already exists" in out
    assert out.strip().endswith(ref)
    assert wharfie(env, "pull", "-q", ref).stdout.strip() == ref
    p = wharfie(env, "run", "--rm", ref, "echo", "ok")
    assert p.stdout == "ok\n"
    assert f"Removing login credentials for {host}" in wharfie(env, "logout", host).stdout
    wharfie(env, "rmi", ref)
    p = wharfie(env, "pull", ref, check=False)
    assert p.returncode != 0 and "unauthorized" in p.stderr.lower(), p.stderr
    p = wharfie(env, "pull", "UPPER:tag", check=False)
    assert p.returncode != 0 and "invalid reference" in p.stderr
