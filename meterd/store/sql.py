"""The SQL every backend shares, written once against DB-API cursors.

Statements use ``?`` placeholders; a backend whose driver wants ``%s``
translates them in :meth:`SqlStore.sql`. Backends differ only in how they
connect, how they guard the meters' newest-reading state across processes
(:meth:`SqlStore._states_for`) and which errors mean "unavailable".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, ClassVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

from meterd.readings import HOUR_US, Outcome, Reading
from meterd.registers import Sample, bucket_deltas, interval_sums, register_at, sensitive_span
from meterd.store import schema
from meterd.store.alarm_sql import AlarmSql
from meterd.store.base import AlreadyExists, Customer, Meter, MeterStatus, NotFound, StoreError, Usage
from meterd.store.plan import MeterKey, MeterState, Plan, plan_ingest

log = Logger()

_CUSTOMER_COLUMNS = "id, name, ligacao, limit_w, limit_wh, tz, token_hash, created_ms"
_METER_COLUMNS = "customer_id, meter_id, mode, key_hex, created_ms"
#: Rows per statement of a flush's writes; what is left goes in at most two
#: more statements, a multiple of ROW_GRANULE rows and the rest. 9 columns x
#: 1,024 rows stay under SQLite's 32,766 parameters.
ROWS_PER_STATEMENT = 1024
ROW_GRANULE = 64
#: The statement shapes a table's rows can take (79): full, multiples of the granule, the rest.
STATEMENT_SHAPES = 1 + (ROWS_PER_STATEMENT // ROW_GRANULE - 1) + (ROW_GRANULE - 1)


class SqlStore(AlarmSql):
    """A :class:`meterd.store.base.Store` over two adbapi pools: one writer, some readers."""

    backend: ClassVar[str]  # names its own schema migrations (schema.MIGRATIONS)
    placeholder: ClassVar[str] = "?"
    #: Where stored readings are: the union of these tables (a row in two of them is the same reading).
    reading_tables: ClassVar[tuple[str, ...]] = ("readings",)
    shared: ClassVar[bool] = False  # True when other processes write the same database
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self) -> None:
        self._writer: adbapi.ConnectionPool | None = None
        self._reader: adbapi.ConnectionPool | None = None
        self._sql: dict[Any, str] = {}

    def sql(self, statement: str) -> str:
        if self.placeholder == "?":
            return statement
        translated = self._sql.get(statement)
        if translated is None:
            translated = self._sql[statement] = statement.replace("?", self.placeholder)
        return translated

    # -- lifecycle ---------------------------------------------------------

    def _open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        raise NotImplementedError

    @inlineCallbacks
    def start(self) -> Any:
        try:
            self._writer, self._reader = self._open_pools()
            version = yield self._writer.runInteraction(self._migrate)
            yield self._started()
        except Exception as e:
            yield self.stop()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the store: {e}") from e
        log.info("store at schema version {version}", version=version)

    def _started(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        for pool in (self._writer, self._reader):
            if pool is not None:
                pool.close()
        self._writer = self._reader = None
        return succeed(None)

    def _migrate(self, txn: Any) -> int:
        txn.execute(schema.VERSION_TABLE)
        txn.execute("SELECT version FROM schema_version")
        row = txn.fetchone()
        version = row[0] if row else 0
        if row is None:
            txn.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > schema.LATEST:
            raise StoreError(f"the database is at schema version {version}, newer than this meterd ({schema.LATEST})")
        for number in range(version + 1, schema.LATEST + 1):
            migration = schema.MIGRATIONS[number - 1]
            for statement in migration if isinstance(migration, list) else migration[self.backend]:
                txn.execute(statement)
            txn.execute(self.sql("UPDATE schema_version SET version = ?"), (number,))
            log.info("migrated the schema to version {number}", number=number)
        return schema.LATEST

    def _run(self, pool: adbapi.ConnectionPool | None, fn: Any, *args: Any) -> Deferred[Any]:
        if pool is None:
            raise StoreError("the store is closed")
        return pool.runInteraction(fn, *args).addErrback(self._unavailable)

    def _write(self, fn: Any, *args: Any) -> Deferred[Any]:
        return self._run(self._writer, fn, *args)

    def _read(self, fn: Any, *args: Any) -> Deferred[Any]:
        return self._run(self._reader, fn, *args)

    def _unavailable(self, failure: Any) -> Any:
        if failure.check(*self.unavailable_errors):
            log.failure("store error", failure)
            raise StoreError(str(failure.value))
        return failure

    def _one(self, txn: Any, statement: str, args: Sequence[Any]) -> Any:
        txn.execute(self.sql(statement), args)
        return txn.fetchone()

    def _rows(self, txn: Any, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
        """Run ``head (?, ...), (?, ...) tail`` over many rows, in statements of a few fixed sizes.

        Many rows per statement, not one (executemany): the driver releases
        the GIL around every statement, and while the reactor thread is busy
        each re-acquisition can wait a whole switch interval, so per-row
        statements made durable ingest crawl under load. Fixed sizes
        (ROWS_PER_STATEMENT rows, then two for what is left) because
        compiling a statement of thousands of rows costs more than running it
        (4,000 rows: 4.3 of 6.6 ms), and each flush has a size of its own: one
        statement per flush sized to it was compiled anew nearly every time,
        and kept, so the statement caches grew with every new size (under the
        overload test the server's RSS grew ~190 MB; now ~77 MB). Two
        statements at most for the rest, not a power-of-two split: each
        statement must win the GIL back from a busy reactor thread.
        """
        width = len(rows[0]) if rows else 0
        start, end = 0, len(rows)
        while start < end:
            left = end - start
            size = ROWS_PER_STATEMENT if left >= ROWS_PER_STATEMENT else left - left % ROW_GRANULE or left
            key = (head, tail, width, size)
            statement = self._sql.get(key)
            if statement is None:
                group = "(" + ", ".join("?" * width) + ")"
                statement = self._sql[key] = self.sql(f"{head} {', '.join([group] * size)} {tail}")
            # flattened in C: this thread holds the GIL here
            txn.execute(statement, list(chain.from_iterable(rows[start : start + size])))
            start += size

    def ping(self) -> Deferred[None]:
        return self._read(lambda txn: self._one(txn, "SELECT 1", ()))

    # -- customers and meters ---------------------------------------------

    def create_customer(self, customer: Customer) -> Deferred[Customer]:
        def insert(txn: Any) -> Customer:
            if self._one(txn, "SELECT 1 FROM customers WHERE id = ?", (customer.id,)):
                raise AlreadyExists(customer.id)
            txn.execute(
                self.sql(f"INSERT INTO customers ({_CUSTOMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (customer.id, customer.name, customer.ligacao, customer.limit_w, customer.limit_wh,
                 customer.tz, customer.token_hash, customer.created_ms),
            )
            return customer

        return self._write(insert)

    def create_meter(self, customer_id: str, mode: str, key_hex: str, created_ms: int) -> Deferred[Meter]:
        def insert(txn: Any) -> Meter:
            if not self._one(txn, "SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
                raise NotFound(customer_id)
            (next_id,) = self._one(txn, "SELECT COALESCE(MAX(meter_id), 0) + 1 FROM meters WHERE customer_id = ?", (customer_id,))
            meter = Meter(customer_id, int(next_id), mode, key_hex, created_ms)
            txn.execute(
                self.sql(f"INSERT INTO meters ({_METER_COLUMNS}) VALUES (?, ?, ?, ?, ?)"),
                (meter.customer_id, meter.meter_id, meter.mode, meter.key_hex, meter.created_ms),
            )
            return meter

        return self._write(insert).addCallback(self._meter_created)

    def _meter_created(self, meter: Meter) -> Meter:
        return meter

    def load_directory(self) -> Deferred[tuple[list[Customer], list[Meter]]]:
        def load(txn: Any) -> tuple[list[Customer], list[Meter]]:
            txn.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers")
            customers = [Customer(*row) for row in txn.fetchall()]
            txn.execute(f"SELECT {_METER_COLUMNS} FROM meters")
            return customers, [Meter(*row) for row in txn.fetchall()]

        return self._read(load)

    def get_customer(self, customer_id: str) -> Deferred[Customer | None]:
        def get(txn: Any) -> Customer | None:
            row = self._one(txn, f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,))
            return Customer(*row) if row else None

        return self._read(get)

    def get_meter(self, customer_id: str, meter_id: int) -> Deferred[Meter | None]:
        def get(txn: Any) -> Meter | None:
            row = self._one(
                txn, f"SELECT {_METER_COLUMNS} FROM meters WHERE customer_id = ? AND meter_id = ?", (customer_id, meter_id)
            )
            return Meter(*row) if row else None

        return self._read(get)

    def meter_status(self, customer_id: str) -> Deferred[list[MeterStatus]]:
        def get(txn: Any) -> list[MeterStatus]:
            txn.execute(
                self.sql("SELECT meter_id, mode, last_ts, last_wh, last_seen_ms FROM meters WHERE customer_id = ? ORDER BY meter_id"),
                (customer_id,),
            )
            return [MeterStatus(*row) for row in txn.fetchall()]

        return self._read(get)

    # -- readings ----------------------------------------------------------

    def _states_for(self, txn: Any, readings: Sequence[Reading]) -> Mapping[MeterKey, MeterState]:
        """The newest stored reading of the meters of ``readings``, as this transaction sees it."""
        raise NotImplementedError

    def _committed(self, plan: Plan) -> None:
        """Called on the reactor thread once a flush has committed."""

    def _remembered_edge(self, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None] | None:
        """The readings around an edge if known without a query (a backend that sees every write)."""
        return None

    def _remember_edge(self, key: MeterKey, t: int, around: tuple[Sample | None, Sample | None], generation: int) -> None:
        """Offer a queried edge for remembering; ``generation`` is :meth:`_generation` before the query."""

    def _generation(self) -> int:
        return 0

    def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]:
        """One transaction for the whole flush: readings, rollups and meter state."""

        def write(txn: Any) -> Plan:
            states = self._states_for(txn, readings)
            plan = plan_ingest(readings, states, lambda key, t: self._neighbours(txn, key, t), received_ms)
            self._write_readings(txn, plan.rows)
            self._rows(
                txn,
                f"INSERT INTO rollups ({schema.ROLLUP_COLUMNS}) VALUES",
                [(c, m, h, r.n, r.first_ts, r.first_wh, r.last_ts, r.last_wh, r.sum_wh) for (c, m, h), r in plan.rollups.items()],
                schema.ROLLUP_CONFLICT,
            )
            # One join with the meters' primary key, state and last_seen together
            # (plan.states' meters are among plan.seen's). A row-value IN list
            # instead made SQLite scan the whole meters table on every flush.
            states = plan.states
            self._rows(
                txn,
                "UPDATE meters SET last_ts = COALESCE(v.column3, meters.last_ts), last_wh = COALESCE(v.column4, meters.last_wh),"
                " last_seen_ms = v.column5 FROM (VALUES",
                [_meter_update(key, states.get(key), received_ms) for key in plan.seen],
                ") AS v WHERE meters.customer_id = v.column1 AND meters.meter_id = v.column2",
            )
            return plan

        def committed(plan: Plan) -> list[Outcome]:
            self._committed(plan)
            return plan.outcomes

        return self._write(write).addCallback(committed)

    def _write_readings(self, txn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        self._rows(txn, "INSERT INTO readings (customer_id, meter_id, ts, wh, received_ms) VALUES", rows)

    def _neighbours(self, txn: Any, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None]:
        """Stored readings at-or-before and after ``t``: two index seeks per table of readings."""
        c, m = key
        before = after = None
        for table in self.reading_tables:
            row = self._one(
                txn, f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1", (c, m, t)
            )
            if row and (before is None or row[0] > before.ts):
                before = Sample(*row)
            row = self._one(txn, f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts > ? ORDER BY ts LIMIT 1", (c, m, t))
            if row and (after is None or row[0] < after.ts):
                after = Sample(*row)
        return before, after

    def _edge(self, txn: Any, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None]:
        """Neighbours of a bucket edge; from the hourly rollups when the edge is on the hour.

        The rollup of the hour starting at ``t`` holds its first reading; when
        that reading is exactly at ``t`` it is the register's value there, and
        otherwise the previous rollup's last reading is the one before ``t``.
        Either way two index seeks, however many readings the period holds.
        """
        if t % HOUR_US:
            return self._neighbours(txn, key, t)
        c, m = key
        row = self._one(
            txn,
            "SELECT first_ts, first_wh FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour >= ? ORDER BY hour LIMIT 1",
            (c, m, t),
        )
        after = Sample(*row) if row else None
        if after is not None and after.ts == t:
            return after, None
        row = self._one(
            txn,
            "SELECT last_ts, last_wh FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour < ? ORDER BY hour DESC LIMIT 1",
            (c, m, t),
        )
        return (Sample(*row) if row else None), after

    def _interval_sums(self, txn: Any, key: MeterKey, edges: Sequence[int]) -> list[int]:
        c, m = key
        if all(t % HOUR_US == 0 for t in edges):
            statement = "SELECT hour, sum_wh FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour >= ? AND hour < ?"
            args: tuple[Any, ...] = (c, m, edges[0], edges[-1])
        else:
            # UNION, not UNION ALL: a reading in two tables is one reading
            statement = " UNION ".join(
                f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ?" for table in self.reading_tables
            ) + " ORDER BY ts"
            args = (c, m, edges[0], edges[-1]) * len(self.reading_tables)
        txn.execute(self.sql(statement), args)
        return interval_sums(edges, (Sample(*row) for row in txn.fetchall()))

    def usage(self, customer_id: str, meters: Sequence[tuple[int, str]], edges: Sequence[int]) -> Deferred[list[Usage]]:
        """Per-meter consumption between consecutive edges (DESIGN §5).

        When every edge is already known (typically this month's bill: its
        start remembered, its end after the newest reading) the answer is
        computed right here, without a trip to a database thread.
        """
        known = self._usage_from_memory(customer_id, meters, edges)
        if known is not None:
            return succeed(known)
        generation = self._generation()

        def query(txn: Any) -> list[Usage]:
            result = []
            for meter_id, mode in meters:
                key = (customer_id, meter_id)
                if mode == "register":
                    around = []
                    for t in edges:
                        found = self._remembered_edge(key, t)
                        if found is None:
                            found = self._edge(txn, key, t)
                            self._remember_edge(key, t, found, generation)
                        around.append(found)
                    result.append(_register_usage(meter_id, edges, around))
                else:
                    sums = self._interval_sums(txn, key, edges)
                    result.append(Usage(meter_id, [(wh, False) for wh in sums], [(edges[0] - 1, edges[-1])]))
            return result

        return self._read(query)

    def _usage_from_memory(self, customer_id: str, meters: Sequence[tuple[int, str]], edges: Sequence[int]) -> list[Usage] | None:
        result = []
        for meter_id, mode in meters:
            if mode != "register":
                return None
            around = []
            for t in edges:
                found = self._remembered_edge((customer_id, meter_id), t)
                if found is None:
                    return None
                around.append(found)
            result.append(_register_usage(meter_id, edges, around))
        return result


def _register_usage(meter_id: int, edges: Sequence[int], around: Sequence[tuple[Sample | None, Sample | None]]) -> Usage:
    values = [register_at(t, *n) for t, n in zip(edges, around)]
    spans = [span for t, n in zip(edges, around) for span in sensitive_span(t, *n)]
    return Usage(meter_id, bucket_deltas(values), spans)


def _meter_update(key: MeterKey, state: MeterState | None, received_ms: int) -> tuple[str, int, int | None, int | None, int]:
    """A meter's row of the flush's update: new newest reading (NULL keeps the stored one) and last seen."""
    if state is None:
        return (*key, None, None, received_ms)
    return (*key, state.last_ts, state.last_wh, received_ms)
