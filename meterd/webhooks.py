"""Alarm webhooks: each alarm event POSTed to the URLs the operator registered, in order, at least once.

Two parts, both on the reactor:

* :class:`Webhooks`, a service: every ``tick`` (1 s) one short writer
  transaction (``store.hold_webhooks``) saves the progress of the webhooks
  this process delivers (their cursors, the last event id each delivered),
  renews their leases and takes any lease that is free. It runs one
  :class:`Delivery` per webhook it holds, and stops one as soon as it no
  longer holds it (removed, or taken over after this process lost touch
  with the database for longer than the lease).
* :class:`Delivery`, one webhook's loop: read a page of events after its
  cursor (a reader thread), POST the first (treq, a pooled keep-alive
  connection per host, a timeout), and on a 2xx move the cursor to it; on a
  connection error, a timeout or any other status wait (backoff with jitter,
  :mod:`meterd.webhook_retry`) and send the same event again. One event of
  a webhook is in flight at a time, so events arrive in id order, which is
  commit order (per customer, and across customers); a receiver that is slow
  or down holds its own loop only.

At least once: the cursor in memory moves at each 2xx, the stored one at the
next tick, so a crash repeats at most about a second of deliveries, each with
the delivery id it had (``Meterd-Delivery``) for the receiver to drop. A
clean stop saves every cursor and gives the leases back.

Several processes on one PostgreSQL database: a webhook is delivered by the
process holding its lease (``LEASE_S``, renewed every tick, by the
database's clock). One that stops cleanly releases its leases and another
takes them within a tick; one that dies keeps them until they run out, and
the next holder starts from the stored cursor, repeating what the dead one
had not yet saved. A holder that cannot renew stops sending ``LEASE_MARGIN_S``
before its lease would run out, so two never deliver one webhook at once
unless a renewal stalls longer than that margin.

Nothing here waits on ingest: events are read through the readers, cursors
written in one small transaction a second, and a webhook with nothing to do
waits for the alarm service to report new events (``events_stored``) or,
when other processes settle alarms too, for the next tick.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Callable, Sequence
from http.cookiejar import DefaultCookiePolicy
from typing import Any

from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.application.service import Service
from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client as web_client

from meterd import webhook_retry, webhook_wire
from meterd.alarm_book import Event
from meterd.metrics import WEBHOOK_BACKLOG_CAP, Metrics
from meterd.store.base import Store, Webhook, WebhookProgress
from meterd.webhook_wire import EventDetail

__all__ = ["Delivery", "Webhooks", "TICK_S", "LEASE_S", "TIMEOUT_S"]

log = Logger()

TICK_S = 1.0  # how often leases are renewed and cursors saved
LEASE_S = 30.0  # how long a lease lasts without renewal
LEASE_MARGIN_S = 10.0  # a holder stops this long before its lease would run out unrenewed
TIMEOUT_S = 10  # to connect, and again for the answer (--webhook-timeout)
PAGE = 100  # events read at once per webhook: what a webhook holds in memory
READ_RETRY_S = 5.0  # after the store could not be read
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (and discarded); past that the connection is closed


class Webhooks(Service):
    """Delivers the webhooks this process holds; see the module's docstring."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        metrics: Metrics,
        *,
        http: Any = None,
        timeout: float = TIMEOUT_S,
        max_backoff: float = webhook_retry.MAX_DELAY_S,
        tick: float = TICK_S,
        lease: float = LEASE_S,
        jitter: Callable[[], float] = random.random,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.http = http  # treq's API: an HTTPClient over a pooled Agent, made at start unless given (a StubTreq in tests)
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.tick = tick
        self.lease = lease
        self.jitter = jitter
        # Unshared (SQLite): this process is the only one, and a restart takes its leases back at once.
        self.owner = owner or (f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}" if store.shared else "meterd")
        self.deliveries: dict[int, Delivery] = {}
        self._pool: web_client.HTTPConnectionPool | None = None
        self._next: IDelayedCall | None = None
        self._ticking: Deferred[None] | None = None
        self._again = False
        self._store_down = False

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self.http is None:
            self._pool = web_client.HTTPConnectionPool(self.clock, persistent=True)
            agent = web_client.Agent(self.clock, connectTimeout=self.timeout, pool=self._pool)
            # a receiver's cookies are never kept nor sent back
            self.http = HTTPClient(agent, cookiejar=IndexableCookieJar(DefaultCookiePolicy(allowed_domains=[])))
        self._run_tick()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        while self._ticking is not None:
            await self._ticking
        deliveries = list(self.deliveries.values())
        self.deliveries.clear()
        for delivery in deliveries:
            await delivery.stop()
            self.metrics.webhook_gone(delivery.webhook_id, removed=False)
        self.metrics.webhooks_delivering.set(0)
        try:
            await self.store.release_webhooks(self.owner, [d.progress() for d in deliveries])
        except Exception:
            log.failure("the webhooks' cursors could not be saved at stop; the events after the saved ones are sent again")
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    # -- the tick: leases and cursors ----------------------------------------

    def poke(self) -> None:
        """Hold (or let go of) webhooks now rather than at the next tick: one was registered or removed."""
        if not self.running:
            return
        if self._ticking is not None:
            self._again = True
        elif self._next is not None and self._next.active():
            self._next.reset(0)

    def _run_tick(self) -> None:
        self._next = None
        self._again = False
        ticking = self._ticking = Deferred.fromCoroutine(self._hold())

        def done(result: object) -> None:
            self._ticking = None
            if isinstance(result, Failure):
                log.failure("webhook tick failed", result)
            if self.running:
                self._next = self.clock.callLater(0 if self._again else self.tick, self._run_tick)

        ticking.addBoth(done)

    async def _hold(self) -> None:
        started = self.clock.seconds()
        saving = {webhook_id: (d.version, d.progress()) for webhook_id, d in self.deliveries.items() if d.unsaved}
        try:
            held = await self.store.hold_webhooks(self.owner, [p for _, p in saving.values()], int(self.lease * 1000))
        except Exception as e:
            if not self._store_down:
                log.warn("cannot renew the webhooks' leases ({error}); delivering until they would run out", error=str(e))
            self._store_down = True
            return
        if self._store_down:
            log.info("the webhooks' leases are renewed again")
            self._store_down = False
        for webhook_id, (version, _) in saving.items():
            delivery = self.deliveries.get(webhook_id)
            if delivery is not None:
                delivery.saved_version = max(delivery.saved_version, version)
        holding = {w.webhook_id for w in held}
        for webhook_id in [i for i in self.deliveries if i not in holding]:
            self._drop(webhook_id, removed=False)
        until = started + self.lease - LEASE_MARGIN_S
        for webhook in held:
            delivery = self.deliveries.get(webhook.webhook_id)
            if delivery is None and self.running:
                delivery = self.deliveries[webhook.webhook_id] = Delivery(self, webhook)
                log.info("delivering webhook {id} to {url} from event {cursor}", id=webhook.webhook_id, url=webhook_wire.origin(webhook.url),
                         cursor=webhook.last_delivered + 1)
                delivery.start()
            if delivery is not None:
                delivery.adopt(webhook.last_delivered)  # further than this loop got only if another process delivered meanwhile
                delivery.renewed(until, poll=self.store.shared)
        self.metrics.webhooks_delivering.set(len(self.deliveries))
        await self._count_backlogs()

    async def _count_backlogs(self) -> None:
        deliveries = list(self.deliveries.values())
        if not deliveries:
            return
        try:
            counts = await self.store.webhook_backlogs([(d.customer_id, d.cursor) for d in deliveries], WEBHOOK_BACKLOG_CAP)
        except Exception:
            return  # the store is down: the gauges keep their last values until the next tick
        for delivery, n in zip(deliveries, counts):
            if self.deliveries.get(delivery.webhook_id) is delivery:
                self.metrics.webhook_backlog.labels(delivery.label).set(n)

    def _drop(self, webhook_id: int, *, removed: bool) -> None:
        delivery = self.deliveries.pop(webhook_id, None)
        if delivery is not None:
            delivery.stop()
            log.info("webhook {id} is no longer delivered by this process{why}", id=webhook_id, why=" (removed)" if removed else "")
        self.metrics.webhook_gone(webhook_id, removed=removed)
        self.metrics.webhooks_delivering.set(len(self.deliveries))

    # -- what the rest of meterd tells -------------------------------------

    def events_stored(self, events: Sequence[Event]) -> None:
        """Alarm events were committed (an alarm service listener): wake the webhooks they concern."""
        customers = {e.customer_id for e in events}
        for delivery in self.deliveries.values():
            if delivery.customer_id is None or delivery.customer_id in customers:
                delivery.wake()

    def removed(self, webhook_id: int) -> None:
        """The webhook was removed through this process: stop it now."""
        self._drop(webhook_id, removed=True)
        self.poke()


class Delivery:
    """One webhook's loop: its cursor, the page of events read after it, and the attempts to send the first."""

    def __init__(self, hooks: Webhooks, webhook: Webhook) -> None:
        self.hooks = hooks
        self.webhook_id = webhook.webhook_id
        self.label = str(webhook.webhook_id)
        self.url = webhook.url
        self.customer_id = webhook.customer_id
        self.secret = webhook.secret
        self.cursor = webhook.last_delivered
        self.last_success_ms = webhook.last_success_ms
        self.last_failure_ms = webhook.last_failure_ms
        self.last_error = webhook.last_error
        self.failures = webhook.failures
        self.version = self.saved_version = 0  # changes made / saved by a tick
        self.held_until = 0.0  # the reactor clock's seconds until which this process may send
        self.page: deque[EventDetail] = deque()
        self._running = False
        self._done: Deferred[None] = succeed(None)
        self._waiting: Deferred[None] | None = None  # idle: no event to send, or the lease to renew
        self._woken = False
        self._sleeping: Deferred[None] | None = None  # backing off after a failure
        self._request: Deferred[Any] | None = None

    def stopped(self) -> bool:
        """A call, not an attribute: it may change across any await (type checkers narrow attributes)."""
        return not self._running

    @property
    def unsaved(self) -> bool:
        return self.version != self.saved_version

    def progress(self) -> WebhookProgress:
        return WebhookProgress(self.webhook_id, self.cursor, self.last_success_ms, self.last_failure_ms, self.last_error, self.failures)

    def start(self) -> None:
        self._running = True
        self._done = Deferred.fromCoroutine(self._run())

    def stop(self) -> Deferred[None]:
        """Stop at once: a wait or a request in flight is cancelled (that event is sent again by whoever delivers next)."""
        self._running = False
        for pending in (self._waiting, self._sleeping, self._request):
            if pending is not None:
                pending.cancel()
        return self._done

    def adopt(self, cursor: int) -> None:
        """The stored cursor: what another holder delivered while this process had lost the lease is not sent again."""
        if cursor > self.cursor:
            self.cursor = cursor
            while self.page and self.page[0].event.event_id <= cursor:
                self.page.popleft()

    def renewed(self, until: float, *, poll: bool) -> None:
        """The lease holds until ``until``; ``poll``: other processes settle alarms too, so look for their events."""
        lapsed = self.held_until <= self.hooks.clock.seconds()
        self.held_until = until
        if lapsed or poll:
            self.wake()

    def wake(self) -> None:
        """New events may be there: an idle loop reads again (a busy one will before it idles)."""
        self._woken = True
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    # -- the loop ----------------------------------------------------------

    async def _run(self) -> None:
        while self._running:
            try:
                await self._step()
                continue
            except (CancelledError, Exception):  # a CancelledError is stop()'s doing when it stopped the loop
                if self.stopped():
                    return
                log.failure("webhook {id}: delivery failed unexpectedly; trying again in {s:g} s", id=self.webhook_id, s=READ_RETRY_S)
            try:
                await self._sleep(READ_RETRY_S)
            except CancelledError:
                return  # stopped meanwhile

    async def _step(self) -> None:
        clock = self.hooks.clock
        if clock.seconds() >= self.held_until:
            await self._idle()  # until a tick renews the lease
            return
        if not self.page:
            self._woken = False
            try:
                details = await self.hooks.store.webhook_events(self.customer_id, self.cursor, PAGE)
            except Exception as e:
                log.warn("webhook {id}: cannot read events ({error}); trying again in {s:g} s", id=self.webhook_id, error=str(e), s=READ_RETRY_S)
                await self._sleep(READ_RETRY_S)
                return
            self.page.extend(d for d in details if d.event.event_id > self.cursor)
            if not self.page:
                await self._idle()
                return
        if self.stopped():  # while it read
            return
        detail = self.page[0]
        error = await self._send(detail)
        if self.stopped():
            return
        if error is None:
            self._delivered(detail)
        else:
            self._failed(detail, error)
            await self._sleep(webhook_retry.delay(self.failures, self.hooks.jitter(), self.hooks.max_backoff))

    def _idle(self) -> Deferred[None]:
        if self._woken or not self._running:
            self._woken = False
            return succeed(None)
        self._waiting = Deferred()
        return self._waiting

    def _sleep(self, seconds: float) -> Deferred[None]:
        if not self._running:
            return succeed(None)
        sleeping: Deferred[None] = Deferred(lambda d: call.cancel())
        call = self.hooks.clock.callLater(seconds, sleeping.callback, None)
        self._sleeping = sleeping

        def woke(result: object) -> object:
            self._sleeping = None
            return result

        return sleeping.addBoth(woke)

    async def _send(self, detail: EventDetail) -> str | None:
        """POST one event; None on a 2xx, else what went wrong in a few words."""
        hooks = self.hooks
        payload = webhook_wire.body(self.webhook_id, detail)
        headers = webhook_wire.headers(self.secret, int(hooks.clock.seconds()), self.webhook_id, detail, payload)
        try:
            self._request = hooks.http.post(
                self.url, data=payload, headers=headers, timeout=hooks.timeout, unbuffered=True, allow_redirects=False, reactor=hooks.clock,
            )
            response = await self._request
            self._request = reading = _drain(response, hooks.clock, hooks.timeout)
            await reading
        except CancelledError:
            if not self._running:
                raise
            return "timeout"
        except Exception as e:
            return _describe(e)
        finally:
            self._request = None
        code = int(response.code)
        return None if 200 <= code < 300 else f"HTTP {code}"

    def _delivered(self, detail: EventDetail) -> None:
        now = self.hooks.clock.seconds()
        if self.page and self.page[0] is detail:  # (adopt() may have dropped it meanwhile)
            self.page.popleft()
        self.cursor = max(self.cursor, detail.event.event_id)
        if self.failures:
            log.info("webhook {id} delivers again, after {n} failed attempts", id=self.webhook_id, n=self.failures)
        self.failures = 0
        self.last_success_ms = int(now * 1000)
        self.version += 1
        metrics = self.hooks.metrics
        metrics.webhook_deliveries.labels(self.label).inc()
        metrics.webhook_lag.labels(self.label).observe(max(0.0, now - detail.event.at / 1000))

    def _failed(self, detail: EventDetail, error: str) -> None:
        self.failures += 1
        self.last_failure_ms = int(self.hooks.clock.seconds() * 1000)
        self.last_error = error
        self.version += 1
        metrics = self.hooks.metrics
        metrics.webhook_failures.labels(self.label).inc()
        metrics.recent[f"webhook {self.webhook_id} delivery attempts failed"] += 1
        if self.failures == 1:
            log.warn("webhook {id}: event {event} not delivered to {url} ({error}); retrying, waiting up to {bound:g} s between attempts",
                     id=self.webhook_id, event=detail.event.event_id, url=webhook_wire.origin(self.url), error=error,
                     bound=self.hooks.max_backoff)


class _Discard(Protocol):
    """Reads a receiver's answer and throws it away, up to a limit; fires ``done`` when it ends or is cut."""

    def __init__(self, done: Deferred[None]) -> None:
        self.done = done
        self.seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen > MAX_ANSWER:
            self.cut()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)

    def cut(self) -> None:
        """Stop reading: the connection is closed (and not reused)."""
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        if not self.done.called:
            self.done.callback(None)


def _drain(response: Any, clock: IReactorTime, timeout: float) -> Deferred[None]:
    """Read the answer's body to its end (so the connection can carry the next event), within ``timeout``."""
    done: Deferred[None] = Deferred()
    protocol = _Discard(done)
    response.deliverBody(protocol)
    if done.called:
        return done
    deadline = clock.callLater(timeout, protocol.cut)

    def finished(result: object) -> object:
        if deadline.active():
            deadline.cancel()
        return result

    return done.addBoth(finished)


def _describe(error: BaseException) -> str:
    """A failed attempt in a few words, for the list of webhooks and the log."""
    if isinstance(error, (web_client.ResponseFailed, web_client.RequestTransmissionFailed)):  # the connection failed, and why
        reasons = getattr(error, "reasons", None) or []
        if any(r.check(CancelledError) for r in reasons):
            return "timeout"
        inner = "; ".join(r.getErrorMessage() for r in reasons)
        return f"connection failed{': ' + inner if inner else ''}"[:200]
    if isinstance(error, internet_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, internet_error.DNSLookupError):
        return "host not found"
    if isinstance(error, (internet_error.TimeoutError, internet_error.TCPTimedOutError)):
        return "timeout"
    return f"{type(error).__name__}: {error}"[:200]
