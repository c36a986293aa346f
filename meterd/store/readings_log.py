"""The embedded store's readings: a small write log in front of the indexed table.

``readings`` is keyed by meter and time, which is what every lookup wants,
but that key makes a flush expensive: each sending meter's new readings go to
that meter's own leaf of the index, so a flush from 1,000 meters dirties some
1,000 pages and writes them all to the WAL at commit, most of the flush's
cost. A small table with the same key, holding only recent readings, has few
leaves for them to share. So readings land in one of two such logs, and every
flush also moves a slice of the other log into ``readings``, in key order, so
each page of ``readings`` is dirtied once per slice rather than once per
flush. When the other log is empty and the active one has grown past
``log_rows``, they swap. The move is an ``INSERT ... SELECT`` and the emptying a ``DELETE``
without a ``WHERE``, which SQLite does by freeing the log's pages at once.

A reading lives in the log it landed in until its log is emptied, and also
in ``readings`` once its slice has moved, so the set of stored readings is
the union of the three tables (a reading in two of them is the same row
twice); lookups ask all three (:data:`TABLES`, in that order). Which log is
active and how far the move has come live in the one row of ``readings_logs``, written in
the flush's own transaction: a flush rolled back leaves them as they were,
and a restart resumes the move where it stood.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LOGS = ("readings_log_0", "readings_log_1")
#: The logs first: a lookup made of one statement per table (each its own read
#: transaction on a reader connection) then sees every reading committed before
#: it began, since rows only ever move from a log into readings, never back.
TABLES = (*LOGS, "readings")
COLUMNS = "customer_id, meter_id, ts, wh, received_ms"
KEY = "customer_id, meter_id, ts"

#: A log is swapped out, to be moved into readings, once it holds this many readings (and the other is empty).
LOG_ROWS = 40_000
#: Each flush moves this many times its own readings (at least MOVE_MIN_ROWS): faster than they arrive.
MOVE_FACTOR = 1.5
MOVE_MIN_ROWS = 1_000
#: At or before every key: customer ids are never empty.
_START = ("", 0, 0)

Rows = Callable[[Any, str, Sequence[tuple[Any, ...]]], None]


def write(txn: Any, rows: Sequence[tuple[Any, ...]], insert: Rows, log_rows: int = LOG_ROWS) -> None:
    """Store a flush's ``rows`` (``COLUMNS``) and move a slice of the other log, in ``txn``.

    ``insert(txn, head, rows)`` writes many rows after ``head``, none for no
    rows (the store's fixed-shape multi-row statements).
    """
    txn.execute("SELECT active, unmoved_customer, unmoved_meter, unmoved_ts FROM readings_logs WHERE id = 1")
    active, *unmoved = txn.fetchone()
    insert(txn, f"INSERT INTO {LOGS[active]} ({COLUMNS}) VALUES", rows)
    moving = LOGS[1 - active]
    start = tuple(unmoved)
    if _newest_rowid(txn, moving) is not None:
        start = _move_slice(txn, moving, start, max(int(len(rows) * MOVE_FACTOR), MOVE_MIN_ROWS))
    if start == _START and (_newest_rowid(txn, LOGS[active]) or 0) >= log_rows:
        active = 1 - active  # the other log is empty: it takes the new readings, this one is moved
        txn.execute("UPDATE readings_logs SET active = ? WHERE id = 1", (active,))
    if start != tuple(unmoved):
        txn.execute("UPDATE readings_logs SET unmoved_customer = ?, unmoved_meter = ?, unmoved_ts = ? WHERE id = 1", start)


def _move_slice(txn: Any, log: str, start: tuple[Any, ...], size: int) -> tuple[Any, ...]:
    """Move ``size`` rows of ``log`` from key ``start`` on into readings; the key where the next slice starts.

    When no row is left after them, the log is emptied and the key goes back to the beginning.
    """
    txn.execute(f"SELECT {KEY} FROM {log} WHERE ({KEY}) >= (?, ?, ?) ORDER BY {KEY} LIMIT 1 OFFSET ?", (*start, size))
    end = txn.fetchone()
    move = f"INSERT INTO readings ({COLUMNS}) SELECT {COLUMNS} FROM {log} WHERE ({KEY}) >= (?, ?, ?)"
    if end is None:
        txn.execute(f"{move} ORDER BY {KEY}", start)
        txn.execute(f"DELETE FROM {log}")
        return _START
    txn.execute(f"{move} AND ({KEY}) < (?, ?, ?) ORDER BY {KEY}", (*start, *end))
    return tuple(end)


def _newest_rowid(txn: Any, log: str) -> int | None:
    """How many rows the log has had since it was last emptied (rowids restart at 1), or None if empty."""
    txn.execute(f"SELECT MAX(rowid) FROM {log}")
    return txn.fetchone()[0]
