"""Register maths (DESIGN §4, §5): interpolation, estimation, exact totals."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from math import floor
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from meterd.periods import bucket_edges, month_range, period_range
from meterd.readings import us_edges
from meterd.registers import (
    MAX_GAP_US,
    Sample,
    bucket_deltas,
    check_monotonic,
    interval_sums,
    kwh,
    neighbours,
    register_at,
    registers_at,
)
from tests.support import examples

SP = ZoneInfo("America/Sao_Paulo")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp()) * 1000


# --- register_at ----------------------------------------------------------


def test_exact_reading_is_used_as_is() -> None:
    assert register_at(1000, Sample(1000, 42), Sample(10**9, 99)) == (42, False)
    assert register_at(1000, Sample(1000, 42), None) == (42, False)


def test_linear_interpolation() -> None:
    # 1000 Wh over 1000 ms; a quarter of the way is 250 Wh more.
    assert register_at(250, Sample(0, 5000), Sample(1000, 6000)) == (5250, False)


def test_interpolation_rounds_half_up() -> None:
    # The midpoint of 0 and 1 Wh is 0.5 -> 1.
    assert register_at(500, Sample(0, 0), Sample(1000, 1)) == (1, False)
    # 1/3 of 1 Wh -> 0, 2/3 -> 1.
    assert register_at(1, Sample(0, 0), Sample(3, 1)) == (0, False)
    assert register_at(2, Sample(0, 0), Sample(3, 1)) == (1, False)
    # 2.5 -> 3 and 10.5 -> 11 (half-up, not banker's rounding to even).
    assert register_at(1, Sample(0, 0), Sample(2, 5)) == (3, False)
    assert register_at(1, Sample(0, 100), Sample(2, 121)) == (111, False)


def test_gap_exactly_an_hour_is_not_estimated_one_ms_more_is() -> None:
    assert register_at(1, Sample(0, 0), Sample(MAX_GAP_US, 10)) == (0, False)
    assert register_at(1, Sample(0, 0), Sample(MAX_GAP_US + 1, 10)) == (0, True)
    assert MAX_GAP_US == 3_600_000_000  # an hour, in microseconds


def test_hold_outside_the_readings() -> None:
    assert register_at(5000, Sample(1000, 7), None) == (7, False)
    assert register_at(5000, None, Sample(9000, 7)) == (7, False)
    assert register_at(5000, None, None) == (0, False)
    # After the last reading is held even long after: not an estimate.
    assert register_at(10**12, Sample(0, 7), None) == (7, False)


def test_neighbours_on_the_wrong_side_are_rejected() -> None:
    with pytest.raises(ValueError):
        register_at(10, Sample(11, 0), None)
    with pytest.raises(ValueError):
        register_at(10, None, Sample(9, 0))


def test_after_exactly_at_t_is_treated_as_exact() -> None:
    assert register_at(10, Sample(0, 0), Sample(10, 7)) == (7, False)


@given(
    st.integers(0, 10**13),
    st.integers(2, 10 * MAX_GAP_US),
    st.integers(0, 10**9),
    st.integers(0, 10**7),
    st.data(),
)
def test_interpolation_matches_exact_rational(
    t0: int, span: int, wh0: int, dwh: int, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(1, span - 1))
    before, after = Sample(t0, wh0), Sample(t0 + span, wh0 + dwh)
    value, estimated = register_at(t0 + offset, before, after)
    exact = wh0 + Fraction(dwh * offset, span)
    assert value == floor(exact + Fraction(1, 2))
    assert wh0 <= value <= wh0 + dwh
    assert estimated == (span > MAX_GAP_US)


# --- neighbours / registers_at over unsorted input ------------------------

samples_st = st.lists(
    st.tuples(st.integers(0, 10 * MAX_GAP_US), st.integers(0, 10**6)),
    max_size=40,
    unique_by=lambda x: x[0],
).map(lambda xs: sorted(xs))


def monotone(pairs: list[tuple[int, int]]) -> list[Sample]:
    """Readings with increasing ts and a non-decreasing register."""
    total = 0
    out = []
    for ts, inc in pairs:
        total += inc
        out.append(Sample(ts, total))
    return out


def naive_neighbours(samples: list[Sample], t: int) -> tuple[Sample | None, Sample | None]:
    ordered = sorted(samples)
    before = [s for s in ordered if s.ts <= t]
    after = [s for s in ordered if s.ts > t]
    return (before[-1] if before else None, after[0] if after else None)


@given(samples_st, st.lists(st.integers(-MAX_GAP_US, 11 * MAX_GAP_US), max_size=20), st.randoms())
def test_unsorted_input_gives_the_same_values(
    pairs: list[tuple[int, int]], ts: list[int], rnd: random.Random
) -> None:
    readings = monotone(pairs)
    shuffled = readings[:]
    rnd.shuffle(shuffled)
    for t in ts:
        assert neighbours(shuffled, t) == naive_neighbours(readings, t)
        assert neighbours(iter(shuffled), t) == neighbours(readings, t)
    edges = sorted(set(ts))
    expected = [register_at(t, *naive_neighbours(readings, t)) for t in edges]
    assert registers_at(edges, shuffled) == expected
    assert registers_at(edges, iter(shuffled)) == expected


def test_registers_at_small_example() -> None:
    readings = [Sample(3000, 30), Sample(1000, 10), Sample(2000, 20)]
    assert registers_at([0, 1000, 1500, 2999, 5000], readings) == [
        (10, False),
        (10, False),
        (15, False),
        (30, False),  # 29.99 rounds to 30
        (30, False),
    ]


# --- bucket_deltas --------------------------------------------------------


def test_bucket_deltas() -> None:
    assert bucket_deltas([(10, False), (15, True), (15, False), (40, False)]) == [
        (5, True),
        (0, True),
        (25, False),
    ]
    assert bucket_deltas([(10, False)]) == []
    assert bucket_deltas([]) == []


@settings(max_examples=examples(300))
@given(samples_st, st.lists(st.integers(-MAX_GAP_US, 11 * MAX_GAP_US), min_size=1, max_size=30, unique=True))
def test_bucket_deltas_telescope_exactly(pairs: list[tuple[int, int]], ts: list[int]) -> None:
    readings = monotone(pairs)
    edges = sorted(ts)
    values = registers_at(edges, readings)
    deltas = bucket_deltas(values)
    assert len(deltas) == len(edges) - 1
    assert sum(d for d, _ in deltas) == values[-1][0] - values[0][0]
    assert all(d >= 0 for d, _ in deltas)  # monotone readings, never negative
    # Estimation propagates to both neighbouring buckets.
    for i, (_, est) in enumerate(deltas):
        assert est == (values[i][1] or values[i + 1][1])


month_readings = st.lists(
    st.tuples(
        # From a few days before November 2026 to a few days after, in São Paulo.
        st.integers(utc(2026, 10, 28), utc(2026, 12, 4)),
        st.integers(0, 50_000),
    ),
    max_size=60,
    unique_by=lambda x: x[0],
).map(sorted)


@settings(max_examples=examples(200), deadline=None)
@given(month_readings, st.sampled_from(["America/Sao_Paulo", "America/New_York", "Asia/Kolkata"]))
def test_days_add_up_to_the_month(pairs: list[tuple[int, int]], zone: str) -> None:
    tz = ZoneInfo(zone)
    readings = monotone(pairs)
    start, end = month_range(2026, 11, tz)
    day_edges = bucket_edges("M", start, end, tz)
    days = bucket_deltas(registers_at(day_edges, readings))
    (month_total, _), = bucket_deltas(registers_at([start, end], readings))
    assert sum(d for d, _ in days) == month_total
    # And every day's hours add up to that day.
    for (a, b), (day_total, _) in zip(zip(day_edges, day_edges[1:]), days):
        hours = bucket_deltas(registers_at(bucket_edges("D", a, b, tz), readings))
        assert sum(h for h, _ in hours) == day_total


year_readings = st.lists(
    st.tuples(st.integers(utc(2025, 12, 20), utc(2027, 1, 10)), st.integers(0, 500_000)),
    max_size=60,
    unique_by=lambda x: x[0],
).map(sorted)


@settings(max_examples=examples(100), deadline=None)
@given(year_readings)
def test_months_add_up_to_the_year(pairs: list[tuple[int, int]]) -> None:
    readings = monotone(pairs)
    now = utc(2026, 6, 15)
    start, end = period_range("Y", 0, now, SP)
    month_edges = bucket_edges("Y", start, end, SP)
    months = bucket_deltas(registers_at(month_edges, readings))
    (year_total, _), = bucket_deltas(registers_at([start, end], readings))
    assert sum(m for m, _ in months) == year_total
    # The month computed on its own (as /getFatura does) equals its year bucket.
    for month, (m_total, _) in zip(range(1, 13), months):
        a, b = month_range(2026, month, SP)
        (alone, _), = bucket_deltas(registers_at([a, b], readings))
        assert alone == m_total


def test_lost_readings_lose_resolution_not_energy() -> None:
    # A meter at a steady 1 kW reports every 15 minutes; dropping most
    # readings must not change the day's total.
    day0 = utc(2026, 3, 1, 3)  # local midnight in São Paulo
    quarter = 900_000_000  # 15 minutes in microseconds, the unit of reading times
    full = [Sample(day0 * 1000 - quarter + i * quarter, 250 * i) for i in range(0, 100)]
    sparse = [full[0], full[37], full[-1]]
    edges = us_edges(bucket_edges("D", day0, day0 + 24 * 3_600_000, SP))
    full_hours = bucket_deltas(registers_at(edges, full))
    sparse_hours = bucket_deltas(registers_at(edges, sparse))
    assert sum(h for h, _ in full_hours) == sum(h for h, _ in sparse_hours) == 24_000
    assert all(h == 1000 and not e for h, e in full_hours)
    assert any(e for _, e in sparse_hours)


# --- check_monotonic ------------------------------------------------------


def test_check_monotonic() -> None:
    b, a = Sample(1000, 100), Sample(3000, 200)
    assert check_monotonic(100, b, a)
    assert check_monotonic(150, b, a)
    assert check_monotonic(200, b, a)
    assert not check_monotonic(99, b, a)
    assert not check_monotonic(201, b, a)
    assert check_monotonic(10**9, b, None)
    assert not check_monotonic(99, b, None)
    assert check_monotonic(0, None, a)
    assert not check_monotonic(201, None, a)
    assert check_monotonic(5, None, None)


# --- interval_sums --------------------------------------------------------


def test_interval_sums_half_open_buckets() -> None:
    edges = [0, 10, 20, 30]
    samples = [
        Sample(-1, 1000),  # before the range: ignored
        Sample(0, 1),
        Sample(9, 2),
        Sample(10, 4),  # on an edge: belongs to the bucket it starts
        Sample(29, 8),
        Sample(30, 1000),  # the end is exclusive
    ]
    assert interval_sums(edges, samples) == [3, 4, 8]
    assert interval_sums(edges, reversed(samples)) == [3, 4, 8]
    assert interval_sums(edges, []) == [0, 0, 0]
    assert interval_sums([0], samples) == []


@given(
    st.lists(st.integers(-50, 150), min_size=2, max_size=10, unique=True).map(sorted),
    st.lists(st.tuples(st.integers(-100, 200), st.integers(0, 1000)), max_size=50),
)
def test_interval_sums_match_a_naive_count(edges: list[int], raw: list[tuple[int, int]]) -> None:
    samples = [Sample(t, w) for t, w in raw]
    expected = [
        sum(s.wh for s in samples if a <= s.ts < b) for a, b in zip(edges, edges[1:])
    ]
    assert interval_sums(edges, samples) == expected


# --- kwh ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wh", "text"), [(0, "0.0"), (1, "0.001"), (1234567, "1234.567"), (4200, "4.2"), (-5, "-0.005")]
)
def test_kwh_known_values(wh: int, text: str) -> None:
    assert repr(kwh(wh)) == text


@given(st.integers(-(10**15), 10**15))
def test_kwh_is_exact_to_three_decimals(wh: int) -> None:
    # The float's shortest repr is exactly the 3-decimal value.
    assert Decimal(repr(kwh(wh))) == Decimal(wh) / 1000
