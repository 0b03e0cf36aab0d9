"""monitor_prefault: the pages a forked process writes, learnt and copied ahead."""

from __future__ import annotations

import mmap
import os
import resource

import pytest

from backends.linux import monitor_prefault as mp

PAGE = mp.PAGE


def _in_child(fn) -> bytes:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a forked child; its bytes result back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, fn())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


def test_hot_keeps_the_pages_every_start_wrote() -> None:
    hot = mp.Hot(rounds=2)
    enc = mp._encode
    hot.learn(enc({0x1000, 0x2000, 0x3000}), enc({0x9000}))
    assert not hot.complete() and hot.monitor == hot.child == b""
    hot.learn(b"", enc({0x9000}))  # one side unknown: not a round
    assert not hot.complete()
    hot.learn(enc({0x2000, 0x3000, 0x5000}), enc({0x9000, 0xA000}))
    assert hot.complete()
    assert mp._pages(hot.monitor) == {0x2000, 0x3000} and mp._pages(hot.child) == {0x9000}
    assert hot.monitor == mp._RANGE.pack(0x2000, 2 * PAGE)  # contiguous pages: one range


def test_dirty_ranges_and_populate_in_a_forked_child() -> None:
    buf = mmap.mmap(-1, 64 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, len(buf), PAGE):
        buf[i] = 1  # present in the parent: shared copy-on-write after the fork

    def child() -> bytes:
        import ctypes

        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        buf[5 * PAGE] = 2  # written: ours alone now
        pages = mp._pages(mp.dirty_ranges())
        seen = addr + 5 * PAGE in pages and addr + 6 * PAGE not in pages
        mp.populate(mp._encode({addr + i * PAGE for i in range(10, 42)}))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(10, 42):
            buf[i * PAGE] = 3
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return bytes([seen, min(faults, 255)])

    seen, faults = _in_child(child)
    buf.close()
    assert seen, "a page written after the fork is reported, an untouched one is not"
    if faults >= 32:
        pytest.skip("MADV_POPULATE_WRITE not supported by this kernel (< 5.14)")
    assert faults < 16  # the 32 copy-on-write faults were taken by populate (rest: Python's)
