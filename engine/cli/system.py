"""System commands: version, info, system df, system prune."""

from __future__ import annotations

import platform
from typing import Any

import click

from engine.cli import fmt
from engine.cli.app import App, Exit, engine_error_message, err, pass_app


@click.command()
@click.option("-f", "--format", "format_", help="Format output using a custom template")
@pass_app
def version(app: App, format_: str | None) -> None:
    """Show the wharfie version information."""
    from engine import __version__, errors

    client = {"Version": __version__, "ApiVersion": "1.47", "Os": "linux", "Arch": platform.machine(),
              "PythonVersion": platform.python_version()}
    try:
        server: Any = app.client.version()
    except errors.EngineError as e:
        server, problem = None, e
    if format_:
        fmt.inspect_output([{"Client": client, "Server": server}], format_)
    else:
        click.echo(f"Client:\n Version:           {client['Version']}\n API version:       {client['ApiVersion']}\n"
                   f" Python version:    {client['PythonVersion']}\n OS/Arch:           linux/{client['Arch']}")
        if server is not None:
            d = (server.get("Components") or [{}])[0].get("Details", {})
            click.echo(f"\nServer: wharfie\n Engine:\n  Version:          {server['Version']}\n"
                       f"  API version:      {server['ApiVersion']} (minimum version {server.get('MinAPIVersion')})\n"
                       f"  Backend:          {d.get('Backend', '')}\n"
                       f"  OS/Arch:          {server['Os']}/{server['Arch']}\n"
                       f"  Kernel version:   {server.get('KernelVersion', '')}")
    if server is None:
        err(engine_error_message(problem))
        raise Exit(1)


@click.command()
@click.option("-f", "--format", "format_", help="Format output using a custom template")
@pass_app
def info(app: App, format_: str | None) -> None:
    """Display system-wide information."""
    from engine.api.humanize import bytes_size

    i = app.client.info()
    if format_:
        fmt.inspect_output([i], format_)
        return
    lines = [
        "Server:", f" Containers: {i['Containers']}", f"  Running: {i['ContainersRunning']}",
        f"  Paused: {i['ContainersPaused']}", f"  Stopped: {i['ContainersStopped']}", f" Images: {i['Images']}",
        f" Server Version: {i['ServerVersion']}", f" Storage Driver: {i['Driver']}",
        *[f"  {k}: {v}" for k, v in i.get("DriverStatus") or []], f" Logging Driver: {i['LoggingDriver']}",
        f" Cgroup Driver: {i['CgroupDriver']}", f" Cgroup Version: {i['CgroupVersion']}",
        f" Kernel Version: {i['KernelVersion']}", f" Operating System: {i['OperatingSystem']}",
        f" Architecture: {i['Architecture']}", f" CPUs: {i['NCPU']}", f" Total Memory: {bytes_size(i['MemTotal'])}",
        f" Name: {i['Name']}", f" Docker Root Dir: {i['DockerRootDir']}", f" Live Restore Enabled: {str(i['LiveRestoreEnabled']).lower()}",
    ]
    click.echo("\n".join(lines))
    for w in i.get("Warnings") or []:
        err(w)


def _pct(part: int, total: int) -> str:
    from engine.api.humanize import size

    return f"{size(part)} ({part * 100 // total}%)" if total > 0 else size(part)


ACTIVE = ("running", "paused", "restarting")


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage")
@click.option("--format", "format_", help="Format output using a custom template")
@pass_app
def df(app: App, verbose: bool, format_: str | None) -> None:
    """Show wharfie disk usage (with a Logs row: container log files, rotated ones included)."""
    from engine.api.humanize import size

    d = app.client.df()
    images, containers = d.get("Images") or [], d.get("Containers") or []
    layers = int(d.get("LayersSize") or 0)
    used = sum(i["Size"] - max(i.get("SharedSize", 0), 0) for i in images if i.get("Containers"))
    rw = [int(c.get("SizeRw") or 0) for c in containers]
    logs = [int(c.get("LogsSize") or 0) for c in containers]
    idle = [c["State"] not in ACTIVE for c in containers]
    summary = [
        {"Type": "Images", "TotalCount": str(len(images)), "Active": str(sum(bool(i.get("Containers")) for i in images)),
         "Size": size(layers), "Reclaimable": _pct(max(layers - used, 0), layers)},
        {"Type": "Containers", "TotalCount": str(len(containers)), "Active": str(idle.count(False)),
         "Size": size(sum(rw)), "Reclaimable": _pct(sum(n for n, i in zip(rw, idle) if i), sum(rw))},
        {"Type": "Local Volumes", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
        {"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
        {"Type": "Logs", "TotalCount": str(len(containers)), "Active": str(idle.count(False)),
         "Size": size(int(d.get("LogsSize") or sum(logs))),
         "Reclaimable": _pct(sum(n for n, i in zip(logs, idle) if i), int(d.get("LogsSize") or sum(logs)))},
    ]
    if not verbose:
        fmt.render(summary, format_, "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                   headers={"TotalCount": "TOTAL", "Reclaimable": "RECLAIMABLE"})
        return
    click.echo("Images space usage:\n")
    rows = fmt.image_rows(images)
    by_id = {i["Id"]: i for i in images}
    for r, img in zip(rows, [i for i in images for _ in (i.get("RepoTags") or [None])]):
        shared = max(by_id[img["Id"]].get("SharedSize", 0), 0)
        r.update(SharedSize=size(shared), UniqueSize=size(img["Size"] - shared),
                 Containers=str(img.get("Containers", 0)))
    fmt.render(rows, None, "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t"
               "{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
               headers={"ID": "IMAGE ID", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE"})
    click.echo("\nContainers space usage:\n")
    crow = []
    for c in containers:
        r = fmt.container_row(c)
        r["Size"], r["LogsSize"] = size(int(c.get("SizeRw") or 0)), size(int(c.get("LogsSize") or 0))
        crow.append(r)
    fmt.render(crow, None, "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t"
               "{{.LogsSize}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
               headers={"LocalVolumes": "LOCAL VOLUMES", "LogsSize": "LOGS SIZE"})
    click.echo("\nLocal Volumes space usage:\n")
    click.echo("VOLUME NAME   LINKS     SIZE")
    click.echo("\nBuild cache usage: 0B\n")
    click.echo("CACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED")


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'label=<key>=<value>')")
@pass_app
def prune(app: App, all_: bool, force: bool, volumes: bool, filters: tuple[str, ...]) -> None:
    """Remove unused data: stopped containers, dangling (-a: unused) images, build cache."""
    from engine.api.humanize import size
    from engine.cli.app import parse_filters

    if not force:
        items = ["all stopped containers", "all networks not used by at least one container"]
        if volumes:
            items.append("all anonymous volumes not used by at least one container")
        items += ["all images without at least one container associated to them" if all_ else "all dangling images",
                  "all build cache" if all_ else "unused build cache"]
        text = "WARNING! This will remove:\n" + "".join(f"  - {i}\n" for i in items)
        if not click.confirm(text + "\nAre you sure you want to continue?", default=False):
            return
    f = parse_filters(filters) or None
    c = app.client
    reclaimed = 0
    result = c.prune_containers(f)
    reclaimed += int(result.get("SpaceReclaimed") or 0)
    if result.get("ContainersDeleted"):
        click.echo("Deleted Containers:\n" + "\n".join(result["ContainersDeleted"]) + "\n")
    c.prune("networks", f)
    if volumes:
        reclaimed += int(c.prune("volumes", f).get("SpaceReclaimed") or 0)
    result = c.prune_images(all_)
    reclaimed += int(result.get("SpaceReclaimed") or 0)
    if result.get("ImagesDeleted"):
        click.echo("Deleted Images:")
        for item in result["ImagesDeleted"]:
            for k, v in item.items():
                click.echo(f"{k.lower()}: {v}")
        click.echo()
    reclaimed += int(c.prune("build", f).get("SpaceReclaimed") or 0)
    click.echo(f"Total reclaimed space: {size(reclaimed)}")


def system_group() -> click.Group:
    group = click.Group("system", help="Manage wharfie")
    group.add_command(df)
    group.add_command(prune)
    group.add_command(info)
    from engine.cli.query import events

    group.add_command(events)
    return group
