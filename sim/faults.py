"""Fault injection for the sim: make any kernel operation fail with a chosen errno.

>>> kernel.faults.fail_next("mount", errno.EBUSY)            # the next mount fails
>>> kernel.faults.fail_next("write", errno.ENOSPC, after=3)  # the 4th file write fails
>>> kernel.faults.fail_next("spawn", errno.EAGAIN, times=2)

Operation names are the Kernel method names (``spawn``, ``mount``, ``cgroup_create``,
``link_add`` …) plus a few inner points: ``write`` (each file write inside a snapshot, by
``apply_layer`` or by a simulated program), ``exec_binary`` (the exec step of spawn/exec).
Every injected error is an ``OSError`` with the errno's class (``FileNotFoundError`` for ENOENT…)
and a message saying it was injected. ``fired`` records what fired, for assertions.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass


@dataclass
class _Rule:
    op: str
    err: int
    after: int
    times: int


class Faults:
    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self.fired: list[tuple[str, int]] = []
        self.calls: dict[str, int] = {}

    def fail_next(self, op: str, err: int = _errno.EIO, *, after: int = 0, times: int = 1) -> None:
        """Fail ``op`` ``times`` times with ``err``, after letting ``after`` calls pass."""
        self._rules.append(_Rule(op, err, after, times))

    def clear(self) -> None:
        self._rules.clear()

    @property
    def pending(self) -> list[str]:
        return [r.op for r in self._rules]

    def check(self, op: str, filename: str | None = None) -> None:
        """Called by the sim at the start of ``op``; raises if a rule says so."""
        self.calls[op] = self.calls.get(op, 0) + 1
        for rule in self._rules:
            if rule.op != op:
                continue
            if rule.after > 0:
                rule.after -= 1
                return
            rule.times -= 1
            if rule.times <= 0:
                self._rules.remove(rule)
            self.fired.append((op, rule.err))
            msg = f"{os.strerror(rule.err)} (injected into {op})"
            if filename is not None:
                raise OSError(rule.err, msg, filename)
            raise OSError(rule.err, msg)
