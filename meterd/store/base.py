"""The storage interface the web and ingest layers talk to.

Everything above this line is backend-agnostic: SQLite (embedded default) and
PostgreSQL (scale-out) implement :class:`Store`; tests run one suite on both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from meterd.alarm_book import Alarm, Change, Event, Settled
from meterd.billing_run import Counts, Draft, Edge, Issue, Run, Snapshot, Target
from meterd.exports import ReadingsPage
from meterd.names import NameQuery, TaxIdQuery
from meterd.readings import Outcome, Reading
from meterd.registers import Span
from meterd.webhook_wire import EventDetail


class StoreError(Exception):
    """The store is unavailable (the API answers 503)."""


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


class MeterRetired(Exception):
    """The meter is retired already: it takes no final reading, no new key, no readings after its last."""


class NotRetired(Exception):
    """Only a retired meter can be replaced."""


class AlreadyReplaced(Exception):
    """A retired meter is replaced once; ``args[0]`` is the meter that replaced it."""


class ReadingsAfter(Exception):
    """A meter is retired at or after its newest stored reading; ``args[0]`` is that reading's time (us)."""


class ReadingRefused(Exception):
    """A final or initial reading refused as a live one would be; ``args[0]`` is the :class:`Outcome`."""


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    ligacao: str
    limit_w: int
    limit_wh: int
    tz: str
    token_hash: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Meter:
    customer_id: str
    meter_id: int
    mode: str  # "register" or "interval"
    key_hex: str
    created_ms: int
    retired_ts: int | None = None  # retired at this final reading's time (us): later readings are refused
    replaces: int | None = None  # the retired meter of the same customer this one replaced


@dataclass(frozen=True, slots=True)
class MeterStatus:
    meter_id: int
    mode: str
    last_ts: int | None
    last_wh: int | None
    last_seen_ms: int | None
    retired_ts: int | None = None
    replaces: int | None = None
    replaced_by: int | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes something, for the audit log: the principal's kind and the client's address, and when."""

    who: str
    address: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change kept in the audit log.

    ``field`` names a customer's attribute (``name``, ``limit_w``...) for an
    update; ``old`` and ``new`` are JSON values as the store holds them
    (integer W, Wh and microseconds), for a registration or a meter's
    retirement the whole record in ``new``.
    """

    audit_id: int
    customer_id: str
    at_ms: int
    actor: str
    address: str
    action: str
    meter_id: int | None
    field: str | None
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Found:
    """A customer a search found, with how many meters it has and its place in the results' order."""

    customer: Customer
    meters: int
    position: tuple[str, ...]


#: A customer's attributes an operator may change (``/alteraCliente``).
UPDATABLE = ("name", "ligacao", "limit_w", "limit_wh", "tz")


@dataclass(frozen=True, slots=True)
class Usage:
    """Consumption of one meter over consecutive buckets, in Wh.

    ``spans`` are the open intervals of reading time that the answer depends
    on beyond the readings already used: a reading stored later inside one
    of them would change it (``None`` = unbounded). Caches of closed periods
    use them to tell a late reading that matters from live data that doesn't.
    """

    meter_id: int
    buckets: list[tuple[int, bool]]  # (wh, estimated) per bucket
    spans: list[Span]


@dataclass(frozen=True, slots=True)
class Webhook:
    """A URL alarm events are POSTed to (meterd.webhooks), as stored."""

    webhook_id: int
    url: str
    customer_id: str | None  # None: every customer's events
    secret: str  # the HMAC key, kept as the server needs it (like a meter's key)
    created_ms: int
    last_delivered: int  # the durable cursor: the last event id delivered
    last_success_ms: int | None
    last_failure_ms: int | None
    last_error: str | None
    failures: int  # consecutive failed attempts
    lease_owner: str | None  # the process delivering it, while its lease lasts
    lease_until_ms: int | None


@dataclass(frozen=True, slots=True)
class WebhookProgress:
    """What the process delivering a webhook saves of it: the cursor never moves back, the rest is overwritten."""

    webhook_id: int
    last_delivered: int
    last_success_ms: int | None
    last_failure_ms: int | None
    last_error: str | None
    failures: int


class Store(Protocol):
    shared: bool  # other processes write the same database: caches must reload on miss
    def start(self) -> Deferred[None]: ...
    def stop(self) -> Deferred[None]: ...
    def ping(self) -> Deferred[None]: ...
    def create_customer(self, customer: Customer, actor: Actor | None = None) -> Deferred[Customer]: ...
    def create_meter(self, customer_id: str, mode: str, key_hex: str, created_ms: int, actor: Actor | None = None) -> Deferred[Meter]: ...
    def load_directory(self) -> Deferred[tuple[list[Customer], list[Meter]]]: ...
    def replace_token(self, customer_id: str, token_hash: str, now_ms: int, actor: Actor | None = None) -> Deferred[Customer]: ...
    def replace_key(self, customer_id: str, meter_id: int, key_hex: str, now_ms: int, actor: Actor | None = None) -> Deferred[Meter]: ...
    # operations (meterd.web.operations)
    def update_customer(self, customer_id: str, changes: dict[str, Any], actor: Actor) -> Deferred[tuple[Customer, list[str]]]: ...
    def search_customers(
        self, query: TaxIdQuery | NameQuery, driver: int | None, after: tuple[str, ...] | None, limit: int
    ) -> Deferred[tuple[list[Found], int | None]]: ...
    def retire_meter(self, customer_id: str, meter_id: int, ts: int, wh: int, actor: Actor) -> Deferred[tuple[Meter, bool]]: ...
    def replace_meter(
        self, customer_id: str, retired_id: int, mode: str, key_hex: str, ts: int, wh: int, actor: Actor
    ) -> Deferred[Meter]: ...
    def audit_log(self, customer_id: str | None, before: int | None, limit: int) -> Deferred[list[AuditEntry]]: ...
    def changed_since(self, since_ms: int) -> Deferred[tuple[list[Customer], list[Meter]]]: ...
    def get_customer(self, customer_id: str) -> Deferred[Customer | None]: ...
    def get_meter(self, customer_id: str, meter_id: int) -> Deferred[Meter | None]: ...
    def meter_status(self, customer_id: str) -> Deferred[list[MeterStatus]]: ...
    def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]: ...
    def usage(self, customer_id: str, meters: Sequence[tuple[int, str]], edges: Sequence[int]) -> Deferred[list[Usage]]: ...
    # exports (times in microseconds; None is an open end)
    def readings_page(
        self, customer_id: str, meter_ids: Sequence[int], start: int | None, end: int | None, after: tuple[int, int] | None, limit: int,
    ) -> Deferred[ReadingsPage]: ...
    def count_readings(self, customer_id: str, meter_ids: Sequence[int], start: int | None, end: int | None) -> Deferred[int]: ...
    # alarms (meterd.store.alarm_sql)
    def settle_alarms(self, changes: Sequence[Change]) -> Deferred[Settled]: ...
    def active_alarms(self) -> Deferred[list[Alarm]]: ...
    def load_alarm_state(self, recent_per_customer: int) -> Deferred[tuple[list[Alarm], list[Event], int, int]]: ...
    def alarm_view(self, customer_id: str, cursor: int | None, limit: int) -> Deferred[tuple[list[Alarm], list[Event], int]]: ...
    def meters_last_seen(self) -> Deferred[list[tuple[str, int, int | None]]]: ...
    def first_reading_us(self, customer_id: str) -> Deferred[int | None]: ...
    # issued bills and billing runs (meterd.store.bill_sql)
    def issued_bill(self, customer_id: str, referencia: str) -> Deferred[bytes | None]: ...
    def run_bills(self, run_id: int, after: int, limit: int) -> Deferred[list[tuple[int, bytes]]]: ...
    def bill_batch(
        self, after: str, limit: int, target: Callable[[str], Target], make: Callable[[Snapshot, dict[tuple[int, int], Edge]], Any]
    ) -> Deferred[tuple[str | None, list[tuple[Snapshot, Any]]]]: ...
    def issue_bills(
        self, run_id: int, drafts: Sequence[Draft], finalize: Callable[[Draft, int], Issue], counts: Counts, cursor: str, now_ms: int
    ) -> Deferred[tuple[list[tuple[str, str]], Counts]]: ...
    def start_run(self, periodo: int, referencia: str, now_ms: int, stale_before_ms: int) -> Deferred[tuple[str, Run]]: ...
    def finish_run(self, run_id: int, state: str, now_ms: int, message: str | None) -> Deferred[None]: ...
    def interrupt_runs(self, message: str) -> Deferred[None]: ...
    def get_run(self, run_id: int | None) -> Deferred[Run | None]: ...
    # webhooks (meterd.store.webhook_sql)
    def create_webhook(self, url: str, customer_id: str | None, secret: str, created_ms: int) -> Deferred[Webhook]: ...
    def remove_webhook(self, webhook_id: int, removed_ms: int) -> Deferred[Webhook]: ...
    def webhooks(self) -> Deferred[list[Webhook]]: ...
    def hold_webhooks(self, owner: str, progress: Sequence[WebhookProgress], lease_ms: int) -> Deferred[list[Webhook]]: ...
    def release_webhooks(self, owner: str, progress: Sequence[WebhookProgress]) -> Deferred[None]: ...
    def webhook_events(self, customer_id: str | None, after: int, limit: int) -> Deferred[list[EventDetail]]: ...
    def webhook_backlogs(self, cursors: Sequence[tuple[str | None, int]], cap: int) -> Deferred[list[int]]: ...
