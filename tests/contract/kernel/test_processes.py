"""Kernel contract: the Processes role, over a busybox rootfs built through the protocol.

Runs unchanged on the sim and (with real busybox) on Linux; ``@pytest.mark.sim`` marks fault
injection, which only the sim has.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import errno
from typing import Any

import pytest

from engine.containers.logfile import read_entries
from engine.kernel import (SIGKILL, SIGNALS, SIGTERM, ExecSpec, ExitStatus, LogSpec, MountSpec, Namespace,
                           Resources, SpawnSpec, StdioSpec)
from tests.contract.kernel.rootfs import PATH_ENV, Box, box  # noqa: F401

SIGSTOP, SIGCONT = SIGNALS["STOP"], SIGNALS["CONT"]


# ---- spawn ------------------------------------------------------------------------------------
async def test_spawn_exit_code_and_output(box: Box) -> None:
    code, out, err = await box.run("sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert (code, out, err) == (3, b"hello\n", b"oops\n")


async def test_true_false(box: Box) -> None:
    assert (await box.run("true"))[0] == 0
    assert (await box.run("false"))[0] == 1


async def test_spawn_absolute_path_and_env(box: Box) -> None:
    code, out, _ = await box.run("/bin/sh", "-c", 'echo "$GREETING ${WHO:-nobody}"',
                                 env=(PATH_ENV, "GREETING=hi", "WHO=there"))
    assert (code, out) == (0, b"hi there\n")


async def test_spawn_cwd(box: Box) -> None:
    assert (await box.run("pwd", cwd="/tmp"))[1] == b"/tmp\n"


async def test_spawn_missing_rootfs(kernel: Any, box: Box) -> None:
    with pytest.raises(FileNotFoundError):
        await box.spawn("true", rootfs=box.target + "-nothing-here")


async def test_spawn_missing_executable(kernel: Any, box: Box) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        await box.spawn("no-such-program")
    assert ei.value.errno == errno.ENOENT
    assert ei.value.filename and "no-such-program" in ei.value.filename
    with pytest.raises(FileNotFoundError):
        await box.spawn("/bin/missing")


async def test_spawn_not_executable(box: Box) -> None:
    with pytest.raises(PermissionError):
        await box.spawn("/bin/notexec")
    with pytest.raises(PermissionError):
        await box.spawn("/tmp")


async def test_spawn_exec_format_error(box: Box) -> None:
    with pytest.raises(OSError) as ei:
        await box.spawn("/bin/garbage")
    assert ei.value.errno == errno.ENOEXEC


async def test_spawn_script_with_shebang(box: Box) -> None:
    code, out, _ = await box.run("/bin/script", "arg")
    assert (code, out) == (4, b"script arg\n")


async def test_spawn_missing_cwd(box: Box) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        await box.spawn("true", cwd="/no/such/dir")
    assert ei.value.filename == "/no/such/dir"


@pytest.mark.parametrize("user, expect", [
    ("", b"uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"),
    ("alice", b"uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)\n"),
    ("1000", b"uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)\n"),
    ("alice:wheel", b"uid=1000(alice) gid=10(wheel) groups=10(wheel)\n"),
    ("4242:4343", b"uid=4242 gid=4343 groups=4343\n"),
])
async def test_spawn_user(box: Box, user: str, expect: bytes) -> None:
    code, out, _ = await box.run("id", user=user)
    assert (code, out) == (0, expect)


@pytest.mark.parametrize("user, word", [("mallory", "user mallory"),
                                        ("alice:nogrp", "group nogrp")])
async def test_spawn_unknown_user(box: Box, user: str, word: str) -> None:
    with pytest.raises(OSError) as ei:
        await box.spawn("true", user=user)
    assert ei.value.errno == errno.EINVAL
    assert word in str(ei.value)


async def test_spawn_missing_cgroup_and_netns(box: Box) -> None:
    with pytest.raises(FileNotFoundError):
        await box.spawn("true", cgroup="wharfie-test/none")
    with pytest.raises(FileNotFoundError):
        await box.spawn("true", netns="no-such-netns")


async def test_spawn_same_id_while_running(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sleep", "100", id="dup")
    with pytest.raises(FileExistsError):
        await box.spawn("true", id="dup")
    await kernel.signal(pid, SIGKILL)
    assert await kernel.wait(pid) == ExitStatus(signal=SIGKILL)
    pid2 = await box.spawn("true", id="dup")  # an exited sandbox does not block the id
    assert await kernel.wait(pid2) == ExitStatus(code=0)
    await box.release(pid)
    await box.release(pid2)


async def test_hostname_and_etc_files(box: Box) -> None:
    code, out, _ = await box.run(
        "sh", "-c", "hostname; cat /etc/hostname", hostname="box1",
        etc_files=(("/etc/hostname", b"box1\n"), ("/etc/hosts", b"127.0.0.1 localhost\n")))
    assert (code, out) == (0, b"box1\nbox1\n")


async def test_readonly_rootfs_and_tmpfs(box: Box) -> None:
    code, out, err = await box.run(
        "sh", "-c", "echo x > /etc/new; echo rc=$?; echo y > /scratch/f && cat /scratch/f",
        readonly_rootfs=True, mounts=(MountSpec("tmpfs", "/scratch"),))
    assert code == 0
    assert out == b"rc=1\ny\n"
    assert b"Read-only file system" in err


async def test_writes_land_in_the_rootfs(kernel: Any, box: Box) -> None:
    assert (await box.run("sh", "-c", "echo data > /tmp/out.txt"))[0] == 0
    assert await kernel.read_file(box.target, "/tmp/out.txt") == b"data\n"


async def test_private_network_namespace_is_not_a_leak(kernel: Any, box: Box) -> None:
    code, _, _ = await box.run("true", namespaces=frozenset({Namespace.PID, Namespace.NET,
                                                             Namespace.MOUNT}))
    assert code == 0


@pytest.mark.sim
async def test_spawn_fault_leaves_nothing(kernel: Any, box: Box) -> None:
    kernel.faults.fail_next("spawn", errno.EAGAIN)
    with pytest.raises(OSError) as ei:
        await box.spawn("sleep", "100")
    assert ei.value.errno == errno.EAGAIN
    assert "processes" not in kernel.leaks()
    assert await kernel.sandboxes() == []
    kernel.faults.fail_next("exec_binary", errno.ENOMEM)
    with pytest.raises(OSError):
        await box.spawn("true")
    assert await kernel.sandboxes() == []


# ---- signals, wait, release ------------------------------------------------------------------
async def test_pid1_ignores_sigterm_without_handler(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sleep", "100")
    await kernel.signal(pid, SIGTERM)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await kernel.wait(pid, timeout=10) is None  # the stop timeout passes
    assert loop.time() - t0 >= 10
    await kernel.signal(pid, SIGKILL)
    status = await kernel.wait(pid)
    assert status == ExitStatus(signal=SIGKILL) and status.exit_code == 137
    await box.release(pid)


async def test_trap_handles_sigterm(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sh", "-c", 'trap "exit 3" TERM; while true; do sleep 0.1; done')
    await asyncio.sleep(0.5)
    await kernel.signal(pid, SIGTERM)
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=3)
    await box.release(pid)


async def test_trap_interrupts_wait_builtin(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sh", "-c", 'trap "echo bye; exit 0" TERM; sleep 1000 & wait')
    stdio = await kernel.stdio(pid)
    await asyncio.sleep(0.5)
    await kernel.signal(pid, SIGTERM)
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=0)
    assert await stdio.read() == (1, b"bye\n")
    await box.release(pid)


async def test_non_init_process_dies_of_sigterm(kernel: Any, box: Box) -> None:
    init = await box.spawn("sleep", "100")
    child = await box.exec(init, "sleep", "100")
    await kernel.signal(child, SIGTERM)
    assert await kernel.wait(child, timeout=5) == ExitStatus(signal=SIGTERM)
    await box.release(child)
    assert await kernel.wait(init, timeout=0) is None


async def test_signal_errors(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sleep", "100")
    for bad in (0, 65, -1):
        with pytest.raises(OSError) as ei:
            await kernel.signal(pid, bad)
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei2:
        await kernel.release(pid)
    assert ei2.value.errno == errno.EBUSY
    await kernel.signal(pid, SIGKILL)
    await kernel.wait(pid)
    with pytest.raises(ProcessLookupError):
        await kernel.signal(pid, SIGTERM)
    assert await kernel.wait(pid) == ExitStatus(signal=SIGKILL)  # repeatable until release
    await box.release(pid)
    for call in (kernel.wait(pid), kernel.release(pid), kernel.signal(pid, SIGKILL),
                 kernel.processes(pid), kernel.stdio(pid)):
        with pytest.raises(ProcessLookupError):
            await call
    with pytest.raises(ProcessLookupError):
        await kernel.wait(999_999)


async def test_wait_poll(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sleep", "1")
    assert await kernel.wait(pid, timeout=0) is None
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=0)
    await box.release(pid)


async def test_stop_and_continue(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sleep", "100")
    await kernel.signal(pid, SIGSTOP)
    await asyncio.sleep(0.1)
    assert [p.state for p in await kernel.processes(pid)] == ["T"]
    await kernel.signal(pid, SIGCONT)
    await asyncio.sleep(0.1)
    assert [p.state for p in await kernel.processes(pid)] != ["T"]
    await kernel.signal(pid, SIGKILL)
    await kernel.wait(pid)
    await box.release(pid)


async def test_init_exit_kills_the_rest(kernel: Any, box: Box) -> None:
    init = await box.spawn("sh", "-c", "sleep 1000 & sleep 1000 & sleep 1")
    other = await box.exec(init, "sleep", "1000")
    assert await kernel.wait(init, timeout=30) is not None
    assert await kernel.wait(other, timeout=5) == ExitStatus(signal=SIGKILL)
    sandboxes = await kernel.sandboxes()
    assert [(s.pid, s.exit_status is not None) for s in sandboxes] == [(init, True)]
    with pytest.raises(ProcessLookupError):
        await kernel.exec(init, ExecSpec(argv=("true",)))
    await box.release(other)
    await box.release(init)
    assert await kernel.sandboxes() == []


# ---- exec, top ---------------------------------------------------------------------------------
async def test_exec(kernel: Any, box: Box) -> None:
    init = await box.spawn("sleep", "100", cwd="/tmp", hostname="exec-host")
    pid = await box.exec(init, "sh", "-c", "pwd; hostname; id -u; echo $FOO; exit 5",
                         env=(PATH_ENV, "FOO=bar"), user="alice")
    out, _ = await box.collect(pid)
    assert await kernel.wait(pid) == ExitStatus(code=5)
    assert out == b"/tmp\nexec-host\n1000\nbar\n"
    await box.release(pid)
    pid = await box.exec(init, "pwd", cwd="/etc")
    out, _ = await box.collect(pid)
    assert out == b"/etc\n"
    await kernel.wait(pid)
    await box.release(pid)
    with pytest.raises(FileNotFoundError):
        await box.exec(init, "nope")
    with pytest.raises(FileNotFoundError):
        await box.exec(init, "true", cwd="/nowhere")
    with pytest.raises(OSError) as ei:
        await box.exec(init, "true", user="mallory")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ProcessLookupError):
        await box.exec(999_999, "true")  # type: ignore[arg-type]


async def test_top_lists_sandbox_processes_init_first(kernel: Any, box: Box) -> None:
    init = await box.spawn("sh", "-c", "sleep 1000 & sleep 2000 & wait")
    await asyncio.sleep(0.5)
    extra = await box.exec(init, "sleep", "3000")
    await asyncio.sleep(0.1)
    procs = await kernel.processes(init)
    assert procs[0].pid == init
    argvs = sorted(p.argv for p in procs[1:])
    assert argvs == [("sleep", "1000"), ("sleep", "2000"), ("sleep", "3000")]
    assert all(p.start_time > 1e9 for p in procs)
    with pytest.raises(ProcessLookupError):
        await kernel.processes(extra)  # not a sandbox init
    code, out, _ = await box.run("ps")
    assert out.splitlines()[0].split()[:2] == [b"PID", b"USER"]
    await kernel.signal(init, SIGKILL)
    await kernel.wait(init)


# ---- stdio -----------------------------------------------------------------------------------
async def test_attach_stdin_cat(kernel: Any, box: Box) -> None:
    pid = await box.spawn("cat", stdio=StdioSpec(stdin_open=True))
    stdio = await kernel.stdio(pid)
    await stdio.write(b"hello\n")
    assert await stdio.read() == (1, b"hello\n")
    await stdio.write(b"again\n")
    assert await stdio.read() == (1, b"again\n")
    await stdio.close_stdin()
    await stdio.close_stdin()  # idempotent
    assert await stdio.read() is None
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=0)
    with pytest.raises(BrokenPipeError):
        await stdio.write(b"late")
    with pytest.raises(OSError) as ei:
        await stdio.resize(24, 80)
    assert ei.value.errno == errno.ENOTTY
    stdio.close()
    await box.release(pid)


async def test_stdin_closed_by_default(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sh", "-c", "read x; echo got:$x; sleep 1")
    stdio = await kernel.stdio(pid)
    with pytest.raises(BrokenPipeError):
        await stdio.write(b"data\n")
    assert await stdio.read() == (1, b"got:\n")
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=0)
    await box.release(pid)


async def test_shell_reads_commands_from_stdin(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sh", stdio=StdioSpec(stdin_open=True, tty=True))
    stdio = await kernel.stdio(pid)
    await stdio.resize(40, 120)
    await stdio.write(b"echo one\necho two >&2\nexit 7\n")
    assert await kernel.wait(pid, timeout=5) == ExitStatus(code=7)
    got = []
    while (item := await stdio.read()) is not None:
        got.append(item)
    assert got == [(1, b"one\n"), (1, b"two\n")]  # a tty merges stderr into fd 1
    await box.release(pid)


async def test_log_file(kernel: Any, box: Box, tmp_path: Any) -> None:
    log = str(tmp_path / "c.log")
    code, _, _ = await box.run("sh", "-c", "echo out; echo err >&2; printf partial",
                               stdio=StdioSpec(log=LogSpec(log)))
    assert code == 0
    entries = [(e.stream, e.data) for e in read_entries(log)]
    assert entries == [("stdout", b"out\n"), ("stderr", b"err\n"), ("stdout", b"partial")]
    assert all(e.time > 1e9 for e in read_entries(log))


async def test_stdio_sees_only_output_after_attach(kernel: Any, box: Box) -> None:
    pid = await box.spawn("sh", "-c", "echo early; sleep 1; echo late", attach_grace=0)
    await asyncio.sleep(0.5)
    stdio = await kernel.stdio(pid)
    assert await stdio.read() == (1, b"late\n")
    assert await stdio.read() is None
    await kernel.wait(pid)
    await box.release(pid)


# ---- resource limits through programs --------------------------------------------------------
async def test_oom_kill(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(memory=32 * 1024**2, memory_swap=32 * 1024**2))
    pid = await box.spawn("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1", cgroup=cg)
    assert await kernel.wait(pid, timeout=30) == ExitStatus(signal=SIGKILL)
    stats = await kernel.cgroup_stats(cg)
    assert stats.oom_kills >= 1
    await box.release(pid)


async def test_dd_within_limit(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(memory=256 * 1024**2))
    code, _, err = await box.run("dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4",
                                 cgroup=cg)
    assert code == 0 and b"4+0 records out" in err
    assert (await kernel.cgroup_stats(cg)).oom_kills == 0


async def test_fork_loop_is_contained_by_pids_limit(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(pids_limit=8))
    pid = await box.spawn("sh", "-c", "while true; do sleep 100 & done", cgroup=cg)
    stdio = await kernel.stdio(pid)
    peak = 0
    for _ in range(200):  # sample while the bomb runs: never above the limit
        stats = await kernel.cgroup_stats(cg)
        peak = max(peak, stats.pids_current)
        if await kernel.wait(pid, timeout=0.01) is not None:
            break
    assert peak <= 8 and (await kernel.cgroup_stats(cg)).pids_limit == 8
    # like ash: the failed fork ends the non-interactive shell with status 2, and as the
    # namespace's init its exit kills the sleepers
    status = await kernel.wait(pid, timeout=10)
    assert status is not None and status.exit_code == 2
    err = b""
    while (chunk := await stdio.read()) is not None:
        err += chunk[1] if chunk[0] == 2 else b""
    stdio.close()
    assert b"can't fork" in err
    assert (await kernel.cgroup_stats(cg)).pids_current == 0
    await box.release(pid)


async def test_pids_limit_refuses_exec(kernel: Any, box: Box) -> None:
    cg = await box.cgroup(Resources(pids_limit=1))
    init = await box.spawn("sleep", "100", cgroup=cg)
    with pytest.raises(OSError) as ei:
        await box.exec(init, "true")
    assert ei.value.errno == errno.EAGAIN
    code, out, err = await box.run("sh", "-c", "true; echo after", cgroup=None)
    assert code == 0
    await kernel.signal(init, SIGKILL)
    await kernel.wait(init)


async def test_spawn_into_frozen_cgroup_and_exec_refused(kernel: Any, box: Box) -> None:
    cg = await box.cgroup()
    init = await box.spawn("sleep", "100", cgroup=cg)
    await kernel.cgroup_freeze(cg)
    with pytest.raises(OSError) as ei:
        await box.exec(init, "true")
    assert ei.value.errno == errno.EBUSY
    await kernel.cgroup_thaw(cg)
    await kernel.signal(init, SIGKILL)
    await kernel.wait(init)


async def test_yes_is_throttled(kernel: Any, box: Box) -> None:
    code, out, _ = await box.run("sh", "-c", "yes | head -n 3")
    assert (code, out) == (0, b"y\ny\ny\n")


async def test_spec_types_are_plain(box: Box) -> None:
    spec = SpawnSpec(id="x", argv=("true",), rootfs=box.target)
    assert spec.stdio == StdioSpec()


# ---- the shell (expected outputs are real busybox's) -----------------------------------------
@pytest.mark.parametrize("script, expect", [
    ("for x in a b c; do echo -n $x; done; echo", b"abc\n"),
    ("if [ 1 -lt 2 ]; then echo yes; else echo no; fi", b"yes\n"),
    ("false; echo $?; true && echo t || echo f", b"1\nt\n"),
    ("echo hi > /tmp/o; echo more >> /tmp/o; cat /tmp/o; cat /nonexist 2>/dev/null; echo rc=$?",
     b"hi\nmore\nrc=1\n"),
    ("i=0; while [ $i -lt 3 ]; do i=$((i+1)); done; echo $i", b"3\n"),
    ('f() { echo "f:$1"; return 3; }; f arg; echo $?', b"f:arg\n3\n"),
    ('x=$(echo a b); echo "[$x]"', b"[a b]\n"),
    ('printf "%s-%d\\n" a 1 b 2', b"a-1\nb-2\n"),
    ("echo $0 $1 $#", b"zero one 1\n"),
    ("seq 3 | wc -l", b"3\n"),
    ("echo abc | grep -c b", b"1\n"),
    ("nosuch; echo $?", b"127\n"),
])
async def test_shell_semantics(box: Box, script: str, expect: bytes) -> None:
    code, out, _ = await box.run("sh", "-c", script, "zero", "one")
    assert (code, out) == (0, expect)


async def test_shell_exit_code_wraps(box: Box) -> None:
    assert (await box.run("sh", "-c", "exit 300"))[0] == 44


async def test_spawn_creates_missing_cwd_when_asked(box: Box) -> None:
    code, out, _ = await box.run("pwd", cwd="/work/dir", create_cwd=True)
    assert (code, out) == (0, b"/work/dir\n")


async def test_etc_files_are_bind_mounted_not_part_of_the_write_layer(kernel: Any, box: Box) -> None:
    """Like Docker's /etc/hosts: the container sees (and may write) its own copy, which never
    lands in the write layer, so commit/diff/export do not pick it up. (The engine puts the
    mount points in an init layer, as Docker does, so the write layer stays clean.)"""
    code, out, _ = await box.run(
        "sh", "-c", "cat /etc/hosts; echo changed > /etc/hosts; cat /etc/hosts",
        etc_files=(("/etc/hosts", b"10.0.0.1 me\n"),))
    assert (code, out) == (0, b"10.0.0.1 me\nchanged\n")
    assert await kernel.read_file(box.target, "/etc/hosts") != b"changed\n"
    buf = io.BytesIO()
    await kernel.diff("box", buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        # a mount point may have been created (empty) when the image lacked the file
        member = tf.getmember("etc/hosts") if "etc/hosts" in tf.getnames() else None
        assert member is None or member.size == 0
