from __future__ import annotations

from pathlib import Path

import pytest_twisted

from tests.support import LiveServer, start_server


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> LiveServer:
    """meterd with auth on, in this process, on free loopback ports."""
    live = await start_server(tmp_path / "data")
    yield live
    await live.stop()


@pytest_twisted.async_yield_fixture
async def open_server(tmp_path: Path) -> LiveServer:
    """meterd in --no-auth mode with interval meters (the assignment's clients)."""
    live = await start_server(tmp_path / "data", "--no-auth", "--meter-mode", "interval")
    yield live
    await live.stop()
