"""What both backends provide, and the saved state that lets ``vm ssh``/``vm destroy`` find a VM."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from vm.box import CACHE

RUN_DIR = CACHE / "run"
STATE = RUN_DIR / "state.json"
HOST_ALIAS = "wharfie-vm"   # the Host name in every generated ssh-config


class BootError(RuntimeError):
    """The VM did not come up; the message ends with the serial console's tail."""


@dataclass(slots=True)
class MachineState:
    """Saved as ``vm/.cache/run/state.json`` while a VM exists."""

    backend: str
    cgroup: str
    ssh_config: str
    console_log: str
    pid: int = 0
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> MachineState | None:
        try:
            return cls(**json.loads(STATE.read_text()))
        except FileNotFoundError:
            return None


class Machine(Protocol):
    """A VM reachable over SSH on 127.0.0.1 and nothing else."""

    backend: str

    def up(self) -> None:
        """Boot and wait for SSH. Raises BootError with the console log's tail."""

    def ssh_config(self) -> Path:
        """An OpenSSH client config whose ``Host wharfie-vm`` entry reaches the VM."""

    def console(self) -> str:
        """The serial console output so far (empty when unavailable)."""

    def destroy(self) -> None:
        """Power off and delete the VM and everything it wrote outside the box cache."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the caller retries on a race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_ssh_config(path: Path, port: int, key: Path, user: str = "vagrant") -> Path:
    """Write the loopback-only ssh-config the harness, fabric, rsync and testinfra share."""
    path.write_text(
        f"Host {HOST_ALIAS}\n"
        f"  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  PasswordAuthentication no\n  LogLevel ERROR\n"
        "  ServerAliveInterval 15\n  ServerAliveCountMax 8\n")
    return path


def assert_loopback(ssh_config: Path) -> None:
    """The network rule: the harness talks to 127.0.0.1 only, whatever a backend reported."""
    hosts = re.findall(r"^\s*HostName\s+(\S+)", ssh_config.read_text(), re.M | re.I)
    if not hosts or any(h not in ("127.0.0.1", "localhost") for h in hosts):
        raise BootError(f"{ssh_config}: SSH must go to 127.0.0.1, got {hosts}")


def console_tail(text: str, lines: int = 150) -> str:
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- serial console (last {lines} lines) ---\n{tail}\n--- end of console ---"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def info(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)
