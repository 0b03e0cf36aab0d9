"""``wharfie run``, the hot path: create, attach and wait (both in flight at once), start, copy
the output, exit with the container's code. Its own module so that ``run`` builds only its own
click options at start (``create`` has the same fifty); shared with ``create``/``start`` in
``engine.cli.containers``."""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.cli.app import (
    App,
    Exit,
    ShortOptsFirst,
    engine_error_message,
    err,
    fail,
    pass_app,
    skip_finalization,
)
from engine.cli.runopts import build_config, create_options

CONTEXT = {"ignore_unknown_options": False, "allow_interspersed_args": False}


def create_container(app: App, opts: dict[str, Any], image: str, command: tuple[str, ...]) -> str:
    from engine import errors

    config = build_config(opts, image, command)
    try:
        return str(app.client.create(config, opts["name"])["Id"])
    except errors.NotFound as e:
        if "image" not in str(e).lower():
            raise
        err(f"Unable to find image '{image}' locally")
        from engine.cli.registry import pull_image

        pull_image(app, image, opts.get("platform"), err_stream=True)
        return str(app.client.create(config, opts["name"])["Id"])


def start_error(e: Exception) -> Exit:
    text = str(e)
    code = 127 if ("not found" in text or "no such file" in text) else 126 if "permission denied" in text else 125
    return Exit(code, engine_error_message(e))


@click.command(cls=ShortOptsFirst, context_settings=CONTEXT)
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy received signals to the process")
@create_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def run(app: App, /, image: str, command: tuple[str, ...], detach: bool, detach_keys: str | None, sig_proxy: bool,
        **opts: Any) -> None:
    """Create and run a new container from an image."""
    from engine import errors
    from engine.cli import term

    skip_finalization()  # only sockets and stdio below; the stdin/signal threads are daemons
    if detach and opts["auto_remove"] and opts["restart"] not in ("no", ""):
        fail("Conflicting options: --restart and --rm")
    tty, stdin = opts["tty"], opts["interactive"]
    if not detach and tty and stdin and not sys.stdin.isatty():
        fail("the input device is not a TTY")  # before create, as docker: no container left behind
    cid = create_container(app, opts, image, command)
    c = app.client
    if detach:
        try:
            c.start(cid)
        except errors.EngineError as e:
            raise start_error(e) from None
        click.echo(cid)
        return
    hj, waiter = c.attach_and_wait(cid, stdin=stdin, detach_keys=detach_keys,
                                   condition="removed" if opts["auto_remove"] else "next-exit")
    try:
        c.start(cid)
    except errors.EngineError as e:
        hj.close()
        waiter.close()
        if opts["auto_remove"]:
            with _quiet():
                c.remove(cid, force=True)
        raise start_error(e) from None
    with term.raw_terminal(tty and stdin), term.follow_resize(lambda r, w: c.resize(cid, r, w), tty), \
            term.proxy_signals(lambda s: c.kill(cid, s), sig_proxy and not tty):
        term.pump(hj, stdin, tty)
    if stdin and _detached(app, cid, waiter):
        return  # detached with the detach keys: the container keeps running
    result = waiter.json() or {}
    code = int(result.get("StatusCode", 0))
    if code:
        raise Exit(code)


def container_state(app: App, cid: str) -> dict[str, Any] | None:
    from engine import errors

    try:
        return app.client.container(cid)["State"]  # type: ignore[no-any-return]
    except errors.NotFound:
        return None


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _detached(app: App, cid: str, waiter: Any) -> bool:
    """After the attach stream ended: did the user detach (the container still runs), or did
    the container exit (the daemon may take a moment to record it — give it one second)?"""
    state = container_state(app, cid)
    if state is None or not state.get("Running"):
        return False
    waiter.sock.settimeout(1.0)
    try:
        waiter.raw.peek(1)
        waiter.sock.settimeout(None)
        return False  # the wait answered: it exited
    except TimeoutError:
        pass
    waiter.close()
    return True
