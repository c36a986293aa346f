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

from meterd.readings import Outcome, Reading
from meterd.registers import Sample, check_monotonic

HOUR_MS = 3_600_000

MeterKey = tuple[str, int]
Neighbours = Callable[[MeterKey, int], tuple[Sample | None, Sample | None]]


@dataclass(slots=True)
class MeterState:
    mode: str
    last_ts: int | None = None
    last_wh: int | None = None


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
    """
    plan = Plan([Outcome.UNKNOWN_METER] * len(readings))
    by_meter: dict[MeterKey, list[int]] = {}
    for i, r in enumerate(readings):
        by_meter.setdefault((r.customer_id, r.meter_id), []).append(i)
    for key, indices in by_meter.items():
        stored = states.get(key)
        if stored is None:
            continue
        state = MeterState(stored.mode, stored.last_ts, stored.last_wh)
        register = state.mode == "register"
        batch: dict[int, int] = {}  # ts -> wh accepted or found in this flush
        older: list[Sample] = []  # accepted readings older than the stored newest, sorted
        changed = False
        for i in sorted(indices, key=lambda j: readings[j].ts):
            r = readings[i]
            if r.ts in batch:
                plan.outcomes[i] = Outcome.DUPLICATE if batch[r.ts] == r.wh else Outcome.CONFLICT
                continue
            if state.last_ts is None or r.ts > state.last_ts:
                if register and state.last_wh is not None and r.wh < state.last_wh:
                    plan.outcomes[i] = Outcome.BACKWARDS
                    continue
                state.last_ts, state.last_wh = r.ts, r.wh
            else:
                before, after = _merge(neighbours(key, r.ts), older, r.ts)
                if before is not None and before.ts == r.ts:
                    plan.outcomes[i] = Outcome.DUPLICATE if before.wh == r.wh else Outcome.CONFLICT
                    batch[r.ts] = before.wh
                    continue
                if register and not check_monotonic(r.wh, before, after):
                    plan.outcomes[i] = Outcome.BACKWARDS
                    continue
                bisect.insort(older, Sample(r.ts, r.wh))
            batch[r.ts] = r.wh
            changed = True
            plan.outcomes[i] = Outcome.STORED
            plan.rows.append((r.customer_id, r.meter_id, r.ts, r.wh, received_ms))
            hour = r.ts - r.ts % HOUR_MS
            rollup = plan.rollups.get((*key, hour))
            if rollup is None:
                plan.rollups[(*key, hour)] = Rollup(1, r.ts, r.wh, r.ts, r.wh, r.wh)
            else:
                rollup.add(r.ts, r.wh)
        if any(plan.outcomes[i] is not Outcome.DUPLICATE for i in indices):
            plan.seen.add(key)
        if changed:
            plan.states[key] = state
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
