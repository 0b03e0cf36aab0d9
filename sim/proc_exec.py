"""Finding and loading a program in a rootfs view: PATH lookup, the busybox multi-call binary,
``#!`` scripts, and the errnos ``execve`` gives (ENOENT, EACCES, ENOEXEC)."""

from __future__ import annotations

import errno
import os
import posixpath
from typing import Any

from sim.programs.base import APPLETS, Ctx, Program

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_MARKER = b"BusyBox v"
MAX_INTERP_DEPTH = 4


def _err(code: int, filename: str) -> OSError:
    return OSError(code, os.strerror(code), filename)


async def busybox_main(ctx: Ctx) -> int:
    """The multi-call binary: the applet is argv[0]'s basename, or argv[1] after ``busybox``."""
    name = posixpath.basename(ctx.argv[0]) if ctx.argv else "busybox"
    if name == "busybox":
        if len(ctx.argv) < 2:
            await ctx.out("BusyBox v1.35.0 (sim) multi-call binary.\n")
            return 0
        ctx = ctx.derive(argv=ctx.argv[1:])
        name = posixpath.basename(ctx.argv[0])
    prog = APPLETS.get(name)
    if prog is None:
        await ctx.err(f"{name}: applet not found\n")
        return 127
    return await prog(ctx)


def resolve_program(view: Any, name: str, env: dict[str, str], cwd: str,
                    depth: int = 0) -> tuple[str, Program]:
    """``(path, program)`` for the command ``name`` as ``execvp`` would find it in ``view``.

    Raises ``FileNotFoundError`` (``filename`` = ``name``), ``PermissionError`` (not
    executable, or a directory), ``OSError(ENOEXEC)`` (neither busybox nor a ``#!`` script).
    """
    if not name:
        raise _err(errno.ENOENT, name)
    if "/" in name:
        candidates = [posixpath.normpath(posixpath.join(cwd, name))]
    else:
        dirs = env.get("PATH", DEFAULT_PATH).split(":")
        candidates = [posixpath.join(d or cwd, name) for d in dirs]
    denied: str | None = None
    for path in candidates:
        try:
            st = view.stat(path)
        except OSError:
            continue
        if st.kind != "file" or not st.mode & 0o111:
            denied = denied or path
            continue
        data = view.read(path)
        if data.startswith(b"#!"):
            return path, _script(view, path, data, env, cwd, depth)
        if BUSYBOX_MARKER not in data:
            raise _err(errno.ENOEXEC, path)
        return path, busybox_main
    if denied is not None:
        raise _err(errno.EACCES, denied)
    raise _err(errno.ENOENT, name)


def _script(view: Any, path: str, data: bytes, env: dict[str, str], cwd: str,
            depth: int) -> Program:
    line = data[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    interp, _, arg = line.partition(" ")
    if not interp or depth >= MAX_INTERP_DEPTH:
        raise _err(errno.ENOEXEC, path)
    _, inner = resolve_program(view, interp, env, cwd, depth + 1)
    prefix = (interp, arg.strip()) if arg.strip() else (interp,)

    async def run_script(ctx: Ctx) -> int:
        return await inner(ctx.derive(argv=prefix + (path,) + tuple(ctx.argv[1:])))

    return run_script
