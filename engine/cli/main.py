"""``wharfie``: the command-line client, Docker's commands and flags over the wharfie API.

Start-up is kept lean: this module imports click and the command modules, which import only
click and each other; the HTTP client, the template engine and everything else load when a
command needs them. ``python -X importtime -m engine.cli.main ps`` shows the budget. The
launcher install.sh writes (``engine.cli.launcher``) also starts the interpreter without
``site`` and holds the garbage collector off until the command is resolved (see :func:`main`).
"""

from __future__ import annotations

import gc
import sys

import click

from engine import __version__
from engine.cli.app import EXIT_DAEMON, App, Exit, ShortOptsFirst, end_process, engine_error_message

# name -> "module:attribute" ("attribute()" builds a group); imported only when invoked, so
# ``wharfie --version`` loads click alone and ``wharfie ps`` adds just what ps needs.
COMMANDS = {
    "run": "engine.cli.run:run",
    **{n: f"engine.cli.containers:{n}" for n in ("create", "start", "stop", "kill", "restart", "pause",
                                                   "unpause", "wait", "rm", "rename", "update", "attach")},
    "exec": "engine.cli.containers:exec_",
    **{n: f"engine.cli.container_fs:{n}" for n in ("commit", "diff", "export", "cp")},
    "save": "engine.cli.images:save", "load": "engine.cli.images:load",
    **{n: f"engine.cli.query:{n}" for n in ("ps", "logs", "top", "stats", "inspect", "events")},
    "version": "engine.cli.system:version", "info": "engine.cli.system:info",
    "images": "engine.cli.images:images", "import": "engine.cli.images:import_", "tag": "engine.cli.images:tag",
    "rmi": "engine.cli.images:rmi", "history": "engine.cli.images:history",
    "image": "engine.cli.images:image_group()", "system": "engine.cli.system:system_group()",
    "container": "engine.cli.main:container_group()",
    **{n: f"engine.cli.registry:{n}" for n in ("pull", "push", "login", "logout")},
    "registry": "engine.cli.registry:registry_group()",
}


class LazyGroup(ShortOptsFirst, click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return super().get_command(ctx, name)
        import importlib

        module, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(module), attr.rstrip("()"))
        cmd: click.Command = obj() if attr.endswith("()") else obj
        _started()
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["--help"], "max_content_width": 100})
@click.option("-H", "--host", help="Daemon socket to connect to (unix:///path, tcp://host:port; "
                                   "env WHARFIE_HOST or DOCKER_HOST)")
@click.option("--tls", is_flag=True, help="Use TLS; implied by --tlsverify")
@click.option("--tlsverify", is_flag=True, help="Use TLS and verify the remote daemon")
@click.option("--tlscacert", type=click.Path(dir_okay=False), help="Trust certs signed only by this CA")
@click.option("--tlscert", type=click.Path(dir_okay=False), help="Path to TLS certificate file")
@click.option("--tlskey", type=click.Path(dir_okay=False), help="Path to TLS key file")
@click.option("-D", "--debug", is_flag=True, help="Enable debug mode (tracebacks on errors)")
@click.version_option(__version__, "-v", "--version", prog_name="wharfie",
                      message="wharfie version %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str | None, tls: bool, tlsverify: bool, tlscacert: str | None,
        tlscert: str | None, tlskey: str | None, debug: bool) -> None:
    """A Docker-compatible container engine.

    With no daemon listening on the default socket (and no -H/DOCKER_HOST), the first command
    starts one in the background (wharfied), so e.g.

        wharfie image bootstrap busybox && wharfie run --rm busybox echo hello

    works on a fresh machine.
    """
    ctx.obj = App(host, tls or tlsverify or bool(tlscacert), tlsverify, tlscacert, tlscert, tlskey, debug)


def container_group() -> click.Group:
    from engine.cli import container_fs, containers, query, run

    group = click.Group("container", help="Manage containers")
    for cmd in (containers.create, run.run, containers.start, containers.stop, containers.kill,
                containers.restart, containers.pause, containers.unpause, containers.wait, containers.rename,
                containers.update, containers.attach, containers.exec_, containers.prune, query.logs, query.top,
                query.stats, query.inspect, container_fs.commit, container_fs.diff, container_fs.export,
                container_fs.cp):
        group.add_command(cmd)
    group.add_command(containers.rm, "rm")
    group.add_command(query.ps, "ls")
    group.add_command(query.ps, "list")
    return group



_gc_held = False  # main() found the collector off: the launcher held it for start-up


def _started() -> None:
    """Start-up is over (click, this module and the command's module are imported): if the
    launcher held the garbage collector off for it, move everything start-up allocated into
    the collector's permanent generation (``gc.freeze``: it lives until exit anyway, so no
    later collection, nor the interpreter's last one at exit, scans it again) and turn the
    collector back on for the command. Without the hold, start-up pays ~3 ms of collections
    of objects that are all still alive, and exit ~3 ms more."""
    global _gc_held
    if _gc_held:
        _gc_held = False
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, map failures to docker's exit codes (SystemExit).

    As the process's entry (``argv`` None): a garbage collector found disabled is taken as the
    launcher's start-up hold and released once the command is resolved (:func:`_started`);
    and a command that declared it safe ends the process right here, skipping the
    interpreter's finalization (see :func:`app.skip_finalization`)."""
    global _gc_held
    if argv is None and not gc.isenabled():
        _gc_held = True
    code = _run(argv)
    if argv is None:
        _started()  # eager options (--version, --help) end before any command is resolved
        end_process(code)
    if code:
        sys.exit(code)


def _run(argv: list[str] | None) -> int:
    from engine.errors import EngineError

    debug = "-D" in (argv or sys.argv) or "--debug" in (argv or sys.argv)
    try:
        cli.main(args=argv, prog_name="wharfie", standalone_mode=False)
    except Exit as e:
        if e.message:
            click.echo(e.message, err=True)
        return e.code
    except EngineError as e:
        if debug:
            raise
        click.echo(engine_error_message(e), err=True)
        return EXIT_DAEMON
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        e.show()
        return EXIT_DAEMON
    except click.exceptions.Exit as e:
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    main()
