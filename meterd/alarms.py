"""The alarm service (DESIGN §7): evaluates the pure rules of
:mod:`meterd.alarm_rules` as readings commit, and keeps the alarm book.

Three triggers, none of which scans stored readings:

* every committed flush (an :class:`~meterd.ingest.Ingest` observer): the
  meters in the flush feed their in-memory :class:`DemandWindow`, and their
  ``demand`` rule is decided at once; a silent alarm of a meter that spoke
  again clears; their customers are marked dirty;
* a short tick (``evaluate_interval``): dirty customers get ``monthly`` and
  ``anomaly`` decided from the hourly rollups (``store.usage``), each customer
  at most once per ``customer_interval`` (15 s: month-to-date and daily
  figures move slowly, and a thousand busy customers' queries every few
  seconds would take a noticeable share of the reactor under full ingest),
  so a meter sending every second costs a few rollup queries every 15 s,
  not one per reading;
* a timer every ``silent_after / 2``: every known meter's last-heard time
  against ``--silent-after``.

Rules decide from the book in memory; a decision that changes something (a
:class:`~meterd.alarm_book.Transition`) and every acknowledgement is
*settled* by the store (``store.settle_alarms``), which applies it to the
stored alarms in one transaction and hands out the ids. Settlements run one
at a time, in order; the book then absorbs what was stored. So the book only
ever shows committed alarms, and several meterd processes on one database
(``store.shared``) agree: a raise decided by two of them stores one alarm.
With a shared store the book is refreshed from the database every tick,
``/getAlarme`` reads from the database, and the silent rule takes each
meter's last-heard time from it (another process may be hearing the meter).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd.alarm_book import Acknowledgement, Alarm, AlarmBook, AlarmKey, Change, Event, Settled, Transition
from meterd.alarm_rules import (
    ANOMALY_FACTOR,
    PER_METER_RULES,
    Decision,
    DemandWindow,
    Number,
    anomaly_baseline_wh,
    anomaly_decision,
    demand_decision,
    is_backfill,
    local_month_start_ms,
    monthly_decision,
    silent_decision,
)
from meterd.alarm_text import message_for
from meterd.alarm_wire import alarm_json, event_json
from meterd.directory import Directory
from meterd.periods import HOUR_MS
from meterd.readings import US_PER_MS, Outcome, Reading, us_edges
from meterd.store.base import Store, StoreError

__all__ = ["AlarmView", "Alarms", "UnknownAlarm", "alarm_json", "event_json"]

log = Logger()

DAY_MS = 24 * HOUR_MS
MeterKey = tuple[str, int]


class UnknownAlarm(KeyError):
    """No such alarm for this customer (the API answers 404 ``unknown_alarm``)."""


@dataclass(frozen=True)
class AlarmView:
    """What ``/getAlarme`` shows one customer."""

    active: list[Alarm]
    events: list[Event]
    cursor: int


def page(active: list[Alarm], events: list[Event], last_event_id: int, cursor: int | None, limit: int) -> AlarmView:
    """The view of ``events`` (at most ``limit``, after ``cursor``), with the cursor to poll with next.

    That cursor is the last event returned when the page is full (more may
    follow), else the highest event id handed out by anyone: ids are handed
    out in commit order, so every later event of this customer gets a higher
    id, and polling with it misses nothing and repeats nothing.
    """
    if events and len(events) >= limit:
        return AlarmView(active, events, events[-1].event_id)
    return AlarmView(active, events, max(cursor or 0, last_event_id))


@dataclass(frozen=True)
class CustomerFigures:
    """What the per-customer rules need, read from the hourly rollups."""

    month_to_date_wh: int
    last24h_wh: int
    daily_wh_previous_7: list[int | None]


def _ceil_hour(ms: int) -> int:
    return -(-ms // HOUR_MS) * HOUR_MS


def _kilo(units: int) -> Fraction:
    """W to kW, Wh to kWh, exactly."""
    return Fraction(units, 1000)


@functools.lru_cache(maxsize=4096)
def _limit_kw(limit_w: int) -> Fraction:
    """A demand limit in kW, needed for every sending meter on every flush; limits repeat."""
    return _kilo(limit_w)


class Alarms(Service):
    """Owns the alarm book, the demand windows and the silent-meter timer."""

    def __init__(
        self,
        store: Store,
        directory: Directory,
        clock: IReactorTime,
        *,
        window_s: float = 300,
        silent_after_s: float = 900,
        evaluate_interval: float = 1.0,
        customer_interval: float = 15.0,
        max_customers_per_tick: int = 500,
        recent_events: int = 200,
        retry_after: float = 1.0,
    ) -> None:
        self.store = store
        self.directory = directory
        self.clock = clock
        self.window_us = max(1, int(window_s * 1_000_000))
        self.window_s = window_s
        self.silent_after_s = Fraction(str(silent_after_s)) if isinstance(silent_after_s, float) else Fraction(silent_after_s)
        self.evaluate_interval = evaluate_interval
        self.customer_interval_ms = int(customer_interval * 1000)
        self.max_customers_per_tick = max_customers_per_tick
        self.recent_events = recent_events
        self.retry_after = retry_after
        self.book: AlarmBook | None = None
        self._windows: dict[MeterKey, DemandWindow] = {}
        self._last_seen: dict[MeterKey, int] = {}
        # meters whose demand / silent rule the next flush evaluation decides
        self._demand_due: set[MeterKey] = set()
        self._spoke: set[MeterKey] = set()
        # customers whose monthly/anomaly figures changed; dict keeps FIFO order
        self._dirty: dict[str, None] = {}
        self._evaluated_at: dict[str, int] = {}
        # earliest reading seen: from the store once per customer, and live
        self._first_stored: dict[str, int | None] = {}
        self._first_live: dict[str, int] = {}
        self._ready_waiters: list[Deferred[AlarmBook]] = []
        self._load_failure: Failure | None = None
        self._loops: list[tuple[LoopingCall, Deferred[Any]]] = []
        # settlement: one batch in flight at a time, the next one accumulating
        self._pending: list[Change] = []
        self._pending_waiters: list[Deferred[Settled | None]] = []
        self._saving: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        # decisions queued or in flight: they, not the book, say what a key will be
        self._intended: dict[AlarmKey, Transition] = {}
        # Told after every settlement, stored or failed (a failure may follow a commit):
        # the HTTP workers' cached views of stored alarms are then stale.
        self.settled_listeners: list[Callable[[], None]] = []
        # Told of the events a settlement stored, once committed (the webhooks deliver them).
        self.event_listeners: list[Callable[[Sequence[Event]], None]] = []

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._load()).addErrback(self._load_failed)

    async def _load(self) -> None:
        alarms, events, next_alarm, next_event = await self.store.load_alarm_state(self.recent_events)
        seen = await self.store.meters_last_seen()
        self.book = AlarmBook.restore(
            alarms,
            events,
            next_alarm_id=next_alarm,
            next_event_id=next_event,
            max_events_per_customer=self.recent_events,
        )
        self._merge_last_seen(seen)
        log.info("alarms loaded: {n} active, next event id {e}", n=sum(a.active for a in alarms), e=self.book.next_event_id)
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self.book)
        if not self.running:
            return
        self._start_loop(self._tick, self.evaluate_interval)
        self._start_loop(self.check_silent, float(self.silent_after_s) / 2)
        if self._demand_due or self._spoke:
            self._evaluate_flush(self.now_ms())

    @property
    def _demand_window_s(self) -> int:
        return max(1, int(self.window_s))

    def _merge_last_seen(self, seen: Sequence[tuple[str, int, int | None]]) -> None:
        last_seen = self._last_seen
        for customer_id, meter_id, at in seen:
            if at is not None:
                key = (customer_id, meter_id)
                if at > last_seen.get(key, -1):
                    last_seen[key] = at

    def _load_failed(self, failure: Failure) -> None:
        log.failure("cannot load the alarms; alarm rules are not evaluated", failure)
        self._load_failure = failure
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.errback(StoreError("the alarms could not be loaded"))

    def _start_loop(self, fn: Any, interval: float) -> None:
        loop = LoopingCall(fn)
        loop.clock = self.clock
        done = loop.start(interval, now=False)
        done.addErrback(lambda f: log.failure("alarm timer stopped", f))
        self._loops.append((loop, done))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        loops, self._loops = self._loops, []
        for loop, _ in loops:
            if loop.running:
                loop.stop()
        for _, done in loops:
            await done  # a tick in flight finishes its queries before the store closes
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        while self._saving is not None:
            await self._saving
        if self._pending:
            try:
                await self._submit([])
            except Exception:
                log.failure("alarm changes not settled at stop; they are decided again after the restart")

    def ready(self) -> Deferred[AlarmBook]:
        """The book, once loaded from the store (StoreError if that failed)."""
        if self.book is not None:
            return succeed(self.book)
        if self._load_failure is not None:
            return fail(StoreError("the alarms could not be loaded"))
        waiter: Deferred[AlarmBook] = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    # -- after each flush --------------------------------------------------

    def observe(self, readings: Sequence[Reading], outcomes: Sequence[Outcome], received_ms: int) -> Deferred[None] | None:
        """Ingest observer: feed the windows, then decide demand for these meters.

        Returns a Deferred when the flush changed an alarm: it fires once the
        change is settled, and ingest answers the flush's readings only then,
        so whoever sent a reading sees the alarm it raised on the next poll.
        """
        if not self.running:
            return None
        # This runs for every reading of every flush, so the loop only sorts the
        # stored readings by meter; the rest is done once per meter.
        spoke = self._spoke
        stored, duplicate, unknown, retired = Outcome.STORED, Outcome.DUPLICATE, Outcome.UNKNOWN_METER, Outcome.RETIRED
        runs: dict[MeterKey, tuple[list[int], list[int]]] = {}
        for reading, outcome in zip(readings, outcomes):
            if outcome is stored:
                key = reading[:2]  # (customer_id, meter_id)
                run = runs.get(key)
                if run is None:
                    run = runs[key] = ([], [])
                run[0].append(reading.ts)
                run[1].append(reading.wh)
            elif outcome is not duplicate and outcome is not unknown and outcome is not retired:
                # a duplicate is replayable by anyone: no sign that the meter is alive
                spoke.add((reading.customer_id, reading.meter_id))
        for key, (ts, wh) in runs.items():
            self._feed(key, ts, wh, received_ms)
        last_seen = self._last_seen
        for key in spoke:  # one receive time per flush: set it once per meter, not per reading
            if received_ms > last_seen.get(key, -1):
                last_seen[key] = received_ms
        if self.book is None:
            return None
        return self._evaluate_flush(received_ms)

    def _feed(self, key: MeterKey, ts: list[int], wh: list[int], received_ms: int) -> None:
        """One meter's stored readings of a flush, in arrival order: a sign of
        life, the customer's earliest data, and (unless backfill) its demand window."""
        customer_id = key[0]
        self._spoke.add(key)
        oldest = min(ts)
        first = self._first_live.get(customer_id)
        if first is None or oldest < first:
            self._first_live[customer_id] = oldest
        if is_backfill(oldest, received_ms):  # history being filled in raises nothing
            live = [i for i, t in enumerate(ts) if not is_backfill(t, received_ms)]
            if not live:
                return
            ts, wh = [ts[i] for i in live], [wh[i] for i in live]
        entry = self.directory.meters.get(key)
        if entry is None:
            return
        if entry.meter.retired_ts is not None:  # a late reading of a retired meter: history, not demand
            self._dirty[customer_id] = None
            return
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = DemandWindow(self.window_us)
        window.add_run(ts, wh, entry.meter.mode)  # type: ignore[arg-type]
        self._demand_due.add(key)
        self._dirty[customer_id] = None

    def _evaluate_flush(self, now_ms: int) -> Deferred[None] | None:
        changes: list[Change] = []
        spoke, self._spoke = self._spoke, set()
        for customer_id, meter_id in spoke:
            if self._is_active(customer_id, meter_id, "silent"):
                last = self._last_seen.get((customer_id, meter_id))
                decision = silent_decision(now_ms, last, self.silent_after_s, True)
                self._decide(changes, customer_id, meter_id, "silent", decision, now_ms, 0, self.silent_after_s)
        due, self._demand_due = self._demand_due, set()
        for key in due:
            customer = self.directory.customers.get(key[0])
            window = self._windows.get(key)
            if customer is None or window is None:
                continue
            avg = window.average_kw()
            limit = _limit_kw(customer.limit_w)
            decision = demand_decision(avg, limit, self._is_active(key[0], key[1], "demand"))
            self._decide(changes, key[0], key[1], "demand", decision, now_ms, avg if avg is not None else 0, limit)
        if not changes:
            return None
        settled = self._submit(changes).addCallback(lambda _: None)
        return settled.addErrback(lambda _: None)  # logged in _settle_failed; retried

    def _is_active(self, customer_id: str, meter_id: int | None, rule: str) -> bool:
        """Whether the alarm is active once what this process decided is settled."""
        intended = self._intended.get((customer_id, meter_id, rule))
        if intended is not None:
            return intended.decision is Decision.RAISE
        assert self.book is not None
        return self.book.is_active(customer_id, meter_id, rule)

    def _decide(
        self, changes: list[Change], customer_id: str, meter_id: int | None, rule: str, decision: Decision,
        now_ms: int, value: Number, threshold: Number,
    ) -> None:
        """Queue a decision that changes something; KEEP costs nothing."""
        if decision is Decision.KEEP:
            return
        message = message_for(rule, meter_id, value, threshold, self._demand_window_s) if decision is Decision.RAISE else ""
        transition = Transition(customer_id, meter_id, rule, decision, now_ms, value, threshold, message)
        self._intended[transition.key] = transition
        changes.append(transition)

    # -- monthly and anomaly, per dirty customer ---------------------------

    async def _tick(self) -> None:
        """Decide monthly/anomaly for dirty customers not evaluated too recently."""
        try:
            if self.store.shared:
                await self._refresh()
            await self.evaluate_customers()
        except Exception:
            log.failure("alarm evaluation failed; the customers stay dirty")

    async def evaluate_customers(self) -> int:
        """One evaluation batch; how many customers it evaluated."""
        if self.book is None or not self._dirty:
            return 0
        now = self.now_ms()
        chosen: list[str] = []
        for customer_id in self._dirty:
            if now - self._evaluated_at.get(customer_id, -self.customer_interval_ms) >= self.customer_interval_ms:
                chosen.append(customer_id)
                if len(chosen) >= self.max_customers_per_tick:
                    break
        if not chosen:
            return 0
        for customer_id in chosen:
            del self._dirty[customer_id]
            self._evaluated_at[customer_id] = now
        results: list[tuple[str, CustomerFigures | None]] = []
        try:
            for customer_id in chosen:
                results.append((customer_id, await self.figures(customer_id, now)))
        except Exception:
            for customer_id in chosen:
                self._dirty[customer_id] = None
                self._evaluated_at.pop(customer_id, None)
            raise
        changes: list[Change] = []
        for customer_id, figures in results:
            customer = self.directory.customers.get(customer_id)
            if figures is None or customer is None:
                continue
            self._decide_customer(changes, customer_id, customer.limit_wh, figures, now)
        if changes:
            await self._submit(changes).addErrback(lambda _: None)
        return len(chosen)

    def _decide_customer(
        self, changes: list[Change], customer_id: str, limit_wh: int, figures: CustomerFigures, now: int
    ) -> None:
        limit_kwh = _kilo(limit_wh)
        monthly = monthly_decision(figures.month_to_date_wh, limit_kwh, self._is_active(customer_id, None, "monthly"))
        self._decide(changes, customer_id, None, "monthly", monthly, now, _kilo(figures.month_to_date_wh), limit_kwh)
        anomaly = anomaly_decision(
            figures.last24h_wh, figures.daily_wh_previous_7, self._is_active(customer_id, None, "anomaly")
        )
        mean = anomaly_baseline_wh(figures.daily_wh_previous_7) or Fraction(0)
        self._decide(
            changes, customer_id, None, "anomaly", anomaly, now, _kilo(figures.last24h_wh), ANOMALY_FACTOR * mean / 1000
        )

    async def figures(self, customer_id: str, now_ms: int) -> CustomerFigures | None:
        """Month-to-date, the last 24 h and the 7 days before, from the rollups.

        Edges fall on whole hours (the 24 h end at the end of the current
        hour), so every figure is a few index seeks into the hourly rollups;
        only a zone whose month starts off the hour reads the raw readings of
        that first partial hour.
        """
        customer = self.directory.customers.get(customer_id)
        if customer is None:
            return None
        meters = [(m, self.directory.meters[(customer_id, m)].meter.mode) for m in self.directory.meter_ids(customer_id)]
        if not meters:
            return None
        tz = ZoneInfo(customer.tz)
        end = now_ms - now_ms % HOUR_MS + HOUR_MS
        month_start = local_month_start_ms(now_ms, tz)
        month_to_date = 0
        spans = [[month_start, end]]
        if month_start % HOUR_MS:
            head = _ceil_hour(month_start)
            spans = [[month_start, head]] + ([[head, end]] if head < end else [])
        for edges in spans:
            for usage in await self.store.usage(customer_id, meters, us_edges(edges)):
                month_to_date += sum(wh for wh, _ in usage.buckets)
        day_edges = [end - (8 - i) * DAY_MS for i in range(9)]
        days = [0] * 8
        for usage in await self.store.usage(customer_id, meters, us_edges(day_edges)):
            for i, (wh, _) in enumerate(usage.buckets):
                days[i] += wh
        first = await self._first_data(customer_id)
        previous: list[int | None] = [
            days[i] if first is not None and first <= day_edges[i] * US_PER_MS else None for i in range(7)
        ]
        return CustomerFigures(month_to_date, days[7], previous)

    async def _first_data(self, customer_id: str) -> int | None:
        if customer_id not in self._first_stored:
            self._first_stored[customer_id] = await self.store.first_reading_us(customer_id)
        stored = self._first_stored[customer_id]
        live = self._first_live.get(customer_id)
        if stored is None:
            return live
        return stored if live is None else min(stored, live)

    # -- silent ------------------------------------------------------------

    def check_silent(self) -> Deferred[None]:
        """Every meter this process knows against --silent-after.

        A meter never heard from counts from its registration, so a meter
        installed and never connected is noticed too. With a shared store
        another process may be the one hearing a meter, so the last-heard
        times are first read from the database. Fires once the decisions
        are queued (``saved()`` waits for them to be stored).
        """
        if self.book is None:
            return succeed(None)
        if not self.store.shared:
            self._decide_silent()
            return succeed(None)

        def merged(seen: Sequence[tuple[str, int, int | None]]) -> None:
            self._merge_last_seen(seen)
            if self.book is not None:
                self._decide_silent()

        checked = self.store.meters_last_seen().addCallback(merged)
        return checked.addErrback(lambda f: log.failure("silent check failed; tried again at the next one", f))

    def _decide_silent(self) -> None:
        now = self.now_ms()
        changes: list[Change] = []
        for (customer_id, meter_id), entry in list(self.directory.meters.items()):
            last = self._last_seen.get((customer_id, meter_id), entry.meter.created_ms)
            active = self._is_active(customer_id, meter_id, "silent")
            if entry.meter.retired_ts is not None:  # out of service: never silent (one raised elsewhere clears)
                if active:
                    self._decide(changes, customer_id, meter_id, "silent", Decision.CLEAR, now, 0, self.silent_after_s)
                continue
            decision = silent_decision(now, last, self.silent_after_s, active)
            self._decide(changes, customer_id, meter_id, "silent", decision, now, Fraction(now - last, 1000), self.silent_after_s)
        if changes:
            self._submit(changes).addErrback(lambda _: None)

    def is_silent(self, key: MeterKey, stored_last_seen_ms: int | None) -> bool:
        """Whether the silent rule finds the meter silent now: nothing heard for --silent-after.

        Heard is the latest of what this process heard and what the store
        says (``stored_last_seen_ms``; another process may hear the meter),
        else the meter's registration. A retired meter is never silent.
        """
        entry = self.directory.meters.get(key)
        if entry is None or entry.meter.retired_ts is not None:
            return False
        heard = [t for t in (self._last_seen.get(key), stored_last_seen_ms) if t is not None]
        last = max(heard) if heard else entry.meter.created_ms
        return silent_decision(self.now_ms(), last, self.silent_after_s, False) is Decision.RAISE

    # -- operations: a meter retired, a customer changed -----------------------

    def meter_retired(self, key: MeterKey) -> Deferred[None] | None:
        """A meter was retired (the directory says so already): its alarms clear, and no rule watches it again.

        Returns a Deferred that fires once the clearances are settled (None
        when there was nothing to clear), so the operator's answer shows them.
        """
        self._windows.pop(key, None)
        self._demand_due.discard(key)
        self._spoke.discard(key)
        self._dirty[key[0]] = None  # its final reading may change the month
        if self.book is None:
            return None
        now = self.now_ms()
        changes: list[Change] = []
        for rule in sorted(PER_METER_RULES):
            if self._is_active(key[0], key[1], rule):
                self._decide(changes, key[0], key[1], rule, Decision.CLEAR, now, 0, 0)
        if not changes:
            return None
        settled = self._submit(changes).addCallback(lambda _: None)
        return settled.addErrback(lambda _: None)  # logged in _settle_failed; retried

    def customer_changed(self, customer_id: str) -> Deferred[None] | None:
        """A customer's limits or zone changed (the directory has the new ones): decide its rules again now.

        Demand is decided at once from the windows in memory, the per-customer
        rules at the next tick. A Deferred fires once a demand change is
        settled (None when nothing changed).
        """
        self._evaluated_at.pop(customer_id, None)
        self._dirty[customer_id] = None
        for meter_id in self.directory.meter_ids(customer_id):
            if (customer_id, meter_id) in self._windows:
                self._demand_due.add((customer_id, meter_id))
        if self.book is None:
            return None
        return self._evaluate_flush(self.now_ms())

    async def _refresh(self) -> None:
        """With a shared store: take the active alarms other processes settled."""
        alarms = await self.store.active_alarms()
        self.book = AlarmBook.restore(
            alarms, [], max_events_per_customer=self.recent_events
        )

    # -- settlement --------------------------------------------------------

    def saved(self) -> Deferred[None]:
        """Fires once every change decided so far is settled (tests, shutdown)."""
        if self.book is None:
            return succeed(None)
        return self._submit([]).addCallback(lambda _: None)

    def _submit(self, changes: Sequence[Change]) -> Deferred[Settled | None]:
        """Queue changes for the next settlement; fires with its result once stored."""
        self._pending.extend(changes)
        waiter: Deferred[Settled | None] = Deferred()
        self._pending_waiters.append(waiter)
        if self._saving is None and (self._retry is None or not self._retry.active()):
            self._settle_next()
        return waiter

    def _settle_next(self) -> None:
        self._retry = None
        changes, self._pending = self._pending, []
        waiters, self._pending_waiters = self._pending_waiters, []
        if not changes:
            for waiter in waiters:
                waiter.callback(None)
            return
        saving = maybeDeferred(self.store.settle_alarms, changes)
        self._saving = saving
        saving.addCallbacks(self._settled, self._settle_failed, callbackArgs=(changes, waiters), errbackArgs=(changes, waiters))

    def _settled(self, settled: Settled, changes: list[Change], waiters: list[Deferred[Settled | None]]) -> None:
        self._saving = None
        if self.book is not None:
            self.book.absorb(settled.alarms, settled.events)
        self._tell_settled()
        if settled.events:
            for listener in self.event_listeners:
                listener(settled.events)
        for change in changes:
            if isinstance(change, Transition) and self._intended.get(change.key) is change:
                del self._intended[change.key]
        for waiter in waiters:
            waiter.callback(settled)
        if self._pending_waiters or self._pending:
            self._settle_next()

    def _settle_failed(self, failure: Failure, changes: list[Change], waiters: list[Deferred[Settled | None]]) -> None:
        """Put the rules' decisions back in front, in order, and retry; an
        acknowledgement is not retried: its caller gets the error and may ask again."""
        self._saving = None
        self._tell_settled()
        log.failure("cannot settle {n} alarm changes; retrying", failure, n=len(changes))
        self._pending[:0] = [c for c in changes if isinstance(c, Transition)]
        for waiter in waiters:
            waiter.errback(failure)
        if self.running:
            self._retry = self.clock.callLater(self.retry_after, self._settle_next)

    def _tell_settled(self) -> None:
        for listener in self.settled_listeners:
            listener()

    # -- queries (the API) -------------------------------------------------

    async def view(self, customer_id: str, cursor: int | None, limit: int | None = None) -> AlarmView:
        """Active alarms and the events after ``cursor``, with the next cursor (:func:`page`).

        The book answers when it holds every event after the cursor and no
        other process writes; otherwise the store does.
        """
        book = await self.ready()
        limit = limit or self.recent_events
        if self.store.shared or not book.covers(customer_id, cursor):
            active, events, last = await self.store.alarm_view(customer_id, cursor, limit)
        else:
            active, events, last = book.active(customer_id), book.events_after(customer_id, cursor, limit), book.last_event_id
        return page(active, events, last, cursor, limit)

    def recent(self, customer_id: str, alarm_ids: Sequence[int]) -> list[Alarm]:
        """The customer's alarms of these ids that memory holds, newest first (the portal's past alarms).

        The book keeps the alarms its recent events refer to; with a shared
        store it holds only active ones, and the rest are not listed.
        """
        return [] if self.book is None else self.book.known(customer_id, alarm_ids)

    async def ack(self, customer_id: str, alarm_id: int) -> Alarm:
        """Acknowledge; returns once the ack is stored. UnknownAlarm if not this customer's."""
        await self.ready()
        settled = await self._submit([Acknowledgement(customer_id, alarm_id, self.now_ms())])
        alarm = None if settled is None else settled.alarm(customer_id, alarm_id)
        if alarm is None:
            raise UnknownAlarm(alarm_id)
        return alarm


# -- wire format (DESIGN §7; an alarm and an event: meterd.alarm_wire) -------


def view_json(customer_id: str, view: AlarmView, tz: ZoneInfo) -> dict[str, Any]:
    """``/getAlarme``'s body."""
    return {
        "id": customer_id,
        "alarme": bool(view.active),
        "active": [alarm_json(a, tz) for a in view.active],
        "events": [event_json(e, tz) for e in view.events],
        "cursor": view.cursor,
    }
