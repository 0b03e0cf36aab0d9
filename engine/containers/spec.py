"""What a user asks for when creating a container (Docker's Config + HostConfig, in our words).

Plain frozen dataclasses with ``to_dict``/``from_dict`` for the metadata store. Docker's JSON
field names are *not* here: the API's wire module translates.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidArgument
from engine.kernel import SIGNALS, MountSpec, Resources, Rlimit

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """``no``, ``on-failure[:max_retries]``, ``always``, ``unless-stopped``."""

    name: str = "no"
    max_retries: int = 0

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, _, count = (text or "no").partition(":")
        if name not in ("no", "on-failure", "always", "unless-stopped"):
            raise InvalidArgument(f"invalid restart policy '{text}'")
        if count and name != "on-failure":
            raise InvalidArgument(f"maximum retry count cannot be used with restart policy '{name}'")
        try:
            retries = int(count) if count else 0
        except ValueError:
            raise InvalidArgument(f"invalid restart policy '{text}': maximum retry count must be an integer") from None
        if retries < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
        return cls(name, retries)

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.name == "on-failure" and self.max_retries else self.name


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """``test`` is Docker's form: ["CMD", argv…], ["CMD-SHELL", "cmd"], ["NONE"] or [] (inherit).
    Durations in seconds; 0 means the default (30 s interval/timeout, 3 retries)."""

    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    retries: int = 0
    start_period: float = 0.0
    start_interval: float = 0.0

    def argv(self) -> tuple[str, ...] | None:
        if not self.test or self.test[0] == "NONE":
            return None
        if self.test[0] == "CMD":
            return tuple(self.test[1:])
        if self.test[0] == "CMD-SHELL":
            return ("/bin/sh", "-c", " ".join(self.test[1:]))
        raise InvalidArgument(f"unknown healthcheck type {self.test[0]!r}")

    @classmethod
    def from_image(cls, doc: dict[str, Any] | None) -> Healthcheck | None:
        if not doc:
            return None
        return cls(test=tuple(doc.get("Test") or ()), interval=doc.get("Interval", 0) / NS,
                   timeout=doc.get("Timeout", 0) / NS, retries=int(doc.get("Retries", 0)),
                   start_period=doc.get("StartPeriod", 0) / NS,
                   start_interval=doc.get("StartInterval", 0) / NS)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything ``create`` accepts. Empty/None fields inherit from the image config."""

    image: str
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    stop_signal: str = ""
    stop_timeout: int | None = None
    exposed_ports: tuple[str, ...] = ()
    healthcheck: Healthcheck | None = None
    # host config
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    resources: Resources = field(default_factory=Resources)
    network_mode: str = "none"
    read_only: bool = False
    tmpfs: dict[str, str] = field(default_factory=dict)
    mounts: tuple[MountSpec, ...] = ()
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    ulimits: tuple[Rlimit, ...] = ()
    log_max_size: int = 10 * 1024 * 1024
    log_max_files: int = 3
    init: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ContainerSpec:
        d = dict(doc)
        for key in ("cmd", "entrypoint"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for key in ("env", "exposed_ports", "cap_add", "cap_drop", "security_opt"):
            d[key] = tuple(d.get(key) or ())
        d["restart_policy"] = RestartPolicy(**d.get("restart_policy") or {})
        d["resources"] = Resources(**d.get("resources") or {})
        if d.get("healthcheck"):
            hc = dict(d["healthcheck"])
            hc["test"] = tuple(hc.get("test") or ())
            d["healthcheck"] = Healthcheck(**hc)
        d["mounts"] = tuple(MountSpec(**{**m, "options": tuple(m.get("options") or ())})
                            for m in d.get("mounts") or ())
        d["ulimits"] = tuple(Rlimit(**u) for u in d.get("ulimits") or ())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass → its field names (looked up once)
_SCALARS = (str, int, float, bool, type(None))


def _to_jsonable(obj: Any) -> Any:
    """``obj`` with every dataclass instance turned into a dict of its fields and every tuple
    into a list (recursively); other values as they are. Called on every container save."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(cls) and not isinstance(obj, type):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    if names is not None:
        return {n: _to_jsonable(getattr(obj, n)) for n in names}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    return obj


def parse_signal(sig: str | int) -> int:
    """``"SIGTERM"``, ``"TERM"``, ``"15"``, ``15``, ``"SIGRTMIN+3"`` → a Linux signal number."""
    if isinstance(sig, int):
        num = sig
    else:
        text = sig.strip().upper()
        if text.isdigit():
            num = int(text)
        else:
            name = text[3:] if text.startswith("SIG") else text
            if name.startswith("RTMIN") or name.startswith("RTMAX"):
                base = 34 if name.startswith("RTMIN") else 64
                off = name[5:]
                try:
                    num = base + int(off) if off else base
                except ValueError:
                    raise InvalidArgument(f"invalid signal: {sig}") from None
            elif name in SIGNALS:
                num = SIGNALS[name]
            else:
                raise InvalidArgument(f"invalid signal: {sig}")
    if not 1 <= num <= 64:
        raise InvalidArgument(f"invalid signal: {sig}")
    return num


def validate_name(name: str) -> str:
    """Docker's container name rule; returns the name without a leading slash."""
    if not NAME_RE.match(name):
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def normalize_resources(r: Resources) -> Resources:
    """Docker's API says 0 for "not set": turn those into None (no limit) for the kernel.

    Raises InvalidArgument for values Docker refuses (negative memory, memory below 6 MiB).
    """
    vals = {f.name: getattr(r, f.name) for f in dataclasses.fields(Resources)}
    for key in ("memory", "memory_reservation", "cpu_shares", "cpu_period", "io_weight"):
        if vals[key] is not None and vals[key] < 0:
            raise InvalidArgument(f"invalid {key.replace('_', ' ')}: {vals[key]} (must not be negative)")
        if vals[key] == 0:
            vals[key] = None
    if vals["memory"] is not None and vals["memory"] < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    for key in ("memory_swap", "cpu_quota"):
        if vals[key] == 0:
            vals[key] = None
    if vals["pids_limit"] is not None and vals["pids_limit"] <= 0:
        vals["pids_limit"] = None
    if vals["memory_swap"] is not None and vals["memory_swap"] > 0 and vals["memory"] is not None \
            and vals["memory_swap"] < vals["memory"]:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if vals["cpuset_cpus"] == "":
        vals["cpuset_cpus"] = None
    return Resources(**vals)
