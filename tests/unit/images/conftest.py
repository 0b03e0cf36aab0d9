"""Fixtures for the image store tests: an ImageStore over fresh stores in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.images.store import ImageStore
from engine.store.blobs import BlobStore
from engine.store.meta import MetaStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageStore]:
    meta = MetaStore(tmp_path)
    try:
        yield ImageStore(meta, BlobStore(tmp_path), clock=Clock())
    finally:
        meta.close()
