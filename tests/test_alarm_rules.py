"""Tests of the pure alarm rules and lifecycle (DESIGN §7).

Expected numbers are worked out by hand in the comments.  Time for the
silent-meter timer is driven by ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from meterd import alarm_book as ab
from meterd import alarm_rules as ar
from meterd.alarm_book import Alarm, AlarmBook, Event
from meterd.alarm_rules import (
    Decision,
    DemandWindow,
    anomaly_baseline_wh,
    anomaly_decision,
    demand_decision,
    is_backfill,
    local_month_start_ms,
    monthly_decision,
    silent_decision,
)
from meterd.alarm_text import format_br, format_duration, message_for
from tests.support import examples

T = 1_764_000_000_000  # 2025-11-24T16:00:00Z, an arbitrary instant in ms (the server's clock)
S = 1000  # one second in ms
TU = T * 1000  # the same instant as a reading time, in microseconds
SU = 1_000_000  # one second in microseconds


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp()) * 1000


# --------------------------------------------------------------------------
# DemandWindow, register meters


def test_register_window_fully_covered_at_a_sample() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 1000, "register")
    w.add(TU + 60 * SU, 1100, "register")
    w.add(TU + 360 * SU, 1600, "register")
    # window (TU+60 s, TU+360 s]: 1600 - 1100 = 500 Wh in 300 s = 6 kW
    assert w.average_kw() == 6.0


def test_register_window_interpolates_at_the_start() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 200 * SU, 400, "register")
    w.add(TU + 400 * SU, 1000, "register")
    # start = TU+100 s, R(start) = 0 + 400 * 100/200 = 200; 800 Wh in 300 s = 9.6 kW
    assert w.average_kw() == pytest.approx(9.6)


def test_register_window_not_fully_covered_uses_the_span() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 60 * SU, 100, "register")
    # 100 Wh in 60 s = 6 kW
    assert w.average_kw() == 6.0


def test_shorter_window_than_retained() -> None:
    w = DemandWindow(window_us=300 * SU)
    for i in range(0, 301, 60):
        w.add(TU + i * SU, i * 10, "register")  # 10 Wh/s = 36 kW
    w.add(TU + 360 * SU, 3000 + 600, "register")  # last minute: 600 Wh / 60 s = 36 kW
    assert w.average_kw(60 * SU) == pytest.approx(36.0)
    with pytest.raises(ValueError):
        w.average_kw(301 * SU)


def test_span_under_30_seconds_is_none() -> None:
    w = DemandWindow()
    assert w.average_kw() is None
    w.add(TU, 0, "register")
    assert w.average_kw() is None  # one reading
    w.add(TU + 29_999, 10, "register")
    assert w.average_kw() is None
    w.add(TU + 30 * SU, 10, "register")
    # exactly 30 s: 10 Wh in 30 s = 10 * 3_600_000 / 30000 = 1.2 kW
    assert w.average_kw() == pytest.approx(1.2)


def test_window_shorter_than_30_seconds_never_decides() -> None:
    w = DemandWindow(window_us=20 * SU)
    for i in range(10):
        w.add(TU + i * 10 * SU, i * 100, "register")
    assert w.average_kw() is None


def test_out_of_order_readings_give_the_same_average() -> None:
    readings = [(TU + i * 37 * SU, i * i * 11) for i in range(15)]
    ordered = DemandWindow(window_us=300 * SU)
    for ts, wh in readings:
        ordered.add(ts, wh, "register")
    shuffled = DemandWindow(window_us=300 * SU)
    rnd = random.Random(7)
    mixed = readings[:]
    rnd.shuffle(mixed)
    for ts, wh in mixed:
        shuffled.add(ts, wh, "register")
    assert shuffled.average_kw() == ordered.average_kw()
    assert shuffled.samples() == ordered.samples()


def test_memory_keeps_one_sample_before_the_window() -> None:
    w = DemandWindow(window_us=300 * SU)
    for i in range(0, 1201, 10):  # 20 minutes, a reading every 10 s
        w.add(TU + i * SU, i, "register")
    # window start = TU+900 s: samples at 900..1200 (31), none older kept
    # because one sits exactly at the start
    assert [ts for ts, _ in w.samples()][0] == TU + 900 * SU
    assert len(w) == 31
    w.add(TU + 1205 * SU, 1205, "register")
    # start = TU+905 s: keep TU+900 s (just before) and 910..1205
    assert w.samples()[0][0] == TU + 900 * SU
    assert len(w) == 32


def test_reading_older_than_the_window_is_ignored() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 400 * SU, 400, "register")
    before = w.average_kw()
    assert w.add(TU - 10 * SU, 0, "register") is False
    assert w.average_kw() == before
    assert w.samples()[0][0] == TU


def test_late_reading_closer_to_the_start_improves_interpolation() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 400 * SU, 400, "register")
    # start TU+100 s, linear: R = 100, so 300 Wh in 300 s = 3.6 kW
    assert w.average_kw() == pytest.approx(3.6)
    # the real register at TU+100 s was 40: 360 Wh in 300 s = 4.32 kW
    assert w.add(TU + 100 * SU, 40, "register") is True
    assert w.average_kw() == pytest.approx(4.32)
    assert w.samples()[0] == (TU + 100 * SU, 40)  # the older one is gone


def test_duplicate_timestamp_keeps_the_first_value() -> None:
    w = DemandWindow()
    w.add(TU, 0, "register")
    w.add(TU + 60 * SU, 100, "register")
    assert w.add(TU + 60 * SU, 999, "register") is False
    assert w.samples() == [(TU, 0), (TU + 60 * SU, 100)]


def test_mode_change_starts_afresh() -> None:
    w = DemandWindow()
    w.add(TU, 0, "register")
    w.add(TU + 60 * SU, 100_000, "register")
    w.add(TU + 120 * SU, 100, "interval")
    assert w.samples() == [(TU + 120 * SU, 100)]
    assert w.average_kw() is None
    with pytest.raises(ValueError):
        w.add(TU, 1, "cumulative")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# DemandWindow, interval meters


def test_interval_window_sums_readings_after_the_start() -> None:
    w = DemandWindow(window_us=300 * SU)
    for i in range(0, 601, 60):
        w.add(TU + i * SU, 100, "interval")
    # start = TU+300 s (a reading; its energy is before the start)
    # (TU+300, TU+600]: 5 readings × 100 Wh in 300 s = 6 kW
    assert w.average_kw() == 6.0


def test_interval_partial_window_excludes_the_oldest_energy() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 50, "interval")
    w.add(TU + 60 * SU, 100, "interval")
    # the 50 Wh are before TU; 100 Wh in 60 s = 6 kW
    assert w.average_kw() == 6.0


def test_interval_reading_straddling_the_start_is_prorated() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 999, "interval")
    w.add(TU + 3600 * SU, 3600, "interval")  # back after an hour: 3600 Wh in 1 h
    # only 300/3600 of it is in the window: 300 Wh in 300 s = 3.6 kW
    # (not 3600 Wh in 300 s = 43.2 kW)
    assert w.average_kw() == pytest.approx(3.6)


def test_thinning_keeps_register_and_interval_totals() -> None:
    reg = DemandWindow(window_us=300 * SU, max_samples=16)
    itv = DemandWindow(window_us=300 * SU, max_samples=16)
    for i in range(301):  # one reading a second, 2 Wh each = 7.2 kW
        reg.add(TU + i * SU, 2 * i, "register")
        itv.add(TU + i * SU, 2, "interval")
    assert len(reg) <= 16 and len(itv) <= 16
    assert reg.average_kw() == pytest.approx(7.2)
    assert itv.average_kw() == pytest.approx(7.2)


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=90_000), min_size=1, max_size=40),
    steps=st.data(),
    window_s=st.integers(min_value=1, max_value=300),
)
def test_register_demand_is_the_exact_average_correctly_rounded(gaps: list[int], steps: st.DataObject, window_s: int) -> None:
    ts = [TU]
    for g in gaps:
        ts.append(ts[-1] + g)
    wh = [steps.draw(st.integers(min_value=0, max_value=10**6))]
    for _ in gaps:
        wh.append(wh[-1] + steps.draw(st.integers(min_value=0, max_value=10**6)))
    w = DemandWindow(window_us=300 * SU)
    w.add_run(ts, wh, "register")
    lower = max(ts[-1] - window_s * SU, w._ts[0])
    span = ts[-1] - lower
    if span < 30 * SU:
        assert w.average_kw(window_s * SU) is None
        return
    i = next(k for k in range(len(w._ts)) if w._ts[k] >= lower)
    if w._ts[i] == lower:
        at = Fraction(w._wh[i])
    else:
        a = i - 1
        at = w._wh[a] + Fraction((w._wh[i] - w._wh[a]) * (lower - w._ts[a]), w._ts[i] - w._ts[a])
    assert w.average_kw(window_s * SU) == float((w._wh[-1] - at) * 3_600_000 / span)


def _thinned_one_by_one(ts: list[int], wh: list[int], mode: str) -> tuple[list[int], list[int]]:
    """What thinning means, one sample at a time: keep 0, 2, 4, ... and the newest;
    an interval meter's dropped energy goes to the next kept sample."""
    keep_ts, keep_wh, carry = [ts[0]], [wh[0]], 0
    for i in range(1, len(ts) - 1):
        if i % 2:
            carry += wh[i]
            continue
        keep_ts.append(ts[i])
        keep_wh.append(wh[i] + carry if mode == "interval" else wh[i])
        carry = 0
    keep_ts.append(ts[-1])
    keep_wh.append(wh[-1] + carry if mode == "interval" else wh[-1])
    return keep_ts, keep_wh


@given(wh=st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=60), mode=st.sampled_from(["register", "interval"]))
def test_thinning_by_slices_is_thinning_one_by_one(wh: list[int], mode: str) -> None:
    w = DemandWindow(window_us=10**12, max_samples=10**6)
    ts = [TU + i * SU for i in range(len(wh))]
    w.add_run(ts, wh, mode)  # type: ignore[arg-type]
    w._thin()
    assert (w._ts, w._wh) == _thinned_one_by_one(ts, wh, mode)


@settings(max_examples=examples(80), deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=200), min_size=2, max_size=40),
    kw=st.integers(min_value=0, max_value=20),
    seed=st.integers(),
)
def test_constant_power_reads_back_in_any_arrival_order(
    gaps: list[int], kw: int, seed: int
) -> None:
    # constant power of `kw` kW sampled at irregular instants, all multiples
    # of 3.6 s so that every register value and interval energy is a whole
    # number of Wh (3.6 s at 1 kW = 1 Wh); arrival order shuffled
    times = [TU]
    for g in gaps:
        times.append(times[-1] + g * 3_600_000)
    order = list(range(len(times)))
    random.Random(seed).shuffle(order)
    reg = DemandWindow(window_us=300 * SU)
    itv = DemandWindow(window_us=300 * SU)
    for k in order:
        reg.add(times[k], (times[k] - TU) // 3_600_000 * kw, "register")
        prev = times[k - 1] if k else TU - 3_600_000
        itv.add(times[k], (times[k] - prev) // 3_600_000 * kw, "interval")
    span = times[-1] - times[0]
    for w in (reg, itv):
        got = w.average_kw()
        if span < 30 * SU:
            assert got is None
        else:
            assert got == pytest.approx(kw, abs=1e-9)
        assert len(w) <= 300 * SU // 3_600_000 + 2


# --------------------------------------------------------------------------
# demand decisions


def test_demand_exactly_at_the_limit_does_not_raise() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 300 * SU, 500, "register")  # 500 Wh / 300 s = 6 kW
    assert demand_decision(w.average_kw(), 6, active=False) is Decision.KEEP
    w.add(TU + 301 * SU, 502, "register")  # (502 - 500*1/300) / 300 s > 6 kW
    assert demand_decision(w.average_kw(), 6, active=False) is Decision.RAISE


def test_demand_hysteresis() -> None:
    limit = 6
    # active: clears only strictly below 5.4 kW
    assert demand_decision(6.5, limit, active=True) is Decision.KEEP
    assert demand_decision(6.0, limit, active=True) is Decision.KEEP
    assert demand_decision(5.5, limit, active=True) is Decision.KEEP
    assert demand_decision(5.4, limit, active=True) is Decision.KEEP
    assert demand_decision(5.39, limit, active=True) is Decision.CLEAR
    # inactive: the band between 90 % and 100 % raises nothing
    assert demand_decision(5.5, limit, active=False) is Decision.KEEP
    assert demand_decision(1.0, limit, active=False) is Decision.KEEP
    assert demand_decision(6.01, limit, active=False) is Decision.RAISE


def _exact_demand(avg_kw: float, limit: Fraction, active: bool) -> Decision:
    """The rule as documented, in exact decimals: what the float fast path must agree with."""
    avg = Fraction(Decimal(repr(avg_kw)))
    if not active:
        return Decision.RAISE if avg > limit else Decision.KEEP
    return Decision.CLEAR if avg < Fraction(9, 10) * limit else Decision.KEEP


@settings(max_examples=examples(2000), deadline=None)
@given(
    limit_w=st.integers(1, 10**9),
    # relative offsets from the two thresholds: far, near, and a few ulps either side
    offset=st.one_of(st.floats(-0.5, 0.5), st.floats(-1e-8, 1e-8), st.integers(-4, 4).map(lambda k: k * 2.0**-52)),
    clear_side=st.booleans(),
    active=st.booleans(),
    limit_type=st.sampled_from(["fraction", "int_kw", "float"]),
)
def test_property_demand_decision_float_path_agrees_with_exact_decimals(limit_w, offset, clear_side, active, limit_type) -> None:
    limit = Fraction(limit_w, 1000)
    if limit_type == "int_kw":
        limit = Fraction(max(1, limit_w // 1000))
    given_limit: ar.Number = {"fraction": limit, "int_kw": int(limit), "float": float(limit)}[limit_type]
    exact_limit = Fraction(Decimal(repr(given_limit))) if limit_type == "float" else limit
    threshold = float(exact_limit * Fraction(9, 10) if clear_side else exact_limit)
    avg = threshold * (1 + offset)
    assert demand_decision(avg, given_limit, active) is _exact_demand(avg, exact_limit, active)
    # the threshold itself, and its neighbouring floats, however they round
    for edge in (threshold, math.nextafter(threshold, 0), math.nextafter(threshold, math.inf)):
        assert demand_decision(edge, given_limit, active) is _exact_demand(edge, exact_limit, active)


def test_demand_hysteresis_edge_is_exact_for_decimal_limits() -> None:
    # 0.9 * 3 == 2.7000000000000002 in binary floating point; 2.7 kW is
    # exactly 90 % of 3 kW and must not clear
    assert demand_decision(2.7, 3, active=True) is Decision.KEEP
    assert demand_decision(2.7, 3.0, active=True) is Decision.KEEP
    assert demand_decision(2.69, 3, active=True) is Decision.CLEAR
    # 0.1 + 0.2 kW is a float just above 0.3: "at the limit" as a human reads it
    assert demand_decision(0.3, 0.3, active=False) is Decision.KEEP


def test_demand_hysteresis_through_a_window() -> None:
    w = DemandWindow(window_us=300 * SU)
    w.add(TU, 0, "register")
    w.add(TU + 300 * SU, 450, "register")  # 450 Wh / 300 s = 5.4 kW = 90 % of 6
    assert demand_decision(w.average_kw(), 6, active=True) is Decision.KEEP


def test_demand_without_enough_span_decides_nothing() -> None:
    assert demand_decision(None, 6, active=False) is Decision.KEEP
    assert demand_decision(None, 6, active=True) is Decision.KEEP


# --------------------------------------------------------------------------
# monthly


def test_monthly_edges() -> None:
    assert monthly_decision(1_000_000, 1000, active=False) is Decision.KEEP
    assert monthly_decision(1_000_001, 1000, active=False) is Decision.RAISE
    assert monthly_decision(1_000_001, 1000, active=True) is Decision.KEEP
    assert monthly_decision(1_000_000, 1000, active=True) is Decision.CLEAR
    assert monthly_decision(0, 1000, active=True) is Decision.CLEAR
    assert monthly_decision(0, 1000, active=False) is Decision.KEEP
    # a fractional limit, compared exactly: 0.3 kWh = 300 Wh
    assert monthly_decision(300, 0.3, active=False) is Decision.KEEP
    assert monthly_decision(301, 0.3, active=False) is Decision.RAISE


def test_local_month_start_sao_paulo_rollover() -> None:
    tz = ZoneInfo("America/Sao_Paulo")  # UTC-3, no DST since 2019
    late = _ms(2026, 12, 1, 2, 30)  # 2026-11-30T23:30-03:00
    assert local_month_start_ms(late, tz) == _ms(2026, 11, 1, 3, 0)
    assert local_month_start_ms(late, "America/Sao_Paulo") == _ms(2026, 11, 1, 3, 0)
    assert local_month_start_ms(_ms(2026, 12, 1, 3, 0) - 1, tz) == _ms(2026, 11, 1, 3, 0)
    assert local_month_start_ms(_ms(2026, 12, 1, 3, 0), tz) == _ms(2026, 12, 1, 3, 0)
    # in UTC the same instant is already December
    assert local_month_start_ms(late, "UTC") == _ms(2026, 12, 1)


def test_local_month_start_with_dst_offset() -> None:
    # Feb 2018 in Sao Paulo started in DST (-02:00) and ended in -03:00:
    # 2018-03-01T02:30Z is 2018-02-28T23:30-03:00, whose month began at
    # 2018-02-01T00:00-02:00 = 02:00Z
    tz = ZoneInfo("America/Sao_Paulo")
    assert local_month_start_ms(_ms(2018, 3, 1, 2, 30), tz) == _ms(2018, 2, 1, 2, 0)


def test_month_to_date_counts_0230z_on_the_1st_in_the_previous_month() -> None:
    """The caller's month-to-date, built on the helper, across the rollover."""
    tz = ZoneInfo("America/Sao_Paulo")
    # interval readings (ts, Wh) around the local rollover at 03:00Z on Dec 1
    readings = [
        (_ms(2026, 11, 15, 12, 0), 999_000),
        (_ms(2026, 12, 1, 2, 30), 2_000),  # still November locally
        (_ms(2026, 12, 1, 3, 30), 500),  # December
    ]

    def month_to_date(now_ms: int) -> int:
        start = local_month_start_ms(now_ms, tz)
        return sum(wh for ts, wh in readings if start <= ts <= now_ms)

    at_0230 = _ms(2026, 12, 1, 2, 30)
    assert month_to_date(at_0230) == 1_001_000  # counted in November
    assert monthly_decision(month_to_date(at_0230), 1000, active=False) is Decision.RAISE
    at_0330 = _ms(2026, 12, 1, 3, 30)
    assert month_to_date(at_0330) == 500
    # the new local month clears November's alarm
    assert monthly_decision(month_to_date(at_0330), 1000, active=True) is Decision.CLEAR


# --------------------------------------------------------------------------
# anomaly


def test_anomaly_edges() -> None:
    days = [10_000, None, 12_000, 8_000, None, None, None]  # mean 10 kWh
    assert anomaly_baseline_wh(days) == 10_000
    assert anomaly_decision(15_000, days, active=False) is Decision.KEEP
    assert anomaly_decision(15_001, days, active=False) is Decision.RAISE
    assert anomaly_decision(15_001, days, active=True) is Decision.KEEP
    assert anomaly_decision(15_000, days, active=True) is Decision.CLEAR


def test_anomaly_mean_is_exact() -> None:
    days = [1, 1, 2, None, None, None, None]  # mean 4/3 Wh, 1.5 × mean = 2 Wh
    assert anomaly_decision(2, days, active=False) is Decision.KEEP
    assert anomaly_decision(3, days, active=False) is Decision.RAISE


def test_anomaly_zero_days_are_data_none_days_are_not() -> None:
    # three days with data, mean (0 + 0 + 3000) / 3 = 1000 Wh
    days = [0, 0, 3_000, None, None, None, None]
    assert anomaly_decision(1_500, days, active=False) is Decision.KEEP
    assert anomaly_decision(1_501, days, active=False) is Decision.RAISE


def test_anomaly_needs_three_days() -> None:
    two = [10_000, None, 10_000, None, None, None, None]
    assert anomaly_baseline_wh(two) is None
    assert anomaly_decision(1_000_000, two, active=False) is Decision.KEEP
    # nothing left to judge by: an active alarm clears
    assert anomaly_decision(1_000_000, two, active=True) is Decision.CLEAR
    assert anomaly_decision(1_000_000, [None] * 7, active=False) is Decision.KEEP
    assert anomaly_decision(1_000_000, [], active=False) is Decision.KEEP


def test_anomaly_zero_mean_raises_nothing() -> None:
    assert anomaly_decision(5_000, [0, 0, 0, 0, 0, 0, 0], active=False) is Decision.KEEP


# --------------------------------------------------------------------------
# silent, driven by a task.Clock timer


def test_silent_edges() -> None:
    assert silent_decision(T + 900 * S, T, 900, active=False) is Decision.RAISE
    assert silent_decision(T + 900 * S - 1, T, 900, active=False) is Decision.KEEP
    assert silent_decision(T + 5000 * S, T, 900, active=True) is Decision.KEEP
    assert silent_decision(T + 1, T, 900, active=True) is Decision.CLEAR
    assert silent_decision(T + 5000 * S, None, 900, active=False) is Decision.KEEP


def test_silent_timer_with_clock() -> None:
    clock = task.Clock()
    clock.advance(T / 1000)
    book = AlarmBook()
    silent_after = 900
    last_seen = {1: int(clock.seconds() * 1000)}
    emitted: list[Event] = []

    def now_ms() -> int:
        return int(clock.seconds() * 1000)

    def check() -> None:
        for meter, seen in last_seen.items():
            active = book.is_active("c", meter, "silent")
            d = silent_decision(now_ms(), seen, silent_after, active)
            elapsed_s = (now_ms() - seen) // 1000
            emitted.extend(book.apply("c", meter, "silent", d, now_ms(), elapsed_s, silent_after))

    loop = task.LoopingCall(check)
    loop.clock = clock
    loop.start(silent_after / 2, now=False)  # checks at 450 s, 900 s, ...
    clock.advance(450)
    assert emitted == []
    clock.advance(450)  # 900 s of silence
    assert [e.type for e in emitted] == ["raised"]
    alarm = book.get(emitted[0].alarm_id)
    assert alarm.raised_at == T + 900 * S
    assert alarm.message == "Medidor 1 sem leituras há 15 min"
    clock.advance(450)
    assert len(emitted) == 1  # still silent: idempotent
    clock.advance(100)
    last_seen[1] = now_ms()  # a reading arrives at 1450 s
    clock.advance(350)  # the check at 1800 s clears it
    assert [e.type for e in emitted] == ["raised", "cleared"]
    assert book.get(emitted[0].alarm_id).cleared_at == T + 1800 * S
    loop.stop()


def test_backfill() -> None:
    assert is_backfill(TU, T) is False
    assert is_backfill(TU, T + 3_600_000) is False  # exactly an hour late is live
    assert is_backfill(TU, T + 3_600_001) is True
    assert is_backfill(TU - 999, T + 3_600_000) is True  # an hour and 999 microseconds
    assert is_backfill(TU + 60 * SU, T) is False  # from the (near) future


# --------------------------------------------------------------------------
# formatting and messages


def test_format_br() -> None:
    assert format_br(1020) == "1.020"
    assert format_br(1000.0) == "1.000"
    assert format_br(5.2) == "5,2"
    assert format_br(1234567.891) == "1.234.567,891"
    assert format_br(2.25, 1) == "2,3"  # half up, not half even
    assert format_br(0.049, 1) == "0"
    assert format_br(999.9996) == "1.000"
    assert format_br(-1234.5) == "-1.234,5"


def test_format_duration() -> None:
    assert format_duration(45) == "45 s"
    assert format_duration(90) == "90 s"
    assert format_duration(300) == "5 min"
    assert format_duration(930) == "15 min"
    assert format_duration(3600) == "1 h"
    assert format_duration(5400) == "1 h 30 min"
    assert format_duration(86_400) == "1 dia"
    assert format_duration(3 * 86_400 + 5) == "3 dias"


def test_messages() -> None:
    assert (
        message_for("demand", 1, 5.2, 2, 300)
        == "Demanda média de 5,2 kW acima do limite de 2 kW nos últimos 5 min"
    )
    assert (
        message_for("monthly", None, 1020, 1000)
        == "Consumo do mês de 1.020 kWh acima do limite de 1.000 kWh"
    )
    # mean 100 kWh (threshold 150), 180 kWh = 80 % above the mean
    assert (
        message_for("anomaly", None, 180, 150)
        == "Consumo das últimas 24 h 80 % acima da média diária"
    )
    assert message_for("silent", 2, 900, 900) == "Medidor 2 sem leituras há 15 min"
    with pytest.raises(ValueError):
        message_for("flood", None, 1, 1)


def test_message_value_reads_above_its_limit() -> None:
    assert message_for("demand", 1, 5.004, 5).startswith("Demanda média de 5,004 kW")
    assert message_for("monthly", None, 1000.2, 1000).startswith("Consumo do mês de 1.000,2 kWh")


# --------------------------------------------------------------------------
# AlarmBook


def test_raise_is_idempotent_and_clear_is_automatic() -> None:
    book = AlarmBook()
    evs = book.apply("c1", 1, "demand", Decision.RAISE, T, 6.5, 6)
    assert len(evs) == 1
    ev = evs[0]
    assert (ev.event_id, ev.alarm_id, ev.customer_id, ev.type, ev.at) == (1, 1, "c1", "raised", T)
    alarm = book.get(1)
    assert alarm.rule == "demand" and alarm.meter_id == 1
    assert (alarm.value, alarm.threshold) == (6.5, 6.0)
    assert alarm.cleared_at is None and alarm.acked_at is None
    assert alarm.message == "Demanda média de 6,5 kW acima do limite de 6 kW nos últimos 5 min"
    assert book.apply("c1", 1, "demand", Decision.RAISE, T + S, 7.0, 6) == []
    assert book.get(1).value == 6.5  # the raise-time value stays
    assert book.apply("c1", 1, "demand", Decision.KEEP, T + S, 7.0, 6) == []
    assert [a.alarm_id for a in book.active("c1")] == [1]
    assert book.is_active("c1", 1, "demand")

    evs = book.apply("c1", 1, "demand", Decision.CLEAR, T + 60 * S, 5.0, 6)
    assert [(e.event_id, e.type, e.at) for e in evs] == [(2, "cleared", T + 60 * S)]
    assert book.get(1).cleared_at == T + 60 * S
    assert book.active("c1") == []
    assert book.apply("c1", 1, "demand", Decision.CLEAR, T + 61 * S, 5.0, 6) == []

    # a new episode is a new alarm
    evs = book.apply("c1", 1, "demand", Decision.RAISE, T + 120 * S, 6.6, 6)
    assert evs[0].alarm_id == 2 and evs[0].event_id == 3


def test_one_active_alarm_per_customer_meter_rule() -> None:
    book = AlarmBook()
    book.apply("c1", 1, "demand", Decision.RAISE, T, 7, 6)
    book.apply("c1", 2, "demand", Decision.RAISE, T, 7, 6)
    book.apply("c1", 1, "silent", Decision.RAISE, T, 900, 900)
    book.apply("c1", None, "monthly", Decision.RAISE, T, 1001, 1000)
    book.apply("c2", 1, "demand", Decision.RAISE, T, 7, 6)
    assert [(a.meter_id, a.rule) for a in book.active("c1")] == [
        (1, "demand"),
        (2, "demand"),
        (1, "silent"),
        (None, "monthly"),
    ]
    assert len(book.active("c2")) == 1
    assert book.active("nobody") == []
    assert book.active_alarm("c1", 2, "demand") is not None
    assert book.active_alarm("c1", 3, "demand") is None


def test_every_active_alarm_and_the_ended_ones_memory_holds() -> None:
    book = AlarmBook()
    book.apply("c2", 1, "demand", Decision.RAISE, T, 7, 6)
    book.apply("c1", 1, "silent", Decision.RAISE, T, 900, 900)
    book.apply("c1", None, "monthly", Decision.RAISE, T, 1001, 1000)
    book.apply("c1", 1, "silent", Decision.CLEAR, T + S, 0, 900)
    assert [(a.customer_id, a.rule) for a in book.every_active()] == [("c2", "demand"), ("c1", "monthly")]  # oldest first
    # The portal's past alarms: the customer's own, by id, newest first; another's never.
    assert [(a.alarm_id, a.active) for a in book.known("c1", [2, 3, 1, 99])] == [(3, True), (2, False)]
    assert book.known("c2", [2, 3]) == []


def test_rule_and_meter_are_checked() -> None:
    book = AlarmBook()
    with pytest.raises(ValueError):
        book.apply("c", None, "demand", Decision.RAISE, T, 1, 1)
    with pytest.raises(ValueError):
        book.apply("c", 1, "monthly", Decision.RAISE, T, 1, 1)
    with pytest.raises(ValueError):
        book.apply("c", 1, "flood", Decision.RAISE, T, 1, 1)
    assert book.next_alarm_id == 1 and book.next_event_id == 1


def test_ids_come_from_the_counters_and_increase_globally() -> None:
    book = AlarmBook(next_alarm_id=41, next_event_id=100)
    a = book.apply("c1", None, "monthly", Decision.RAISE, T, 1001, 1000)
    b = book.apply("c2", None, "monthly", Decision.RAISE, T, 1001, 1000)
    c = book.apply("c1", None, "monthly", Decision.CLEAR, T + 1, 0, 1000)
    _, d = book.ack("c2", b[0].alarm_id, T + 2)
    assert [e.event_id for e in a + b + c + d] == [100, 101, 102, 103]
    assert [a[0].alarm_id, b[0].alarm_id] == [41, 42]
    assert book.last_event_id == 103
    assert book.next_alarm_id == 43 and book.next_event_id == 104
    # the cursor is per customer but ids are global
    assert [e.event_id for e in book.events_after("c1", None, 100)] == [100, 102]
    assert [e.event_id for e in book.events_after("c2", None, 100)] == [101, 103]
    assert [e.event_id for e in book.events_after("c1", 100, 100)] == [102]
    assert book.events_after("c1", 102, 100) == []
    assert book.events_after("nobody", None, 100) == []


def test_explicit_message() -> None:
    book = AlarmBook()
    book.apply("c", None, "monthly", Decision.RAISE, T, 1001, 1000, message="outra")
    assert book.get(1).message == "outra"


def test_ack() -> None:
    book = AlarmBook()
    book.apply("c1", 1, "demand", Decision.RAISE, T, 7, 6)
    alarm, evs = book.ack("c1", 1, T + 10 * S)
    assert alarm.acked_at == T + 10 * S and alarm.cleared_at is None
    assert [(e.event_id, e.type, e.alarm_id, e.at) for e in evs] == [(2, "acked", 1, T + 10 * S)]
    assert book.is_active("c1", 1, "demand")  # ack does not clear
    assert book.active("c1")[0].acked_at == T + 10 * S
    again, evs = book.ack("c1", 1, T + 20 * S)
    assert evs == [] and again.acked_at == T + 10 * S
    assert book.next_event_id == 3
    with pytest.raises(KeyError):
        book.ack("c2", 1, T)  # someone else's
    with pytest.raises(KeyError):
        book.ack("c1", 99, T)
    # a cleared alarm can still be acknowledged
    book.apply("c1", 2, "demand", Decision.RAISE, T, 7, 6)
    book.apply("c1", 2, "demand", Decision.CLEAR, T + S, 5, 6)
    alarm, evs = book.ack("c1", 2, T + 2 * S)
    assert alarm.cleared_at == T + S and alarm.acked_at == T + 2 * S
    assert [e.type for e in evs] == ["acked"]


def test_alarm_and_event_are_frozen() -> None:
    book = AlarmBook()
    (ev,) = book.apply("c", 1, "demand", Decision.RAISE, T, 7, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.type = "cleared"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        book.get(1).acked_at = T  # type: ignore[misc]


def test_events_after_pages_without_gaps() -> None:
    book = AlarmBook()
    for i in range(10):
        book.apply("c", 1, "demand", Decision.RAISE, T + i, 7, 6)
        book.apply("c", 1, "demand", Decision.CLEAR, T + i, 5, 6)
    # no cursor: the newest `limit`, oldest first
    assert [e.event_id for e in book.events_after("c", None, 3)] == [18, 19, 20]
    got: list[int] = []
    cursor = 0
    while page := book.events_after("c", cursor, 7):
        got += [e.event_id for e in page]
        cursor = page[-1].event_id
    assert got == list(range(1, 21))
    assert book.events_after("c", None, 0) == []


def test_bounded_history() -> None:
    book = AlarmBook(max_events_per_customer=3)
    book.apply("c", 1, "demand", Decision.RAISE, T, 7, 6)  # alarm 1, ev 1
    book.apply("c", 2, "demand", Decision.RAISE, T, 7, 6)  # alarm 2, ev 2
    book.apply("c", 2, "demand", Decision.CLEAR, T, 5, 6)  # ev 3
    book.apply("c", 3, "demand", Decision.RAISE, T, 7, 6)  # alarm 3, ev 4
    book.apply("c", 3, "demand", Decision.CLEAR, T, 5, 6)  # ev 5
    book.apply("other", 1, "demand", Decision.RAISE, T, 7, 6)  # ev 6
    assert [e.event_id for e in book.events_after("c", None, 100)] == [3, 4, 5]
    # alarm 1 is active though its raise was evicted; alarm 2 is still
    # referred to by event 3; alarm 3 by events 4 and 5
    assert book.get(1).active
    assert book.get(2).cleared_at == T
    book.apply("c", 4, "demand", Decision.RAISE, T, 7, 6)  # ev 7 evicts ev 3
    with pytest.raises(KeyError):
        book.get(2)  # in the store only
    with pytest.raises(KeyError):
        book.ack("c", 2, T)
    assert book.get(3).cleared_at == T
    assert [a.alarm_id for a in book.active("c")] == [1, 5]  # 4 is "other"'s
    # memory cannot answer cursors from before the eviction
    assert book.covers("c", None)
    assert not book.covers("c", 2)
    assert book.covers("c", 3)
    assert book.covers("other", 0)


def _run_and_record(book: AlarmBook, store_alarms: dict[int, Alarm], store_events: list[Event],
                    evs: list[Event]) -> None:
    """What the lead's store does with what the book emits."""
    for e in evs:
        store_events.append(e)
        store_alarms[e.alarm_id] = book.get(e.alarm_id)


def test_restore_continues_where_it_left_off() -> None:
    book = AlarmBook(next_alarm_id=5, next_event_id=50)
    alarms: dict[int, Alarm] = {}
    events: list[Event] = []
    _run_and_record(book, alarms, events, book.apply("c1", 1, "demand", Decision.RAISE, T, 7, 6))
    _run_and_record(book, alarms, events, book.apply("c1", None, "monthly", Decision.RAISE, T, 1001, 1000))
    _run_and_record(book, alarms, events, book.apply("c1", None, "monthly", Decision.CLEAR, T + 1, 0, 1000))
    _run_and_record(book, alarms, events, book.ack("c1", 5, T + 2)[1])
    _run_and_record(book, alarms, events, book.apply("c2", 3, "silent", Decision.RAISE, T, 900, 900))

    restored = AlarmBook.restore(list(alarms.values()), list(reversed(events)))
    assert restored.active("c1") == book.active("c1")
    assert restored.active("c2") == book.active("c2")
    for c in ("c1", "c2"):
        assert restored.events_after(c, None, 100) == book.events_after(c, None, 100)
    assert restored.next_alarm_id == book.next_alarm_id == 8
    assert restored.next_event_id == book.next_event_id == 55
    # raising the same alarm again is still a no-op after the restart
    assert restored.apply("c1", 1, "demand", Decision.RAISE, T + 5, 8, 6) == []
    assert restored.ack("c1", 5, T + 9)[1] == []  # already acked
    evs = restored.apply("c1", 1, "demand", Decision.CLEAR, T + 10, 5, 6)
    assert [(e.event_id, e.alarm_id, e.type) for e in evs] == [(55, 5, "cleared")]
    # counters given by the store win when higher (rows may have been pruned)
    again = AlarmBook.restore(list(alarms.values()), events, next_alarm_id=100, next_event_id=1000)
    assert (again.next_alarm_id, again.next_event_id) == (100, 1000)
    # memory starts at the oldest restored event of each customer
    assert restored.covers("c1", 49) and restored.covers("c1", 50)
    assert restored.covers("nobody", 0)


def test_restore_trims_and_rejects_corrupt_rows() -> None:
    book = AlarmBook()
    alarms: dict[int, Alarm] = {}
    events: list[Event] = []
    for i in range(5):
        _run_and_record(book, alarms, events, book.apply("c", 1, "demand", Decision.RAISE, T + i, 7, 6))
        _run_and_record(book, alarms, events, book.apply("c", 1, "demand", Decision.CLEAR, T + i, 5, 6))
    restored = AlarmBook.restore(alarms.values(), events, max_events_per_customer=4)
    assert [e.event_id for e in restored.events_after("c", None, 100)] == [7, 8, 9, 10]
    with pytest.raises(KeyError):
        restored.get(1)  # cleared and not referred to by a kept event
    assert restored.get(4).cleared_at is not None
    assert not restored.covers("c", 5) and restored.covers("c", 6)

    a = Alarm(1, "c", "demand", 1, T, None, None, 7.0, 6.0, "m")
    b = dataclasses.replace(a, alarm_id=2)
    with pytest.raises(ValueError):
        AlarmBook.restore([a, b], [])


@settings(max_examples=examples(50), deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2"]),
            st.sampled_from([(1, "demand"), (2, "demand"), (1, "silent"), (None, "monthly")]),
            st.sampled_from(["raise", "clear", "ack"]),
        ),
        max_size=60,
    )
)
def test_book_against_a_model(ops: list[tuple[str, tuple[int | None, str], str]]) -> None:
    book = AlarmBook(max_events_per_customer=1000)
    active: dict[tuple[str, int | None, str], int] = {}
    last_id = 0
    now = T
    for customer, (meter, rule), op in ops:
        now += 1
        key = (customer, meter, rule)
        if op == "ack":
            if key not in active:
                continue
            _, evs = book.ack(customer, active[key], now)
        else:
            d = Decision.RAISE if op == "raise" else Decision.CLEAR
            evs = book.apply(customer, meter, rule, d, now, 1, 1)
            if op == "raise" and key not in active:
                assert [e.type for e in evs] == ["raised"]
                active[key] = evs[0].alarm_id
            elif op == "clear" and key in active:
                assert [(e.type, e.alarm_id) for e in evs] == [("cleared", active.pop(key))]
            else:
                assert evs == []
        for e in evs:
            assert e.event_id > last_id and e.customer_id == customer and e.at == now
            last_id = e.event_id
    for customer in ("c1", "c2"):
        assert sorted(a.alarm_id for a in book.active(customer)) == sorted(
            v for k, v in active.items() if k[0] == customer
        )


# -- settlement against the stored alarms, and the book absorbing it ---------


def _raise(customer: str, meter: int | None, rule: str, at: int, value: int = 5, threshold: int = 2) -> ab.Transition:
    return ab.Transition(customer, meter, rule, Decision.RAISE, at, value, threshold, f"{rule} at {at}")


def _clear(customer: str, meter: int | None, rule: str, at: int) -> ab.Transition:
    return ab.Transition(customer, meter, rule, Decision.CLEAR, at, 0, 0, "")


def test_a_raise_decided_twice_stores_one_alarm_with_the_stores_ids() -> None:
    settled = ab.settle([], [_raise("c", 1, "demand", 1_000), _raise("c", 1, "demand", 1_500)], 7, 40)
    [alarm] = settled.alarms
    [event] = settled.events
    assert (alarm.alarm_id, alarm.raised_at, alarm.message, event.event_id, event.type) == (7, 1_000, "demand at 1000", 40, "raised")
    assert (settled.next_alarm_id, settled.next_event_id) == (8, 41)


def test_settling_against_an_alarm_another_process_raised() -> None:
    theirs = ab.settle([], [_raise("c", 1, "silent", 1_000)], 1, 1).alarms[0]
    # our stale view said "not active": the raise is a no-op, nothing is stored, no id is used
    again = ab.settle([theirs], [_raise("c", 1, "silent", 2_000)], 2, 2)
    assert (again.alarms, again.events, again.next_alarm_id, again.next_event_id) == ([], [], 2, 2)
    # a clear ends their alarm, whatever id our book had in mind
    cleared = ab.settle([theirs], [_clear("c", 1, "silent", 3_000)], 2, 2)
    assert [(a.alarm_id, a.cleared_at) for a in cleared.alarms] == [(theirs.alarm_id, 3_000)]
    assert [(e.event_id, e.alarm_id, e.type) for e in cleared.events] == [(2, theirs.alarm_id, "cleared")]
    # clearing what is not active changes nothing
    assert ab.settle([], [_clear("c", 1, "silent", 3_000)], 2, 2).events == []


def test_settled_acknowledgements() -> None:
    first = ab.settle([], [_raise("c", None, "monthly", 1_000), _clear("c", None, "monthly", 2_000)], 1, 1)
    [old] = first.alarms
    assert (old.raised_at, old.cleared_at, [e.type for e in first.events]) == (1_000, 2_000, ["raised", "cleared"])
    acked = ab.settle([old], [ab.Acknowledgement("c", old.alarm_id, 3_000), ab.Acknowledgement("c", old.alarm_id, 4_000)], 2, 3)
    assert acked.alarm("c", old.alarm_id).acked_at == 3_000  # type: ignore[union-attr]
    assert [(e.event_id, e.type, e.at) for e in acked.events] == [(3, "acked", 3_000)]
    foreign = ab.settle([old], [ab.Acknowledgement("other", old.alarm_id, 3_000)], 2, 3)
    assert (foreign.alarm("other", old.alarm_id), foreign.alarm("c", old.alarm_id), foreign.events) == (None, None, [])
    assert ab.settle([], [ab.Acknowledgement("c", 99, 3_000)], 2, 3).alarm("c", 99) is None


def test_the_book_absorbs_what_was_settled() -> None:
    book = AlarmBook()
    first = ab.settle([], [_raise("c", 1, "demand", 1_000), _raise("c", None, "monthly", 1_000)], 5, 10)
    book.absorb(first.alarms, first.events)
    book.absorb(first.alarms, first.events)  # twice: nothing more
    assert [a.alarm_id for a in book.active("c")] == [5, 6]
    assert [e.event_id for e in book.events_after("c", None, 10)] == [10, 11]
    assert (book.last_event_id, book.next_alarm_id) == (11, 7)
    demand = book.active_alarm("c", 1, "demand")
    assert demand is not None
    # another process cleared it and raised a new one for the same key
    later = ab.settle(
        [demand], [_clear("c", 1, "demand", 2_000), _raise("c", 1, "demand", 3_000)], 8, 20
    )
    book.absorb(later.alarms, later.events)
    assert book.active_alarm("c", 1, "demand").alarm_id == 8  # type: ignore[union-attr]
    assert [a.alarm_id for a in book.active("c")] == [6, 8]
    assert [(e.event_id, e.type) for e in book.events_after("c", 11, 10)] == [(20, "cleared"), (21, "raised")]
    assert book.get(5).cleared_at == 2_000  # still referred to by its events
    # a cleared alarm absorbed with no event that refers to it is not held
    stray = dataclasses.replace(demand, alarm_id=3, cleared_at=500)
    book.absorb([stray], [])
    with pytest.raises(KeyError):
        book.get(3)


# -- a flush's readings of one meter at once ---------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(
    before=st.lists(st.integers(0, 900), max_size=12, unique=True),
    run=st.lists(st.integers(0, 1200), min_size=1, max_size=12, unique=True),
    sort_run=st.booleans(),
    mode=st.sampled_from(["register", "interval"]),
    run_mode=st.sampled_from(["register", "interval"]),
)
def test_add_run_keeps_what_adding_one_by_one_keeps(
    before: list[int], run: list[int], sort_run: bool, mode: str, run_mode: str
) -> None:
    """Without thinning, a run (in order or not, newer or not, another mode) leaves the
    same samples as adding its readings one at a time."""
    one, many = DemandWindow(window_us=300 * SU, max_samples=10_000), DemandWindow(window_us=300 * SU, max_samples=10_000)
    for t in sorted(before):
        one.add(t * SU, t * 7, mode)  # type: ignore[arg-type]
        many.add(t * SU, t * 7, mode)  # type: ignore[arg-type]
    if sort_run:
        run = sorted(run)
    for t in run:
        one.add(t * SU, t * 7 + 1, run_mode)  # type: ignore[arg-type]
    many.add_run([t * SU for t in run], [t * 7 + 1 for t in run], run_mode)  # type: ignore[arg-type]
    assert many.samples() == one.samples()
    assert many.average_kw() == one.average_kw()


def test_add_run_thins_to_the_bound_and_keeps_the_newest_reading() -> None:
    w = DemandWindow(window_us=300 * SU, max_samples=16)
    w.add(0, 0, "interval")
    w.add_run([i * SU for i in range(1, 101)], [10] * 100, "interval")
    assert len(w) <= 16
    assert w.samples()[-1][0] == 100 * SU
    assert sum(wh for _, wh in w.samples()[1:]) == 1000  # thinning folds energy, never drops it
