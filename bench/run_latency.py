"""Benchmark (issue 4): container start-to-exit latency and memory per idle container.

    sudo .venv/bin/python -m bench.run_latency [--runs 40] [--rounds 5] [--idle 100]

1. ``run --rm busybox true``, timed with hyperfine (apt-get install hyperfine), side by side:
   ``wharfie`` CLI → wharfied (linux backend); the docker CLI → wharfied; the docker CLI →
   Debian's dockerd; ``crun run`` and ``runc run`` on the same rootfs (a bundle whose rootfs is
   the busybox image); plus the floors of the Python CLI (``python -c pass``, ``wharfie
   --version``). Interleaved: ``--rounds`` hyperfine passes over all commands, ``--runs`` runs
   in total per command; the figure is the median over all runs, the spread the range of the
   per-round medians. Ratios per pair, also taken within each round (robust to the load of a
   shared machine drifting between rounds). Goals: wharfie ≤ 0.25× docker-on-dockerd, ≤ 3× crun.

   crun refuses hybrid cgroup hosts (v1 controllers + a cgroup2 mount at
   /sys/fs/cgroup/unified holding any controller): "cgroups in hybrid mode not supported". On
   such a host every timed command runs in a private mount namespace where a tmpfs covers
   /sys/fs/cgroup/unified, so crun sees a plain v1 host (and still creates and removes its
   cgroups in every v1 hierarchy). That namespace changes nothing for the other commands (the
   daemons run outside it; the CLIs only talk to their sockets), and costs nothing per run.
2. Memory per idle container: start N ``sleep`` containers on each engine and sum the PSS of the
   engine's processes (wharfied + zygote + monitors; dockerd + containerd + shims), minus the
   idle baseline, divided by N. Goal: ≤ 4 MiB per container.

Prints figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from bench.peers import REPO, dockerd, peer_pids, wharfied
from engine.images.busybox import rootfs_tar_bytes

HYBRID_MSG = "hybrid mode not supported"


def hyperfine_rounds(cmds: dict[str, str], runs: int, rounds: int, tmp: str,
                     prefix: list[str]) -> dict[str, tuple[float, list[float], list[float]]]:
    """name → (median of all runs, per-round medians, all run times), in seconds."""
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not found: apt-get install hyperfine")
    per = max(3, runs // rounds)
    times: dict[str, list[float]] = {n: [] for n in cmds}
    medians: dict[str, list[float]] = {n: [] for n in cmds}
    for r in range(rounds):
        out = os.path.join(tmp, f"hf{r}.json")
        args = [*prefix, "hyperfine", "-N", "--warmup", "2", "--runs", str(per), "--export-json", out,
                "--style", "none"]
        order = list(cmds.items())
        if r % 2:
            order.reverse()  # neither side always runs right after the other
        for name, cmd in order:
            args += ["-n", name, cmd]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        with open(out) as fh:
            for res in json.load(fh)["results"]:
                times[res["command"]] += res["times"]
                medians[res["command"]].append(res["median"])
    return {n: (statistics.median(times[n]), medians[n], times[n]) for n in cmds}


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


@contextlib.contextmanager
def v1_view(tmp: str) -> Iterator[list[str]]:
    """A persistent private mount namespace hiding /sys/fs/cgroup/unified under a tmpfs (see
    the module doc); yields the ``nsenter`` prefix that runs a command in it. Removed at exit."""
    nsdir = os.path.join(tmp, "mntns")
    os.makedirs(nsdir)
    nsfile = os.path.join(nsdir, "mnt")
    open(nsfile, "w").close()
    subprocess.run(["mount", "--bind", nsdir, nsdir], check=True)
    try:
        subprocess.run(["mount", "--make-private", nsdir], check=True)
        subprocess.run(["unshare", f"--mount={nsfile}", "--propagation", "private", "mount", "-t", "tmpfs",
                        "-o", "size=4m,mode=755", "wharfie-bench-no-cgroup2", "/sys/fs/cgroup/unified"],
                       check=True)
        try:
            yield ["nsenter", f"--mount={nsfile}"]
        finally:
            subprocess.run(["umount", nsfile], check=False)
    finally:
        subprocess.run(["umount", nsdir], check=False)


def runtimes(bundle: str, prefix: list[str]) -> dict[str, str]:
    """``crun run`` / ``runc run`` commands that work here (a refusal is printed)."""
    found = {}
    for rt in ("crun", "runc"):
        exe = shutil.which(rt)
        if exe is None:
            print(f"{rt} not installed (apt-get install {rt}): skipping that peer")
            continue
        cmd = f"{exe} run --bundle {bundle} bench-{rt}"
        r = subprocess.run([*prefix, *cmd.split()], capture_output=True, text=True, check=False)
        if r.returncode == 0:
            found[f"{rt} run"] = cmd
        else:
            print(f"{rt} cannot run here: {r.stderr.strip()}")
    return found


def crun_refuses_hybrid(bundle: str) -> bool:
    exe = shutil.which("crun")
    if exe is None:
        return False
    r = subprocess.run([exe, "run", "--bundle", bundle, "bench-probe"], capture_output=True, text=True,
                       check=False)
    return r.returncode != 0 and HYBRID_MSG in r.stderr


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


def idle_density(docker_host: str, mark: str, engine_needles: tuple[str, ...], n: int,
                 run_args: list[str]) -> float:
    """PSS growth per container of one engine's processes (only those started by the daemon that
    ``mark`` names: other daemons of the same name on the machine are not counted)."""
    docker = ["docker", "-H", f"unix://{docker_host}"]
    base = pss_of(peer_pids(mark, *engine_needles))
    ids = []
    try:
        for _ in range(n):
            r = subprocess.run(docker + ["run", "-d", *run_args, "busybox", "sleep", "3600"],
                               capture_output=True, text=True, check=True)
            ids.append(r.stdout.strip())
        time.sleep(2)
        loaded = pss_of(peer_pids(mark, *engine_needles))
    finally:
        for i in range(0, len(ids), 20):
            subprocess.run(docker + ["rm", "-f", *ids[i:i + 20]], capture_output=True, check=False)
    return (loaded - base) / n


def report(res: dict[str, tuple[float, list[float], list[float]]]) -> None:
    print("\n== run --rm busybox true: median of all runs (per-round medians min..max; IQR) ==")
    for name, (med, rounds, times) in res.items():
        q = statistics.quantiles(times, n=4)
        print(f"  {name:30s} {med * 1000:7.1f} ms   ({min(rounds) * 1000:6.1f} .. {max(rounds) * 1000:6.1f};"
              f" IQR {q[0] * 1000:6.1f} .. {q[2] * 1000:6.1f}, n={len(times)})")
    m = {k: v[0] for k, v in res.items()}
    print("\n== ratios: median / median (and the same ratio within each round: median, min..max) ==")
    pairs = [("wharfie run (wharfied)", "docker run (dockerd)", "goal <= 0.25x"),
             ("docker run (wharfied)", "docker run (dockerd)", "same CLI, the engines alone"),
             ("wharfie run (wharfied)", "crun run", "goal <= 3x"),
             ("docker run (wharfied)", "crun run", ""),
             ("wharfie run (wharfied)", "runc run", ""),
             ("wharfie run (wharfied)", "docker run (wharfied)", "our CLI vs docker's, same daemon")]
    for a, b, note in pairs:
        if a in m and b in m:
            # side by side in each round: drift of the shared machine's load cancels out
            paired = [x / y for x, y in zip(res[a][1], res[b][1], strict=True)]
            print(f"  {a:24s} / {b:24s} {m[a] / m[b]:6.2f}x  (per round {statistics.median(paired):5.2f}x,"
                  f" {min(paired):5.2f}..{max(paired):5.2f})   {note}")
    if "wharfie --version" in m and "wharfie run (wharfied)" in m:
        print(f"  CLI floor (python + click + our entry point) {m['wharfie --version'] * 1000:5.1f} ms of "
              f"{m['wharfie run (wharfied)'] * 1000:5.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40, help="runs per command, over all rounds")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved hyperfine passes")
    ap.add_argument("--idle", type=int, default=100, help="idle containers for the memory figure (0 = skip)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (real containers)")
    wharfie = os.path.join(REPO, ".venv", "bin", "wharfie")
    if not os.path.exists(wharfie):
        wharfie = shutil.which("wharfie") or "wharfie"
    python = os.path.join(os.path.dirname(wharfie), "python")
    # a user's install has its bytecode cached; a checkout run with PYTHONDONTWRITEBYTECODE not
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "engine")], check=False,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="wharfie-bench-") as tmp:
        with wharfied(tmp) as wsock, dockerd(tmp) as dsock:
            w = f"{wharfie} -H unix://{wsock}"
            subprocess.run(f"{w} image bootstrap busybox", shell=True, check=True, capture_output=True)
            # the very same image into dockerd
            save = subprocess.run(f"{w} save busybox", shell=True, check=True, capture_output=True).stdout
            subprocess.run(["docker", "-H", f"unix://{dsock}", "load"], input=save, check=True, capture_output=True)
            bundle = oci_bundle(tmp)
            cmds = {
                "wharfie run (wharfied)": f"{w} run --rm busybox true",
                "docker run (wharfied)": f"docker -H unix://{wsock} run --rm busybox true",
                "docker run (dockerd)": f"docker -H unix://{dsock} run --rm --network none busybox true",
                "wharfie --version": f"{wharfie} --version",
                "python -c pass": f"{python} -c pass",
            }
            with contextlib.ExitStack() as stack:
                prefix: list[str] = []
                if crun_refuses_hybrid(bundle):
                    print("crun refuses this hybrid cgroup host: timing every command in a mount namespace "
                          "where /sys/fs/cgroup/unified is hidden (see the module doc)")
                    prefix = stack.enter_context(v1_view(tmp))
                cmds.update(runtimes(bundle, prefix))
                res = hyperfine_rounds(cmds, args.runs, args.rounds, tmp, prefix)
            report(res)
            if args.idle:
                print(f"\n== memory per idle container ({args.idle} x sleep), PSS ==")
                wm = idle_density(wsock, tmp, ("engine.api.daemon", "wharfie-zygote", "wharfie-monitor"),
                                  args.idle, [])
                dm = idle_density(dsock, os.path.join(tmp, "docker"), ("dockerd", "containerd"), args.idle,
                                  ["--network", "none"])
                print(f"  wharfie (daemon+zygote+monitors)    {wm / 2**20:6.2f} MiB/container (goal <= 4 MiB)")
                print(f"  docker (dockerd+containerd+shims)   {dm / 2**20:6.2f} MiB/container")
                print(f"  ratio                               {wm / dm:6.2f}x")


if __name__ == "__main__":
    sys.exit(main())
