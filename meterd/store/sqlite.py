"""The embedded store: one SQLite file in WAL mode, one writer thread.

All writes go through a single-connection pool, so writers never contend and
each flush is one transaction; queries use a second pool, which WAL lets read
while the writer commits. This process is the file's only writer (a lock file
enforces it), so the meters' newest readings can live in memory and in-order
readings cost no query at all.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Mapping
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from meterd.store.base import Meter, StoreError
from meterd.registers import Sample, Span, in_span, sensitive_span
from meterd.store.plan import MeterKey, MeterState, Plan
from meterd.store.sql import SqlStore


MAX_REMEMBERED_EDGES = 250_000


class SqliteStore(SqlStore):
    unavailable_errors = (sqlite3.OperationalError,)

    def __init__(self, path: str, *, durability: str = "full") -> None:
        super().__init__()
        self.path = path
        self.durability = durability
        self._states: dict[MeterKey, MeterState] = {}
        self._lock_fd: int | None = None
        # The readings around past period edges (month starts...) with the spans
        # where a stored reading would change them (registers.sensitive_span).
        self._edges: dict[MeterKey, dict[int, tuple[tuple[Sample | None, Sample | None], list[Span]]]] = {}
        self._edge_count = 0
        self._flushes = 0

    def _open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        self._take_lock()
        return self._pool(1), self._pool(2)

    def _pool(self, size: int) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            timeout=30,
            cp_min=1,
            cp_max=size,
            cp_openfun=self._configure,
            cp_noisy=False,
        )

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")

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

    def _states_for(self, txn: Any, keys: set[MeterKey]) -> Mapping[MeterKey, MeterState]:
        return self._states

    def _committed(self, plan: Plan) -> None:
        self._flushes += 1
        self._states.update(plan.states)
        edges = self._edges
        if not edges:
            return
        for c, m, ts, _, _ in plan.rows:
            remembered = edges.get((c, m))
            if remembered:
                for t, (_, spans) in list(remembered.items()):
                    if any(in_span(ts, span) for span in spans):
                        del remembered[t]
                        self._edge_count -= 1

    def _remembered_edge(self, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None] | None:
        state = self._states.get(key)
        if state is None:
            return None
        if state.last_ts is None:
            return None, None  # no reading yet: the register is 0 everywhere
        if t >= state.last_ts:
            return Sample(state.last_ts, state.last_wh), None  # held after the newest reading
        remembered = self._edges.get(key, {}).get(t)
        return None if remembered is None else remembered[0]

    def _remember_edge(self, key: MeterKey, t: int, around: tuple[Sample | None, Sample | None], generation: int) -> None:
        # A flush that committed during the query may or may not be in its answer: don't keep it.
        if generation != self._flushes:
            return
        if self._edge_count >= MAX_REMEMBERED_EDGES:
            self._edges, self._edge_count = {}, 0
        remembered = self._edges.setdefault(key, {})
        if t not in remembered:
            self._edge_count += 1
        remembered[t] = (around, sensitive_span(t, *around))

    def _generation(self) -> int:
        return self._flushes
