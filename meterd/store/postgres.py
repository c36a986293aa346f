"""The scale-out store: PostgreSQL through psycopg 3, shared by many meterd processes.

The SQL is :class:`SqlStore`'s, unchanged; what differs from SQLite is that
this process is *not* the database's only writer. Other meterd processes (on
this host through ``--reuse-port``, or on other hosts) ingest into the same
tables, so nothing about the meters can be trusted from memory:

* the meters' newest readings are read inside every ingest transaction, and
  their rows are locked (``FOR UPDATE``, in key order) so two processes that
  receive readings of the same meter serialise on it instead of racing;
* meter ids are allocated with ``MAX + 1`` by whichever process registers the
  meter, so a race between two registrations is retried;
* the first start of several processes on an empty database migrates once,
  under an advisory lock.

Each process has one writer connection (group commit already makes one
transaction per flush; more writers would only contend on the same meter
rows) and a few readers for the HTTP queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd.store.plan import MeterKey, MeterState
from meterd.store.sql import SqlStore

log = Logger()

READER_CONNECTIONS = 3

# pg_advisory_xact_lock key for schema migrations: any constant shared by every
# meterd (this one spells "meterd" in ASCII).
MIGRATION_LOCK = 0x6D6574657264

# The meters of one flush, newest stored reading included, locked in key order.
# The keys travel as two arrays, so the statement is the same (and prepared
# once) whatever the flush holds, and no flush can exceed the bind-parameter
# limit. Ordering the locks means two processes locking overlapping sets of
# meters queue behind each other instead of deadlocking: LockRows sits above
# the Sort in the plan, so rows are locked in ORDER BY order.
_LOCK_STATES = """
SELECT m.customer_id, m.meter_id, m.mode, m.last_ts, m.last_wh, m.retired_ts
FROM meters AS m
JOIN unnest(%s::text[], %s::bigint[]) AS k (customer_id, meter_id)
  ON m.customer_id = k.customer_id AND m.meter_id = k.meter_id
ORDER BY m.customer_id, m.meter_id
FOR UPDATE OF m
"""

# Citus runs SELECT ... FOR UPDATE only when every row is on one shard, so on
# Citus the meters are locked one customer (one shard) at a time, customers in
# sorted order: the same deadlock-free order in every process.
_LOCK_STATES_OF_CUSTOMER = """
SELECT customer_id, meter_id, mode, last_ts, last_wh, retired_ts
FROM meters
WHERE customer_id = %s AND meter_id = ANY(%s::bigint[])
ORDER BY meter_id
FOR UPDATE
"""


class PostgresEngine:
    """PostgreSQL's side of :class:`~meterd.store.sql.Engine`."""

    name = "postgresql"
    # Other processes write to this database too: caches of what the store
    # holds (the directory's meter lists, closed months' bills) must be
    # checked against it rather than trusted (see docs/scale-out.md).
    shared = True
    reading_tables: tuple[str, ...] = ("readings",)
    unavailable_errors: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError, adbapi.ConnectionLost)

    def __init__(self, dsn: str, *, durability: str = "full") -> None:
        self.dsn = dsn
        self.durability = durability
        self.citus = False
        self._statements: dict[Any, str] = {}  # translated statements (any thread: a dict's set is atomic, the value the same)

    def open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        return self._pool(1, self._configure_writer), self._pool(READER_CONNECTIONS, None)

    def _pool(self, size: int, openfun: Any) -> adbapi.ConnectionPool:
        # adbapi calls psycopg.connect(dsn, **kwargs): the DSN must be the first
        # positional argument; the rest become libpq connection parameters.
        return adbapi.ConnectionPool(
            "psycopg",
            self.dsn,
            application_name="meterd",
            connect_timeout=10,
            cp_min=1,
            cp_max=size,
            cp_reconnect=True,
            cp_openfun=openfun,
            cp_noisy=False,
        )

    def _configure_writer(self, conn: psycopg.Connection[Any]) -> None:
        """``--durability normal``: commits return before the WAL is flushed.

        Like SQLite's ``synchronous=NORMAL``, a crash of the database server
        may lose the last fraction of a second of acknowledged readings; the
        database itself stays consistent.
        """
        if self.durability != "full":
            conn.execute("SET synchronous_commit TO off")
            conn.commit()

    def close(self) -> None:
        pass

    def sql(self, statement: str) -> str:
        translated = self._statements.get(statement)
        if translated is None:
            translated = self._statements[statement] = statement.replace("?", "%s")
        return translated

    def lock_for_migration(self, txn: Any) -> None:
        """Migrate under a transaction-scoped advisory lock.

        Two processes starting together on an empty database would otherwise
        both run ``CREATE TABLE`` (one failing on a catalog unique index) or
        both apply the same migration. The second waits here, then finds the
        schema current. PostgreSQL's DDL is transactional, so a failed
        migration leaves nothing half-done.
        """
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def started(self, writer: adbapi.ConnectionPool) -> Deferred[Any]:
        def remember(rows: list[tuple[Any, ...]]) -> None:
            self.citus = bool(rows)
            if self.citus:
                log.info("Citus detected: meters are locked per customer shard in each flush")

        return writer.runQuery("SELECT 1 FROM pg_extension WHERE extname = 'citus'").addCallback(remember)

    def rows(self, txn: Any, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
        """The shared multi-row statements, with one array per column through ``unnest``.

        psycopg caches its placeholder parsing only for short statements; a
        VALUES list with thousands of ``%s`` would be parsed anew in Python on
        every flush, holding the GIL. ``unnest`` keeps the statement short (one
        parameter per column) whatever the number of rows.
        """
        if not rows:
            return
        types = tuple("text" if isinstance(value, str) else "bigint" for value in rows[0])
        key = ("unnest", head, tail, types)
        statement = self._statements.get(key)
        if statement is None:
            before, _, after = head.rpartition("VALUES")
            names = ", ".join(f"column{i}" for i in range(1, len(types) + 1))
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            statement = self._statements[key] = f"{self.sql(before)}SELECT * FROM unnest({arrays}) AS u({names}){after} {self.sql(tail)}"
        txn.execute(statement, [list(column) for column in zip(*rows)])

    def write_readings(self, txn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows(txn, "INSERT INTO readings (customer_id, meter_id, ts, wh, received_ms) VALUES", rows)

    def locked_states(self, txn: Any, keys: set[MeterKey]) -> Mapping[MeterKey, MeterState]:
        """The meters' newest readings as committed, their rows locked until this flush commits.

        Why no reading can hit the readings' primary key even when two
        processes receive the same reading (a meter resending to whichever
        process SO_REUSEPORT picks): both flushes lock the meter's row first.
        The second waits until the first commits; in READ COMMITTED its
        ``FOR UPDATE`` then returns the row's newest version (the first
        flush's ``last_ts``), and every later statement of the flush takes a
        fresh snapshot, so the neighbour lookups see the first flush's
        readings and the plan classifies the resent reading as a duplicate
        instead of inserting it again. Readings are only ever inserted by a
        transaction holding their meter's lock, so the check and the insert
        cannot interleave with another writer.
        """
        if not keys:
            return {}
        if self.citus:
            rows: list[tuple[Any, ...]] = []
            by_customer: dict[str, list[int]] = {}
            for c, m in keys:
                by_customer.setdefault(c, []).append(m)
            for c in sorted(by_customer):
                txn.execute(_LOCK_STATES_OF_CUSTOMER, (c, sorted(by_customer[c])))
                rows.extend(txn.fetchall())
        else:
            ordered = sorted(keys)
            txn.execute(_LOCK_STATES, ([c for c, _ in ordered], [m for _, m in ordered]))
            rows = txn.fetchall()
        return {(c, m): MeterState(mode, ts, wh, retired) for c, m, mode, ts, wh, retired in rows}

    def violated(self, failure: Failure) -> str | None:
        """Another process inserted the same customer, or took the same next meter id, meanwhile."""
        error = failure.value
        if isinstance(error, pg_errors.UniqueViolation):
            name: str | None = error.diag.constraint_name
            return name
        return None


class PostgresStore(SqlStore):
    """The PostgreSQL store: :class:`SqlStore` with the PostgreSQL engine, nothing kept in memory."""

    def __init__(self, dsn: str, *, durability: str = "full") -> None:
        super().__init__(PostgresEngine(dsn, durability=durability))
        self.dsn = dsn
