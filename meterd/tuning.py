"""How meterd and its worker processes tune CPython for a reactor that is never idle.

* The garbage collector: every datagram and request allocates a few
  containers (a dict, tuples, a Reading) that die within a flush, but with
  CPython's default thresholds (700, 10, 10) a young collection would run every
  few hundred datagrams and, as pending readings and the alarms' windows keep
  surviving, a full collection every second or so, each a pause with the GIL
  held long enough to overflow the socket's buffer. Counts are net of frees,
  so with these a young collection comes only once garbage accumulates.
* The switch interval: the store's writer thread hands the GIL back and forth
  with the reactor thread; each hand-back waits up to one interval (5 ms by
  default), which would cap durable ingest far below what SQLite does.

Applied when meterd starts (and undone when it stops), and in each worker
process: importing or building meterd changes nothing.

And one call for when a burst is over: glibc keeps the heap that many
connections' buffers took (freed, but at its high-water mark) until asked
to give it back; :func:`release_free_memory` asks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache

GC_THRESHOLDS = (50_000, 20, 100)
SWITCH_INTERVAL = 0.001

Tuning = tuple[float, tuple[int, int, int]]


def tune() -> Tuning:
    """Apply both; what they were before, for :func:`restore`."""
    previous = (sys.getswitchinterval(), gc.get_threshold())
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLDS)
    return previous


def restore(previous: Tuning) -> None:
    switch, thresholds = previous
    sys.setswitchinterval(switch)
    gc.set_threshold(*thresholds)


@cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``); nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # type: ignore[operator]
