"""Image commands: images / image ls, import, tag, rmi / image rm, image inspect, image prune,
history / image history, save / image save, load / image load, image bootstrap."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from engine.cli import fmt
from engine.cli.app import App, Exit, engine_error_message, err, fail, parse_filters, pass_app

IMAGES_FORMAT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


@click.command("ls")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images (default hides intermediate images)")
@click.option("--digests", is_flag=True, help="Show digests")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("--format", "format_", help="Format output using a custom template")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.argument("repository", required=False)
@pass_app
def images(app: App, all_: bool, digests: bool, filters: tuple[str, ...], format_: str | None, no_trunc: bool,
           quiet: bool, repository: str | None) -> None:
    """List images."""
    f = parse_filters(filters)
    if repository:
        f.setdefault("reference", []).append(repository)
    rows = fmt.image_rows(app.client.images(all=all_, filters=f or None), no_trunc)
    if quiet:
        seen = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        click.echo("\n".join(seen) + ("\n" if seen else ""), nl=False)
        return
    default = IMAGES_FORMAT.replace("\t{{.ID}}", "\t{{.Digest}}\t{{.ID}}") if digests else IMAGES_FORMAT
    fmt.render(rows, format_, default, headers={"ID": "IMAGE ID"})


def _print_progress(lines: Any, quiet: bool = False) -> str:
    last = ""
    for doc in lines:
        if "error" in doc or "errorDetail" in doc:
            fail(engine_error_message(Exception(doc.get("error") or doc["errorDetail"].get("message"))))
        last = doc.get("status", last)
        if not quiet and doc.get("status"):
            click.echo(doc["status"])
    return last


@click.command("import")
@click.option("-c", "--change", multiple=True, help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", help="Set commit message for imported image")
@click.option("--platform", help="Set platform if server is multi-platform capable")
@click.argument("file")
@click.argument("reference", required=False)
@pass_app
def import_(app: App, change: tuple[str, ...], message: str | None, platform: str | None, file: str,
            reference: str | None) -> None:
    """Import the contents from a tarball to create a filesystem image (FILE may be '-')."""
    if file.startswith(("http://", "https://")):
        fail("importing from a URL is not supported yet")
    try:
        fh = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as e:
        fail(f"open {file}: {e.strerror}")
    try:
        _print_progress(app.client.import_image(fh, reference, list(change), message, platform))
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


@click.command()
@click.argument("source")
@click.argument("target")
@pass_app
def tag(app: App, source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    repo, _, tag_ = target.rpartition(":") if ":" in target.rsplit("/", 1)[-1] else (target, "", "")
    app.client.tag(source, repo, tag_ or None)


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force removal of the image")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@click.argument("images", nargs=-1, required=True)
@pass_app
def rmi(app: App, force: bool, no_prune: bool, images: tuple[str, ...]) -> None:
    """Remove one or more images."""
    from engine import errors

    failed = False
    for ref in images:
        try:
            for item in app.client.remove_image(ref, force, no_prune) or []:
                for k, v in item.items():
                    click.echo(f"{k}: {v}")
        except errors.EngineError as e:
            err(engine_error_message(e))
            failed = True
    if failed:
        raise Exit(1)


@click.command("inspect")
@click.option("-f", "--format", "format_", help="Format output using a custom template")
@click.argument("images", nargs=-1, required=True)
@pass_app
def image_inspect(app: App, format_: str | None, images: tuple[str, ...]) -> None:
    """Display detailed information on one or more images."""
    from engine import errors

    docs, failed = [], False
    for ref in images:
        try:
            docs.append(app.client.image(ref))
        except errors.NotFound:
            err(f"Error: No such image: {ref}")
            failed = True
    fmt.inspect_output(docs, format_)
    if failed:
        raise Exit(1)


@click.command()
@click.option("-H", "--human/--no-human", default=True, help="Print sizes and dates in human readable format")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.option("--format", "format_", help="Format output using a custom template")
@click.argument("image")
@pass_app
def history(app: App, human: bool, no_trunc: bool, quiet: bool, format_: str | None, image: str) -> None:
    """Show the history of an image."""
    import time

    from engine.api.humanize import ago, size

    rows = []
    for h in app.client.image_history(image):
        created_by = h["CreatedBy"].replace("\t", " ")
        rows.append({
            "ID": h["Id"] if no_trunc or h["Id"] == "<missing>" else fmt.short(h["Id"]),
            "CreatedSince": ago(h["Created"]) if human else
            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h["Created"])),
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h["Created"])),
            "CreatedBy": created_by if no_trunc else fmt.ellipsis(created_by, 45),
            "Size": size(h["Size"], 3) if human else str(h["Size"]), "Comment": h.get("Comment", ""),
            "Tags": ", ".join(h.get("Tags") or [])})
    fmt.render(rows, format_, "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}", "ID", quiet,
               headers={"ID": "IMAGE", "CreatedBy": "CREATED BY"})


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_app
def prune(app: App, all_: bool, force: bool) -> None:
    """Remove unused images."""
    from engine.api.humanize import size

    if not force and not click.confirm("WARNING! This will remove all dangling images.\nAre you sure you want to "
                                       "continue?", default=False):
        return
    result = app.client.prune_images(all_)
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        click.echo("Deleted Images:")
        for item in deleted:
            for k, v in item.items():
                click.echo(f"{k.lower()}: {v}")
        click.echo()
    click.echo(f"Total reclaimed space: {size(result.get('SpaceReclaimed', 0))}")


@click.command()
@click.option("--binary", type=click.Path(dir_okay=False), help="The static busybox binary (default: found on the host)")
@click.option("-t", "--tag", "reference", default="busybox:latest", help="Name the image")
@click.argument("what", type=click.Choice(["busybox"]))
@pass_app
def bootstrap(app: App, binary: str | None, reference: str, what: str) -> None:
    """Create a first image offline from the host's static busybox (no registry needed)."""
    from engine.images.busybox import find_busybox, rootfs_tar_bytes

    path = binary or find_busybox()
    if path is None:
        fail("no busybox binary found on this host (install busybox-static, or give --binary)")
    try:
        with open(path, "rb") as fh:
            data = rootfs_tar_bytes(fh.read())
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    image_id = _print_progress(app.client.import_image(data, reference, ['CMD ["sh"]'],
                                                       f"bootstrapped from {path}"), quiet=True)
    click.echo(f"{reference} {image_id}")


@click.command()
@click.option("-o", "--output", help="Write to a file, instead of STDOUT")
@click.argument("images", nargs=-1, required=True)
@pass_app
def save(app: App, output: str | None, images: tuple[str, ...]) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if not output and sys.stdout.isatty():
        fail("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    resp = app.client.save(list(images))
    if not output or output == "-":
        out = sys.stdout.buffer
        for data in resp.chunks():
            out.write(data)
        out.flush()
        return
    write_file(output, resp.chunks())


def write_file(path: str, chunks: Any) -> None:
    """Write ``chunks`` to ``path`` through a temp file renamed at the end (as docker's
    ``CopyToFile``): a failed transfer never leaves half a file under the name."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".docker_temp_", dir=directory)
    except OSError as e:
        fail(f"failed to save to {path}: {e.strerror}", 1)
    try:
        with os.fdopen(fd, "wb") as fh:
            for data in chunks:
                fh.write(data)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@click.command()
@click.option("-i", "--input", "input_", help="Read from tar archive file, instead of STDIN")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output")
@pass_app
def load(app: App, input_: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN (docker-archive or OCI layout, compressed or not)."""
    from engine.cli import progress

    if not input_ and sys.stdin.isatty():
        fail("requested load from stdin, but stdin is empty", 1)
    try:
        fh = open(input_, "rb") if input_ else sys.stdin.buffer  # noqa: SIM115
    except OSError as e:
        fail(f"open {input_}: {e.strerror}", 1)
    try:
        progress.render(app.client.load(fh, quiet=quiet))
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def image_group() -> click.Group:
    group = click.Group("image", help="Manage images")
    for cmd in (images, import_, rmi, image_inspect, history, prune, bootstrap, save, load):
        group.add_command(cmd)
    group.add_command(tag, "tag")
    group.add_command(images, "list")
    return group
