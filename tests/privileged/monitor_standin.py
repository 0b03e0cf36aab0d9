"""A minimal stand-in for ``backends.linux.sandbox`` (chroot + execve, no isolation beyond the
pid namespace the monitor makes): measures the monitor's own cost, and lets the monitor be
tested without the sandbox role. Point a kernel at it with ``k._px_sandbox_module``."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from backends.linux import libc
from backends.linux.sandbox import wait_gate


def _run(root: str, argv: tuple[str, ...], env: tuple[str, ...], cwd: str,
         gate: int | None) -> NoReturn:
    os.chroot(root)
    try:
        os.chdir(cwd or "/")
    except FileNotFoundError as e:
        raise FileNotFoundError(e.errno, f"chdir to {cwd}: {e.strerror}", cwd) from None
    path = argv[0] if "/" in argv[0] else f"/bin/{argv[0]}"
    wait_gate(gate)  # the monitor's go (see sandbox.init_main)
    libc.close_range(3, 0xFFFFFFFF, 4)  # CLOSE_RANGE_CLOEXEC: the error pipe lives until exec
    try:
        os.execve(path, list(argv), dict(e.split("=", 1) for e in env if "=" in e))
    except OSError as e:
        raise OSError(e.errno, f"exec {argv[0]}: {e.strerror}", argv[0]) from None


def init_main(spec: Any, *, cgroup_procs: list[str], netns_path: str | None,
              gate: int | None = None) -> NoReturn:
    for path in cgroup_procs:
        with open(path, "w") as fh:
            fh.write("0")
    _run(spec.rootfs, spec.argv, spec.env, spec.cwd, gate)


def exec_main(target_pid: int, spec: Any, init_spec_cwd: str, *, cgroup_procs: list[str],
              init_spec: Any = None, gate: int | None = None) -> NoReturn:
    _run(f"/proc/{target_pid}/root", spec.argv, spec.env, spec.cwd or init_spec_cwd, gate)
