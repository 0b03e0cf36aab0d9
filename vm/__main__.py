"""``python -m vm``: the VM harness's command line. See vm/README.md.

    python -m vm test [--suite ci|cgroup|full|custom] [--keep] [--backend qemu|vagrant]
                      [--cgroup v2|v1] [--then-v1] [--timeout SECONDS] [-- PYTEST ARGS...]
    python -m vm up [--backend ...] [--cgroup ...] [--no-provision]
    python -m vm ssh [-- COMMAND...]
    python -m vm destroy
    python -m vm build-box [--force]

Runs from any Python >= 3.11: when fabric or pytest-testinfra are missing it makes its own venv
(vm/.cache/venv, from pyproject's ``vm`` and ``test`` extras) and re-runs itself there, so the
project's own .venv never gets the harness's pytest plugins.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parent
HARNESS_VENV = VM_DIR / ".cache" / "venv"


def _ensure_deps() -> None:
    try:
        import fabric  # noqa: F401
        import testinfra  # noqa: F401
        import vagrant  # noqa: F401
        return
    except ImportError:
        pass
    import tomllib

    py = HARNESS_VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == HARNESS_VENV.resolve():
        sys.exit("vm: the harness venv lacks fabric/testinfra; remove vm/.cache/venv and retry")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    reqs = extras["vm"] + extras["test"]
    stamp = HARNESS_VENV / ".requirements"
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(reqs)):
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(HARNESS_VENV)], check=True)
        print(f"vm: installing the harness's Python packages into {HARNESS_VENV}", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
                       check=True)
        stamp.write_text("\n".join(reqs))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    os.execve(str(py), [str(py), "-m", "vm", *sys.argv[1:]], env)


def _on_sigterm(signum: int, frame: object) -> None:
    # `timeout` (vm/ci.sh) sends SIGTERM: unwind so that the VM is destroyed and results written
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m vm", description="wharfie's VM harness")
    sub = p.add_subparsers(dest="cmd", required=True)

    def vm_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--backend", choices=["qemu", "vagrant"],
                        default=os.environ.get("VM_BACKEND", "qemu"))
        sp.add_argument("--cgroup", choices=["v2", "v1"], default=os.environ.get("CGROUP", "v2"))

    t = sub.add_parser("test", help="boot, install, run a suite, check the host, destroy")
    vm_opts(t)
    t.add_argument("--suite", choices=["ci", "cgroup", "full", "custom"], default="ci")
    t.add_argument("--keep", action="store_true", help="leave the VM running afterwards")
    t.add_argument("--timeout", type=float, default=3600, help="the suite's limit, seconds")
    t.add_argument("--then-v1", action="store_true",
                   help="after the suite (on v2), kexec the VM into cgroup v1 and run the cgroup suite")
    u = sub.add_parser("up", help="boot, sync the checkout to /vagrant and install wharfie")
    vm_opts(u)
    u.add_argument("--no-provision", action="store_true")
    sub.add_parser("ssh", help="a shell (or `-- COMMAND`) in the running VM")
    sub.add_parser("destroy", help="stop and delete the running VM")
    b = sub.add_parser("build-box", help="build the box into vm/.cache (cached by recipe)")
    b.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    if args.cmd == "build-box":
        cmd = [str(VM_DIR / "build-box.sh")] + (["--force"] if args.force else [])
        return subprocess.run(cmd, check=False).returncode
    if args.cmd == "ssh":
        from vm.machine import HOST_ALIAS, MachineState
        state = MachineState.load()
        if state is None:
            sys.exit("vm: no VM is up (python -m vm up)")
        os.execvp("ssh", ["ssh", "-F", state.ssh_config, HOST_ALIAS, *passthrough])

    _ensure_deps()
    import logging
    # paramiko logs every refused connection while the VM boots; the harness reports its own
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _on_sigterm)
    from vm import harness
    from vm.machine import STATE, BootError, MachineState, info

    existing = MachineState.load()
    if args.cmd == "destroy":
        if existing is None:
            info("no VM state; nothing to destroy")
            return 0
        harness.machine_from_state(existing).destroy()
        STATE.unlink(missing_ok=True)
        info("destroyed")
        return 0
    if existing is not None:
        info(f"a VM is already up ({existing.backend}); destroying it first")
        harness.machine_from_state(existing).destroy()
        STATE.unlink(missing_ok=True)
    if args.cmd == "up":
        timings: dict[str, float] = {}
        try:
            machine = harness.bring_up(args.backend, args.cgroup, timings, provision=not args.no_provision)
        except BootError as e:
            print(e, file=sys.stderr)
            STATE.unlink(missing_ok=True)
            return 3
        info("up: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
             + f"; ssh -F {machine.ssh_config()} wharfie-vm")
        return 0
    try:
        return harness.test_cycle(args.backend, args.suite, args.cgroup, args.keep, passthrough, args.timeout,
                                  then_v1=args.then_v1)
    except KeyboardInterrupt as e:
        info(f"interrupted ({e})")
        return 130


if __name__ == "__main__":
    sys.exit(main())
