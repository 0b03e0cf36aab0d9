"""Benchmark: ``push`` of the one-layer ~200 MB / 7k-file image and the five-layer ~220 MB image
(bench.registry's layers) to Debian's ``docker-registry`` on loopback, side by side with dockerd.

Every timed push goes to a FRESH registry (nothing to skip or mount, so each side compresses
and uploads everything), and the peers take turns (the order alternates per run). Peers:

* ``engine``: wharfie's engine in-process on ``--backend`` (``linux`` as root), the image
  loaded there from a docker-archive (the real ``load`` path);
* ``docker→wharfied`` (with ``--wharfied``): the docker CLI pushing through a wharfied on
  ``--backend`` (CLI + API + engine: the same client as the dockerd row);
* ``docker→dockerd``: the docker CLI pushing through Debian's dockerd (``--start-dockerd``
  starts a private one via bench.peers; or ``--docker-host``), the same archive loaded there.

    python -m bench.registry_push [--scale 1.0] [--backend linux] [--runs 3] [--wharfied]
                                  [--start-dockerd | --docker-host unix:///run/docker.sock]

Prints each peer's median and the sorted runs, and the ratios to dockerd (of the medians, and
per pair: the two pushes of one run, made one right after the other); and, as this box's
timings swing with other load, the CPU seconds each push cost: the pusher (the engine's own
process; dockerd + the docker CLI) and the registry (the same Debian registry either way).
Goal (issue 6): push <= 0.3x docker's time (a cold push: nothing cached, every layer compressed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx

from bench.registry import layer
from engine.bootstrap import make_engine
from engine.engine import Engine
from engine.images import pgzip
from tests.registry.rigs import RefRegistry


def _spread(xs: list[float]) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in sorted(xs)) + "]"


def make_archives(tmp: str, scale: float) -> dict[str, str]:
    """The two bench images as docker-archives (made by a throwaway sim engine)."""
    async def go() -> dict[str, str]:
        a = make_engine("sim", os.path.join(tmp, "mk"), os.path.join(tmp, "mk-run"), seed=1)
        await a.start()
        out = {}
        try:
            images = {"one": [layer(int(7000 * scale), 30_000, 0)],
                      "five": [layer(int(1500 * scale), 30_000, s) for s in range(1, 6)]}
            for name, layers in images.items():
                parent = None
                for i, data in enumerate(layers):
                    parent = a.image_store.commit(io.BytesIO(data), parent, {"Cmd": ["sh"]},
                                                  f"bench/{name}:1" if i == len(layers) - 1 else None)
                out[name] = os.path.join(tmp, f"{name}.tar")
                with open(out[name], "wb") as fh:
                    a.image_save([f"bench/{name}:1"], fh)
        finally:
            await a.close()
            subprocess.run(["rm", "-rf", os.path.join(tmp, "mk"), os.path.join(tmp, "mk-run")], check=False)
        return out
    return asyncio.run(go())


@contextlib.contextmanager
def fresh_registry() -> Iterator[RefRegistry]:
    reg = RefRegistry().start()
    try:
        yield reg
    finally:
        reg.stop()


def docker(host: str, *args: str) -> None:
    subprocess.run(["docker", "-H", host, *args], check=True, capture_output=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


Sample = tuple[float, float, float, int]  # wall, pusher CPU, registry CPU (seconds), layer bytes sent


def layer_bytes(reg: RefRegistry, ref: str) -> int:
    """The compressed size of the layers the registry now holds for ``ref`` (its manifest's sum)."""
    path, tag = ref.split("/", 1)[1].rsplit(":", 1)
    r = httpx.get(f"http://{reg.host}/v2/{path}/manifests/{tag}", timeout=30,
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                                     "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    return sum(int(layer["size"]) for layer in r.json()["layers"])


def docker_push(host: str, name: str, run: int) -> Sample:
    pidfile = os.path.join(os.path.dirname(host.removeprefix("unix://")), "docker.pid")
    with open(pidfile) as fh:
        daemon = int(fh.read().strip())
    with fresh_registry() as reg:
        ref = f"{reg.host}/bench/{name}:{run}"
        docker(host, "tag", f"bench/{name}:1", ref)
        os.sync()
        assert reg.proc is not None
        c0 = proc_cpu(daemon) + own_cpu(resource.RUSAGE_CHILDREN)
        r0 = proc_cpu(reg.proc.pid)
        t0 = time.perf_counter()
        docker(host, "push", ref)
        took = time.perf_counter() - t0
        cpu = proc_cpu(daemon) + own_cpu(resource.RUSAGE_CHILDREN) - c0
        reg_cpu = proc_cpu(reg.proc.pid) - r0
        size = layer_bytes(reg, ref)
        docker(host, "rmi", ref)
    return took, cpu, reg_cpu, size


def docker_push_wall(host: str, name: str, run: int) -> Sample:
    with fresh_registry() as reg:
        ref = f"{reg.host}/bench/{name}:{run}"
        docker(host, "tag", f"bench/{name}:1", ref)
        os.sync()
        t0 = time.perf_counter()
        docker(host, "push", ref)
        took = time.perf_counter() - t0
        size = layer_bytes(reg, ref)
        docker(host, "rmi", ref)
    return took, float("nan"), float("nan"), size


async def engine_push(eng: Engine, name: str, run: int) -> Sample:
    with fresh_registry() as reg:
        ref = f"{reg.host}/bench/{name}:{run}"
        eng.image_tag(f"bench/{name}:1", ref)
        os.sync()
        assert reg.proc is not None
        c0, r0 = own_cpu(resource.RUSAGE_SELF), proc_cpu(reg.proc.pid)
        t0 = time.perf_counter()
        await eng.image_push(ref)
        took = time.perf_counter() - t0
        cpu, reg_cpu = own_cpu(resource.RUSAGE_SELF) - c0, proc_cpu(reg.proc.pid) - r0
        size = layer_bytes(reg, ref)
        eng.image_remove(ref)
    return took, cpu, reg_cpu, size


async def run(args: argparse.Namespace, docker_host: str | None, wharfied_host: str | None, tmp: str,
              archives: dict[str, str]) -> None:
    eng = make_engine(args.backend, os.path.join(tmp, "root"), os.path.join(tmp, "run"))
    await eng.start()
    try:
        for path in archives.values():
            with open(path, "rb") as fh:
                await eng.image_load_async(fh)
        for host in (docker_host, wharfied_host):
            if host:
                for path in archives.values():
                    docker(host, "load", "-i", path)
        times: dict[tuple[str, str], list[Sample]] = {}
        for r in range(args.runs):
            for name in archives:
                peers: list[tuple[str, str | None]] = [("engine", None)]
                if wharfied_host:
                    peers.append(("docker→wharfied", wharfied_host))
                if docker_host:
                    peers.append(("docker→dockerd", docker_host))
                if r % 2:
                    peers.reverse()
                for who, host in peers:
                    if host is None:
                        sample = await engine_push(eng, name, r)
                    elif host == docker_host:
                        sample = docker_push(host, name, r)
                    else:  # wharfied: its CPU is not counted here
                        sample = docker_push_wall(host, name, r)
                    times.setdefault((name, who), []).append(sample)
                    print(f"  run {r} {name:4} {who:16} {sample[0]:6.2f} s  cpu {sample[1]:5.2f} s  "
                          f"registry cpu {sample[2]:5.2f} s  layers {sample[3] / 1e6:6.1f} MB", flush=True)
        print(f"\npush, {args.runs} interleaved runs, fresh registry each; gzip backend {pgzip.BACKEND} "
              f"level {pgzip.default_level()}; wharfie backend {args.backend}")
        for name in archives:
            base = [x[0] for x in times.get((name, "docker→dockerd"), [])]
            for (n, who), samples in times.items():
                if n != name:
                    continue
                xs = [x[0] for x in samples]
                ratio = ""
                if base and who != "docker→dockerd":  # per pair: the runs made side by side
                    pairs = " ".join(f"{x / b:.2f}" for x, b in zip(xs, base, strict=True))
                    ratio = f"  {statistics.median(xs) / statistics.median(base):.2f}x dockerd (per pair {pairs})"
                cpu = "" if who == "docker→wharfied" else (
                    f"  cpu {statistics.median(x[1] for x in samples):.2f} s"
                    f" + registry {statistics.median(x[2] for x in samples):.2f} s")
                print(f"push {name:4} {who:16} median {statistics.median(xs):5.2f} s {_spread(xs)}{ratio}{cpu}"
                      f"  layers {samples[0][3] / 1e6:.1f} MB")
    finally:
        await eng.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--backend", default="linux" if os.geteuid() == 0 else "sim", choices=("linux", "sim"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--docker-host", default=None)
    p.add_argument("--start-dockerd", action="store_true", help="start a private dockerd (bench.peers)")
    p.add_argument("--wharfied", action="store_true", help="also push via the docker CLI through a wharfied")
    args = p.parse_args()
    from bench.peers import dockerd, wharfied

    tmp = tempfile.mkdtemp(prefix="bench-push-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        archives = make_archives(tmp, args.scale)
        with contextlib.ExitStack() as stack:
            dhost = args.docker_host
            if args.start_dockerd:
                dhost = "unix://" + stack.enter_context(dockerd(os.path.join(tmp, "d")))
            whost = None
            if args.wharfied:
                os.makedirs(os.path.join(tmp, "w"), exist_ok=True)
                whost = "unix://" + stack.enter_context(wharfied(os.path.join(tmp, "w"), args.backend))
            asyncio.run(run(args, dhost, whost, tmp, archives))
    finally:
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
