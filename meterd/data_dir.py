"""The data dir is private: the operator token and every meter's HMAC key live in it.

meterd creates it ``0700`` and sets the process's umask to ``077`` before it
opens anything there, so the SQLite file and its ``-wal``, ``-shm`` and lock
files are ``0600`` from the moment they exist. A data dir or file that an
older meterd or an operator left readable by others is tightened at start,
with a warning naming each path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def prepare(path: Path) -> tuple[int, list[str]]:
    """Create or tighten the data dir and what it holds; the umask before, and one warning per path tightened.

    Sets the umask for the rest of the process's life (meterd restores it when
    it stops). Raises OSError when the dir cannot be created or tightened.
    """
    previous = os.umask(PRIVATE_UMASK)
    warnings = []
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.is_dir():
        raise NotADirectoryError(20, "not a directory", str(path))
    for item in (path, *sorted(path.iterdir())):
        mode = item.lstat().st_mode
        if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            continue
        loose = stat.S_IMODE(mode) & 0o077
        if loose:
            os.chmod(item, stat.S_IMODE(mode) & ~0o077)
            warnings.append(f"{item} was readable or writable by others (mode {stat.S_IMODE(mode):04o}); now {stat.S_IMODE(mode) & ~0o077:04o}")
    return previous, warnings
