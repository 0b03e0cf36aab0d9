"""Benchmark: ``load`` of a ~200 MB one-layer archive with ~7k files, and ``commit`` of a
container that wrote 50 MB — wharfie (engine in-process, sim backend by default) side by side
with a dockerd when ``--docker-host`` is given.

    python -m bench.images [--backend sim|linux] [--runs 3] [--docker-host unix:///run/docker.sock]

``load`` is timed ``--runs`` times, interleaved with dockerd's (a fresh wharfie state each time;
the disk is synced and given a moment before each timed run); medians and spreads are printed.
wharfie's load unpacks the layer into its snapshot as dockerd's does (a container created
right after must find it there: its creation is inside the timed span).

Goals (issue 5): load <= 0.7x docker's time, commit <= 1x docker's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
import time

from engine.bootstrap import make_engine
from engine.containers.spec import ContainerSpec
from engine.images.busybox import STUB_BINARY, find_busybox, rootfs_tar_bytes


def make_archive(d: str, files: int = 7000, size: int = 30_000) -> str:
    layer = os.path.join(d, "layer.tar")
    rnd = os.urandom(1 << 20)
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(files):
            ti = tarfile.TarInfo(f"data/d{i % 50}/f{i}")
            ti.size = size
            off = (i * 7919) % ((1 << 20) - size)
            tf.addfile(ti, io.BytesIO(rnd[off:off + size]))
    h = hashlib.sha256()
    with open(layer, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg_name = "blobs/sha256/" + hashlib.sha256(cfg).hexdigest()
    path = os.path.join(d, "big.tar")
    with tarfile.open(path, "w") as tf:
        tf.add(layer, "blobs/sha256/" + diff_id[7:])
        for name, data in ((cfg_name, cfg), ("manifest.json", json.dumps(
                [{"Config": cfg_name, "RepoTags": ["bench/big:1"],
                  "Layers": ["blobs/sha256/" + diff_id[7:]]}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    os.unlink(layer)
    return path


def settle() -> None:
    """Let the previous run's writeback and discards finish before the next timed run."""
    os.sync()
    time.sleep(2)


async def wharfie_load(backend: str, archive: str, d: str) -> float:
    """One load (incl. unpack) into a fresh engine; its state is removed afterwards."""
    eng = make_engine(backend, os.path.join(d, "lstate"), os.path.join(d, "lrun"))
    await eng.start()
    try:
        settle()
        t = time.perf_counter()
        with open(archive, "rb") as fh:
            await eng.image_load_async(fh)
        probe = await eng.container_create(ContainerSpec(image="bench/big:1", cmd=("true",)))
        took = time.perf_counter() - t
        await eng.container_remove(probe.id)
    finally:
        await eng.close()
        subprocess.run(["rm", "-rf", os.path.join(d, "lstate"), os.path.join(d, "lrun")], check=False)
    return took


def docker_load(host: str, archive: str) -> float:
    subprocess.run(["docker", "-H", host, "rmi", "-f", "bench/big:1"], capture_output=True)
    settle()
    t = time.perf_counter()
    subprocess.run(["docker", "-H", host, "load", "-i", archive], check=True, capture_output=True)
    took = time.perf_counter() - t
    subprocess.run(["docker", "-H", host, "rmi", "-f", "bench/big:1"], capture_output=True)
    return took


async def wharfie(backend: str, archive: str, d: str) -> tuple[float, float]:
    eng = make_engine(backend, os.path.join(d, "state"), os.path.join(d, "run"))
    await eng.start()
    binary = open(find_busybox(), "rb").read() if find_busybox() else STUB_BINARY  # noqa: SIM115
    eng.image_import(io.BytesIO(rootfs_tar_bytes(binary)), "busybox:latest", ['CMD ["sh"]'])
    t = time.perf_counter()
    with open(archive, "rb") as fh:
        await eng.image_load_async(fh)
    # docker's load includes unpacking into its storage driver; ours unpacks on first use: count it
    probe = await eng.container_create(ContainerSpec(image="bench/big:1", cmd=("true",)))
    load_s = time.perf_counter() - t
    await eng.container_remove(probe.id)
    c = await eng.container_create(ContainerSpec(image="busybox", cmd=("true",)))
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w") as tf:
        ti = tarfile.TarInfo("blob50m")
        ti.size = 50 << 20
        tf.addfile(ti, io.BytesIO(os.urandom(50 << 20)))
    big.seek(0)
    await eng.container_archive_put(c.id, "/tmp", big)
    t = time.perf_counter()
    await eng.container_commit(c.id, "bench/committed:1")
    commit_s = time.perf_counter() - t
    await eng.container_remove(c.id, force=True)
    await eng.close()
    return load_s, commit_s


def docker(host: str, archive: str) -> tuple[float, float]:
    def run(*argv: str) -> str:
        return subprocess.run(["docker", "-H", host, *argv], check=True, capture_output=True,
                              text=True).stdout

    subprocess.run(["docker", "-H", host, "rmi", "-f", "bench/big:1"], capture_output=True)
    t = time.perf_counter()
    run("load", "-i", archive)
    load_s = time.perf_counter() - t
    cid = run("create", "bench/big:1", "true").strip()
    blob = os.path.join(os.path.dirname(archive), "blob50m")
    with open(blob, "wb") as fh:
        fh.write(os.urandom(50 << 20))
    run("cp", blob, f"{cid}:/blob50m")  # the container wrote 50 MB
    t = time.perf_counter()
    run("commit", cid, "bench/committed:1")
    commit_s = time.perf_counter() - t
    run("rm", "-f", cid)
    run("rmi", "-f", "bench/committed:1", "bench/big:1")
    return load_s, commit_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="linux" if os.geteuid() == 0 else "sim")
    ap.add_argument("--docker-host", default=None)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as d:
        archive = make_archive(d)
        print(f"archive: {os.path.getsize(archive) >> 20} MiB")
        host = args.docker_host
        if host is None and os.geteuid() == 0:
            from bench.peers import dockerd

            with dockerd(d) as sock:
                measure(args.backend, archive, d, f"unix://{sock}", args.runs)
        else:
            measure(args.backend, archive, d, host, args.runs)


def _spread(xs: list[float]) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in sorted(xs)) + "]"


def measure(backend: str, archive: str, d: str, host: str | None, runs: int) -> None:
    wl: list[float] = []
    dl: list[float] = []
    for _ in range(runs):  # interleaved: wharfie, dockerd, wharfie, …
        wl.append(asyncio.run(wharfie_load(backend, archive, d)))
        if host:
            dl.append(docker_load(host, archive))
    _, wc = asyncio.run(wharfie(backend, archive, d))
    print(f"wharfie ({backend}): load median {statistics.median(wl):.2f}s {_spread(wl)}  "
          f"commit(50 MB) {wc:.2f}s")
    if host:
        _, dc = docker(host, archive)
        print(f"dockerd (overlay2): load median {statistics.median(dl):.2f}s {_spread(dl)}  "
              f"commit {dc:.2f}s")
        print(f"ratios: load {statistics.median(wl) / statistics.median(dl):.2f}x (goal <= 0.7)  "
              f"commit {wc / dc:.2f}x (goal <= 1)")


if __name__ == "__main__":
    main()
