"""``backends.linux.sandbox.exec_main``: a process joining a running container's sandbox."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest

from backends.linux import caps
from tests.privileged.sandbox_rig import Rig
from tests.privileged.test_sandbox import DOCKER_DEFAULT_MASK, mountpoints, status_fields

pytestmark = pytest.mark.privileged


@pytest.fixture
def rig(tmp_path: Any) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_exec_sees_the_container(rig: Rig) -> None:
    init = rig.start(rig.spec("sleep", "100", hostname="exec-host", cwd="/tmp"))
    r = rig.exec(init, "sh", "-c", "hostname; echo $$; pwd; ps -o pid,comm; true", init_cwd="/tmp")
    assert r.code == 0, r.err
    lines = r.out.decode().splitlines()
    assert lines[0] == "exec-host"
    assert lines[1] != "1"
    assert lines[2] == "/tmp"
    procs = [ln.split() for ln in lines[4:]]
    assert procs[0] == ["1", "sleep"] and len(procs) == 3  # sleep, our sh, ps
    r = rig.exec(init, "cat", "/proc/self/mountinfo")
    points = mountpoints(r.out)
    assert points[0] == "/" and all(p == "/" or p.startswith(("/proc", "/sys", "/dev")) for p in points)
    r = rig.exec(init, "ls", "/sys/class/net")
    assert r.out == b"lo\n"


def test_exec_security_matches_the_container(rig: Rig) -> None:
    init = rig.start(rig.spec("sleep", "100"))
    r = rig.exec(init, "sh", "-c", "grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status; ls /proc/$$/fd; true")
    fields = status_fields(b"\n".join(r.out.splitlines()[:8]))
    assert int(fields["CapEff"], 16) == DOCKER_DEFAULT_MASK
    assert int(fields["CapBnd"], 16) == DOCKER_DEFAULT_MASK
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "0"
    assert r.out.decode().split()[-3:] == ["0", "1", "2"]
    r = rig.exec(init, "sh", "-c", "unshare -U true; echo rc=$?")
    assert r.out == b"rc=1\n"
    r = rig.exec(init, "grep", "CapEff", "/proc/self/status", privileged=True)
    assert int(status_fields(r.out)["CapEff"], 16) == caps.mask(caps.all_caps()) & caps.proc_caps()["CapPrm"]


def test_exec_inherits_drops_and_no_new_privs(rig: Rig) -> None:
    spec = rig.spec("sleep", "100", cap_drop=("ALL",), cap_add=("KILL",), no_new_privileges=True)
    init = rig.start(spec)
    for given in (None, spec):
        r = rig.exec(init, "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs|Seccomp):", "/proc/self/status",
                     init_spec=given)
        fields = status_fields(r.out)
        assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == 1 << caps.NUMBERS["KILL"]
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"


def test_exec_into_a_privileged_container_is_unconfined(rig: Rig) -> None:
    init = rig.start(rig.spec("sleep", "100", privileged=True))
    r = rig.exec(init, "grep", "Seccomp:", "/proc/self/status")
    assert status_fields(r.out)["Seccomp"] == "0"


def test_exec_user_cwd_env(rig: Rig) -> None:
    init = rig.start(rig.spec("sleep", "100"))
    r = rig.exec(init, "sh", "-c", "id -u; pwd; echo $FOO $HOME", user="alice", cwd="/etc",
                 env=("PATH=/bin", "FOO=bar"))
    assert r.out == b"1000\n/etc\nbar /home/alice\n", r.err


def test_exec_errors(rig: Rig) -> None:
    init = rig.start(rig.spec("sleep", "100"))
    with pytest.raises(FileNotFoundError) as ei:
        rig.exec(init, "nope")
    assert ei.value.filename == "nope"
    with pytest.raises(FileNotFoundError) as ei:
        rig.exec(init, "true", cwd="/nowhere")
    assert ei.value.filename == "/nowhere"
    with pytest.raises(OSError) as e2:
        rig.exec(init, "true", user="mallory")
    assert e2.value.errno == errno.EINVAL
    with pytest.raises(PermissionError):
        rig.exec(init, "/bin/notexec")
