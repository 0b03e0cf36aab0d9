"""Test harness: async tests on a per-test event loop, backends chosen by --backend.

* ``async def`` tests run on the ``loop`` fixture's loop. On the sim that loop is a
  ``VirtualTimeLoop`` (timeouts pass instantly); on Linux it is a normal loop.
* ``--backend sim`` (default) runs the sim half; ``--backend linux`` or ``all`` adds the real
  backend (needs root; asserts it, rather than silently skipping, when asked for).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator

import pytest

from sim.loop import VirtualTimeLoop

# CI (and the unprivileged run) may not be able to write .hypothesis/ in the checkout.
if os.environ.get("WHARFIE_TEST_PROFILE") == "ci":
    from hypothesis import settings

    settings.register_profile("ci", database=None)
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", default="sim", choices=["sim", "linux", "all"],
                     help="kernel backend(s) for contract/engine suites")


def backends(config: pytest.Config) -> list[str]:
    opt = config.getoption("--backend")
    return ["sim", "linux"] if opt == "all" else [opt]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends(metafunc.config), scope="session")


@pytest.fixture
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sim"
    lp: asyncio.AbstractEventLoop = VirtualTimeLoop() if backend == "sim" else asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    try:
        pending = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            lp.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        lp.run_until_complete(lp.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        lp.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    lp = pyfuncitem.funcargs.get("loop")
    if lp is None:
        lp = pyfuncitem._request.getfixturevalue("loop")
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    lp.run_until_complete(fn(**args))
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.gaps import GAPS

    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        # async tests always need the loop fixture, even when they do not name it
        if inspect.iscoroutinefunction(item.obj) and "loop" not in item.fixturenames:
            item.fixturenames.append("loop")
        backend = item.callspec.params.get("backend") if hasattr(item, "callspec") else None
        if backend not in (None, "sim") and item.get_closest_marker("virtual_time"):
            item.add_marker(pytest.mark.skip(reason="needs minutes of real time off the sim's virtual clock"))
        reason = GAPS.get(f"{item.path.name}::{item.originalname}", {}).get(str(backend))
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"known {backend} gap: {reason}"))
