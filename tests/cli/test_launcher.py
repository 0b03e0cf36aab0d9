"""The launcher install.sh writes over pip's console script (engine/cli/launcher.py): started
the way a user starts it (exec by path, through a symlink), it runs the CLI without ``site``;
if its paths go stale it falls back to ``site``; and the garbage collector it holds off during
start-up is back on (with start-up frozen) once the command runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from engine.cli import launcher
from tests.api.daemon import ROOT, Daemon

TIMEOUT = 60


def _env(daemon: Daemon) -> dict[str, str]:
    # no PYTHONPATH: the launcher must find everything itself, as from a user's shell
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DOCKER_HOST")}
    env.update(WHARFIE_HOST=daemon.host, WHARFIE_NO_AUTOSTART="1")
    return env


def _run(argv: list[str], daemon: Daemon, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(daemon), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def test_launcher_runs_the_cli_without_site(daemon: Daemon, tmp_path: pathlib.Path) -> None:
    path = os.path.join(str(tmp_path), "wharfie")
    launcher.write(path, sys.executable)
    with open(path) as fh:
        first = fh.readline()
    assert first == f"#!{sys.executable} -S\n"
    assert os.access(path, os.X_OK)
    link = os.path.join(str(tmp_path), "link", "wharfie")
    os.makedirs(os.path.dirname(link))
    os.symlink(path, link)
    for exe in (path, link):
        # started from an unrelated directory, as a user would
        p = _run([exe, "--version"], daemon, "/")
        assert (p.returncode, p.stdout) == (0, "wharfie version 0.1.0\n"), p.stderr
        p = _run([exe, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"], daemon, "/")
        assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    p = _run([path, "ps", "-a", "--format", "{{.ID}}"], daemon, "/")
    assert p.returncode == 0 and p.stdout == "", p.stderr


def _engine_via_site() -> bool:
    return any(os.path.isfile(os.path.join(p, "engine", "cli", "main.py")) for p in launcher.site_paths(sys.executable))


def test_site_paths_are_what_site_adds() -> None:
    import click

    paths = launcher.site_paths(sys.executable)
    assert os.path.dirname(os.path.dirname(click.__file__)) in paths  # the venv's site-packages
    assert all(os.path.isabs(p) for p in paths) and "" not in paths
    assert os.path.dirname(os.__file__) not in paths  # the stdlib is there without site


def test_stale_paths_fall_back_to_site(daemon: Daemon, tmp_path: pathlib.Path) -> None:
    path = os.path.join(str(tmp_path), "wharfie")
    with open(path, "w") as fh:
        fh.write(launcher.script(sys.executable, ["/nonexistent/site-packages"]))
    os.chmod(path, 0o755)
    env = _env(daemon)
    if not _engine_via_site():
        env["PYTHONPATH"] = ROOT  # engine not installed into this interpreter: only PYTHONPATH finds it
    p = subprocess.run([path, "--version"], env=env, cwd="/", capture_output=True, text=True, timeout=TIMEOUT,
                       check=False)
    assert (p.returncode, p.stdout) == (0, "wharfie version 0.1.0\n"), p.stderr


def test_script_refuses_an_interpreter_path_a_shebang_cannot_carry() -> None:
    with pytest.raises(ValueError):
        launcher.script("python3", [])
    with pytest.raises(ValueError):
        launcher.script("/opt/my python/bin/python", [])


GC_PROBE = """
import atexit, gc, sys
if sys.argv[1] == "held":
    gc.disable()  # what the launcher does before importing anything
sys.argv = ["wharfie", *sys.argv[2:]]
from engine.cli.main import main
atexit.register(lambda: print("GC", gc.isenabled(), gc.get_freeze_count() > 0))
main()
"""


@pytest.mark.parametrize("hold,args,expected", [
    ("held", ["run", "--rm", "busybox", "true"], "GC True True"),  # released once the command resolved
    ("held", ["--version"], "GC True True"),  # ends before any command: released at the end
    ("free", ["run", "--rm", "busybox", "true"], "GC True False"),  # not held (pip's script): untouched
])
def test_gc_hold_is_released(daemon: Daemon, hold: str, args: list[str], expected: str) -> None:
    env = {**_env(daemon), "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", GC_PROBE, hold, *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=TIMEOUT, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == expected
