"""Benchmark (issue 4): container start-to-exit latency and memory per idle container.

    sudo .venv/bin/python -m bench.run_latency [--runs 20] [--idle 100]

1. ``run --rm busybox true``, timed with hyperfine (apt-get install hyperfine), side by side:
   ``wharfie`` CLI → wharfied (linux backend); the docker CLI → wharfied; the docker CLI →
   Debian's dockerd; ``crun run`` on the same rootfs (or ``runc run`` where crun refuses the
   host, as on hybrid-cgroup machines). Ratios per pair.
   Goals: wharfie ≤ 0.25× docker-on-dockerd, ≤ 3× crun.
2. Memory per idle container: start N ``sleep`` containers on each engine and sum the PSS of the
   engine's processes (wharfied + zygote + monitors; dockerd + containerd + shims), minus the
   idle baseline, divided by N. Goal: ≤ 4 MiB per container.

Prints figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.peers import REPO, dockerd, wharfied
from engine.images.busybox import rootfs_tar_bytes


def hyperfine(cmds: dict[str, str], runs: int, out: str) -> dict[str, float]:
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not found: apt-get install hyperfine")
    args = ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", out]
    for name, cmd in cmds.items():
        args += ["-n", name, cmd]
    subprocess.run(args, check=True)
    with open(out) as fh:
        data = json.load(fh)
    return {r["command"]: r["median"] for r in data["results"]}


def low_level_runtime(tmp: str) -> tuple[str, str] | None:
    """(name, command) for crun — or runc where crun refuses (crun rejects hybrid cgroup hosts
    like this one: "cgroups in hybrid mode not supported")."""
    bundle = oci_bundle(tmp)
    for rt in ("crun", "runc"):
        exe = shutil.which(rt)
        if exe is None:
            continue
        cmd = f"{exe} run --bundle {bundle} bench-{rt}"
        if subprocess.run(cmd.split(), capture_output=True).returncode == 0:
            return rt, cmd
        print(f"{rt} cannot run here: {subprocess.run(cmd.split(), capture_output=True, text=True).stderr.strip()}")
    return None


def oci_bundle(tmp: str) -> str:
    runtime = shutil.which("runc") or shutil.which("crun") or "runc"
    bundle = os.path.join(tmp, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    tar = os.path.join(tmp, "rootfs.tar")
    with open(tar, "wb") as fh:
        fh.write(rootfs_tar_bytes())
    subprocess.run(["tar", "-xf", tar, "-C", rootfs], check=True)
    subprocess.run([runtime, "spec"], cwd=bundle, check=True)
    with open(os.path.join(bundle, "config.json")) as fh:
        spec = json.load(fh)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    with open(os.path.join(bundle, "config.json"), "w") as fh:
        json.dump(spec, fh)
    return bundle


def pss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def pids_matching(*needles: str) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            found.append(int(p))
    return found


def idle_density(docker_host: str, engine_needles: tuple[str, ...], n: int, run_args: list[str]) -> float:
    docker = ["docker", "-H", f"unix://{docker_host}"]
    base = pss_of(pids_matching(*engine_needles))
    ids = []
    for _ in range(n):
        r = subprocess.run(docker + ["run", "-d", *run_args, "busybox", "sleep", "3600"],
                           capture_output=True, text=True, check=True)
        ids.append(r.stdout.strip())
    time.sleep(2)
    loaded = pss_of(pids_matching(*engine_needles))
    subprocess.run(docker + ["rm", "-f", *ids], capture_output=True, check=False)
    return (loaded - base) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--idle", type=int, default=100, help="idle containers for the memory figure (0 = skip)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (real containers)")
    wharfie = os.path.join(REPO, ".venv", "bin", "wharfie")
    if not os.path.exists(wharfie):
        wharfie = shutil.which("wharfie") or "wharfie"
    with tempfile.TemporaryDirectory(prefix="wharfie-bench-") as tmp:
        with wharfied(tmp) as wsock, dockerd(tmp) as dsock:
            w = f"{wharfie} -H unix://{wsock}"
            subprocess.run(f"{w} image bootstrap busybox", shell=True, check=True, capture_output=True)
            # the very same image into dockerd
            save = subprocess.run(f"{w} save busybox", shell=True, check=True, capture_output=True).stdout
            subprocess.run(["docker", "-H", f"unix://{dsock}", "load"], input=save, check=True, capture_output=True)
            cmds = {
                "wharfie run (wharfied)": f"{w} run --rm busybox true",
                "docker run (wharfied)": f"docker -H unix://{wsock} run --rm busybox true",
                "docker run (dockerd)": f"docker -H unix://{dsock} run --rm --network none busybox true",
            }
            low = low_level_runtime(tmp)
            if low is not None:
                cmds[f"{low[0]} run"] = low[1]
            else:
                print("neither crun nor runc can run here (apt-get install crun runc): skipping that peer")
            med = hyperfine(cmds, args.runs, os.path.join(tmp, "hf.json"))
            print("\n== run --rm busybox true (median) ==")
            for k, v in med.items():
                print(f"  {k:28s} {v * 1000:8.1f} ms")
            dk = med["docker run (dockerd)"]
            wr = med["wharfie run (wharfied)"]
            print(f"  wharfie / docker-on-dockerd  {wr / dk:6.2f}x   (goal <= 0.25x)")
            print(f"  docker CLI: wharfied / dockerd {med['docker run (wharfied)'] / dk:6.2f}x")
            for rt in ("crun run", "runc run"):
                if rt in med:
                    print(f"  wharfie / {rt[:4]:18s} {wr / med[rt]:6.2f}x   (goal <= 3x crun)")
            if args.idle:
                print(f"\n== memory per idle container ({args.idle} x sleep), PSS ==")
                wm = idle_density(wsock, ("engine.api.daemon", "backends.linux.zygote", "wharfie-monitor"),
                                  args.idle, [])
                dm = idle_density(dsock, ("dockerd", "containerd", "containerd-shim"), args.idle,
                                  ["--network", "none"])
                print(f"  wharfie (daemon+zygote+monitors)    {wm / 2**20:6.2f} MiB/container (goal <= 4 MiB)")
                print(f"  docker (dockerd+containerd+shims)   {dm / 2**20:6.2f} MiB/container")
                print(f"  ratio                               {wm / dm:6.2f}x")


if __name__ == "__main__":
    sys.exit(main())
