"""Runs last in the privileged run: the host holds no kernel object of ours.

A leak is an engine bug, not a test bug: every suite before this one created containers,
overlay mounts, cgroups, network namespaces and veths, and must have given them all back.
"""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.privileged

OURS = ("wharfie", "/wh-", "pytest-of-")


def test_no_mounts_left() -> None:
    with open("/proc/self/mountinfo") as fh:
        lines = fh.read().splitlines()
    ours = [ln for ln in lines if " overlay " in ln or any(tag in ln.split()[4] for tag in OURS)]
    assert ours == []


def test_no_cgroups_left() -> None:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        depth = top.count("/") - "/sys/fs/cgroup".count("/")
        if depth >= 3:
            dirs[:] = []
        found += [os.path.join(top, d) for d in dirs if "wharfie" in d]
    assert found == []


def test_no_network_namespaces_or_veths_left() -> None:
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert netns == []
    veths = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True)
    assert veths.stdout.strip() == ""


def test_no_processes_left() -> None:
    me = os.getpid()
    ours = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(k in cmd for k in ("wharfie-monitor", "wharfie-exec", "backends.linux.zygote",
                                  "engine.api.daemon")):
            ours.append(f"{p}: {cmd}")
    assert ours == []
