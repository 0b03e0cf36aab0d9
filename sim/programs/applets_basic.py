"""Basic busybox applets: echo, printf, true/false, sleep, yes, cat, env, printenv, hostname,
id, whoami, pwd, kill, test/[, seq, dd, uname, date, nproc."""

from __future__ import annotations

import os
import re
import time

from engine.kernel import SIGNALS
from sim.programs.base import Ctx, applet
from sim.programs.streams import NullStream, ZeroStream
from sim.users import group_name, user_name

YES_CHUNK_LINES = 512
YES_STEP = 0.01


def _unescape(s: str) -> tuple[str, bool]:
    """Backslash escapes of ``echo -e``/``printf``; the flag says ``\\c`` stopped output."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "\\": "\\", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
             "v": "\v", "e": "\x1b"}
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n in table:
                out.append(table[n])
                i += 2
                continue
            if n == "c":
                return "".join(out), True
            if n == "0" or n.isdigit():
                m = re.match(r"0?[0-7]{1,3}", s[i + 1:])
                if m:
                    out.append(chr(int(m.group(0), 8)))
                    i += 1 + len(m.group(0))
                    continue
        out.append(c)
        i += 1
    return "".join(out), False


@applet("echo")
async def echo(ctx: Ctx) -> int:
    args = list(ctx.argv[1:])
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        flag = args.pop(0)
        newline &= "n" not in flag
        escapes = "e" in flag or (escapes and "E" not in flag)
    text = " ".join(args)
    if escapes:
        text, stop = _unescape(text)
        newline &= not stop
    await ctx.out(text + ("\n" if newline else ""))
    return 0


@applet("printf")
async def printf(ctx: Ctx) -> int:
    if len(ctx.argv) < 2:
        await ctx.err("printf: usage: printf FORMAT [ARG]...\n")
        return 1
    fmt, args = ctx.argv[1], list(ctx.argv[2:])
    spec = re.compile(r"%([-+ #0]*\d*(?:\.\d+)?)([sdiuxXocf%b])")
    out: list[str] = []
    status = 0
    while True:
        used = 0

        def conv(m: re.Match[str]) -> str:
            nonlocal used, status
            flags, kind = m.group(1), m.group(2)
            if kind == "%":
                return "%"
            arg = args[used] if used < len(args) else ""
            used += 1
            if kind in "sb":
                return ("%" + flags + "s") % (_unescape(arg)[0] if kind == "b" else arg)
            if kind == "c":
                return arg[:1]
            try:
                num: float = float(arg or 0) if kind == "f" else int(arg or 0, 0)
            except ValueError:
                status = 1
                num = 0
            return ("%" + flags + ("d" if kind in "iu" else kind)) % num
        text = spec.sub(conv, fmt)
        text, stop = _unescape(text)
        out.append(text)
        args = args[used:]
        if stop or not args or used == 0:
            break
    await ctx.out("".join(out))
    return status


@applet("true")
async def true(ctx: Ctx) -> int:
    return 0


@applet("false")
async def false(ctx: Ctx) -> int:
    return 1


def parse_duration(s: str) -> float | None:
    if s in ("inf", "infinity"):
        return float("inf")
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", s)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@applet("sleep")
async def sleep(ctx: Ctx) -> int:
    if len(ctx.argv) < 2:
        await ctx.err("BusyBox v1.35.0 multi-call binary.\n\nUsage: sleep [N]...\n")
        return 1
    total = 0.0
    for a in ctx.argv[1:]:
        d = parse_duration(a)
        if d is None:
            await ctx.err(f"sleep: invalid number '{a}'\n")
            return 1
        total += d
    await ctx.sleep(total)
    return 0


@applet("yes")
async def yes(ctx: Ctx) -> int:
    line = (" ".join(ctx.argv[1:]) or "y") + "\n"
    chunk = (line * YES_CHUNK_LINES).encode()
    while True:  # bounded rate per (virtual) second; CPU-bound
        await ctx.write(1, chunk)
        await ctx.busy(YES_STEP)


@applet("cat")
async def cat(ctx: Ctx) -> int:
    status = 0
    for name in ctx.argv[1:] or ["-"]:
        if name == "-":
            stream = ctx.fds.get(0) or NullStream()
        else:
            try:
                stream = ctx.open_read(name)
            except OSError as e:
                await ctx.err(f"cat: can't open '{name}': {os.strerror(e.errno or 0)}\n")
                status = 1
                continue
        while True:
            await ctx.checkpoint()
            data = await stream.read(65536)
            if not data:
                break
            await ctx.out(data)
    return status


@applet("env")
async def env(ctx: Ctx) -> int:
    args = list(ctx.argv[1:])
    newenv = dict(ctx.env)
    while args and args[0] in ("-i", "-", "-u"):
        flag = args.pop(0)
        if flag == "-u" and args:
            newenv.pop(args.pop(0), None)
        else:
            newenv = {}
    while args and "=" in args[0]:
        k, _, v = args.pop(0).partition("=")
        newenv[k] = v
    if not args:
        await ctx.out("".join(f"{k}={v}\n" for k, v in newenv.items()))
        return 0
    try:
        return await ctx.exec(tuple(args), env=newenv)
    except OSError as e:
        await ctx.err(f"env: can't execute '{args[0]}': {os.strerror(e.errno or 0)}\n")
        return 127


@applet("printenv")
async def printenv(ctx: Ctx) -> int:
    if len(ctx.argv) == 1:
        await ctx.out("".join(f"{k}={v}\n" for k, v in ctx.env.items()))
        return 0
    status = 0
    for name in ctx.argv[1:]:
        if name in ctx.env:
            await ctx.out(ctx.env[name] + "\n")
        else:
            status = 1
    return status


@applet("hostname")
async def hostname(ctx: Ctx) -> int:
    await ctx.out(ctx.proc.sandbox.hostname + "\n")
    return 0


def _named(num: int, name: str | None) -> str:
    return f"{num}({name})" if name is not None else str(num)


@applet("id")
async def id_(ctx: Ctx) -> int:
    p, view = ctx.proc, ctx.view
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-"))
    if "u" in flags or "g" in flags:
        num = p.uid if "u" in flags else p.gid
        name = user_name(view, num) if "u" in flags else group_name(view, num)
        await ctx.out(f"{name if 'n' in flags and name else num}\n")
        return 0
    # the kernel keeps supplementary groups sorted (groups_sort), so getgroups() is ordered
    groups = ",".join(_named(g, group_name(view, g)) for g in sorted(p.groups or (p.gid,)))
    await ctx.out(f"uid={_named(p.uid, user_name(view, p.uid))} "
                  f"gid={_named(p.gid, group_name(view, p.gid))} groups={groups}\n")
    return 0


@applet("whoami")
async def whoami(ctx: Ctx) -> int:
    name = user_name(ctx.view, ctx.proc.uid)
    if name is None:
        await ctx.err(f"whoami: unknown uid {ctx.proc.uid}\n")
        return 1
    await ctx.out(name + "\n")
    return 0


@applet("pwd")
async def pwd(ctx: Ctx) -> int:
    await ctx.out(ctx.cwd + "\n")
    return 0


@applet("kill")
async def kill(ctx: Ctx) -> int:
    args = list(ctx.argv[1:])
    sig = SIGNALS["TERM"]
    if args and args[0] == "-l":
        await ctx.out(" ".join(sorted(SIGNALS, key=SIGNALS.__getitem__)) + "\n")
        return 0
    if args and args[0] == "-s" and len(args) > 1:
        args.pop(0)
        args[0] = "-" + args[0]
    if args and args[0].startswith("-") and args[0] != "--":
        from sim.programs.shell_run import signal_number
        n = signal_number(args.pop(0)[1:])
        if n is None:
            await ctx.err("kill: bad signal name\n")
            return 1
        sig = n
    status = 0
    for a in args:
        try:
            ctx.kill(int(a), sig)
        except (ValueError, ProcessLookupError):
            await ctx.err(f"kill: can't kill pid {a}: No such process\n")
            status = 1
    return status


@applet("test", "[", "[[")
async def test(ctx: Ctx) -> int:
    from sim.programs.applets_test import evaluate
    args = list(ctx.argv[1:])
    if ctx.name in ("[", "[["):
        if not args or args[-1] not in ("]", "]]"):
            await ctx.err(f"{ctx.name}: missing ]\n")
            return 2
        args.pop()
    try:
        return 0 if evaluate(ctx, args) else 1
    except ValueError as e:
        await ctx.err(f"{ctx.name if ctx.name != '[' else '['}: {e}\n")
        return 2


@applet("seq")
async def seq(ctx: Ctx) -> int:
    nums = [a for a in ctx.argv[1:] if not a.startswith("-") or a[1:].isdigit()]
    try:
        vals = [int(a) for a in nums]
    except ValueError:
        await ctx.err("seq: invalid number\n")
        return 1
    first, step, last = {1: (1, 1, vals[0]) if vals else (1, 1, 0),
                         2: (vals[0], 1, vals[-1]) if len(vals) == 2 else (0, 1, 0),
                         3: tuple(vals) if len(vals) == 3 else (0, 1, 0)}.get(len(vals), (1, 1, 0))
    out = []
    i = first
    while (step > 0 and i <= last) or (step < 0 and i >= last):
        out.append(f"{i}\n")
        i += step
        if len(out) >= 4096:
            await ctx.out("".join(out))
            out = []
    await ctx.out("".join(out))
    return 0


def parse_size(s: str) -> int:
    m = re.fullmatch(r"(\d+)([cwbkKMG]?)B?", s)
    if not m:
        raise ValueError(s)
    mult = {"": 1, "c": 1, "w": 2, "b": 512, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3}
    return int(m.group(1)) * mult[m.group(2)]


@applet("dd")
async def dd(ctx: Ctx) -> int:
    opts = dict(a.split("=", 1) for a in ctx.argv[1:] if "=" in a)
    try:
        bs = parse_size(opts.get("bs", "512"))
        count = int(opts["count"]) if "count" in opts else None
    except ValueError as e:
        await ctx.err(f"dd: invalid number '{e}'\n")
        return 1
    try:
        src = ctx.open_read(opts["if"]) if "if" in opts else (ctx.fds.get(0) or NullStream())
        dst = ctx.open_write(opts["of"]) if "of" in opts else ctx.fds.get(1)
    except OSError as e:
        await ctx.err(f"dd: can't open '{e.filename}': {os.strerror(e.errno or 0)}\n")
        return 1
    await ctx.alloc(bs)  # the block buffer: the memory hog of the test suite
    blocks = total = 0
    fake = isinstance(src, ZeroStream) and (dst is None or isinstance(dst, NullStream))
    while count is None or blocks < count:
        if fake:
            n = bs
            await ctx.busy(bs / 2e9)  # copying at ~2 GB/s
            if count is None and blocks > 1_000_000:
                break
        else:
            data = await src.read(bs)
            if not data:
                break
            n = len(data)
            if dst is not None:
                await dst.write(data)
        blocks += 1
        total += n
    ctx.free(bs)
    await ctx.err(f"{blocks}+0 records in\n{blocks}+0 records out\n")
    return 0


@applet("uname")
async def uname(ctx: Ctx) -> int:
    flags = "".join(a[1:] for a in ctx.argv[1:] if a.startswith("-")) or "s"
    info = {"s": "Linux", "n": ctx.proc.sandbox.hostname, "r": "6.1.0-sim", "v": "#1 SMP",
            "m": "x86_64", "o": "GNU/Linux"}
    keys = "snrvmo" if "a" in flags else [k for k in "snrvmo" if k in flags]
    await ctx.out(" ".join(info[k] for k in keys) + "\n")
    return 0


@applet("date")
async def date(ctx: Ctx) -> int:
    now = ctx.host.wall_time()
    if "+%s" in ctx.argv:
        await ctx.out(f"{int(now)}\n")
    else:
        await ctx.out(time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(now)) + "\n")
    return 0


@applet("nproc")
async def nproc(ctx: Ctx) -> int:
    await ctx.out(f"{ctx.host.world.cpus}\n")
    return 0
