"""The storage interface the web and ingest layers talk to.

Everything above this line is backend-agnostic: SQLite (embedded default) and
PostgreSQL (scale-out) implement :class:`Store`; tests run one suite on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from meterd.alarm_book import Alarm, Change, Event, Settled
from meterd.readings import Outcome, Reading
from meterd.registers import Span
from meterd.webhook_wire import EventDetail


class StoreError(Exception):
    """The store is unavailable (the API answers 503)."""


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


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


@dataclass(frozen=True, slots=True)
class MeterStatus:
    meter_id: int
    mode: str
    last_ts: int | None
    last_wh: int | None
    last_seen_ms: int | None


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
    def create_customer(self, customer: Customer) -> Deferred[Customer]: ...
    def create_meter(self, customer_id: str, mode: str, key_hex: str, created_ms: int) -> Deferred[Meter]: ...
    def load_directory(self) -> Deferred[tuple[list[Customer], list[Meter]]]: ...
    def replace_token(self, customer_id: str, token_hash: str, now_ms: int) -> Deferred[Customer]: ...
    def replace_key(self, customer_id: str, meter_id: int, key_hex: str, now_ms: int) -> Deferred[Meter]: ...
    def changed_since(self, since_ms: int) -> Deferred[tuple[list[Customer], list[Meter]]]: ...
    def get_customer(self, customer_id: str) -> Deferred[Customer | None]: ...
    def get_meter(self, customer_id: str, meter_id: int) -> Deferred[Meter | None]: ...
    def meter_status(self, customer_id: str) -> Deferred[list[MeterStatus]]: ...
    def ingest(self, readings: Sequence[Reading], received_ms: int) -> Deferred[list[Outcome]]: ...
    def usage(self, customer_id: str, meters: Sequence[tuple[int, str]], edges: Sequence[int]) -> Deferred[list[Usage]]: ...
    # alarms (meterd.store.alarm_sql)
    def settle_alarms(self, changes: Sequence[Change]) -> Deferred[Settled]: ...
    def active_alarms(self) -> Deferred[list[Alarm]]: ...
    def load_alarm_state(self, recent_per_customer: int) -> Deferred[tuple[list[Alarm], list[Event], int, int]]: ...
    def alarm_view(self, customer_id: str, cursor: int | None, limit: int) -> Deferred[tuple[list[Alarm], list[Event], int]]: ...
    def meters_last_seen(self) -> Deferred[list[tuple[str, int, int | None]]]: ...
    def first_reading_us(self, customer_id: str) -> Deferred[int | None]: ...
    # webhooks (meterd.store.webhook_sql)
    def create_webhook(self, url: str, customer_id: str | None, secret: str, created_ms: int) -> Deferred[Webhook]: ...
    def remove_webhook(self, webhook_id: int, removed_ms: int) -> Deferred[Webhook]: ...
    def webhooks(self) -> Deferred[list[Webhook]]: ...
    def hold_webhooks(self, owner: str, progress: Sequence[WebhookProgress], lease_ms: int) -> Deferred[list[Webhook]]: ...
    def release_webhooks(self, owner: str, progress: Sequence[WebhookProgress]) -> Deferred[None]: ...
    def webhook_events(self, customer_id: str | None, after: int, limit: int) -> Deferred[list[EventDetail]]: ...
    def webhook_backlogs(self, cursors: Sequence[tuple[str | None, int]], cap: int) -> Deferred[list[int]]: ...
