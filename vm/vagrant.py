"""Vagrant backend: python-vagrant driving vagrant-libvirt (driver ``qemu``) with the root Vagrantfile.

Differences from a stock vagrant-libvirt set-up, all for the loopback-only network rule:

* ``VM_SSH_PORT`` makes the Vagrantfile skip the libvirt NAT network (192.168.121.0/24) and add a
  QEMU user-mode NIC whose only way in is ``hostfwd`` on 127.0.0.1; ``config.ssh.host/port``
  point Vagrant (and ``vagrant ssh-config``) there. vagrant-libvirt still wants an address for
  the domain: the guest agent reports the link-local address of a UDP-tunnel NIC whose both ends
  are loopback ports.
* libvirtd and virtlogd are started by hand when not running (these hosts have no systemd) and
  stopped again when the harness started them.
* ``VAGRANT_HOME``, the ``.vagrant`` dot-dir and the libvirt storage pool live in vm/.cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from vm.box import CACHE, REPO, Box
from vm.machine import (HOST_ALIAS, RUN_DIR, BootError, MachineState, console_tail, free_port, info,
                        pid_alive)

VAGRANT_HOME = CACHE / "vagrant.d"
POOL = "wharfie"
POOL_DIR = CACHE / "libvirt-pool"
BOX_NAME = "wharfie-bookworm"
# libvirt's qemu (user libvirt-qemu) writes the console; a directory it can write to
CONSOLE = Path("/var/log/libvirt/qemu/wharfie-vm-console.log")
DAEMONS = {"virtlogd": "/run/virtlogd.pid", "libvirtd": "/run/libvirtd.pid"}


class VagrantMachine:
    backend = "vagrant"

    def __init__(self, box: Box | None, cgroup: str = "v2", state: MachineState | None = None) -> None:
        self.box = box
        self.cgroup = cgroup
        self.state = state

    @classmethod
    def from_state(cls, state: MachineState) -> VagrantMachine:
        return cls(None, cgroup=state.cgroup, state=state)

    def _env(self) -> dict[str, str]:
        assert self.state is not None
        return dict(os.environ, VAGRANT_HOME=str(VAGRANT_HOME), VAGRANT_DEFAULT_PROVIDER="libvirt",
                    VAGRANT_DOTFILE_PATH=str(RUN_DIR / ".vagrant"), VAGRANT_CHECKPOINT_DISABLE="1",
                    CGROUP=self.cgroup, VM_SSH_PORT=str(self.state.port),
                    VM_TUNNEL_PORT=self.state.extra["tunnel_port"],
                    VM_TUNNEL_LOCAL_PORT=self.state.extra["tunnel_local_port"],
                    VM_STORAGE_POOL=POOL, VM_CONSOLE_LOG=str(CONSOLE))

    def _vagrant(self):  # type: ignore[no-untyped-def]
        import vagrant

        return vagrant.Vagrant(root=str(REPO), env=self._env(), quiet_stdout=True, quiet_stderr=False)

    def up(self) -> None:
        assert self.box is not None
        if shutil.which("vagrant") is None or shutil.which("libvirtd") is None:
            raise BootError("the Vagrant backend needs vm/install-host.sh --vagrant")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        started = _start_daemons()
        _ensure_pool()
        port = free_port()
        self.state = MachineState("vagrant", self.cgroup, str(RUN_DIR / "ssh-config"), str(CONSOLE),
                                  port=port, extra={"started": ",".join(started),
                                                    "tunnel_port": str(free_port()),
                                                    "tunnel_local_port": str(free_port())})
        self.state.save()
        self._ensure_box_added()
        CONSOLE.unlink(missing_ok=True)
        info(f"vagrant up (libvirt, cgroup {self.cgroup}), ssh on 127.0.0.1:{port}")
        t0 = time.monotonic()
        try:
            self._vagrant().up(provider="libvirt", no_provision=True)
        except subprocess.CalledProcessError as e:
            raise BootError(f"vagrant up failed (exit {e.returncode})\n"
                            + console_tail(self.console())) from None
        text = self._vagrant().ssh_config()
        text = re.sub(r"^Host \S+", f"Host {HOST_ALIAS}", text, flags=re.M)
        Path(self.state.ssh_config).write_text(text)
        info(f"vagrant up took {time.monotonic() - t0:.1f} s")

    def _ensure_box_added(self) -> None:
        assert self.box is not None
        marker = VAGRANT_HOME / "wharfie-box"
        build_id = (self.box.path / "build-id").read_text()
        if marker.exists() and marker.read_text() == build_id:
            return
        info(f"vagrant box add {self.box.vagrant_box}")
        v = self._vagrant()
        v.box_add(BOX_NAME, str(self.box.vagrant_box), provider="libvirt", force=True)
        # a stale base volume would be reused: vagrant-libvirt names it by box, not by content
        vols = subprocess.run(["virsh", "-c", "qemu:///system", "vol-list", "--pool", POOL],
                              capture_output=True, text=True).stdout
        for vol in re.findall(rf"^\s*({BOX_NAME}_vagrant_box_image\S*)", vols, re.M):
            subprocess.run(["virsh", "-c", "qemu:///system", "vol-delete", "--pool", POOL, vol],
                           capture_output=True)
        marker.write_text(build_id)

    def ssh_config(self) -> Path:
        assert self.state is not None
        return Path(self.state.ssh_config)

    def console(self) -> str:
        try:
            return CONSOLE.read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.state is None:
            return
        try:
            self._vagrant().destroy()
        except Exception as e:  # noqa: BLE001 - still stop the daemons we started
            info(f"vagrant destroy: {e}")
        CONSOLE.unlink(missing_ok=True)
        Path("/var/log/libvirt/qemu/main_default.log").unlink(missing_ok=True)
        Path("/var/log/libvirt/qemu/wharfie-vm-default.log").unlink(missing_ok=True)
        for name in filter(None, self.state.extra.get("started", "").split(",")):
            _stop_daemon(name)


def _start_daemons() -> list[str]:
    started = []
    for name, pidfile in DAEMONS.items():
        if _running(name):
            continue
        # no --listen: it wants TLS certificates; the UNIX socket is all Vagrant uses
        subprocess.run([f"/usr/sbin/{name}", "-d"], check=True)
        started.append(name)
    for _ in range(50):
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    return started


def _running(name: str) -> bool:
    """The daemon of the pid file is alive (not a zombie waiting for a non-systemd init to reap it)."""
    try:
        pid = int(Path(DAEMONS[name]).read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return f"({name})" in stat and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_daemon(name: str) -> None:
    try:
        pid = int(Path(DAEMONS[name]).read_text().strip())
    except (OSError, ValueError):
        return
    if pid_alive(pid) and name in Path(f"/proc/{pid}/comm").read_text():
        os.kill(pid, 15)


def _ensure_pool() -> None:
    """A libvirt storage pool in vm/.cache, so that no box volume lands in /var/lib/libvirt."""
    virsh = ["virsh", "-c", "qemu:///system"]
    POOL_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(30):   # a just-started libvirtd answers `version` before its storage driver
        info_ = subprocess.run([*virsh, "pool-info", POOL], capture_output=True, text=True)
        if info_.returncode == 0 and "running" in info_.stdout:
            return
        if info_.returncode != 0:
            subprocess.run([*virsh, "pool-define-as", POOL, "dir", "--target", str(POOL_DIR)],
                           capture_output=True)
        else:
            subprocess.run([*virsh, "pool-start", POOL], capture_output=True)
        time.sleep(0.5)
    raise BootError(f"libvirt storage pool {POOL} at {POOL_DIR} cannot be started")
