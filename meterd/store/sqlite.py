"""The embedded store: one SQLite file in WAL mode, one writer thread.

All writes go through a single-connection pool, so writers never contend and
each flush is one transaction; queries use a second pool, which WAL lets read
while the writer commits. This process is the file's only writer (a lock file
enforces it), so the meters' newest readings can live in memory and in-order
readings cost no query at all.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from meterd.readings import Reading
from meterd.store.base import Meter, StoreError
from meterd.registers import Sample, Span, any_in_span, sensitive_span
from meterd.store import readings_log
from meterd.store.plan import MeterKey, MeterState, Plan
from meterd.store.sql import STATEMENT_SHAPES, SqlStore


MAX_REMEMBERED_EDGES = 250_000
WRITER_CACHE_KB = 64 * 1024
WAL_AUTOCHECKPOINT_PAGES = 10_000
WRITER_STATEMENTS = 4 * STATEMENT_SHAPES + 128  # a flush writes three tables, readings to either log; 128 is sqlite3's default for the rest


class SqliteStore(SqlStore):
    backend = "sqlite"
    unavailable_errors = (sqlite3.OperationalError,)
    reading_tables = readings_log.TABLES

    def __init__(self, path: str, *, durability: str = "full", log_rows: int = readings_log.LOG_ROWS) -> None:
        super().__init__()
        self.path = path
        self.durability = durability
        self.log_rows = log_rows
        self._states: dict[MeterKey, MeterState] = {}
        self._lock_fd: int | None = None
        # The readings around past period edges (month starts...) with the spans
        # where a stored reading would change them (registers.sensitive_span).
        self._edges: dict[MeterKey, _Edges] = {}
        self._edge_count = 0
        self._flushes = 0

    def _open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        self._take_lock()
        # the writer keeps every shape of a flush's statements compiled (sql.STATEMENT_SHAPES)
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
        slice moves into (with 1,000 meters sending, ~750 pages written for
        4,500 readings), more than the default 2 MB cache holds, so every
        flush read them back through the OS. With the default 1,000-page
        autocheckpoint nearly every commit also checkpointed, copying the same
        hot pages into the database file again and again; with 10,000 pages
        (40 MB of WAL) a page is copied once per several flushes. Durability
        does not change: each commit still syncs the WAL first.
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

    def _migrate(self, txn: Any) -> int:
        """Migrate inside an explicit transaction.

        Python's sqlite3 opens a transaction implicitly only before DML, so the
        ``CREATE TABLE`` statements of a migration would otherwise commit one by
        one, and a migration failing halfway would leave tables behind that make
        every later start fail with "already exists". SQLite's DDL is
        transactional once a transaction is open.
        """
        txn.execute("BEGIN IMMEDIATE")
        return super()._migrate(txn)

    def _started(self) -> Deferred[None]:
        def remember(rows: list[tuple[Any, ...]]) -> None:
            self._states = {(c, m): MeterState(mode, ts, wh) for c, m, mode, ts, wh in rows}

        assert self._writer is not None
        return self._writer.runQuery("SELECT customer_id, meter_id, mode, last_ts, last_wh FROM meters").addCallback(remember)

    def stop(self) -> Deferred[None]:
        result = super().stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return result

    def _meter_created(self, meter: Meter) -> Meter:
        self._states[(meter.customer_id, meter.meter_id)] = MeterState(meter.mode)
        return meter

    def _write_readings(self, txn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        readings_log.write(txn, rows, self._rows, self.log_rows)

    def _states_for(self, txn: Any, readings: Sequence[Reading]) -> Mapping[MeterKey, MeterState]:
        """All of them, from memory: no need to know which meters the flush holds."""
        return self._states

    def _committed(self, plan: Plan) -> None:
        self._flushes += 1
        self._states.update(plan.states)
        if self._edges:
            self._forget_edges(plan)

    def _forget_edges(self, plan: Plan) -> None:
        """Forget the remembered edges whose neighbours a committed row changed.

        Per meter, not per row: a meter's rows are one ts-sorted run of
        ``plan.rows``. When its first row is past the meter's ``reach`` no
        span can hold any of them, which is the case of every in-order
        reading (spans end at a stored reading), so the common meter costs one
        comparison. Otherwise each span is checked with one bisect. The
        per-row, per-edge loop this replaces was a tenth of the reactor thread.
        """
        edges = self._edges
        rows = plan.rows
        for key, (start, end) in plan.runs.items():
            remembered = edges.get(key)
            if remembered is None or rows[start][2] >= remembered.reach:
                continue
            times = [row[2] for row in rows[start:end]]
            around = remembered.around
            for t, (_, spans) in list(around.items()):
                if any(any_in_span(times, span) for span in spans):
                    del around[t]
                    self._edge_count -= 1
            if not around:
                del edges[key]  # (an edge remembered meanwhile is lost: only a query more)

    def _remembered_edge(self, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None] | None:
        state = self._states.get(key)
        if state is None:
            return None
        if state.last_ts is None:
            return None, None  # no reading yet: the register is 0 everywhere
        if t >= state.last_ts:
            return Sample(state.last_ts, state.last_wh), None  # held after the newest reading
        remembered = self._edges.get(key)
        found = None if remembered is None else remembered.around.get(t)
        return None if found is None else found[0]

    def _remember_edge(self, key: MeterKey, t: int, around: tuple[Sample | None, Sample | None], generation: int) -> None:
        # A flush that committed during the query may or may not be in its answer: don't keep it.
        if generation != self._flushes:
            return
        if self._edge_count >= MAX_REMEMBERED_EDGES:
            self._edges, self._edge_count = {}, 0
        remembered = self._edges.setdefault(key, _Edges())
        spans = sensitive_span(t, *around)
        # Widen the reach before the edge is visible: the reactor thread may check this meter in between.
        remembered.widen(spans)
        if t not in remembered.around:
            self._edge_count += 1
        remembered.around[t] = (around, spans)

    def _generation(self) -> int:
        return self._flushes


class _Edges:
    """One meter's remembered edges, and how far their spans reach.

    ``reach`` only grows (a span removed leaves it as it was): it is read on
    the reactor thread while the reader threads remember edges, and a bound
    too high only costs a check, a bound too low would keep a wrong edge.
    """

    __slots__ = ("around", "reach")

    def __init__(self) -> None:
        self.around: dict[int, tuple[tuple[Sample | None, Sample | None], list[Span]]] = {}
        self.reach: float = -math.inf  # no span holds a time at or after this

    def widen(self, spans: list[Span]) -> None:
        for _, hi in spans:
            self.reach = max(self.reach, math.inf if hi is None else hi)
