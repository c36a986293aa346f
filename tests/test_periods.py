"""Calendar periods in the customer's time zone (DESIGN §5).

Expected instants are written by hand in UTC (with the zone's offset worked out
in the comment), never derived from the code under test.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from meterd.periods import (
    HOUR_MS,
    KINDS,
    bucket_edges,
    day_start,
    iso,
    month_of,
    month_range,
    months_back,
    period_range,
)
from tests.support import examples

SP = ZoneInfo("America/Sao_Paulo")
UTC = ZoneInfo("UTC")
KOLKATA = ZoneInfo("Asia/Kolkata")
NY = ZoneInfo("America/New_York")
DAY_MS = 24 * HOUR_MS


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """ms since the epoch of a UTC wall time."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp()) * 1000


# --- period_range ---------------------------------------------------------


def test_current_month_sao_paulo() -> None:
    now = utc(2026, 11, 15, 12)
    # Brazil has had no DST since 2019: -03:00 all year, midnight = 03:00Z.
    assert period_range("M", 0, now, SP) == (utc(2026, 11, 1, 3), utc(2026, 12, 1, 3))
    assert iso(utc(2026, 11, 1, 3), SP) == "2026-11-01T00:00:00-03:00"


def test_local_date_not_utc_date_decides_the_period() -> None:
    # 2026-01-01 02:30Z is still 2025-12-31 23:30 in São Paulo.
    now = utc(2026, 1, 1, 2, 30)
    assert period_range("D", 0, now, SP) == (utc(2025, 12, 31, 3), utc(2026, 1, 1, 3))
    assert period_range("M", 0, now, SP) == (utc(2025, 12, 1, 3), utc(2026, 1, 1, 3))
    assert period_range("Y", 0, now, SP) == (utc(2025, 1, 1, 3), utc(2026, 1, 1, 3))
    # ...while in UTC it is already the new year.
    assert period_range("Y", 0, now, UTC) == (utc(2026, 1, 1), utc(2027, 1, 1))


def test_month_periodo_crosses_year_ends() -> None:
    now = utc(2026, 1, 10, 12)
    assert period_range("M", 1, now, SP) == (utc(2025, 12, 1, 3), utc(2026, 1, 1, 3))
    assert period_range("M", 12, now, SP) == (utc(2025, 1, 1, 3), utc(2025, 2, 1, 3))
    assert period_range("M", 13, now, SP) == (utc(2024, 12, 1, 3), utc(2025, 1, 1, 3))
    assert period_range("M", 25, now, UTC) == (utc(2023, 12, 1), utc(2024, 1, 1))


def test_day_and_year_periodo_cross_year_ends() -> None:
    now = utc(2026, 1, 1, 12)
    assert period_range("D", 1, now, SP) == (utc(2025, 12, 31, 3), utc(2026, 1, 1, 3))
    assert period_range("D", 366, now, UTC) == (utc(2024, 12, 31), utc(2025, 1, 1))
    assert period_range("Y", 1, now, UTC) == (utc(2025, 1, 1), utc(2026, 1, 1))
    assert period_range("Y", 3, now, UTC) == (utc(2023, 1, 1), utc(2024, 1, 1))


def test_december_month_and_year_ends() -> None:
    now = utc(2026, 12, 31, 23, 59, 59)
    assert period_range("M", 0, now, UTC) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert period_range("D", 0, now, UTC) == (utc(2026, 12, 31), utc(2027, 1, 1))
    assert period_range("Y", 0, now, UTC) == (utc(2026, 1, 1), utc(2027, 1, 1))


@pytest.mark.parametrize(
    ("year", "days"), [(2024, 29), (2025, 28), (2000, 29), (2100, 28), (1900, 28)]
)
def test_february_lengths(year: int, days: int) -> None:
    start, end = month_range(year, 2, UTC)
    assert (start, end) == (utc(year, 2, 1), utc(year, 3, 1))
    assert end - start == days * DAY_MS
    assert len(bucket_edges("M", start, end, UTC)) == days + 1


def test_kolkata_half_hour_offset() -> None:
    # +05:30: local midnight of 2026-03-15 is 2026-03-14 18:30Z.
    now = utc(2026, 3, 15, 4)  # 09:30 local
    start, end = period_range("D", 0, now, KOLKATA)
    assert (start, end) == (utc(2026, 3, 14, 18, 30), utc(2026, 3, 15, 18, 30))
    assert iso(start, KOLKATA) == "2026-03-15T00:00:00+05:30"
    # 2026-03-14 20:00Z is already 01:30 on the 15th in Kolkata.
    assert period_range("D", 0, utc(2026, 3, 14, 20), KOLKATA) == (start, end)
    edges = bucket_edges("D", start, end, KOLKATA)
    assert len(edges) == 25
    assert iso(edges[1], KOLKATA) == "2026-03-15T01:00:00+05:30"
    assert month_range(2026, 3, KOLKATA) == (utc(2026, 2, 28, 18, 30), utc(2026, 3, 31, 18, 30))


def test_new_york_spring_forward_day_has_23_hourly_buckets() -> None:
    # 2026-03-08: EST (-05) until 02:00 local, then EDT (-04).
    start, end = period_range("D", 0, utc(2026, 3, 8, 16), NY)
    assert (start, end) == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    edges = bucket_edges("D", start, end, NY)
    assert len(edges) - 1 == 23
    assert iso(edges[2], NY) == "2026-03-08T03:00:00-04:00"  # 02:00 never happens
    assert iso(end, NY) == "2026-03-09T00:00:00-04:00"


def test_new_york_fall_back_day_has_25_hourly_buckets() -> None:
    # 2026-11-01: EDT (-04) until 02:00 local, then EST (-05); 01:xx twice.
    start, end = period_range("D", 0, utc(2026, 11, 1, 16), NY)
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    edges = bucket_edges("D", start, end, NY)
    assert len(edges) - 1 == 25
    assert [iso(e, NY) for e in edges[1:4]] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_new_york_month_with_dst_change_has_uneven_days() -> None:
    start, end = month_range(2026, 3, NY)
    assert (start, end) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    edges = bucket_edges("M", start, end, NY)
    lengths = [b - a for a, b in zip(edges, edges[1:])]
    assert len(lengths) == 31
    assert lengths.count(23 * HOUR_MS) == 1 and lengths.count(DAY_MS) == 30
    assert lengths.index(23 * HOUR_MS) == 7  # the 8th


def test_sao_paulo_historical_dst_gap_at_midnight() -> None:
    # 2018-11-04: clocks jumped from 00:00 (-03) to 01:00 (-02); that day
    # begins at 01:00 local = 03:00Z and lasts 23 hours.
    start, end = period_range("D", 0, utc(2018, 11, 4, 15), SP)
    assert (start, end) == (utc(2018, 11, 4, 3), utc(2018, 11, 5, 2))
    assert iso(start, SP) == "2018-11-04T01:00:00-02:00"
    assert len(bucket_edges("D", start, end, SP)) - 1 == 23
    # The day before is an ordinary 24 h and ends where this one starts.
    assert period_range("D", 1, utc(2018, 11, 4, 15), SP) == (utc(2018, 11, 3, 3), start)
    # November 2018 starts at 00:00 -03 (before the jump) and ends at -02.
    assert month_range(2018, 11, SP) == (utc(2018, 11, 1, 3), utc(2018, 12, 1, 2))
    assert day_start(date(2018, 11, 4), SP) == start


def test_sao_paulo_historical_dst_end_day_has_25_hours() -> None:
    # 2019-02-17 00:00 (-02) became 2019-02-16 23:00 (-03): the 16th repeats
    # an hour and the 17th starts at 00:00 -03.
    start, end = period_range("D", 0, utc(2019, 2, 16, 15), SP)
    assert (start, end) == (utc(2019, 2, 16, 2), utc(2019, 2, 17, 3))
    assert len(bucket_edges("D", start, end, SP)) - 1 == 25
    assert iso(end, SP) == "2019-02-17T00:00:00-03:00"


@pytest.mark.parametrize("kind", KINDS)
def test_no_period_starts_before_1970(kind: str) -> None:
    """The earliest period of each kind is the one holding 1970-01-01 in UTC; one more back is refused."""
    now = utc(2026, 12, 6, 12)
    back = {"D": (date(2026, 12, 6) - date(1970, 1, 1)).days, "M": (2026 - 1970) * 12 + 11, "Y": 2026 - 1970}[kind]
    start, _ = period_range(kind, back, now, UTC)
    assert start == utc(1970, 1, 1) == 0
    with pytest.raises(ValueError, match="1970"):
        period_range(kind, back + 1, now, UTC)
    if kind == "M":
        assert months_back(now, UTC, back) == (1970, 1)
        with pytest.raises(ValueError, match="1970"):
            months_back(now, UTC, back + 1)


def test_invalid_arguments() -> None:
    now = utc(2026, 1, 1)
    with pytest.raises(ValueError):
        period_range("W", 0, now, UTC)
    with pytest.raises(ValueError):
        period_range("d", 0, now, UTC)
    with pytest.raises(ValueError):
        period_range("M", -1, now, UTC)
    with pytest.raises(ValueError):
        period_range("M", True, now, UTC)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        period_range("Y", 5000, now, UTC)  # before year 1
    with pytest.raises(ValueError):
        months_back(now, UTC, 10**6)
    with pytest.raises(ValueError):
        period_range("D", 10**7, now, UTC)
    with pytest.raises(ValueError):
        bucket_edges("X", 0, 1, UTC)
    with pytest.raises(ValueError):
        bucket_edges("D", 10, 9, UTC)
    assert bucket_edges("D", 10, 10, UTC) == [10]
    with pytest.raises(ValueError):
        months_back(now, UTC, -1)
    with pytest.raises(ValueError):
        month_range(2026, 13, UTC)


# --- months, iso ----------------------------------------------------------


def test_month_of_and_months_back() -> None:
    now = utc(2026, 3, 1, 1)  # still 2026-02-28 22:00 in São Paulo
    assert month_of(now, SP) == (2026, 2)
    assert month_of(now, UTC) == (2026, 3)
    assert months_back(now, SP, 0) == (2026, 2)
    assert months_back(now, SP, 1) == (2026, 1)
    assert months_back(now, SP, 2) == (2025, 12)
    assert months_back(now, SP, 26) == (2023, 12)
    assert months_back(now, UTC, 3) == (2025, 12)


def test_iso_truncates_to_seconds_and_shows_offset() -> None:
    assert iso(utc(2026, 11, 1, 3) + 999, SP) == "2026-11-01T00:00:00-03:00"
    assert iso(utc(2026, 11, 1, 3) - 1, SP) == "2026-10-31T23:59:59-03:00"
    assert iso(0, UTC) == "1970-01-01T00:00:00+00:00"
    assert iso(utc(2026, 7, 1, 12), NY) == "2026-07-01T08:00:00-04:00"


def test_year_buckets_are_local_months() -> None:
    start, end = period_range("Y", 0, utc(2026, 6, 1), NY)
    edges = bucket_edges("Y", start, end, NY)
    assert len(edges) == 13
    assert [iso(e, NY)[:10] for e in edges[:-1]] == [f"2026-{m:02d}-01" for m in range(1, 13)]
    assert edges[3] == utc(2026, 4, 1, 4)  # April starts in EDT
    assert edges[12] == utc(2027, 1, 1, 5)


def test_unaligned_range_gets_partial_buckets() -> None:
    a, b = utc(2026, 1, 10, 12), utc(2026, 1, 13, 6)
    assert bucket_edges("M", a, b, UTC) == [a, utc(2026, 1, 11), utc(2026, 1, 12), utc(2026, 1, 13), b]
    assert bucket_edges("D", a, a + 90 * 60_000, UTC) == [a, a + HOUR_MS, a + 90 * 60_000]
    c, d = utc(2026, 2, 15), utc(2026, 4, 1)
    assert bucket_edges("Y", c, d, UTC) == [c, utc(2026, 3, 1), d]


# --- properties -----------------------------------------------------------

ZONES = [
    "America/Sao_Paulo",
    "UTC",
    "Asia/Kolkata",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Pacific/Apia",  # skipped the whole of 2011-12-30
    "America/Havana",  # DST at midnight
]

zones = st.sampled_from(ZONES).map(ZoneInfo)
instants = st.integers(utc(2010, 1, 1), utc(2040, 1, 1))  # 39 years back stays in 1970 or later, in every zone


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(KINDS), st.integers(0, 39), instants, zones)
def test_period_properties(kind: str, periodo: int, now: int, tz: ZoneInfo) -> None:
    start, end = period_range(kind, periodo, now, tz)
    # Only a date that never happened (Apia skipped 2011-12-30) is empty.
    assert start < end or (kind == "D" and tz.key == "Pacific/Apia" and start == end)
    if periodo == 0:
        assert start <= now < end
    else:
        # Consecutive periods abut: no instant is in two periods or in none.
        assert period_range(kind, periodo - 1, now, tz)[0] == end
        assert end <= now
    edges = bucket_edges(kind, start, end, tz)
    assert edges[0] == start and edges[-1] == end
    assert all(a < b for a, b in zip(edges, edges[1:]))
    # Every bucket of a period holds a single local date (D, M) or month (Y).
    for a, b in zip(edges, edges[1:]):
        first, last = datetime.fromtimestamp(a / 1000, tz), datetime.fromtimestamp((b - 1) / 1000, tz)
        if kind == "D":
            assert b - a <= HOUR_MS
        elif kind == "M":
            assert first.date() == last.date()
        else:
            assert (first.year, first.month) == (last.year, last.month)
    if kind == "D" and start < end:
        assert 22 * HOUR_MS <= end - start <= 26 * HOUR_MS
    elif kind == "M":
        assert 28 <= len(edges) - 1 <= 31
    else:
        assert len(edges) - 1 == 12


@settings(max_examples=examples(200), deadline=None)
@given(instants, zones)
def test_day_start_is_the_first_instant_of_the_local_date(now: int, tz: ZoneInfo) -> None:
    start, _ = period_range("D", 0, now, tz)
    d = datetime.fromtimestamp(start / 1000, tz).date()
    assert datetime.fromtimestamp((start - 1) / 1000, tz).date() < d


def test_apia_skipped_day() -> None:
    # Samoa jumped from 2011-12-29 23:59:59 (-10) to 2011-12-31 00:00 (+14):
    # the 30th does not exist, so its "day" is empty and the 29th ends where
    # the 31st starts. periodo arithmetic still works by calendar date.
    apia = ZoneInfo("Pacific/Apia")
    assert day_start(date(2011, 12, 31), apia) == utc(2011, 12, 30, 10)
    assert day_start(date(2011, 12, 30), apia) == utc(2011, 12, 30, 10)
    start, end = month_range(2011, 12, apia)
    edges = bucket_edges("M", start, end, apia)
    assert len(edges) - 1 == 30  # 31 dates, one of which never happened
    assert all(a < b for a, b in zip(edges, edges[1:]))
    assert bucket_edges("Y", *period_range("Y", 0, utc(2011, 6, 1), apia), apia)[-1] == utc(2011, 12, 31, 10)
    # Asking for the day that never was gives an empty range, not an error.
    thirty_first = utc(2011, 12, 30, 22)  # 2011-12-31 12:00 +14
    assert period_range("D", 1, thirty_first, apia) == (utc(2011, 12, 30, 10),) * 2
    assert period_range("D", 2, thirty_first, apia) == (utc(2011, 12, 29, 10), utc(2011, 12, 30, 10))
