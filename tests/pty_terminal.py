"""A program run in a real pseudo-terminal, for the clients' terminal tests.

The child gets a new session with the pty as its controlling terminal, so the
kernel delivers SIGWINCH when the test resizes it, exactly as a terminal
emulator would; a thread collects everything it writes. Nothing here emulates a
screen: tests look at the bytes (and at the lines they form once escape
sequences are removed), which is what a terminal would have to draw.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rich.cells import cell_len

from tests.support import subprocess_env

__all__ = ["PtyProcess", "strip_escapes", "lines_of", "client_env"]

#: What the clients read from the environment, which a test must not inherit.
CLIENT_VARIABLES = ("METERD_LANG", "METERD_SERVER", "METERD_UDP", "METERD_TOKEN", "NO_COLOR")

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>c78]")


def client_env(**overrides: str) -> dict[str, str]:
    """The environment for a client under test: the checkout first on the
    path, and none of the clients' variables except those given."""
    env = {k: v for k, v in subprocess_env().items() if k not in CLIENT_VARIABLES}
    return {**env, **overrides}


def strip_escapes(text: str) -> str:
    """The text without control sequences (colours, cursor moves, erases)."""
    return _ESCAPES.sub("", text)


def lines_of(text: str) -> list[str]:
    """What the output draws, split where a terminal starts a new line or returns."""
    return re.split(r"\r\n|\n|\r", strip_escapes(text))


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:  # runs in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyProcess:
    """``argv`` on a ``cols`` × ``rows`` pty; ``expect()`` waits for its output."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cols: int = 80,
        rows: int = 24,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        master, slave = os.openpty()
        _set_size(slave, cols, rows)
        self.master = master
        self.cols, self.rows = cols, rows
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_take_terminal,
            close_fds=True,
        )
        os.close(slave)
        self._raw = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once the child has closed its side
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._raw.decode("utf-8", errors="replace")

    def mark(self) -> int:
        """A position in :attr:`output`, to look only at what comes after it."""
        return len(self.output)

    def send(self, data: str | bytes) -> None:
        os.write(self.master, data.encode("utf-8") if isinstance(data, str) else data)

    def type(self, text: str, pause: float = 0.02) -> None:
        """Type ``text`` a byte at a time, as slowly as a fast typist."""
        for byte in text.encode("utf-8"):
            self.send(bytes([byte]))
            time.sleep(pause)

    def expect(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output after ``start``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = compiled.search(self.output, start)
            if found:
                return found
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"{pattern!r} not seen; output was:\n{self.output[-4000:]}")
            time.sleep(0.05)

    def resize(self, cols: int, rows: int) -> None:
        """Resize the terminal; the kernel sends the child SIGWINCH."""
        _set_size(self.master, cols, rows)
        self.cols, self.rows = cols, rows

    def widest_line(self, start: int = 0) -> int:
        """The widest line drawn since ``start``, in terminal cells."""
        return max((cell_len(line) for line in lines_of(self.output[start:])), default=0)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not exit; output was:\n{self.output[-4000:]}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        os.close(self.master)
