"""What the monitor, the zygote and the daemon share: message framing, spec (de)serialisation,
atomic JSON files, process identities, and the attach frame format.

Attach frames (both ways): 1 byte kind + 4 bytes big-endian length + payload.
monitor→client: ``H`` hello (JSON ``{"tty", "stdin"}``), ``O``/``E`` stdout/stderr data,
``X`` exit (JSON status). client→monitor: ``I`` stdin data, ``C`` close stdin, ``R`` resize
(``>HH`` rows, cols).

Cheap to import (the zygote preloads it): no asyncio.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import struct
from array import array
from dataclasses import fields, is_dataclass
from typing import Any

from engine.kernel import ExecSpec, LogSpec, MountSpec, Namespace, Rlimit, SpawnSpec, StdioSpec

FRAME = struct.Struct(">cI")
HELLO, OUT, ERR, EXIT = b"H", b"O", b"E", b"X"
STDIN, CLOSE_STDIN, RESIZE = b"I", b"C", b"R"
SOCK_NAME = "attach.sock"


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def send_msg(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    """A length-prefixed JSON message, optionally carrying fds (SCM_RIGHTS)."""
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))])
    else:
        sock.sendall(data)


def recv_msg(sock: socket.socket) -> tuple[Any, list[int]]:
    """Inverse of :func:`send_msg`. Raises ``OSError(EIO)`` if the peer closes early."""
    raw, fds = recv_raw(sock)
    return json.loads(raw), fds


def recv_raw(sock: socket.socket) -> tuple[bytes, list[int]]:
    """:func:`recv_msg` without the JSON decoding: the message's bytes."""
    buf, fds = bytearray(), list[int]()
    need = 4
    while len(buf) < need:
        data, anc, _, _ = sock.recvmsg(max(need - len(buf), 4096), socket.CMSG_SPACE(16),
                                       socket.MSG_CMSG_CLOEXEC)
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array("i", raw[:len(raw) - len(raw) % 4])
        if not data:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EIO, "monitor closed the connection without a reply")
        buf += data
        if need == 4 and len(buf) >= 4:
            need = 4 + struct.unpack(">I", buf[:4])[0]
    return bytes(buf[4:need]), fds


def encode(obj: Any) -> Any:
    """A spec as JSON-able data (bytes as ``{"$hex": ...}``, sets and tuples as lists)."""
    if is_dataclass(obj):
        return {f.name: encode(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, bytes):
        return {"$hex": obj.hex()}
    if isinstance(obj, (tuple, list, frozenset, set)):
        return [encode(x) for x in (sorted(obj) if isinstance(obj, (set, frozenset)) else obj)]
    return obj


def _stdio(d: dict[str, Any]) -> StdioSpec:
    log = d.get("log")
    return StdioSpec(log=LogSpec(**log) if log else None, stdin_open=d["stdin_open"], tty=d["tty"],
                     attach_grace=float(d.get("attach_grace", 0.0)))


def decode_spawn(d: dict[str, Any]) -> SpawnSpec:
    d = dict(d)
    for name in ("argv", "env", "cap_add", "cap_drop"):
        d[name] = tuple(d[name])
    d["namespaces"] = frozenset(Namespace(n) for n in d["namespaces"])
    d["stdio"] = _stdio(d["stdio"])
    d["mounts"] = tuple(MountSpec(**{**m, "options": tuple(m["options"])}) for m in d["mounts"])
    d["rlimits"] = tuple(Rlimit(**r) for r in d["rlimits"])
    d["etc_files"] = tuple((p, bytes.fromhex(b["$hex"])) for p, b in d["etc_files"])
    return SpawnSpec(**d)


def decode_exec(d: dict[str, Any]) -> ExecSpec:
    return ExecSpec(**{**d, "argv": tuple(d["argv"]), "env": tuple(d["env"]),
                       "stdio": _stdio(d["stdio"])})


def write_json(path: str, obj: Any, sync: bool = True) -> None:
    """Atomically: write a temp file, fsync, rename over ``path``, fsync the directory.

    ``sync=False`` skips the fsyncs (still atomic for readers; not durable over a power loss,
    which runtime state need not be: the containers do not survive it either)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): with the pid, an
    identity that survives pid reuse. Raises ``ProcessLookupError``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no such process: {pid}") from None
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def sock_path(dir_fd: int) -> str:
    """A short path to ``<dir>/attach.sock`` (sun_path holds only 108 bytes)."""
    return f"/proc/self/fd/{dir_fd}/{SOCK_NAME}"


def set_title(title: str) -> None:
    """Overwrite our argv area so ``ps``/``pgrep -f`` show ``title`` (as setproctitle does).

    The zygote is started with a padding argument that reserves the room."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as fh:
            raw = fh.read()
        rest = raw[raw.rindex(b")") + 2:].split()
        start, end = int(rest[45]), int(rest[46])
        data = title.encode()[:end - start - 1]
        ctypes.memmove(start, data + b"\0" * (end - start - len(data)), end - start)
