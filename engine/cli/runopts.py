"""``create``/``run`` flags → Docker's create request (Config + HostConfig)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from engine.cli.app import fail

NS = 1_000_000_000

_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--name", help="Assign a name to the container"),
    click.option("-e", "--env", multiple=True, help="Set environment variables"),
    click.option("--env-file", multiple=True, type=click.Path(dir_okay=False), help="Read in a file of environment variables"),
    click.option("-w", "--workdir", help="Working directory inside the container"),
    click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])"),
    click.option("-l", "--label", multiple=True, help="Set meta data on a container"),
    click.option("--entrypoint", help="Overwrite the default ENTRYPOINT of the image"),
    click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached"),
    click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY"),
    click.option("--restart", default="no", help="Restart policy to apply when a container exits"),
    click.option("--rm", "auto_remove", is_flag=True, help="Automatically remove the container when it exits"),
    click.option("-m", "--memory", help="Memory limit"),
    click.option("--memory-swap", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    click.option("--memory-reservation", help="Memory soft limit"),
    click.option("--pids-limit", type=int, help="Tune container pids limit (set -1 for unlimited)"),
    click.option("--cpus", type=float, help="Number of CPUs"),
    click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)"),
    click.option("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)"),
    click.option("--read-only", is_flag=True, help="Mount the container's root filesystem as read only"),
    click.option("--tmpfs", multiple=True, help="Mount a tmpfs directory"),
    click.option("-v", "--volume", multiple=True, help="Bind mount a volume (host-path:container-path[:ro])"),
    click.option("--health-cmd", help="Command to run to check health"),
    click.option("--health-interval", help="Time between running the check (ms|s|m|h)"),
    click.option("--health-retries", type=int, help="Consecutive failures needed to report unhealthy"),
    click.option("--health-timeout", help="Maximum time to allow one check to run (ms|s|m|h)"),
    click.option("--health-start-period", help="Start period for the container to initialize"),
    click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK"),
    click.option("--stop-signal", help="Signal to stop the container"),
    click.option("--stop-timeout", type=int, help="Timeout (in seconds) to stop a container"),
    click.option("-h", "--hostname", help="Container host name"),
    click.option("--cap-add", multiple=True, help="Add Linux capabilities"),
    click.option("--cap-drop", multiple=True, help="Drop Linux capabilities"),
    click.option("--privileged", is_flag=True, help="Give extended privileges to this container"),
    click.option("--security-opt", multiple=True, help="Security Options"),
    click.option("--log-opt", multiple=True, help="Log driver options (max-size, max-file)"),
    click.option("--log-driver", help="Logging driver for the container (json-file)"),
    click.option("--init", is_flag=True, help="Run an init inside the container"),
    click.option("--ulimit", multiple=True, help="Ulimit options (name=soft[:hard])"),
    click.option("--network", "--net", "network", help="Connect a container to a network (none)"),
    click.option("-p", "--publish", multiple=True, help="Publish a container's port(s) (not supported yet)"),
    click.option("--expose", multiple=True, help="Expose a port or a range of ports"),
]


def create_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_OPTIONS):
        fn = opt(fn)
    return fn


def duration_ns(text: str | None, flag: str) -> int:
    if not text:
        return 0
    from engine.api.wire_images import parse_duration
    from engine.errors import InvalidArgument

    try:
        return int(parse_duration(text) * NS)
    except InvalidArgument:
        fail(f"invalid argument \"{text}\" for \"{flag}\" flag: time: invalid duration \"{text}\"")


def _size(text: str | None, flag: str) -> int | None:
    if not text:
        return None
    if text == "-1":
        return -1
    from engine.api.humanize import parse_size  # only when a size flag is given

    try:
        return parse_size(text)
    except ValueError:
        fail(f"invalid argument \"{text}\" for \"{flag}\" flag: invalid size: '{text}'")


def _env(o: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for path in o["env_file"]:
        try:
            with open(path) as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        out.append(line if "=" in line else _from_host(line))
        except OSError as e:
            fail(f"open {path}: {e.strerror}")
    out.extend(e if "=" in e else _from_host(e) for e in o["env"])
    return [e for e in out if e]


def _from_host(name: str) -> str:
    import os

    return f"{name}={os.environ[name]}" if name in os.environ else ""


def build_config(o: dict[str, Any], image: str, command: tuple[str, ...]) -> dict[str, Any]:
    """The create request for these options (``o`` is the click parameter dict)."""
    labels = dict(lbl.split("=", 1) if "=" in lbl else (lbl, "") for lbl in o["label"])
    log_cfg = dict(opt.split("=", 1) for opt in o["log_opt"] if "=" in opt)
    bad = [opt for opt in o["log_opt"] if "=" not in opt]
    if bad:
        fail(f"invalid argument \"{bad[0]}\" for \"--log-opt\" flag: expected key=value")
    if o["publish"]:
        fail("publishing ports (-p) is not supported yet: containers run without a network")
    tmpfs = {}
    for t in o["tmpfs"]:
        path, _, opts = t.partition(":")
        tmpfs[path] = opts
    resources: dict[str, Any] = {
        "Memory": _size(o["memory"], "--memory") or 0, "MemorySwap": _size(o["memory_swap"], "--memory-swap") or 0,
        "MemoryReservation": _size(o["memory_reservation"], "--memory-reservation") or 0,
        "NanoCpus": int((o["cpus"] or 0) * NS), "CpuShares": o["cpu_shares"] or 0,
        "CpusetCpus": o["cpuset_cpus"] or "", "PidsLimit": o["pids_limit"],
    }
    restart_name, _, count = (o["restart"] or "no").partition(":")
    host_config: dict[str, Any] = {
        **resources, "AutoRemove": o["auto_remove"], "ReadonlyRootfs": o["read_only"], "Tmpfs": tmpfs or None,
        "Binds": list(o["volume"]) or None, "RestartPolicy": {"Name": restart_name,
                                                              "MaximumRetryCount": int(count) if count.isdigit() else 0},
        "CapAdd": list(o["cap_add"]) or None, "CapDrop": list(o["cap_drop"]) or None, "Privileged": o["privileged"],
        "SecurityOpt": list(o["security_opt"]) or None, "Init": o["init"] or None,
        "LogConfig": {"Type": o["log_driver"] or "", "Config": log_cfg}, "NetworkMode": o["network"] or "none",
        "Ulimits": [_ulimit(u) for u in o["ulimit"]] or None,
    }
    config: dict[str, Any] = {
        "Image": image, "Cmd": list(command) or None, "Env": _env(o), "WorkingDir": o["workdir"] or "",
        "User": o["user"] or "", "Labels": labels, "Tty": o["tty"], "OpenStdin": o["interactive"],
        "StdinOnce": o["interactive"], "AttachStdin": o["interactive"], "AttachStdout": True, "AttachStderr": True,
        "Hostname": o["hostname"] or "", "StopSignal": o["stop_signal"] or "",
        "ExposedPorts": {(p if "/" in p else p + "/tcp"): {} for p in o["expose"]} or None,
        "HostConfig": host_config,
    }
    if o["stop_timeout"] is not None:
        config["StopTimeout"] = o["stop_timeout"]
    if o["entrypoint"] is not None:
        import shlex

        config["Entrypoint"] = shlex.split(o["entrypoint"]) if o["entrypoint"] else [""]
    if o["no_healthcheck"]:
        config["Healthcheck"] = {"Test": ["NONE"]}
    elif o["health_cmd"] or o["health_interval"] or o["health_retries"]:
        config["Healthcheck"] = {
            "Test": ["CMD-SHELL", o["health_cmd"]] if o["health_cmd"] else [],
            "Interval": duration_ns(o["health_interval"], "--health-interval"),
            "Timeout": duration_ns(o["health_timeout"], "--health-timeout"),
            "StartPeriod": duration_ns(o["health_start_period"], "--health-start-period"),
            "Retries": o["health_retries"] or 0,
        }
    return config


def _ulimit(text: str) -> dict[str, Any]:
    name, _, vals = text.partition("=")
    soft, _, hard = vals.partition(":")
    try:
        return {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    except ValueError:
        fail(f"invalid argument \"{text}\" for \"--ulimit\" flag: expected name=soft[:hard]")
