"""Benchmark: push and pull (download, verify, decompress, check, store) against Debian's
``docker-registry`` on loopback — a one-layer ~200 MB / 7k-file image and a five-layer ~220 MB
one — wharfie's engine in-process, and a dockerd side by side when ``--docker-host`` is given
(or ``--start-dockerd``).

Pull: a fresh wharfie engine on ``--backend`` (``linux`` as root: the pull unpacks the layers
into snapshots, as dockerd's does) and dockerd both pull the *same* image from the same
registry, ``--runs`` times interleaved (the page cache is synced and the disk given a moment
between runs); medians and spreads are printed. Push: wharfie's sim engine pushes the image it
made, dockerd pushes a copy loaded from wharfie's save.

    python -m bench.registry [--scale 1.0] [--backend linux] [--runs 3]
                             [--docker-host unix:///run/docker.sock | --start-dockerd]

Goals (issue 6): pull <= 0.75x docker's time (one layer), <= 0.6x (five layers); push <= 0.3x.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from typing import Any

from engine.bootstrap import make_engine
from tests.registry.rigs import RefRegistry


def layer(files: int, size: int, seed: int) -> bytes:
    rnd = os.urandom(1 << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(files):
            # half random, half text: compresses about 2:1 like real software
            off = (i * 7919 + seed) % ((1 << 20) - size)
            data = rnd[off:off + size // 2] + (b"lorem ipsum %d " % i) * (size // 32)
            ti = tarfile.TarInfo(f"l{seed}/d{i % 50}/f{i}")
            ti.size, ti.mtime = len(data), 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def run(scale: float, docker_host: str | None, backend: str = "sim", runs: int = 1) -> None:
    reg = RefRegistry().start()
    tmp = tempfile.mkdtemp(prefix="bench-reg-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        a = make_engine("sim", os.path.join(tmp, "a"), os.path.join(tmp, "ar"), seed=1)
        await a.start()
        images: dict[str, list[bytes]] = {
            "one": [layer(int(7000 * scale), 30_000, 0)],
            "five": [layer(int(1500 * scale), 30_000, s) for s in range(1, 6)],
        }
        rows: list[tuple[str, str, float, float, int]] = []
        pulls: list[tuple[str, list[float], list[float]]] = []
        for name, layers in images.items():
            parent = None
            ref = f"{reg.host}/bench/{name}:1"
            for i, data in enumerate(layers):
                parent = a.image_store.commit(io.BytesIO(data), parent, {"Cmd": ["sh"]},
                                              ref if i == len(layers) - 1 else None)
            size = sum(len(x) for x in layers)
            t0 = time.perf_counter()
            await a.image_push(ref)
            t_push = time.perf_counter() - t0
            wharfie_pulls, docker_pulls = [], []
            for i in range(runs):  # interleaved: wharfie, dockerd, wharfie, …
                wharfie_pulls.append(await wharfie_pull(backend, ref, os.path.join(tmp, f"b{i}")))
                if docker_host:
                    docker_pulls.append(docker_pull(docker_host, ref))
            pulls.append((name, wharfie_pulls, docker_pulls))
            rows.append(("wharfie", name, t_push, statistics.median(wharfie_pulls), size))
            if docker_host:
                rows.append(docker_side(docker_host, a, ref, name, tmp, size))
        for who, name, push, pull, size in rows:
            print(f"{who:8} {name:5} {size / 1e6:7.1f} MB  push {push:6.2f} s  pull {pull:6.2f} s")
        for name, ws, ds in pulls:
            line = f"pull {name:5} wharfie ({backend}) median {statistics.median(ws):5.2f} s {_spread(ws)}"
            if ds:
                line += (f"  dockerd median {statistics.median(ds):5.2f} s {_spread(ds)}  ratio "
                         f"{statistics.median(ws) / statistics.median(ds):.2f}x "
                         f"(goal <= {0.75 if name == 'one' else 0.6})")
            print(line)
        await a.close()
    finally:
        reg.stop()
        subprocess.run(["rm", "-rf", tmp], check=False)


def _settle() -> None:
    """Let the previous run's writeback and discards finish before the next timed run."""
    os.sync()
    time.sleep(2)


def _spread(xs: list[float]) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in sorted(xs)) + "]"


async def wharfie_pull(backend: str, ref: str, d: str) -> float:
    """One pull into a fresh engine (incl. unpacking on linux); the state is removed after."""
    b = make_engine(backend, os.path.join(d, "root"), os.path.join(d, "run"))
    await b.start()
    try:
        _settle()
        t0 = time.perf_counter()
        await b.image_pull(ref)
        return time.perf_counter() - t0
    finally:
        await b.close()
        subprocess.run(["rm", "-rf", d], check=False)


def docker_pull(host: str, ref: str) -> float:
    """One ``docker pull`` of ``ref`` into a dockerd that does not have it (layers unpacked)."""
    env = {**os.environ, "DOCKER_HOST": host}
    subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True)
    subprocess.run(["docker", "image", "prune", "-af"], env=env, capture_output=True)
    _settle()
    t0 = time.perf_counter()
    subprocess.run(["docker", "pull", ref], env=env, check=True, capture_output=True)
    took = time.perf_counter() - t0
    subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True)
    return took


def docker_side(host: str, a: Any, ref: str, name: str, tmp: str, size: int) -> tuple[str, str, float, float, int]:
    env = {**os.environ, "DOCKER_HOST": host}
    archive = os.path.join(tmp, f"{name}.tar")
    with open(archive, "wb") as fh:
        a.image_save([ref], fh)
    dref = ref.replace("/bench/", "/bench-docker/")

    def d(*args: str) -> None:
        subprocess.run(["docker", *args], env=env, check=True, capture_output=True)

    d("load", "-i", archive)
    d("tag", ref, dref)
    t0 = time.perf_counter()
    d("push", dref)
    push = time.perf_counter() - t0
    d("rmi", ref, dref)
    t0 = time.perf_counter()
    d("pull", dref)
    pull = time.perf_counter() - t0
    d("rmi", dref)
    return ("dockerd", name, push, pull, size)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--docker-host", default=None)
    p.add_argument("--backend", default="linux" if os.geteuid() == 0 else "sim",
                   help="the pulling engine's backend (linux unpacks, like dockerd)")
    p.add_argument("--runs", type=int, default=3, help="interleaved pulls per image and peer")
    p.add_argument("--start-dockerd", action="store_true", help="start a private dockerd (bench.peers)")
    args = p.parse_args()
    if args.start_dockerd:
        from bench.peers import dockerd

        with tempfile.TemporaryDirectory(prefix="bench-dockerd-") as tmp, dockerd(tmp) as sock:
            asyncio.run(run(args.scale, "unix://" + sock, args.backend, args.runs))
        return
    asyncio.run(run(args.scale, args.docker_host, args.backend, args.runs))


if __name__ == "__main__":
    main()
