"""The alarm service (meterd.alarms) over a real SQLite store, time from task.Clock.

Readings go through ``store.ingest`` and then ``Alarms.observe`` with the same
``received_ms``, exactly what :class:`meterd.ingest.Ingest` does after a
commit, so each step is deterministic. Expected figures are worked out by hand
in the comments.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task

from meterd.alarms import Alarms, UnknownAlarm
from meterd.directory import Directory
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.readings import US_PER_MS, Outcome, Reading
from meterd.store.base import Actor, Customer
from meterd.store.sqlite import SqliteStore
from tests.support import until

T = 1_764_000_000  # 2025-11-24T16:00:00Z, mid-month in São Paulo, on the hour
S = 1000
CID = "52998224725"
OTHER = "11144477735"


class Rig:
    """A store, a directory, an ingest (not started) and the alarm service on one Clock."""

    def __init__(self, path: Path, clock: task.Clock, **alarm_options: Any) -> None:
        self.path = path
        self.clock = clock
        self.store = SqliteStore(str(path))
        self.directory = Directory()
        self.ingest = Ingest(self.store, clock, Metrics())
        self.alarms = Alarms(self.store, self.directory, clock, **alarm_options)
        self.ingest.observers.append(self.alarms.observe)

    async def start(self) -> None:
        await self.store.start()
        customers, meters = await self.store.load_directory()
        for c in customers:
            self.directory.add_customer(c)
        for m in meters:
            self.directory.add_meter(m)
        self.alarms.startService()
        await self.alarms.ready()

    async def stop(self) -> None:
        await self.alarms.stopService()
        await self.store.stop()

    async def customer(self, cid: str = CID, *, limit_w: int = 10_000, limit_wh: int = 1_000_000) -> None:
        record = Customer(cid, "Fulano", "mono", limit_w, limit_wh, "America/Sao_Paulo", f"hash-{cid}", self.now_ms())
        await self.store.create_customer(record)
        self.directory.add_customer(record)

    async def meter(self, cid: str = CID, mode: str = "register") -> int:
        meter = await self.store.create_meter(cid, mode, "ab" * 32, self.now_ms())
        self.directory.add_meter(meter)
        return meter.meter_id

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def feed(self, readings: Sequence[tuple[int, int]], meter_id: int = 1, cid: str = CID) -> list[Outcome]:
        """Store (ts_ms, wh) readings as one flush received now, then tell the service."""
        batch = [Reading(cid, meter_id, ts * US_PER_MS, wh, None) for ts, wh in readings]
        received = self.now_ms()
        outcomes = await self.store.ingest(batch, received)
        self.alarms.observe(batch, outcomes, received)
        await self.alarms.saved()
        return outcomes

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return list(conn.execute(sql))


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(T)
    return c


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path, clock: task.Clock) -> Any:
    # timers far apart: these tests drive evaluate_customers() themselves
    r = Rig(tmp_path / "meterd.sqlite", clock, window_s=60, silent_after_s=10**7, evaluate_interval=10**7)
    await r.start()
    yield r
    if r.alarms.running:
        await r.stop()


def _load(rig: Rig, start_s: int, start_wh: int, n: int, step_s: int, step_wh: int) -> list[tuple[int, int]]:
    """n register readings from (start_s, start_wh), each step_s later and step_wh higher."""
    return [((start_s + i * step_s) * S, start_wh + i * step_wh) for i in range(n)]


async def _five_kw(rig: Rig) -> None:
    # 25 Wh every 18 s = 25 * 3600 / 18 = 5000 W; six readings span 90 s
    await rig.feed(_load(rig, T - 90, 1000, 6, 18, 25))


def _types(events: Sequence[Any], alarm_id: int) -> list[str]:
    return [e.type for e in events if e.alarm_id == alarm_id]


# --------------------------------------------------------------------------
# demand: raise, ack, clear, seen once each through the cursor


@pytest_twisted.ensureDeferred
async def test_demand_raise_ack_clear_with_cursor(rig: Rig) -> None:
    await rig.customer(limit_w=2000)
    await rig.meter()
    assert rig.alarms.observe in rig.ingest.observers

    await _five_kw(rig)
    first = await rig.alarms.view(CID, None)
    assert [a.rule for a in first.active] == ["demand"]
    alarm = first.active[0]
    assert alarm.meter_id == 1 and alarm.raised_at == T * S
    assert alarm.value == pytest.approx(5.0) and alarm.threshold == 2.0
    assert alarm.message == "Demanda média de 5 kW acima do limite de 2 kW nos últimos 1 min"
    assert _types(first.events, alarm.alarm_id) == ["raised"]

    # the same load again raises nothing new
    rig.clock.advance(18)
    await rig.feed([((T + 18) * S, 1150)])
    again = await rig.alarms.view(CID, first.cursor)
    assert again.events == [] and again.cursor == first.cursor
    assert [a.alarm_id for a in again.active] == [alarm.alarm_id]

    rig.clock.advance(2)
    acked = await rig.alarms.ack(CID, alarm.alarm_id)
    assert acked.acked_at == (T + 20) * S and acked.cleared_at is None
    # acknowledging twice is idempotent, no second event
    assert (await rig.alarms.ack(CID, alarm.alarm_id)).acked_at == acked.acked_at

    # the load drops to 1 Wh per 18 s (0.2 kW); the 60 s window forgets the
    # high load after 60 s of it: at T+90 the window [T+30, T+90] holds only low readings
    low = [((T + 18 + 18 * i) * S, 1150 + i) for i in range(1, 5)]  # T+36 .. T+90
    rig.clock.advance(70)
    await rig.feed(low)
    after = await rig.alarms.view(CID, first.cursor)
    assert after.active == []
    assert _types(after.events, alarm.alarm_id) == ["acked", "cleared"]
    # polling on with the new cursor gets nothing twice
    assert (await rig.alarms.view(CID, after.cursor)).events == []

    everything = await rig.alarms.view(CID, 0)
    assert _types(everything.events, alarm.alarm_id) == ["raised", "acked", "cleared"]
    ids = [e.event_id for e in everything.events]
    assert ids == sorted(ids) and len(set(ids)) == 3

    # all of it is in the store, one row per event, the alarm row up to date
    assert rig.rows("SELECT event_type FROM alarm_events ORDER BY event_id") == [("raised",), ("acked",), ("cleared",)]
    [(raised_at, cleared_at, acked_at)] = rig.rows("SELECT raised_at, cleared_at, acked_at FROM alarms")
    assert (raised_at, cleared_at, acked_at) == (T * S, (T + 90) * S, (T + 20) * S)


@pytest_twisted.ensureDeferred
async def test_demand_hysteresis_keeps_alarm_between_90_and_100_percent(rig: Rig) -> None:
    await rig.customer(limit_w=2000)
    await rig.meter()
    await _five_kw(rig)
    # 1.9 kW: 19 Wh every 36 s = 19 * 100 W. Below the limit, above 90 % of it.
    rig.clock.advance(200)
    await rig.feed([((T + 36 * i) * S, 1125 + 19 * i) for i in range(1, 6)])  # up to T+180
    assert [a.rule for a in (await rig.alarms.view(CID, None)).active] == ["demand"]
    # 1.7 kW (17 Wh every 36 s), under 1.8 kW: clears
    await rig.feed([((T + 180 + 36 * i) * S, 1220 + 17 * i) for i in range(1, 3)])
    assert (await rig.alarms.view(CID, None)).active == []


@pytest_twisted.ensureDeferred
async def test_demand_needs_30_seconds_of_readings(rig: Rig) -> None:
    await rig.customer(limit_w=2000)
    await rig.meter()
    # 20 Wh in 24 s is 3 kW, but two readings 24 s apart decide nothing
    await rig.feed([((T - 24) * S, 100), (T * S, 120)])
    assert (await rig.alarms.view(CID, None)).active == []
    # a third 6 s later makes the span 30 s: 30 Wh over 30 s = 3.6 kW
    rig.clock.advance(6)
    await rig.feed([((T + 6) * S, 130)])
    assert [a.rule for a in (await rig.alarms.view(CID, None)).active] == ["demand"]


@pytest_twisted.ensureDeferred
async def test_demand_of_interval_meter(rig: Rig) -> None:
    await rig.customer(limit_w=2000)
    await rig.meter(mode="interval")
    # 10 Wh every 6 s = 6 kW
    await rig.feed([((T - 60 + 6 * i) * S, 10) for i in range(11)])
    [alarm] = (await rig.alarms.view(CID, None)).active
    assert alarm.rule == "demand" and alarm.value == pytest.approx(6.0)


@pytest_twisted.ensureDeferred
async def test_backfill_raises_nothing(rig: Rig) -> None:
    await rig.customer(limit_w=2000, limit_wh=100)
    await rig.meter()
    # 5 kW and 125 Wh in the month (limit 100 Wh), but received two hours after the fact
    rig.clock.advance(2 * 3600 + 1)
    await rig.feed(_load(rig, T - 90, 0, 6, 18, 25))
    assert await rig.alarms.evaluate_customers() == 0
    view = await rig.alarms.view(CID, None)
    assert view.active == [] and view.events == []
    assert rig.rows("SELECT COUNT(*) FROM alarm_events") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_unknown_or_foreign_alarm_cannot_be_acked(rig: Rig) -> None:
    await rig.customer(limit_w=2000)
    await rig.customer(OTHER)
    await rig.meter()
    await _five_kw(rig)
    [alarm] = (await rig.alarms.view(CID, None)).active
    with pytest.raises(UnknownAlarm):
        await rig.alarms.ack(OTHER, alarm.alarm_id)
    with pytest.raises(UnknownAlarm):
        await rig.alarms.ack(CID, alarm.alarm_id + 100)
    assert (await rig.alarms.view(OTHER, None)).events == []


# --------------------------------------------------------------------------
# monthly and anomaly, from the rollups, per dirty customer


@pytest_twisted.ensureDeferred
async def test_monthly_raises_above_limit_once_per_evaluation(rig: Rig) -> None:
    await rig.customer(limit_w=100_000, limit_wh=1000)
    await rig.meter()
    # 0 at T-2h, 900 Wh at T-1h: 0.9 kWh this month, under the 1 kWh limit
    await rig.feed([((T - 7200) * S, 0), ((T - 3600) * S, 900)])
    assert await rig.alarms.evaluate_customers() == 1
    assert (await rig.alarms.view(CID, None)).active == []
    # 1001 Wh: above. Not re-evaluated within customer_interval (15 s)...
    await rig.feed([(T * S, 1001)])
    assert await rig.alarms.evaluate_customers() == 0
    assert (await rig.alarms.view(CID, None)).active == []
    # ...but on the timer tick after it (the LoopingCall drives evaluate_customers)
    rig.clock.advance(14)
    assert await rig.alarms.evaluate_customers() == 0
    rig.clock.advance(1)
    assert await rig.alarms.evaluate_customers() == 1
    [alarm] = (await rig.alarms.view(CID, None)).active
    assert (alarm.rule, alarm.meter_id, alarm.value, alarm.threshold) == ("monthly", None, 1.001, 1.0)
    assert alarm.message == "Consumo do mês de 1,001 kWh acima do limite de 1 kWh"
    # more consumption keeps the one alarm
    rig.clock.advance(10)
    await rig.feed([((T + 10) * S, 1200)])
    await rig.alarms.evaluate_customers()
    await rig.alarms.saved()
    assert [a.alarm_id for a in (await rig.alarms.view(CID, None)).active] == [alarm.alarm_id]
    assert rig.rows("SELECT event_type FROM alarm_events") == [("raised",)]


@pytest_twisted.ensureDeferred
async def test_monthly_is_evaluated_by_the_timer(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock, evaluate_interval=1)
    await rig.start()
    try:
        await rig.customer(limit_w=100_000, limit_wh=1000)
        await rig.meter()
        await rig.feed([((T - 7200) * S, 0), (T * S, 2000)])
        book = rig.alarms.book
        assert book is not None and not book.is_active(CID, None, "monthly")
        clock.advance(1)  # the evaluation tick; its queries run in the store's threads
        async def raised() -> bool:
            return book.is_active(CID, None, "monthly")

        await until(raised, 30)
        await rig.alarms.saved()
        assert rig.rows("SELECT rule FROM alarms") == [("monthly",)]
    finally:
        await rig.stop()


def _anomaly_history(days_of_history: int, last_day_wh: int) -> list[tuple[int, int]]:
    """Register readings: 1 kWh per day on the 7 days before the last 24 h.

    With now = T on the hour, the rule's days end at T + 1 h; readings sit on
    those day edges, the first ``days_of_history`` days before the last one
    complete (a reading 1 h before the first counted day's start).
    """
    end = (T + 3600) * S
    edges = [end - (8 - i) * 86_400_000 for i in range(9)]
    first_day = 7 - days_of_history
    readings = [(edges[first_day] - 3_600_000, 0)]
    for i in range(first_day, 8):
        readings.append((edges[i], (i - first_day) * 1000))
    readings.append((T * S, readings[-1][1] + last_day_wh))
    return readings


@pytest_twisted.ensureDeferred
async def test_anomaly_raises_above_one_and_a_half_times_the_mean_day(rig: Rig) -> None:
    await rig.customer(limit_w=10**9, limit_wh=10**9)
    await rig.meter()
    # 4 days of 1 kWh; the last 24 h 1.6 kWh > 1.5 kWh
    await rig.feed(_anomaly_history(4, 1600))
    await rig.alarms.evaluate_customers()
    [alarm] = (await rig.alarms.view(CID, None)).active
    assert (alarm.rule, alarm.value, alarm.threshold) == ("anomaly", 1.6, 1.5)
    assert alarm.message == "Consumo das últimas 24 h 60 % acima da média diária"


@pytest_twisted.ensureDeferred
async def test_anomaly_at_exactly_one_and_a_half_does_not_raise(rig: Rig) -> None:
    await rig.customer(limit_w=10**9, limit_wh=10**9)
    await rig.meter()
    await rig.feed(_anomaly_history(4, 1500))
    await rig.alarms.evaluate_customers()
    assert (await rig.alarms.view(CID, None)).active == []


@pytest_twisted.ensureDeferred
async def test_anomaly_needs_three_days_of_history(rig: Rig) -> None:
    await rig.customer(limit_w=10**9, limit_wh=10**9)
    await rig.meter()
    # two full days: a tripled last day still raises nothing
    await rig.feed(_anomaly_history(2, 3000))
    await rig.alarms.evaluate_customers()
    assert (await rig.alarms.view(CID, None)).active == []


# --------------------------------------------------------------------------
# silent, driven by the clock


@pytest_twisted.ensureDeferred
async def test_silent_meter_raises_on_the_timer_and_clears_when_heard(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock, silent_after_s=60)
    await rig.start()
    try:
        await rig.customer()
        await rig.meter()
        await rig.feed([(T * S, 100)])
        clock.advance(30)  # the timer runs every 30 s: heard 30 s ago, fine
        await rig.alarms.saved()
        assert not rig.alarms.book.is_active(CID, 1, "silent")  # type: ignore[union-attr]
        clock.advance(30)  # 60 s of silence
        await rig.alarms.saved()
        [alarm] = (await rig.alarms.view(CID, None)).active
        assert (alarm.rule, alarm.meter_id, alarm.value, alarm.threshold) == ("silent", 1, 60.0, 60.0)
        assert alarm.message == "Medidor 1 sem leituras há 1 min"
        assert alarm.raised_at == (T + 60) * S
        clock.advance(30)  # still silent: still one alarm
        await rig.alarms.saved()
        assert rig.rows("SELECT event_type FROM alarm_events") == [("raised",)]
        # a duplicate can be replayed by anyone: it proves nothing and clears nothing
        clock.advance(5)
        assert await rig.feed([(T * S, 100)]) == [Outcome.DUPLICATE]
        assert len((await rig.alarms.view(CID, 0)).active) == 1
        # a new reading is the meter speaking: it clears at once
        assert await rig.feed([((T + 95) * S, 101)]) == [Outcome.STORED]
        view = await rig.alarms.view(CID, 0)
        assert view.active == []
        assert [(e.type, e.at) for e in view.events] == [("raised", (T + 60) * S), ("cleared", (T + 95) * S)]
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_meter_that_never_sent_is_silent_from_registration(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock, silent_after_s=10)
    await rig.start()
    try:
        await rig.customer()
        await rig.meter()
        clock.advance(5)
        await rig.alarms.saved()
        assert not rig.alarms.book.is_active(CID, 1, "silent")  # type: ignore[union-attr]
        clock.advance(5)
        await rig.alarms.saved()  # the book shows what the store settled
        assert rig.alarms.book.is_active(CID, 1, "silent")  # type: ignore[union-attr]
    finally:
        await rig.stop()


# --------------------------------------------------------------------------
# restart


@pytest_twisted.ensureDeferred
async def test_restart_keeps_active_alarms_ids_and_cursor(tmp_path: Path, clock: task.Clock) -> None:
    path = tmp_path / "db.sqlite"
    rig = Rig(path, clock, window_s=60)
    await rig.start()
    await rig.customer(limit_w=2000)
    await rig.meter()
    await _five_kw(rig)
    before = await rig.alarms.view(CID, None)
    [alarm] = before.active
    await rig.alarms.ack(CID, alarm.alarm_id)
    polled = await rig.alarms.view(CID, before.cursor)
    await rig.stop()

    again = Rig(path, clock, window_s=60)
    await again.start()
    try:
        after = await again.alarms.view(CID, None)
        assert after.active == [a for a in polled.active]
        assert after.active[0].acked_at is not None
        # the client's cursor still means "nothing new"
        assert (await again.alarms.view(CID, polled.cursor)).events == []
        assert [e.type for e in after.events] == ["raised", "acked"]
        # the active alarm is still one: the same load (the window is new) does not raise a second
        clock.advance(90)
        await again.feed(_load(again, T + 18, 1150, 5, 18, 25))  # T+18 .. T+90, up to 1250 Wh
        assert [a.alarm_id for a in (await again.alarms.view(CID, None)).active] == [alarm.alarm_id]
        assert again.alarms.book.next_alarm_id == alarm.alarm_id + 1  # type: ignore[union-attr]
        # new events continue the ids after the restart
        clock.advance(200)
        await again.feed([((T + 290 + 18 * i) * S, 1250) for i in range(5)])
        new = await again.alarms.view(CID, polled.cursor)
        assert [e.type for e in new.events] == ["cleared"]
        assert new.events[0].event_id > polled.cursor
    finally:
        await again.stop()


async def _demand_cycle(rig: Rig, start_s: int, start_wh: int) -> int:
    """5 kW for 90 s (raises), then 200 s later a flat register (clears); the last Wh."""
    rig.clock.advance(start_s + 90 - rig.clock.seconds())
    await rig.feed(_load(rig, start_s, start_wh, 6, 18, 25))
    top = start_wh + 125
    rig.clock.advance(200 + 72)
    await rig.feed([((start_s + 290 + 18 * i) * S, top) for i in range(5)])
    return top


@pytest_twisted.ensureDeferred
async def test_old_cursor_reads_the_store_after_restart(tmp_path: Path, clock: task.Clock) -> None:
    """Memory keeps 2 events per customer; a cursor older than that reaches the store."""
    path = tmp_path / "db.sqlite"
    rig = Rig(path, clock, window_s=60, recent_events=2, silent_after_s=10**7)
    await rig.start()
    await rig.customer(limit_w=2000)
    await rig.meter()
    wh = await _demand_cycle(rig, T - 90, 1000)  # alarm 1: events 1 raised, 2 cleared
    await _demand_cycle(rig, T + 400, wh)  # alarm 2: events 3 raised, 4 cleared
    assert rig.rows("SELECT alarm_id, event_type FROM alarm_events ORDER BY event_id") == [
        (1, "raised"), (1, "cleared"), (2, "raised"), (2, "cleared")
    ]
    await rig.stop()

    again = Rig(path, clock, window_s=60, recent_events=2, silent_after_s=10**7)
    await again.start()
    try:
        book = again.alarms.book
        assert book is not None and not book.covers(CID, 0)
        view = await again.alarms.view(CID, 0)
        assert [(e.event_id, e.type) for e in view.events] == [(1, "raised"), (2, "cleared")]
        assert view.cursor == 2  # a full page: the client asks again from there
        rest = await again.alarms.view(CID, view.cursor)
        assert [(e.event_id, e.type) for e in rest.events] == [(3, "raised"), (4, "cleared")]
        assert (await again.alarms.view(CID, rest.cursor)).events == []
        # alarm 1 is only in the store now; it can still be acknowledged
        with pytest.raises(KeyError):
            book.get(1)
        acked = await again.alarms.ack(CID, 1)
        assert acked.acked_at == again.now_ms() and acked.cleared_at is not None
        last = await again.alarms.view(CID, rest.cursor)
        assert [(e.event_id, e.alarm_id, e.type) for e in last.events] == [(5, 1, "acked")]
        assert again.rows("SELECT acked_at FROM alarms WHERE alarm_id = 1") == [(again.now_ms(),)]
    finally:
        await again.stop()


# -- operations: a meter retired, a customer changed ------------------------------------------

OPERATOR_NOW = Actor("operator", "127.0.0.1", T * S)


async def _retire(rig: Rig, meter_id: int, ts_ms: int, wh: int) -> None:
    meter, _ = await rig.store.retire_meter(CID, meter_id, ts_ms * US_PER_MS, wh, OPERATOR_NOW)
    rig.directory.add_meter(meter)
    settled = rig.alarms.meter_retired((CID, meter_id))
    if settled is not None:
        await settled


@pytest_twisted.ensureDeferred
async def test_a_retired_meter_is_never_silent_and_its_alarms_clear(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock, silent_after_s=60)
    await rig.start()
    try:
        await rig.customer()
        await rig.meter()
        await rig.meter()
        await rig.feed([(T * S, 100)])
        await rig.feed([(T * S, 100)], meter_id=2)
        clock.advance(60)
        await rig.alarms.saved()
        assert {(a.rule, a.meter_id) for a in (await rig.alarms.view(CID, None)).active} == {("silent", 1), ("silent", 2)}
        assert rig.alarms.is_silent((CID, 1), None)
        await _retire(rig, 1, T * S, 100)
        assert [(a.rule, a.meter_id) for a in (await rig.alarms.view(CID, None)).active] == [("silent", 2)]
        assert not rig.alarms.is_silent((CID, 1), None) and rig.alarms.is_silent((CID, 2), None)
        for _ in range(4):  # the timer, again and again: meter 1 is out of service
            clock.advance(30)
            await rig.alarms.saved()
        assert [(a.rule, a.meter_id) for a in (await rig.alarms.view(CID, None)).active] == [("silent", 2)]
        assert rig.rows("SELECT COUNT(*) FROM alarms WHERE meter_id = 1") == [(1,)]  # raised once, before
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_a_silent_alarm_another_process_raised_for_a_retired_meter_clears_on_the_timer(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock, silent_after_s=60)
    await rig.start()
    try:
        await rig.customer()
        await rig.meter()
        await rig.feed([(T * S, 100)])
        meter, _ = await rig.store.retire_meter(CID, 1, T * S * US_PER_MS, 100, OPERATOR_NOW)
        clock.advance(60)
        await rig.alarms.saved()  # this process did not know yet: silent raised
        assert [a.rule for a in (await rig.alarms.view(CID, None)).active] == ["silent"]
        rig.directory.add_meter(meter)  # learnt (meterd.sync)
        clock.advance(30)
        await rig.alarms.saved()
        assert (await rig.alarms.view(CID, None)).active == []
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_a_changed_demand_limit_is_decided_at_once(tmp_path: Path, clock: task.Clock) -> None:
    rig = Rig(tmp_path / "db.sqlite", clock)
    await rig.start()
    try:
        await rig.customer(limit_w=10_000)
        await rig.meter()
        await rig.feed([((T - 60) * S, 0), (T * S, 100)])  # 100 Wh in a minute: 6 kW
        assert (await rig.alarms.view(CID, None)).active == []
        for limit_w, active in ((5_000, [("demand", 1)]), (5_500, [("demand", 1)]), (7_000, [])):  # 10 % hysteresis
            customer, _ = await rig.store.update_customer(CID, {"limit_w": limit_w}, OPERATOR_NOW)
            rig.directory.add_customer(customer)
            decided = rig.alarms.customer_changed(CID)
            if decided is not None:
                await decided
            assert [(a.rule, a.meter_id) for a in (await rig.alarms.view(CID, None)).active] == active, limit_w
    finally:
        await rig.stop()
