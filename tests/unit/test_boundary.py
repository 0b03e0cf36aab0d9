"""The one rule: engine/ reaches the OS only through the Kernel interface.

Parses every module under engine/ (except the CLI and API client/daemon plumbing, which are not
the engine core) and fails on imports or calls that would bypass the Kernel.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = ROOT / "engine"
# The daemon/CLI front-ends live in engine/api and engine/cli: they may open sockets, fork the
# background daemon, proxy signals. They do not touch namespaces, mounts or cgroups either.
FRONTENDS = {"api", "cli", "client.py", "client_http.py"}

FORBIDDEN_MODULES = {"ctypes", "subprocess", "fcntl", "signal", "pyroute2", "resource", "pty",
                     "termios", "multiprocessing", "mmap", "socket", "seccomp", "pwd", "grp"}
FORBIDDEN_OS_CALLS = {"fork", "forkpty", "kill", "killpg", "unshare", "setns", "execv", "execve",
                      "execvp", "execvpe", "spawnv", "spawnve", "system", "popen", "mknod",
                      "chroot", "setuid", "setgid", "pidfd_open", "waitpid", "wait", "mount",
                      "umount", "posix_spawn", "posix_spawnp", "sched_setaffinity", "setsid"}


def core_modules() -> list[pathlib.Path]:
    return sorted(p for p in CORE.rglob("*.py") if p.relative_to(CORE).parts[0] not in FRONTENDS)


def violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[0]
            if mod in FORBIDDEN_MODULES:
                found.append(f"{path}:{node.lineno}: from {node.module} import …")
            if mod == "os" and any(a.name in FORBIDDEN_OS_CALLS for a in node.names):
                found.append(f"{path}:{node.lineno}: from os import {[a.name for a in node.names]}")
            if mod in ("backends", "sim") and not path.name == "bootstrap.py":
                found.append(f"{path}:{node.lineno}: engine core imports a backend ({node.module})")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in FORBIDDEN_OS_CALLS:
                found.append(f"{path}:{node.lineno}: os.{node.attr}")
    return found


def test_core_modules_exist() -> None:
    names = {p.name for p in core_modules()}
    assert {"kernel.py", "errors.py", "engine.py", "bootstrap.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_module_touches_os_only_through_kernel(path: pathlib.Path) -> None:
    assert violations(path) == []


def test_the_checker_catches_a_bypass(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os, ctypes\nfrom subprocess import run\nos.kill(1, 9)\nfrom pyroute2 import IPRoute\n")
    found = violations(bad)
    assert len(found) == 4, found


def test_sim_has_no_linux_only_imports() -> None:
    linux_only = {"fcntl", "pwd", "grp", "resource", "termios", "pty", "ctypes", "pyroute2", "seccomp"}
    for p in (ROOT / "sim").rglob("*.py"):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in linux_only, f"{p}:{node.lineno} imports {n}"
