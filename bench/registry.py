"""Benchmark: push and pull (download, verify, decompress, check, store) against Debian's
``docker-registry`` on loopback — a one-layer ~200 MB / 7k-file image and a five-layer ~220 MB
one — wharfie's engine in-process, and a dockerd side by side when ``--docker-host`` is given
(or ``--start-dockerd``).

Push: wharfie's sim engine pushes the first image of each kind (timed; for dockerd's push side
by side see ``bench.registry_push``).

Pull: a fresh wharfie engine on ``--backend`` (``linux`` as root: the pull unpacks the layers
into snapshots, as dockerd's does) and dockerd (through its API, as ``docker pull`` asks it:
``POST /images/create``, until the progress stream ends) pull the same images from the same
registry, ``--runs`` times, in pairs whose order alternates (wharfie first, then dockerd first,
…). Medians, spreads and the per-pair ratios are printed.

Kept equal on both sides, and out of the timed window:

* Every run pulls its *own* image (same shape, other random content, so other digests): no
  layer is already there, and nothing has to be deleted between runs. Both stores are emptied
  only after the last timed run. (Deleting ~7k files right before a run distorted the figures:
  this box's ext4 has no journal, and then skips recently deleted inodes when it allocates new
  ones, scanning past every one of them on each file created — 7k files then take 1-2 s, not
  0.15 s, for whoever happens to allocate in that block group next; ``--delete-between``
  measures that way.)
* The page cache is written back (``sync``) and the disk given a moment before each timed run.
* With ``--start-dockerd`` both stores live side by side under one directory, so ext4 gives both
  their inodes in the same block groups (where earlier deletions, e.g. other work on the box,
  cost the same to both).
* wharfie's timing starts at the pull call and ends when the image is recorded with its layers
  unpacked; dockerd's starts at the API request and ends with its progress stream (the image is
  registered and its layers unpacked by then). Neither includes a CLI's start-up.

    python -m bench.registry [--scale 1.0] [--backend linux] [--runs 3] [--delete-between]
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

from engine.bootstrap import make_engine
from tests.registry.rigs import RefRegistry

GOALS = {"one": 0.75, "five": 0.6}


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


def image_layers(name: str, scale: float) -> list[bytes]:
    """The layers of one variant of image ``name`` (fresh random content on every call)."""
    if name == "one":
        return [layer(int(7000 * scale), 30_000, 0)]
    return [layer(int(1500 * scale), 30_000, s) for s in range(1, 6)]


async def run(scale: float, docker_host: str | None, backend: str = "sim", runs: int = 1,
              delete_between: bool = False, parent: str | None = None) -> None:
    reg = RefRegistry().start()
    tmp = tempfile.mkdtemp(prefix="wharfie-", dir=parent or _tmpdir())
    pulled: list[str] = []  # dockerd's images, removed at the end
    try:
        a = make_engine("sim", os.path.join(tmp, "a"), os.path.join(tmp, "ar"), seed=1)
        await a.start()
        sizes: dict[str, int] = {}
        pushes: dict[str, float] = {}
        refs: dict[str, list[str]] = {}
        for name in GOALS:  # one variant per run, pushed up front
            refs[name] = []
            for r in range(runs):
                layers = image_layers(name, scale)
                ref = f"{reg.host}/bench/{name}:{r + 1}"
                parent = None
                for i, data in enumerate(layers):
                    parent = a.image_store.commit(io.BytesIO(data), parent, {"Cmd": ["sh"]},
                                                  ref if i == len(layers) - 1 else None)
                sizes[name] = sum(len(x) for x in layers)
                t0 = time.perf_counter()
                await a.image_push(ref)
                if r == 0:
                    pushes[name] = time.perf_counter() - t0
                refs[name].append(ref)
        pulls: list[tuple[str, list[float], list[float]]] = []
        for name in GOALS:
            ws, ds = [], []
            for r, ref in enumerate(refs[name]):  # pairs; who goes first alternates
                order = ("w", "d") if r % 2 == 0 else ("d", "w")
                for who in order:
                    if who == "w":
                        d = os.path.join(tmp, f"{name}{r}")
                        ws.append(await wharfie_pull(backend, ref, d))
                        if delete_between:
                            _cleanup(None, [], d)
                    elif docker_host:
                        ds.append(docker_pull(docker_host, ref))
                        pulled.append(ref)
                        if delete_between:
                            _cleanup(docker_host, [pulled.pop()], None)
            pulls.append((name, ws, ds))
        for name in GOALS:  # dockerd's push, side by side: bench.registry_push
            print(f"wharfie push {name:5} {sizes[name] / 1e6:7.1f} MB  {pushes[name]:6.2f} s")
        for name, ws, ds in pulls:
            line = f"pull {name:5} wharfie ({backend}) median {statistics.median(ws):5.2f} s {_spread(ws)}"
            if ds:
                pairs = [w / d for w, d in zip(ws, ds)]
                line += (f"  dockerd median {statistics.median(ds):5.2f} s {_spread(ds)}  ratio "
                         f"{statistics.median(ws) / statistics.median(ds):.2f}x, per pair "
                         f"{_spread(pairs)} (goal <= {GOALS[name]})")
            print(line)
        await a.close()
    finally:
        reg.stop()
        _cleanup(docker_host, pulled, tmp)


def _cleanup(docker_host: str | None, pulled: list[str], tmp: str | None) -> None:
    """Remove dockerd's images ``pulled`` and the directory ``tmp`` (wharfie's stores)."""
    if docker_host:
        env = {**os.environ, "DOCKER_HOST": docker_host}
        for ref in pulled:
            subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True, check=False)
    if tmp is not None:
        subprocess.run(["rm", "-rf", tmp], check=False)


def _tmpdir() -> str:
    return os.environ.get("TMPDIR", "/var/tmp")


def _settle() -> None:
    """Let the previous run's writeback and discards finish before the next timed run."""
    os.sync()
    time.sleep(2)


def _spread(xs: list[float]) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in sorted(xs)) + "]"


async def wharfie_pull(backend: str, ref: str, d: str) -> float:
    """One pull into a fresh engine at ``d`` (incl. unpacking on linux); ``d`` is kept (the
    caller removes it after the last timed run)."""
    b = make_engine(backend, os.path.join(d, "root"), os.path.join(d, "run"))
    await b.start()
    try:
        _settle()
        t0 = time.perf_counter()
        await b.image_pull(ref)
        return time.perf_counter() - t0
    finally:
        await b.close()


def docker_pull(host: str, ref: str) -> float:
    """One pull of ``ref`` (which dockerd does not have) through dockerd's API, as ``docker
    pull`` asks for it; returns when the progress stream ends (layers unpacked, image stored)."""
    assert host.startswith("unix://"), host
    name, tag = ref.rsplit(":", 1)
    _settle()
    t0 = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "--fail", "--unix-socket", host[len("unix://"):], "-X", "POST",
                          f"http://docker/images/create?fromImage={name}&tag={tag}"],
                         check=True, capture_output=True)
    took = time.perf_counter() - t0
    if b'"error"' in out.stdout:  # errors come in-band
        raise RuntimeError(f"dockerd pull {ref}: {out.stdout[-500:]!r}")
    return took


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--docker-host", default=None)
    p.add_argument("--backend", default="linux" if os.geteuid() == 0 else "sim",
                   help="the pulling engine's backend (linux unpacks, like dockerd)")
    p.add_argument("--runs", type=int, default=3, help="pulls per image and peer, in alternating pairs")
    p.add_argument("--start-dockerd", action="store_true", help="start a private dockerd (bench.peers)")
    p.add_argument("--delete-between", action="store_true",
                   help="remove each run's image right after it (the old way: the next run then "
                        "allocates inodes where ~7k files were just deleted)")
    args = p.parse_args()
    if args.start_dockerd:
        from bench.peers import dockerd

        # both stores side by side under one dir: ext4 places new dirs (and their files) near
        # their parent's, so both allocate inodes where the same earlier deletions were
        with tempfile.TemporaryDirectory(prefix="bench-reg-", dir=_tmpdir()) as tmp, dockerd(tmp) as sock:
            asyncio.run(run(args.scale, "unix://" + sock, args.backend, args.runs, args.delete_between, tmp))
        return
    asyncio.run(run(args.scale, args.docker_host, args.backend, args.runs, args.delete_between))


if __name__ == "__main__":
    main()
