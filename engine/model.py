"""Container status: one enum and pure transition predicates (no bag of booleans)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Docker's container states, mutually exclusive."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


class Health(enum.StrEnum):
    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


def is_alive(s: Status) -> bool:
    """A process exists (running or frozen)."""
    return s in (Status.RUNNING, Status.PAUSED)


def can_start(s: Status) -> bool:
    return s in (Status.CREATED, Status.EXITED)


def can_stop(s: Status) -> bool:
    """``stop`` acts (running, paused or waiting to restart); on others it is a no-op."""
    return s in (Status.RUNNING, Status.PAUSED, Status.RESTARTING)


def can_kill(s: Status) -> bool:
    return s in (Status.RUNNING, Status.PAUSED)


def can_pause(s: Status) -> bool:
    return s is Status.RUNNING


def can_unpause(s: Status) -> bool:
    return s is Status.PAUSED


def can_exec(s: Status) -> bool:
    return s is Status.RUNNING


def can_remove(s: Status, force: bool) -> bool:
    return force or s not in (Status.RUNNING, Status.PAUSED, Status.RESTARTING)
