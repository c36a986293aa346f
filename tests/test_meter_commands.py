"""stdin commands: parsing, and the protocol acting on a controller."""

from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport

from clients.meter.commands import HELP, Command, CommandError, CommandProtocol, parse_command


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("+", Command("faster")),
        ("  -  ", Command("slower")),
        ("interval 0.5", Command("interval", 0.5)),
        ("INTERVAL 2", Command("interval", 2.0)),
        ("spike", Command("spike")),
        ("spike 12", Command("spike", 12.0)),
        ("spike 2,5 3", Command("spike", 2.5, 3)),
        ("load 12", Command("load", 12.0)),
        ("LOAD 0", Command("load", 0.0)),
        ("status", Command("status")),
        ("help", Command("help")),
        ("quit", Command("quit")),
        ("q", Command("quit")),
        ("", Command("empty")),
    ],
)
def test_parse(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("interval", "usage"),
        ("interval fast", "not a number"),
        ("interval 0", "between"),
        ("interval -1", "between"),
        ("interval nan", "between"),
        ("interval inf", "between"),
        ("spike 0", "more than 0 kW"),
        ("spike x", "not a number of kW"),
        ("spike 5 0", "usage"),
        ("spike 5 1 2", "usage"),
        ("spike 2000", "between 0 and 1000"),
        ("load", "usage: load KW"),
        ("load -1", "between 0 and 1000"),
        ("load nan", "between 0 and 1000"),
        ("load 1 2", "usage: load KW"),
        ("+ 2", "unknown"),
        ("dance", "unknown"),
    ],
)
def test_parse_errors(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(line)


class FakeController:
    def __init__(self) -> None:
        self.interval = 1.0
        self.said: list[str] = []
        self.spikes: list[tuple[float | None, int | None]] = []
        self.loads: list[float] = []
        self.quits = 0

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds

    def spike(self, kw: float | None, meter_number: int | None) -> str:
        self.spikes.append((kw, meter_number))
        return "spiked"

    def set_load(self, kw: float) -> str:
        self.loads.append(kw)
        return "loaded"

    def status_text(self) -> str:
        return "all good"

    def quit(self) -> None:
        self.quits += 1

    def say(self, text: str) -> None:
        self.said.append(text)


def _protocol() -> tuple[CommandProtocol, FakeController]:
    c = FakeController()
    p = CommandProtocol(c)
    p.makeConnection(StringTransport())
    return p, c


def test_speed_commands_change_the_interval() -> None:
    p, c = _protocol()
    p.dataReceived(b"+\n")
    assert c.interval == 0.5
    p.dataReceived(b"+\r\n-\n-\n")  # a terminal in raw mode or a Windows pipe sends CRLF
    assert c.interval == 1.0 * 0.5 * 0.5 * 2 * 2
    p.dataReceived(b"interval 0.05\n")
    assert c.interval == 0.05
    assert c.said[-1] == "interval 0.05 s"


def test_lines_split_across_reads_and_batched_in_one() -> None:
    p, c = _protocol()
    p.dataReceived(b"inter")
    assert c.interval == 1.0
    p.dataReceived(b"val 3\nspike\nspike 9 2\nload 12\nstatus\n")
    assert c.interval == 3.0 and c.spikes == [(None, None), (9.0, 2)] and c.loads == [12.0]
    assert c.said[-4:] == ["spiked", "spiked", "loaded", "all good"]


def test_bad_lines_are_answered_not_fatal() -> None:
    p, c = _protocol()
    p.dataReceived(b"dance\ninterval 0\nhelp\n")
    assert "unknown command" in c.said[0] and "between" in c.said[1] and c.said[2] == HELP
    assert c.interval == 1.0 and p.transport is not None and not p.transport.disconnecting  # type: ignore[attr-defined]


def test_quit_and_end_of_input() -> None:
    p, c = _protocol()
    p.dataReceived(b"quit\n")
    assert c.quits == 1
    p.readConnectionLost()  # EOF on stdin keeps the simulator running
    assert c.quits == 1


def test_overlong_line_is_refused() -> None:
    p, c = _protocol()
    p.dataReceived(b"x" * 5000 + b"\n")
    assert c.said == ["line too long, ignored"]
