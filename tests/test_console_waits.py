"""Waiting on the server: a spinner while it thinks, timeouts worded as timeouts,
and a server that is down reported before anything is asked."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from clients.api import MeterdClient, ServerUnreachable
from clients.console.waiting import ERASE_LINE, Spinner
from tests.pty_terminal import PtyProcess, client_env
from tests.support import ROOT, free_port


def test_spinner_shows_only_after_its_delay_and_erases_itself() -> None:
    clock, drawn = Clock(), []
    spinner = Spinner(drawn.append, clock, delay=0.3)
    spinner.start("Conectando…")
    clock.advance(0.29)
    assert drawn == [] and not spinner.showing
    clock.advance(0.01)
    clock.advance(0.08)
    clock.advance(0.08)
    assert len(drawn) == 3 and all(d.startswith(ERASE_LINE) and d.endswith(" Conectando…") for d in drawn)
    assert len({d for d in drawn}) == 3  # a new frame each time
    spinner.stop()
    assert drawn[-1] == ERASE_LINE and not clock.getDelayedCalls()


def test_an_answer_before_the_delay_draws_nothing() -> None:
    clock, drawn = Clock(), []
    spinner = Spinner(drawn.append, clock, ascii_only=True)
    spinner.start("Consultando…")
    clock.advance(0.1)
    spinner.stop()
    clock.advance(5)
    assert drawn == []


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.slow  # waits for a real timeout
@pytest_twisted.ensureDeferred
async def test_no_answer_in_time_is_a_timeout(silent_server: str) -> None:
    client = MeterdClient(silent_server, None, timeout=0.5)
    with pytest.raises(ServerUnreachable) as info:
        await client.health()
    assert (info.value.reason, info.value.server, info.value.timeout) == ("timeout", silent_server, 0.5)


@pytest_twisted.ensureDeferred
async def test_nobody_listening_is_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable) as info:
        await MeterdClient(url, None, timeout=5).health()
    assert info.value.reason == "refused"


def console(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.console", *args],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT, env=client_env(),
    )  # fmt: skip


@pytest.mark.slow  # waits for a real timeout
def test_a_subcommand_that_gets_no_answer_says_it_timed_out(silent_server: str) -> None:
    r = console("fatura", "--id", "52998224725", "--server", silent_server, "--timeout", "1", "--token", "t")
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr == f"Tempo esgotado: {silent_server} não respondeu em 1 s.\n"
    r = console("--lang", "en", "fatura", "--id", "52998224725", "--server", silent_server, "--timeout", "0.5")
    assert r.stderr == f"Timed out: {silent_server} did not answer within 0.5 s.\n"


@pytest.mark.slow  # waits for a real timeout
def test_a_server_that_is_down_is_reported_before_the_menu() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = console("--server", url, stdin="1\n")
    assert r.returncode == 3
    assert r.stderr == f"Servidor indisponível: {url} recusou a conexão.\n"
    assert "Escolha o modo" not in r.stdout


@pytest.mark.slow  # waits for a real timeout
def test_a_terminal_sees_a_spinner_while_the_server_is_silent(silent_server: str) -> None:
    term = PtyProcess(
        [sys.executable, "-m", "clients.console", "--server", silent_server, "--timeout", "2"],
        env=client_env(),
        cwd=ROOT,
    )
    try:
        assert term.wait(30) == 3
    finally:
        term.close()
    spinner = re.findall(r"\r\x1b\[K(\S) Conectando a " + re.escape(silent_server) + "…", term.output)
    assert len(spinner) >= 5 and len(set(spinner)) >= 3  # it turned while waiting
    assert term.output.endswith(f"Tempo esgotado: {silent_server} não respondeu em 2 s.\r\n")
    assert "Escolha o modo" not in term.output
