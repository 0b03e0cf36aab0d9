"""A container as the engine keeps it: identity, resolved configuration and state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.containers.spec import ContainerSpec, Healthcheck, _to_jsonable
from engine.model import Health, Status

HEALTH_LOG_KEEP = 5


@dataclass
class HealthResult:
    start: float
    end: float
    exit_code: int
    output: str


@dataclass
class HealthState:
    status: Health = Health.STARTING
    failing_streak: int = 0
    log: list[HealthResult] = field(default_factory=list)


@dataclass
class State:
    status: Status = Status.CREATED
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    manually_stopped: bool = False
    health: HealthState | None = None


@dataclass
class Container:
    """The engine's record of one container. ``spec`` is what was asked; the rest is resolved."""

    id: str
    name: str
    created: float
    image_id: str
    image_ref: str
    spec: ContainerSpec
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str
    hostname: str
    stop_signal: int
    stop_timeout: int
    healthcheck: Healthcheck | None
    labels: dict[str, str]
    snapshot: str  # active snapshot key (the container's write layer)
    parent_snapshot: str | None
    log_path: str
    state: State = field(default_factory=State)

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.path, *self.args)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: _to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Container:
        st = dict(d["state"])
        st["status"] = Status(st["status"])
        if st.get("health"):
            h = dict(st["health"])
            h["status"] = Health(h["status"])
            h["log"] = [HealthResult(**r) for r in h.get("log") or ()]
            st["health"] = HealthState(**h)
        hc = d.get("healthcheck")
        return cls(
            id=d["id"], name=d["name"], created=d["created"], image_id=d["image_id"],
            image_ref=d["image_ref"], spec=ContainerSpec.from_dict(d["spec"]), path=d["path"],
            args=tuple(d["args"]), env=tuple(d["env"]), workdir=d["workdir"], user=d["user"],
            hostname=d["hostname"], stop_signal=d["stop_signal"], stop_timeout=d["stop_timeout"],
            healthcheck=Healthcheck(**{**hc, "test": tuple(hc["test"])}) if hc else None,
            labels=dict(d["labels"]), snapshot=d["snapshot"], parent_snapshot=d["parent_snapshot"],
            log_path=d["log_path"], state=State(**st),
        )
