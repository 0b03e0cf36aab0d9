"""One harness cycle: box → boot → sync → provision → suite → fetch → host checks → destroy."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vm.box import REPO, RESULTS, Box, ensure_box, ensure_wheelhouse
from vm.machine import STATE, BootError, Machine, MachineState, assert_loopback, console_tail, info
from vm.remote import RSYNC_EXCLUDES, pull, push, sudo

GUEST_REPO = "/vagrant"                  # where Vagrant's rsync folder lands too
GUEST_WHEELS = "/var/cache/wharfie-wheels"


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


def host_checks(cfg: Path, cgroup: str, junit: Path) -> int:
    """tests/vm (pytest-testinfra over paramiko) against the VM; pytest's exit status."""
    env = dict(os.environ, WHARFIE_VM_SSH_CONFIG=str(cfg), WHARFIE_VM_CGROUP=cgroup,
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("WHARFIE_TEST_PROFILE", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "vm", "-q",
           f"--junitxml={junit}", "-o", f"junit_suite_name=vm-host-cgroup{cgroup}", "tests/vm"]
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode


def test_cycle(backend: str, suite: str, cgroup: str, keep: bool, pytest_args: list[str],
               suite_timeout: float) -> int:
    """The whole `python -m vm test`; returns the process exit status.

    0 only when the suite and the host checks passed; the suite's status when it failed;
    3 when the VM did not come up (the serial console has been printed).
    """
    timings: dict[str, float] = {}
    start = time.monotonic()
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    machine: Machine | None = None
    rc = 1
    try:
        machine = bring_up(backend, cgroup, timings)
        cfg = machine.ssh_config()
        t0 = time.monotonic()
        args = " ".join(shlex.quote(a) for a in pytest_args)
        suite_rc = sudo(cfg, f"{GUEST_REPO}/vm/run-tests.sh {suite} {args}", warn=True,
                        timeout=suite_timeout)
        timings["suite"] = time.monotonic() - t0
        pull(cfg, f"{GUEST_REPO}/vm/results", RESULTS)
        t0 = time.monotonic()
        host_rc = host_checks(cfg, cgroup, RESULTS / "junit-vm-host.xml")
        timings["host_checks"] = time.monotonic() - t0
        rc = suite_rc if suite_rc != 0 else host_rc
        info(f"suite {suite} (cgroup {cgroup}): pytest exit {suite_rc}; host checks exit {host_rc}")
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
