"""``wharfied``: the long-running daemon serving the Docker Engine API.

Listens on UNIX sockets (mode 0660, group ``wharfie`` when it exists) and on TCP only with
TLS (``--tlsverify``: mutual authentication against ``--tlscacert``). Plain TCP gives anyone who
can reach the port root on the host, so it is refused unless ``--insecure-tcp`` forces it.
SIGTERM/SIGINT shut the daemon down cleanly; containers keep running (live-restore).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any

from engine.api import paths

log = logging.getLogger("wharfied")

CONFIG_KEYS = {"hosts": "hosts", "backend": "backend", "data-root": "root", "root": "root",
               "exec-root": "exec_root", "pidfile": "pidfile", "log-file": "log_file", "group": "group",
               "tlsverify": "tlsverify", "tlscacert": "tlscacert", "tlscert": "tlscert", "tlskey": "tlskey",
               "log-level": "log_level", "insecure-tcp": "insecure_tcp",
               "insecure-registries": "insecure_registries", "registry-mirrors": "registry_mirrors",
               "max-concurrent-downloads": "max_concurrent_downloads",
               "max-concurrent-uploads": "max_concurrent_uploads"}


class DaemonError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wharfied", description="The wharfie daemon: serves the Docker Engine API.")
    p.add_argument("-H", "--host", dest="hosts", action="append", default=None,
                   help="daemon socket(s) to listen on: unix:///path or tcp://host:port (repeatable; "
                        f"default {paths.default_host()})")
    p.add_argument("--backend", choices=["linux", "sim"], default=None,
                   help="kernel backend (default: linux when root on Linux, else sim)")
    p.add_argument("--root", "--data-root", dest="root", default=None, help="persistent state directory")
    p.add_argument("--exec-root", default=None, help="runtime state directory")
    p.add_argument("--config-file", default=None, help="JSON daemon configuration (flags win)")
    p.add_argument("-p", "--pidfile", default=None, help="write the daemon's pid here")
    p.add_argument("--log-file", default=None, help="log here instead of stderr")
    p.add_argument("-l", "--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument("-G", "--group", default=None, help="group owning the UNIX socket (default: wharfie)")
    p.add_argument("--tlsverify", action="store_true", default=None, help="require TLS with client certificates")
    p.add_argument("--tlscacert", default=None, help="CA that signs trusted client certificates")
    p.add_argument("--tlscert", default=None, help="server certificate")
    p.add_argument("--tlskey", default=None, help="server key")
    p.add_argument("--insecure-tcp", action="store_true", default=None,
                   help="DANGEROUS: allow plain TCP without TLS (anyone who can connect controls the host)")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append", default=None,
                   help="registry (host:port or CIDR) reached without verified TLS (repeatable; "
                        "127.0.0.0/8 always is)")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append", default=None,
                   help="Docker Hub mirror URL tried first for pulls (repeatable)")
    p.add_argument("--max-concurrent-downloads", type=int, default=None, help="layers per pull (default 3)")
    p.add_argument("--max-concurrent-uploads", type=int, default=None, help="layers per push (default 5)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def load_options(argv: list[str] | None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.config_file:
        try:
            with open(args.config_file) as fh:
                cfg = json.load(fh)
        except (OSError, ValueError) as e:
            raise DaemonError(f"cannot read config file {args.config_file}: {e}") from None
        if not isinstance(cfg, dict):
            raise DaemonError(f"config file {args.config_file}: expected a JSON object")
        for key, value in cfg.items():
            if key not in CONFIG_KEYS:
                raise DaemonError(f"config file {args.config_file}: unknown option {key!r}")
            if getattr(args, CONFIG_KEYS[key]) is None:
                setattr(args, CONFIG_KEYS[key], value)
    if args.backend is None:
        from engine.bootstrap import best_backend

        args.backend = best_backend()
    args.root = args.root or paths.default_root()
    args.exec_root = args.exec_root or paths.default_exec_root()
    args.hosts = args.hosts or ["unix://" + os.path.join(args.exec_root, "wharfie.sock")]
    args.group = args.group or "wharfie"
    return args


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    if not (args.tlscert and args.tlskey):
        raise DaemonError("TCP needs TLS: give --tlscert and --tlskey (and --tlsverify --tlscacert for "
                          "client authentication), or --insecure-tcp to force plain TCP")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.tlscert, args.tlskey)
    if args.tlsverify:
        if not args.tlscacert:
            raise DaemonError("--tlsverify needs --tlscacert")
        ctx.load_verify_locations(args.tlscacert)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _claim_socket(path: str) -> None:
    """Remove a stale socket file; refuse if another daemon answers on it."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise DaemonError(f"another daemon is listening on {path}")


def _secure_socket(path: str, group: str) -> None:
    os.chmod(path, 0o660)
    with contextlib.suppress(ImportError, KeyError, PermissionError):
        import grp

        os.chown(path, -1, grp.getgrnam(group).gr_gid)


def _write_pidfile(path: str) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        with open(path) as fh:
            old = int(fh.read().strip() or 0)
        if old and old != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(old, 0)
                raise DaemonError(f"pid file {path} names a running process ({old}): is wharfied running?")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(f"{os.getpid()}\n")


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from engine.api.app import make_app
    from engine.bootstrap import make_engine

    sites_spec: list[tuple[str, Any]] = []
    for host in args.hosts:
        if host.startswith("unix://"):
            path = os.path.abspath(host[len("unix://"):])
            _claim_socket(path)  # before touching the state: a second daemon must not share it
            sites_spec.append(("unix", path))
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://"):].rstrip("/")
            h, _, port = hostport.rpartition(":")
            if not port.isdigit():
                raise DaemonError(f"invalid TCP address {host!r}: expected tcp://host:port")
            if args.insecure_tcp and not args.tlscert:
                log.warning("!!! LISTENING ON PLAIN TCP %s WITHOUT TLS: anyone who can connect has root "
                            "on this host. Use --tlsverify. !!!", hostport)
                ctx = None
            else:
                ctx = tls_context(args)
            sites_spec.append(("tcp", (h.strip("[]") or "127.0.0.1", int(port), ctx)))
        else:
            raise DaemonError(f"unsupported host {host!r}: use unix:///path or tcp://host:port")
    engine = make_engine(args.backend, args.root, args.exec_root, realtime=True, registry=_registry_options(args))
    await engine.start()
    runner = web.AppRunner(make_app(engine), access_log=None, handle_signals=False, shutdown_timeout=2.0,
                            handler_cancellation=True)
    await runner.setup()
    sockets = []
    try:
        for kind, where in sites_spec:
            if kind == "unix":
                await web.UnixSite(runner, where).start()
                _secure_socket(where, args.group)
                sockets.append(where)
            else:
                await web.TCPSite(runner, where[0], where[1], ssl_context=where[2]).start()
            log.info("listening on %s", kind + "://" + (where if kind == "unix" else f"{where[0]}:{where[1]}"))
        if args.pidfile:
            _write_pidfile(args.pidfile)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("wharfied ready (backend %s, root %s)", args.backend, args.root)
        await stop.wait()
        log.info("shutting down (containers keep running)")
    finally:
        await runner.cleanup()
        await engine.close()
        for path in sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if args.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(args.pidfile)


def _registry_options(args: argparse.Namespace) -> Any:
    """``--insecure-registry``, ``--registry-mirror``, ``--max-concurrent-*`` (flags or
    daemon.json) as ``RegistryOptions``."""
    from engine.registry.options import RegistryOptions

    kw: dict[str, Any] = {}
    if getattr(args, "insecure_registries", None):
        kw["insecure_registries"] = tuple(args.insecure_registries)
    if getattr(args, "registry_mirrors", None):
        kw["mirrors"] = tuple(args.registry_mirrors)
    for key in ("max_concurrent_downloads", "max_concurrent_uploads"):
        if getattr(args, key, None):
            kw[key] = int(getattr(args, key))
    return RegistryOptions(**kw)


def main(argv: list[str] | None = None) -> None:
    try:
        args = load_options(argv)
    except DaemonError as e:
        print(f"wharfied: {e}", file=sys.stderr)
        sys.exit(1)
    if args.version:
        from engine import __version__

        print(f"wharfied version {__version__}")
        return
    handlers: list[logging.Handler] = []
    if args.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(args.log_file))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=(args.log_level or "info").upper(), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except DaemonError as e:
        log.error("%s", e)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

