"""Default locations of the daemon's state, runtime directory and socket.

Shared by ``wharfied`` and the CLI (which looks for the daemon there, and starts one there when
nobody answers). Dependency-free so the CLI stays quick to start.

* root: ``/var/lib/wharfie``, ``/run/wharfie``, ``/run/wharfie/wharfie.sock``;
* others: ``$XDG_DATA_HOME/wharfie`` (``~/.local/share/wharfie``) for state, and
  ``$XDG_RUNTIME_DIR/wharfie`` (or ``<state>/run``) for the runtime directory and the socket.
"""

from __future__ import annotations

import os


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_root() -> str:
    if is_root():
        return "/var/lib/wharfie"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "wharfie")


def default_exec_root() -> str:
    if is_root():
        return "/run/wharfie"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "wharfie")
    return os.path.join(default_root(), "run")


def default_socket() -> str:
    return os.path.join(default_exec_root(), "wharfie.sock")


def default_host() -> str:
    return "unix://" + default_socket()
