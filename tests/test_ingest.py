"""Group commit: when ``Ingest`` flushes, what it answers, and what it never does.

Time is a ``task.Clock``; the store is a fake whose flushes complete only when
the test says so, which makes "one flush at a time" and "acks only after the
commit" observable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from meterd.ingest import Ingest, Overloaded
from meterd.metrics import Metrics
from meterd.readings import Outcome, Reading
from meterd.store.base import StoreError
from meterd.store.sqlite import SqliteStore

C = "12345678909"
T0 = 1_764_000_000_000
ADDR = ("192.0.2.7", 40000)
ADDR2 = ("192.0.2.8", 40001)


class FakeStore:
    """Records each flush; answers at once (``auto``) or when ``finish`` is called."""

    def __init__(self, decide: Callable[[Reading], Outcome] | None = None, *, auto: bool = True) -> None:
        self.decide = decide or (lambda r: Outcome.STORED)
        self.auto = auto
        self.flushes: list[tuple[list[Reading], int]] = []
        self.waiting: list[Deferred[list[Outcome]]] = []
        self.fail_with: Exception | None = None

    def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]:
        self.flushes.append((list(readings), received_ms))
        if self.fail_with is not None:
            return fail(self.fail_with)
        outcomes = [self.decide(r) for r in readings]
        if self.auto:
            return succeed(outcomes)
        d: Deferred[list[Outcome]] = Deferred()
        d.outcomes = outcomes  # type: ignore[attr-defined]
        self.waiting.append(d)
        return d

    def finish(self) -> None:
        d = self.waiting.pop(0)
        d.callback(d.outcomes)  # type: ignore[attr-defined]

    def sizes(self) -> list[int]:
        return [len(rs) for rs, _ in self.flushes]


def rd(i: int, meter: int = 1, seq: int | None = None) -> Reading:
    return Reading(C, meter, T0 + i * 1000, 1000 + i, seq)


def make(store: Any, **kwargs: Any) -> tuple[Ingest, Clock, Metrics, list[tuple[str, int, list[int], Any]]]:
    clock = Clock()
    clock.advance(1_764_000_100)
    metrics = Metrics()
    ingest = Ingest(store, clock, metrics, **kwargs)
    acks: list[tuple[str, int, list[int], Any]] = []
    ingest.send_acks = lambda rows: acks.extend((c, m, list(seqs), (host, port)) for c, m, seqs, host, port in rows)
    ingest.startService()
    return ingest, clock, metrics, acks


def metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


# -- when it flushes ---------------------------------------------------------------


def test_flushes_after_the_interval():
    store = FakeStore()
    ingest, clock, metrics, _ = make(store, flush_interval=0.05)
    ingest.submit(rd(1))
    ingest.submit(rd(2))
    assert store.flushes == [] and ingest.pending == 2
    clock.advance(0.049)
    assert store.flushes == []
    clock.advance(0.001)
    assert store.flushes == [([rd(1), rd(2)], 1_764_000_100_050)]
    assert ingest.pending == 0
    assert metric(metrics, "meterd_flushes_total") == 1
    assert metric(metrics, "meterd_flush_seconds_count") == 1
    assert clock.getDelayedCalls() == []


def test_the_interval_counts_from_the_first_pending_reading():
    store = FakeStore()
    ingest, clock, _, _ = make(store, flush_interval=0.05)
    ingest.submit(rd(1))
    clock.advance(0.04)
    ingest.submit(rd(2))  # does not push the deadline back
    clock.advance(0.01)
    assert store.sizes() == [2]


def test_flushes_at_once_when_the_batch_is_full():
    store = FakeStore()
    ingest, clock, _, _ = make(store, flush_interval=10, batch_size=3)
    ingest.submit(rd(1))
    ingest.submit(rd(2))
    assert store.flushes == []
    ingest.submit(rd(3))
    assert store.sizes() == [3]
    assert clock.getDelayedCalls() == []  # the interval timer was cancelled


def test_flush_size_pending_starts_a_flush_without_waiting_for_the_interval():
    store = FakeStore(auto=False)
    ingest, clock, _, _ = make(store, flush_interval=10, flush_size=3, batch_size=5)
    ingest.submit(rd(1))
    ingest.submit(rd(2))
    assert store.flushes == []
    ingest.submit(rd(3))
    assert store.sizes() == [3]  # not a full batch, but enough to flush at once
    for i in range(4, 12):  # arrive while the first flush is written
        ingest.submit(rd(i))
    store.finish()
    assert store.sizes() == [3, 5]  # answered with 8 pending: the next takes a full batch at once
    store.finish()
    assert store.sizes() == [3, 5, 3]  # 3 left: still flush_size, no interval
    store.finish()
    ingest.submit(rd(12))
    ingest.submit(rd(13))
    assert store.sizes() == [3, 5, 3]  # fewer than flush_size wait for the interval
    clock.advance(10)
    assert store.sizes() == [3, 5, 3, 2]
    store.finish()
    assert [r for rs, _ in store.flushes for r in rs] == [rd(i) for i in range(1, 14)]


def test_flush_size_is_at_most_the_batch_size():
    ingest, _, _, _ = make(FakeStore(), flush_size=50, batch_size=20)
    assert ingest.flush_size == 20


def test_one_flush_at_a_time_and_the_backlog_follows_in_batches():
    store = FakeStore(auto=False)
    ingest, clock, metrics, _ = make(store, flush_interval=1, batch_size=3)
    for i in range(3):
        ingest.submit(rd(i))
    assert store.sizes() == [3]
    for i in range(3, 10):
        ingest.submit(rd(i))
    clock.advance(5)  # time passes, the first flush has not committed: no second transaction
    assert store.sizes() == [3]
    assert ingest.pending == 7
    store.finish()
    assert store.sizes() == [3, 3]  # a full batch waits for nothing
    store.finish()
    assert store.sizes() == [3, 3, 3]
    store.finish()
    assert store.sizes() == [3, 3, 3]  # the last one waits for the interval
    clock.advance(1)
    assert store.sizes() == [3, 3, 3, 1]
    store.finish()
    assert [r for rs, _ in store.flushes for r in rs] == [rd(i) for i in range(10)]
    assert metric(metrics, "meterd_flushes_total") == 4
    assert metric(metrics, "meterd_pending_readings") == 0


def test_pending_gauge_shows_what_waits_behind_a_flush():
    store = FakeStore(auto=False)
    ingest, _, metrics, _ = make(store, batch_size=2)
    for i in range(5):
        ingest.submit(rd(i))
    assert metric(metrics, "meterd_pending_readings") == 0  # set when the flush took its batch
    store.finish()
    assert metric(metrics, "meterd_pending_readings") == 1  # the second flush took 2 of 3


# -- what it answers ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_http_waiters_get_their_outcome_after_the_commit():
    outcomes = {0: Outcome.STORED, 1: Outcome.DUPLICATE, 2: Outcome.CONFLICT}
    store = FakeStore(lambda r: outcomes[r.ts // 1000 - T0 // 1000], auto=False)
    ingest, clock, metrics, _ = make(store)
    waiters = [ingest.submit_waiting(rd(i)) for i in range(3)]
    clock.advance(1)
    assert not any(w.called for w in waiters)
    store.finish()
    assert [await w for w in waiters] == [Outcome.STORED, Outcome.DUPLICATE, Outcome.CONFLICT]
    assert metric(metrics, "meterd_readings_total", {"outcome": "stored"}) == 1
    assert metric(metrics, "meterd_readings_total", {"outcome": "duplicate"}) == 1
    assert metric(metrics, "meterd_readings_total", {"outcome": "conflict"}) == 1


def test_acks_are_grouped_per_meter_and_sent_only_after_the_commit():
    refused = {5: Outcome.CONFLICT, 6: Outcome.BACKWARDS, 7: Outcome.UNKNOWN_METER}

    def decide(r: Reading) -> Outcome:
        if r.seq in refused:
            return refused[r.seq]
        return Outcome.DUPLICATE if r.seq == 2 else Outcome.STORED

    store = FakeStore(decide, auto=False)
    ingest, clock, _, acks = make(store)
    ingest.submit(rd(1, seq=1), ADDR)
    ingest.submit(rd(2, meter=2, seq=10), ADDR2)
    ingest.submit(rd(3, seq=2), ADDR)  # duplicate: acked again
    ingest.submit(rd(4, seq=None), ADDR)  # no seq: nothing to ack
    ingest.submit(rd(5, seq=5), ADDR)  # conflict
    ingest.submit(rd(6, seq=6), ADDR)  # register backwards
    ingest.submit(rd(7, meter=3, seq=7), ADDR)  # unknown meter
    ingest.submit(rd(8, seq=3), ADDR)
    ingest.submit(rd(9, meter=2, seq=11), ADDR2)
    ingest.submit(rd(10, seq=4))  # no address (HTTP without a waiter): nobody to ack
    clock.advance(1)
    assert acks == []
    store.finish()
    assert acks == [(C, 1, [1, 2, 3], ADDR), (C, 2, [10, 11], ADDR2)]


def test_many_seqs_of_one_meter_are_one_ack_call():
    # Splitting into datagrams of at most 100 seqs is the UDP layer's job (test_udp).
    store = FakeStore()
    ingest, clock, _, acks = make(store)
    for i in range(250):
        ingest.submit(rd(i, seq=i), ADDR)
    clock.advance(1)
    assert acks == [(C, 1, list(range(250)), ADDR)]


def test_observers_see_each_committed_flush_and_cannot_break_it():
    store = FakeStore()
    ingest, clock, _, acks = make(store)
    seen: list[tuple[list[Reading], list[Outcome], int]] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("observer bug")

    ingest.observers += [broken, lambda rs, os, ms: seen.append((list(rs), list(os), ms))]
    ingest.submit(rd(1, seq=1), ADDR)
    clock.advance(1)
    assert seen == [([rd(1, seq=1)], [Outcome.STORED], 1_764_000_101_000)]
    assert acks == [(C, 1, [1], ADDR)]


def test_http_answers_wait_for_the_observers_and_their_deferreds_and_acks_do_not():
    """A meter only stops resending on its ack: it goes at the commit. An HTTP poster may ask for the
    alarm its reading raised next: its answer waits until the alarm is settled."""
    store = FakeStore()
    ingest, clock, _, acks = make(store)
    order: list[str] = []
    settling: Deferred[None] = Deferred()

    def deciding(*_: Any) -> Deferred[None]:
        order.append(f"observed after {len(acks)} acks")
        return settling

    ingest.observers.append(deciding)
    ingest.submit(rd(1, seq=1), ADDR)
    waiter = ingest.submit_waiting(rd(2))
    clock.advance(1)
    assert order == ["observed after 1 acks"] and acks == [(C, 1, [1], ADDR)]
    assert not waiter.called  # committed, not answered yet
    settling.callback(None)
    assert waiter.called


def test_a_failed_observer_deferred_does_not_hold_the_answers():
    store = FakeStore()
    ingest, clock, _, acks = make(store)
    ingest.observers.append(lambda *_: fail(RuntimeError("alarm store down")))
    ingest.submit(rd(1, seq=1), ADDR)
    clock.advance(1)
    assert acks == [(C, 1, [1], ADDR)]
    ingest.submit(rd(2, seq=2), ADDR)  # and the next flush goes on
    clock.advance(1)
    assert acks[-1] == (C, 1, [2], ADDR)


# -- overload and failure ---------------------------------------------------------------


def test_a_batch_takes_what_fits_and_counts_the_rest():
    store = FakeStore(auto=False)
    ingest, clock, _, acks = make(store, max_pending=5, batch_size=100)
    ingest.submit(rd(0, seq=0), ADDR)
    assert ingest.submit_many([rd(i, seq=i) for i in range(1, 8)], [ADDR] * 7) == 3
    assert ingest.pending == 5
    clock.advance(1)
    store.finish()
    assert [s for _, _, seqs, _ in acks for s in seqs] == [0, 1, 2, 3, 4]


def test_overloaded_past_max_pending():
    store = FakeStore(auto=False)
    ingest, clock, _, _ = make(store, batch_size=2, max_pending=3)
    ingest.submit(rd(0))
    ingest.submit(rd(1))  # flushing: these two no longer count as pending
    for i in range(2, 5):
        ingest.submit(rd(i))
    with pytest.raises(Overloaded):
        ingest.submit(rd(5))
    with pytest.raises(Overloaded):
        ingest.submit_waiting(rd(5))
    assert ingest.pending == 3
    store.finish()  # room again
    ingest.submit(rd(6))
    assert ingest.pending == 2


@pytest_twisted.ensureDeferred
async def test_a_failed_flush_errbacks_waiters_and_acks_nothing():
    store = FakeStore()
    store.fail_with = StoreError("disk on fire")
    ingest, clock, metrics, acks = make(store)
    waiter = ingest.submit_waiting(rd(1, seq=1))
    ingest.submit(rd(2, seq=2), ADDR)
    clock.advance(1)
    with pytest.raises(StoreError, match="disk on fire"):
        await waiter
    assert acks == []
    assert metric(metrics, "meterd_flush_failures_total") == 1
    assert metric(metrics, "meterd_flushes_total") == 0
    assert metric(metrics, "meterd_readings_total", {"outcome": "stored"}) == 0
    # The store recovers: later readings flush and are acked as usual.
    store.fail_with = None
    ingest.submit(rd(3, seq=3), ADDR)
    clock.advance(1)
    assert acks == [(C, 1, [3], ADDR)]
    assert store.sizes() == [2, 1]


def test_a_store_that_raises_instead_of_failing_is_a_failed_flush():
    class Raising(FakeStore):
        def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]:
            raise StoreError("the store is closed")

    ingest, clock, metrics, acks = make(Raising())
    ingest.submit(rd(1, seq=1), ADDR)
    clock.advance(1)
    assert metric(metrics, "meterd_flush_failures_total") == 1
    assert acks == [] and ingest.pending == 0


# -- stopping -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stop_drains_everything_pending():
    store = FakeStore(auto=False)
    ingest, clock, _, acks = make(store, flush_interval=60, batch_size=4)
    for i in range(10):
        ingest.submit(rd(i, seq=i), ADDR)
    assert store.sizes() == [4]
    stopped = ingest.stopService()
    assert not stopped.called
    while store.waiting:
        store.finish()
    await stopped
    assert store.sizes() == [4, 4, 2]  # no waiting for the 60 s interval
    assert [s for _, _, seqs, _ in acks for s in seqs] == list(range(10))
    assert ingest.pending == 0


@pytest_twisted.ensureDeferred
async def test_stop_with_nothing_pending_is_immediate():
    store = FakeStore()
    ingest, _, _, _ = make(store)
    await ingest.stopService()
    assert store.flushes == []


@pytest_twisted.ensureDeferred
async def test_stop_drains_into_a_real_store(tmp_path: Path):
    from meterd.store.base import Customer

    store = SqliteStore(str(tmp_path / "db.sqlite3"))
    await store.start()
    try:
        await store.create_customer(Customer(C, "Ana", "mono", 1, 1, "America/Sao_Paulo", "h", 0))
        await store.create_meter(C, "register", "ab" * 32, 0)
        ingest, _, _, acks = make(store, flush_interval=3600, batch_size=50)
        for i in range(120):
            ingest.submit(rd(i, seq=i), ADDR)
        await ingest.stopService()
        [status] = await store.meter_status(C)
        assert (status.last_ts, status.last_wh) == (rd(119).ts, rd(119).wh)
        assert sorted(s for _, _, seqs, _ in acks for s in seqs) == list(range(120))
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_building_changes_nothing_and_starting_tunes_the_collector_until_stop(tmp_path: Path) -> None:
    """makeService only builds: the process's GC and switch interval change at start, and come back at stop."""
    import gc
    import sys

    from meterd.service import Options, makeService
    from meterd.tuning import GC_THRESHOLDS, SWITCH_INTERVAL
    from tests.support import start_server

    before = (gc.get_threshold(), sys.getswitchinterval())
    config = Options()
    config.parseOptions(["--data-dir", str(tmp_path / "built")])
    makeService(config)
    assert (gc.get_threshold(), sys.getswitchinterval()) == before
    assert not (tmp_path / "built" / "operator.token").exists()  # nothing written either
    server = await start_server(tmp_path / "started")
    try:
        assert (gc.get_threshold(), sys.getswitchinterval()) == (GC_THRESHOLDS, SWITCH_INTERVAL)
    finally:
        await server.stop()
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


@pytest_twisted.ensureDeferred
async def test_the_server_freezes_what_it_loaded_at_start_and_thaws_it_at_stop(tmp_path: Path) -> None:
    """A full collection must not traverse the directory: frozen objects are skipped."""
    import gc

    from meterd.store.base import Customer
    from tests.support import start_server

    gc.unfreeze()
    server = await start_server(tmp_path, freeze_heap=True)
    try:
        code, _, _ = await server.call("POST", "/cadCliente", json_body={"id": C, "name": "Fulano", "ligacao": "mono"})
        assert code == 201
    finally:
        await server.stop()
    assert gc.get_freeze_count() == 0
    server = await start_server(tmp_path, freeze_heap=True)  # the customer is now loaded at start
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        loaded = server.core.directory.customers[C]
        assert isinstance(loaded, Customer)
        # the frozen generation is what gc.get_objects() no longer lists among the collectable ones
        assert not any(obj is loaded for obj in gc.get_objects())
    finally:
        await server.stop()
    assert gc.get_freeze_count() == 0
    assert any(obj is loaded for obj in gc.get_objects())
    server = await start_server(tmp_path)  # a host that says no (these tests): the heap stays the host's
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await server.stop()


# -- work between flushes (a meter retired or replaced) ------------------------------------


def test_exclusive_work_waits_for_the_flush_in_progress_and_holds_the_next() -> None:
    store = FakeStore(auto=False)
    ingest, clock, _, _ = make(store, flush_size=2)
    ingest.submit(rd(1))
    ingest.submit(rd(2))  # flush_size: a flush starts at once
    assert store.sizes() == [2]
    work: list[Deferred[str]] = []

    def retire() -> Deferred[str]:
        work.append(Deferred())
        return work[-1]

    done = ingest.exclusively(retire)
    assert work == []  # the flush in progress runs first
    ingest.submit(rd(3))
    ingest.submit(rd(4))
    store.finish()
    assert len(work) == 1 and store.sizes() == [2]  # the work runs; the pending readings wait for it
    clock.advance(1)
    assert store.sizes() == [2]
    results: list[str] = []
    done.addCallback(results.append)
    work[0].callback("retired")
    assert results == ["retired"]
    assert store.sizes() == [2, 2]  # and flush after it, judged by the state it left
    store.finish()


def test_exclusive_work_that_fails_frees_the_flushes_and_its_caller_gets_the_error() -> None:
    store = FakeStore()
    ingest, clock, _, _ = make(store)
    failed = ingest.exclusively(lambda: fail(ValueError("refused")))
    errors: list[Any] = []
    failed.addErrback(errors.append)
    assert errors and errors[0].check(ValueError)
    ingest.submit(rd(1))
    clock.advance(1)
    assert store.sizes() == [1]


def test_a_reading_screened_before_its_meter_was_retired_is_dropped_and_counted_at_the_flush() -> None:
    store = FakeStore(lambda r: Outcome.RETIRED if r.ts > T0 + 1000 else Outcome.STORED)
    ingest, clock, metrics, acks = make(store)
    ingest.submit(rd(1, seq=1), ADDR)
    ingest.submit(rd(2, seq=2), ADDR)
    clock.advance(1)
    assert acks == [(C, 1, [1], ADDR)]  # no ack for the refused one: it is not stored
    assert metric(metrics, "meterd_datagrams_dropped_total", {"reason": "meter_retired"}) == 1
    assert metric(metrics, "meterd_readings_total", {"outcome": "meter_retired"}) == 1
