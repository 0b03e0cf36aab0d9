"""Commands and file transfer over the generated ssh-config: fabric for commands, rsync for trees."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from vm.machine import HOST_ALIAS, info

# What never goes into the VM: the host's venv and caches (the guest makes its own), VM artefacts.
RSYNC_EXCLUDES = [".git/", ".venv/", "__pycache__/", ".mypy_cache/", ".ruff_cache/", ".pytest_cache/",
                  ".hypothesis/", ".benchmarks/", "*.egg-info/", ".vagrant/", "/vm/.cache/",
                  "/vm/results/", "build/", "dist/"]


def connection(ssh_config: Path, timeout: float = 10):  # type: ignore[no-untyped-def]
    """A fabric Connection to the VM as the ``vagrant`` user (sudo without password)."""
    from fabric import Config, Connection

    cfg = Config(runtime_ssh_path=str(ssh_config))
    return Connection(HOST_ALIAS, config=cfg, connect_timeout=timeout,
                      connect_kwargs={"banner_timeout": timeout, "auth_timeout": timeout})


def wait_ssh(ssh_config: Path, deadline: float, alive) -> float:  # type: ignore[no-untyped-def]
    """Poll until a command runs over SSH; ``alive()`` False aborts early (the VM died).

    Returns:
        Seconds waited.

    Raises:
        TimeoutError: no SSH before ``deadline`` (time.monotonic()) or the VM is gone.
    """
    t0 = time.monotonic()
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            raise TimeoutError("the VM exited while waiting for SSH")
        try:
            with connection(ssh_config, timeout=5) as c:
                c.run("true", hide=True, in_stream=False)
            return time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = f"{type(e).__name__}: {e}"
            time.sleep(2)
    raise TimeoutError(f"no SSH after {time.monotonic() - t0:.0f} s (last error: {last})")


def sudo(ssh_config: Path, command: str, timeout: float | None = None, hide: bool = False,
         warn: bool = False) -> int:
    """Run ``command`` as root in the VM, streaming its output; returns the exit status."""
    with connection(ssh_config) as c:
        r = c.run(f"sudo -n -H bash -c {_quote(command)}", hide=hide, warn=warn, pty=False,
                  in_stream=False, timeout=timeout)
        return int(r.exited)


def push(ssh_config: Path, src: Path, dest: str, excludes: list[str] | None = None,
         delete: bool = True) -> None:
    """rsync ``src/`` to ``dest/`` in the VM, as root (``--rsync-path "sudo rsync"``)."""
    cmd = ["rsync", "-a", "--mkpath", "-e", f"ssh -F {ssh_config}", "--rsync-path", "sudo rsync"]
    cmd += ["--delete"] if delete else []
    for pattern in excludes or []:
        cmd += ["--exclude", pattern]
    subprocess.run([*cmd, f"{src}/", f"{HOST_ALIAS}:{dest}/"], check=True)


def pull(ssh_config: Path, src: str, dest: Path) -> bool:
    """rsync ``src/`` from the VM into ``dest/``; False (and a note) when it is missing."""
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["rsync", "-a", "-e", f"ssh -F {ssh_config}", "--rsync-path", "sudo rsync",
                        f"{HOST_ALIAS}:{src}/", f"{dest}/"], check=False)
    if r.returncode != 0:
        info(f"could not fetch {src} (rsync exit {r.returncode})")
    return r.returncode == 0


def ssh_status(ssh_config: Path, command: str, timeout: float) -> int:
    """Exit status of ``command`` (as the ssh user) run by the OpenSSH client, never hanging:
    killed after ``timeout`` seconds (124 then; 255 when SSH failed). For a VM that may reboot
    under us (kexec): a paramiko session whose peer vanished behind QEMU's user-mode NAT waits
    forever, since nothing resets the forwarded loopback connection."""
    cmd = ["ssh", "-F", str(ssh_config), "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
           HOST_ALIAS, command]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        return 124


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
