"""The alarm lifecycle (DESIGN §7), pure: alarms, their events, and settling changes.

:class:`AlarmBook` turns the rules' decisions into alarms and events and
keeps the ids; the store persists what it emits, because only the store
holds the full history. :func:`settle` is what the store runs, in one
transaction, to carry out the changes every process decided.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from meterd.alarm_rules import PER_CUSTOMER_RULES, PER_METER_RULES, Decision, Number, as_fraction
from meterd.alarm_text import message_for

EventType = Literal["raised", "cleared", "acked"]


# --------------------------------------------------------------------------
# lifecycle


@dataclass(frozen=True, slots=True)
class Alarm:
    alarm_id: int
    customer_id: str
    rule: str
    meter_id: int | None
    raised_at: int
    cleared_at: int | None
    acked_at: int | None
    value: float
    threshold: float
    message: str

    @property
    def active(self) -> bool:
        return self.cleared_at is None


@dataclass(frozen=True, slots=True)
class Event:
    event_id: int
    alarm_id: int
    customer_id: str
    type: str
    at: int


AlarmKey = tuple[str, "int | None", str]


class AlarmBook:
    """Alarms and their events, in memory; the caller persists what it emits.

    Holds every active alarm, the last ``max_events_per_customer`` events of
    each customer and the alarms those events refer to; everything older
    lives only in the store, which holds the full history.
    :meth:`covers` tells the caller when a cursor reaches back further than
    memory does.  Ids come from counters given at construction, so a store
    can restore them after a restart; event ids increase globally.  Not
    thread-safe: use it from the reactor thread.
    """

    def __init__(
        self,
        next_alarm_id: int = 1,
        next_event_id: int = 1,
        *,
        demand_window_s: int = 300,
        max_events_per_customer: int = 1000,
    ) -> None:
        if next_alarm_id < 1 or next_event_id < 1:
            raise ValueError("ids start at 1")
        if max_events_per_customer < 1:
            raise ValueError("max_events_per_customer must be positive")
        self.next_alarm_id = next_alarm_id
        self.next_event_id = next_event_id
        self.demand_window_s = demand_window_s
        self.max_events_per_customer = max_events_per_customer
        self._alarms: dict[int, Alarm] = {}
        self._active: dict[AlarmKey, int] = {}
        self._active_by_customer: dict[str, set[int]] = {}
        self._events: dict[str, deque[Event]] = {}
        self._refs: dict[int, int] = {}
        self._evicted_upto: dict[str, int] = {}

    # -- queries -----------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        """Highest event id handed out (0 if none): a safe cursor for anyone."""
        return self.next_event_id - 1

    def get(self, alarm_id: int) -> Alarm:
        """The alarm by id, if still in memory (KeyError otherwise)."""
        return self._alarms[alarm_id]

    def active_alarm(self, customer_id: str, meter_id: int | None, rule: str) -> Alarm | None:
        alarm_id = self._active.get((customer_id, meter_id, rule))
        return None if alarm_id is None else self._alarms[alarm_id]

    def is_active(self, customer_id: str, meter_id: int | None, rule: str) -> bool:
        return (customer_id, meter_id, rule) in self._active

    def active(self, customer_id: str) -> list[Alarm]:
        ids = self._active_by_customer.get(customer_id, ())
        return [self._alarms[i] for i in sorted(ids)]

    def every_active(self) -> list[Alarm]:
        """Every customer's active alarms, oldest first (the fleet's view)."""
        return [self._alarms[i] for i in sorted(self._active.values())]

    def known(self, customer_id: str, alarm_ids: Iterable[int]) -> list[Alarm]:
        """Those of the customer's alarms named that memory still holds (those its kept events refer to), newest first."""
        found = (self._alarms.get(i) for i in set(alarm_ids))
        return sorted((a for a in found if a is not None and a.customer_id == customer_id), key=lambda a: a.alarm_id, reverse=True)

    def events_after(self, customer_id: str, cursor: int | None, limit: int) -> list[Event]:
        """Events of the customer after ``cursor``, oldest first, at most ``limit``.

        With a cursor, the first ``limit`` after it, so that a client paging
        with the last id it got misses nothing.  Without one, the newest
        ``limit``: a fresh client wants what is recent, not the oldest.
        """
        if limit <= 0:
            return []
        events = self._events.get(customer_id)
        if not events:
            return []
        if cursor is None:
            n = len(events)
            return [events[i] for i in range(max(0, n - limit), n)]
        out: list[Event] = []
        for ev in events:
            if ev.event_id > cursor:
                out.append(ev)
                if len(out) >= limit:
                    break
        return out

    def covers(self, customer_id: str, cursor: int | None) -> bool:
        """Whether memory holds every event of the customer after ``cursor``.

        False means some were evicted (or never loaded after a restart):
        the caller should read them from the store.
        """
        if cursor is None:
            return True
        return cursor >= self._evicted_upto.get(customer_id, 0)

    # -- transitions -------------------------------------------------------

    def apply(
        self,
        customer_id: str,
        meter_id: int | None,
        rule: str,
        decision: Decision,
        now_ms: int,
        value: Number,
        threshold: Number,
        *,
        message: str | None = None,
    ) -> list[Event]:
        """Carry out a rule's decision; the events to persist (often none).

        Raising an active alarm and clearing an absent one are no-ops, so a
        caller may apply whatever the rule says without checking first.
        ``value`` and ``threshold`` are recorded only when the alarm is raised.
        """
        _check_key(rule, meter_id)
        key: AlarmKey = (customer_id, meter_id, rule)
        if decision is Decision.KEEP:
            return []
        if decision is Decision.RAISE:
            if key in self._active:
                return []
            alarm = Alarm(
                alarm_id=self.next_alarm_id,
                customer_id=customer_id,
                rule=rule,
                meter_id=meter_id,
                raised_at=now_ms,
                cleared_at=None,
                acked_at=None,
                value=float(as_fraction(value)),
                threshold=float(as_fraction(threshold)),
                message=message
                if message is not None
                else message_for(rule, meter_id, value, threshold, self.demand_window_s),
            )
            self.next_alarm_id += 1
            self._alarms[alarm.alarm_id] = alarm
            self._active[key] = alarm.alarm_id
            self._active_by_customer.setdefault(customer_id, set()).add(alarm.alarm_id)
            return [self._emit(alarm, "raised", now_ms)]
        if decision is Decision.CLEAR:
            alarm_id = self._active.pop(key, None)
            if alarm_id is None:
                return []
            ids = self._active_by_customer[customer_id]
            ids.discard(alarm_id)
            if not ids:
                del self._active_by_customer[customer_id]
            alarm = replace(self._alarms[alarm_id], cleared_at=now_ms)
            self._alarms[alarm_id] = alarm
            return [self._emit(alarm, "cleared", now_ms)]
        raise TypeError(f"not a Decision: {decision!r}")

    def ack(self, customer_id: str, alarm_id: int, now_ms: int) -> tuple[Alarm, list[Event]]:
        """Acknowledge an alarm of this customer, active or already cleared.

        Acknowledging twice is idempotent (the first time stays, no event).
        An alarm that is not this customer's, or no longer in memory, is a
        KeyError: the caller answers 404 or looks it up in the store.
        Acknowledging does not clear: the condition decides that.
        """
        alarm = self._alarms.get(alarm_id)
        if alarm is None or alarm.customer_id != customer_id:
            raise KeyError(alarm_id)
        if alarm.acked_at is not None:
            return alarm, []
        alarm = replace(alarm, acked_at=now_ms)
        self._alarms[alarm_id] = alarm
        return alarm, [self._emit(alarm, "acked", now_ms)]

    def absorb(self, alarms: Iterable[Alarm], events: Iterable[Event]) -> None:
        """Take in what the store settled (:func:`settle`), so memory follows the store.

        The store, not this book, decides transitions and hands out ids (one
        transaction at a time), so this book is a cache of committed state:
        newer versions of alarms replace older ones, events already held are
        skipped, and the counters move past every id seen.
        """
        incoming = list(alarms)
        for alarm in incoming:
            _check_key(alarm.rule, alarm.meter_id)
            key: AlarmKey = (alarm.customer_id, alarm.meter_id, alarm.rule)
            previous = self._active.get(key)
            if previous is not None and (previous != alarm.alarm_id or not alarm.active):
                del self._active[key]
                ids = self._active_by_customer[alarm.customer_id]
                ids.discard(previous)
                if not ids:
                    del self._active_by_customer[alarm.customer_id]
            if alarm.active:
                self._active[key] = alarm.alarm_id
                self._active_by_customer.setdefault(alarm.customer_id, set()).add(alarm.alarm_id)
            self._alarms[alarm.alarm_id] = alarm
            self.next_alarm_id = max(self.next_alarm_id, alarm.alarm_id + 1)
        for ev in sorted(events, key=lambda e: e.event_id):
            if ev.event_id < self.next_event_id:
                continue  # held already (events arrive in id order)
            self._append(ev)
            self.next_event_id = ev.event_id + 1
        for alarm in incoming:  # an inactive alarm no kept event refers to stays in the store only
            if not alarm.active and alarm.alarm_id not in self._refs:
                self._alarms.pop(alarm.alarm_id, None)

    def _emit(self, alarm: Alarm, type_: EventType, at: int) -> Event:
        ev = Event(self.next_event_id, alarm.alarm_id, alarm.customer_id, type_, at)
        self.next_event_id += 1
        self._append(ev)
        return ev

    def _append(self, ev: Event) -> None:
        events = self._events.setdefault(ev.customer_id, deque())
        events.append(ev)
        self._refs[ev.alarm_id] = self._refs.get(ev.alarm_id, 0) + 1
        while len(events) > self.max_events_per_customer:
            old = events.popleft()
            self._evicted_upto[old.customer_id] = old.event_id
            self._unref(old.alarm_id)

    def _unref(self, alarm_id: int) -> None:
        n = self._refs.get(alarm_id, 0) - 1
        if n > 0:
            self._refs[alarm_id] = n
            return
        self._refs.pop(alarm_id, None)
        alarm = self._alarms.get(alarm_id)
        if alarm is not None and not alarm.active:
            del self._alarms[alarm_id]

    # -- restart -----------------------------------------------------------

    @classmethod
    def restore(
        cls,
        alarms: Iterable[Alarm],
        events: Iterable[Event],
        *,
        next_alarm_id: int | None = None,
        next_event_id: int | None = None,
        demand_window_s: int = 300,
        max_events_per_customer: int = 1000,
    ) -> AlarmBook:
        """Rebuild a book from stored rows after a restart.

        Pass every active alarm, each customer's most recent events and the
        alarms they refer to (extra rows are trimmed to the same bounds as a
        running book).  The id counters continue after the highest id seen,
        or from the given values if those are higher (ids of deleted rows are
        never reused).  Memory is assumed to hold nothing older than the
        oldest event restored for a customer, so :meth:`covers` sends older
        cursors to the store.  Two active alarms for one (customer, meter,
        rule) is corrupt data: ValueError.
        """
        alarm_list = list(alarms)
        event_list = sorted(events, key=lambda e: e.event_id)
        max_alarm = max((a.alarm_id for a in alarm_list), default=0)
        max_alarm = max(max_alarm, max((e.alarm_id for e in event_list), default=0))
        max_event = max((e.event_id for e in event_list), default=0)
        book = cls(
            next_alarm_id=max(next_alarm_id or 1, max_alarm + 1),
            next_event_id=max(next_event_id or 1, max_event + 1),
            demand_window_s=demand_window_s,
            max_events_per_customer=max_events_per_customer,
        )
        for alarm in alarm_list:
            _check_key(alarm.rule, alarm.meter_id)
            book._alarms[alarm.alarm_id] = alarm
            if alarm.active:
                key: AlarmKey = (alarm.customer_id, alarm.meter_id, alarm.rule)
                if key in book._active:
                    raise ValueError(
                        f"two active alarms for {key}: "
                        f"{book._active[key]} and {alarm.alarm_id}"
                    )
                book._active[key] = alarm.alarm_id
                book._active_by_customer.setdefault(alarm.customer_id, set()).add(
                    alarm.alarm_id
                )
        seen: set[int] = set()
        for ev in event_list:
            if ev.event_id in seen:
                continue
            seen.add(ev.event_id)
            if ev.customer_id not in book._events:
                book._evicted_upto[ev.customer_id] = ev.event_id - 1
            book._append(ev)
        # alarms neither active nor referred to by a kept event stay in the store
        for alarm_id in [
            a for a, alarm in book._alarms.items() if not alarm.active and a not in book._refs
        ]:
            del book._alarms[alarm_id]
        return book


# --------------------------------------------------------------------------
# changes, settled by the store


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule's decision for one alarm key, as a process saw it.

    The process decides from its cached view of the active alarms; the store
    settles the decision against the alarms it holds (:func:`settle`), so a
    decision made twice, by two processes or from a stale view, stores one
    alarm.
    """

    customer_id: str
    meter_id: int | None
    rule: str
    decision: Decision
    at: int
    value: Number
    threshold: Number
    message: str

    @property
    def key(self) -> AlarmKey:
        return (self.customer_id, self.meter_id, self.rule)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    customer_id: str
    alarm_id: int
    at: int


Change = Transition | Acknowledgement


@dataclass(frozen=True)
class Settled:
    """What one settlement stores: the alarms it changed or acknowledged, its
    events, and the id counters after it."""

    alarms: list[Alarm]
    events: list[Event]
    next_alarm_id: int
    next_event_id: int

    def alarm(self, customer_id: str, alarm_id: int) -> Alarm | None:
        for alarm in self.alarms:
            if alarm.alarm_id == alarm_id and alarm.customer_id == customer_id:
                return alarm
        return None


def settle(stored: Iterable[Alarm], changes: Sequence[Change], next_alarm_id: int, next_event_id: int) -> Settled:
    """Carry out ``changes`` on the stored alarms, in order, with the store's counters.

    ``stored`` must hold every active alarm of the customers the changes
    concern and the alarms they acknowledge. Raising an active alarm and
    clearing an absent one change nothing, so a stale or repeated decision
    is harmless; acknowledging an alarm not given (another customer's, or
    none) is skipped, and the caller finds no alarm for it in the result.
    """
    alarms = list(stored)
    book = AlarmBook.restore(
        [a for a in alarms if a.active],
        [],
        next_alarm_id=next_alarm_id,
        next_event_id=next_event_id,
        max_events_per_customer=len(changes) + 1,
    )
    for alarm in alarms:  # cleared ones, to be acknowledged
        book._alarms.setdefault(alarm.alarm_id, alarm)
    events: list[Event] = []
    touched: dict[int, None] = {}
    for change in changes:
        if isinstance(change, Transition):
            c = change
            events += book.apply(c.customer_id, c.meter_id, c.rule, c.decision, c.at, c.value, c.threshold, message=c.message)
        else:
            try:
                alarm, new = book.ack(change.customer_id, change.alarm_id, change.at)
            except KeyError:
                continue
            touched[alarm.alarm_id] = None
            events += new
    for ev in events:
        touched[ev.alarm_id] = None
    return Settled([book.get(i) for i in touched], events, book.next_alarm_id, book.next_event_id)


def _check_key(rule: str, meter_id: int | None) -> None:
    if rule in PER_METER_RULES:
        if meter_id is None:
            raise ValueError(f"rule {rule!r} is per meter: meter_id is required")
    elif rule in PER_CUSTOMER_RULES:
        if meter_id is not None:
            raise ValueError(f"rule {rule!r} is per customer: meter_id must be None")
    else:
        raise ValueError(f"unknown rule: {rule!r}")
