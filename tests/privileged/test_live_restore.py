"""Live-restore through the real daemon: containers outlive a SIGKILLed wharfied.

Start containers, SIGKILL the daemon, let one container exit meanwhile, start the daemon again:
the running one still runs with no gap in its logs, the exited one reports its real exit code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.api.daemon import Daemon

pytestmark = pytest.mark.privileged


@pytest.fixture
def linux_daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.fail("the privileged suite needs root")
    d = Daemon("linux")
    d.start()
    d.import_busybox()
    yield d
    d.stop()


def _wait(pred: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def test_containers_survive_a_killed_daemon(linux_daemon: Daemon) -> None:
    d = linux_daemon
    c = d.client()
    counter = c.create({"Image": "busybox", "Cmd": [
        "sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done"]})["Id"]
    short = c.create({"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1.5; exit 42"]})["Id"]
    c.start(counter)
    c.start(short)
    pid_before = c.container(counter)["State"]["Pid"]
    time.sleep(0.5)

    assert d.proc is not None
    d.proc.kill()  # SIGKILL: no shutdown path runs
    d.proc.wait(10)
    time.sleep(3)  # the short one exits while no daemon runs; the counter keeps logging

    d.start()
    c = d.client()
    state = c.container(counter)["State"]
    assert state["Running"] and state["Pid"] == pid_before
    _wait(lambda: c.container(short)["State"]["Status"] == "exited")
    st = c.container(short)["State"]
    assert st["ExitCode"] == 42, st

    raw = b"".join(chunk for _, chunk in c.logs(counter, stdout=True, stderr=True))
    numbers = [int(x) for x in raw.split()]
    assert numbers == list(range(len(numbers))), "the log has a gap or a repeat"
    assert len(numbers) >= 20  # ~4 s at 10 lines/s, with slack for a loaded machine
    c.remove(counter, force=True)
    c.remove(short, force=True)
