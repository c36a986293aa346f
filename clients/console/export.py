"""``exportar``: a CSV from the server into a file, with a progress bar on a terminal.

The body goes into a hidden temporary file beside the destination as it
arrives (never whole in memory), which is renamed to its name only once it
is complete, so a file of that name is always a whole export and a failed
one leaves nothing behind. Without ``--saida`` the file is named as the
server suggests (``Content-Disposition``), in the current directory.

The bar counts rows against the number the server announces
(``X-Total-Count``), on stderr and only when stderr is a terminal, redrawn
at most ten times a second; pipes and files get no bar.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from .messages import Messages
from .render import format_number

__all__ = ["ExportFile", "Progress", "suggested_name"]

ERASE_LINE = "\r\x1b[K"
REDRAW_EVERY = 0.1  # seconds between two drawings of the bar
FALLBACK_NAME = "meterd-exportacao.csv"
STDOUT = "-"


def suggested_name(disposition: str | None) -> str:
    """The file name a ``Content-Disposition`` suggests (its UTF-8 ``filename*`` first), as a bare name."""
    name = ""
    if disposition:
        star = re.search(r"filename\*\s*=\s*UTF-8''([^;\s]+)", disposition, re.IGNORECASE)
        plain = re.search(r'filename\s*=\s*"([^"]*)"', disposition, re.IGNORECASE)
        if star:
            name = unquote(star[1], errors="replace")
        elif plain:
            name = plain[1]
    name = Path(name.replace("\\", "/")).name.replace("\x00", "")  # never a path: the server names a file, not where it goes
    return name if name not in ("", ".", "..") and not name.startswith(".") else FALLBACK_NAME


class Progress:
    """``Exportando ████████░░░░  45 %  236.520 de 525.600 linhas``, redrawn in place.

    ``key`` is the catalog's line (with ``{bar}``, ``{percent}``, ``{rows}``
    and ``{total}``; a billing run's has its own, and fields of its own).
    """

    def __init__(self, write: Callable[[str], None], m: Messages, width: int, *, ascii_only: bool = False,
                 clock: Callable[[], float] = time.monotonic, key: str = "export.progress") -> None:
        self.write = write
        self.m = m
        self.key = key
        self.width = width
        self.full, self.empty = ("#", "-") if ascii_only else ("█", "░")
        self.clock = clock
        self.drawn_at: float | None = None

    def update(self, rows: int, total: int | None, *, force: bool = False, **fields: str) -> None:
        now = self.clock()
        if not force and self.drawn_at is not None and now - self.drawn_at < REDRAW_EVERY:
            return
        self.drawn_at = now
        count = self._count(rows)
        if not total:
            self.write(ERASE_LINE + self.m("export.progress_rows", rows=count))
            return
        share = min(rows / total, 1.0)
        text = self.m(self.key, bar="{bar}", percent=f"{share:4.0%}", rows=count, total=self._count(total), **fields)
        room = max(10, min(40, self.width - len(text) + len("{bar}") - 1))
        filled = round(room * share)
        self.write(ERASE_LINE + text.replace("{bar}", self.full * filled + self.empty * (room - filled)))

    def clear(self) -> None:
        if self.drawn_at is not None:
            self.write(ERASE_LINE)

    def _count(self, n: int) -> str:
        return format_number(n, 0, thousands_sep=self.m("num.thousands"))


class ExportFile:
    """Where a download goes (a :class:`clients.api.Receiver`): a file renamed into place when complete, or stdout."""

    def __init__(self, target: str | None, *, progress: Progress | None = None, began: Callable[[], None] | None = None,
                 stdout: BinaryIO | None = None, directory: Path | None = None) -> None:
        self.target = target
        self.progress = progress
        self.began = began
        self.stdout: BinaryIO = stdout if stdout is not None else sys.stdout.buffer
        self.directory = directory or Path.cwd()
        self.path: Path | None = None  # where the export goes (None: stdout)
        self.partial: Path | None = None
        self.file: BinaryIO | None = None
        self.total: int | None = None  # rows, as the server announced
        self.lines = 0
        self.size = 0

    @property
    def rows(self) -> int:
        """Rows of data written so far (the header row is not one)."""
        return max(self.lines - 1, 0)

    def begin(self, headers: Mapping[str, str]) -> None:
        if self.began is not None:
            self.began()
        try:
            self.total = int(headers.get("x-total-count", ""))
        except ValueError:
            self.total = None
        if self.target == STDOUT:
            self.file = self.stdout
            return
        name = suggested_name(headers.get("content-disposition"))
        path = Path(self.target) if self.target else self.directory / name
        if path.is_dir():
            path = path / name
        self.path = path
        self.partial = path.with_name(f".{path.name}.parcial")
        self.file = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        assert self.file is not None, "begin comes first"
        self.file.write(data)
        self.lines += data.count(b"\n")
        self.size += len(data)
        if self.progress is not None:
            self.progress.update(self.rows, self.total)

    def finish(self) -> Path | None:
        """The export is complete: the file takes its name (None: it went to stdout)."""
        if self.progress is not None:
            self.progress.update(self.rows, self.total, force=True)
            self.progress.clear()
        if self.file is self.stdout:
            self.stdout.flush()
            return None
        assert self.file is not None and self.partial is not None and self.path is not None
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        """The export failed: nothing of it stays on disk."""
        if self.progress is not None:
            self.progress.clear()
        if self.file is not None and self.file is not self.stdout:
            self.file.close()
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)
