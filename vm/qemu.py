"""Plain-QEMU backend: the box booted directly by qemu-system-x86_64, SSH forwarded to loopback.

No libvirt, bridge, dnsmasq or iptables: user-mode networking with one ``hostfwd`` on
127.0.0.1. By default the guest is also cut off from everything else (``restrict=on``): the box
and the wheelhouse hold all it needs. ``VM_NET=nat`` lets it out through QEMU's NAT (to the
Debian mirror, say) when debugging a box that lacks something.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from vm.box import Box
from vm.machine import (RUN_DIR, BootError, MachineState, console_tail, free_port, info, pid_alive,
                        write_ssh_config)
from vm.remote import wait_ssh

CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=1"


def accelerator() -> str:
    """``kvm`` only on a normal KVM host; TCG elsewhere (``VM_ACCEL`` overrides).

    These CI machines have a ``/dev/kvm`` that is PVM (nested, ``kvm_pvm``): it cannot run a
    stock Debian kernel and QEMU aborts on an MSR write. See ../shared/VM-NOTES.md §1.
    """
    if os.environ.get("VM_ACCEL"):
        return os.environ["VM_ACCEL"]
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "tcg"
    has_vt = " vmx" in flags or " svm" in flags
    if has_vt and not Path("/sys/module/kvm_pvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return "tcg"


def cgroup_args(cgroup: str) -> str:
    # v1 is what systemd 252 still supports behind this switch (deprecated, warns at boot)
    return {"v1": " systemd.unified_cgroup_hierarchy=0", "v2": " systemd.unified_cgroup_hierarchy=1"}[cgroup]


class QemuMachine:
    """One VM at a time, its files under ``vm/.cache/run/``."""

    backend = "qemu"

    def __init__(self, box: Box | None, cgroup: str = "v2", cpus: int = 2, memory_mb: int = 2048,
                 state: MachineState | None = None) -> None:
        self.box = box
        self.cgroup = cgroup
        self.cpus = int(os.environ.get("VM_CPUS", cpus))
        self.memory_mb = int(os.environ.get("VM_MEMORY", memory_mb))
        self.state = state
        self.console_path = RUN_DIR / "console.log"
        self.disk = RUN_DIR / "disk.qcow2"

    @classmethod
    def from_state(cls, state: MachineState) -> QemuMachine:
        return cls(None, cgroup=state.cgroup, state=state)

    def command(self, port: int) -> list[str]:
        assert self.box is not None
        accel = accelerator()
        restrict = "off" if os.environ.get("VM_NET") == "nat" else "on"
        cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
        accel_opt = "tcg,thread=multi" if accel == "tcg" else accel
        return [
            "qemu-system-x86_64", "-name", "wharfie-vm", "-nodefaults", "-no-user-config",
            "-machine", "q35", "-accel", accel_opt, *cpu,
            "-smp", str(self.cpus), "-m", str(self.memory_mb),
            "-kernel", str(self.box.kernel), "-initrd", str(self.box.initrd),
            "-append", CMDLINE + cgroup_args(self.cgroup) + " " + os.environ.get("VM_KERNEL_ARGS", ""),
            # a throw-away overlay over the cached image; cache=unsafe: nothing here must survive a crash
            "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=n0,restrict={restrict},hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-device", "virtio-rng-pci",   # sshd and Python want entropy early; TCG has little
            "-display", "none", "-serial", f"file:{self.console_path}", "-no-reboot",
        ]

    def up(self, boot_timeout: float | None = None) -> None:
        """Boot and wait for SSH (``VM_BOOT_TIMEOUT`` seconds, default 300; TCG boots in 20-35 s).

        Raises:
            BootError: no SSH in time or qemu exited (qemu's output and the console's tail).
        """
        assert self.box is not None
        if boot_timeout is None:
            boot_timeout = float(os.environ.get("VM_BOOT_TIMEOUT", 300))
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.disk.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str(self.box.image), str(self.disk)], check=True)
        self.console_path.write_text("")
        ssh_config = RUN_DIR / "ssh-config"
        port = free_port()
        log = open(RUN_DIR / "qemu.log", "w")
        proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.state = MachineState("qemu", self.cgroup, str(write_ssh_config(ssh_config, port, self.box.key)),
                                  str(self.console_path), pid=proc.pid, port=port,
                                  extra={"accel": accelerator()})
        self.state.save()
        info(f"qemu pid {proc.pid} ({accelerator()}, {self.cpus} cpus, {self.memory_mb} MiB, cgroup "
             f"{self.cgroup}), ssh on 127.0.0.1:{port}, console {self.console_path}")
        try:
            waited = wait_ssh(ssh_config, time.monotonic() + boot_timeout, lambda: proc.poll() is None)
        except TimeoutError as e:
            qemu_log = (RUN_DIR / "qemu.log").read_text().strip()
            raise BootError(f"VM did not boot: {e}\nqemu: {qemu_log or '(no output)'}\n"
                            + console_tail(self.console())) from None
        info(f"SSH up after {waited:.1f} s")

    def ssh_config(self) -> Path:
        assert self.state is not None
        return Path(self.state.ssh_config)

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def destroy(self) -> None:
        pid = self.state.pid if self.state else 0
        if pid_alive(pid) and _is_qemu(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.disk.unlink(missing_ok=True)


def _is_qemu(pid: int) -> bool:
    """Never signal a recycled pid: check it is still our qemu."""
    try:
        return b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
