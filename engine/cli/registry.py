"""Registry commands: pull, push, login, logout, and ``registry serve``.

Credentials live in Docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``) and go to the
daemon per request in ``X-Registry-Auth``, as with the docker CLI. Progress: one line per layer
redrawn in place on a terminal (docker's ``jsonmessage`` display), plain status lines otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from engine.cli.app import App, engine_error_message, fail, pass_app


def _config_path() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _auth_header(reference: str) -> str | None:
    from engine import errors
    from engine.registry import credentials, endpoints

    try:
        ref = endpoints.parse_reference(reference)
    except errors.InvalidArgument:
        return None  # the daemon says what is wrong with it
    key = endpoints.auth_key(ref.domain)
    creds = credentials.lookup(_config_path(), key)
    return credentials.encode_registry_auth(creds, key) if creds else None


class Display:
    """Docker's progress display: a line per ``id`` (redrawn in place on a tty)."""

    def __init__(self, out: Any = None, tty: bool | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.quiet = quiet
        self.lines: list[str] = []  # ids, in the order they appeared

    def show(self, doc: dict[str, Any]) -> None:
        if "error" in doc or "errorDetail" in doc:
            detail = doc.get("errorDetail") or {}
            fail(engine_error_message(Exception(doc.get("error") or detail.get("message", "unknown error"))))
        if self.quiet:
            return
        status, ident = doc.get("status", ""), doc.get("id")
        if not status:
            return
        detail = doc.get("progressDetail") or {}
        text = f"{ident}: {status}" if ident else status
        if detail.get("total") or detail.get("current"):
            if not self.tty:
                return  # byte counters are for terminals
            text += " " + str(doc.get("progress", ""))
        if not ident or not self.tty:
            self.out.write(text + "\n")
            self.out.flush()
            return
        if ident not in self.lines:
            self.lines.append(ident)
            self.out.write(text + "\n")
        else:
            up = len(self.lines) - self.lines.index(ident)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B")
        self.out.flush()


def pull_image(app: App, image: str, platform: str | None = None, quiet: bool = False,
               err_stream: bool = False) -> None:
    """Pull ``image`` through the daemon, showing progress (on stderr when ``err_stream``)."""
    from engine.refs import try_parse

    out = sys.stderr if err_stream else sys.stdout
    d = Display(out, quiet=quiet)
    ref = try_parse(image)
    name, tag = image, None
    if ref is not None and ref.digest is None:
        name, tag = ref.repository, ref.tag
    for doc in app.client.pull(name, tag, platform, _auth_header(image)):
        d.show(doc)
    if ref is not None and not err_stream and not quiet or quiet and ref is not None:
        click.echo(ref.full)


@click.command()
@click.option("--platform", help="Set platform if server is multi-platform capable")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.option("-a", "--all-tags", is_flag=True, hidden=True)
@click.argument("name")
@pass_app
def pull(app: App, platform: str | None, quiet: bool, all_tags: bool, name: str) -> None:
    """Download an image from a registry."""
    if all_tags:
        fail("--all-tags is not supported")
    pull_image(app, name, platform, quiet)


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.argument("name")
@pass_app
def push(app: App, quiet: bool, name: str) -> None:
    """Upload an image to a registry."""
    from engine.refs import try_parse

    ref = try_parse(name)
    repo, tag = (ref.repository, ref.tag) if ref is not None and ref.digest is None else (name, None)
    d = Display(quiet=quiet)
    for doc in app.client.push(repo, tag, _auth_header(name)):
        d.show(doc)


@click.command()
@click.option("-u", "--username", help="Username")
@click.option("-p", "--password", help="Password")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin")
@click.argument("server", required=False)
@pass_app
def login(app: App, username: str | None, password: str | None, password_stdin: bool, server: str | None) -> None:
    """Log in to a registry (default: Docker Hub); credentials are kept in config.json."""
    from engine.registry import credentials, endpoints

    if password and password_stdin:
        fail("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            fail("Must provide --username with --password-stdin")
        password = sys.stdin.readline().rstrip("\r\n")
    key = endpoints.auth_key(server or "")
    if password and not password_stdin:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    if not username:
        username = click.prompt("Username", err=True)
    if not password:
        password = click.prompt("Password", hide_input=True, err=True)
    status = app.client.login(username or "", password or "", key)
    credentials.store(_config_path(), key, credentials.Credentials(username or "", password or ""))
    click.echo(status.get("Status", "Login Succeeded"))


@click.command()
@click.argument("server", required=False)
def logout(server: str | None) -> None:
    """Log out from a registry (forget its credentials)."""
    from engine.registry import credentials, endpoints

    key = endpoints.auth_key(server or "")
    if credentials.erase(_config_path(), key):
        click.echo(f"Removing login credentials for {key}")
    else:
        click.echo(f"Not logged in to {key}")


def registry_group() -> click.Group:
    group = click.Group("registry", help="Run a private registry")

    @group.command("serve")
    @click.option("--addr", default="127.0.0.1:5000", show_default=True, help="host:port to listen on")
    @click.option("--root", required=True, type=click.Path(file_okay=False), help="storage directory")
    @click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="TLS certificate (PEM)")
    @click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="TLS key (PEM)")
    @click.option("--htpasswd", type=click.Path(dir_okay=False, exists=True),
                  help="require basic auth against this htpasswd file (bcrypt)")
    @click.option("--token-auth", is_flag=True,
                  help="token auth instead of basic: /token issues bearer tokens to the --htpasswd users")
    @click.option("--token-realm", default=None, help="token endpoint URL to advertise (default: this server's /token)")
    def serve(addr: str, root: str, tls_cert: str | None, tls_key: str | None, htpasswd: str | None,
              token_auth: bool, token_realm: str | None) -> None:
        """Serve an OCI distribution registry (docker push/pull, skopeo…) from ROOT."""
        from engine.registry.server.app import serve as _serve

        _serve(addr, root, tls_cert, tls_key, htpasswd, token_auth=token_auth, token_realm=token_realm)

    return group
