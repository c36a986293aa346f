"""The embedded store's write log, on a plain sqlite3 connection: nothing stored is ever out of sight."""

from __future__ import annotations

import sqlite3
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.store import readings_log, schema
from tests.support import examples

KEY = readings_log.KEY


def database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for migration in schema.MIGRATIONS:
        for statement in migration if isinstance(migration, list) else migration["sqlite"]:
            schema.run_step(db.cursor(), statement, str)
    return db


def insert(txn: Any, head: str, rows: Any) -> None:
    txn.executemany(f"{head} (?, ?, ?, ?, ?)", rows)


def flush(db: sqlite3.Connection, rows: list[tuple[Any, ...]], log_rows: int) -> None:
    db.execute("BEGIN")
    readings_log.write(db.cursor(), rows, insert, log_rows)
    db.execute("COMMIT")


def stored(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Every row of the three tables, a row in two of them once (readings_log.TABLES' union)."""
    union = " UNION ".join(f"SELECT {readings_log.COLUMNS} FROM {table}" for table in readings_log.TABLES)
    return db.execute(f"{union} ORDER BY {KEY}").fetchall()


def sizes(db: sqlite3.Connection) -> dict[str, int]:
    return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in readings_log.TABLES}


def state(db: sqlite3.Connection) -> tuple[Any, ...]:
    return db.execute("SELECT active, unmoved_customer, unmoved_meter, unmoved_ts FROM readings_logs").fetchone()


def reading(meter: int, ts: int) -> tuple[str, int, int, int, int]:
    return (f"{meter:011d}", 1, ts, ts * 3 + meter, ts)


# flushes: lists of (meter, ts) pairs, each reading once (the plan never stores a key twice)
flushes = st.lists(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 400)), max_size=60), max_size=40)


@settings(max_examples=examples(80), deadline=None)
@given(flushes=flushes, log_rows=st.integers(1, 200), min_rows=st.integers(1, 100))
def test_every_reading_flushed_is_in_the_union_once(flushes, log_rows, min_rows):
    db = database()
    expected: dict[tuple[str, int, int], tuple[Any, ...]] = {}
    with mock.patch.object(readings_log, "MOVE_MIN_ROWS", min_rows):  # slices of every size
        for pairs in flushes:
            rows = [row for row in dict.fromkeys(reading(m, t) for m, t in pairs) if row[:3] not in expected]
            flush(db, rows, log_rows)
            expected.update((row[:3], row) for row in rows)
            assert stored(db) == sorted(expected.values())


def test_the_logs_stay_bounded_under_steady_flushes():
    """Each flush moves more than it adds, so the merge ends before the active log is twice full."""
    db = database()
    peak = 0
    for k in range(200):
        flush(db, [reading(m, k) for m in range(1, 301)], log_rows=3_000)  # 300 readings, 1,000 moved per flush
        peak = max(peak, *(sizes(db)[log] for log in readings_log.LOGS))
    assert 3_000 <= peak < 3_000 + 300
    assert sizes(db)["readings"] >= 200 * 300 - 2 * 3_300


def test_a_full_log_is_swapped_out_and_moved_into_readings_in_slices():
    db = database()
    first = [reading(m, t) for t in range(30) for m in range(1, 101)]  # 3,000 readings, over log_rows
    flush(db, first, log_rows=2_000)
    assert state(db) == (1, "", 0, 0)  # swapped: log 0 is to be merged
    assert sizes(db) == {"readings": 0, "readings_log_0": 3_000, "readings_log_1": 0}

    flush(db, [reading(1, 1_000)], log_rows=2_000)  # a small flush moves MOVE_MIN_ROWS of log 0, in key order
    moved = readings_log.MOVE_MIN_ROWS
    assert sizes(db) == {"readings": moved, "readings_log_0": 3_000, "readings_log_1": 1}
    head = db.execute(f"SELECT {readings_log.COLUMNS} FROM readings_log_0 ORDER BY {KEY} LIMIT ?", (moved + 1,)).fetchall()
    assert db.execute(f"SELECT {readings_log.COLUMNS} FROM readings ORDER BY {KEY}").fetchall() == head[:-1]
    assert state(db) == (1, *head[-1][:3])  # the next slice starts at the first row not moved

    flush(db, [reading(2, 1_000)], log_rows=2_000)
    flush(db, [reading(3, 1_000)], log_rows=2_000)  # the last slice: log 0 is emptied, the key starts over
    assert sizes(db) == {"readings": 3_000, "readings_log_0": 0, "readings_log_1": 3}
    assert state(db) == (1, "", 0, 0)
    assert len(stored(db)) == 3_003


def test_a_rolled_back_flush_leaves_the_logs_and_the_merge_as_they_were():
    db = database()
    flush(db, [reading(m, t) for t in range(30) for m in range(1, 101)], log_rows=2_000)
    flush(db, [reading(1, 1_000)], log_rows=2_000)
    before = (state(db), sizes(db), stored(db))
    db.execute("BEGIN")
    readings_log.write(db.cursor(), [reading(2, 1_000)], insert, 2_000)
    assert state(db) != before[0]  # inside the transaction, the merge went on
    db.execute("ROLLBACK")
    assert (state(db), sizes(db), stored(db)) == before
    flush(db, [reading(2, 1_000)], log_rows=2_000)  # and the next flush moves the same slice again
    assert sizes(db)["readings"] == 2 * readings_log.MOVE_MIN_ROWS
    assert len(stored(db)) == 3_002


def test_an_idle_flush_still_moves_a_slice():
    """A flush with no new readings (all duplicates) keeps the merge going."""
    db = database()
    flush(db, [reading(m, t) for t in range(30) for m in range(1, 101)], log_rows=2_000)
    flush(db, [], log_rows=2_000)
    assert sizes(db)["readings"] == readings_log.MOVE_MIN_ROWS


class _Interleaved:
    """A reader's cursor that lets the writer commit a flush right after its first statement."""

    def __init__(self, cursor: sqlite3.Cursor, between: Any) -> None:
        self.cursor, self.between, self.statements = cursor, between, 0

    def execute(self, statement: str, args: Any = ()) -> None:
        self.cursor.execute(statement, args)
        self.statements += 1
        if self.statements == 1:
            self.between()

    def fetchone(self) -> Any:
        return self.cursor.fetchone()


def test_a_lookup_racing_the_end_of_a_move_still_finds_the_reading(tmp_path):
    """Each statement of a reader's lookup sees its own snapshot: a reading moved into readings and its
    log emptied between two of them must still be found (the logs are asked first)."""
    from meterd.store.sqlite import SqliteStore

    path = str(tmp_path / "db.sqlite3")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")  # as the store runs: readers never block the writer
    for migration in schema.MIGRATIONS:
        for statement in migration if isinstance(migration, list) else migration["sqlite"]:
            schema.run_step(writer.cursor(), statement, str)
    flush(writer, [reading(1, 100)], log_rows=1)  # swapped: log 0 holds the reading, to be moved
    reader = sqlite3.connect(path, isolation_level=None)  # autocommit: one snapshot per statement
    moved = []

    def finish_the_move() -> None:
        flush(writer, [], log_rows=1)
        moved.append(sizes(writer))

    store = SqliteStore(path)  # not started: only its lookup is used, on the reader's cursor
    before, after = store._neighbours(_Interleaved(reader.cursor(), finish_the_move), (f"{1:011d}", 1), 100)
    assert moved == [{"readings": 1, "readings_log_0": 0, "readings_log_1": 0}]
    assert (before, after) == ((100, 301), None)
