"""Group commit: readings from every transport, one transaction per flush.

A reading waits at most one flush interval (less once enough are pending) and
is answered only after the transaction holding it commits: an HTTP caller's
Deferred fires, a UDP sender gets a signed ack of its ``seq``. Pending readings
are bounded, so overload turns into counted drops, never into memory growth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd.metrics import Metrics
from meterd.readings import Outcome, Reading
from meterd.store.base import Store

log = Logger()

Address = tuple[str, int]
Reply = Deferred | Address | None  # an HTTP waiter, a UDP sender to ack (exactly a tuple), or nobody
# customer_id, meter_id, seqs, and the host and port the readings came from (Twisted's
# UDP ports give (host, port) for IPv6 too): flat, as a UDP worker's frame carries it
AckRow = tuple[str, int, list[int], str, int]
AckSender = Callable[[list[AckRow]], None]  # a flush's acks, one row per meter
Observer = Callable[[Sequence[Reading], Sequence[Outcome], int], "Deferred[Any] | None"]
T = TypeVar("T")


class Overloaded(Exception):
    """Too many readings are pending; the caller drops or answers 503."""


class Ingest(Service):
    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        metrics: Metrics,
        *,
        flush_interval: float = 0.05,
        # A flush starts at once, without waiting for the interval, when this
        # many readings are pending: under heavy load the interval only adds
        # latency, and a batch this size already pays for the flush's fixed
        # cost (see _flushed).
        flush_size: int = 3_000,
        # A flush costs nearly the same for 5,000 readings as for 10,000 (each
        # meter's index pages are written and synced once either way): under a
        # backlog, bigger batches are what lets the writer catch up.
        batch_size: int = 20_000,
        max_pending: int = 200_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.flush_size = min(flush_size, batch_size)
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.send_acks: AckSender | None = None
        self.observers: list[Observer] = []
        self._readings: list[Reading] = []
        self._replies: list[Reply] = []
        self._timer: IDelayedCall | None = None
        self._flushing: Deferred[Any] | None = None  # the flush (or exclusive work) being written or answered
        self._exclusive: list[Callable[[], None]] = []  # work waiting for the flush in progress to end

    def submit(self, reading: Reading, reply: Reply = None) -> None:
        readings = self._readings
        if len(readings) >= self.max_pending:
            raise Overloaded()
        readings.append(reading)
        self._replies.append(reply)
        self._added()

    def submit_many(self, readings: list[Reading], replies: list[Reply]) -> int:
        """Submit a worker's batch at once; return how many did not fit (dropped as overloaded)."""
        room = self.max_pending - len(self._readings)
        over = max(0, len(readings) - room)
        if over:
            readings, replies = readings[:room], replies[:room]
        if readings:
            self._readings += readings
            self._replies += replies
            self._added()
        return over

    def _added(self) -> None:
        if self._flushing is None:
            if len(self._readings) >= self.flush_size:
                self._flush_now()
            elif self._timer is None:
                self._timer = self.clock.callLater(self.flush_interval, self._flush_now)

    def submit_waiting(self, reading: Reading) -> Deferred[Outcome]:
        """Submit and get a Deferred that fires with the outcome once committed."""
        waiter: Deferred[Outcome] = Deferred()
        self.submit(reading, waiter)
        return waiter

    @property
    def pending(self) -> int:
        return len(self._readings)

    def _flush_now(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._flushing is None and self._readings:
            self._flushing = self._flush()
            self._flushing.addBoth(self._flushed)

    def exclusively(self, work: Callable[[], Deferred[T]]) -> Deferred[T]:
        """Run ``work`` (a transaction that changes what flushes judge readings by) between two flushes.

        Retiring a meter or storing a replacement's first reading changes a
        meter's newest reading and whether it takes readings at all. A flush
        takes the meters' state when it starts (the store's memory); one
        started while such a change is being written would judge its
        readings by the state before it. So the work waits for the flush in
        progress, and no flush starts until the work is done: pending
        readings wait, and are judged by the state after it.
        """
        result: Deferred[T] = Deferred()

        def start() -> None:
            self._flushing = running = maybeDeferred(work)
            running.addBoth(done)

        def done(outcome: Any) -> None:
            self._flushed(None)  # the next flush starts from the state the work left
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        if self._flushing is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            start()
        else:
            self._exclusive.append(start)
        return result

    def _flushed(self, _: Any) -> None:
        """The last flush is answered: the next starts a whole interval from now, or at once when flush_size are pending.

        From now, after the answers, not from the commit nor from the oldest
        pending reading's arrival: the interval is what lets batches grow when
        they are small, and every flush has per-meter work (acks, alarm
        windows, rollups) and evicts the cached bills of every customer that
        sent, so more, smaller flushes cost more per reading. Writing the next
        batch while the reactor answers the last only adds contention on a
        machine whose cores are busy (the writer and the reactor share one
        GIL). A batch of flush_size already amortizes the flush, so under
        heavy load the next one starts at once and a reading does not wait for
        the interval too; at 10,000 readings/s it never triggers (500 arrive
        per interval). docs/performance.md has the measurements.
        """
        self._flushing = None
        if self._exclusive:
            self._exclusive.pop(0)()
            return
        if len(self._readings) >= self.flush_size or (self._readings and not self.running):
            self._flush_now()
        elif self._readings and self._timer is None:
            self._timer = self.clock.callLater(self.flush_interval, self._flush_now)

    @inlineCallbacks
    def _flush(self) -> Any:
        readings, replies = self._readings[: self.batch_size], self._replies[: self.batch_size]
        del self._readings[: self.batch_size], self._replies[: self.batch_size]
        self.metrics.pending.set(len(self._readings))
        received_ms = int(self.clock.seconds() * 1000)
        started = time.perf_counter()
        try:
            outcomes = yield self.store.ingest(readings, received_ms)
        except Exception as e:
            self.metrics.flush_failures.inc()
            log.failure("flush of {n} readings failed; they were not acknowledged", n=len(readings))
            for reply in replies:
                if isinstance(reply, Deferred):
                    reply.errback(e)
            return
        self.metrics.flushes.inc()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        # The meters' acks at once: a meter asks for no bill and no alarm, it
        # only stops resending. Then the observers (caches evict what these
        # readings change, alarm rules decide), then the HTTP answers: whoever
        # posted a reading sees its effects on the next request. An observer's
        # Deferred (an alarm change being settled) holds those answers until it
        # fires, even in error.
        waiters = self._ack(readings, replies, outcomes)
        waits: list[Deferred[Any]] = []
        for observer in self.observers:
            try:
                result = observer(readings, outcomes, received_ms)
            except Exception:
                log.failure("ingest observer failed")
                continue
            if isinstance(result, Deferred):
                waits.append(result)
        if waits:
            yield DeferredList(waits, consumeErrors=True)
        for waiter, outcome in waiters:
            if not waiter.called:  # a caller that went away may have cancelled it
                waiter.callback(outcome)

    def _ack(
        self, readings: Sequence[Reading], replies: Sequence[Reply], outcomes: Sequence[Outcome]
    ) -> list[tuple[Deferred[Outcome], Outcome]]:
        """Count the outcomes, send the acks; the HTTP waiters and their outcomes, to answer later.

        Acks go where each reading came from: one row per meter and source
        address, so a datagram replayed from elsewhere gets only its own seqs
        acknowledged, to the replayer, and the meter's new readings are always
        acknowledged to the meter.

        Runs on the reactor thread once per flush over thousands of readings,
        so it avoids per-reading Python where C does the same: an Enum hashes
        in Python (``hash(self._name_)``), so outcomes are counted with
        ``list.count`` (identity compares in C) instead of a ``Counter``; and
        ``Deferred`` is an ``Awaitable``, whose ABC ``isinstance`` costs ~1 us
        for every address it is not, so replies are told apart by exact type.
        """
        for outcome, counter in self.metrics.outcomes.items():
            n = outcomes.count(outcome)
            if n:
                counter.inc(n)
        acks: dict[tuple[str, int, Address], AckRow] = {}  # the rows themselves: built once, seqs appended in place
        stored, duplicate, retired = Outcome.STORED, Outcome.DUPLICATE, Outcome.RETIRED
        waiters: list[tuple[Deferred[Outcome], Outcome]] = []
        for reading, reply, outcome in zip(readings, replies, outcomes):
            if reply.__class__ is not tuple:  # an HTTP waiter, or nobody
                if reply is not None:
                    waiters.append((reply, outcome))  # type: ignore[arg-type]  # told apart by exact type, as said above
            elif outcome is stored or outcome is duplicate:
                seq = reading.seq
                if seq is None:
                    continue
                key = (reading[0], reading[1], reply)  # (customer_id, meter_id, where it came from)
                entry = acks.get(key)
                if entry is None:
                    acks[key] = (reading[0], reading[1], [seq], *reply)
                else:
                    entry[2].append(seq)
            elif outcome is retired:  # screened before the meter was retired: dropped as one screened after
                self.metrics.drop("meter_retired")
        if acks and self.send_acks is not None:
            self.send_acks(list(acks.values()))
        return waiters

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        """Flush everything still pending before the process exits."""
        while self._flushing is not None or self._readings:
            self._flush_now()
            if self._flushing is not None:
                await self._flushing
        log.info("ingest drained")
