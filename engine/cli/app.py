"""The CLI's shared state: which daemon to talk to, the client, output helpers, exit codes.

Exit codes follow docker: 125 when the CLI or the daemon fails, 126 when the container command
cannot be invoked, 127 when it is not found, otherwise the container's own exit code.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import click
import click.parser

if TYPE_CHECKING:
    from engine.client import Client

EXIT_DAEMON = 125

_skip_finalization = False


def skip_finalization() -> None:
    """Declare that this command leaves no buffered file and no non-daemon thread behind, so
    that :func:`end_process` may end the process without the interpreter's finalization (module
    teardown and a last garbage collection: ~10 ms of a ~70 ms ``run --rm``)."""
    global _skip_finalization
    _skip_finalization = True


def end_process(code: int) -> None:
    """End the process with ``code``: with ``os._exit`` after running the atexit handlers and
    flushing stdout/stderr if the command called :func:`skip_finalization`; otherwise return (the
    caller exits normally)."""
    if not _skip_finalization:
        return
    import atexit

    atexit._run_exitfuncs()  # first: a handler may still write to stdout
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say to it
            pass
    os._exit(code)


class Exit(Exception):
    """Leave the CLI with ``code`` (after printing ``message`` to stderr, if any)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message


class App:
    def __init__(self, host: str | None, tls: bool, tlsverify: bool, tlscacert: str | None, tlscert: str | None,
                 tlskey: str | None, debug: bool = False) -> None:
        self.explicit_host = host or os.environ.get("WHARFIE_HOST") or os.environ.get("DOCKER_HOST") or None
        self.tls_opts = (tls or tlsverify or bool(os.environ.get("DOCKER_TLS_VERIFY")), tlsverify, tlscacert,
                         tlscert, tlskey)
        self.debug = debug
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _tls(self) -> Any:
        use, verify, ca, cert, key = self.tls_opts
        if not use:
            return None
        from engine.client import TLSConfig

        certs = os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
        return TLSConfig(cacert=ca or _maybe(certs, "ca.pem"), cert=cert or _maybe(certs, "cert.pem"),
                         key=key or _maybe(certs, "key.pem"), verify=verify or bool(os.environ.get("DOCKER_TLS_VERIFY")))

    def _connect(self) -> Client:
        from engine.client import Client

        if self.explicit_host:
            return Client(self.explicit_host, self._tls())
        from engine.cli import autostart

        return Client(autostart.ensure_daemon())


def _maybe(d: str, name: str) -> str | None:
    p = os.path.join(d, name)
    return p if os.path.exists(p) else None


pass_app = click.make_pass_decorator(App)


def fail(message: str, code: int = EXIT_DAEMON) -> NoReturn:
    raise Exit(code, message)


def err(message: str) -> None:
    click.echo(message, err=True)


def engine_error_message(e: Exception) -> str:
    from engine import errors

    if isinstance(e, errors.Unavailable) and "Cannot connect" in str(e):
        return str(e)
    return f"Error response from daemon: {e}"


def parse_filters(items: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            fail(f"invalid argument \"{item}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)")
        out.setdefault(key.strip().lower() if key.strip().lower() in ("status", "name", "id") else key.strip(),
                       []).append(value)
    return out


def write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# click's option parser: private since click 8.2 (``_OptionParser``), public before (8.1)
_ClickParser: Any = vars(click.parser).get("_OptionParser") or vars(click.parser).get("OptionParser")


class _ShortOptsParser(_ClickParser):  # type: ignore[misc]
    """click's parser, minus a detour on every short option (``-H``, ``-it``, ``-e``): click
    first looks a single-dash token up as a long option, and that miss builds a ``NoSuchOption``
    whose "did you mean" list runs ``difflib`` (imported then: ~0.6 ms of a CLI start), only to
    catch it and parse the token as short options. A single-dash token that is no long option
    goes straight to that fallback here (still as ``NoSuchOption``, which click catches). Errors
    seen by users are unchanged: a misspelt ``--long`` option still gets its suggestions."""

    def _match_long_opt(self, opt: str, explicit_value: str | None, state: Any) -> None:
        if opt[:2] not in self._opt_prefixes and opt not in self._long_opt:
            raise click.NoSuchOption(opt, ctx=self.ctx)
        super()._match_long_opt(opt, explicit_value, state)


class ShortOptsFirst(click.Command):
    """A command (mixed in before ``click.Group`` for a group) parsed by :class:`_ShortOptsParser`."""

    def make_parser(self, ctx: click.Context) -> Any:
        parser = _ShortOptsParser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser


class DockerBoolFlags(click.Command):
    """A command whose ``--flag/--no-flag`` booleans also take docker's ``--flag=false`` form
    (``commit --pause=false``, ``-p=false``); ``bool_flags`` maps each spelling to its option."""

    bool_flags: ClassVar[dict[str, tuple[str, str]]] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out = []
        for a in args:
            name, eq, value = a.partition("=")
            if eq and name in self.bool_flags:
                on, off = self.bool_flags[name]
                if value.lower() in ("true", "1", "t"):
                    a = on
                elif value.lower() in ("false", "0", "f"):
                    a = off
                else:
                    fail(f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: parsing '
                         f'"{value}": invalid syntax')
            out.append(a)
        return super().parse_args(ctx, out)
