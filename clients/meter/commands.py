"""Run-time commands read from stdin through ``twisted.internet.stdio``.

Reading stdin on the reactor (never ``input()``) is what keeps the meters
sending while the operator types. End of input does not stop the simulator:
run in the background with stdin at ``/dev/null`` it keeps going until
``quit``, SIGINT/SIGTERM or ``--duration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

__all__ = ["Command", "CommandError", "Controller", "CommandProtocol", "parse_command", "parse_kw", "HELP"]

MIN_INTERVAL = 0.001
MAX_INTERVAL = 86400.0

MAX_KW = 1000.0  # a steady load or spike above this is a typo, not a household

HELP = (
    "commands: + (twice as fast), - (half as fast), interval SECONDS, "
    "load KW (a steady extra demand on every meter, 0 ends it), "
    "spike [KW [N]] (KW more, default 7, for a minute, on meter N or all), status, help, quit. "
    "A demand alarm needs the 5-minute average above the customer's limit (10 kW unless set): try load 12"
)


class CommandError(ValueError):
    """A line that is not a command; the message is shown to the operator."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # faster, slower, interval, load, spike, status, help, quit, empty
    value: float | None = None  # seconds (interval) or kW (load, spike)
    meter: int | None = None  # spike: the meter's number, None for all


def parse_kw(text: str) -> float:
    """A demand in kW (``--load-kw``, ``load``, ``spike``); a decimal comma is
    accepted as well as a point. :class:`ValueError` says what is wrong."""
    try:
        kw = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"not a number of kW: {text!r}") from None
    if not 0 <= kw <= MAX_KW:  # also rejects nan and inf
        raise ValueError(f"kW must be between 0 and {MAX_KW:g}")
    return kw


def _kw(text: str, usage: str) -> float:
    try:
        return parse_kw(text)
    except ValueError as e:
        raise CommandError(f"{e} ({usage})") from None


def parse_command(line: str) -> Command:
    """Parse one stdin line; raise :class:`CommandError` with a helpful message."""
    words = line.strip().split()
    if not words:
        return Command("empty")
    head, args = words[0].lower(), words[1:]
    if head in ("+", "faster") and not args:
        return Command("faster")
    if head in ("-", "slower") and not args:
        return Command("slower")
    if head in ("interval", "i"):
        if len(args) != 1:
            raise CommandError("usage: interval SECONDS")
        try:
            value = float(args[0])
        except ValueError:
            raise CommandError(f"not a number of seconds: {args[0]!r}") from None
        if not MIN_INTERVAL <= value <= MAX_INTERVAL:  # also rejects nan and inf
            raise CommandError(f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL:g} s")
        return Command("interval", value)
    if head == "load":
        if len(args) != 1:
            raise CommandError("usage: load KW")
        return Command("load", _kw(args[0], "usage: load KW"))
    if head == "spike":
        usage = "usage: spike [KW [METER_NUMBER]]"
        if len(args) > 2:
            raise CommandError(usage)
        kw = _kw(args[0], usage) if args else None
        if kw == 0:
            raise CommandError(f"a spike needs more than 0 kW ({usage})")
        if len(args) == 2 and not (args[1].isdigit() and int(args[1]) >= 1):
            raise CommandError(usage)
        return Command("spike", kw, int(args[1]) if len(args) == 2 else None)
    if head in ("status", "s") and not args:
        return Command("status")
    if head in ("help", "h", "?") and not args:
        return Command("help")
    if head in ("quit", "q", "exit") and not args:
        return Command("quit")
    raise CommandError(f"unknown command {line.strip()!r}; type help")


class Controller(Protocol):
    """What the commands act on (the simulator)."""

    @property
    def interval(self) -> float:
        """Seconds between readings; read here, changed through :meth:`set_interval`."""
        ...

    def set_interval(self, seconds: float) -> None: ...

    def spike(self, kw: float | None, meter_number: int | None) -> str: ...

    def set_load(self, kw: float) -> str: ...

    def status_text(self) -> str: ...

    def quit(self) -> None: ...

    def say(self, text: str) -> None: ...


@implementer(IHalfCloseableProtocol)
class CommandProtocol(LineReceiver):
    """Line-oriented stdin protocol; every answer goes through ``controller.say``."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        try:
            cmd = parse_command(text)
        except CommandError as e:
            self.controller.say(str(e))
            return
        self.execute(cmd)

    def execute(self, cmd: Command) -> None:
        c = self.controller
        if cmd.name == "faster":
            c.set_interval(max(MIN_INTERVAL, c.interval / 2.0))
            c.say(f"interval {c.interval:g} s")
        elif cmd.name == "slower":
            c.set_interval(min(MAX_INTERVAL, c.interval * 2.0))
            c.say(f"interval {c.interval:g} s")
        elif cmd.name == "interval":
            assert cmd.value is not None
            c.set_interval(cmd.value)
            c.say(f"interval {c.interval:g} s")
        elif cmd.name == "spike":
            c.say(c.spike(cmd.value, cmd.meter))
        elif cmd.name == "load":
            assert cmd.value is not None
            c.say(c.set_load(cmd.value))
        elif cmd.name == "status":
            c.say(c.status_text())
        elif cmd.name == "help":
            c.say(HELP)
        elif cmd.name == "quit":
            c.quit()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.controller.say("line too long, ignored")

    def readConnectionLost(self) -> None:
        """End of stdin: keep running (see the module docstring)."""

    def writeConnectionLost(self) -> None:
        """stdout closed: nothing to do, the status just goes nowhere."""
