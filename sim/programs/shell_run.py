"""Simple commands of the sim shell: assignments, builtins, functions, external commands; and
the ``sh`` applet itself (``sh -c``, ``sh FILE``, commands from stdin)."""

from __future__ import annotations

import errno
import os
import posixpath

from engine.kernel import SIGNALS
from sim.programs.base import APPLETS, Ctx, ProgramExit, applet
from sim.programs.shell import IN_PROCESS, FuncReturn, LoopControl, Shell
from sim.programs.shell_ast import ShellSyntaxError, Simple
from sim.programs.shell_expand import ExpansionError
from sim.programs.shell_parse import parse
from sim.programs.streams import Stream


def signal_number(name: str) -> int | None:
    """``TERM``, ``SIGTERM``, ``15``, ``EXIT`` (0) → number; None if unknown."""
    n = name.upper().removeprefix("SIG")
    if n == "EXIT":
        return 0
    if n.isdigit():
        return int(n) if int(n) <= 64 else None
    return SIGNALS.get(n)


async def run_simple(sh: Shell, cmd: Simple, fds: dict[int, Stream], exec_last: bool) -> int:
    ctx = sh.ctx
    try:
        words = await sh.exp.fields(cmd.words)
        assigns = [(name, await sh.exp.string(w)) for name, w in cmd.assigns]
    except ExpansionError as e:
        await sh.err(str(e))
        sh.status = 2 if "syntax" in str(e) else 1
        return sh.status
    table = await sh.redirect(cmd.redirs, fds)
    if table is None:
        return 1
    if not words:
        for name, value in assigns:
            sh.vars[name] = value
        return sh.status if cmd.words else 0
    name = words[0]
    if name in sh.funcs:
        saved = sh.args
        sh.args = words[1:]
        try:
            return await sh.run_command(sh.funcs[name], table)
        except FuncReturn as r:
            return r.code
        finally:
            sh.args = saved
    special = SPECIAL.get(name)
    if special is not None:
        for k, v in assigns:
            sh.vars[k] = v
        return await special(sh, words, table)
    env = sh.env(dict(assigns))
    if name in IN_PROCESS:
        return await APPLETS[name](ctx.derive(argv=tuple(words), env=env, fds=table))
    try:
        _, prog = ctx.host._resolve_program(ctx.view, name, {**env, "PATH": sh.vars.get(
            "PATH", env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))},
            ctx.cwd)
    except OSError as e:
        if e.errno == errno.ENOENT:
            await sh.err(f"{name}: not found")
            return 127
        await sh.err(f"{name}: {os.strerror(e.errno or errno.EACCES)}")
        return 126
    if exec_last and not sh.traps:
        _replace_fds(ctx, table)
        ctx.proc.argv = tuple(words)
        return await prog(Ctx(ctx.host, ctx.proc, tuple(words), env, ctx.cwd, ctx.proc.fds))
    try:
        child = await ctx.spawn(tuple(words), prog, fds=table, env=env)
    except OSError as e:
        await sh.err(f"can't fork: {os.strerror(e.errno or errno.EAGAIN)}")
        raise ProgramExit(2) from None  # like ash: a failed fork ends a non-interactive shell
    return (await ctx.wait_child(child)).exit_code


def _replace_fds(ctx: Ctx, table: dict[int, Stream]) -> None:
    """The process's own fd table becomes ``table`` (exec with redirections)."""
    new = dict(table)
    for fd, stream in ctx.proc.fds.items():
        if new.get(fd) is not stream:
            stream.close()
    ctx.proc.fds.clear()
    ctx.proc.fds.update(new)
    ctx.fds = ctx.proc.fds


# ---- special builtins (run in the shell itself) ---------------------------------------------
async def b_colon(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    return 0


async def b_exit(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    code = int(argv[1]) & 0xFF if len(argv) > 1 and argv[1].lstrip("-").isdigit() else sh.status
    raise ProgramExit(code)


async def b_export(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    for a in argv[1:]:
        if a == "-p":
            continue
        name, eq, value = a.partition("=")
        if eq:
            sh.vars[name] = value
        sh.exported.add(name)
    return 0


async def b_unset(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    for a in argv[1:]:
        if not a.startswith("-"):
            sh.vars.pop(a, None)
            sh.exported.discard(a)
    return 0


async def b_set(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    args = argv[1:]
    while args and args[0][:1] in "-+" and args[0] != "--":
        flag = args.pop(0)
        if "e" in flag:
            sh.errexit = flag.startswith("-")
    if args and args[0] == "--":
        sh.args = args[1:]
    elif args:
        sh.args = args
    return 0


async def b_trap(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    args = argv[1:]
    if not args:
        return 0
    if len(args) == 1:
        args = ["-", args[0]]
    action, names = args[0], args[1:]
    for n in names:
        sig = signal_number(n)
        if sig is None:
            await sh.err(f"trap: {n}: invalid signal specification")
            return 1
        if sig in (SIGNALS["KILL"], SIGNALS["STOP"]):
            continue
        if action == "-":
            sh.traps.pop(sig, None)
            sh.ctx.proc.handlers.pop(sig, None)
        else:
            sh.traps[sig] = action
            if sig:
                sh.ctx.proc.handlers[sig] = "handle" if action else "ignore"
    return 0


async def b_wait(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    if len(argv) == 1:
        return await sh.wait_jobs(list(sh.jobs))
    targets = []
    for a in argv[1:]:
        job = next((j for j in sh.jobs if str(j.nspid) == a), None)
        if job is None:
            return 127
        targets.append(job)
    return await sh.wait_jobs(targets)


async def b_read(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    names = [a for a in argv[1:] if not a.startswith("-")] or ["REPLY"]
    line = await sh.ctx.derive(fds=fds).readline(0)
    if not line:
        for n in names:
            sh.vars[n] = ""
        return 1
    text = line.decode("utf-8", "replace").rstrip("\n")
    parts = text.split(None, len(names) - 1) if len(names) > 1 else [text.strip()]
    for i, n in enumerate(names):
        sh.vars[n] = parts[i] if i < len(parts) else ""
    return 0 if line.endswith(b"\n") else 1


async def b_cd(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    target = argv[1] if len(argv) > 1 else sh.vars.get("HOME", "/")
    path = sh.ctx.path(target)
    try:
        if sh.ctx.view.stat(path).kind != "dir":
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
    except OSError as e:
        await sh.err(f"cd: can't cd to {target}: {os.strerror(e.errno or 0)}")
        return 2
    sh.ctx.cwd = sh.ctx.proc.cwd = path
    sh.vars["PWD"] = path
    return 0


async def b_eval(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    return await sh.run_string(" ".join(argv[1:]), fds)


async def b_shift(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    n = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 1
    if n > len(sh.args):
        return 1
    sh.args = sh.args[n:]
    return 0


async def b_loopctl(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    if not sh.loop_depth:
        return 0
    n = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 1
    raise LoopControl(argv[0], max(1, n))


async def b_return(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    raise FuncReturn(int(argv[1]) & 0xFF if len(argv) > 1 and argv[1].isdigit() else sh.status)


async def b_exec(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    ctx = sh.ctx
    if len(argv) == 1:  # exec >file: redirect the shell itself
        _replace_fds(ctx, fds)
        return 0
    try:
        _, prog = ctx.resolve(argv[1])
    except OSError as e:
        await sh.err(f"exec: {argv[1]}: {'not found' if e.errno == errno.ENOENT else os.strerror(e.errno or 0)}")
        raise ProgramExit(127 if e.errno == errno.ENOENT else 126) from None
    _replace_fds(ctx, fds)
    ctx.proc.argv = tuple(argv[1:])
    ctx.proc.handlers.clear()
    raise ProgramExit(await prog(Ctx(ctx.host, ctx.proc, tuple(argv[1:]), sh.env(), ctx.cwd,
                                     ctx.proc.fds)))


async def b_source(sh: Shell, argv: list[str], fds: dict[int, Stream]) -> int:
    if len(argv) < 2:
        return 0
    try:
        src = sh.ctx.view.read(sh.ctx.path(argv[1])).decode("utf-8", "replace")
    except OSError as e:
        await sh.err(f"{argv[0]}: can't open '{argv[1]}': {os.strerror(e.errno or 0)}")
        return 2
    return await sh.run_string(src, fds)


SPECIAL = {":": b_colon, "exit": b_exit, "export": b_export, "readonly": b_export,
           "local": b_export, "unset": b_unset, "set": b_set, "trap": b_trap, "wait": b_wait,
           "read": b_read, "cd": b_cd, "eval": b_eval, "shift": b_shift, "break": b_loopctl,
           "continue": b_loopctl, "return": b_return, "exec": b_exec, ".": b_source,
           "source": b_source, "umask": b_colon, "ulimit": b_colon}


@applet("sh", "ash", "bash")
async def sh_main(ctx: Ctx) -> int:
    args = list(ctx.argv[1:])
    script: str | None = None
    errexit = False
    while args and args[0].startswith("-") and args[0] not in ("-", "--"):
        flag = args.pop(0)
        if "c" in flag:
            if not args:
                await ctx.err("sh: -c requires an argument\n")
                return 2
            script = args.pop(0)
        errexit |= "e" in flag
    if args and args[0] == "--":
        args.pop(0)
    arg0 = "sh"
    if script is None and args:
        arg0 = args.pop(0)
        try:
            script = ctx.view.read(ctx.path(arg0)).decode("utf-8", "replace")
        except OSError as e:
            await ctx.err(f"sh: can't open '{arg0}': {os.strerror(e.errno or 0)}\n")
            return 127 if e.errno == errno.ENOENT else 2
    elif script is not None and args:
        arg0 = args.pop(0)
    sh = Shell(ctx, arg0, args)
    sh.errexit = errexit
    try:
        if script is None:
            return await _interactive(sh)
        try:
            seq = parse(script)
        except ShellSyntaxError as e:
            await sh.err(str(e))
            return 2
        status = await sh.run_seq(seq, ctx.fds, exec_last=True)
    except ProgramExit as e:
        status = e.code
    except LoopControl:
        status = 0
    try:
        await sh.at_exit()
    except ProgramExit as e:
        status = e.code
    return status


async def _interactive(sh: Shell) -> int:
    """``sh`` reading commands from stdin, a complete command at a time."""
    buf = ""
    while True:
        line = await sh.ctx.readline(0)
        if not line:
            break
        buf += line.decode("utf-8", "replace")
        try:
            seq = parse(buf)
        except ShellSyntaxError as e:
            if "end of file" in str(e) or "unterminated" in str(e):
                continue
            await sh.err(str(e))
            sh.status = 2
            buf = ""
            continue
        buf = ""
        await sh.run_seq(seq, sh.ctx.fds)
    await sh.at_exit()
    return sh.status


