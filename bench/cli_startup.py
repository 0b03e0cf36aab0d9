#!/usr/bin/env python3
"""CLI start-up and ``ps`` round trip: ``wharfie --version``, ``wharfie ps``, ``docker ps``
against one wharfied (sim backend, a few containers), plus the bare API round trip of
``GET /containers/json`` from an already-running process.

Uses hyperfine when installed (``apt-get install hyperfine``), else a Python timing loop.
Prints figures and ratios; run on demand: ``python bench/cli_startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.api.daemon import Daemon  # noqa: E402


def python_loop(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times), statistics.stdev(times) if len(times) > 1 else 0.0


def hyperfine(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", out.name,
                        " ".join(cmd)], env=env, capture_output=True, check=True)
        res = json.load(open(out.name))["results"][0]
    return res["mean"], res["stddev"]


def api_round_trip(host: str, runs: int) -> tuple[float, float]:
    from engine.client import Client

    c = Client(host)
    c.containers(all=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        c.containers(all=True)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times), statistics.stdev(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    d = Daemon()
    d.start()
    try:
        d.import_busybox()
        c = d.client()
        for i in range(5):
            cid = c.create({"Image": "busybox", "Cmd": ["sleep", "600"]}, f"bench{i}")["Id"]
            c.start(cid)
        env = {**os.environ, "WHARFIE_HOST": d.host, "DOCKER_HOST": d.host, "PYTHONPATH": ROOT}
        wharfie = shutil.which("wharfie")
        wh = [wharfie] if wharfie else [sys.executable, "-m", "engine.cli.main"]
        cases = {"wharfie --version": wh + ["--version"], "wharfie ps": wh + ["ps"],
                 "python -c pass (floor)": [sys.executable, "-c", "pass"]}
        docker = shutil.which("docker")
        if docker:
            cases["docker ps"] = [docker, "ps"]
        timer = hyperfine if shutil.which("hyperfine") else python_loop
        print(f"timer: {'hyperfine' if timer is hyperfine else 'python loop'}, {args.runs} runs each\n")
        results = {}
        for name, cmd in cases.items():
            mean, sd = timer(cmd, env, args.runs)
            results[name] = mean
            print(f"{name:28s} {mean * 1000:8.1f} ms ± {sd * 1000:5.1f}")
        mean, sd = api_round_trip(d.host, args.runs * 10)
        print(f"{'API GET /containers/json':28s} {mean * 1000:8.2f} ms ± {sd * 1000:5.2f}  (in-process client)")
        if "docker ps" in results:
            print(f"\nwharfie ps / docker ps       {results['wharfie ps'] / results['docker ps']:.2f}x")
        print(f"wharfie ps / wharfie --version {results['wharfie ps'] / results['wharfie --version']:.2f}x")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
