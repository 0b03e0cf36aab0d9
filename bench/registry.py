"""Benchmark: push and pull (download, verify, decompress, check, store) against Debian's
``docker-registry`` on loopback — a one-layer ~200 MB / 7k-file image and a five-layer ~220 MB
one — wharfie's engine in-process (sim backend), and a dockerd side by side when
``--docker-host`` is given (the same images, loaded there first; its pull includes unpacking).

    python -m bench.registry [--scale 1.0] [--docker-host unix:///run/docker.sock]

Goals (issue 6): pull <= 0.75x docker's time (one layer), <= 0.6x (five layers); push <= 0.3x.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
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


async def run(scale: float, docker_host: str | None) -> None:
    reg = RefRegistry().start()
    tmp = tempfile.mkdtemp(prefix="bench-reg-")
    try:
        a = make_engine("sim", os.path.join(tmp, "a"), os.path.join(tmp, "ar"), seed=1)
        b = make_engine("sim", os.path.join(tmp, "b"), os.path.join(tmp, "br"), seed=2)
        await a.start()
        await b.start()
        images: dict[str, list[bytes]] = {
            "one": [layer(int(7000 * scale), 30_000, 0)],
            "five": [layer(int(1500 * scale), 30_000, s) for s in range(1, 6)],
        }
        rows: list[tuple[str, str, float, float, int]] = []
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
            t0 = time.perf_counter()
            await b.image_pull(ref)
            t_pull = time.perf_counter() - t0
            rows.append(("wharfie", name, t_push, t_pull, size))
            if docker_host:
                rows.append(docker_side(docker_host, a, ref, name, tmp, size))
        for who, name, push, pull, size in rows:
            print(f"{who:8} {name:5} {size / 1e6:7.1f} MB  push {push:6.2f} s  pull {pull:6.2f} s")
        await a.close()
        await b.close()
    finally:
        reg.stop()
        subprocess.run(["rm", "-rf", tmp], check=False)


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
    p.add_argument("--start-dockerd", action="store_true", help="start a private dockerd (bench.peers)")
    args = p.parse_args()
    if args.start_dockerd:
        from bench.peers import dockerd

        with tempfile.TemporaryDirectory(prefix="bench-dockerd-") as tmp, dockerd(tmp) as sock:
            asyncio.run(run(args.scale, "unix://" + sock))
        return
    asyncio.run(run(args.scale, args.docker_host))


if __name__ == "__main__":
    main()
