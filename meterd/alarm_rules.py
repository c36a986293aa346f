"""Alarm rules (DESIGN §7), pure: nothing from Twisted.

The ingest path calls into this module after each committed flush, for the
customers in that flush only; the silent-meter timer calls
:func:`silent_decision`. Nothing here scans stored readings: the demand rule
keeps a small per-meter window in memory (:class:`DemandWindow`), and the
monthly and anomaly rules take totals that the caller reads from its hourly
rollups. What a decision does to the alarms is :mod:`meterd.alarm_book`'s;
how an alarm reads to a person is :mod:`meterd.alarm_text`'s.

Units everywhere: server instants are ``int`` milliseconds since the epoch,
reading times ``int`` microseconds, energy ``int`` Wh. The stored
``value``/``threshold`` of an alarm are, per rule:

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
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from operator import add
from typing import Literal
from zoneinfo import ZoneInfo

from meterd import periods

__all__ = [
    "ANOMALY_FACTOR", "ANOMALY_MIN_DAYS", "BACKFILL_AFTER_MS", "DEMAND_CLEAR_FRACTION", "DEMAND_MIN_SPAN_US",
    "PER_CUSTOMER_RULES", "PER_METER_RULES", "RULES", "Decision", "DemandWindow", "MeterMode", "Number", "Rule",
    "anomaly_baseline_wh", "anomaly_decision", "as_fraction", "demand_decision", "is_backfill",
    "local_month_start_ms", "monthly_decision", "silent_decision",
]

Number = int | float | Decimal | Fraction
MeterMode = Literal["register", "interval"]
Rule = Literal["demand", "monthly", "anomaly", "silent"]

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
# exact arithmetic


def as_fraction(x: Number) -> Fraction:
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
    avg = as_fraction(avg_kw)
    limit = as_fraction(limit_kw)
    if not active:
        return Decision.RAISE if avg > limit else Decision.KEEP
    return Decision.CLEAR if avg < DEMAND_CLEAR_FRACTION * limit else Decision.KEEP


def monthly_decision(month_to_date_wh: int, limit_kwh: Number, active: bool) -> Decision:
    """Raise above ``limite_kwh``; clear at or below it (at month rollover)."""
    over = Fraction(month_to_date_wh) > as_fraction(limit_kwh) * 1000
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
    silent = Fraction(now_ms - last_seen_ms) >= as_fraction(silent_after_s) * 1000
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
    report, and ~18 KB per meter at worst (4,096 would be ~300 KB per meter,
    ~300 MB for a thousand busy meters).
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
