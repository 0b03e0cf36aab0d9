"""Container logs in Docker's json-file format, rotated by default.

One JSON object per line: ``{"log": "hello\\n", "stream": "stdout", "time": "2026-…Z"}``.
Output is split at newlines; a line without its newline is held back until the newline comes
or the writer is closed (Docker does the same, with a 16 KiB cap we share).

The *writer* runs where the process's stdio is: in the per-container monitor on Linux (so logs
keep flowing while the daemon is down), inside the sim for simulated programs. The *reader* is
the engine's. This module is dependency-free and cheap to import: the monitor imports it.

Rotation: when the live file would exceed ``max_size`` it is renamed ``<path>.1`` (older ones
shift up to ``<path>.<max_files-1>``, the oldest is dropped).
"""

from __future__ import annotations

import json
import os
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

PARTIAL_CAP = 16 * 1024
STREAMS = {1: "stdout", 2: "stderr"}


def format_time(ts: float) -> str:
    """RFC 3339 with nanoseconds, UTC, as Docker writes it."""
    whole = int(ts)
    nanos = int(round((ts - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole)) + f".{nanos:09d}Z"


def parse_time(text: str) -> float:
    """Inverse of :func:`format_time` (accepts fewer fraction digits, and no fraction)."""
    text = text.rstrip("Z")
    base, _, frac = text.partition(".")
    st = _time.strptime(base, "%Y-%m-%dT%H:%M:%S")
    secs = float(_timegm(st))
    if frac:
        secs += int(frac.ljust(9, "0")[:9]) / 1e9
    return secs


def _timegm(st: _time.struct_time) -> int:
    import calendar

    return calendar.timegm(st)


class LogWriter:
    """Appends output chunks to a json-file log, rotating by size."""

    def __init__(self, path: str, max_size: int = 10 * 1024 * 1024, max_files: int = 3,
                 clock: Callable[[], float] = _time.time) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.clock = clock
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self._size = self._fh.tell()

    def write(self, fd: int, data: bytes) -> None:
        stream = STREAMS.get(fd, "stdout")
        buf = self._partial[stream] + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._emit(stream, line + b"\n")
        while len(rest) >= PARTIAL_CAP:
            self._emit(stream, rest[:PARTIAL_CAP])
            rest = rest[PARTIAL_CAP:]
        self._partial[stream] = rest

    def position(self) -> tuple[int, int]:
        """(inode, size) of the live file: every entry written so far ends at or before it."""
        return os.fstat(self._fh.fileno()).st_ino, self._size

    def flush(self) -> None:
        for stream, rest in self._partial.items():
            if rest:
                self._emit(stream, rest)
                self._partial[stream] = b""
        self._fh.flush()

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        self._fh.close()

    def _emit(self, stream: str, chunk: bytes) -> None:
        rec = json.dumps({"log": chunk.decode("utf-8", "replace"), "stream": stream,
                          "time": format_time(self.clock())}, ensure_ascii=False)
        line = (rec + "\n").encode()
        if self.max_size > 0 and self._size > 0 and self._size + len(line) > self.max_size:
            self._rotate()
        self._fh.write(line)
        self._fh.flush()
        self._size += len(line)

    def _rotate(self) -> None:
        self._fh.close()
        if self.max_files <= 1:
            os.truncate(self.path, 0) if os.path.exists(self.path) else None
        else:
            for i in range(self.max_files - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self._size = 0


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str  # "stdout" | "stderr"
    data: bytes
    time: float  # epoch seconds
    time_text: str  # as written, nanosecond precision


def log_files(path: str) -> list[str]:
    """The rotated files then the live one, oldest first."""
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    files = list(reversed(rotated))
    if os.path.exists(path):
        files.append(path)
    return files


def parse_line(line: bytes) -> LogEntry | None:
    try:
        rec = json.loads(line)
        return LogEntry(rec["stream"], rec["log"].encode(), parse_time(rec["time"]), rec["time"])
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line after a crash: skip it


def read_entries(path: str) -> Iterator[LogEntry]:
    for name in log_files(path):
        try:
            with open(name, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):
                        entry = parse_line(line)
                        if entry is not None:
                            yield entry
        except FileNotFoundError:
            continue  # rotated away while reading


class LogTail:
    """Reads a json-file log from its start (rotated files, then the live one) and then the
    entries appended to it, across rotations. The live file is held open from the start, so a
    log deleted meanwhile (its container removed) is still read to its end. :meth:`close` it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._buf = b""
        try:
            self._fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            self._fh = None

    def history(self) -> list[LogEntry]:
        """Every entry so far, oldest first."""
        out: list[LogEntry] = []
        for name in log_files(self.path):
            if name != self.path:  # rotated files; the live one is read through our handle
                out += read_entries_of(name)
        return out + self.more()

    def more(self) -> list[LogEntry]:
        """Entries appended since the last call (a rotated live file is read to its end, then
        the new live file from its start)."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - the log appeared
            except FileNotFoundError:
                return []
        out = self._read()
        if not out:
            try:
                rotated = os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
            except FileNotFoundError:
                rotated = False  # removed: nothing more will come
            if rotated:
                out = self._read()
                self._fh.close()
                self._fh, self._buf = open(self.path, "rb"), b""  # noqa: SIM115
                out += self._read()
        return out

    def _read(self) -> list[LogEntry]:
        assert self._fh is not None
        lines = (self._buf + self._fh.read()).split(b"\n")
        self._buf = lines.pop()
        return [e for e in (parse_line(line + b"\n") for line in lines) if e is not None]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_entries_of(name: str) -> list[LogEntry]:
    """The complete entries of one log file (none if it is gone)."""
    try:
        with open(name, "rb") as fh:
            return [e for e in (parse_line(line) for line in fh if line.endswith(b"\n")) if e is not None]
    except FileNotFoundError:
        return []


def logs_size(path: str) -> int:
    return sum(os.path.getsize(p) for p in log_files(path) if os.path.exists(p))
