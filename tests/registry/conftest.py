"""Registry suite fixtures: Debian's reference registry (plain and with htpasswd auth) on
loopback, module-scoped, and engines over the sim (the ``engine`` fixture of the engine suite,
plus a second, independent engine for "another host")."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from engine.bootstrap import make_engine
from engine.engine import Engine
from tests.contract.engine.conftest import engine, harness  # noqa: F401 - fixtures
from tests.registry.rigs import REGISTRY_BIN, AppThread, Fake, RefRegistry

USER, PASSWORD = "alice", "s3cret-pw"


def _need_registry() -> None:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry)")


@pytest.fixture(scope="module")
def registry() -> Iterator[RefRegistry]:
    _need_registry()
    with RefRegistry().serving() as r:
        yield r


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[RefRegistry]:
    _need_registry()
    pytest.importorskip("bcrypt", reason="bcrypt makes the htpasswd file")
    with RefRegistry(users={USER: PASSWORD}).serving() as r:
        yield r


@pytest.fixture
def other(tmp_path: Any, loop: asyncio.AbstractEventLoop) -> Iterator[Engine]:
    """A second engine with its own state root: another host to pull onto."""
    eng = make_engine("sim", str(tmp_path / "other"), str(tmp_path / "other-run"), seed=99)
    loop.run_until_complete(eng.start())
    yield eng
    loop.run_until_complete(eng.close())


@pytest.fixture(autouse=True)
def _isolated_docker_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def fake() -> Iterator[tuple[Fake, AppThread]]:
    """A misbehaving-on-demand fake registry (tests.registry.rigs.Fake) on a loopback port."""
    f = Fake()
    t = AppThread(f.app()).start()
    yield f, t
    t.stop()
