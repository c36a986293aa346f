from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import settings

from tests import support
from tests.support import LiveServer, start_server

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) runs the property tests on the same
# examples every time, so a landing never depends on a random draw; run locally,
# they keep exploring new inputs (and a failure there is kept in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
# The fast loop (-m "not slow") explores fewer examples per property; the full suite, the default number.
settings.register_profile("fast", max_examples=20)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers a core, since most of a test's time is spent waiting on sockets and servers."""
    return 2 * (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    fast = "not slow" in (config.getoption("markexpr") or "")
    support.FAST_LOOP = fast  # tests.support.examples(): explicit counts shrink too
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("fast" if fast else "default"))


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> LiveServer:
    """meterd with auth on, in this process, on free loopback ports."""
    live = await start_server(tmp_path / "data")
    yield live
    await live.stop()


@pytest_twisted.async_yield_fixture
async def open_server(tmp_path: Path) -> LiveServer:
    """meterd in --no-auth mode, the assignment's compatibility mode (interval meters by default)."""
    live = await start_server(tmp_path / "data", "--no-auth")
    yield live
    await live.stop()



@pytest.fixture(scope="session", autouse=True)
def the_machine_is_left_as_it_was() -> Iterator[None]:
    """No test changes the machine: the one kernel setting meterd cares about is the same at the end."""
    path = Path("/proc/sys/net/core/rmem_max")
    before = path.read_text() if path.exists() else None
    yield
    assert (path.read_text() if path.exists() else None) == before, "a test changed net.core.rmem_max"
