"""Trash: a put directory is out of sight at once and deleted by one background thread, which
ends once idle and comes back with the next put."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from backends.linux import trash as trash_mod
from backends.linux.trash import Trash


def _dir(base: pathlib.Path, name: str) -> str:
    d = base / name
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    return str(d)


def _wait_empty(t: Trash, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while os.listdir(t.path) and time.monotonic() < end:
        time.sleep(0.01)
    assert os.listdir(t.path) == []


def test_put_moves_now_and_deletes_in_the_background(tmp_path: pathlib.Path) -> None:
    t = Trash(str(tmp_path / "trash"))
    a, b = _dir(tmp_path, "a"), _dir(tmp_path, "b")
    t.put(a)
    t.put(b)
    assert not os.path.exists(a) and not os.path.exists(b)
    _wait_empty(t)


def test_worker_ends_when_idle_and_restarts(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trash_mod, "IDLE", 0.05)
    t = Trash(str(tmp_path / "trash"))
    t.put(_dir(tmp_path, "a"))
    _wait_empty(t)
    end = time.monotonic() + 10
    while t._worker is not None and time.monotonic() < end:
        time.sleep(0.01)
    assert t._worker is None
    t.put(_dir(tmp_path, "b"))  # a new worker
    _wait_empty(t)


def test_flush_deletes_now(tmp_path: pathlib.Path) -> None:
    t = Trash(str(tmp_path / "trash"))
    t.put(_dir(tmp_path, "a"))
    t.flush()
    assert os.listdir(t.path) == []


def test_missing_source_raises(tmp_path: pathlib.Path) -> None:
    t = Trash(str(tmp_path / "trash"))
    with pytest.raises(FileNotFoundError):
        t.put(str(tmp_path / "nope"))
    assert os.listdir(t.path) == []
