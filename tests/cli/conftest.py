"""CLI suites: the real docker CLI, the docker SDK and wharfie itself against one wharfied
(sim backend) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.daemon import Daemon, daemon_fixture


@pytest.fixture(scope="module")
def daemon(backend: str) -> Iterator[Daemon]:
    yield from daemon_fixture(backend)
