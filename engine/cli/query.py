"""Read-side commands: ps, logs, top, stats, inspect, events."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from engine.cli import fmt
from engine.cli.app import App, Exit, engine_error_message, err, fail, parse_filters, pass_app

PS_FORMAT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running)")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("--format", "format_", help="Format output using a custom template ('table', 'json', Go template)")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers (includes all states)")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container (includes all states)")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes")
@pass_app
def ps(app: App, all_: bool, filters: tuple[str, ...], format_: str | None, last: int, latest: bool, no_trunc: bool,
       quiet: bool, size: bool) -> None:
    """List containers."""
    limit = 1 if latest else last if last > 0 else None
    cs = app.client.containers(all=all_, filters=parse_filters(filters) or None, limit=limit, size=size)
    rows = [fmt.container_row(c, no_trunc) for c in cs]
    default = PS_FORMAT + ("\t{{.Size}}" if size else "")
    fmt.render(rows, format_, default, "ID", quiet)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--since", help="Show logs since timestamp or relative (e.g. 42m)")
@click.option("--until", help="Show logs before a timestamp or relative (e.g. 42m)")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end of the logs")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@click.argument("container")
@pass_app
def logs(app: App, container: str, follow: bool, since: str | None, until: str | None, tail: str, timestamps: bool,
         details: bool) -> None:
    """Fetch the logs of a container."""
    out, errs = sys.stdout.buffer, sys.stderr.buffer
    try:
        for stream, data in app.client.logs(container, follow=follow, timestamps=timestamps, tail=tail,
                                            since=since, until=until):
            (errs if stream == 2 else out).write(data)
            (errs if stream == 2 else out).flush()
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("container")
@click.argument("ps_args", nargs=-1)
@pass_app
def top(app: App, container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container."""
    t = app.client.top(container)
    click.echo(fmt.table([t["Titles"], *t["Processes"]]), nl=False)


def _stats_row(s: dict[str, Any], ref: str, no_trunc: bool) -> dict[str, Any]:
    from engine.api.humanize import bytes_size

    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    d_cpu = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    d_sys = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or 1
    cpu_pct = d_cpu / d_sys * ncpu * 100.0 if d_sys > 0 and d_cpu > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage, limit = mem.get("usage", 0) - (mem.get("stats") or {}).get("inactive_file", 0), mem.get("limit", 0)
    cid = s.get("id", ref)
    return {"Container": ref, "ID": cid if no_trunc else cid[:12], "Name": (s.get("name") or "").lstrip("/"),
            "CPUPerc": f"{cpu_pct:.2f}%", "MemUsage": f"{bytes_size(usage)} / {bytes_size(limit)}",
            "MemPerc": f"{(usage / limit * 100.0) if limit else 0.0:.2f}%", "NetIO": "0B / 0B", "BlockIO": "0B / 0B",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


STATS_FORMAT = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running)")
@click.option("--no-stream", is_flag=True, help="Disable streaming stats and only pull the first result")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--format", "format_", help="Format output using a custom template")
@click.argument("containers", nargs=-1)
@pass_app
def stats(app: App, all_: bool, no_stream: bool, no_trunc: bool, format_: str | None,
          containers: tuple[str, ...]) -> None:
    """Display a live stream of container(s) resource usage statistics."""
    c = app.client
    refs = list(containers) or [x["Id"] for x in c.containers(all=all_)]
    while True:
        rows = [_stats_row(next(iter(c.stats(r, stream=False)), {}), r, no_trunc) for r in refs]
        if not no_stream:
            click.echo("\x1b[2J\x1b[H", nl=False)
        fmt.render(rows, format_, STATS_FORMAT)
        if no_stream:
            return
        time.sleep(1.0)


@click.command()
@click.option("-f", "--format", "format_", help="Format output using a custom template")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes if the type is container")
@click.option("--type", "type_", type=click.Choice(["container", "image"]), help="Return JSON for specified type")
@click.argument("names", nargs=-1, required=True)
@pass_app
def inspect(app: App, format_: str | None, size: bool, type_: str | None, names: tuple[str, ...]) -> None:
    """Return low-level information on containers or images."""
    from engine import errors

    docs, failed = [], False
    for name in names:
        doc = None
        for kind in ([type_] if type_ else ["container", "image"]):
            try:
                doc = app.client.container(name, size) if kind == "container" else app.client.image(name)
                break
            except errors.NotFound:
                continue
        if doc is None:
            err(f"Error: No such {type_ or 'object'}: {name}")
            failed = True
        else:
            docs.append(doc)
    fmt.inspect_output(docs, format_)
    if failed:
        raise Exit(1)


@click.command()
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("--format", "format_", help="Format output using a custom template")
@click.option("--since", help="Show all events created since timestamp")
@click.option("--until", help="Stream events until this timestamp")
@pass_app
def events(app: App, filters: tuple[str, ...], format_: str | None, since: str | None, until: str | None) -> None:
    """Get real time events from the server."""
    from engine.cli.template import Template, TemplateError

    tpl = None
    if format_:
        try:
            tpl = Template("{{json .}}" if format_ == "json" else format_)
        except TemplateError as e:
            fail(f"template parsing error: {e}")
    try:
        for ev in app.client.events(since=since, until=until, filters=parse_filters(filters) or None):
            if tpl is not None:
                click.echo(tpl.render(ev))
                continue
            attrs = ", ".join(f"{k}={v}" for k, v in sorted((ev.get("Actor") or {}).get("Attributes", {}).items()))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ev["time"])) + \
                f".{ev['timeNano'] % 1_000_000_000:09d}Z"
            click.echo(f"{stamp} {ev['Type']} {ev['Action']} {ev['Actor']['ID']}" + (f" ({attrs})" if attrs else ""))
    except KeyboardInterrupt:
        pass


def dump_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=4))


__all__ = ["ps", "logs", "top", "stats", "inspect", "events", "engine_error_message"]
