"""The embedded store: one SQLite file in WAL mode, one writer thread.

All writes go through a single-connection pool, so writers never contend and
each flush is one transaction; queries use a second pool, which WAL lets read
while the writer commits. This process is the file's only writer (a lock file
enforces it), so the meters' newest readings and past period edges can live
in memory (:class:`~meterd.store.memory.MeterMemory`) and in-order readings
cost no query at all.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from meterd.store import readings_log
from meterd.store.base import StoreError
from meterd.store.memory import MeterMemory
from meterd.store.plan import MeterKey, MeterState
from meterd.store.sql import SqlStore

#: Rows per statement of a flush's writes; what is left goes in at most two
#: more statements, a multiple of ROW_GRANULE rows and the rest. 9 columns x
#: 1,024 rows stay under SQLite's 32,766 parameters.
ROWS_PER_STATEMENT = 1024
ROW_GRANULE = 64
#: The statement shapes a table's rows can take (79): full, multiples of the granule, the rest.
STATEMENT_SHAPES = 1 + (ROWS_PER_STATEMENT // ROW_GRANULE - 1) + (ROW_GRANULE - 1)
WRITER_CACHE_KB = 64 * 1024
WAL_AUTOCHECKPOINT_PAGES = 10_000
WRITER_STATEMENTS = 4 * STATEMENT_SHAPES + 128  # a flush writes three tables, readings to either log; 128 is sqlite3's default for the rest


class SqliteEngine:
    """SQLite's side of :class:`~meterd.store.sql.Engine`."""

    name = "sqlite"
    shared = False
    reading_tables: tuple[str, ...] = readings_log.TABLES
    unavailable_errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: str, *, durability: str = "full", log_rows: int = readings_log.LOG_ROWS) -> None:
        self.path = path
        self.durability = durability
        self.log_rows = log_rows
        self._lock_fd: int | None = None
        self._statements: dict[tuple[Any, ...], str] = {}  # the multi-row statements, by shape (writer thread)

    def open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        self._take_lock()
        # the writer keeps every shape of a flush's statements compiled (STATEMENT_SHAPES)
        return self._pool(1, self._configure_writer, WRITER_STATEMENTS), self._pool(2, self._configure)

    def _pool(self, size: int, configure: Callable[[sqlite3.Connection], None], statements: int = 128) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            timeout=30,
            cached_statements=statements,
            cp_min=1,
            cp_max=size,
            cp_openfun=configure,
            cp_noisy=False,
        )

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        """The writer's connection: a page cache that holds what a flush touches, fewer checkpoints.

        Each flush touches pages all over: the write log's, a page or two per
        meter of the rollups and meters, and the leaves of ``readings`` its
        slice moves into (with 1,000 meters sending, ~750 pages for 4,500
        readings), more than the default 2 MB cache holds, so every flush
        would read them back through the OS. With the default 1,000-page
        autocheckpoint nearly every commit would also checkpoint, copying the
        same hot pages into the database file again and again; with 10,000
        pages (40 MB of WAL) a page is copied once per several flushes.
        Durability does not change: each commit still syncs the WAL first.
        """
        self._configure(conn)
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KB}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")

    def _take_lock(self) -> None:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path} is in use by another meterd process") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def sql(self, statement: str) -> str:
        return statement

    def lock_for_migration(self, txn: Any) -> None:
        """Open the transaction explicitly.

        Python's sqlite3 opens a transaction implicitly only before DML, so the
        ``CREATE TABLE`` statements of a migration would otherwise commit one by
        one, and a migration failing halfway would leave tables behind that make
        every later start fail with "already exists". SQLite's DDL is
        transactional once a transaction is open.
        """
        txn.execute("BEGIN IMMEDIATE")

    def started(self, writer: adbapi.ConnectionPool) -> Deferred[Any]:
        return succeed(None)

    def rows(self, txn: Any, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
        """Run ``head (?, ...), (?, ...) tail`` over many rows, in statements of a few fixed sizes.

        Many rows per statement, not one (executemany): the driver releases
        the GIL around every statement, and while the reactor thread is busy
        each re-acquisition can wait a whole switch interval, so per-row
        statements make durable ingest crawl under load. Fixed sizes
        (ROWS_PER_STATEMENT rows, then two for what is left) because
        compiling a statement of thousands of rows costs more than running
        it, and each flush has a size of its own: a statement per flush sized
        to it would be compiled anew nearly every time, and kept, so the
        statement caches would grow with every new size. Two statements at
        most for the rest, not a power-of-two split: each statement must win
        the GIL back from a busy reactor thread.
        """
        width = len(rows[0]) if rows else 0
        start, end = 0, len(rows)
        while start < end:
            left = end - start
            size = ROWS_PER_STATEMENT if left >= ROWS_PER_STATEMENT else left - left % ROW_GRANULE or left
            key = (head, tail, width, size)
            statement = self._statements.get(key)
            if statement is None:
                group = "(" + ", ".join("?" * width) + ")"
                statement = self._statements[key] = f"{head} {', '.join([group] * size)} {tail}"
            # flattened in C: this thread holds the GIL here
            txn.execute(statement, list(chain.from_iterable(rows[start : start + size])))
            start += size

    def write_readings(self, txn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        readings_log.write(txn, rows, self.rows, self.log_rows)

    def locked_states(self, txn: Any, keys: set[MeterKey]) -> Mapping[MeterKey, MeterState]:
        raise AssertionError("an unshared store keeps its meters' states in memory")

    def violated(self, failure: Failure) -> str | None:
        return None  # one writer: a check and its insert cannot race


class SqliteStore(SqlStore):
    """The SQLite store: :class:`SqlStore` with the SQLite engine and a memory of the meters."""

    def __init__(self, path: str, *, durability: str = "full", log_rows: int = readings_log.LOG_ROWS) -> None:
        super().__init__(SqliteEngine(path, durability=durability, log_rows=log_rows), MeterMemory())
        self.path = path
