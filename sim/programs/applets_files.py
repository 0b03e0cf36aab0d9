"""File applets over the sandbox view: ls, touch, mkdir, rm, cp, mv, ln, head, tail, wc,
chmod, basename, dirname, grep."""

from __future__ import annotations

import os
import posixpath
import re
import time

from sim.programs.base import Ctx, applet
from sim.programs.streams import NullStream, Stream
from sim.users import group_name, user_name


def _opts(argv: tuple[str, ...], with_value: str = "") -> tuple[set[str], dict[str, str], list[str]]:
    """Short flags, flags with a value (e.g. -n 5 / -n5), operands."""
    flags: set[str] = set()
    values: dict[str, str] = {}
    rest: list[str] = []
    args = list(argv[1:])
    while args:
        a = args.pop(0)
        if a == "--":
            rest.extend(args)
            break
        if a.startswith("-") and len(a) > 1 and not a[1:].isdigit():
            for i, c in enumerate(a[1:]):
                if c in with_value:
                    values[c] = a[i + 2:] or (args.pop(0) if args else "")
                    break
                flags.add(c)
        elif a.startswith("-") and a[1:].isdigit() and "n" in with_value:
            values["n"] = a[1:]
        else:
            rest.append(a)
    return flags, values, rest


async def _fail(ctx: Ctx, what: str, e: OSError) -> int:
    await ctx.err(f"{ctx.name}: {what}: {os.strerror(e.errno or 0)}\n")
    return 1


_KIND_CHAR = {"file": "-", "dir": "d", "symlink": "l", "char": "c", "block": "b", "fifo": "p"}


def _mode_str(kind: str, mode: int) -> str:
    bits = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return _KIND_CHAR.get(kind, "?") + bits


@applet("ls")
async def ls(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    view, status = ctx.view, 0
    for p in paths or ["."]:
        full = ctx.path(p)
        try:
            st = view.stat(full, follow="l" not in flags or not view.exists(full, follow=False)
                           or view.stat(full, follow=False).kind != "symlink")
        except OSError as e:
            await ctx.err(f"ls: {p}: {os.strerror(e.errno or 0)}\n")
            status = 1
            continue
        if st.kind == "dir" and "d" not in flags:
            names = view.listdir(full)
            if "a" in flags:
                names = [".", "..", *names]
            elif "A" not in flags:
                names = [n for n in names if not n.startswith(".")]
            entries = [(n, posixpath.join(full, n)) for n in names]
        else:
            entries = [(p, full)]
        lines = []
        for name, path in entries:
            if "l" not in flags:
                lines.append(name)
                continue
            try:
                s = view.stat(path, follow=False)
            except OSError:
                continue
            owner = user_name(view, s.uid) or str(s.uid)
            group = group_name(view, s.gid) or str(s.gid)
            when = time.strftime("%b %e %H:%M", time.gmtime(s.mtime))
            size = 4096 if s.kind == "dir" else s.size
            line = (f"{_mode_str(s.kind, s.mode)} {s.nlink:4d} {owner:<8.8} {group:<8.8} "
                    f"{size:>9} {when} {name}")
            if s.kind == "symlink":
                line += f" -> {view.readlink(path)}"
            lines.append(line)
        await ctx.out("".join(f"{ln}\n" for ln in lines))
    return status


@applet("touch")
async def touch(ctx: Ctx) -> int:
    _, _, paths = _opts(ctx.argv)
    status = 0
    for p in paths:
        full = ctx.path(p)
        try:
            if ctx.view.exists(full):
                ctx.view.utime(full, ctx.host.wall_time())
            else:
                ctx.view.write(full, b"")
        except OSError as e:
            status = await _fail(ctx, p, e)
    return status


@applet("mkdir")
async def mkdir(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    status = 0
    for p in paths:
        try:
            if "p" in flags and ctx.view.exists(ctx.path(p)):
                continue
            ctx.view.mkdir(ctx.path(p), parents="p" in flags)
        except OSError as e:
            await ctx.err(f"mkdir: can't create directory '{p}': {os.strerror(e.errno or 0)}\n")
            status = 1
    return status


def _remove_tree(view: object, path: str) -> None:
    v = view  # sim.fs.FsView
    if v.stat(path, follow=False).kind == "dir":  # type: ignore[attr-defined]
        for n in v.listdir(path):  # type: ignore[attr-defined]
            _remove_tree(v, posixpath.join(path, n))
        v.rmdir(path)  # type: ignore[attr-defined]
    else:
        v.unlink(path)  # type: ignore[attr-defined]


@applet("rm", "rmdir")
async def rm(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    status = 0
    for p in paths:
        full = ctx.path(p)
        try:
            if ctx.name == "rmdir":
                ctx.view.rmdir(full)
            elif not ctx.view.exists(full, follow=False):
                if "f" not in flags:
                    raise FileNotFoundError(2, "No such file or directory")
            elif ctx.view.stat(full, follow=False).kind == "dir":
                if "r" not in flags and "R" not in flags:
                    await ctx.err(f"rm: '{p}' is a directory\n")
                    status = 1
                    continue
                _remove_tree(ctx.view, full)
            else:
                ctx.view.unlink(full)
        except OSError as e:
            status = await _fail(ctx, f"can't remove '{p}'", e)
    return status


def _copy(view: object, src: str, dst: str) -> None:
    v = view
    st = v.stat(src)  # type: ignore[attr-defined]
    if st.kind == "dir":
        if not v.exists(dst):  # type: ignore[attr-defined]
            v.mkdir(dst, st.mode)  # type: ignore[attr-defined]
        for n in v.listdir(src):  # type: ignore[attr-defined]
            _copy(v, posixpath.join(src, n), posixpath.join(dst, n))
    else:
        v.write(dst, v.read(src), mode=st.mode)  # type: ignore[attr-defined]


@applet("cp", "mv")
async def cp(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    if len(paths) < 2:
        await ctx.err(f"{ctx.name}: missing file operand\n")
        return 1
    view, dest = ctx.view, ctx.path(paths[-1])
    into = view.exists(dest) and view.stat(dest).kind == "dir"
    status = 0
    for p in paths[:-1]:
        src = ctx.path(p)
        target = posixpath.join(dest, posixpath.basename(src)) if into else dest
        try:
            if ctx.name == "mv":
                view.rename(src, target)
            elif view.stat(src).kind == "dir" and not ({"r", "R", "a"} & flags):
                await ctx.err(f"cp: omitting directory '{p}'\n")
                status = 1
            else:
                _copy(view, src, target)
        except OSError as e:
            status = await _fail(ctx, f"can't {'move' if ctx.name == 'mv' else 'copy'} '{p}'", e)
    return status


@applet("ln")
async def ln(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    if len(paths) != 2:
        await ctx.err("ln: missing operand\n")
        return 1
    target, link = paths[0], ctx.path(paths[1])
    try:
        if "f" in flags and ctx.view.exists(link, follow=False):
            ctx.view.unlink(link)
        if "s" in flags:
            ctx.view.symlink(target, link)
        else:
            ctx.view.link(ctx.path(target), link)
    except OSError as e:
        return await _fail(ctx, paths[1], e)
    return 0


@applet("chmod")
async def chmod(ctx: Ctx) -> int:
    _, _, args = _opts(ctx.argv)
    if len(args) < 2 or not re.fullmatch(r"[0-7]{1,4}", args[0]):
        await ctx.err("chmod: only octal modes are supported\n")
        return 1
    status = 0
    for p in args[1:]:
        try:
            ctx.view.chmod(ctx.path(p), int(args[0], 8))
        except OSError as e:
            status = await _fail(ctx, p, e)
    return status


async def _inputs(ctx: Ctx, paths: list[str]) -> list[tuple[str, Stream | None]]:
    out: list[tuple[str, Stream | None]] = []
    for p in paths or ["-"]:
        if p == "-":
            out.append((p, ctx.fds.get(0) or NullStream()))
            continue
        try:
            out.append((p, ctx.open_read(p)))
        except OSError as e:
            await ctx.err(f"{ctx.name}: {p}: {os.strerror(e.errno or 0)}\n")
            out.append((p, None))
    return out


async def _read_all(ctx: Ctx, s: Stream) -> bytes:
    chunks = []
    while True:
        await ctx.checkpoint()
        data = await s.read(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


@applet("head")
async def head(ctx: Ctx) -> int:
    _, vals, paths = _opts(ctx.argv, "nc")
    status = 0
    for _, s in await _inputs(ctx, paths):
        if s is None:
            status = 1
            continue
        if "c" in vals:
            want, got = int(vals["c"]), b""
            while len(got) < want:
                data = await s.read(want - len(got))
                if not data:
                    break
                got += data
            await ctx.out(got)
            continue
        for _ in range(int(vals.get("n", "10"))):
            await ctx.checkpoint()
            line = await s.readline()
            if not line:
                break
            await ctx.out(line)
    return status


@applet("tail")
async def tail(ctx: Ctx) -> int:
    flags, vals, paths = _opts(ctx.argv, "nc")
    status = 0
    for _, s in await _inputs(ctx, paths):
        if s is None:
            status = 1
            continue
        data = await _read_all(ctx, s)
        n = int(vals.get("n", "10").lstrip("+"))
        lines = data.splitlines(keepends=True)
        await ctx.out(b"".join(lines[-n:] if n else []))
    if "f" in flags:
        await ctx.sleep(float("inf"))  # follows nothing, like ``tail -f /dev/null``
    return status


@applet("wc")
async def wc(ctx: Ctx) -> int:
    flags, _, paths = _opts(ctx.argv)
    keys = [k for k in "lwc" if k in flags] or ["l", "w", "c"]
    status = 0
    for p, s in await _inputs(ctx, paths):
        if s is None:
            status = 1
            continue
        data = await _read_all(ctx, s)
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
        if len(keys) == 1:
            text = str(counts[keys[0]])
        else:
            text = " ".join(f"{counts[k]:>9}" for k in keys)
        await ctx.out(text + (f" {p}" if p != "-" else "") + "\n")
    return status


@applet("basename", "dirname")
async def basename(ctx: Ctx) -> int:
    if len(ctx.argv) < 2:
        return 1
    path = ctx.argv[1].rstrip("/") or "/"
    if ctx.name == "dirname":
        await ctx.out((posixpath.dirname(path) or ".") + "\n")
    else:
        name = posixpath.basename(path) or "/"
        if len(ctx.argv) > 2 and name.endswith(ctx.argv[2]) and name != ctx.argv[2]:
            name = name[:-len(ctx.argv[2])]
        await ctx.out(name + "\n")
    return 0


@applet("grep")
async def grep(ctx: Ctx) -> int:
    flags, vals, args = _opts(ctx.argv, "e")
    pattern = vals.get("e") if "e" in vals else (args.pop(0) if args else None)
    if pattern is None:
        await ctx.err("grep: no pattern\n")
        return 2
    rx = re.compile(re.escape(pattern) if "F" in flags else pattern.replace(r"\|", "|"),
                    re.IGNORECASE if "i" in flags else 0)
    found, status = 0, 1
    for p, s in await _inputs(ctx, args):
        if s is None:
            status = 2
            continue
        for line in (await _read_all(ctx, s)).decode("utf-8", "replace").splitlines():
            if bool(rx.search(line)) != ("v" in flags):
                found += 1
                if not ({"q", "c"} & flags):
                    await ctx.out((f"{p}:" if len(args) > 1 else "") + line + "\n")
    if "c" in flags:
        await ctx.out(f"{found}\n")
    return 0 if found else status
