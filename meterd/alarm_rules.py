"""Alarm rules and the alarm lifecycle (DESIGN §7), pure: nothing from Twisted.

The ingest path calls into this module after each committed flush, for the
customers in that flush only; the silent-meter timer calls
:func:`silent_decision`.  Nothing here scans stored readings: the demand rule
keeps a small per-meter window in memory (:class:`DemandWindow`), and the
monthly and anomaly rules take totals that the caller reads from its hourly
rollups.  :class:`AlarmBook` turns decisions into alarms and events and keeps
the ids; the caller persists what it emits, because only the store holds the
full history.

Units everywhere: instants are ``int`` milliseconds since the epoch, energy is
``int`` Wh.  The stored ``value``/``threshold`` of an alarm are, per rule:

* ``demand``  -- average kW over the window / the customer's ``limite_kw``;
* ``monthly`` -- month-to-date kWh / ``limite_kwh``;
* ``anomaly`` -- kWh of the last 24 h / 1.5 × the mean daily kWh (the level
  above which it raises);
* ``silent``  -- seconds since the meter was last heard / ``--silent-after``.

Thresholds are compared exactly (``fractions.Fraction``): a float is taken at
its shortest decimal spelling (``0.1`` means one tenth), so that "exactly at
the limit" and "exactly at 90 % of it" behave as an operator reading the
numbers would expect, not as binary rounding happens to fall.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from operator import add
from typing import Literal, Union
from zoneinfo import ZoneInfo

from meterd import periods

__all__ = [
    "ANOMALY_FACTOR",
    "ANOMALY_MIN_DAYS",
    "BACKFILL_AFTER_MS",
    "DEMAND_CLEAR_FRACTION",
    "DEMAND_MIN_SPAN_US",
    "PER_CUSTOMER_RULES",
    "PER_METER_RULES",
    "RULES",
    "Settled",
    "Transition",
    "Acknowledgement",
    "Alarm",
    "AlarmBook",
    "Change",
    "Decision",
    "DemandWindow",
    "Event",
    "MeterMode",
    "Rule",
    "anomaly_baseline_wh",
    "anomaly_decision",
    "demand_decision",
    "format_br",
    "format_duration",
    "is_backfill",
    "local_month_start_ms",
    "message_for",
    "monthly_decision",
    "settle",
    "silent_decision",
]

Number = Union[int, float, Decimal, Fraction]
MeterMode = Literal["register", "interval"]
Rule = Literal["demand", "monthly", "anomaly", "silent"]
EventType = Literal["raised", "cleared", "acked"]

RULES: tuple[str, ...] = ("demand", "monthly", "anomaly", "silent")
#: Rules evaluated per meter; the others are per customer (``meter_id`` None).
PER_METER_RULES: frozenset[str] = frozenset({"demand", "silent"})
PER_CUSTOMER_RULES: frozenset[str] = frozenset({"monthly", "anomaly"})

#: The demand rule needs readings spanning at least this long: two readings a
#: second apart say nothing about a 5-minute average.
DEMAND_MIN_SPAN_US = 30_000_000
#: A raised demand alarm clears only below this fraction of the limit, so a
#: load hovering at the limit does not flap.
DEMAND_CLEAR_FRACTION = Fraction(9, 10)
_CLEAR_FRACTION_F = float(DEMAND_CLEAR_FRACTION)
_FLOAT_MARGIN = 1e-9
_FLOAT_EXACT_ENOUGH = (int, float, Fraction)  # converted to float within half an ulp
ANOMALY_FACTOR = Fraction(3, 2)
ANOMALY_MIN_DAYS = 3
#: Readings received later than this after their timestamp are backfill.
BACKFILL_AFTER_MS = 3_600_000


# --------------------------------------------------------------------------
# exact arithmetic and Brazilian formatting


def _exact(x: Number) -> Fraction:
    """A number as an exact fraction, floats at their shortest decimal spelling."""
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number here")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int):
        return Fraction(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"not a finite number: {x!r}")
        return Fraction(Decimal(repr(x)))
    if isinstance(x, Decimal):
        if not x.is_finite():
            raise ValueError(f"not a finite number: {x!r}")
        return Fraction(x)
    raise TypeError(f"not a number: {x!r}")


def _decimal(x: Number) -> Decimal:
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    if isinstance(x, int):
        return Decimal(x)
    f = _exact(x)
    return Decimal(f.numerator) / Decimal(f.denominator)


def format_br(x: Number, max_decimals: int = 3) -> str:
    """Format like a Brazilian bill: ``1.020,5`` (no trailing zeros, half up)."""
    q = Decimal(1).scaleb(-max_decimals)
    d = _decimal(x).quantize(q, rounding=ROUND_HALF_UP)
    text = format(abs(d), "f")
    int_part, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    groups = []
    while len(int_part) > 3:
        groups.append(int_part[-3:])
        int_part = int_part[:-3]
    groups.append(int_part)
    out = ".".join(reversed(groups))
    if frac:
        out += "," + frac
    if d < 0 and out.strip("0.,"):
        out = "-" + out
    return out


def _format_above(value: Number, threshold: Number, decimals: int) -> str:
    """Format a value that is above ``threshold`` so that it *reads* above it.

    5.004 kW over a 5 kW limit would print as "5 kW acima do limite de 5 kW";
    one more decimal at a time (up to 3) avoids that.
    """
    t_text = format_br(threshold, 3)
    text = format_br(value, decimals)
    while decimals < 3 and text == t_text:
        decimals += 1
        text = format_br(value, decimals)
    return text


def format_duration(seconds: Number) -> str:
    """A duration in Portuguese, coarse enough for a message (floors)."""
    s = int(_exact(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        if s % 60 and s < 120:
            return f"{s} s"
        return f"{s // 60} min"
    if s < 86_400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    days = s // 86_400
    return "1 dia" if days == 1 else f"{days} dias"


def message_for(
    rule: str,
    meter_id: int | None,
    value: Number,
    threshold: Number,
    demand_window_s: int = 300,
) -> str:
    """The Portuguese message of an alarm, from its value and threshold."""
    if rule == "demand":
        return (
            f"Demanda média de {_format_above(value, threshold, 1)} kW acima do "
            f"limite de {format_br(threshold, 3)} kW nos últimos "
            f"{format_duration(demand_window_s)}"
        )
    if rule == "monthly":
        return (
            f"Consumo do mês de {_format_above(value, threshold, 0)} kWh acima do "
            f"limite de {format_br(threshold, 3)} kWh"
        )
    if rule == "anomaly":
        mean = _exact(threshold) / ANOMALY_FACTOR
        if mean > 0:
            pct = (_exact(value) / mean - 1) * 100
            return (
                f"Consumo das últimas 24 h {format_br(pct, 0)} % acima da "
                f"média diária"
            )
        return "Consumo das últimas 24 h acima da média diária"
    if rule == "silent":
        return f"Medidor {meter_id} sem leituras há {format_duration(value)}"
    raise ValueError(f"unknown rule: {rule!r}")


# --------------------------------------------------------------------------
# time


def local_month_start_ms(ms: int, tz: str | ZoneInfo) -> int:
    """First instant of the calendar month, in ``tz``, that holds instant ``ms``.

    Month-to-date for the monthly rule starts here, so a reading at 02:30Z on
    the 1st still counts in the previous month in America/Sao_Paulo (UTC−3).
    The calendar itself (DST gaps at midnight included) is :mod:`meterd.periods`'.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return periods.month_range(*periods.month_of(ms, zone), zone)[0]


def is_backfill(reading_ts_us: int, received_ms: int) -> bool:
    """Whether a reading is history being filled in, which raises nothing.

    Exactly one hour late is still live; later than that is backfill.
    """
    return received_ms * 1000 - reading_ts_us > BACKFILL_AFTER_MS * 1000


# --------------------------------------------------------------------------
# decisions


class Decision(enum.Enum):
    """What a rule wants done to its alarm: a transition, or nothing."""

    RAISE = "raise"
    CLEAR = "clear"
    KEEP = "keep"


def _transition(condition: bool, active: bool) -> Decision:
    if condition and not active:
        return Decision.RAISE
    if not condition and active:
        return Decision.CLEAR
    return Decision.KEEP


def demand_decision(avg_kw: Number | None, limit_kw: Number, active: bool) -> Decision:
    """Raise above the limit; once raised, clear only below 90 % of it.

    ``None`` (readings spanning under 30 s) decides nothing either way.
    Exactly at the limit does not raise; exactly at 90 % does not clear.
    """
    if avg_kw is None:
        return Decision.KEEP
    if avg_kw.__class__ is float and limit_kw.__class__ in _FLOAT_EXACT_ENOUGH and math.isfinite(avg_kw):
        # Every sending meter, every flush: far from the threshold floats decide.
        # Each float here is within ~1e-16 of the exact value, so outside the
        # margin the exact comparison below cannot decide otherwise.
        limit_f = float(limit_kw)
        if limit_f > 0:
            if not active and avg_kw < limit_f * (1 - _FLOAT_MARGIN):
                return Decision.KEEP
            if active and avg_kw > _CLEAR_FRACTION_F * limit_f * (1 + _FLOAT_MARGIN):
                return Decision.KEEP
    avg = _exact(avg_kw)
    limit = _exact(limit_kw)
    if not active:
        return Decision.RAISE if avg > limit else Decision.KEEP
    return Decision.CLEAR if avg < DEMAND_CLEAR_FRACTION * limit else Decision.KEEP


def monthly_decision(month_to_date_wh: int, limit_kwh: Number, active: bool) -> Decision:
    """Raise above ``limite_kwh``; clear at or below it (at month rollover)."""
    over = Fraction(month_to_date_wh) > _exact(limit_kwh) * 1000
    return _transition(over, active)


def anomaly_baseline_wh(daily_wh_previous_7: Sequence[int | None]) -> Fraction | None:
    """Mean daily Wh over the days that have data, or None below 3 such days."""
    days = [d for d in daily_wh_previous_7 if d is not None]
    if len(days) < ANOMALY_MIN_DAYS:
        return None
    return Fraction(sum(days), len(days))


def anomaly_decision(
    last24h_wh: int, daily_wh_previous_7: Sequence[int | None], active: bool
) -> Decision:
    """Raise when the last 24 h exceed 1.5 × the mean day of the 7 before.

    ``None`` marks a day without data (not a day of zero consumption).  The
    condition includes its preconditions -- at least 3 days with data and a
    positive mean -- so an active alarm clears once they no longer hold
    rather than staying up with nothing left to judge it by.
    """
    mean = anomaly_baseline_wh(daily_wh_previous_7)
    condition = mean is not None and mean > 0 and last24h_wh > ANOMALY_FACTOR * mean
    return _transition(condition, active)


def silent_decision(
    now_ms: int, last_seen_ms: int | None, silent_after_s: Number, active: bool
) -> Decision:
    """Raise when nothing was heard for ``silent_after_s`` of the server clock.

    ``last_seen_ms`` is when the server last *received* a reading from the
    meter (not the reading's own timestamp).  Clearing is the same test: a
    reading arrived, so the silence is shorter than the limit again.  A meter
    never heard from (``None``) decides nothing; callers that want new meters
    watched pass the registration time instead.
    """
    if last_seen_ms is None:
        return Decision.KEEP
    silent = Fraction(now_ms - last_seen_ms) >= _exact(silent_after_s) * 1000
    return _transition(silent, active)


# --------------------------------------------------------------------------
# demand window


class DemandWindow:
    """Recent readings of one meter, enough for the trailing-average demand.

    Memory is bounded by the window: readings inside it plus the one just
    before its start (to interpolate the register at the start).  At most
    ``max_samples`` are kept; past that, every other inner sample is folded
    away (dropped for a register, its energy merged into the next reading
    for an interval meter), which costs resolution, never energy.  256 is a
    sample every 1.2 s over the default five minutes, finer than meters
    report, and ~18 KB per meter at worst: at 4,096 a thousand meters sending
    60 readings/s held ~300 MB of windows.
    """

    def __init__(self, window_us: int = 300_000_000, max_samples: int = 256) -> None:
        if window_us <= 0:
            raise ValueError("window_us must be positive")
        if max_samples < 4:
            raise ValueError("max_samples must be at least 4")
        self.window_us = window_us
        self.max_samples = max_samples
        self.mode: str | None = None
        self._ts: list[int] = []
        self._wh: list[int] = []

    def __len__(self) -> int:
        return len(self._ts)

    @property
    def newest_us(self) -> int | None:
        return self._ts[-1] if self._ts else None

    def samples(self) -> list[tuple[int, int]]:
        """The retained (ts_us, wh) pairs, oldest first (for tests and debugging)."""
        return list(zip(self._ts, self._wh))

    def add(self, ts_us: int, wh: int, mode: MeterMode) -> bool:
        """Insert a committed reading in timestamp order; False if not kept.

        A reading older than what the window still needs, or at a timestamp
        already held (the store keeps the first value), is ignored.  A change
        of mode makes the old readings meaningless, so it starts afresh.
        """
        if mode not in ("register", "interval"):
            raise ValueError(f"unknown meter mode: {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self._ts.clear()
            self._wh.clear()
        ts = self._ts
        if not ts or ts_us > ts[-1]:  # the common case: the newest reading, appended
            ts.append(ts_us)
            self._wh.append(wh)
            self._prune()
            if len(ts) > self.max_samples:
                self._thin()
            return True
        start = ts[-1] - self.window_us
        if ts_us < ts[0] and ts[0] <= start:
            return False
        i = bisect.bisect_left(ts, ts_us)
        if i < len(ts) and ts[i] == ts_us:
            return False
        ts.insert(i, ts_us)
        self._wh.insert(i, wh)
        self._prune()
        if len(self._ts) > self.max_samples:
            self._thin()
        j = bisect.bisect_left(self._ts, ts_us)
        return j < len(self._ts) and self._ts[j] == ts_us

    def add_run(self, ts_us: Sequence[int], wh: Sequence[int], mode: MeterMode) -> None:
        """Add one meter's committed readings of a flush, oldest first.

        The common case, every reading newer than what the window holds and in
        order, appends them all and prunes and thins once, not once per
        reading (this runs for every reading under full ingest); anything else
        goes through :meth:`add` one by one.
        """
        ts = self._ts
        if (
            mode == self.mode
            and ts
            and ts_us[0] > ts[-1]
            and all(a < b for a, b in zip(ts_us, ts_us[1:]))
        ):
            ts.extend(ts_us)
            self._wh.extend(wh)
            self._prune()
            while len(self._ts) > self.max_samples:
                self._thin()
            return
        for t, w in zip(ts_us, wh):
            self.add(t, w, mode)

    def _prune(self) -> None:
        start = self._ts[-1] - self.window_us
        # keep the last sample at or before the start, drop everything older
        i = bisect.bisect_right(self._ts, start) - 1
        if i > 0:
            del self._ts[:i]
            del self._wh[:i]

    def _thin(self) -> None:
        """Halve the samples: keep the first, every second one after it, and the newest.

        A register keeps its values; an interval meter's dropped samples add
        their energy to the kept sample after them, so totals do not change.
        Slices instead of a loop: under full ingest every sending meter thins
        every few flushes.
        """
        ts, wh = self._ts, self._wh
        last = len(ts) - 1
        kept_ts = ts[0:last:2]
        kept_ts.append(ts[last])
        if self.mode == "interval":
            # kept sample i (even, 0 < i < last) takes wh[i - 1]; the newest takes wh[last - 1] when that was dropped
            kept_wh = [wh[0], *map(add, wh[2:last:2], wh[1 : last - 1 : 2]), wh[last] + (wh[last - 1] if last % 2 == 0 and last else 0)]
        else:
            kept_wh = wh[0:last:2]
            kept_wh.append(wh[last])
        self._ts, self._wh = kept_ts, kept_wh

    def average_kw(self, window_us: int | None = None) -> float | None:
        """Average kW over the window ending at the newest reading.

        When the readings do not reach back to the window start, the average
        is over what they do span (newest − oldest).  None when that span is
        under 30 s.  For an interval meter the reading that straddles the
        window start counts only for the part of its interval inside the
        window (its energy assumed uniform since the previous reading), as the
        register interpolation does: a meter back after an hour's gap does
        not report the hour's energy as five minutes of demand.
        """
        w = self.window_us if window_us is None else window_us
        if w <= 0 or w > self.window_us:
            raise ValueError(f"window_us must be in (0, {self.window_us}]")
        ts, wh = self._ts, self._wh
        if len(ts) < 2:
            return None
        newest = ts[-1]
        start = newest - w
        lower = start if ts[0] <= start else ts[0]
        span = newest - lower
        if span < DEMAND_MIN_SPAN_US:
            return None
        # kW = Wh * 3_600_000_000 us/h / us / 1000 W/kW = Wh * 3_600_000 / us
        if self.mode == "register":
            # The register at `lower`, interpolated, is num / den Wh. Integers, not
            # Fractions: int / int is the correctly rounded float of the exact
            # quotient, as float(Fraction) is, at a fraction of the cost (this
            # runs for every sending meter on every flush).
            i = bisect.bisect_left(ts, lower)
            if ts[i] == lower:
                num, den = wh[i], 1
            else:
                den = ts[i] - ts[i - 1]
                num = wh[i - 1] * den + (wh[i] - wh[i - 1]) * (lower - ts[i - 1])
            return (wh[-1] * den - num) * 3_600_000 / (den * span)
        energy = Fraction(0)
        j = bisect.bisect_right(ts, lower)  # first reading after lower
        for i in range(j, len(ts)):
            if i == j and ts[i - 1] < lower:
                energy += Fraction(wh[i] * (ts[i] - lower), ts[i] - ts[i - 1])
            else:
                energy += wh[i]
        return float(energy * 3_600_000 / span)


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
                value=float(_decimal(value)),
                threshold=float(_decimal(threshold)),
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


Change = Union[Transition, Acknowledgement]


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
