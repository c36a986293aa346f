"""The SQL every backend shares, written once against DB-API cursors, and the store built on it.

What differs between SQLite and PostgreSQL lives in one :class:`Engine`
object (:mod:`meterd.store.sqlite`, :mod:`meterd.store.postgres`): how to
connect, how to write many rows in one statement, where readings land, how a
flush learns and locks its meters' newest readings, which errors mean
"unavailable". A store that is its database's only writer also keeps a
:class:`~meterd.store.memory.MeterMemory`.

Which thread runs what:

* the reactor thread calls every public method (each returns a Deferred),
  runs every callback, and alone writes the ``MeterMemory``; a flush's
  transaction reads its meters' states through a read-only view the memory
  lends it, and nothing changes them until the flush gives it back;
* the writer thread (one connection) runs the transactions that write:
  migrations, registrations, each flush (``plan_ingest`` included) and each
  alarm settlement;
* the reader threads run every query.

A transaction's function gets from the reactor whatever in-memory state it
needs as an argument, and returns what it found; it never touches the
store's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd.exports import ReadingsPage
from meterd.readings import HOUR_US, Outcome, Reading
from meterd.registers import Sample, bucket_deltas, interval_sums, register_at, sensitive_span
from meterd.store import schema
from meterd.store.alarm_sql import AlarmSql
from meterd.store.base import Actor, AlreadyExists, Customer, Meter, MeterStatus, NotFound, StoreError, Usage
from meterd.store.bill_sql import BillSql
from meterd.store.memory import Around, MeterMemory
from meterd.store.operations_sql import OperationsSql, write_audit
from meterd.store.plan import MeterKey, MeterState, Plan, plan_ingest
from meterd.store.webhook_sql import WebhookSql

log = Logger()

_CUSTOMER_COLUMNS = schema.CUSTOMER_COLUMNS
_METER_COLUMNS = schema.METER_COLUMNS
_METER_FIELDS = schema.METER_FIELDS
CREATE_METER_TRIES = 5  # another process may take the same next meter id (engines whose store is shared)
_NO_TS = 2**63 - 1  # past every reading time: an open end


class Engine(Protocol):
    """What differs between the backends, in one object (as synapse's ``BaseDatabaseEngine``)."""

    name: str  # the key of its own migrations in schema.MIGRATIONS
    shared: bool  # other processes write the same database: nothing about it may be kept in memory
    reading_tables: tuple[str, ...]  # stored readings are the union of these
    unavailable_errors: tuple[type[BaseException], ...]

    def open_pools(self) -> tuple[adbapi.ConnectionPool, adbapi.ConnectionPool]:
        """The writer pool (one connection) and the readers'."""

    def close(self) -> None:
        """Release what ``open_pools`` took beyond the pools (a lock file, say)."""

    def sql(self, statement: str) -> str:
        """A statement written with ``?`` placeholders, in the driver's own."""

    def lock_for_migration(self, txn: Any) -> None:
        """Make the migrations' transaction exclusive (writer thread)."""

    def started(self, writer: adbapi.ConnectionPool) -> Deferred[Any]:
        """Learn what the database is, once the schema is current."""

    def rows(self, txn: Any, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
        """Run ``head VALUES ... tail`` over many rows (writer thread)."""

    def write_readings(self, txn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Store a flush's new readings, columns ``customer_id, meter_id, ts, wh, received_ms`` (writer thread)."""

    def locked_states(self, txn: Any, keys: set[MeterKey]) -> Mapping[MeterKey, MeterState]:
        """The newest stored reading of these meters, locked until the flush commits (writer thread)."""

    def violated(self, failure: Failure) -> str | None:
        """The unique constraint a failed insert violated (a race with another process), or None."""


class SqlStore(AlarmSql, OperationsSql, BillSql, WebhookSql):
    """A :class:`meterd.store.base.Store` over two adbapi pools: one writer, some readers."""

    def __init__(self, engine: Engine, memory: MeterMemory | None = None) -> None:
        self.engine = engine
        self.memory = memory
        self.shared = engine.shared
        self._writer: adbapi.ConnectionPool | None = None
        self._reader: adbapi.ConnectionPool | None = None

    def sql(self, statement: str) -> str:
        return self.engine.sql(statement)

    # -- lifecycle ---------------------------------------------------------

    @inlineCallbacks
    def start(self) -> Any:
        try:
            self._writer, self._reader = self.engine.open_pools()
            version = yield self._writer.runInteraction(self._migrate)
            yield self.engine.started(self._writer)
            if self.memory is not None:
                rows = yield self._writer.runQuery("SELECT customer_id, meter_id, mode, last_ts, last_wh, retired_ts FROM meters")
                self.memory.load(rows)
        except Exception as e:
            yield self.stop()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the store: {e}") from e
        log.info("store at schema version {version}", version=version)

    def stop(self) -> Deferred[None]:
        for pool in (self._writer, self._reader):
            if pool is not None:
                pool.close()
        self._writer = self._reader = None
        self.engine.close()
        return succeed(None)

    def _migrate(self, txn: Any) -> int:
        self.engine.lock_for_migration(txn)
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
            for statement in migration if isinstance(migration, list) else migration[self.engine.name]:
                schema.run_step(txn, statement, self.sql)
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
        if failure.check(*self.engine.unavailable_errors):
            log.failure("store error", failure)
            raise StoreError(str(failure.value))
        return failure

    def _one(self, txn: Any, statement: str, args: Sequence[Any]) -> Any:
        txn.execute(self.sql(statement), args)
        return txn.fetchone()

    def ping(self) -> Deferred[None]:
        return self._read(lambda txn: self._one(txn, "SELECT 1", ()))

    # -- customers and meters ---------------------------------------------

    def create_customer(self, customer: Customer, actor: Actor | None = None) -> Deferred[Customer]:
        """Register a customer, with the words it is found by; kept in the audit log when ``actor`` says who."""

        def insert(txn: Any) -> Customer:
            if self._one(txn, "SELECT 1 FROM customers WHERE id = ?", (customer.id,)):
                raise AlreadyExists(customer.id)
            txn.execute(
                self.sql(f"INSERT INTO customers ({_CUSTOMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (customer.id, customer.name, customer.ligacao, customer.limit_w, customer.limit_wh,
                 customer.tz, customer.token_hash, customer.created_ms),
            )
            self._write_words(txn, customer.id, customer.name)
            if actor is not None:
                record = {"name": customer.name, "ligacao": customer.ligacao, "limit_w": customer.limit_w,
                          "limit_wh": customer.limit_wh, "tz": customer.tz}
                write_audit(txn, self.sql, actor, customer.id, [("customer_registered", None, None, None, record)])
            return customer

        def raced(failure: Failure) -> Failure:
            if self.engine.violated(failure) == "customers_pkey":  # inserted by another process meanwhile
                raise AlreadyExists(customer.id)
            return failure

        return self._write(insert).addErrback(raced)

    def create_meter(self, customer_id: str, mode: str, key_hex: str, created_ms: int, actor: Actor | None = None) -> Deferred[Meter]:
        """The customer's next meter id; retried when another process took the same id meanwhile."""

        def insert(txn: Any) -> Meter:
            if not self._one(txn, "SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
                raise NotFound(customer_id)
            meter = self._insert_meter(txn, customer_id, mode, key_hex, created_ms)
            if actor is not None:
                write_audit(txn, self.sql, actor, customer_id, [("meter_registered", meter.meter_id, None, None, {"mode": mode})])
            return meter

        return self._new_meter(customer_id, insert).addCallback(self._meter_created)

    def _insert_meter(self, txn: Any, customer_id: str, mode: str, key_hex: str, created_ms: int, replaces: int | None = None) -> Meter:
        """A new meter row with the customer's next meter id (writer thread)."""
        (next_id,) = self._one(txn, "SELECT COALESCE(MAX(meter_id), 0) + 1 FROM meters WHERE customer_id = ?", (customer_id,))
        meter = Meter(customer_id, int(next_id), mode, key_hex, created_ms, None, replaces)
        txn.execute(
            self.sql(f"INSERT INTO meters ({_METER_COLUMNS}, replaces) VALUES (?, ?, ?, ?, ?, ?)"),
            (meter.customer_id, meter.meter_id, meter.mode, meter.key_hex, meter.created_ms, replaces),
        )
        return meter

    def _new_meter(self, customer_id: str, insert: Any) -> Deferred[Any]:
        """Run ``insert`` (a transaction taking a new meter id), again when another process took the same id meanwhile."""

        def attempt(tries: int) -> Deferred[Any]:
            def raced(failure: Failure) -> Any:
                if tries > 1 and self.engine.violated(failure) == "meters_pkey":
                    log.debug("meter id race for {customer}; retrying", customer=customer_id)
                    return attempt(tries - 1)
                return failure

            return self._write(insert).addErrback(raced)

        return attempt(CREATE_METER_TRIES)

    def _meter_created(self, meter: Meter) -> Meter:
        if self.memory is not None:
            self.memory.meter_added((meter.customer_id, meter.meter_id), meter.mode)
        return meter

    def replace_token(self, customer_id: str, token_hash: str, now_ms: int, actor: Actor | None = None) -> Deferred[Customer]:
        """Give the customer a new token (its hash): the old one opens nothing from the commit on."""

        def update(txn: Any) -> Customer:
            txn.execute(self.sql("UPDATE customers SET token_hash = ?, updated_ms = ? WHERE id = ?"), (token_hash, now_ms, customer_id))
            row = self._one(txn, f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,))
            if row is None:
                raise NotFound(customer_id)
            if actor is not None:
                write_audit(txn, self.sql, actor, customer_id, [("token_renewed", None, None, None, None)])
            return Customer(*row)

        return self._write(update)

    def replace_key(self, customer_id: str, meter_id: int, key_hex: str, now_ms: int, actor: Actor | None = None) -> Deferred[Meter]:
        """Give the meter a new key: datagrams signed with the old one are refused from the commit on."""

        def update(txn: Any) -> Meter:
            txn.execute(
                self.sql("UPDATE meters SET key_hex = ?, updated_ms = ? WHERE customer_id = ? AND meter_id = ?"),
                (key_hex, now_ms, customer_id, meter_id),
            )
            row = self._one(txn, f"SELECT {_METER_FIELDS} FROM meters WHERE customer_id = ? AND meter_id = ?", (customer_id, meter_id))
            if row is None:
                raise NotFound((customer_id, meter_id))
            if actor is not None:
                write_audit(txn, self.sql, actor, customer_id, [("key_renewed", meter_id, None, None, None)])
            return Meter(*row)

        return self._write(update)

    def changed_since(self, since_ms: int) -> Deferred[tuple[list[Customer], list[Meter]]]:
        """Customers and meters whose rows changed after ``since_ms`` (their tokens and keys among them)."""

        def load(txn: Any) -> tuple[list[Customer], list[Meter]]:
            txn.execute(self.sql(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE updated_ms > ?"), (since_ms,))
            customers = [Customer(*row) for row in txn.fetchall()]
            txn.execute(self.sql(f"SELECT {_METER_FIELDS} FROM meters WHERE updated_ms > ?"), (since_ms,))
            return customers, [Meter(*row) for row in txn.fetchall()]

        return self._read(load)

    def load_directory(self) -> Deferred[tuple[list[Customer], list[Meter]]]:
        def load(txn: Any) -> tuple[list[Customer], list[Meter]]:
            txn.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers")
            customers = [Customer(*row) for row in txn.fetchall()]
            txn.execute(f"SELECT {_METER_FIELDS} FROM meters")
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
                txn, f"SELECT {_METER_FIELDS} FROM meters WHERE customer_id = ? AND meter_id = ?", (customer_id, meter_id)
            )
            return Meter(*row) if row else None

        return self._read(get)

    def meter_status(self, customer_id: str) -> Deferred[list[MeterStatus]]:
        def get(txn: Any) -> list[MeterStatus]:
            txn.execute(
                self.sql(
                    "SELECT meter_id, mode, last_ts, last_wh, last_seen_ms, retired_ts, replaces"
                    " FROM meters WHERE customer_id = ? ORDER BY meter_id"
                ),
                (customer_id,),
            )
            rows = txn.fetchall()
            replaced_by = {replaces: meter_id for meter_id, *_, replaces in rows if replaces is not None}
            return [
                MeterStatus(meter_id, mode, last_ts, last_wh, seen, retired, replaces, replaced_by.get(meter_id))
                for meter_id, mode, last_ts, last_wh, seen, retired, replaces in rows
            ]

        return self._read(get)

    # -- readings ----------------------------------------------------------

    def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]:
        """One transaction for the whole flush: readings, rollups and meter state."""
        memory = self.memory
        lent = None if memory is None else memory.lend()

        def write(txn: Any) -> Plan:
            states = lent if lent is not None else self.engine.locked_states(txn, {r[:2] for r in readings})
            plan = plan_ingest(readings, states, lambda key, t: self._neighbours(txn, key, t), received_ms)
            self._write_plan(txn, plan)
            # One join with the meters' primary key, state and last_seen together
            # (plan.states' meters are among plan.seen's). A row-value IN list
            # instead made SQLite scan the whole meters table on every flush.
            states = plan.states
            self.engine.rows(
                txn,
                "UPDATE meters SET last_ts = COALESCE(v.column3, meters.last_ts), last_wh = COALESCE(v.column4, meters.last_wh),"
                " last_seen_ms = v.column5 FROM (VALUES",
                [_meter_update(key, states.get(key), received_ms) for key in plan.seen],
                ") AS v WHERE meters.customer_id = v.column1 AND meters.meter_id = v.column2",
            )
            return plan

        def given_back(result: Any) -> Any:
            if memory is not None:
                memory.give_back()
            return result

        def committed(plan: Plan) -> list[Outcome]:
            if memory is not None:
                memory.committed(plan)
            return plan.outcomes

        return self._write(write).addBoth(given_back).addCallback(committed)

    def _write_plan(self, txn: Any, plan: Plan) -> None:
        """A plan's new readings and their hourly rollups (writer thread); the meters' rows are the caller's."""
        self.engine.write_readings(txn, plan.rows)
        self.engine.rows(
            txn,
            f"INSERT INTO rollups ({schema.ROLLUP_COLUMNS}) VALUES",
            [(c, m, h, r.n, r.first_ts, r.first_wh, r.last_ts, r.last_wh, r.sum_wh) for (c, m, h), r in plan.rollups.items()],
            schema.ROLLUP_CONFLICT,
        )

    def _write_words(self, txn: Any, customer_id: str, name: str) -> None:
        """The words a customer is found by, in place of those it had (writer thread)."""
        txn.execute(self.sql("DELETE FROM customer_words WHERE customer_id = ?"), (customer_id,))
        rows = schema.word_rows(customer_id, name)
        if rows:
            txn.executemany(self.sql(schema.WORDS_INSERT), rows)

    def _neighbours(self, txn: Any, key: MeterKey, t: int) -> Around:
        """Stored readings at-or-before and after ``t``: two index seeks per table of readings."""
        c, m = key
        before = after = None
        for table in self.engine.reading_tables:
            row = self._one(
                txn, f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1", (c, m, t)
            )
            if row and (before is None or row[0] > before.ts):
                before = Sample(*row)
            row = self._one(txn, f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts > ? ORDER BY ts LIMIT 1", (c, m, t))
            if row and (after is None or row[0] < after.ts):
                after = Sample(*row)
        return before, after

    def _edge(self, txn: Any, key: MeterKey, t: int) -> Around:
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
        tables = self.engine.reading_tables
        if all(t % HOUR_US == 0 for t in edges):
            statement = "SELECT hour, sum_wh FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour >= ? AND hour < ?"
            args: tuple[Any, ...] = (c, m, edges[0], edges[-1])
        else:
            # UNION, not UNION ALL: a reading in two tables is one reading
            statement = " UNION ".join(
                f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ?" for table in tables
            ) + " ORDER BY ts"
            args = (c, m, edges[0], edges[-1]) * len(tables)
        txn.execute(self.sql(statement), args)
        return interval_sums(edges, (Sample(*row) for row in txn.fetchall()))

    def usage(self, customer_id: str, meters: Sequence[tuple[int, str]], edges: Sequence[int]) -> Deferred[list[Usage]]:
        """Per-meter consumption between consecutive edges (DESIGN §5), edges in microseconds.

        Edges the memory knows are not asked again. When every edge is known
        (typically this month's bill: its start remembered, its end after the
        newest reading) the answer is computed right here, without a trip to
        a database thread; the edges a query finds are remembered for next time.
        """
        memory = self.memory
        known: dict[tuple[MeterKey, int], Around] = {}
        if memory is not None:
            for meter_id, mode in meters:
                if mode == "register":
                    for t in edges:
                        around = memory.edge((customer_id, meter_id), t)
                        if around is not None:
                            known[((customer_id, meter_id), t)] = around
            if len(known) == len(meters) * len(edges):
                return succeed([_register_usage(m, edges, [known[((customer_id, m), t)] for t in edges]) for m, _ in meters])
            flushes = memory.flushes

        def query(txn: Any) -> tuple[list[Usage], dict[tuple[MeterKey, int], Around]]:
            result, found = [], {}
            for meter_id, mode in meters:
                key = (customer_id, meter_id)
                if mode == "register":
                    around = []
                    for t in edges:
                        edge = known.get((key, t))
                        if edge is None:
                            edge = found[(key, t)] = self._edge(txn, key, t)
                        around.append(edge)
                    result.append(_register_usage(meter_id, edges, around))
                else:
                    sums = self._interval_sums(txn, key, edges)
                    result.append(Usage(meter_id, [(wh, False) for wh in sums], [(edges[0] - 1, edges[-1])]))
            return result, found

        def remember(answer: tuple[list[Usage], dict[tuple[MeterKey, int], Around]]) -> list[Usage]:
            result, found = answer
            if memory is not None:
                memory.remember(found, flushes)
            return result

        return self._read(query).addCallback(remember)


    # -- exports -------------------------------------------------------------

    def readings_page(
        self, customer_id: str, meter_ids: Sequence[int], start: int | None, end: int | None,
        after: tuple[int, int] | None, limit: int,
    ) -> Deferred[ReadingsPage]:
        """Up to ``limit`` of these meters' readings in ``[start, end)`` after the key ``after``, in (ts, meter) order.

        Keyset paging: each page asks, per meter and per table of readings,
        for the first ``limit + 1`` readings from where the meter's own
        readings resume (an index range, however far into a year it is)
        and for the one before them (the first row's consumption), and keeps
        the first ``limit`` of them all. A reading stored meanwhile behind
        the key is not seen, one ahead of it is. The tables are asked logs
        first, so a reading being moved is found (meterd.store.readings_log).

        With write logs, the logs hold the newest readings: asked from the
        middle of a year, each would give ``limit + 1`` rows the page cannot
        use. So the main table, last in ``reading_tables``, is first probed
        (on its index alone) for its ``limit + 1``-th reading from there,
        and the logs are asked only up to it: those readings stay in the
        main table (rows only ever move into it), so no reading after that
        one can be among the page's.
        """
        tables = self.engine.reading_tables
        logs, main = tables[:-1], tables[-1]

        def lower(meter_id: int) -> int:
            lo = start or 0
            if after is not None:
                ts, meter = after
                lo = max(lo, ts + 1 if meter_id <= meter else ts)
            return lo

        def query(txn: Any) -> ReadingsPage:
            runs: list[list[tuple[int, int, int]]] = []  # each meter's first readings, in time order
            previous: dict[int, Sample | None] = {}
            for meter_id in meter_ids:
                lo, found, before = lower(meter_id), [], None
                hi = reach = _NO_TS if end is None else end
                if logs:
                    row = self._one(
                        txn, f"SELECT ts FROM {main} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
                        (customer_id, meter_id, lo, hi, limit),
                    )
                    reach = hi if row is None else row[0] + 1
                for table in tables:
                    txn.execute(
                        self.sql(
                            f"SELECT ts, meter_id, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?"
                        ),
                        (customer_id, meter_id, lo, reach if table != main else hi, limit + 1),
                    )
                    if rows := txn.fetchall():
                        found.append(rows)
                    row = self._one(
                        txn, f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts < ? ORDER BY ts DESC LIMIT 1",
                        (customer_id, meter_id, lo),
                    )
                    if row and (before is None or row[0] > before.ts):
                        before = Sample(*row)
                previous[meter_id] = before
                if len(found) > 1:  # a reading being moved is the same row in two tables
                    found = [sorted(set(chain.from_iterable(found)))[: limit + 1]]
                runs.extend(found)
            rows = runs[0] if len(runs) == 1 else sorted(chain.from_iterable(runs))
            return ReadingsPage(rows[:limit], previous, len(rows) > limit)

        return self._read(query)

    def count_readings(self, customer_id: str, meter_ids: Sequence[int], start: int | None, end: int | None) -> Deferred[int]:
        """How many readings of these meters lie in ``[start, end)``: the hourly rollups' counts, and the readings of partial hours."""
        tables = self.engine.reading_tables

        def readings_between(txn: Any, meter_id: int, lo: int, hi: int) -> int:
            union = " UNION ".join(f"SELECT ts FROM {t} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ?" for t in tables)
            row = self._one(txn, f"SELECT COUNT(*) FROM ({union}) AS edge", (customer_id, meter_id, lo, hi) * len(tables))
            return int(row[0])

        def query(txn: Any) -> int:
            lo, hi = start or 0, _NO_TS if end is None else end
            first_hour = -(-lo // HOUR_US) * HOUR_US  # the first whole hour inside [lo, hi)...
            last_hour = hi // HOUR_US * HOUR_US  # ... and where the whole hours stop
            total = 0
            for meter_id in meter_ids:
                if first_hour >= last_hour:
                    total += readings_between(txn, meter_id, lo, hi)
                    continue
                row = self._one(
                    txn, "SELECT COALESCE(SUM(n), 0) FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour >= ? AND hour < ?",
                    (customer_id, meter_id, first_hour, last_hour),
                )
                total += int(row[0])
                if lo < first_hour:
                    total += readings_between(txn, meter_id, lo, first_hour)
                if last_hour < hi:
                    total += readings_between(txn, meter_id, last_hour, hi)
            return total

        return self._read(query)


def _register_usage(meter_id: int, edges: Sequence[int], around: Sequence[Around]) -> Usage:
    values = [register_at(t, *n) for t, n in zip(edges, around)]
    spans = [span for t, n in zip(edges, around) for span in sensitive_span(t, *n)]
    return Usage(meter_id, bucket_deltas(values), spans)


def _meter_update(key: MeterKey, state: MeterState | None, received_ms: int) -> tuple[str, int, int | None, int | None, int]:
    """A meter's row of the flush's update: new newest reading (NULL keeps the stored one) and last seen."""
    if state is None:
        return (*key, None, None, received_ms)
    return (*key, state.last_ts, state.last_wh, received_ms)
