"""The resend buffer, driven by a task.Clock."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from clients.meter.outbox import Outbox


def _outbox(**kw: object) -> tuple[Outbox, Clock]:
    clock = Clock()
    clock.advance(1_764_000_000)
    return Outbox(rng=random.Random(1), **kw), clock  # type: ignore[arg-type]


def test_nothing_is_due_before_the_timeout_then_it_is_resent() -> None:
    box, clock = _outbox(min_rto=0.5, max_rto=10.0)
    box.add(1, b"one", clock.seconds())
    assert box.due(clock.seconds()) == []
    clock.advance(0.44)  # jitter is +-10 %: 0.45..0.55
    assert box.due(clock.seconds()) == []
    clock.advance(0.12)
    assert box.due(clock.seconds()) == [b"one"]
    assert box.resent == 1 and box.pending == 1 and box.sent == 1


def test_backoff_doubles_up_to_the_cap() -> None:
    box, clock = _outbox(min_rto=0.5, max_rto=4.0)
    box.add(1, b"x", clock.seconds())
    times = []
    start = clock.seconds()
    for _ in range(2000):  # 10 ms steps over 20 s
        clock.advance(0.01)
        if box.due(clock.seconds()):
            times.append(clock.seconds() - start)
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    # 0.5, 1, 2, 4, 4, 4... each within +-10 % jitter (+ one 10 ms step)
    expected = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for gap, want in zip(gaps, expected):
        assert want * 0.9 - 0.011 <= gap <= want * 1.1 + 0.011
    assert max(gaps) <= 4.0 * 1.1 + 0.011


def test_ack_forgets_and_ignores_unknown_seqs() -> None:
    box, clock = _outbox()
    for seq in (1, 2, 3):
        box.add(seq, f"r{seq}".encode(), clock.seconds())
    clock.advance(0.03)
    assert box.ack([2, 2, 99], clock.seconds()) == 1
    assert box.pending == 2 and box.acked == 1 and box.seqs() == [1, 3]
    assert box.srtt == pytest.approx(0.03)
    clock.advance(1.0)
    assert sorted(box.due(clock.seconds())) == [b"r1", b"r3"]
    box.ack([1, 3], clock.seconds())
    assert box.pending == 0 and box.next_due() is None
    assert box.due(clock.seconds() + 100) == []


def test_rto_follows_the_measured_round_trip_with_karns_rule() -> None:
    box, clock = _outbox(min_rto=0.05, max_rto=10.0)
    for seq in range(1, 21):
        box.add(seq, b"x", clock.seconds())
        clock.advance(0.2)
        box.ack([seq], clock.seconds())
    assert box.srtt == pytest.approx(0.2, rel=0.05)
    assert box.initial_rto() == pytest.approx(0.8, rel=0.05)
    # A reading acked after a resend is not timed (its RTT is ambiguous).
    box.add(100, b"y", clock.seconds())
    clock.advance(5.0)
    assert box.due(clock.seconds()) == [b"y"]
    box.ack([100], clock.seconds())
    assert box.srtt == pytest.approx(0.2, rel=0.05)


def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    box, clock = _outbox(capacity=3)
    evicted = [box.add(seq, str(seq).encode(), clock.seconds()) for seq in range(1, 6)]
    assert evicted == [None, None, None, 1, 2]
    assert box.seqs() == [3, 4, 5] and box.dropped == 2 and box.pending == 3
    assert box.ack([1, 2], clock.seconds()) == 0  # late acks of dropped readings are harmless
    clock.advance(1.0)
    assert sorted(box.due(clock.seconds())) == [b"3", b"4", b"5"]


def test_expedite_makes_everything_due_and_caps_the_timeout() -> None:
    box, clock = _outbox(min_rto=0.5, max_rto=30.0)
    box.add(1, b"a", clock.seconds())
    for _ in range(6):  # back off to about 30 s
        clock.advance(40)
        box.due(clock.seconds())
    clock.advance(5.0)  # half-way through a ~30 s backoff
    box.expedite(clock.seconds(), max_rto=1.0)
    assert box.due(clock.seconds()) == [b"a"]
    clock.advance(1.11)
    assert box.due(clock.seconds()) == [b"a"]


def test_due_respects_a_limit_and_the_rest_stay_due() -> None:
    box, clock = _outbox()
    for seq in range(10):
        box.add(seq, bytes([seq]), clock.seconds())
    clock.advance(1.0)
    first = box.due(clock.seconds(), limit=4)
    rest = box.due(clock.seconds())
    assert len(first) == 4 and len(rest) == 6 and set(first) | set(rest) == {bytes([s]) for s in range(10)}


def test_a_seq_cannot_be_added_twice() -> None:
    box, clock = _outbox()
    box.add(1, b"a", clock.seconds())
    with pytest.raises(ValueError):
        box.add(1, b"b", clock.seconds())


def test_expedite_leaves_readings_still_in_flight_alone() -> None:
    box, clock = _outbox(min_rto=0.5, max_rto=30.0)
    box.add(1, b"old", clock.seconds())
    clock.advance(5.0)
    box.due(clock.seconds())  # resent once, now backed off to ~1 s
    clock.advance(0.9)
    box.add(2, b"new", clock.seconds())
    clock.advance(0.1)
    box.expedite(clock.seconds(), max_rto=1.0)
    assert box.due(clock.seconds()) == [b"old"]  # "new" was sent 0.1 s ago and may be acked any moment
    clock.advance(0.45)
    assert box.due(clock.seconds()) == [b"new"]  # but not later than its own timeout
