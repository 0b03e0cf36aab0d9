"""Docker's JSON for containers and exec, both ways. The only place its field names appear
(with ``wire_images`` for images, events and the system endpoints).

Parsing is strict about types (a wrong type is ``InvalidArgument``, so a 400, never a 500) and
lenient about unknown fields, as Docker is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from engine.api import humanize
from engine.containers.logfile import format_time
from engine.containers.spec import ContainerSpec, Healthcheck, RestartPolicy
from engine.errors import InvalidArgument
from engine.kernel import MountSpec, Resources, Rlimit
from engine.model import Health, Status

NS = 1_000_000_000
ZERO_TIME = "0001-01-01T00:00:00Z"
CPU_PERIOD = 100_000

JSON = dict[str, Any]


# -- typed getters ------------------------------------------------------------------------------

def _type_error(where: str, key: str, want: str, got: Any) -> InvalidArgument:
    kind = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}
    return InvalidArgument(f"json: cannot unmarshal {kind.get(type(got), 'value')} into Go struct field "
                           f"{where}.{key} of type {want}")


def get_str(doc: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    v = doc.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise _type_error(where, key, "string", v)
    return v


def get_bool(doc: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    v = doc.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _type_error(where, key, "bool", v)
    return v


def get_int(doc: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    v = doc.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise _type_error(where, key, "int64", v)
    return int(v)


def get_obj(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _type_error(where, key, "object", v)
    return v


def get_strs(doc: Mapping[str, Any], key: str, where: str, slice_from_str: bool = False) -> list[str] | None:
    """A ``[]string`` (Docker's StrSlice also accepts a bare string when ``slice_from_str``)."""
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, str) and slice_from_str:
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _type_error(where, key, "[]string", v)
    return list(v)


def get_str_map(doc: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    v = get_obj(doc, key, where)
    if not all(isinstance(x, str) for x in v.values()):
        raise _type_error(where, key, "map[string]string", v)
    return dict(v)


# -- create: Config + HostConfig → ContainerSpec ------------------------------------------------

def parse_create(body: Any) -> ContainerSpec:
    """``POST /containers/create`` body → ContainerSpec. Raises InvalidArgument."""
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    w = "container.Config"
    image = get_str(body, "Image", w)
    if not image:
        raise InvalidArgument("config: Image is required")
    hc = get_obj(body, "HostConfig", "container.CreateRequest")
    h = "container.HostConfig"
    entrypoint = get_strs(body, "Entrypoint", w, slice_from_str=True)
    if entrypoint is not None and entrypoint in ([""], []) and "Entrypoint" in body:
        entrypoint = []
    restart = get_obj(hc, "RestartPolicy", h)
    policy_name = get_str(restart, "Name", "container.RestartPolicy") or "no"
    retries = get_int(restart, "MaximumRetryCount", "container.RestartPolicy", 0) or 0
    policy = RestartPolicy.parse(f"{policy_name}:{retries}" if policy_name == "on-failure" and retries
                                 else policy_name)
    log_cfg = get_obj(hc, "LogConfig", h)
    log_type = get_str(log_cfg, "Type", "container.LogConfig")
    if log_type not in ("", "json-file", "local"):
        raise InvalidArgument(f'logging driver "{log_type}" is not supported (json-file only)')
    log_opts = get_str_map(log_cfg, "Config", "container.LogConfig")
    auto_remove = get_bool(hc, "AutoRemove", h)
    if auto_remove and policy.name != "no":
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    stop_timeout = get_int(body, "StopTimeout", w)
    return ContainerSpec(
        image=image,
        cmd=tuple(c) if (c := get_strs(body, "Cmd", w, slice_from_str=True)) is not None and c else None,
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        env=tuple(get_strs(body, "Env", w) or ()),
        workdir=get_str(body, "WorkingDir", w), user=get_str(body, "User", w),
        hostname=get_str(body, "Hostname", w), domainname=get_str(body, "Domainname", w),
        labels=get_str_map(body, "Labels", w), tty=get_bool(body, "Tty", w),
        open_stdin=get_bool(body, "OpenStdin", w), stdin_once=get_bool(body, "StdinOnce", w),
        attach_stdout=get_bool(body, "AttachStdout", w, True), attach_stderr=get_bool(body, "AttachStderr", w, True),
        stop_signal=get_str(body, "StopSignal", w), stop_timeout=stop_timeout,
        exposed_ports=tuple(get_obj(body, "ExposedPorts", w)),
        healthcheck=_parse_health(get_obj(body, "Healthcheck", w)) if body.get("Healthcheck") else None,
        restart_policy=policy, auto_remove=auto_remove, resources=parse_resources(hc),
        network_mode=get_str(hc, "NetworkMode", h) or "none",
        read_only=get_bool(hc, "ReadonlyRootfs", h), tmpfs=get_str_map(hc, "Tmpfs", h),
        mounts=_parse_mounts(hc), privileged=get_bool(hc, "Privileged", h),
        cap_add=tuple(get_strs(hc, "CapAdd", h) or ()), cap_drop=tuple(get_strs(hc, "CapDrop", h) or ()),
        security_opt=tuple(get_strs(hc, "SecurityOpt", h) or ()), ulimits=_parse_ulimits(hc),
        log_max_size=_size_opt(log_opts.get("max-size"), 10 * 1024 * 1024),
        log_max_files=_int_opt(log_opts.get("max-file"), 3), init=bool(get_bool(hc, "Init", h)),
    )


def _size_opt(text: str | None, default: int) -> int:
    if not text:
        return default
    if text == "-1":
        return 0
    try:
        return humanize.parse_size(text)
    except ValueError as e:
        raise InvalidArgument(f"invalid log opt max-size: {e}") from None


def _int_opt(text: str | None, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"invalid value for log opt max-file: {text}")
    return int(text)


def _parse_health(doc: dict[str, Any]) -> Healthcheck:
    w = "container.HealthConfig"
    return Healthcheck(test=tuple(get_strs(doc, "Test", w) or ()),
                       interval=(get_int(doc, "Interval", w, 0) or 0) / NS,
                       timeout=(get_int(doc, "Timeout", w, 0) or 0) / NS,
                       retries=get_int(doc, "Retries", w, 0) or 0,
                       start_period=(get_int(doc, "StartPeriod", w, 0) or 0) / NS,
                       start_interval=(get_int(doc, "StartInterval", w, 0) or 0) / NS)


def _parse_mounts(hc: dict[str, Any]) -> tuple[MountSpec, ...]:
    out = []
    for bind in get_strs(hc, "Binds", "container.HostConfig") or ():
        parts = bind.split(":")
        if len(parts) < 2 or not parts[1].startswith("/"):
            raise InvalidArgument(f"invalid volume specification: '{bind}'")
        out.append(MountSpec("bind", parts[1], parts[0], readonly="ro" in parts[2:]))
    return tuple(out)


def _parse_ulimits(hc: dict[str, Any]) -> tuple[Rlimit, ...]:
    items = hc.get("Ulimits") or []
    if not isinstance(items, list):
        raise _type_error("container.HostConfig", "Ulimits", "[]*units.Ulimit", items)
    out = []
    for u in items:
        if not isinstance(u, dict):
            raise _type_error("container.HostConfig", "Ulimits", "*units.Ulimit", u)
        out.append(Rlimit(get_str(u, "Name", "units.Ulimit"), get_int(u, "Soft", "units.Ulimit", 0) or 0,
                          get_int(u, "Hard", "units.Ulimit", 0) or 0))
    return tuple(out)


def parse_resources(hc: Mapping[str, Any]) -> Resources:
    """HostConfig's resource fields (also the ``POST /containers/{id}/update`` body)."""
    h = "container.Resources"

    def pos(key: str) -> int | None:
        v = get_int(hc, key, h)
        return v if v else None  # Docker: 0 means "not set"

    nano = get_int(hc, "NanoCpus", h) or 0
    quota, period = pos("CpuQuota"), pos("CpuPeriod")
    if nano:
        if quota:
            raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
        period = CPU_PERIOD
        quota = nano * CPU_PERIOD // NS
    return Resources(memory=pos("Memory"), memory_swap=pos("MemorySwap"),
                     memory_reservation=pos("MemoryReservation"), cpu_shares=pos("CpuShares"),
                     cpu_quota=quota, cpu_period=period, cpuset_cpus=get_str(hc, "CpusetCpus", h) or None,
                     pids_limit=pos("PidsLimit"), io_weight=pos("BlkioWeight"))


def parse_update(body: Any) -> tuple[Resources, RestartPolicy | None]:
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    rp = body.get("RestartPolicy")
    policy = None
    if rp:
        if not isinstance(rp, dict):
            raise _type_error("container.UpdateConfig", "RestartPolicy", "container.RestartPolicy", rp)
        name = get_str(rp, "Name", "container.RestartPolicy") or "no"
        n = get_int(rp, "MaximumRetryCount", "container.RestartPolicy", 0) or 0
        policy = RestartPolicy.parse(f"{name}:{n}" if name == "on-failure" and n else name)
    return parse_resources(body), policy


# -- container → Docker JSON --------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return format_time(ts) if ts else ZERO_TIME


def status_text(c: Any, now: float | None = None) -> str:
    """The ``Status`` column of ``docker ps``: "Up 5 seconds", "Exited (3) 2 minutes ago"…"""
    st = c.state
    now = time.time() if now is None else now
    if st.status in (Status.RUNNING, Status.PAUSED):
        up = humanize.duration(now - st.started_at)
        if st.status is Status.PAUSED:
            return f"Up {up} (Paused)"
        if st.health is not None:
            h = st.health.status
            return f"Up {up} ({'health: starting' if h is Health.STARTING else h.value})"
        return f"Up {up}"
    if st.status is Status.RESTARTING:
        return f"Restarting ({st.exit_code}) {humanize.ago(st.finished_at, now)}"
    if st.status is Status.REMOVING:
        return "Removal In Progress"
    if st.status is Status.DEAD:
        return "Dead"
    if not st.started_at:
        return "Created"
    return f"Exited ({st.exit_code}) {humanize.ago(st.finished_at, now)}"


def _health(c: Any) -> JSON | None:
    h = c.state.health
    if h is None:
        return None
    return {"Status": h.status.value, "FailingStreak": h.failing_streak,
            "Log": [{"Start": rfc3339(r.start), "End": rfc3339(r.end), "ExitCode": r.exit_code,
                     "Output": r.output} for r in h.log]}


def _health_config(hc: Healthcheck | None) -> JSON | None:
    if hc is None:
        return None
    return {"Test": list(hc.test), "Interval": int(hc.interval * NS), "Timeout": int(hc.timeout * NS),
            "Retries": hc.retries, "StartPeriod": int(hc.start_period * NS)}


def host_config(c: Any) -> JSON:
    s, r = c.spec, c.spec.resources
    nano = (r.cpu_quota * NS // r.cpu_period) if r.cpu_quota and r.cpu_period == CPU_PERIOD else 0
    return {
        "Binds": [f"{m.source}:{m.target}{':ro' if m.readonly else ''}" for m in s.mounts if m.kind == "bind"] or None,
        "LogConfig": {"Type": "json-file", "Config": {"max-size": str(s.log_max_size), "max-file": str(s.log_max_files)}},
        "NetworkMode": s.network_mode, "PortBindings": {},
        "RestartPolicy": {"Name": s.restart_policy.name, "MaximumRetryCount": s.restart_policy.max_retries},
        "AutoRemove": s.auto_remove, "CapAdd": list(s.cap_add) or None, "CapDrop": list(s.cap_drop) or None,
        "Privileged": s.privileged, "ReadonlyRootfs": s.read_only, "SecurityOpt": list(s.security_opt) or None,
        "Tmpfs": dict(s.tmpfs) or None, "Init": s.init or None, "Memory": r.memory or 0,
        "MemorySwap": r.memory_swap or 0, "MemoryReservation": r.memory_reservation or 0,
        "NanoCpus": nano, "CpuShares": r.cpu_shares or 0, "CpuQuota": 0 if nano else (r.cpu_quota or 0),
        "CpuPeriod": 0 if nano else (r.cpu_period or 0), "CpusetCpus": r.cpuset_cpus or "",
        "PidsLimit": r.pids_limit, "BlkioWeight": r.io_weight or 0,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in s.ulimits] or None,
    }


def container_config(c: Any) -> JSON:
    s = c.spec
    cfg: JSON = {
        "Hostname": c.hostname, "Domainname": s.domainname, "User": c.user,
        "AttachStdin": s.open_stdin, "AttachStdout": s.attach_stdout, "AttachStderr": s.attach_stderr,
        "Tty": s.tty, "OpenStdin": s.open_stdin, "StdinOnce": s.stdin_once, "Env": list(c.env),
        "Cmd": list(s.cmd) if s.cmd is not None else list(c.args) if s.entrypoint is None else [],
        "Image": c.image_ref, "WorkingDir": c.workdir,
        "Entrypoint": list(s.entrypoint) if s.entrypoint is not None else None,
        "Labels": dict(c.labels), "StopSignal": _signame(c.stop_signal),
        "ExposedPorts": {p: {} for p in s.exposed_ports} or None,
    }
    if s.stop_timeout is not None:
        cfg["StopTimeout"] = s.stop_timeout
    if c.healthcheck is not None:
        cfg["Healthcheck"] = _health_config(c.healthcheck)
    return cfg


def _signame(num: int) -> str:
    from engine.kernel import SIGNALS

    for name, n in SIGNALS.items():
        if n == num:
            return "SIG" + name
    return str(num)


def inspect(c: Any, size_rw: int | None = None, size_root: int | None = None) -> JSON:
    st = c.state
    doc: JSON = {
        "Id": c.id, "Created": rfc3339(c.created), "Path": c.path, "Args": list(c.args),
        "State": {"Status": st.status.value, "Running": st.status in (Status.RUNNING, Status.PAUSED),
                  "Paused": st.status is Status.PAUSED, "Restarting": st.status is Status.RESTARTING,
                  "OOMKilled": st.oom_killed, "Dead": st.status is Status.DEAD, "Pid": st.pid,
                  "ExitCode": st.exit_code, "Error": st.error, "StartedAt": rfc3339(st.started_at),
                  "FinishedAt": rfc3339(st.finished_at)},
        "Image": c.image_id, "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": c.log_path, "Name": "/" + c.name, "RestartCount": st.restart_count,
        "Driver": "overlay2", "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None, "HostConfig": host_config(c),
        "GraphDriver": {"Name": "overlay2", "Data": None}, "Mounts": [], "Config": container_config(c),
        "NetworkSettings": {"Bridge": "", "SandboxID": "", "Ports": {}, "SandboxKey": "",
                            "IPAddress": "", "Gateway": "", "MacAddress": "", "Networks": {}},
    }
    health = _health(c)
    if health is not None:
        doc["State"]["Health"] = health
    if size_rw is not None:
        doc["SizeRw"], doc["SizeRootFs"] = size_rw, size_root or 0
    return doc


def list_item(c: Any, size_rw: int | None = None) -> JSON:
    argv = " ".join(c.argv)
    item: JSON = {
        "Id": c.id, "Names": ["/" + c.name], "Image": c.image_ref, "ImageID": c.image_id,
        "Command": argv, "Created": int(c.created), "Ports": [], "Labels": dict(c.labels),
        "State": c.state.status.value, "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.spec.network_mode}, "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }
    if size_rw is not None:
        item["SizeRw"], item["SizeRootFs"] = size_rw, 0
    return item


def wait_result(code: int, error: str = "") -> JSON:
    return {"StatusCode": code, "Error": {"Message": error} if error else None}


def top(t: Any) -> JSON:
    return {"Titles": list(t.titles), "Processes": [list(p) for p in t.processes]}


def stats(s: Any, prev: Any, c: Any) -> JSON:
    """Docker's stats document; ``prev`` is the previous sample (or None)."""
    def cpu(x: Any) -> JSON:
        if x is None:
            return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                    "system_cpu_usage": 0, "online_cpus": s.online_cpus, "throttling_data": {}}
        return {"cpu_usage": {"total_usage": x.cpu_usage_ns, "usage_in_kernelmode": 0,
                              "usage_in_usermode": x.cpu_usage_ns},
                "system_cpu_usage": int(x.read * NS * x.online_cpus), "online_cpus": x.online_cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}

    return {
        "read": rfc3339(s.read), "preread": rfc3339(prev.read) if prev else ZERO_TIME,
        "id": c.id, "name": "/" + c.name, "num_procs": 0,
        "pids_stats": {"current": s.pids_current, **({"limit": s.pids_limit} if s.pids_limit else {})},
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None},
        "cpu_stats": cpu(s), "precpu_stats": cpu(prev),
        "memory_stats": {"usage": s.memory_usage, "max_usage": s.memory_max_usage, "limit": s.memory_limit,
                         "failcnt": s.oom_kills, "stats": {"inactive_file": 0, "oom_kill": s.oom_kills}},
        "networks": {},
    }


def exec_config(body: Any) -> JSON:
    """``POST /containers/{id}/exec`` body → keyword arguments of ``exec_create``."""
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    w = "container.ExecOptions"
    cmd = get_strs(body, "Cmd", w, slice_from_str=True)
    if not cmd:
        raise InvalidArgument("No exec command specified")
    return {"argv": cmd, "env": tuple(get_strs(body, "Env", w) or ()), "workdir": get_str(body, "WorkingDir", w),
            "user": get_str(body, "User", w), "tty": get_bool(body, "Tty", w),
            "open_stdin": get_bool(body, "AttachStdin", w), "privileged": get_bool(body, "Privileged", w)}


def exec_inspect(rec: Any) -> JSON:
    return {"ID": rec.id, "ContainerID": rec.container_id, "Running": rec.running,
            "ExitCode": rec.exit_code, "Pid": rec.pid, "OpenStdin": rec.open_stdin, "OpenStdout": True,
            "OpenStderr": True, "CanRemove": False, "DetachKeys": "",
            "ProcessConfig": {"entrypoint": rec.argv[0], "arguments": list(rec.argv[1:]), "tty": rec.tty,
                              "privileged": rec.privileged, "user": rec.user}}
