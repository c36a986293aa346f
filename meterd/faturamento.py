"""The billing run on the reactor: one batch read, drafted and written at a time.

A thin adapter over :mod:`meterd.billing_run` (the rules) and the store
(:meth:`~meterd.store.bill_sql.BillSql.bill_batch`, :meth:`~meterd.store.bill_sql.BillSql.issue_bills`):
the reactor only starts each batch's transactions and waits. A batch is read
(and drafted, on the reader thread) while the previous one is written, so the
store's reader and writer threads work at the same time, and the reactor
stays free for ingest and HTTP between batches. Memory holds two batches.

A run is resumable because everything it did is in the store: each batch's
bills, ledger values and the run's counts and cursor (the last customer id
done) commit together. Killed, the run stays ``executando`` in the store; the
next start of the same ``periodo`` resumes it from its cursor, with the run's
own clock (so the same months, issue and due dates), and a customer already
issued for the month is never issued again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from functools import partial
from zoneinfo import ZoneInfo

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd import billing_run, periods
from meterd.bill_cache import BillCache
from meterd.billing_run import DONE, INTERRUPTED, RUNNING, STALE_MS, Counts, Draft, Run, Target
from meterd.store.base import Store
from meterd.tariff import Tariff

__all__ = ["AlreadyRunning", "BillingRuns", "IssuedBills", "NoCompany"]

log = Logger()


class AlreadyRunning(Exception):
    """A run is being run (here or, on a shared store, by another process); None while one is being started."""

    def __init__(self, run: Run | None) -> None:
        super().__init__("a billing run is being started" if run is None else f"billing run {run.run_id} is running")
        self.run = run


class NoCompany(Exception):
    """The tariff has no ``[empresa]``: a bill cannot be issued without its issuer and payment codes."""


class IssuedBills:
    """Issued bills' bytes, from the store, the most recently asked kept in memory.

    Safe on a shared store too: an issued bill never changes.
    """

    def __init__(self, store: Store, max_entries: int = 5_000) -> None:
        self.store = store
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    async def get(self, customer_id: str, referencia: str) -> bytes | None:
        key = (customer_id, referencia)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        found = await self.store.issued_bill(customer_id, referencia)
        if found is not None and self.max_entries:
            self._entries[key] = found
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return found


class BillingRuns(service.Service):
    """Starts, resumes and runs billing runs, one at a time in this process."""

    def __init__(self, store: Store, tariff: Tariff, clock: IReactorTime, tz: str, previews: BillCache, batch: int = billing_run.BATCH) -> None:
        self.store = store
        self.tariff = tariff
        self.clock = clock
        self.tz = ZoneInfo(tz)
        self.previews = previews
        self.batch = batch
        self.current: Run | None = None
        self._starting = False
        self.task: Deferred[None] | None = None
        self._stopping = False

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def startService(self) -> None:
        super().startService()
        if not self.store.shared:  # this process is the store's only one: a run still marked as running was cut short
            self.store.interrupt_runs("meterd stopped during the run").addErrback(
                lambda failure: log.failure("cannot mark the billing runs cut short", failure)
            )

    def stopService(self) -> Deferred[None]:
        """Stop after the batch in flight; the run stays resumable."""
        super().stopService()
        self._stopping = True
        return self.task if self.task is not None else succeed(None)

    async def start(self, periodo: int) -> tuple[str, Run]:
        """Start a run of ``periodo`` (months back, in each customer's zone), or resume the one that was cut short."""
        if self.tariff.empresa is None:
            raise NoCompany()
        if self.current is not None or self._starting:
            raise AlreadyRunning(self.current)
        now = self.now_ms()
        year, month = periods.months_back(now, self.tz, periodo)
        # Unshared, a run the store holds as running is not this process's (it has none): it was cut short.
        stale_before = now - STALE_MS if self.store.shared else now
        self._starting = True
        try:
            action, run = await self.store.start_run(periodo, f"{year:04d}-{month:02d}", now, stale_before)
        finally:
            self._starting = False
        if action == "ativa":
            raise AlreadyRunning(run)
        self.current = run
        self._stopping = False
        log.info("billing run {id} {action}: periodo {periodo}, {customers} customers", id=run.run_id, action=action,
                 periodo=periodo, customers=run.customers)
        self.task = Deferred.fromCoroutine(self._run(run)).addErrback(self._failed, run)
        return action, run

    async def _run(self, run: Run) -> None:
        empresa = self.tariff.empresa
        assert empresa is not None
        targets: dict[str, Target] = {}
        target = partial(billing_run.target_of, run.now_ms, periodo=run.periodo, cache=targets)
        make = partial(billing_run.draft, tariff=self.tariff, empresa=empresa, now_ms=run.now_ms)
        finalize = partial(billing_run.finalize, empresa=empresa)
        reading = self.store.bill_batch(run.cursor, self.batch, target, make)
        try:
            while True:
                last, items = await reading
                if last is None:
                    break
                if self._stopping:
                    self.current = None
                    await self.store.finish_run(run.run_id, INTERRUPTED, self.now_ms(), "meterd stopped during the run")
                    return
                reading = self.store.bill_batch(last, self.batch, target, make)  # the next batch, read while this one is written
                drafts: list[Draft] = [d for _, d in items if d is not None]
                counts = Counts(processed=len(items), already=sum(1 for s, _ in items if s.already),
                                skipped=sum(1 for s, d in items if d is None and not s.already))
                issued, done = await self.store.issue_bills(run.run_id, drafts, finalize, counts, last, self.now_ms())
                self.previews.issued({cid for cid, _ in issued})
                self.current = _advanced(self.current or run, done, last)
        finally:
            reading.addErrback(lambda _: None)  # a read ahead nobody will use
        await self.store.finish_run(run.run_id, DONE, self.now_ms(), None)
        finished = self.current or run
        log.info("billing run {id} done: {issued} bills issued, {already} already issued, {adjustments} adjustments",
                 id=run.run_id, issued=finished.issued, already=finished.already, adjustments=finished.adjustments)
        self.current = None

    def _failed(self, failure: Failure, run: Run) -> Deferred[None]:
        log.failure("billing run {id} failed", failure, id=run.run_id)
        self.current = None
        reason = failure.getErrorMessage()
        return self.store.finish_run(run.run_id, INTERRUPTED, self.now_ms(), reason).addErrback(lambda _: None)


def _advanced(run: Run, done: Counts, cursor: str) -> Run:
    """The run's counts after a batch, as the store now holds them."""
    return replace(
        run, processed=run.processed + done.processed, issued=run.issued + done.issued, already=run.already + done.already,
        skipped=run.skipped + done.skipped, adjustments=run.adjustments + done.adjustments, errors=run.errors + done.errors,
        total_cents=run.total_cents + done.total_cents, cursor=cursor, state=RUNNING,
    )
