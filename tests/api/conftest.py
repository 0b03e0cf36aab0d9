"""API suite: one wharfied (sim backend) per test module, driven over its UNIX socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.client import Client
from tests.api.daemon import Daemon, daemon_fixture


@pytest.fixture(scope="module")
def daemon(backend: str) -> Iterator[Daemon]:
    yield from daemon_fixture(backend)


@pytest.fixture
def client(daemon: Daemon) -> Client:
    return daemon.client()
