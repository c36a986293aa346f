"""The simulator's output: a live status line on a terminal, plain lines otherwise.

On a terminal the status is redrawn in place (carriage return + erase to end of
line) and messages are printed above it. The status never wraps: a line longer
than the terminal would scroll the screen by one line per redraw, so it keeps
as many of its parts as fit the terminal's current width (one column spare,
where the cursor rests), most important first; messages are broken between
words to the same width, a long word (a key) kept whole on its own line so it
can be copied. When stdout is a pipe or a file
every update is a plain, timestamped line with all its parts, throttled so a
log stays readable.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from collections import deque
from collections.abc import Callable, Sequence

from rich.cells import cell_len, set_cell_size

__all__ = ["StatusLine", "RateMeter", "progress_bar", "fit", "wrap_message", "terminal_width", "SEPARATOR"]

SEPARATOR = " | "

_ERASE = "\x1b[K"


def progress_bar(fraction: float, width: int = 24) -> str:
    """``[#########---------------]  38%`` for a fraction clamped to [0, 1]."""
    f = min(1.0, max(0.0, fraction))
    filled = int(f * width + 1e-9)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {int(f * 100):3d}%"


def fit(parts: Sequence[str], width: int) -> str:
    """The leading ``parts`` that fit in ``width`` cells, joined; the first one
    cut to the width if even it does not fit."""
    line = ""
    for part in parts:
        candidate = part if not line else line + SEPARATOR + part
        if cell_len(candidate) > width:
            break
        line = candidate
    if not line and parts:
        line = set_cell_size(parts[0], max(0, width - 1)) + "…"
    return line


def terminal_width() -> int:
    return shutil.get_terminal_size().columns


def wrap_message(text: str, width: int) -> str:
    """``text`` broken between words to ``width`` cells; a longer word (a key,
    a token) is kept whole on its own line, so it can be copied."""
    return "\n".join(textwrap.wrap(text, max(1, width), break_long_words=False, break_on_hyphens=False))


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
        columns: Callable[[], int] = terminal_width,
    ) -> None:
        self._write = write
        self.tty = tty
        self.log_every = log_every
        self._wall = wall
        self._columns = columns
        self._current = ""
        self._last_logged: float | None = None

    def _stamp(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self._wall()))

    def update(self, parts: Sequence[str], force: bool = False) -> None:
        """Show the current status (redrawn on a tty, logged at most every ``log_every`` s).

        ``parts`` come most important first; on a terminal only those that
        fit its width (read at every redraw, so a resize is followed) are shown.
        """
        if self.tty:
            text = fit(parts, max(1, self._columns() - 1))
            self._current = text
            self._write(("\r" + text + _ERASE).encode())
            return
        now = self._wall()
        if force or self._last_logged is None or now - self._last_logged >= self.log_every:
            self._last_logged = now
            self._write(f"{self._stamp()} {SEPARATOR.join(parts)}\n".encode())

    def say(self, text: str) -> None:
        """Print a message on its own line(s), keeping the status line below it."""
        if self.tty:
            text = wrap_message(text, self._columns() - 1)
            self._write(("\r" + _ERASE + text + "\n" + self._current + _ERASE).encode())
        else:
            self._write(f"{self._stamp()} {text}\n".encode())

    def finish(self) -> None:
        """Leave the cursor on a fresh line (before the final summary)."""
        if self.tty and self._current:
            self._write(b"\n")
            self._current = ""
