"""Copy-on-write faults taken ahead of a start, while nothing waits (spares and their children).

A process forked from the zygote shares its pages copy-on-write; the first write to each (and a
Python process writes to almost every page it touches: reference counts) is a fault, ~7 us on
this VM. A container's start takes ~370 of them in the child that becomes its init (~2.5 ms,
the mount set-up alone ~2 ms) and ~230 in its monitor. ``MADV_POPULATE_WRITE`` (Linux >= 5.14)
does the same copies in the kernel, ~1.8 us a page, at a time the caller chooses: in a spare
and in the child it forks ahead (``monitor_child.Prefork``), while they wait for a request.

Which pages: not all of them. Copying every private page (~10 MiB here) would cost each
monitor that memory for its container's life, and the child ~0.9 ms more in ``execve``
(freeing them). So the pages the first few spares of a zygote and their children write are
learnt (:func:`dirty_ranges`: those mapped by them alone): the child reports its own right
before it waits for its gate; the monitor, once it has replied, waits while the zygote reads
its pagemap from outside (reading its own would write some: the buffers). The zygote keeps the
pages all of them wrote (:class:`Hot`) and hands that set to every later spare, which copies
it (:func:`populate`) for itself and its child. Spares fork from the same zygote, so the
addresses match; pages a start would copy anyway cost no extra memory.

On a kernel without ``MADV_POPULATE_WRITE`` (EINVAL) nothing is copied; any other error on a
range (not mapped in this process, a guard page) skips that range.
"""

from __future__ import annotations

import errno
import struct
from array import array

from backends.linux import libc

PAGE = 4096
#: larger private mappings are left alone: a reservation (a thread's stack, a malloc arena)
MAX_MAPPING = 64 << 20
#: at most this many bytes of encoded ranges (2k ranges; within a pipe's capacity)
MAX_ENCODED = 32 << 10
_PM_PRESENT = 1 << 63
_PM_EXCLUSIVE = 1 << 56  # the page is mapped by this process only (copied, or never shared)
_RANGE = struct.Struct("=QQ")  # start address, length in bytes
#: the pages learnt are those each of the first this many starts of a zygote wrote
LEARN_ROUNDS = 3


def _private_writable(pid: int | str = "self") -> list[tuple[int, int]]:
    """(start, end) of the private writable mappings of process ``pid``, but the kernel's own
    pages and those larger than :data:`MAX_MAPPING`."""
    try:
        with open(f"/proc/{pid}/maps") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if fields[1] != "rw-p" or (len(fields) > 5 and fields[5].startswith("[v")):
            continue
        start, _, end = fields[0].partition("-")
        lo, hi = int(start, 16), int(end, 16)
        if hi - lo <= MAX_MAPPING:
            out.append((lo, hi))
    return out


def _populate(ranges: list[tuple[int, int]]) -> None:
    for lo, hi in ranges:
        try:
            libc.madvise(lo, hi - lo, libc.MADV_POPULATE_WRITE)
        except OSError as e:
            if e.errno == errno.EINVAL:  # an older kernel: none of the others will do either
                return


def dirty_ranges(pid: int | str = "self") -> bytes:
    """The pages process ``pid`` has written since its fork (those mapped by it alone), encoded
    as ``(start, length)`` ranges for :func:`populate`; b"" if its pagemap is unreadable.
    (Reading them from within writes a few more: the buffers this takes.)"""
    runs: list[tuple[int, int]] = []
    try:
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm:
            for lo, hi in _private_writable(pid):
                pm.seek(lo // PAGE * 8)
                entries = array("Q", pm.read((hi - lo) // PAGE * 8))
                run_start = -1
                for i, e in enumerate(entries):
                    hot = e & _PM_PRESENT and e & _PM_EXCLUSIVE
                    if hot and run_start < 0:
                        run_start = i
                    elif not hot and run_start >= 0:
                        runs.append((lo + run_start * PAGE, (i - run_start) * PAGE))
                        run_start = -1
                if run_start >= 0:
                    runs.append((lo + run_start * PAGE, (len(entries) - run_start) * PAGE))
    except OSError:
        return b""
    return b"".join(_RANGE.pack(a, n) for a, n in runs[:MAX_ENCODED // _RANGE.size])


def populate(encoded: bytes) -> None:
    """Copy the pages of ``encoded`` (from :func:`dirty_ranges`) now."""
    usable = len(encoded) - len(encoded) % _RANGE.size
    _populate([(a, a + n) for a, n in _RANGE.iter_unpack(encoded[:usable])])


class Hot:
    """The pages a monitor (``monitor``) and its container's child (``child``) write on a start
    (by the monitor's reply), encoded as :func:`dirty_ranges` does: those every one of the first
    ``rounds`` starts wrote (a page one start wrote and another did not would cost the
    monitors memory for nothing). b"" until then: those starts copy nothing ahead (what they
    write is what is measured)."""

    def __init__(self, rounds: int = LEARN_ROUNDS) -> None:
        self.monitor = self.child = b""
        self._left = rounds
        self._sets: tuple[set[int], set[int]] | None = None

    def complete(self) -> bool:
        return self._left <= 0

    def learn(self, monitor: bytes, child: bytes) -> None:
        """One more start's pages (ignored unless both are known)."""
        if self.complete() or not monitor or not child:
            return
        mon, kid = _pages(monitor), _pages(child)
        old = self._sets
        self._sets = (mon, kid) if old is None else (old[0] & mon, old[1] & kid)
        self._left -= 1
        if self.complete():
            self.monitor, self.child = _encode(self._sets[0]), _encode(self._sets[1])
            self._sets = None


def _pages(encoded: bytes) -> set[int]:
    usable = len(encoded) - len(encoded) % _RANGE.size
    return {a + i for a, n in _RANGE.iter_unpack(encoded[:usable]) for i in range(0, n, PAGE)}


def _encode(pages: set[int]) -> bytes:
    runs: list[list[int]] = []
    for a in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == a:
            runs[-1][1] += PAGE
        else:
            runs.append([a, PAGE])
    return b"".join(_RANGE.pack(a, n) for a, n in runs[:MAX_ENCODED // _RANGE.size])
