"""The webhooks table (schema migration 8), as a mixin of :class:`SqlStore`.

A webhook's row holds its durable cursor (``last_delivered``, the last event
id delivered), how its delivery goes, and a *lease*: the process whose
``lease_owner`` it names delivers it until ``lease_until_ms``. Leases are
taken and renewed in one short writer transaction (:meth:`hold_webhooks`),
against the database's own clock, so processes on hosts whose clocks differ
agree on when a lease has run out; two processes asking at once serialise
on the row, and only one gets it. Event ids follow commit order
(:mod:`meterd.store.alarm_sql`), so events read after a cursor are every
event committed after it, whichever process settled them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from meterd.alarm_book import Alarm, Event
from meterd.store.base import NotFound, Webhook, WebhookProgress
from meterd.webhook_wire import EventDetail

__all__ = ["WebhookSql"]

_COLUMNS = (
    "webhook_id, url, customer_id, secret, created_ms, last_delivered, last_success_ms, last_failure_ms, last_error, failures, "
    "lease_owner, lease_until_ms"
)
CREATE_WEBHOOK_TRIES = 5  # another process may take the same next id (shared stores)

# The database's clock in milliseconds, per backend: leases expire by one clock for every process.
_NOW_MS = {
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS BIGINT)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
}

_SAVE = (
    "UPDATE webhooks SET last_delivered = CASE WHEN last_delivered < ? THEN ? ELSE last_delivered END,"
    " last_success_ms = ?, last_failure_ms = ?, last_error = ?, failures = ? WHERE webhook_id = ? AND lease_owner = ?"
)

_EVENTS = """
SELECT e.event_id, e.alarm_id, e.customer_id, e.event_type, e.at_ms,
       a.meter_id, a.rule, a.raised_at, a.cleared_at, a.acked_at, a.value, a.threshold, a.message, c.tz
FROM alarm_events AS e
JOIN alarms AS a ON a.customer_id = e.customer_id AND a.alarm_id = e.alarm_id
JOIN customers AS c ON c.id = e.customer_id
WHERE e.event_id > ?{customer}
ORDER BY e.event_id
LIMIT ?
"""


def _webhook(row: Sequence[Any]) -> Webhook:
    (webhook_id, url, customer_id, secret, created_ms, last_delivered, last_success_ms, last_failure_ms, last_error, failures,
     lease_owner, lease_until_ms) = row
    return Webhook(
        int(webhook_id), url, customer_id, secret, int(created_ms), int(last_delivered),
        None if last_success_ms is None else int(last_success_ms), None if last_failure_ms is None else int(last_failure_ms),
        last_error, int(failures), lease_owner, None if lease_until_ms is None else int(lease_until_ms),
    )


def _detail(row: Sequence[Any]) -> EventDetail:
    event_id, alarm_id, customer_id, event_type, at_ms, meter_id, rule, raised_at, cleared_at, acked_at, value, threshold, message, tz = row
    alarm = Alarm(
        int(alarm_id), customer_id, rule, None if meter_id is None else int(meter_id), int(raised_at),
        None if cleared_at is None else int(cleared_at), None if acked_at is None else int(acked_at),
        float(value), float(threshold), message,
    )
    return EventDetail(Event(int(event_id), int(alarm_id), customer_id, event_type, int(at_ms)), alarm, tz)


def _save_args(owner: str, progress: Sequence[WebhookProgress]) -> list[tuple[Any, ...]]:
    return [
        (p.last_delivered, p.last_delivered, p.last_success_ms, p.last_failure_ms, p.last_error, p.failures, p.webhook_id, owner)
        for p in progress
    ]


class WebhookSql:
    """Webhook persistence over the pools and statement translation of SqlStore."""

    # provided by SqlStore
    sql: Any
    engine: Any
    _write: Any
    _read: Any
    _one: Any

    def create_webhook(self, url: str, customer_id: str | None, secret: str, created_ms: int) -> Deferred[Webhook]:
        """A new webhook, delivering the events committed after this one (its cursor: the last event id handed out).

        NotFound when ``customer_id`` names no customer. Ids are MAX + 1 over
        every row, removed ones included, so an id is never handed out twice.
        """

        def insert(txn: Any) -> Webhook:
            if customer_id is not None and not self._one(txn, "SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
                raise NotFound(customer_id)
            (next_id,) = self._one(txn, "SELECT COALESCE(MAX(webhook_id), 0) + 1 FROM webhooks", ())
            (next_event,) = self._one(txn, "SELECT next_event_id FROM alarm_counters WHERE id = 1", ())
            webhook = Webhook(int(next_id), url, customer_id, secret, created_ms, int(next_event) - 1, None, None, None, 0, None, None)
            txn.execute(
                self.sql(f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (webhook.webhook_id, url, customer_id, secret, created_ms, webhook.last_delivered, None, None, None, 0, None, None),
            )
            return webhook

        def attempt(tries: int) -> Deferred[Webhook]:
            def raced(failure: Failure) -> Any:
                if tries > 1 and self.engine.violated(failure) == "webhooks_pkey":
                    return attempt(tries - 1)
                return failure

            return self._write(insert).addErrback(raced)

        return attempt(CREATE_WEBHOOK_TRIES)

    def remove_webhook(self, webhook_id: int, removed_ms: int) -> Deferred[Webhook]:
        """Stop delivering a webhook for good (NotFound if there is no such webhook, or it was removed)."""

        def remove(txn: Any) -> Webhook:
            row = self._one(txn, f"SELECT {_COLUMNS} FROM webhooks WHERE webhook_id = ? AND removed_ms IS NULL", (webhook_id,))
            if row is None:
                raise NotFound(webhook_id)
            txn.execute(
                self.sql("UPDATE webhooks SET removed_ms = ?, lease_owner = NULL, lease_until_ms = NULL WHERE webhook_id = ?"),
                (removed_ms, webhook_id),
            )
            return _webhook(row)

        return self._write(remove)

    def webhooks(self) -> Deferred[list[Webhook]]:
        """Every webhook not removed, by id."""

        def query(txn: Any) -> list[Webhook]:
            txn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE removed_ms IS NULL ORDER BY webhook_id")
            return [_webhook(row) for row in txn.fetchall()]

        return self._read(query)

    def hold_webhooks(self, owner: str, progress: Sequence[WebhookProgress], lease_ms: int) -> Deferred[list[Webhook]]:
        """One writer transaction: save ``owner``'s progress, renew its leases, take the free ones; the webhooks it holds.

        A lease is free when nobody holds it or it ran out by the database's
        clock. Progress is saved only where ``owner`` still holds the lease,
        and the cursor only ever moves forward.
        """
        now = _NOW_MS[self.engine.name]

        def hold(txn: Any) -> list[Webhook]:
            if progress:
                txn.executemany(self.sql(_SAVE), _save_args(owner, progress))
            txn.execute(
                self.sql(
                    f"UPDATE webhooks SET lease_owner = ?, lease_until_ms = {now} + ? WHERE removed_ms IS NULL"
                    f" AND (lease_owner = ? OR lease_owner IS NULL OR lease_until_ms < {now})"
                ),
                (owner, lease_ms, owner),
            )
            txn.execute(
                self.sql(f"SELECT {_COLUMNS} FROM webhooks WHERE lease_owner = ? AND removed_ms IS NULL ORDER BY webhook_id"), (owner,)
            )
            return [_webhook(row) for row in txn.fetchall()]

        return self._write(hold)

    def release_webhooks(self, owner: str, progress: Sequence[WebhookProgress]) -> Deferred[None]:
        """Save ``owner``'s progress and give up its leases (a clean stop): another process takes them at once."""

        def release(txn: Any) -> None:
            if progress:
                txn.executemany(self.sql(_SAVE), _save_args(owner, progress))
            txn.execute(self.sql("UPDATE webhooks SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = ?"), (owner,))

        return self._write(release)

    def webhook_events(self, customer_id: str | None, after: int, limit: int) -> Deferred[list[EventDetail]]:
        """The first ``limit`` events after ``after`` (of one customer, or of all), oldest first, with their alarms."""

        def query(txn: Any) -> list[EventDetail]:
            if customer_id is None:
                txn.execute(self.sql(_EVENTS.format(customer="")), (after, limit))
            else:
                txn.execute(self.sql(_EVENTS.format(customer=" AND e.customer_id = ?")), (after, customer_id, limit))
            return [_detail(row) for row in txn.fetchall()]

        return self._read(query)

    def webhook_backlogs(self, cursors: Sequence[tuple[str | None, int]], cap: int) -> Deferred[list[int]]:
        """For each (customer or None, cursor): how many events after the cursor, counted up to ``cap``."""

        def query(txn: Any) -> list[int]:
            counts = []
            for customer_id, after in cursors:
                where, args = ("event_id > ?", (after,)) if customer_id is None else ("customer_id = ? AND event_id > ?", (customer_id, after))
                (n,) = self._one(txn, f"SELECT COUNT(*) FROM (SELECT 1 FROM alarm_events WHERE {where} LIMIT ?) AS b", (*args, cap))
                counts.append(int(n))
            return counts

        return self._read(query)
