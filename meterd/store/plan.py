"""Deciding what one flush writes: duplicates, conflicts, monotonicity, rollups.

Pure, and shared by every backend: a backend supplies the meters' current state
and a neighbour lookup, runs the plan inside its transaction and writes
``rows``, ``rollups`` and ``states``. Nothing here touches a database, so the
rules of DESIGN §4 are tested without one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from meterd.readings import HOUR_US, Outcome, Reading
from meterd.registers import Sample, check_monotonic

MeterKey = tuple[str, int]
Neighbours = Callable[[MeterKey, int], tuple[Sample | None, Sample | None]]


@dataclass(slots=True)
class MeterState:
    mode: str
    last_ts: int | None = None
    last_wh: int | None = None
    retired_ts: int | None = None  # a retired meter's final reading time: later readings are refused


@dataclass(slots=True)
class Rollup:
    """One meter-hour: count, first and last reading, and the sum (interval meters)."""

    n: int
    first_ts: int
    first_wh: int
    last_ts: int
    last_wh: int
    sum_wh: int

    def add(self, ts: int, wh: int) -> None:
        self.n += 1
        self.sum_wh += wh
        if ts < self.first_ts:
            self.first_ts, self.first_wh = ts, wh
        if ts > self.last_ts:
            self.last_ts, self.last_wh = ts, wh


@dataclass(slots=True)
class Plan:
    outcomes: list[Outcome]
    rows: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    rollups: dict[tuple[str, int, int], Rollup] = field(default_factory=dict)
    states: dict[MeterKey, MeterState] = field(default_factory=dict)  # new state of meters that stored something
    # Meters that sent something new (last_seen). Not duplicates: a captured datagram can be
    # replayed by anyone, and must not keep a dead meter from being reported silent.
    seen: set[MeterKey] = field(default_factory=set)
    # Where each meter's rows are in ``rows``: ``rows[start:end]``, adjacent and in ts order.
    runs: dict[MeterKey, tuple[int, int]] = field(default_factory=dict)


def plan_ingest(
    readings: Sequence[Reading],
    states: Mapping[MeterKey, MeterState],
    neighbours: Neighbours,
    received_ms: int,
) -> Plan:
    """Classify each reading and collect the writes of one transaction.

    ``neighbours(meter, t)`` returns the stored readings at-or-before and after
    ``t``; it is only called for readings that are not newer than everything
    stored, so the common in-order case costs no query at all.

    This runs on the writer thread for every reading, holding the GIL the
    reactor thread needs, so the loop keeps to locals: a meter's readings are
    judged in timestamp order, so a repeated timestamp is always the previous
    one judged, and a meter-hour's rows are adjacent (one rollup at a time).
    """
    plan = Plan([Outcome.UNKNOWN_METER] * len(readings))
    outcomes, rows, rollups = plan.outcomes, plan.rows, plan.rollups
    stored, duplicate, conflict, backwards = Outcome.STORED, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.BACKWARDS
    retired = Outcome.RETIRED
    by_meter: dict[MeterKey, list[int]] = {}
    for i, r in enumerate(readings):
        by_meter.setdefault(r[:2], []).append(i)  # r[:2] is (customer_id, meter_id)
    times = [r.ts for r in readings]
    for key, indices in by_meter.items():
        current = states.get(key)
        if current is None:
            continue
        customer_id, meter_id = key
        register = current.mode == "register"
        last_ts, last_wh = current.last_ts, current.last_wh
        final_ts = current.retired_ts
        older: list[Sample] = []  # accepted readings older than the stored newest, sorted
        prev_ts: int | None = None  # the last timestamp accepted or found stored in this flush...
        prev_wh = 0  # ... and its value, which later readings at that timestamp must match
        rollup: Rollup | None = None  # the rollup of the last row's hour
        rollup_hour = 0
        ignored = 0  # duplicates, and readings of a retired meter: neither is a sign of life
        first_row = len(rows)
        indices.sort(key=times.__getitem__)
        for i in indices:
            _, _, ts, wh, _ = readings[i]
            if final_ts is not None and ts > final_ts:
                outcomes[i] = retired
                ignored += 1
                continue
            if ts == prev_ts:
                if wh == prev_wh:
                    outcomes[i] = duplicate
                    ignored += 1
                else:
                    outcomes[i] = conflict
                continue
            if last_ts is None or ts > last_ts:
                if register and last_wh is not None and wh < last_wh:
                    outcomes[i] = backwards
                    continue
                last_ts, last_wh = ts, wh
            else:
                before, after = _merge(neighbours(key, ts), older, ts)
                if before is not None and before.ts == ts:
                    if before.wh == wh:
                        outcomes[i] = duplicate
                        ignored += 1
                    else:
                        outcomes[i] = conflict
                    prev_ts, prev_wh = ts, before.wh
                    continue
                if register and not check_monotonic(wh, before, after):
                    outcomes[i] = backwards
                    continue
                bisect.insort(older, Sample(ts, wh))
            prev_ts, prev_wh = ts, wh
            outcomes[i] = stored
            rows.append((customer_id, meter_id, ts, wh, received_ms))
            hour = ts - ts % HOUR_US
            if rollup is not None and hour == rollup_hour:
                rollup.add(ts, wh)
            else:
                rollup = rollups[(customer_id, meter_id, hour)] = Rollup(1, ts, wh, ts, wh, wh)
                rollup_hour = hour
        if ignored < len(indices):
            plan.seen.add(key)
        if len(rows) > first_row:
            plan.states[key] = MeterState(current.mode, last_ts, last_wh, final_ts)
            plan.runs[key] = (first_row, len(rows))
    return plan


def _merge(
    found: tuple[Sample | None, Sample | None], older: list[Sample], t: int
) -> tuple[Sample | None, Sample | None]:
    """Neighbours of ``t`` among stored readings and those accepted earlier in this flush."""
    before, after = found
    i = bisect.bisect_right(older, (t, 2**63))
    if i > 0 and (before is None or older[i - 1].ts > before.ts):
        before = older[i - 1]
    if i < len(older) and (after is None or older[i].ts < after.ts):
        after = older[i]
    return before, after
