"""Simulated programs: the busybox applets and the shell the sim runs for a busybox binary.

``APPLETS`` maps applet names to ``async def prog(ctx) -> int`` (see ``sim.programs.base``);
:func:`load_applets` imports the modules that register them.
"""

from __future__ import annotations

from sim.programs.base import APPLETS, Ctx, Program, ProgramExit, applet

__all__ = ["APPLETS", "Ctx", "Program", "ProgramExit", "applet", "load_applets"]


def load_applets() -> None:
    from sim.programs import applets_basic, applets_files, applets_proc, shell_run  # noqa: F401
