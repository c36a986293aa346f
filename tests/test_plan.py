"""``plan_ingest``: the rules of DESIGN §4 for one flush, with no database.

A fake store (a dict of stored readings per meter) answers the neighbour
lookups; it also records each lookup, so the tests can check that in-order
readings cost no query.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.readings import Outcome, Reading
from meterd.registers import Sample
from meterd.readings import HOUR_US
from meterd.store.plan import MeterKey, MeterState, Rollup, plan_ingest
from tests.support import examples

C = "12345678909"
M1: MeterKey = (C, 1)
M2: MeterKey = (C, 2)
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z, on the hour
RECEIVED = T0 + 999


class FakeStored:
    """Stored readings per meter, and a log of the neighbour lookups made."""

    def __init__(self, stored: dict[MeterKey, Iterable[tuple[int, int]]] | None = None) -> None:
        self.readings = {k: sorted(v) for k, v in (stored or {}).items()}
        self.calls: list[tuple[MeterKey, int]] = []

    def neighbours(self, key: MeterKey, t: int) -> tuple[Sample | None, Sample | None]:
        self.calls.append((key, t))
        rows = self.readings.get(key, [])
        before = max((r for r in rows if r[0] <= t), default=None)
        after = min((r for r in rows if r[0] > t), default=None)
        return (Sample(*before) if before else None), (Sample(*after) if after else None)

    def state(self, key: MeterKey, mode: str) -> MeterState:
        rows = self.readings.get(key)
        if not rows:
            return MeterState(mode)
        return MeterState(mode, rows[-1][0], rows[-1][1])


def r(ts: int, wh: int, meter: int = 1, seq: int | None = None, customer: str = C) -> Reading:
    return Reading(customer, meter, ts, wh, seq)


def plan(readings: list[Reading], fake: FakeStored, modes: dict[MeterKey, str] | None = None):
    modes = modes if modes is not None else {M1: "register"}
    states = {k: fake.state(k, mode) for k, mode in modes.items()}
    return plan_ingest(readings, states, fake.neighbours, RECEIVED)


def test_in_order_readings_are_stored_without_any_lookup():
    fake = FakeStored({M1: [(T0, 1000)]})
    p = plan([r(T0 + 60_000, 1010), r(T0 + 120_000, 1025)], fake)
    assert p.outcomes == [Outcome.STORED, Outcome.STORED]
    assert fake.calls == []
    assert p.rows == [(C, 1, T0 + 60_000, 1010, RECEIVED), (C, 1, T0 + 120_000, 1025, RECEIVED)]
    assert p.states[M1] == MeterState("register", T0 + 120_000, 1025)
    assert p.seen == {M1}


def test_first_readings_of_a_new_meter():
    fake = FakeStored()
    p = plan([r(T0 + 5, 7), r(T0, 3)], fake)
    assert p.outcomes == [Outcome.STORED, Outcome.STORED]
    assert fake.calls == []
    assert p.states[M1] == MeterState("register", T0 + 5, 7)


def test_readings_in_a_flush_are_judged_in_timestamp_order():
    # Arrival order 3, 1, 2: sorted by time they are monotonic, so all are stored.
    fake = FakeStored()
    p = plan([r(T0 + 3000, 30), r(T0 + 1000, 10), r(T0 + 2000, 20)], fake)
    assert p.outcomes == [Outcome.STORED] * 3
    assert p.states[M1].last_ts == T0 + 3000


def test_out_of_order_reading_between_stored_ones_is_stored_and_keeps_newest_state():
    fake = FakeStored({M1: [(T0, 1000), (T0 + 600_000, 1100)]})
    p = plan([r(T0 + 300_000, 1050)], fake)
    assert p.outcomes == [Outcome.STORED]
    assert fake.calls == [(M1, T0 + 300_000)]
    # The newest reading is unchanged, but the meter did store something.
    assert p.states[M1] == MeterState("register", T0 + 600_000, 1100)


def test_out_of_order_reading_before_every_stored_one():
    fake = FakeStored({M1: [(T0, 1000)]})
    p = plan([r(T0 - 60_000, 990)], fake)
    assert p.outcomes == [Outcome.STORED]
    p = plan([r(T0 - 60_000, 1001)], fake)
    assert p.outcomes == [Outcome.BACKWARDS]


def test_duplicate_within_one_flush():
    fake = FakeStored()
    p = plan([r(T0, 5, seq=1), r(T0, 5, seq=1)], fake)
    assert p.outcomes == [Outcome.STORED, Outcome.DUPLICATE]
    assert len(p.rows) == 1
    assert p.rollups[(C, 1, T0)].n == 1


def test_conflict_within_one_flush_keeps_the_first_value():
    fake = FakeStored()
    p = plan([r(T0, 5), r(T0, 6)], fake)
    assert p.outcomes == [Outcome.STORED, Outcome.CONFLICT]
    assert p.rows == [(C, 1, T0, 5, RECEIVED)]
    # Same with the lower value second: arrival order decides, not the value.
    p = plan([r(T0, 6), r(T0, 5)], FakeStored())
    assert p.outcomes == [Outcome.STORED, Outcome.CONFLICT]
    assert p.rows == [(C, 1, T0, 6, RECEIVED)]


def test_duplicate_and_conflict_against_stored_data():
    fake = FakeStored({M1: [(T0, 1000), (T0 + 60_000, 1010)]})
    p = plan([r(T0, 1000), r(T0 + 60_000, 1010), r(T0 + 60_000, 1011)], fake)
    assert p.outcomes == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.CONFLICT]
    assert p.rows == [] and p.rollups == {}
    assert p.states == {}  # nothing stored, the state is untouched
    assert p.seen == {M1}  # but the meter was heard from


def test_a_repeated_conflict_with_stored_data_stays_a_conflict():
    # The second copy of a conflicting reading is judged against the stored value, not the first copy.
    fake = FakeStored({M1: [(T0, 1000), (T0 + 60_000, 1010)]})
    p = plan([r(T0, 1001), r(T0, 1001), r(T0, 1000)], fake)
    assert p.outcomes == [Outcome.CONFLICT, Outcome.CONFLICT, Outcome.DUPLICATE]
    assert len(fake.calls) == 1  # one lookup for the timestamp, not one per copy


def test_conflict_against_the_stored_newest_reading():
    # ts equal to the stored newest is not "newer": it must be looked up, not stored again.
    fake = FakeStored({M1: [(T0, 1000)]})
    p = plan([r(T0, 1200)], fake)
    assert p.outcomes == [Outcome.CONFLICT]
    assert p.rows == []


def test_register_backwards_against_the_stored_newest():
    fake = FakeStored({M1: [(T0, 1000)]})
    p = plan([r(T0 + 60_000, 999), r(T0 + 120_000, 1000)], fake)
    # Equal to the previous value is fine (no consumption), lower is not.
    assert p.outcomes == [Outcome.BACKWARDS, Outcome.STORED]
    assert p.states[M1] == MeterState("register", T0 + 120_000, 1000)


def test_register_backwards_against_earlier_and_later_neighbours():
    fake = FakeStored({M1: [(T0, 1000), (T0 + 600_000, 1100)]})
    p = plan(
        [
            r(T0 + 100_000, 999),  # lower than the earlier neighbour
            r(T0 + 200_000, 1101),  # higher than the later neighbour
            r(T0 + 300_000, 1000),  # equal to the earlier: allowed
            r(T0 + 400_000, 1100),  # equal to the later: allowed
        ],
        fake,
    )
    assert p.outcomes == [Outcome.BACKWARDS, Outcome.BACKWARDS, Outcome.STORED, Outcome.STORED]


def test_backwards_against_a_reading_accepted_earlier_in_the_same_flush():
    # The stored data alone would allow 1090 at +400 s; the reading at +300 s
    # accepted in this very flush (1095) must forbid it.
    fake = FakeStored({M1: [(T0, 1000), (T0 + 600_000, 1100)]})
    p = plan([r(T0 + 300_000, 1095), r(T0 + 400_000, 1090)], fake)
    assert p.outcomes == [Outcome.STORED, Outcome.BACKWARDS]
    # ... and the later neighbour from the flush constrains an earlier one too.
    fake = FakeStored({M1: [(T0, 1000), (T0 + 600_000, 1100)]})
    p = plan([r(T0 + 300_000, 1020), r(T0 + 200_000, 1050), r(T0 + 100_000, 1010)], fake)
    # Sorted: +100 s 1010 stored, +200 s 1050 stored (<= 1100), +300 s 1020 < 1050 refused.
    assert p.outcomes == [Outcome.BACKWARDS, Outcome.STORED, Outcome.STORED]


def test_interval_meters_are_never_backwards():
    fake = FakeStored({M1: [(T0, 500), (T0 + 600_000, 100)]})
    p = plan([r(T0 + 60_000, 1), r(T0 + 900_000, 0), r(T0 + 960_000, 7)], fake, {M1: "interval"})
    assert p.outcomes == [Outcome.STORED] * 3
    assert p.states[M1] == MeterState("interval", T0 + 960_000, 7)


def test_interval_meters_still_see_duplicates_and_conflicts():
    fake = FakeStored({M1: [(T0, 500)]})
    p = plan([r(T0, 500), r(T0, 400)], fake, {M1: "interval"})
    assert p.outcomes == [Outcome.DUPLICATE, Outcome.CONFLICT]  # the flush remembers the stored value
    p = plan([r(T0, 400)], fake, {M1: "interval"})
    assert p.outcomes == [Outcome.CONFLICT]


def test_unknown_meter_and_unknown_customer():
    fake = FakeStored()
    p = plan([r(T0, 1, meter=9), r(T0, 1, customer="98765432100"), r(T0, 1)], fake)
    assert p.outcomes == [Outcome.UNKNOWN_METER, Outcome.UNKNOWN_METER, Outcome.STORED]
    assert p.seen == {M1}
    assert set(p.states) == {M1}
    assert [row[:2] for row in p.rows] == [(C, 1)]


def test_rollups_hold_first_last_and_sum_per_meter_hour():
    fake = FakeStored()
    readings = [
        r(T0 + 1_800_000, 30),
        r(T0 + 60_000, 10),
        r(T0 + 3_599_999, 40),
        r(T0 + HOUR_US, 50),  # the next hour starts exactly here
        r(T0 + 1_000, 5, meter=2),
    ]
    p = plan(readings, fake, {M1: "register", M2: "register"})
    assert p.outcomes == [Outcome.STORED] * 5
    assert p.rollups == {
        (C, 1, T0): Rollup(3, T0 + 60_000, 10, T0 + 3_599_999, 40, 80),
        (C, 1, T0 + HOUR_US): Rollup(1, T0 + HOUR_US, 50, T0 + HOUR_US, 50, 50),
        (C, 2, T0): Rollup(1, T0 + 1_000, 5, T0 + 1_000, 5, 5),
    }


def test_rollups_ignore_refused_readings():
    fake = FakeStored({M1: [(T0, 100)]})
    p = plan([r(T0 + 10, 90), r(T0, 100), r(T0 + 20, 120)], fake)
    assert p.outcomes == [Outcome.BACKWARDS, Outcome.DUPLICATE, Outcome.STORED]
    assert p.rollups == {(C, 1, T0): Rollup(1, T0 + 20, 120, T0 + 20, 120, 120)}


def test_states_only_for_meters_that_stored_something():
    fake = FakeStored({M1: [(T0, 100)], M2: [(T0, 100)]})
    p = plan([r(T0, 100), r(T0 + 1, 99), r(T0 + 5, 101, meter=2)], fake, {M1: "register", M2: "register"})
    assert p.outcomes == [Outcome.DUPLICATE, Outcome.BACKWARDS, Outcome.STORED]
    assert set(p.states) == {M2}
    assert p.seen == {M1, M2}


def test_states_passed_in_are_not_mutated():
    fake = FakeStored({M1: [(T0, 100)]})
    states = {M1: fake.state(M1, "register")}
    plan_ingest([r(T0 + 1, 200)], states, fake.neighbours, RECEIVED)
    assert states[M1] == MeterState("register", T0, 100)


# -- property: a flush never leaves the stored register non-monotonic ---------

readings_strategy = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 60)).map(lambda t: (T0 + t[0] * 1000, t[1])),
    max_size=40,
)


@settings(max_examples=examples(200), deadline=None)
@given(stored=readings_strategy, incoming=readings_strategy)
def test_property_register_stays_monotonic_and_each_timestamp_is_stored_once(stored, incoming):
    # Keep a monotonic stored history: unique timestamps, values sorted with time.
    by_ts = dict(stored)
    history = list(zip(sorted(by_ts), sorted(by_ts.values())))
    fake = FakeStored({M1: history})
    p = plan([r(ts, wh) for ts, wh in incoming], fake)
    merged = dict(history)
    for ts, wh in ((row[2], row[3]) for row in p.rows):
        assert ts not in merged
        merged[ts] = wh
    values = [merged[ts] for ts in sorted(merged)]
    assert values == sorted(values)
    # Every reading got a verdict consistent with what ended up stored.
    for (ts, wh), outcome in zip(incoming, p.outcomes):
        if outcome in (Outcome.STORED, Outcome.DUPLICATE):
            assert merged[ts] == wh
        elif outcome is Outcome.CONFLICT:
            assert merged[ts] != wh
        else:
            assert outcome is Outcome.BACKWARDS


def _reference_plan(readings: list[Reading], states: dict[MeterKey, MeterState], neighbours, received_ms: int):
    """The straightforward ``plan_ingest`` it was optimised from (a dict of timestamps per
    meter, a rollup lookup per row), kept as the oracle of the property below."""
    from meterd.store.plan import Plan, _merge
    from meterd.registers import check_monotonic
    import bisect

    p = Plan([Outcome.UNKNOWN_METER] * len(readings))
    by_meter: dict[MeterKey, list[int]] = {}
    for i, rd in enumerate(readings):
        by_meter.setdefault((rd.customer_id, rd.meter_id), []).append(i)
    for key, indices in by_meter.items():
        stored = states.get(key)
        if stored is None:
            continue
        state = MeterState(stored.mode, stored.last_ts, stored.last_wh)
        register = state.mode == "register"
        batch: dict[int, int] = {}
        older: list[Sample] = []
        changed = False
        for i in sorted(indices, key=lambda j: readings[j].ts):
            rd = readings[i]
            if rd.ts in batch:
                p.outcomes[i] = Outcome.DUPLICATE if batch[rd.ts] == rd.wh else Outcome.CONFLICT
                continue
            if state.last_ts is None or rd.ts > state.last_ts:
                if register and state.last_wh is not None and rd.wh < state.last_wh:
                    p.outcomes[i] = Outcome.BACKWARDS
                    continue
                state.last_ts, state.last_wh = rd.ts, rd.wh
            else:
                before, after = _merge(neighbours(key, rd.ts), older, rd.ts)
                if before is not None and before.ts == rd.ts:
                    p.outcomes[i] = Outcome.DUPLICATE if before.wh == rd.wh else Outcome.CONFLICT
                    batch[rd.ts] = before.wh
                    continue
                if register and not check_monotonic(rd.wh, before, after):
                    p.outcomes[i] = Outcome.BACKWARDS
                    continue
                bisect.insort(older, Sample(rd.ts, rd.wh))
            batch[rd.ts] = rd.wh
            changed = True
            p.outcomes[i] = Outcome.STORED
            p.rows.append((rd.customer_id, rd.meter_id, rd.ts, rd.wh, received_ms))
            hour = rd.ts - rd.ts % HOUR_US
            rollup = p.rollups.get((*key, hour))
            if rollup is None:
                p.rollups[(*key, hour)] = Rollup(1, rd.ts, rd.wh, rd.ts, rd.wh, rd.wh)
            else:
                rollup.add(rd.ts, rd.wh)
        if any(p.outcomes[i] is not Outcome.DUPLICATE for i in indices):
            p.seen.add(key)
        if changed:
            p.states[key] = state
    return p


many_meters_strategy = st.lists(
    # meter 1 is a register, 2 an interval meter, 3 unknown; ten-minute steps span several hours
    # (few timestamps and values, so repeats, conflicts and backwards readings are common)
    st.tuples(st.integers(1, 3), st.integers(0, 20), st.integers(0, 8)).map(lambda t: (t[0], T0 + t[1] * 600_000, t[2] * 7)),
    max_size=60,
)


@settings(max_examples=examples(300), deadline=None)
@given(stored=readings_strategy, incoming=many_meters_strategy)
def test_property_plan_matches_the_straightforward_reference(stored, incoming):
    by_ts = dict((T0 + (ts - T0) * 600, wh) for ts, wh in stored)  # stored history, same ten-minute grid
    history = list(zip(sorted(by_ts), sorted(by_ts.values())))
    fake = FakeStored({M1: history, M2: history})
    states = {M1: fake.state(M1, "register"), M2: fake.state(M2, "interval")}
    readings = [r(ts, wh, meter=m) for m, ts, wh in incoming]
    got = plan_ingest(readings, states, fake.neighbours, RECEIVED)
    want = _reference_plan(readings, states, fake.neighbours, RECEIVED)
    assert got.outcomes == want.outcomes
    assert got.rows == want.rows
    assert got.rollups == want.rollups
    assert got.states == want.states
    assert got.seen == want.seen
    assert set(got.states) <= got.seen  # the store updates state and last_seen in one pass over seen
    # each meter's rows are where ``runs`` says, in timestamp order
    for key, (start, end) in got.runs.items():
        run = got.rows[start:end]
        assert {row[:2] for row in run} == {key} and [row[2] for row in run] == sorted(row[2] for row in run)
    assert sum(end - start for start, end in got.runs.values()) == len(got.rows)


def test_a_retired_meter_takes_late_readings_up_to_its_final_one_and_refuses_the_rest():
    fake = FakeStored({M1: [(T0, 1000), (T0 + 600, 1600)]})
    states = {M1: MeterState("register", T0 + 600, 1600, retired_ts=T0 + 600)}
    p = plan_ingest([r(T0 + 300, 1300), r(T0 + 600, 1600), r(T0 + 601, 1601), r(T0 + 900, 1900)], states, fake.neighbours, RECEIVED)
    assert p.outcomes == [Outcome.STORED, Outcome.DUPLICATE, Outcome.RETIRED, Outcome.RETIRED]
    assert [row[2] for row in p.rows] == [T0 + 300]
    assert p.states[M1].retired_ts == T0 + 600  # carried with the meter's new state
    assert p.seen == {M1}  # the late reading is news


def test_refused_readings_of_a_retired_meter_are_no_sign_of_life():
    fake = FakeStored({M1: [(T0, 1000)]})
    states = {M1: MeterState("register", T0, 1000, retired_ts=T0)}
    p = plan_ingest([r(T0 + 60, 1100), r(T0, 1000)], states, fake.neighbours, RECEIVED)
    assert p.outcomes == [Outcome.RETIRED, Outcome.DUPLICATE]
    assert p.seen == set() and p.rows == [] and p.states == {}
