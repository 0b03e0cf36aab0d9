"""Commands between containers' filesystems and images: commit, diff, export, cp.

``cp`` follows ``docker cp``: ``CONTAINER:PATH`` on one side (relative container paths start at
its root), a local path or ``-`` (a tar on stdin/stdout) on the other. A trailing ``/`` demands a
directory; ``SRC/.`` copies a directory's contents rather than the directory; a destination that
does not exist is created under that name (its parent must exist). Local extraction refuses
entries that would land outside the destination (absolute names, ``..``, symlinked parents).
"""

from __future__ import annotations

import sys
from typing import ClassVar

import click

from engine.cli.app import App, DockerBoolFlags, fail, pass_app


class _Commit(DockerBoolFlags):
    bool_flags: ClassVar[dict[str, tuple[str, str]]] = {"--pause": ("--pause", "--no-pause"),
                                                        "-p": ("--pause", "--no-pause")}


@click.command(cls=_Commit)
@click.option("-a", "--author", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@click.option("-c", "--change", multiple=True, help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", help="Commit message")
@click.option("-p", "--pause/--no-pause", default=True, help="Pause container during commit (--pause=false to not)")
@click.argument("container")
@click.argument("reference", required=False)
@pass_app
def commit(app: App, author: str | None, change: tuple[str, ...], message: str | None, pause: bool,
           container: str, reference: str | None) -> None:
    """Create a new image from a container's changes."""
    click.echo(app.client.commit(container, reference, list(change), message, author, pause))


@click.command()
@click.argument("container")
@pass_app
def diff(app: App, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    kinds = {0: "C", 1: "A", 2: "D"}
    for item in app.client.changes(container) or []:
        click.echo(f"{kinds.get(item['Kind'], '?')} {item['Path']}")


@click.command()
@click.option("-o", "--output", help="Write to a file, instead of STDOUT")
@click.argument("container")
@pass_app
def export(app: App, output: str | None, container: str) -> None:
    """Export a container's filesystem as a tar archive."""
    from engine.cli.images import write_file

    if not output and sys.stdout.isatty():
        fail("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    resp = app.client.export(container)
    if not output or output == "-":
        for data in resp.chunks():
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_file(output, resp.chunks())


def split_arg(arg: str) -> tuple[str | None, str]:
    """docker's ``splitCpArg``: ``(container, path)``, container None for a local path."""
    if arg.startswith("/"):
        return None, arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return None, arg
    return container, path


@click.command()
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output during copy")
@click.argument("src")
@click.argument("dst")
@pass_app
def cp(app: App, archive: bool, follow_link: bool, quiet: bool, src: str, dst: str) -> None:
    """Copy files/folders between a container and the local filesystem.

    \b
    wharfie cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
    wharfie cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH
    """
    from engine.cli import copying

    src_c, src_path = split_arg(src)
    dst_c, dst_path = split_arg(dst)
    if not src_path:
        fail("source can not be empty", 1)
    if not dst_path:
        fail("destination can not be empty", 1)
    if src_c is not None and dst_c is not None:
        fail("copying between containers is not supported", 1)
    if src_c is None and dst_c is None:
        fail("must specify at least one container source", 1)
    if src_c is not None:
        n = copying.copy_out(app.client, src_c, _in_container(src_path), dst_path, follow_link)
        where = dst_path
    else:
        assert dst_c is not None
        n = copying.copy_in(app.client, src_path, dst_c, _in_container(dst_path), follow_link, archive)
        where = dst
    if not quiet and dst_path != "-" and n is not None:
        from engine.api.humanize import size

        click.echo(f"Successfully copied {size(n)} to {where}", err=True)


def _in_container(path: str) -> str:
    """Container paths are relative to its root (docker cp's rule); keep ``/`` and ``/.`` ends."""
    if not path.startswith("/"):
        path = "/" + path
    return path
