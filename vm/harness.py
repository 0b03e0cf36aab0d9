"""One harness cycle: box → boot → sync → provision → suite → fetch → host checks → destroy."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from vm.box import REPO, RESULTS, Box, ensure_box, ensure_wheelhouse
from vm.machine import STATE, BootError, Machine, MachineState, assert_loopback, console_tail, info
from vm.remote import RSYNC_EXCLUDES, pull, push, ssh_status, sudo

GUEST_REPO = "/vagrant"                  # where Vagrant's rsync folder lands too
GUEST_WHEELS = "/var/cache/wharfie-wheels"
BOOT_ATTEMPTS = 2   # a VM that does not boot (or answer SSH) is retried once, fresh; a test failure never
SWITCH_TIMEOUT = 300.0
WATCHDOG_LIMIT = float(os.environ.get("VM_WATCHDOG", 180))  # s without SSH during a suite


def make_machine(backend: str, box: Box | None, cgroup: str) -> Machine:
    if backend == "qemu":
        from vm.qemu import QemuMachine
        return QemuMachine(box, cgroup=cgroup)
    if backend == "vagrant":
        from vm.vagrant import VagrantMachine
        return VagrantMachine(box, cgroup=cgroup)
    raise ValueError(f"unknown backend {backend!r} (qemu|vagrant)")


def machine_from_state(state: MachineState) -> Machine:
    if state.backend == "qemu":
        from vm.qemu import QemuMachine
        return QemuMachine.from_state(state)
    from vm.vagrant import VagrantMachine
    return VagrantMachine.from_state(state)


def bring_up(backend: str, cgroup: str, timings: dict[str, float], provision: bool = True) -> Machine:
    """Build or reuse the box and wheelhouse, boot, sync the checkout in, install wharfie."""
    box, timings["box"] = ensure_box()
    info(f"box {box.path} ({'built' if timings['box'] > 5 else 'cached'}, {timings['box']:.0f} s)")
    house, timings["wheelhouse"] = ensure_wheelhouse()
    machine = make_machine(backend, box, cgroup)
    try:
        t0 = time.monotonic()
        machine.up()
        timings["boot"] = time.monotonic() - t0
        cfg = machine.ssh_config()
        assert_loopback(cfg)
        t0 = time.monotonic()
        push(cfg, house, GUEST_WHEELS)
        push(cfg, REPO, GUEST_REPO, RSYNC_EXCLUDES)
        timings["sync"] = time.monotonic() - t0
        if provision:
            t0 = time.monotonic()
            rc = sudo(cfg, f"{GUEST_REPO}/vm/provision.sh", warn=True, timeout=900)
            timings["provision"] = time.monotonic() - t0
            if rc != 0:
                raise RuntimeError(f"vm/provision.sh failed with exit {rc}")
    except BaseException:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "console.log").write_text(machine.console())
        machine.destroy()
        STATE.unlink(missing_ok=True)
        raise
    return machine


def bring_up_retrying(backend: str, cgroup: str, timings: dict[str, float]) -> Machine:
    """``bring_up``, with a fresh VM once more if the first did not boot (infrastructure only:
    a failed provision or test is never retried). Raises the last BootError."""
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            return bring_up(backend, cgroup, timings)
        except BootError as e:
            if attempt == BOOT_ATTEMPTS:
                raise
            print(e, file=sys.stderr)
            info(f"boot attempt {attempt} of {BOOT_ATTEMPTS} failed; retrying with a fresh VM")
    raise AssertionError("unreachable")


def switch_cgroup(machine: Machine, cgroup: str, timeout: float = SWITCH_TIMEOUT) -> None:
    """kexec the running VM into the other cgroup hierarchy (vm/cgroup.sh) and wait until SSH
    answers from a kernel booted with it. The disk (and wharfie installed on it) stays.

    Raises:
        BootError: it did not come back within ``timeout`` (the console's tail in the message).
    """
    cfg = machine.ssh_config()
    want = {"v1": "tmpfs", "v2": "cgroup2fs"}[cgroup]
    # cgroup.sh returns at once and the kexec follows a second later: its session may never see
    # its channel closed (see remote.ssh_status), so it is cut off after 30 s whatever happened
    rc = ssh_status(cfg, f"sudo -n {GUEST_REPO}/vm/cgroup.sh {cgroup}", timeout=30)
    if rc not in (0, 124, 255):
        raise RuntimeError(f"vm/cgroup.sh {cgroup} failed with exit {rc}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(3)
        if ssh_status(cfg, f'test "$(stat -fc %T /sys/fs/cgroup)" = {want}', timeout=20) == 0:
            return
    raise BootError(f"the VM did not come back on cgroup {cgroup} within {timeout:.0f} s\n"
                    + console_tail(machine.console()))


class Watchdog:
    """While a suite runs: a VM that stops answering SSH for ``limit`` seconds is an
    infrastructure failure (a frozen guest, seen once under TCG on a loaded host), not a test
    failure. The watchdog then destroys it, which ends the suite's SSH session, and ``error()``
    is the BootError (with the console's tail) to raise instead of waiting for the suite's limit."""

    def __init__(self, machine: Machine, limit: float = WATCHDOG_LIMIT, every: float = 30.0) -> None:
        self.machine, self.limit, self.every = machine, limit, every
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-watchdog", daemon=True)
        self._console = ""

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cfg = self.machine.ssh_config()
        silent_since: float | None = None
        while not self._stop.wait(self.every):
            if ssh_status(cfg, "true", timeout=20) == 0:
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = silent_since or now
            if now - silent_since >= self.limit and not self._stop.is_set():
                self.fired = True
                self._console = self.machine.console()
                info(f"the VM has not answered SSH for {now - silent_since:.0f} s; destroying it")
                self.machine.destroy()
                return

    def error(self) -> BootError:
        return BootError(f"the VM stopped answering SSH during the suite (for {self.limit:.0f} s)\n"
                         + console_tail(self._console))


def host_checks(cfg: Path, cgroup: str, junit: Path) -> int:
    """tests/vm (pytest-testinfra over paramiko) against the VM; pytest's exit status."""
    env = dict(os.environ, WHARFIE_VM_SSH_CONFIG=str(cfg), WHARFIE_VM_CGROUP=cgroup,
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("WHARFIE_TEST_PROFILE", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "vm", "-q",
           f"--junitxml={junit}", "-o", f"junit_suite_name=vm-host-cgroup{cgroup}", "tests/vm"]
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode


def run_suite(machine: Machine, suite: str, cgroup: str, pytest_args: list[str], timeout: float,
              timings: dict[str, float], tag: str = "") -> int:
    """run-tests.sh SUITE in the VM, fetch vm/results/, run the host checks; the first nonzero
    of pytest's and the host checks' exit status (0: both passed)."""
    cfg = machine.ssh_config()
    t0 = time.monotonic()
    args = " ".join(shlex.quote(a) for a in pytest_args)
    with Watchdog(machine) as dog:
        try:
            suite_rc = sudo(cfg, f"{GUEST_REPO}/vm/run-tests.sh {suite} {args}", warn=True,
                            timeout=timeout)
        except Exception:
            if dog.fired:
                raise dog.error() from None
            raise
    if dog.fired:
        raise dog.error()
    timings[f"suite{tag}"] = time.monotonic() - t0
    pull(cfg, f"{GUEST_REPO}/vm/results", RESULTS)
    t0 = time.monotonic()
    host_rc = host_checks(cfg, cgroup, RESULTS / f"junit-vm-host{tag}.xml")
    timings[f"host_checks{tag}"] = time.monotonic() - t0
    info(f"suite {suite} (cgroup {cgroup}): pytest exit {suite_rc}; host checks exit {host_rc}")
    return suite_rc if suite_rc != 0 else host_rc


def test_cycle(backend: str, suite: str, cgroup: str, keep: bool, pytest_args: list[str],
               suite_timeout: float, then_v1: bool = False) -> int:
    """The whole `python -m vm test`; returns the process exit status.

    0 only when the suite and the host checks passed; the suite's status when it failed;
    3 when the VM did not come up (the serial console has been printed). With ``then_v1`` (and a
    v2 boot) the same VM is then kexec-ed into cgroup v1 and run-tests.sh's ``cgroup`` suite and
    the host checks run there too (results tagged ``-v1``); a VM that does not come back is
    replaced by a fresh one booted on v1.
    """
    timings: dict[str, float] = {}
    start = time.monotonic()
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    machine: Machine | None = None
    rc = 1
    try:
        machine = bring_up_retrying(backend, cgroup, timings)
        rc = run_suite(machine, suite, cgroup, pytest_args, suite_timeout, timings)
        if then_v1 and cgroup == "v2":
            t0 = time.monotonic()
            try:
                switch_cgroup(machine, "v1")
            except BootError as e:
                print(e, file=sys.stderr)
                info("kexec into cgroup v1 failed; booting a fresh VM on v1 instead")
                (RESULTS / "console-kexec.log").write_text(machine.console())
                machine.destroy()
                STATE.unlink(missing_ok=True)
                machine = None
                machine = bring_up_retrying(backend, "v1", {})
            timings["switch_v1"] = time.monotonic() - t0
            rc_v1 = run_suite(machine, "cgroup", "v1", [], suite_timeout, timings, tag="-v1")
            rc = rc if rc != 0 else rc_v1
    except BootError as e:
        print(e, file=sys.stderr)
        rc = 3
    except Exception as e:  # noqa: BLE001 - report with the console's tail; the VM is destroyed
        info(f"failed: {type(e).__name__}: {e}")
        console = machine.console() if machine else (RESULTS / "console.log").read_text() \
            if (RESULTS / "console.log").exists() else ""
        print(console_tail(console, 40), file=sys.stderr)
        rc = 1
    finally:
        if machine is not None:
            (RESULTS / "console.log").write_text(machine.console())
            if keep:
                info(f"kept: python -m vm ssh / python -m vm destroy (ssh-config {machine.ssh_config()})")
            else:
                t0 = time.monotonic()
                machine.destroy()
                STATE.unlink(missing_ok=True)
                timings["destroy"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - start
        (RESULTS / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}))
        info("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
        info(f"results in {RESULTS}: {', '.join(sorted(p.name for p in RESULTS.iterdir()))}")
    return rc
