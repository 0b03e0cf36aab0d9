"""The per-container monitor and the zygote, for real: exit codes, the error pipe, signals, wait,
attach, tty, exec, fd hygiene, live-restore (a new LinuxKernel adopts what an earlier one
started) and the monitor's memory (printed, not asserted).

Root only: fails (not skips) when not root.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import signal
from typing import Any

import pytest

from engine.containers.logfile import read_entries
from engine.kernel import SIGKILL, SIGTERM, ExitStatus, LogSpec, StdioSpec
from tests.privileged.monitor_rig import Rig, loop, new_kernel, rig  # noqa: F401

pytestmark = pytest.mark.privileged


def _monitor_pid(rig: Rig, pid: int) -> int:
    return int(rig.kernel._px_procs[pid].state["monitor"])


async def _gone(pid: int, timeout: float = 5) -> bool:
    for _ in range(int(timeout / 0.05)):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_exit_codes(rig: Rig) -> None:
    k = rig.kernel
    for script, status in (("exit 3", ExitStatus(code=3)), ("true", ExitStatus(code=0)),
                           ("exit 300", ExitStatus(code=44))):
        pid = await rig.spawn("sh", "-c", script)
        assert await k.wait(pid, timeout=10) == status
        assert await k.wait(pid) == status  # repeatable until released
        await k.release(pid)
    init = await rig.spawn("sleep", "100")
    pid = await rig.exec(init, "sh", "-c", "kill -TERM $$; sleep 5")
    assert await k.wait(pid, timeout=10) == ExitStatus(signal=SIGTERM)
    await k.release(pid)


@pytest.mark.parametrize("argv, exc, code", [
    (("no-such-program",), FileNotFoundError, errno.ENOENT),
    (("/bin/missing",), FileNotFoundError, errno.ENOENT),
    (("/etc/passwd",), PermissionError, errno.EACCES),
])
async def test_spawn_error_classes_leave_nothing(rig: Rig, argv: tuple[str, ...],
                                                 exc: type[OSError], code: int) -> None:
    k = rig.kernel
    with pytest.raises(exc) as ei:
        await rig.spawn(*argv)
    assert ei.value.errno == code and ei.value.filename
    assert os.listdir(os.path.join(k.exec_root, "sandboxes")) == []
    assert await k.sandboxes() == []
    with pytest.raises(FileNotFoundError) as e2:
        await rig.spawn("true", cwd="/no/such/dir")
    assert e2.value.filename == "/no/such/dir"
    with pytest.raises(FileNotFoundError) as e3:
        await k.spawn(rig.spec("true", rootfs=rig.rootfs + "-missing"))
    assert e3.value.filename == rig.rootfs + "-missing"
    assert k._leaks_processes() == []


async def test_monitor_setup_failure_runs_nothing(rig: Rig, tmp_path: pathlib.Path) -> None:
    """The monitor opens the log while the child prepares the sandbox; the child waits for its
    go before exec, so a log that cannot be opened fails the spawn with nothing run."""
    k = rig.kernel
    (tmp_path / "afile").write_text("")
    log = LogSpec(str(tmp_path / "afile" / "log.json"), 1 << 20, 1)
    with pytest.raises(NotADirectoryError):
        await rig.spawn("sh", "-c", "echo ran > /tmp/marker", stdio=StdioSpec(log=log))
    assert not os.path.exists(os.path.join(rig.rootfs, "tmp", "marker"))
    assert os.listdir(os.path.join(k.exec_root, "sandboxes")) == []
    assert await k.sandboxes() == []
    assert k._leaks_processes() == []


async def test_concurrent_spawns(rig: Rig) -> None:
    """Starts in flight together each get a monitor (the zygote forks the next spare at once
    when a request waits, not only after the current monitor replied)."""
    k = rig.kernel
    pids = await asyncio.gather(*(rig.spawn("sh", "-c", f"exit {i}") for i in range(6)))
    assert len(set(pids)) == 6
    for i, pid in enumerate(pids):
        assert await k.wait(pid, timeout=10) == ExitStatus(code=i)
        await k.release(pid)


async def test_wait_timeout_and_pid1_ignores_sigterm(rig: Rig) -> None:
    k = rig.kernel
    loop = asyncio.get_running_loop()
    pid = await rig.spawn("sleep", "100")
    with pytest.raises(FileExistsError):
        await k.spawn(rig.spec("true", id=k._px_procs[pid].id))
    await k.signal(pid, SIGTERM)  # PID 1 without a handler: ignored
    t0 = loop.time()
    assert await k.wait(pid, timeout=1) is None
    assert loop.time() - t0 >= 1
    assert await k.wait(pid, timeout=0) is None
    for bad in (0, 65):
        with pytest.raises(OSError) as ei:
            await k.signal(pid, bad)
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as eb:
        await k.release(pid)
    assert eb.value.errno == errno.EBUSY
    waiters = [asyncio.ensure_future(k.wait(pid)) for _ in range(3)]
    await k.signal(pid, SIGKILL)
    assert await asyncio.gather(*waiters) == [ExitStatus(signal=SIGKILL)] * 3
    with pytest.raises(ProcessLookupError):
        await k.signal(pid, SIGKILL)
    await k.release(pid)
    for call in (k.wait(pid), k.release(pid), k.stdio(pid), k.processes(pid)):
        with pytest.raises(ProcessLookupError):
            await call


async def test_attach_stdin_cat_and_log(rig: Rig, tmp_path: pathlib.Path) -> None:
    k = rig.kernel
    log = str(tmp_path / "cat.log")
    pid = await rig.spawn("cat", stdio=StdioSpec(log=LogSpec(log), stdin_open=True))
    stdio = await k.stdio(pid)
    await stdio.write(b"hello\n")
    assert await stdio.read() == (1, b"hello\n")
    await stdio.close_stdin()
    assert await stdio.read() is None
    assert await k.wait(pid, timeout=5) == ExitStatus(code=0)
    with pytest.raises(BrokenPipeError):
        await stdio.write(b"late")
    with pytest.raises(OSError) as ei:
        await stdio.resize(24, 80)
    assert ei.value.errno == errno.ENOTTY
    stdio.close()
    assert [(e.stream, e.data) for e in read_entries(log)] == [("stdout", b"hello\n")]
    await k.release(pid)


async def test_early_output_reaches_the_first_attach(rig: Rig) -> None:
    pid = await rig.spawn("sh", "-c", "echo out; echo err >&2; exit 2")
    assert await rig.output(pid) == (b"out\n", b"err\n")
    assert await rig.kernel.wait(pid) == ExitStatus(code=2)
    await rig.kernel.release(pid)


async def test_tty(rig: Rig) -> None:
    k = rig.kernel
    pid = await rig.spawn("sh", stdio=StdioSpec(stdin_open=True, tty=True))
    stdio = await k.stdio(pid)
    await stdio.resize(40, 120)
    await stdio.write(b"stty size; echo to-stderr >&2; exit 5\n")
    got = bytearray()
    while (item := await asyncio.wait_for(stdio.read(), 10)) is not None:
        assert item[0] == 1  # a tty has one stream
        got += item[1]
    stdio.close()
    assert await k.wait(pid, timeout=5) == ExitStatus(code=5)
    assert b"40 120" in got and b"to-stderr" in got
    await k.release(pid)


async def test_exec(rig: Rig) -> None:
    k = rig.kernel
    init = await rig.spawn("sleep", "100", cwd="/tmp", hostname="mon-host")
    pid = await rig.exec(init, "sh", "-c", "pwd; hostname; echo e >&2; exit 4")
    assert await rig.output(pid) == (b"/tmp\nmon-host\n", b"e\n")
    assert await k.wait(pid) == ExitStatus(code=4)
    await k.release(pid)
    with pytest.raises(FileNotFoundError):
        await rig.exec(init, "nope")
    assert os.listdir(os.path.join(k.exec_root, "execs")) == []
    procs = await k.processes(init)
    assert [p.argv for p in procs] == [("sleep", "100")]
    other = await rig.exec(init, "sleep", "1000")
    await asyncio.sleep(0.1)
    assert sorted(p.argv for p in await k.processes(init)) == [("sleep", "100"), ("sleep", "1000")]
    with pytest.raises(ProcessLookupError):
        await k.processes(other)
    await k.signal(init, SIGKILL)
    assert await k.wait(init, timeout=5) == ExitStatus(signal=SIGKILL)
    assert await k.wait(other, timeout=5) == ExitStatus(signal=SIGKILL)  # the namespace died
    with pytest.raises(ProcessLookupError):
        await rig.exec(init, "true")
    await k.release(other)
    await k.release(init)


async def test_no_daemon_fd_reaches_the_container(rig: Rig) -> None:
    leak = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        pid = await rig.spawn("ls", "/proc/self/fd")
        out, _ = await rig.output(pid)
        assert await rig.kernel.wait(pid) == ExitStatus(code=0)
        await rig.kernel.release(pid)
        assert sorted(out.split()) == [b"0", b"1", b"2", b"3"]  # 3: ls's own directory fd
        init = await rig.spawn("sleep", "100")
        pid = await rig.exec(init, "ls", "/proc/self/fd")
        out, _ = await rig.output(pid)
        assert sorted(out.split()) == [b"0", b"1", b"2", b"3"]
    finally:
        os.close(leak)


async def test_live_restore(rig: Rig, tmp_path: pathlib.Path) -> None:
    k1 = rig.kernel
    log1, log2 = str(tmp_path / "running.log"), str(tmp_path / "ending.log")
    running = await rig.spawn(
        "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        id="running", stdio=StdioSpec(log=LogSpec(log1)))
    ending = await rig.spawn("sh", "-c", "echo start; sleep 1.5; echo end; exit 7", id="ending",
                             stdio=StdioSpec(log=LogSpec(log2)))
    monitors = [_monitor_pid(rig, running), _monitor_pid(rig, ending)]
    zygote = k1._px_zygote.pid
    os.kill(zygote, signal.SIGKILL)  # the daemon side dies: its zygote goes, monitors stay
    await k1.close()
    assert await _gone(zygote)
    await asyncio.sleep(2.5)  # "ending" exits while no daemon is there
    assert os.path.exists(f"/proc/{monitors[0]}")
    rig.kernel = k2 = new_kernel(tmp_path)
    infos = {s.id: s for s in await k2.sandboxes()}
    assert infos["ending"].pid == ending and infos["ending"].exit_status == ExitStatus(code=7)
    assert infos["running"].pid == running and infos["running"].exit_status is None
    assert [e.data for e in read_entries(log2)] == [b"start\n", b"end\n"]
    stdio = await k2.stdio(running)
    item = await asyncio.wait_for(stdio.read(), 5)
    assert item is not None and item[1].startswith(b"tick ")
    stdio.close()
    assert [p.argv[0] for p in await k2.processes(running)][0] == "sh"
    assert await k2.wait(running, timeout=0) is None
    await k2.signal(running, SIGKILL)
    assert await k2.wait(running, timeout=5) == ExitStatus(signal=SIGKILL)
    ticks = [int(e.data.split()[1]) for e in read_entries(log1)]
    assert len(ticks) > 20 and ticks == list(range(len(ticks)))  # no gap while "down"
    await k2.release(running)
    await k2.release(ending)
    assert await k2.sandboxes() == []
    assert os.listdir(os.path.join(k2.exec_root, "sandboxes")) == []


def _mem(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Private_Dirty:"):
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


async def test_monitor_memory(rig: Rig, capsys: Any) -> None:
    pids = [await rig.spawn("sleep", "100") for _ in range(5)]
    await asyncio.sleep(0.5)
    zygote = rig.kernel._px_zygote.pid
    with capsys.disabled():
        print(f"\nzygote {zygote}: {_mem(zygote)} kB")
        for pid in pids:
            mon = _monitor_pid(rig, pid)
            print(f"monitor {mon} of {pid}: {_mem(mon)} kB")
