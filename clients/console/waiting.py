"""A one-line spinner that says what the console is waiting for.

It runs on the reactor (a ``LoopingCall`` on the clock given), so it never
competes with the output it interrupts, and it appears only after a short
delay: an answer that comes at once is not preceded by a flash. The frames are
rich's (``dots``, or ``line`` where only ASCII is wanted); the line is drawn
with a carriage return and erased with "erase to end of line", so whatever is
printed next starts on a clean line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from rich.spinner import SPINNERS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall

__all__ = ["Spinner"]

ERASE_LINE = "\r\x1b[K"


class Spinner:
    """``⠋ Conectando a http://…`` redrawn in place until :meth:`stop`."""

    def __init__(
        self,
        write: Callable[[str], None],
        clock: IReactorTime,
        *,
        ascii_only: bool = False,
        delay: float = 0.3,
    ) -> None:
        spec = SPINNERS["line" if ascii_only else "dots"]
        # rich's table is inferred as dict[str, dict[str, object]]; every entry
        # holds its frames (a str or a list of str) and its interval in ms.
        self._frames: list[str] = list(cast("str | list[str]", spec["frames"]))
        self._interval = cast(int, spec["interval"]) / 1000.0
        self._write = write
        self._clock = clock
        self._delay = delay
        self._text = ""
        self._frame = 0
        self._pending: IDelayedCall | None = None
        self._loop: LoopingCall | None = None

    @property
    def showing(self) -> bool:
        return self._loop is not None

    def start(self, text: str) -> None:
        """Show ``text`` with a spinner from ``delay`` seconds on (restarts if running)."""
        self.stop()
        self._text = text
        self._pending = self._clock.callLater(self._delay, self._begin)

    def _begin(self) -> None:
        self._pending = None
        self._loop = LoopingCall(self._draw)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def _draw(self) -> None:
        frame = self._frames[self._frame % len(self._frames)]
        self._frame += 1
        self._write(f"{ERASE_LINE}{frame} {self._text}")

    def stop(self) -> None:
        """Erase the line if it was drawn; nothing happens if it never was."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
            self._write(ERASE_LINE)

