"""The simulator's output: a live status line on a terminal, plain lines otherwise.

On a terminal the status is redrawn in place (carriage return + erase to end of
line) and messages are printed above it; when stdout is a pipe or a file every
update is a plain, timestamped line, throttled so a log stays readable.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["StatusLine", "RateMeter", "progress_bar"]

_ERASE = "\x1b[K"


def progress_bar(fraction: float, width: int = 24) -> str:
    """``[#########---------------]  38%`` for a fraction clamped to [0, 1]."""
    f = min(1.0, max(0.0, fraction))
    filled = int(f * width + 1e-9)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {int(f * 100):3d}%"


class RateMeter:
    """Events per second over a trailing window, from a monotonically growing count."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, count: int) -> float:
        """Record the count at ``now``; return the rate over the window."""
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


class StatusLine:
    """Write status updates and messages through ``write`` (the stdio transport)."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        tty: bool,
        log_every: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._write = write
        self.tty = tty
        self.log_every = log_every
        self._wall = wall
        self._current = ""
        self._last_logged: float | None = None

    def _stamp(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self._wall()))

    def update(self, text: str, force: bool = False) -> None:
        """Show the current status (redrawn on a tty, logged at most every ``log_every`` s)."""
        if self.tty:
            self._current = text
            self._write(("\r" + text + _ERASE).encode())
            return
        now = self._wall()
        if force or self._last_logged is None or now - self._last_logged >= self.log_every:
            self._last_logged = now
            self._write(f"{self._stamp()} {text}\n".encode())

    def say(self, text: str) -> None:
        """Print a message on its own line, keeping the status line below it."""
        if self.tty:
            self._write(("\r" + _ERASE + text + "\n" + self._current + _ERASE).encode())
        else:
            self._write(f"{self._stamp()} {text}\n".encode())

    def finish(self) -> None:
        """Leave the cursor on a fresh line (before the final summary)."""
        if self.tty and self._current:
            self._write(b"\n")
            self._current = ""
