"""Process applets: ps (busybox's default format) and top (batch mode)."""

from __future__ import annotations

from sim.programs.base import Ctx, applet
from sim.users import user_name


@applet("ps")
async def ps(ctx: Ctx) -> int:
    lines = ["PID   USER     COMMAND\n"]
    for p in ctx.processes():
        user = user_name(ctx.view, p.uid) or str(p.uid)
        lines.append(f"{p.nspid:5d} {user:<8.8} {' '.join(p.argv)}\n")
    await ctx.out("".join(lines))
    return 0


@applet("top")
async def top(ctx: Ctx) -> int:
    procs = ctx.processes()
    world = ctx.host.world
    used = sum(p.mem for p in procs) // 1024
    total = world.memory // 1024
    lines = [f"Mem: {used}K used, {total - used}K free, 0K shrd, 0K buff, 0K cached\n",
             "CPU:   0% usr   0% sys   0% nic 100% idle   0% io   0% irq   0% sirq\n",
             f"Load average: 0.00 0.00 0.00 1/{len(procs)} {procs[-1].nspid if procs else 0}\n",
             "  PID  PPID USER     STAT   VSZ %VSZ %CPU COMMAND\n"]
    by_pid = {p.pid: p for p in procs}
    for p in procs:
        user = user_name(ctx.view, p.uid) or str(p.uid)
        parent = by_pid.get(p.ppid)
        ppid = parent.nspid if parent is not None else 0
        vsz = p.mem // 1024
        lines.append(f"{p.nspid:5d} {ppid:5d} {user:<8.8} {p.shown_state():<4} {vsz:5d}   0%   0% "
                     f"{' '.join(p.argv)}\n")
    await ctx.out("".join(lines))
    return 0
