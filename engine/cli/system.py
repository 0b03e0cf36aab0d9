"""System commands: version, info, system df."""

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


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage")
@pass_app
def df(app: App, verbose: bool) -> None:
    """Show wharfie disk usage."""
    from engine.api.humanize import size

    d = app.client.df()
    images, containers = d.get("Images") or [], d.get("Containers") or []
    active_images = {c.get("ImageID") for c in containers}
    rows = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
            ["Images", str(len(images)), str(sum(i["Id"] in active_images for i in images)),
             size(sum(i["Size"] for i in images), 3),
             size(sum(i["Size"] for i in images if i["Id"] not in active_images), 3)],
            ["Containers", str(len(containers)), str(sum(c["State"] == "running" for c in containers)),
             size(sum(c.get("SizeRw") or 0 for c in containers), 3),
             size(sum(c.get("SizeRw") or 0 for c in containers if c["State"] != "running"), 3)],
            ["Local Volumes", "0", "0", "0B", "0B"], ["Build Cache", "0", "0", "0B", "0B"]]
    click.echo(fmt.table(rows), nl=False)


def system_group() -> click.Group:
    group = click.Group("system", help="Manage wharfie")
    group.add_command(df)
    group.add_command(info)
    from engine.cli.query import events

    group.add_command(events)
    return group
