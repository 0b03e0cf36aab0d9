"""The sim shell's interpreter (busybox ``sh``/``ash``): runs ``shell_parse`` ASTs in a
simulated process. External commands are forked children (they count against the pids limit);
like ash, the last simple command of ``sh -c`` is exec'd in place when no trap is set. Every loop
iteration costs 1 ms of CPU so that busy loops advance (virtual) time."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

from sim.programs.base import Ctx, ProgramExit
from sim.programs.shell_ast import (AndOr, Command, For, FuncDef, Group, If, Pipeline, Redir, Seq,
                                    Simple, While)
from sim.programs.shell_expand import ExpansionError, Expander
from sim.programs.streams import NullStream, Pipe, Stream

if TYPE_CHECKING:
    from sim.proc_model import SimProcess

LOOP_COST = 0.001
IN_PROCESS = {"echo", "printf", "test", "[", "[[", "kill", "pwd", "true", "false"}


class LoopControl(Exception):
    def __init__(self, kind: str, n: int) -> None:
        super().__init__(kind, n)
        self.kind = kind
        self.n = n


class FuncReturn(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Shell:
    """One shell process's state: variables, positional parameters, traps, jobs, functions."""

    def __init__(self, ctx: Ctx, arg0: str = "sh", args: list[str] | None = None) -> None:
        self.ctx = ctx
        self.vars: dict[str, str] = dict(ctx.env)
        self.exported: set[str] = set(ctx.env)
        self.arg0 = arg0
        self.args = list(args or [])
        self.status = 0
        self.last_bg: int | None = None
        self.traps: dict[int, str] = {}
        self.jobs: list[SimProcess] = []
        self.funcs: dict[str, Command] = {}
        self.errexit = False
        self.cond_depth = 0
        self.loop_depth = 0
        self.shell_pid = ctx.proc.nspid
        self.exp = Expander(self.lookup, self.assign, self.substitute, lambda: self.args,
                            ctx.view, lambda: self.ctx.cwd)

    # ---- state --------------------------------------------------------------------------
    def lookup(self, name: str) -> str | None:
        special = {"?": str(self.status), "$": str(self.shell_pid), "#": str(len(self.args)),
                   "0": self.arg0, "@": " ".join(self.args), "*": " ".join(self.args),
                   "-": "e" if self.errexit else "",
                   "!": "" if self.last_bg is None else str(self.last_bg)}
        if name in special:
            return special[name]
        if name.isdigit():
            i = int(name)
            return self.args[i - 1] if i <= len(self.args) else None
        return self.vars.get(name)

    def assign(self, name: str, value: str) -> None:
        self.vars[name] = value

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in self.vars.items() if k in self.exported}
        env.update(extra or {})
        return env

    def clone(self, ctx: Ctx) -> Shell:
        """The state a forked subshell starts with (traps are reset, as POSIX says)."""
        sh = Shell(ctx, self.arg0, self.args)
        sh.vars, sh.exported = dict(self.vars), set(self.exported)
        sh.status, sh.funcs, sh.errexit = self.status, dict(self.funcs), self.errexit
        sh.shell_pid, sh.last_bg = self.shell_pid, self.last_bg
        return sh

    async def err(self, msg: str) -> None:
        await self.ctx.err(f"sh: {msg}\n")

    # ---- traps --------------------------------------------------------------------------
    async def run_traps(self) -> None:
        for sig in self.ctx.take_signals():
            action = self.traps.get(sig)
            if action:
                saved = self.status
                await self.run_string(action, self.ctx.fds)
                self.status = saved

    async def run_string(self, src: str, fds: dict[int, Stream]) -> int:
        from sim.programs.shell_ast import ShellSyntaxError
        from sim.programs.shell_parse import parse
        try:
            seq = parse(src)
        except ShellSyntaxError as e:
            await self.err(str(e))
            self.status = 2
            return 2
        return await self.run_seq(seq, fds)

    async def at_exit(self) -> None:
        action = self.traps.pop(0, None)
        if action:
            await self.run_string(action, self.ctx.fds)

    # ---- execution ----------------------------------------------------------------------
    async def run_seq(self, seq: Seq, fds: dict[int, Stream], exec_last: bool = False) -> int:
        n = len(seq.items)
        for i, (andor, bg) in enumerate(seq.items):
            await self.run_traps()
            if bg:
                await self.background(andor, fds)
                self.status = 0
                continue
            last = exec_last and i == n - 1
            status = await self.run_andor(andor, fds, last)
            if (self.errexit and status != 0 and not self.cond_depth and not andor.rest
                    and not andor.first.negate):
                raise ProgramExit(status)
        await self.run_traps()
        return self.status

    async def run_andor(self, andor: AndOr, fds: dict[int, Stream], exec_last: bool = False) -> int:
        chain = [("", andor.first), *andor.rest]
        for i, (op, pl) in enumerate(chain):
            if op == "&&" and self.status != 0 or op == "||" and self.status == 0:
                continue
            self.cond_depth += i < len(chain) - 1
            try:
                self.status = await self.run_pipeline(pl, fds, exec_last and i == len(chain) - 1)
            finally:
                self.cond_depth -= i < len(chain) - 1
        return self.status

    async def run_pipeline(self, pl: Pipeline, fds: dict[int, Stream], exec_last: bool) -> int:
        if len(pl.commands) == 1:
            status = await self.run_command(pl.commands[0], fds, exec_last and not pl.negate)
        else:
            status = await self.pipeline(pl.commands, fds)
        if pl.negate:
            status = int(status == 0)
        self.status = status
        return status

    async def pipeline(self, cmds: tuple[Command, ...], fds: dict[int, Stream]) -> int:
        children: list[SimProcess] = []
        prev: Stream | None = None
        try:
            for i, cmd in enumerate(cmds):
                table = dict(fds)
                if prev is not None:
                    table[0] = prev
                pipe = Pipe() if i < len(cmds) - 1 else None
                if pipe is not None:
                    table[1] = pipe.writer()
                try:
                    children.append(await self.fork(self._sub(cmd), table))
                finally:
                    if pipe is not None:
                        table[1].close()
                    if prev is not None:
                        prev.close()
                prev = pipe.reader() if pipe is not None else None
        except OSError as e:
            if prev is not None:
                prev.close()
            await self.err(f"can't fork: {os.strerror(e.errno or errno.EAGAIN)}")
            raise ProgramExit(2) from None  # like ash: a failed fork ends a non-interactive shell
        status = 0
        for child in children:
            status = (await self.ctx.wait_child(child)).exit_code
        return status

    def _sub(self, cmd: Command | AndOr) -> tuple[tuple[str, ...], object]:
        parent = self

        async def subshell(ctx: Ctx) -> int:
            sh = parent.clone(ctx)
            try:
                if isinstance(cmd, AndOr):
                    return await sh.run_andor(cmd, ctx.fds, exec_last=True)
                return await sh.run_command(cmd, ctx.fds, exec_last=True)
            except ProgramExit as e:
                return e.code
        return (self.ctx.proc.argv, subshell)

    async def fork(self, sub: tuple[tuple[str, ...], object],
                   fds: dict[int, Stream]) -> SimProcess:
        argv, prog = sub
        return await self.ctx.spawn(argv, prog, fds=fds, env=self.env())  # type: ignore[arg-type]

    async def background(self, andor: AndOr, fds: dict[int, Stream]) -> None:
        table = dict(fds)
        table[0] = NullStream()  # no job control: background jobs read /dev/null
        try:
            child = await self.fork(self._sub(andor), table)
        except OSError as e:
            await self.err(f"can't fork: {os.strerror(e.errno or errno.EAGAIN)}")
            raise ProgramExit(2) from None
        self.jobs.append(child)
        self.last_bg = child.nspid

    async def run_command(self, cmd: Command, fds: dict[int, Stream], exec_last: bool = False) -> int:
        if isinstance(cmd, Simple):
            from sim.programs.shell_run import run_simple
            return await run_simple(self, cmd, fds, exec_last)
        if isinstance(cmd, FuncDef):
            self.funcs[cmd.name] = cmd.body
            return 0
        table = await self.redirect(cmd.redirs, fds)
        if table is None:
            return 1
        if isinstance(cmd, Group):
            if cmd.subshell:
                try:
                    child = await self.fork(self._sub(Group(cmd.body)), table)
                except OSError as e:
                    await self.err(f"can't fork: {os.strerror(e.errno or errno.EAGAIN)}")
                    raise ProgramExit(2) from None
                return (await self.ctx.wait_child(child)).exit_code
            return await self.run_seq(cmd.body, table)
        if isinstance(cmd, If):
            for cond, body in cmd.branches:
                if await self.condition(cond, table) == 0:
                    return await self.run_seq(body, table)
            if cmd.else_body is not None:
                return await self.run_seq(cmd.else_body, table)
            self.status = 0
            return 0
        if isinstance(cmd, While):
            return await self.loop(cmd, table)
        assert isinstance(cmd, For)
        return await self.for_loop(cmd, table)

    async def condition(self, seq: Seq, fds: dict[int, Stream]) -> int:
        self.cond_depth += 1
        try:
            return await self.run_seq(seq, fds)
        finally:
            self.cond_depth -= 1

    async def loop(self, cmd: While, fds: dict[int, Stream]) -> int:
        status = 0
        self.loop_depth += 1
        try:
            while True:
                await self.ctx.busy(LOOP_COST)
                c = await self.condition(cmd.cond, fds)
                if (c == 0) == cmd.until:
                    break
                try:
                    status = await self.run_seq(cmd.body, fds)
                except LoopControl as lc:
                    if lc.n > 1:
                        raise LoopControl(lc.kind, lc.n - 1) from None
                    if lc.kind == "break":
                        break
        finally:
            self.loop_depth -= 1
        self.status = status
        return status

    async def for_loop(self, cmd: For, fds: dict[int, Stream]) -> int:
        items = list(self.args) if cmd.items is None else await self.exp.fields(cmd.items)
        status = 0
        self.loop_depth += 1
        try:
            for item in items:
                await self.ctx.busy(LOOP_COST)
                self.vars[cmd.var] = item
                try:
                    status = await self.run_seq(cmd.body, fds)
                except LoopControl as lc:
                    if lc.n > 1:
                        raise LoopControl(lc.kind, lc.n - 1) from None
                    if lc.kind == "break":
                        break
        finally:
            self.loop_depth -= 1
        self.status = status
        return status

    # ---- redirections and substitutions -------------------------------------------------
    async def redirect(self, redirs: tuple[Redir, ...],
                       fds: dict[int, Stream]) -> dict[int, Stream] | None:
        """A new fd table with ``redirs`` applied; None (after a message) on failure."""
        if not redirs:
            return fds
        table = dict(fds)
        for r in redirs:
            target = await self.exp.string(r.target)
            if r.op in (">&", "<&"):
                if target == "-":
                    table.pop(r.fd, None)
                elif target.isdigit() and int(target) in table:
                    table[r.fd] = table[int(target)]
                else:
                    await self.err(f"{target}: bad file descriptor")
                    return None
                continue
            try:
                if r.op == "<":
                    table[r.fd] = self.ctx.open_read(target)
                else:
                    table[r.fd] = self.ctx.open_write(target, append=r.op == ">>")
            except OSError as e:
                if r.op == "<":
                    await self.err(f"can't open '{target}': {os.strerror(e.errno or 0)}")
                else:
                    why = ("nonexistent directory" if e.errno == errno.ENOENT
                           else os.strerror(e.errno or 0))
                    await self.err(f"can't create {target}: {why}")
                return None
        return table

    async def substitute(self, body: Seq) -> str:
        pipe = Pipe()
        table = dict(self.ctx.fds)
        table[1] = pipe.writer()
        parent = self

        async def sub(ctx: Ctx) -> int:
            sh = parent.clone(ctx)
            try:
                return await sh.run_seq(body, ctx.fds, exec_last=True)
            except ProgramExit as e:
                return e.code

        reader = pipe.reader()
        try:
            child = await self.ctx.spawn(self.ctx.proc.argv, sub, fds=table, env=self.env())
        except OSError as e:
            await self.err(f"can't fork: {os.strerror(e.errno or errno.EAGAIN)}")
            reader.close()
            return ""
        finally:
            table[1].close()
        chunks = []
        while True:
            await self.ctx.checkpoint()
            data = await reader.read()
            if not data:
                break
            chunks.append(data)
        reader.close()
        self.status = (await self.ctx.wait_child(child)).exit_code
        return b"".join(chunks).decode("utf-8", "replace")

    async def wait_jobs(self, targets: list[SimProcess]) -> int:
        """The ``wait`` builtin: interrupted (128+sig) by a trapped signal."""
        status = 0
        event = self.ctx.proc.signal_event
        assert event is not None
        for child in targets:
            assert child.exit_future is not None
            if not child.exit_future.done():
                sig_wait = asyncio.ensure_future(event.wait())
                try:
                    await asyncio.wait([asyncio.shield(child.exit_future), sig_wait],
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sig_wait.cancel()
                await self.ctx.checkpoint()
                if not child.exit_future.done():
                    pending = self.ctx.proc.pending
                    return 128 + (pending[0] if pending else 0)
            status = child.exit_future.result().exit_code
            if child in self.jobs:
                self.jobs.remove(child)
        return status


