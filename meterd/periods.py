"""Calendar periods (day, month, year) in a customer's own time zone.

A bill and a history chart are about the customer's calendar, not UTC: "November"
for a customer in São Paulo starts at local midnight on the 1st. Daylight-saving
time makes that subtle: a local day may last 23 or 25 hours, and in some zones
(Brazil until 2019) the clocks jumped at midnight, so a day could begin at 01:00.
All of that is resolved here once, so the store and the web layer only ever see
``[start, end)`` pairs of integer milliseconds since the Unix epoch (UTC).

Pure module: stdlib only, no Twisted.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "KINDS",
    "FIRST_YEAR",
    "HOUR_MS",
    "period_range",
    "bucket_edges",
    "day_start",
    "local_date",
    "month_range",
    "month_of",
    "months_back",
    "iso",
]

KINDS: Final = ("D", "M", "Y")
HOUR_MS: Final = 3_600_000
#: No period starts before this year: no reading can be older (readings start
#: in 2000), and before the epoch instants would be negative.
FIRST_YEAR: Final = 1970

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_ONE_DAY: Final = timedelta(days=1)


def _to_ms(dt: datetime) -> int:
    # Exact integer arithmetic; datetime.timestamp() goes through float.
    return (dt - _EPOCH) // _ONE_MS


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def local_date(ms: int, tz: ZoneInfo) -> date:
    """The calendar date shown on a wall clock in ``tz`` at instant ``ms``."""
    return _local(ms, tz).date()


def day_start(d: date, tz: ZoneInfo) -> int:
    """First instant (ms) whose local date in ``tz`` is ``d``.

    Usually local midnight. When midnight falls in a DST gap (the clock jumps
    from 23:59:59 straight to 01:00), the day begins at the transition itself,
    which is the only sensible boundary: it is the first instant the wall clock
    shows date ``d``, and it leaves no instant belonging to no day.
    """
    midnight = datetime.combine(d, time(0), tzinfo=tz)  # fold=0: earliest if ambiguous
    ms = _to_ms(midnight)
    shown = _local(ms, tz)
    if shown.date() == d and shown.time() == time(0):
        return ms
    # Midnight does not exist on that date. fold=0 maps a nonexistent time with
    # the offset from before the jump (an instant after the transition), fold=1
    # with the offset from after it (an instant before); the transition, i.e.
    # the first instant of ``d``, lies in between. Transitions fall on whole
    # seconds, so a binary search over seconds finds it exactly.
    other = _to_ms(midnight.replace(fold=1))
    lo, hi = min(ms, other), max(ms, other)
    if local_date(lo, tz) >= d:  # pragma: no cover - defensive; zoneinfo is consistent
        return lo
    lo_s, hi_s = -(-lo // 1000), hi // 1000 + 1  # local_date(lo) < d <= local_date(hi)
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if local_date(mid * 1000, tz) >= d:
            hi_s = mid
        else:
            lo_s = mid + 1
    return lo_s * 1000


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    idx = year * 12 + (month - 1) + n
    return idx // 12, idx % 12 + 1


def _check_nonneg(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if value < 0:
        raise ValueError(f"{name} must not be negative")


def month_range(year: int, month: int, tz: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` in ms of local calendar month ``year-month`` in ``tz``."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, not {month}")
    ny, nm = _add_months(year, month, 1)
    return day_start(date(year, month, 1), tz), day_start(date(ny, nm, 1), tz)


def month_of(ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """Local ``(year, month)`` in ``tz`` containing instant ``ms``."""
    d = local_date(ms, tz)
    return d.year, d.month


def months_back(now_ms: int, tz: ZoneInfo, n: int) -> tuple[int, int]:
    """Local ``(year, month)`` that is ``n`` months before the one containing now.

    Raises ValueError for a month before :data:`FIRST_YEAR`.
    """
    _check_nonneg("n", n)
    y, m = month_of(now_ms, tz)
    y, m = _add_months(y, m, -n)
    if y < FIRST_YEAR:
        raise ValueError(f"the month is before {FIRST_YEAR}")
    return y, m


def period_range(kind: str, periodo: int, now_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` in ms of the local day/month/year ``periodo`` periods
    before the one containing ``now_ms`` (``periodo == 0`` is the current one).

    Raises ValueError for an unknown kind, a negative periodo, or a period
    that starts before :data:`FIRST_YEAR`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    _check_nonneg("periodo", periodo)
    today = local_date(now_ms, tz)
    if kind == "D":
        first = today.toordinal() - periodo
        if first < date(FIRST_YEAR, 1, 1).toordinal():
            raise ValueError(f"the day is before {FIRST_YEAR}")
        d = date.fromordinal(first)
        return day_start(d, tz), day_start(d + _ONE_DAY, tz)
    if kind == "M":
        y, m = _add_months(today.year, today.month, -periodo)
        if y < FIRST_YEAR:
            raise ValueError(f"the month is before {FIRST_YEAR}")
        return month_range(y, m, tz)
    y = today.year - periodo
    if y < FIRST_YEAR:
        raise ValueError(f"the year is before {FIRST_YEAR}")
    return day_start(date(y, 1, 1), tz), day_start(date(y + 1, 1, 1), tz)


def bucket_edges(kind: str, start_ms: int, end_ms: int, tz: ZoneInfo) -> list[int]:
    """Bucket boundaries of a period, including both ends, strictly increasing.

    ``D`` uses hours of absolute time from the start (a DST day has 23 or 25
    buckets, and an hour is always 3 600 000 ms of energy); ``M`` uses local
    days and ``Y`` local months. Boundaries that do not fall inside the range
    are not invented: a range that is not aligned to the calendar gets a
    partial first and last bucket. An empty range gives ``[start]``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if end_ms < start_ms:
        raise ValueError("end must not be before start")
    if end_ms == start_ms:
        # A local date that never happened (Pacific/Apia, 2011-12-30) is an
        # empty period: no buckets, not an error.
        return [start_ms]
    edges = [start_ms]
    if kind == "D":
        edges.extend(range(start_ms + HOUR_MS, end_ms, HOUR_MS))
    elif kind == "M":
        d = local_date(start_ms, tz) + _ONE_DAY
        while (edge := day_start(d, tz)) < end_ms:
            if edge > edges[-1]:  # a skipped date repeats its successor's start
                edges.append(edge)
            d += _ONE_DAY
    else:
        y, m = month_of(start_ms, tz)
        while True:
            y, m = _add_months(y, m, 1)
            edge = day_start(date(y, m, 1), tz)
            if edge >= end_ms:
                break
            if edge > edges[-1]:  # a skipped date repeats its successor's start
                edges.append(edge)
    edges.append(end_ms)
    return edges


def iso(ms: int, tz: ZoneInfo) -> str:
    """ISO 8601 local time with offset, seconds precision (milliseconds are
    truncated, so an instant never prints as a later second than it is)."""
    return _local(ms, tz).replace(microsecond=0).isoformat(timespec="seconds")
