"""The store's suite, against the :class:`Store` interface only, on every backend.

``store`` is parametrised over SQLite (always) and PostgreSQL (when
``METERD_TEST_PG`` names a database; its ``public`` schema is dropped and
recreated before every test, so use a database of its own). Restarts are a
``reopen(store)`` that stops the store and opens a new one on the same data.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted

from meterd.alarm_book import Acknowledgement, Transition
from meterd.alarm_rules import Decision
from meterd.readings import Outcome, Reading
from meterd.registers import Sample, bucket_deltas, interval_sums, registers_at
from meterd.store import readings_log, schema
from meterd.store.base import AlreadyExists, Customer, Meter, MeterStatus, NotFound, StoreError
from meterd.store.sqlite import SqliteStore
from tests.support import pg_dsn, pg_schema, reset_pg

SP = ZoneInfo("America/Sao_Paulo")
C1 = "12345678909"
C2 = "98765432100"
KEY = "ab" * 32
# Reading times are microseconds (meterd.readings).
HOUR = 3_600_000_000
MIN = 60_000_000
SECOND = 1_000_000


def local_us(*args: int, tz: ZoneInfo = SP) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp()) * 1_000_000


D0 = local_us(2025, 11, 24)  # a midnight in São Paulo (03:00 UTC, on the hour)


def customer(cid: str = C1, token_hash: str | None = None) -> Customer:
    return Customer(cid, f"name {cid}", "mono", 10_000, 1_000_000, "America/Sao_Paulo", token_hash or f"hash-{cid}", 1_700_000_000_000)


# -- the fixture ------------------------------------------------------------


class Backend:
    """Opens stores of one kind on one database, and runs raw SQL on it for setup."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = str(tmp_path / "meterd.sqlite3")
        self.dsn = pg_dsn()
        self.opened: list[Any] = []

    def new(self) -> Any:
        if self.kind == "sqlite":
            store: Any = SqliteStore(self.path)
        elif self.kind == "sqlite-small-logs":
            store = SqliteStore(self.path, log_rows=3)
        else:
            from meterd.store.postgres import PostgresStore

            store = PostgresStore(self.dsn)
        self.opened.append(store)
        return store

    def execute(self, statement: str) -> None:
        if self.kind != "postgresql":
            with sqlite3.connect(self.path) as conn:
                conn.execute(statement)
            return
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)

    def table_exists(self, name: str) -> bool:
        if self.kind != "postgresql":
            with sqlite3.connect(self.path) as conn:
                return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute("SELECT to_regclass(%s)", (f"{pg_schema()}.{name}",)).fetchone()[0] is not None

    def reset(self) -> None:
        if self.kind == "postgresql":
            reset_pg()


BACKENDS: dict[int, Backend] = {}


@pytest.fixture(params=["sqlite", "sqlite-small-logs", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A started, empty store; a plain fixture (``blockon``) so that it can skip cleanly.

    ``sqlite-small-logs`` swaps its write logs after every few readings and
    moves them into ``readings`` a couple of rows per flush, so that each
    test's readings are spread over the three tables (store/readings_log.py).
    """
    if request.param == "sqlite-small-logs":
        monkeypatch.setattr(readings_log, "MOVE_MIN_ROWS", 2)
    if request.param == "postgresql":
        if not os.environ.get("METERD_TEST_PG"):
            pytest.skip("METERD_TEST_PG not set: export METERD_TEST_PG=postgresql://.../db (a database this suite may wipe)")
        try:
            import meterd.store.postgres  # noqa: F401
        except ImportError as e:
            pytest.skip(f"the PostgreSQL backend is not importable: {e}")
    backend = Backend(request.param, tmp_path)
    backend.reset()
    opened = backend.new()
    pytest_twisted.blockon(opened.start())
    BACKENDS[id(opened)] = backend
    yield opened
    for s in backend.opened:
        BACKENDS.pop(id(s), None)
        pytest_twisted.blockon(s.stop())


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A started, empty SQLite store, for what only SQLite has (its MeterMemory, its statement shapes); stopped after."""
    store = SqliteStore(str(tmp_path / "db.sqlite3"))
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


async def reopen(store: Any) -> Any:
    """Stop ``store`` and start a new one on the same database: a restart."""
    backend = BACKENDS[id(store)]
    await store.stop()
    fresh = backend.new()
    await fresh.start()
    BACKENDS[id(fresh)] = backend
    return fresh


async def setup_meters(store: Any, *modes: str, cid: str = C1) -> list[Meter]:
    if await store.get_customer(cid) is None:
        await store.create_customer(customer(cid))
    return [await store.create_meter(cid, mode, KEY, 1_700_000_000_000) for mode in modes]


def rd(ts: int, wh: int, meter: int = 1, cid: str = C1, seq: int | None = None) -> Reading:
    return Reading(cid, meter, ts, wh, seq)


async def usage_of(store: Any, meter: int, mode: str, edges: Sequence[int], cid: str = C1) -> list[tuple[int, bool]]:
    (u,) = await store.usage(cid, [(meter, mode)], edges)
    assert u.meter_id == meter
    return u.buckets


def hours(start: int, n: int) -> list[int]:
    return [start + i * HOUR for i in range(n + 1)]


# -- lifecycle and migrations -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping(store):
    await store.ping()


@pytest_twisted.ensureDeferred
async def test_migrations_are_idempotent_across_restarts(store):
    await store.create_customer(customer())
    store = await reopen(store)
    store = await reopen(store)  # twice: the second start must find nothing to do either
    customers, meters = await store.load_directory()
    assert customers == [customer()]
    assert meters == []


@pytest_twisted.ensureDeferred
async def test_a_database_newer_than_this_code_is_refused(store):
    backend = BACKENDS[id(store)]
    await store.stop()
    backend.execute(f"UPDATE schema_version SET version = {schema.LATEST + 1}")
    newer = backend.new()
    with pytest.raises(StoreError, match="newer"):
        await newer.start()


@pytest_twisted.ensureDeferred
async def test_a_failed_migration_leaves_nothing_half_done(store, monkeypatch):
    backend = BACKENDS[id(store)]
    await store.create_customer(customer())
    await store.stop()
    good = list(schema.MIGRATIONS)
    broken = ["CREATE TABLE half_done (x BIGINT)", "INSERT INTO half_done (x) VALUES (1)", "CREATE TABLE syntax error here"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*good, broken])
    monkeypatch.setattr(schema, "LATEST", len(good) + 1)
    with pytest.raises(StoreError):
        await backend.new().start()
    assert not backend.table_exists("half_done")
    # Fixed, the same migration applies cleanly on the next start.
    monkeypatch.setattr(schema, "MIGRATIONS", [*good, broken[:2]])
    fresh = backend.new()
    await fresh.start()
    BACKENDS[id(fresh)] = backend
    assert backend.table_exists("half_done")
    assert await fresh.get_customer(C1) == customer()


# -- customers and meters --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_customers(store):
    assert await store.get_customer(C1) is None
    assert await store.create_customer(customer()) == customer()
    assert await store.get_customer(C1) == customer()
    with pytest.raises(AlreadyExists):
        await store.create_customer(customer(token_hash="another-hash"))
    await store.create_customer(customer(C2))
    customers, _ = await store.load_directory()
    assert sorted(customers, key=lambda c: c.id) == [customer(C1), customer(C2)]


@pytest_twisted.ensureDeferred
async def test_meters_are_numbered_per_customer(store):
    await store.create_customer(customer(C1))
    await store.create_customer(customer(C2))
    a = [await store.create_meter(C1, "register", KEY, 1) for _ in range(3)]
    b = await store.create_meter(C2, "interval", "cd" * 32, 2)
    assert [m.meter_id for m in a] == [1, 2, 3]
    assert b == Meter(C2, 1, "interval", "cd" * 32, 2)
    assert await store.get_meter(C1, 2) == Meter(C1, 2, "register", KEY, 1)
    assert await store.get_meter(C1, 4) is None
    assert await store.get_meter(C2, 2) is None
    with pytest.raises(NotFound):
        await store.create_meter("11144477735", "register", KEY, 1)
    _, meters = await store.load_directory()
    assert sorted((m.customer_id, m.meter_id) for m in meters) == [(C1, 1), (C1, 2), (C1, 3), (C2, 1)]


# -- ingest ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ingest_outcomes_in_one_flush(store):
    await setup_meters(store, "register")
    outcomes = await store.ingest(
        [
            rd(D0, 1000),
            rd(D0 + MIN, 1010),
            rd(D0 + MIN, 1010),  # duplicate in the flush
            rd(D0 + MIN, 1011),  # conflict in the flush
            rd(D0 + 2 * MIN, 1009),  # backwards
            rd(D0, 5, meter=2),  # no such meter
            rd(D0, 5, cid=C2),  # no such customer
        ],
        D0 + 3 * MIN,
    )
    assert outcomes == [
        Outcome.STORED,
        Outcome.STORED,
        Outcome.DUPLICATE,
        Outcome.CONFLICT,
        Outcome.BACKWARDS,
        Outcome.UNKNOWN_METER,
        Outcome.UNKNOWN_METER,
    ]
    assert await usage_of(store, 1, "register", [D0, D0 + HOUR]) == [(10, False)]


@pytest_twisted.ensureDeferred
async def test_duplicates_across_flushes_are_stored_once_and_the_first_value_stays(store):
    await setup_meters(store, "register")
    assert await store.ingest([rd(D0, 1000), rd(D0 + MIN, 1100)], D0 + MIN) == [Outcome.STORED] * 2
    again = await store.ingest([rd(D0 + MIN, 1100), rd(D0, 1000), rd(D0, 999), rd(D0 + MIN, 1200)], D0 + 2 * MIN)
    assert again == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.CONFLICT]
    # Nothing was added to the rollups by the duplicates: the hour still holds 100 Wh.
    assert await usage_of(store, 1, "register", [D0, D0 + HOUR]) == [(100, False)]
    [status] = await store.meter_status(C1)
    assert (status.last_ts, status.last_wh) == (D0 + MIN, 1100)


@pytest_twisted.ensureDeferred
async def test_an_empty_flush(store):
    assert await store.ingest([], D0) == []


# -- usage of register meters -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_interpolation_at_hour_edges(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0 + 30 * MIN, 1000), rd(D0 + 90 * MIN, 1600)], D0 + 2 * HOUR)
    # R(00:00) holds the first value, R(01:00) = 1000 + 600/2, R(02:00) holds the last.
    assert await usage_of(store, 1, "register", hours(D0, 3)) == [(300, False), (300, False), (0, False)]
    # The same edges off the hour (read from the readings, not the rollups).
    edges = [D0 + 15 * MIN, D0 + 45 * MIN, D0 + 75 * MIN]
    # R(00:15) = 1000, R(00:45) = 1000 + 600 * 15/60 = 1150, R(01:15) = 1450.
    assert await usage_of(store, 1, "register", edges) == [(150, False), (300, False)]


@pytest_twisted.ensureDeferred
async def test_interpolation_rounds_half_up_and_still_telescopes(store):
    await setup_meters(store, "register")
    # 0 Wh at 00:20, 7 Wh at 01:20: R(01:00) = 7 * 40/60 = 4.67 -> 5.
    await store.ingest([rd(D0 + 20 * MIN, 0), rd(D0 + 80 * MIN, 7)], D0 + 2 * HOUR)
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(5, False), (2, False)]


@pytest_twisted.ensureDeferred
async def test_gaps_longer_than_an_hour_are_estimated(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0, 0), rd(D0 + 3 * HOUR, 3000), rd(D0 + 4 * HOUR, 3500)], D0 + 5 * HOUR)
    assert await usage_of(store, 1, "register", hours(D0, 5)) == [
        (1000, True),
        (1000, True),
        (1000, True),  # its start edge was interpolated across the 3 h gap
        (500, False),  # a gap of exactly one hour is not a guess
        (0, False),
    ]
    # The day holds the whole lot; both its edges are read or held, not guessed.
    assert await usage_of(store, 1, "register", [D0, D0 + 24 * HOUR]) == [(3500, False)]


@pytest_twisted.ensureDeferred
async def test_a_meter_without_readings_used_nothing(store):
    await setup_meters(store, "register", "interval")
    usages = await store.usage(C1, [(1, "register"), (2, "interval")], hours(D0, 3))
    assert [(u.meter_id, u.buckets) for u in usages] == [(1, [(0, False)] * 3), (2, [(0, False)] * 3)]


def synthetic_register(rng: random.Random, start: int, end: int) -> list[tuple[int, int]]:
    """Readings every few minutes with some long silences, the register rising."""
    out, t, wh = [], start + rng.randrange(0, 10 * MIN), 5_000_000
    while t < end:
        out.append((t, wh))
        gap = rng.choice([MIN, 3 * MIN, 7 * MIN, 13 * MIN]) if rng.random() > 0.03 else rng.randrange(HOUR, 5 * HOUR)
        t += gap + rng.randrange(0, 1000)
        wh += rng.randrange(0, 400)
    return out


@pytest_twisted.ensureDeferred
async def test_days_and_months_are_sums_of_hours_exactly(store):
    await setup_meters(store, "register")
    oct30 = local_us(2025, 10, 30)
    dec1 = local_us(2025, 12, 1)
    history = synthetic_register(random.Random(7), oct30, local_us(2025, 11, 3))
    # Arrive in shuffled flushes: out of order across and within flushes.
    shuffled = history[:]
    random.Random(8).shuffle(shuffled)
    for i in range(0, len(shuffled), 97):
        outcomes = await store.ingest([rd(ts, wh) for ts, wh in shuffled[i : i + 97]], D0)
        assert set(outcomes) == {Outcome.STORED}

    hourly_edges = list(range(oct30, local_us(2025, 11, 4) + 1, HOUR))
    days = [local_us(2025, 10, 30) + i * 24 * HOUR for i in range(6)]  # no DST change in these days
    months = [local_us(2025, 10, 1), local_us(2025, 11, 1), dec1]

    hourly = await usage_of(store, 1, "register", hourly_edges)
    daily = await usage_of(store, 1, "register", days)
    monthly = await usage_of(store, 1, "register", months)

    # The oracle: the register maths over the raw readings, no rollups involved.
    samples = [Sample(*s) for s in history]
    for edges, got in ((hourly_edges, hourly), (days, daily), (months, monthly)):
        assert got == bucket_deltas(registers_at(edges, samples))

    per_day = [sum(wh for wh, _ in hourly[i * 24 : (i + 1) * 24]) for i in range(5)]
    assert [wh for wh, _ in daily] == per_day
    assert monthly[0][0] == sum(per_day[:2])  # Oct 30 and 31
    assert monthly[1][0] == sum(per_day[2:])  # Nov 1 to 3; the register is held flat after the last reading
    assert monthly[0][0] + monthly[1][0] == history[-1][1] - history[0][1]
    assert any(est for _, est in hourly) and not all(est for _, est in hourly)


@pytest_twisted.ensureDeferred
async def test_out_of_order_readings_update_the_rollups(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0 + 40 * MIN, 400), rd(D0 + 80 * MIN, 700)], D0 + 2 * HOUR)
    # R(00:00) = 400 (held), R(01:00) = 400 + 300 * 20/40 = 550, R(02:00) = 700.
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(150, False), (150, False)]

    # Earlier than the hour's first reading: the hour's first value changes.
    assert await store.ingest([rd(D0 + 10 * MIN, 100)], D0 + 2 * HOUR) == [Outcome.STORED]
    # Later than the hour's last (but older than the newest): its last value changes.
    assert await store.ingest([rd(D0 + 50 * MIN, 500)], D0 + 2 * HOUR) == [Outcome.STORED]
    # R(00:00) = 100, R(01:00) = 500 + 200 * 10/30 = 566.67 -> 567, R(02:00) = 700.
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(467, False), (133, False)]

    # Refused out-of-order readings change nothing.
    assert await store.ingest([rd(D0 + 45 * MIN, 399), rd(D0 + 70 * MIN, 701)], D0 + 2 * HOUR) == [Outcome.BACKWARDS] * 2
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(467, False), (133, False)]
    [status] = await store.meter_status(C1)
    assert (status.last_ts, status.last_wh) == (D0 + 80 * MIN, 700)


@pytest_twisted.ensureDeferred
async def test_an_exact_reading_on_the_hour(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0, 0), rd(D0 + 2 * HOUR, 2000)], D0 + 2 * HOUR)
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(1000, True), (1000, True)]
    assert await store.ingest([rd(D0 + HOUR, 1200)], D0 + 3 * HOUR) == [Outcome.STORED]
    assert await usage_of(store, 1, "register", hours(D0, 2)) == [(1200, False), (800, False)]


# -- usage of interval meters ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_interval_meters_sum_their_readings(store):
    await setup_meters(store, "interval")
    readings = [(D0 + 5 * MIN, 100), (D0 + 59 * MIN, 20), (D0 + HOUR, 3), (D0 + 150 * MIN, 7), (D0 - MIN, 1000)]
    # Out of order and "decreasing": interval meters have no register to break.
    assert await store.ingest([rd(ts, wh) for ts, wh in readings], D0 + 3 * HOUR) == [Outcome.STORED] * 5
    assert await usage_of(store, 1, "interval", hours(D0, 3)) == [(120, False), (3, False), (7, False)]
    # Off-hour edges (e.g. a half-hour time zone) come from the readings themselves.
    edges = [D0 + 30 * MIN, D0 + 90 * MIN, D0 + 150 * MIN, D0 + 210 * MIN]
    assert await usage_of(store, 1, "interval", edges) == [(23, False), (0, False), (7, False)]
    assert await usage_of(store, 1, "interval", [D0 - HOUR, D0 + 24 * HOUR]) == [(1130, False)]


@pytest_twisted.ensureDeferred
async def test_interval_usage_matches_the_sum_of_readings_over_a_month(store):
    await setup_meters(store, "interval")
    rng = random.Random(3)
    start = local_us(2025, 10, 31, 20)
    samples = [(start + i * 5 * MIN + rng.randrange(0, 1000), rng.randrange(0, 50)) for i in range(200)]
    await store.ingest([rd(ts, wh) for ts, wh in samples], D0)
    months = [local_us(2025, 10, 1), local_us(2025, 11, 1), local_us(2025, 12, 1)]
    expected = interval_sums(months, [Sample(*s) for s in samples])
    assert expected[0] and expected[1]  # the data straddles the month edge
    assert await usage_of(store, 1, "interval", months) == [(wh, False) for wh in expected]


@pytest_twisted.ensureDeferred
async def test_usage_of_several_meters_at_once(store):
    await setup_meters(store, "register", "interval")
    await store.ingest([rd(D0, 0), rd(D0 + HOUR, 500), rd(D0 + MIN, 42, meter=2)], D0 + HOUR)
    usages = await store.usage(C1, [(2, "interval"), (1, "register")], [D0, D0 + HOUR])
    assert [(u.meter_id, u.buckets) for u in usages] == [(2, [(42, False)]), (1, [(500, False)])]


# -- meter status -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_meter_status(store):
    await setup_meters(store, "register", "interval")
    await setup_meters(store, "register", cid=C2)
    assert await store.meter_status(C1) == [
        MeterStatus(1, "register", None, None, None),
        MeterStatus(2, "interval", None, None, None),
    ]
    await store.ingest([rd(D0, 100), rd(D0 + MIN, 150), rd(D0, 9, meter=2)], D0 + 2 * MIN)
    assert await store.meter_status(C1) == [
        MeterStatus(1, "register", D0 + MIN, 150, D0 + 2 * MIN),
        MeterStatus(2, "interval", D0, 9, D0 + 2 * MIN),
    ]
    # A flush of only a duplicate and a refused reading: heard from, nothing new stored.
    await store.ingest([rd(D0, 100), rd(D0 + 2 * MIN, 140)], D0 + 5 * MIN)
    assert (await store.meter_status(C1))[0] == MeterStatus(1, "register", D0 + MIN, 150, D0 + 5 * MIN)
    # An out-of-order reading does not move the newest reading.
    await store.ingest([rd(D0 + 30_000, 120)], D0 + 6 * MIN)
    assert (await store.meter_status(C1))[0] == MeterStatus(1, "register", D0 + MIN, 150, D0 + 6 * MIN)
    assert await store.meter_status(C2) == [MeterStatus(1, "register", None, None, None)]
    assert await store.meter_status("11144477735") == []


# -- restart ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_restart_keeps_everything(store):
    await setup_meters(store, "register", "interval")
    await store.ingest([rd(D0, 1000), rd(D0 + 30 * MIN, 1300), rd(D0, 7, meter=2)], D0 + HOUR)
    before = await store.usage(C1, [(1, "register"), (2, "interval")], hours(D0, 2))

    store = await reopen(store)
    customers, meters = await store.load_directory()
    assert customers == [customer()]
    assert sorted((m.meter_id, m.mode) for m in meters) == [(1, "register"), (2, "interval")]
    assert await store.usage(C1, [(1, "register"), (2, "interval")], hours(D0, 2)) == before
    assert (await store.create_meter(C1, "register", KEY, 5)).meter_id == 3

    # The newest-reading state survived: a later but lower register is refused,
    # the stored newest is a duplicate, and a higher one goes on from there.
    assert await store.ingest([rd(D0 + 40 * MIN, 1299)], D0 + HOUR) == [Outcome.BACKWARDS]
    assert await store.ingest([rd(D0 + 30 * MIN, 1300)], D0 + HOUR) == [Outcome.DUPLICATE]
    assert await store.ingest([rd(D0 + 40 * MIN, 1350)], D0 + HOUR) == [Outcome.STORED]
    # A reading for the meter created after the restart is accepted too.
    assert await store.ingest([rd(D0, 1, meter=3)], D0 + HOUR) == [Outcome.STORED]
    assert (await store.meter_status(C1))[0] == MeterStatus(1, "register", D0 + 40 * MIN, 1350, D0 + HOUR)


# -- alarms -------------------------------------------------------------------------------


def raise_(rule: str, meter: int | None, at: int, cid: str = C1) -> Transition:
    return Transition(cid, meter, rule, Decision.RAISE, at, 5, 2, f"{rule} {meter}")


def clear(rule: str, meter: int | None, at: int, cid: str = C1) -> Transition:
    return Transition(cid, meter, rule, Decision.CLEAR, at, 0, 0, "")


@pytest_twisted.ensureDeferred
async def test_alarm_settlements_are_arbitrated_by_the_store_and_survive_a_restart(store):
    first = await store.settle_alarms([raise_("demand", 1, 1_000), raise_("monthly", None, 1_000), raise_("silent", 1, 1_000, cid=C2)])
    assert [(a.alarm_id, a.rule) for a in first.alarms] == [(1, "demand"), (2, "monthly"), (3, "silent")]
    assert [e.event_id for e in first.events] == [1, 2, 3]
    # a stale decision to raise what is active stores nothing and uses no id
    again = await store.settle_alarms([raise_("demand", 1, 2_000)])
    assert (again.alarms, again.events, again.next_alarm_id, again.next_event_id) == ([], [], 4, 4)
    cleared = await store.settle_alarms([clear("demand", 1, 3_000), raise_("demand", 1, 4_000)])
    assert [(e.event_id, e.alarm_id, e.type) for e in cleared.events] == [(4, 1, "cleared"), (5, 4, "raised")]
    acked = await store.settle_alarms([Acknowledgement(C1, 1, 5_000), Acknowledgement(C2, 1, 5_000)])
    assert acked.alarm(C1, 1).acked_at == 5_000 and acked.alarm(C2, 1) is None  # another customer's id: skipped
    assert [(e.event_id, e.type) for e in acked.events] == [(6, "acked")]

    store = await reopen(store)
    active, events, next_alarm, next_event = await store.load_alarm_state(10)
    assert sorted(a.alarm_id for a in active if a.active) == [2, 3, 4]
    assert [e.event_id for e in events] == [1, 2, 3, 4, 5, 6]
    assert (next_alarm, next_event) == (5, 7)
    assert sorted(a.alarm_id for a in await store.active_alarms()) == [2, 3, 4]
    # the view: newest first page, pages after a cursor, the last id handed out by anyone
    view_active, view_events, last = await store.alarm_view(C1, None, 2)
    assert ([a.alarm_id for a in view_active], [e.event_id for e in view_events], last) == ([2, 4], [5, 6], 6)
    assert [e.event_id for e in (await store.alarm_view(C1, 1, 2))[1]] == [2, 4]
    assert (await store.alarm_view(C2, 3, 10))[1:] == ([], 6)
    # after the restart ids go on from the stored counters
    later = await store.settle_alarms([raise_("anomaly", None, 6_000, cid=C2)])
    assert [(a.alarm_id, e.event_id) for a, e in zip(later.alarms, later.events)] == [(5, 7)]


@pytest_twisted.ensureDeferred
async def test_migration_3_starts_the_counters_after_the_stored_ids(store):
    await store.settle_alarms([raise_("demand", 1, 1_000)])
    backend = BACKENDS[id(store)]
    await store.stop()
    # an older database: alarms written with in-memory counters, no counter table yet
    backend.execute("INSERT INTO alarms (customer_id, alarm_id, meter_id, rule, raised_at, value, threshold, message) "
                    "VALUES ('98765432100', 41, NULL, 'monthly', 1, 1, 1, 'm')")
    backend.execute("INSERT INTO alarm_events (customer_id, event_id, alarm_id, event_type, at_ms) VALUES ('98765432100', 90, 41, 'raised', 1)")
    backend.execute("DROP TABLE alarm_counters")
    for table in ("readings_logs", *readings_log.LOGS):  # and before migration 4 (SQLite's)
        backend.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in UNDO_MIGRATION_6:
        backend.execute(statement)
    backend.execute("UPDATE schema_version SET version = 2")
    fresh = backend.new()
    await fresh.start()
    BACKENDS[id(fresh)] = backend
    settled = await fresh.settle_alarms([raise_("silent", 1, 2_000)])
    assert [(a.alarm_id, e.event_id) for a, e in zip(settled.alarms, settled.events)] == [(42, 91)]


# -- SQLite specifics -------------------------------------------------------------------


#: A database from before migration 7, then 6: what these tests rewind a current one to, first
#: (the webhooks' and the issued bills' tables, later migrations', before them).
UNDO_MIGRATION_7 = (
    "DROP TABLE webhooks",  # 8
    "DROP TABLE bill_counters", "DROP TABLE bills", "DROP TABLE bill_edges", "DROP TABLE billing_runs",
    "DROP TABLE customer_words", "DROP TABLE audit", "DROP TABLE audit_counter",
    "ALTER TABLE meters DROP COLUMN retired_ts", "ALTER TABLE meters DROP COLUMN replaces",
)
UNDO_MIGRATION_6 = (
    *UNDO_MIGRATION_7,
    "DROP INDEX customers_updated", "DROP INDEX meters_updated",
    "ALTER TABLE customers DROP COLUMN updated_ms", "ALTER TABLE meters DROP COLUMN updated_ms",
)


def _back_to_milliseconds(conn: sqlite3.Connection, tables: Sequence[str]) -> None:
    """Rewrite reading times as a database before schema version 5 held them: milliseconds."""
    for table in tables:
        conn.execute(f"UPDATE {table} SET ts = ts / 1000")
    conn.execute("UPDATE rollups SET hour = hour / 1000, first_ts = first_ts / 1000, last_ts = last_ts / 1000")
    conn.execute("UPDATE meters SET last_ts = last_ts / 1000")


@pytest_twisted.ensureDeferred
async def test_sqlite_migration_4_keeps_the_readings_a_version_3_database_holds(tmp_path):
    """A database from before the write logs: its readings stay where they are and are still found."""
    path = str(tmp_path / "db.sqlite3")
    store = SqliteStore(path)
    await store.start()
    await setup_meters(store, "register")
    await store.ingest([rd(D0, 100), rd(D0 + MIN, 110)], D0)
    await store.stop()
    with sqlite3.connect(path) as conn:  # back to version 3: every reading in readings, no logs, milliseconds
        conn.execute(f"INSERT INTO readings SELECT * FROM {readings_log.LOGS[0]}")
        for table in ("readings_logs", *readings_log.LOGS):
            conn.execute(f"DROP TABLE {table}")
        _back_to_milliseconds(conn, ["readings"])
        for statement in UNDO_MIGRATION_6:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = 3")
    store = SqliteStore(path)
    await store.start()
    try:
        assert await store.ingest([rd(D0 + MIN, 110), rd(D0 + 30 * SECOND, 120), rd(D0 + 2 * MIN, 130)], D0) == [
            Outcome.DUPLICATE, Outcome.BACKWARDS, Outcome.STORED,
        ]
        assert await usage_of(store, 1, "register", [D0, D0 + 90 * SECOND]) == [(20, False)]  # 100 -> 120 at D0 + 90 s (110 at 60 s, 130 at 120 s)
    finally:
        await store.stop()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (schema.LATEST,)
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone() == (2,)


@pytest_twisted.ensureDeferred
async def test_migration_5_moves_every_reading_time_to_microseconds(tmp_path, monkeypatch):
    """A version-4 database, its readings in milliseconds in all three tables mid-move, comes out
    the same history in microseconds: resends are duplicates, and two readings a fraction of a
    millisecond apart are then two readings."""
    monkeypatch.setattr(readings_log, "MOVE_MIN_ROWS", 2)
    path = str(tmp_path / "db.sqlite3")
    store = SqliteStore(path, log_rows=3)
    await store.start()
    await setup_meters(store, "register", "interval")
    stored = [(D0 + i * 7 * MIN, 1000 + 17 * i) for i in range(12)]
    for ts, wh in stored:
        assert await store.ingest([rd(ts, wh), rd(ts, wh // 10, meter=2)], D0) == [Outcome.STORED] * 2
    edges = [D0 + i * 15 * MIN for i in range(7)]
    before = await store.usage(C1, [(1, "register"), (2, "interval")], edges)
    assert all(u.buckets[0][0] > 0 for u in before)
    await store.stop()
    with sqlite3.connect(path) as conn:
        unmoved = conn.execute("SELECT unmoved_ts FROM readings_logs").fetchone()[0]
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in readings_log.TABLES]
        assert sum(1 for n in counts if n) >= 2, counts  # readings in more than one table
        _back_to_milliseconds(conn, readings_log.TABLES)
        conn.execute("UPDATE readings_logs SET unmoved_ts = unmoved_ts / 1000")
        for statement in UNDO_MIGRATION_6:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = 4")
    store = SqliteStore(path, log_rows=3)
    await store.start()
    try:
        assert await store.usage(C1, [(1, "register"), (2, "interval")], edges) == before
        assert await store.ingest([rd(ts, wh) for ts, wh in stored], D0) == [Outcome.DUPLICATE] * len(stored)
        last_ts, last_wh = stored[-1]
        assert await store.ingest([rd(last_ts + 200, last_wh + 1), rd(last_ts + 400, last_wh + 2)], D0) == [Outcome.STORED] * 2
        assert (await store.meter_status(C1))[0].last_ts == last_ts + 400
    finally:
        await store.stop()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (schema.LATEST,)
        assert conn.execute("SELECT unmoved_ts FROM readings_logs").fetchone()[0] in (unmoved, 0)


@pytest_twisted.ensureDeferred
async def test_sqlite_readings_moving_between_its_tables_stay_one_set(tmp_path, monkeypatch):
    """Readings in the write logs and in ``readings``, mid-move and across a restart, are one set.

    Resends are duplicates and conflicts wherever the stored reading is, a
    late reading finds its neighbours in any table, and consumption between
    edges off the hour (read from the readings, not the rollups) counts each
    reading once.
    """
    monkeypatch.setattr(readings_log, "MOVE_MIN_ROWS", 5)
    path = str(tmp_path / "db.sqlite3")
    store = SqliteStore(path, log_rows=20)

    def sizes() -> dict[str, int]:
        with sqlite3.connect(path) as conn:
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in readings_log.TABLES}

    await store.start()
    try:
        await setup_meters(store, "interval", "register")
        seen_spread = False
        k = 0
        # 4 readings a flush, 2 a meter, 10 s apart; stop mid-move (some rows in two tables)
        while k < 40 or sum(sizes().values()) == 4 * k:
            ts = D0 + k * 20_000
            outcomes = await store.ingest([rd(ts, 7, 1), rd(ts + 10_000, 7, 1), rd(ts, 100 + k, 2), rd(ts + 10_000, 100 + k, 2)], ts)
            assert outcomes == [Outcome.STORED] * 4
            seen_spread |= all(sizes().values())
            k += 1
        assert seen_spread  # at some point a reading was in each of the three tables
    finally:
        await store.stop()
    store = SqliteStore(path, log_rows=20)
    await store.start()
    try:
        every = [rd(D0 + i * 20_000 + d, 7, 1) for i in range(k) for d in (0, 10_000)]
        assert await store.ingest(every, D0 + 800_000) == [Outcome.DUPLICATE] * 2 * k
        assert await store.ingest([rd(D0, 8, 1), rd(D0 + 400_000, 121, 2)], D0) == [Outcome.CONFLICT] * 2
        # meter 2's register read 100 + k at D0 + k * 20 s: a late reading between two of them must fit
        assert await store.ingest([rd(D0 + 15_000, 99, 2)], D0) == [Outcome.BACKWARDS]
        assert await store.ingest([rd(D0 + 5_000, 100, 2)], D0) == [Outcome.STORED]
        for _ in range(30):  # empty flushes keep moving the logs
            await store.ingest([], D0)
        # the restart resumed the move, and it finished: no row in two tables, all but the active log's in readings
        assert sum(sizes().values()) == 4 * k + 1 and sizes()["readings"] > 4 * k + 1 - 20
        # off the hour: 90 s-wide buckets of interval readings, 9 readings (63 Wh) each
        edges = [D0 + i * 90_000 for i in range(9)]
        assert await usage_of(store, 1, "interval", edges) == [(63, False)] * 8
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_file_has_one_meterd_at_a_time(tmp_path):
    first = SqliteStore(str(tmp_path / "db.sqlite3"))
    await first.start()
    try:
        second = SqliteStore(str(tmp_path / "db.sqlite3"))
        with pytest.raises(StoreError, match="in use"):
            await second.start()
    finally:
        await first.stop()
    third = SqliteStore(str(tmp_path / "db.sqlite3"))
    await third.start()  # the lock went with the first store
    await third.stop()


@pytest_twisted.ensureDeferred
async def test_a_closed_store_is_unavailable(tmp_path):
    closed = SqliteStore(str(tmp_path / "db.sqlite3"))
    await closed.start()
    await closed.stop()
    with pytest.raises(StoreError):
        await closed.ping()



@pytest_twisted.ensureDeferred
async def test_sqlite_remembered_edges_survive_in_order_readings_and_go_with_late_ones(tmp_path):
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "register", "register")
        edges = [D0, D0 + HOUR]  # D0 + HOUR lies between the readings at D0 + 30 min and D0 + 2 h
        await store.ingest([rd(D0, 1000), rd(D0 + 30 * MIN, 1100), rd(D0 + 2 * HOUR, 1400)], 0)
        await store.ingest([rd(D0, 1000, meter=2), rd(D0 + 2 * HOUR, 1400, meter=2)], 0)
        assert await usage_of(store, 1, "register", edges) == [(200, True)]  # 1200 at D0 + 1 h, across a 90 min gap
        await usage_of(store, 2, "register", edges)
        assert store.memory.edge((C1, 1), D0 + HOUR) is not None

        # Newer than everything stored: no remembered span holds it, the edges stay.
        await store.ingest([rd(D0 + 3 * HOUR, 1500), rd(D0 + 4 * HOUR, 1600)], 0)
        assert store.memory.edge((C1, 1), D0 + HOUR) is not None

        # Late, inside the span around D0 + 1 h of meter 1 only: that edge goes, meter 2's stays.
        await store.ingest([rd(D0 + 90 * MIN, 1150), rd(D0 + 5 * HOUR, 1700)], 0)
        assert store.memory.edge((C1, 1), D0 + HOUR) is None
        assert store.memory.edge((C1, 1), D0) is not None  # a reading sits on D0: nothing changes it
        assert store.memory.edge((C1, 2), D0 + HOUR) is not None
        assert await usage_of(store, 1, "register", edges) == [(125, False)]  # 1125 at D0 + 1 h, from the late reading

        # A span is open at both ends: a late reading 1 ms before its end still changes the edge.
        await store.ingest([rd(D0 + 2 * HOUR - 1, 1399, meter=2), rd(D0 + 3 * HOUR, 1500, meter=2)], 0)
        assert store.memory.edge((C1, 2), D0 + HOUR) is None


@pytest_twisted.ensureDeferred
async def test_sqlite_an_edge_remembered_past_the_newest_reading_goes_with_the_next_one(tmp_path):
    # Only a query racing a flush can remember such an edge (past the newest reading the register
    # is held, without any query), but then its span is open-ended and any newer reading changes it.
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "register")
        await store.ingest([rd(D0, 1000)], 0)
        store.memory.remember({((C1, 1), D0 + 2 * HOUR): (Sample(D0, 1000), None)}, store.memory.flushes)
        await store.ingest([rd(D0 + HOUR, 1100)], 0)
        assert store.memory._edges.get((C1, 1)) is None


@pytest_twisted.ensureDeferred
async def test_sqlite_a_meter_registered_while_a_flush_reads_the_states_joins_them_after_it(tmp_path):
    # A flush's transaction reads the meters' states lent by the reactor; a meter registered
    # meanwhile must not change them under it, and must be there for the next flush.
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "register")
        registering = store.create_meter(C1, "interval", KEY, 1_700_000_000_000)  # the writer's next transaction
        flushing = store.ingest([rd(D0, 1000)], 0)  # lends the states; its transaction runs after the registration
        meter = await registering
        assert meter.meter_id == 2
        assert (C1, 2) not in store.memory.states  # registered, and waiting: the flush is reading the states
        assert await flushing == [Outcome.STORED]
        assert store.memory.states[(C1, 2)].mode == "interval"
        assert await store.ingest([rd(D0, 5, meter=2), rd(D0 + HOUR, 1100)], 0) == [Outcome.STORED, Outcome.STORED]


@pytest_twisted.ensureDeferred
async def test_sqlite_a_failed_flush_gives_the_states_back(tmp_path):
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "register")
        await store.ingest([rd(D0, 1000)], 0)
        with pytest.raises(TypeError):  # the plan compares it with the stored register, on the writer thread
            await store.ingest([rd(D0 + HOUR, "not a number")], 0)  # type: ignore[arg-type]
        assert store.memory.states[(C1, 1)].last_ts == D0  # nothing of the failed flush was applied
        meter = await store.create_meter(C1, "register", KEY, 1_700_000_000_000)
        assert (C1, meter.meter_id) in store.memory.states  # not left waiting for a flush that ended
        assert await store.ingest([rd(D0 + HOUR, 1100), rd(D0, 7, meter=meter.meter_id)], 0) == [Outcome.STORED] * 2


@pytest_twisted.ensureDeferred
async def test_sqlite_remembered_edges_agree_with_a_fresh_store_after_random_late_readings(tmp_path):
    # Whatever the remembered edges, usage must be what a store with nothing remembered answers.
    rng = random.Random(7)
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "register")
        edges = hours(D0, 6)
        taken: set[int] = set()
        for _ in range(15):
            batch = []
            for ts in rng.sample(range(D0 - HOUR, D0 + 7 * HOUR, 5 * MIN), 4):
                if ts not in taken:
                    taken.add(ts)
                    batch.append(rd(ts, 10_000 + (ts - D0) // MIN))  # a register that only grows with time
            await store.ingest(batch, 0)
            remembered = await usage_of(store, 1, "register", edges)
            fresh = SqliteStore(str(tmp_path / "db.sqlite3"))
            fresh.engine._take_lock = lambda: None  # type: ignore[method-assign]  # a second reader of the same file
            await fresh.start()
            try:
                assert remembered == await usage_of(fresh, 1, "register", edges)
            finally:
                await fresh.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_writer_keeps_a_flush_worth_of_pages_and_checkpoints_less_often(tmp_path):
    from meterd.store.sqlite import WAL_AUTOCHECKPOINT_PAGES, WRITER_CACHE_KB

    async with sqlite_store(tmp_path) as store:
        def pragmas(txn: Any) -> tuple[Any, ...]:
            return tuple(txn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("cache_size", "wal_autocheckpoint", "synchronous"))

        assert await store._write(pragmas) == (-WRITER_CACHE_KB, WAL_AUTOCHECKPOINT_PAGES, 2)  # 2: FULL, durability unchanged


@pytest_twisted.ensureDeferred
async def test_sqlite_a_flush_seeks_by_primary_key_and_never_scans_a_table(tmp_path):
    """Every write of a flush finds its rows through a primary key.

    A flush's cost must not grow with the number of registered meters: the
    meters' last_seen update once used a row-value ``IN`` list, which SQLite
    answers by scanning the whole meters table, on every flush.
    """
    import re

    path = tmp_path / "db.sqlite3"
    store = SqliteStore(str(path), log_rows=2)  # the first flush fills a log: the second moves it into readings
    await store.start()
    try:
        await setup_meters(store, "register", "register", "register")
        await store.ingest([rd(D0, 100), rd(D0, 100, meter=2), rd(D0, 100, meter=3)], D0)
        statements: list[str] = []
        await store._writer.runWithConnection(lambda conn: conn._connection.set_trace_callback(statements.append))
        # new readings, a duplicate only (seen, no new state), a late reading (neighbour lookups)
        outcomes = await store.ingest(
            [rd(D0 + 2 * MIN, 150), rd(D0, 100, meter=2), rd(D0 + MIN, 120), rd(D0 + MIN, 110, meter=3)], D0 + 2 * MIN
        )
        await store._writer.runWithConnection(lambda conn: conn._connection.set_trace_callback(None))
        assert outcomes == [Outcome.STORED, Outcome.DUPLICATE, Outcome.STORED, Outcome.STORED]
    finally:
        await store.stop()
    writes = [s for s in statements if s.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "SELECT")]
    assert {w.split()[0].upper() for w in writes} == {"INSERT", "UPDATE", "SELECT"}
    assert any(w.startswith("INSERT INTO readings (") for w in writes)  # a slice moved
    with sqlite3.connect(path) as conn:
        for statement in writes:
            details = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
            scans = [d for d in details if re.match(r"SCAN (customers|meters|readings|readings_log_\d|readings_logs|rollups)\b", d)]
            assert not scans, (statement[:120], details)
    # and the update did its job: state from the stored readings, last_seen for both meters
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT meter_id, last_ts, last_wh, last_seen_ms FROM meters ORDER BY meter_id").fetchall()
    assert rows == [(1, D0 + 2 * MIN, 150, D0 + 2 * MIN), (2, D0, 100, D0), (3, D0 + MIN, 110, D0 + 2 * MIN)]


@pytest_twisted.ensureDeferred
async def test_a_flush_of_any_size_is_written_whole(store):
    """Sizes around the statement size: every reading lands once, rollups and state agree."""
    from meterd.store.sqlite import ROWS_PER_STATEMENT

    await setup_meters(store, "interval")
    start = D0
    total = 0
    for n in (1, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, 2 * ROWS_PER_STATEMENT + 3):
        batch = [rd(start + i * 1000, 1) for i in range(n)]
        assert await store.ingest(batch, start + n * 1000) == [Outcome.STORED] * n
        start += n * 1000
        total += n
    [status] = await store.meter_status(C1)
    assert status.last_ts == start - 1000
    # one Wh per reading: the interval sums over everything are the count of readings
    (u,) = await store.usage(C1, [(1, "interval")], [D0, start])
    assert u.buckets == [(total, False)]


@pytest_twisted.ensureDeferred
async def test_sqlite_flushes_of_ever_new_sizes_reuse_a_few_statement_shapes(tmp_path):
    """Each flush has a size of its own; the statements written for them must not be one per size.

    A statement sized to each flush was compiled anew almost every time and
    kept, so the statement caches grew with every size the server ever saw.
    """
    async with sqlite_store(tmp_path) as store:
        await setup_meters(store, "interval")
        ts = D0
        for n in [*range(1, 100), *range(1000, 1100), 3000, 3001]:
            await store.ingest([rd(ts + i * 1000, 1) for i in range(n)], ts)
            ts += n * 1000
        for log in readings_log.LOGS:  # readings land in either log, so each has its shapes
            shapes = [key for key in store.engine._statements if key[0].startswith(f"INSERT INTO {log} ")]
            assert 0 < len(shapes) <= 79  # 1,024 rows, multiples of 64 below it, and 1 to 63


# -- exports ------------------------------------------------------------------


async def all_pages(store: Any, meters: list[int], start: int | None, end: int | None, limit: int) -> list[Any]:
    """Every page of a keyset walk, as an export reads them."""
    pages, after = [], None
    while True:
        page = await store.readings_page(C1, meters, start, end, after, limit)
        pages.append(page)
        if not page.more:
            return pages
        after = page.rows[-1][:2]


@pytest_twisted.ensureDeferred
async def test_readings_pages_walk_every_reading_once_in_time_then_meter_order(store):
    await setup_meters(store, "register", "interval")
    rng = random.Random(7)
    one = sorted(rng.sample(range(0, 500 * MIN, SECOND), 120))
    two = sorted(rng.sample(range(0, 500 * MIN, SECOND), 80)) + [one[5], one[60]]  # some at the very same times as meter 1's
    readings = [rd(D0 + t, 1000 + i, 1) for i, t in enumerate(one)] + [rd(D0 + t, 7, 2) for t in two]
    rng.shuffle(readings)
    for i in range(0, len(readings), 23):  # several flushes, out of order: spread over the logs and readings
        await store.ingest(readings[i : i + 23], D0)
    expected = sorted((r.ts, r.meter_id, r.wh) for r in readings)
    for limit in (1, 7, 50, 1000):
        pages = await all_pages(store, [1, 2], None, None, limit)
        assert [row for p in pages for row in p.rows] == expected, limit
        assert all(len(p.rows) == limit for p in pages[:-1]) and len(pages[-1].rows) <= limit
    start, end = D0 + one[10], D0 + one[100]
    pages = await all_pages(store, [2, 1], start, end, 9)
    assert [row for p in pages for row in p.rows] == [row for row in expected if start <= row[0] < end]
    assert await store.count_readings(C1, [1, 2], start, end) == sum(len(p.rows) for p in pages)


@pytest_twisted.ensureDeferred
async def test_each_page_gives_each_meters_reading_before_its_first(store):
    await setup_meters(store, "register", "register")
    await store.ingest([rd(D0 + i * MIN, 100 * i, 1) for i in range(10)] + [rd(D0 + 30 * MIN, 5, 2)], D0)
    page = await store.readings_page(C1, [1, 2], D0 + 3 * MIN, None, None, 4)
    assert page.rows == [(D0 + i * MIN, 1, 100 * i) for i in range(3, 7)] and page.more
    assert page.previous == {1: Sample(D0 + 2 * MIN, 200), 2: None}
    page = await store.readings_page(C1, [1, 2], D0 + 3 * MIN, None, page.rows[-1][:2], 4)
    assert page.rows == [(D0 + i * MIN, 1, 100 * i) for i in range(7, 10)] + [(D0 + 30 * MIN, 2, 5)]
    assert page.previous == {1: Sample(D0 + 6 * MIN, 600), 2: None} and not page.more
    assert (await store.readings_page(C1, [2], None, D0, None, 4)) == ([], {2: None}, False)


@pytest_twisted.ensureDeferred
async def test_count_readings_adds_the_hours_rollups_and_the_partial_hours_readings(store):
    await setup_meters(store, "register", "interval")
    times = [D0 + i * 7 * MIN for i in range(100)]  # over 11 hours
    await store.ingest([rd(t, i, 1) for i, t in enumerate(times)] + [rd(t, 1, 2) for t in times[::3]], D0)
    await store.ingest([rd(times[4], 4, 1), rd(times[50] + SECOND, 50, 1)], D0)  # a duplicate counts once; a late one counts
    stored = {1: sorted(times + [times[50] + SECOND]), 2: times[::3]}
    for start, end in [(None, None), (D0 + 17 * MIN, D0 + 5 * HOUR + 3 * MIN), (D0 + HOUR, D0 + 3 * HOUR), (D0 + 10 * MIN, D0 + 40 * MIN),
                       (D0 + 2 * HOUR + 1, None), (None, D0 + 2 * HOUR - 1)]:
        for meters in ([1], [2], [1, 2]):
            expected = sum(1 for m in meters for t in stored[m] if (start is None or t >= start) and (end is None or t < end))
            assert await store.count_readings(C1, meters, start, end) == expected, (start, end, meters)
