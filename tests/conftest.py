from __future__ import annotations

import os
from pathlib import Path

import pytest_twisted
from hypothesis import settings

from tests.support import LiveServer, start_server

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) runs the property tests on the same
# examples every time, so a landing never depends on a random draw; run locally,
# they keep exploring new inputs (and a failure there is kept in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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
