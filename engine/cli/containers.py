"""Container lifecycle commands: create, start, stop, kill, restart, pause, unpause, wait, rm,
rename, update, attach, exec, container prune (``run`` is in ``engine.cli.run``)."""

from __future__ import annotations

from typing import Any

import click

from engine.cli.app import App, Exit, engine_error_message, err, fail, parse_filters, pass_app
from engine.cli.run import CONTEXT, container_state, create_container, start_error
from engine.cli.runopts import create_options


@click.command(context_settings=CONTEXT)
@create_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def create(app: App, /, image: str, command: tuple[str, ...], **opts: Any) -> None:
    """Create a new container."""
    click.echo(create_container(app, opts, image, command))


def _each(app: App, refs: tuple[str, ...], fn: Any, echo: bool = True) -> None:
    """Apply ``fn`` to each ref, docker style: print each success, report failures, exit 1."""
    from engine import errors

    failed = False
    for ref in refs:
        try:
            fn(ref)
            if echo:
                click.echo(ref)
        except errors.EngineError as e:
            err(engine_error_message(e))
            failed = True
    if failed:
        raise Exit(1)


@click.command()
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def start(app: App, containers: tuple[str, ...], attach: bool, interactive: bool) -> None:
    """Start one or more stopped containers."""
    from engine import errors
    from engine.cli import term

    if not (attach or interactive):
        _each(app, containers, app.client.start)
        return
    if len(containers) > 1:
        fail("you cannot start and attach multiple containers at once")
    c = app.client
    info = c.container(containers[0])
    cid, tty = info["Id"], info["Config"]["Tty"]
    hj = c.attach(cid, stdin=interactive)
    waiter = c.wait_response(cid, "next-exit")
    try:
        c.start(cid)
    except errors.EngineError as e:
        hj.close()
        waiter.close()
        raise start_error(e) from None
    with term.raw_terminal(tty and interactive), term.proxy_signals(lambda s: c.kill(cid, s), not tty):
        term.pump(hj, interactive, tty)
    code = int((waiter.json() or {}).get("StatusCode", 0))
    if code:
        raise Exit(code)


@click.command()
@click.option("-s", "--signal", help="Signal to send to the container")
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing the container")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def stop(app: App, containers: tuple[str, ...], signal: str | None, timeout: int | None) -> None:
    """Stop one or more running containers."""
    _each(app, containers, lambda r: app.client.stop(r, timeout, signal))


@click.command()
@click.option("-s", "--signal", help="Signal to send to the container")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def kill(app: App, containers: tuple[str, ...], signal: str | None) -> None:
    """Kill one or more running containers."""
    _each(app, containers, lambda r: app.client.kill(r, signal))


@click.command()
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing the container")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def restart(app: App, containers: tuple[str, ...], timeout: int | None) -> None:
    """Restart one or more containers."""
    _each(app, containers, lambda r: app.client.restart(r, timeout))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_app
def pause(app: App, containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    _each(app, containers, app.client.pause)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_app
def unpause(app: App, containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    _each(app, containers, app.client.unpause)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_app
def wait(app: App, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    _each(app, containers, lambda r: click.echo(app.client.wait(r)), echo=False)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL)")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def rm(app: App, containers: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove one or more containers."""
    _each(app, containers, lambda r: app.client.remove(r, force, volumes))


@click.command()
@click.argument("container")
@click.argument("new_name")
@pass_app
def rename(app: App, container: str, new_name: str) -> None:
    """Rename a container."""
    app.client.rename(container, new_name)


@click.command()
@click.option("-m", "--memory", help="Memory limit")
@click.option("--memory-swap", help="Swap limit equal to memory plus swap")
@click.option("--cpus", type=float, help="Number of CPUs")
@click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
@click.option("--pids-limit", type=int, help="Tune container pids limit")
@click.option("--restart", help="Restart policy to apply when a container exits")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def update(app: App, containers: tuple[str, ...], memory: str | None, memory_swap: str | None, cpus: float | None,
           cpu_shares: int | None, pids_limit: int | None, restart: str | None) -> None:
    """Update configuration of one or more containers."""
    from engine.api.humanize import parse_size

    body: dict[str, Any] = {}
    try:
        if memory:
            body["Memory"] = parse_size(memory)
        if memory_swap:
            body["MemorySwap"] = -1 if memory_swap == "-1" else parse_size(memory_swap)
    except ValueError as e:
        fail(str(e))
    if cpus:
        body["NanoCpus"] = int(cpus * 1e9)
    if cpu_shares:
        body["CpuShares"] = cpu_shares
    if pids_limit:
        body["PidsLimit"] = pids_limit
    if restart:
        name, _, n = restart.partition(":")
        body["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(n) if n.isdigit() else 0}
    _each(app, containers, lambda r: app.client.update(r, body))


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy all received signals to the process")
@click.argument("container")
@pass_app
def attach(app: App, container: str, no_stdin: bool, detach_keys: str | None, sig_proxy: bool) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from engine.cli import term

    c = app.client
    info = c.container(container)
    if not info["State"]["Running"]:
        fail("You cannot attach to a stopped container, start it first")
    cid, tty, stdin = info["Id"], info["Config"]["Tty"], info["Config"]["OpenStdin"] and not no_stdin
    hj = c.attach(cid, stdin=stdin, detach_keys=detach_keys)
    with term.raw_terminal(tty and stdin), term.follow_resize(lambda r, w: c.resize(cid, r, w), tty), \
            term.proxy_signals(lambda s: c.kill(cid, s), sig_proxy and not tty):
        term.pump(hj, stdin, tty)
    state = container_state(app, cid)
    if state is not None and not state.get("Running") and state.get("ExitCode"):
        raise Exit(int(state["ExitCode"]))


@click.command("exec", context_settings=CONTEXT)
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY")
@click.option("-e", "--env", multiple=True, help="Set environment variables")
@click.option("-w", "--workdir", help="Working directory inside the container")
@click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])")
@click.option("--privileged", is_flag=True, help="Give extended privileges to the command")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def exec_(app: App, container: str, command: tuple[str, ...], detach: bool, interactive: bool, tty: bool,
          env: tuple[str, ...], workdir: str | None, user: str | None, privileged: bool) -> None:
    """Execute a command in a running container."""
    from engine.cli import term

    c = app.client
    eid = c.exec_create(container, {"Cmd": list(command), "Env": list(env), "WorkingDir": workdir or "",
                                    "User": user or "", "Tty": tty, "AttachStdin": interactive and not detach,
                                    "AttachStdout": not detach, "AttachStderr": not detach, "Privileged": privileged})
    if detach:
        c.exec_start(eid, tty, detach=True)
        return
    hj = c.exec_start(eid, tty)
    assert hj is not None
    with term.raw_terminal(tty and interactive), term.follow_resize(lambda r, w: c.exec_resize(eid, r, w), tty):
        term.pump(hj, interactive, tty)
    code = c.exec_inspect(eid).get("ExitCode")
    if code:
        raise Exit(int(code))


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'until=<timestamp>')")
@pass_app
def prune(app: App, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    from engine.api.humanize import size

    if not force and not click.confirm("WARNING! This will remove all stopped containers.\nAre you sure you want "
                                       "to continue?", default=False):
        return
    result = app.client.prune_containers(parse_filters(filters) or None)
    deleted = result.get("ContainersDeleted") or []
    if deleted:
        click.echo("Deleted Containers:\n" + "\n".join(deleted) + "\n")
    click.echo(f"Total reclaimed space: {size(result.get('SpaceReclaimed', 0))}")
