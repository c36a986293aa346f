"""Register maths: consumption as differences of a cumulative energy register.

A register meter reports the total energy it has ever measured, so the energy
used over ``[a, b)`` is ``R(b) - R(a)`` whatever readings were lost in between.
``R(t)`` between two readings is a linear interpolation; outside the readings
it is held flat. Each ``R(edge)`` is rounded to a whole Wh *before* any
difference is taken: the buckets of a period then telescope to exactly the
period's total, so days add up to the month and months to the year to the Wh.

Exact integer arithmetic only (floor division, never float): float
interpolation could round the same instant differently on different paths and
break that telescoping by a Wh here and there.

Pure module: stdlib only, no Twisted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

__all__ = [
    "MAX_GAP_US",
    "Sample",
    "register_at",
    "neighbours",
    "registers_at",
    "bucket_deltas",
    "check_monotonic",
    "interval_sums",
    "kwh",
]

#: An interpolation across a longer gap between readings is only a guess.
MAX_GAP_US: Final = 3_600_000_000


class Sample(NamedTuple):
    """One reading: ``ts`` in microseconds since the epoch (UTC), ``wh`` integer Wh."""

    ts: int
    wh: int


def _div_round_half_up(num: int, den: int) -> int:
    """``num / den`` rounded to the nearest integer, halves towards +inf.

    ``den`` must be positive. floor(num/den + 1/2) == (2*num + den) // (2*den),
    exact for any integers.
    """
    return (2 * num + den) // (2 * den)


def register_at(t: int, before: Sample | None, after: Sample | None) -> tuple[int, bool]:
    """``(R(t), estimated)``.

    ``before`` is the last reading with ``ts <= t``, ``after`` the first with
    ``ts > t``. An exact reading at ``t`` is used as is; between two readings
    the value is interpolated and rounded half-up to a whole Wh, and marked
    estimated when the readings are more than :data:`MAX_GAP_US` apart (a long
    gap says nothing about *when* the energy was used). Before the first
    reading the first value is held, after the last one the last value, and
    with no reading at all the register is 0. An ``after`` exactly at ``t`` is
    tolerated and used as an exact reading.
    """
    if before is not None and before.ts > t:
        raise ValueError("before.ts must be <= t")
    if after is not None and after.ts < t:
        raise ValueError("after.ts must be > t")
    if before is not None and before.ts == t:
        return before.wh, False
    if after is not None and after.ts == t:
        return after.wh, False
    if before is not None and after is not None:
        span = after.ts - before.ts
        frac = _div_round_half_up((after.wh - before.wh) * (t - before.ts), span)
        return before.wh + frac, span > MAX_GAP_US
    if before is not None:
        return before.wh, False
    if after is not None:
        return after.wh, False
    return 0, False


def neighbours(samples: Iterable[Sample], t: int) -> tuple[Sample | None, Sample | None]:
    """The last reading with ``ts <= t`` and the first with ``ts > t``, from
    readings in any order (one pass, no sort), as :func:`register_at` wants."""
    before: Sample | None = None
    after: Sample | None = None
    for s in samples:
        if s.ts <= t:
            if before is None or s.ts > before.ts:
                before = s
        elif after is None or s.ts < after.ts:
            after = s
    return before, after


def registers_at(edges: Sequence[int], samples: Iterable[Sample]) -> list[tuple[int, bool]]:
    """``register_at`` for every edge, over readings in any order.

    Sorting once and bisecting makes a year of hourly edges over a year of
    readings cost O((n + k) log n) instead of O(n * k).
    """
    ordered = sorted(samples)
    times = [s.ts for s in ordered]
    out: list[tuple[int, bool]] = []
    for t in edges:
        i = bisect_right(times, t)
        before = ordered[i - 1] if i > 0 else None
        after = ordered[i] if i < len(ordered) else None
        out.append(register_at(t, before, after))
    return out


def bucket_deltas(edge_values: Sequence[tuple[int, bool]]) -> list[tuple[int, bool]]:
    """Consumption per bucket from ``(R(edge), estimated)`` at consecutive
    edges; a bucket is estimated if either of its edges is."""
    return [
        (v1 - v0, e0 or e1)
        for (v0, e0), (v1, e1) in zip(edge_values, edge_values[1:])
    ]


def check_monotonic(wh: int, before: Sample | None, after: Sample | None) -> bool:
    """Whether a register reading fits between its neighbours in time order.

    A register never runs backwards, so a new reading must be at least the
    previous one and at most the next one (readings may arrive out of order).
    Missing neighbours do not constrain.
    """
    if before is not None and wh < before.wh:
        return False
    if after is not None and wh > after.wh:
        return False
    return True


def interval_sums(edges: Sequence[int], samples: Iterable[Sample]) -> list[int]:
    """Interval meters: total Wh of readings with ``edges[i] <= ts < edges[i+1]``.

    Readings outside ``[edges[0], edges[-1])`` are ignored. ``edges`` must be
    strictly increasing.
    """
    n = len(edges) - 1
    if n <= 0:
        return []
    sums = [0] * n
    lo, hi = edges[0], edges[-1]
    for s in samples:
        if lo <= s.ts < hi:
            sums[bisect_right(edges, s.ts) - 1] += s.wh
    return sums


def kwh(wh: int) -> float:
    """Wh as kWh for JSON.

    Integer / 1000 is correctly rounded, so the float's shortest repr (what
    JSON encoders print) is exactly the 3-decimal value, e.g. 1234567 -> 1234.567.
    """
    return wh / 1000


Span = tuple[int | None, int | None]  # open interval of reading time; None is unbounded


def sensitive_span(t: int, before: Sample | None, after: Sample | None) -> list[Span]:
    """Where a new reading would change the interpolated register at ``t``.

    Only a reading strictly between the two it was interpolated from; none
    at all when a reading sits exactly on ``t``. Caches of past answers keep
    these spans to know which late readings evict them.
    """
    if before is not None and before.ts == t:
        return []
    return [(None if before is None else before.ts, None if after is None else after.ts)]


def in_span(ts: int, span: Span) -> bool:
    lo, hi = span
    return (lo is None or lo < ts) and (hi is None or ts < hi)


def any_in_span(times: Sequence[int], span: Span) -> bool:
    """``any(in_span(ts, span) for ts in times)`` for ascending ``times``, by one bisect.

    The first time after the span's start is the only candidate, so the cost
    does not grow with the number of readings a flush stored for a meter.
    """
    lo, hi = span
    i = 0 if lo is None else bisect_right(times, lo)
    return i < len(times) and (hi is None or times[i] < hi)
