"""Prometheus metrics, one registry per service so tests can run several."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from meterd import kernel_drops
from meterd.readings import Outcome

#: The backlog gauge counts undelivered events up to this many: a count is a
#: range scan of the events' index, kept cheap however long a receiver is down.
WEBHOOK_BACKLOG_CAP = 100_000


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # Plain ints, counted on the hot path (per datagram, per ack) and read at scrape
        # time: a prometheus_client Counter takes a lock on every inc (~0.3 us).
        self.datagrams_received = 0
        self.acks_sent = 0
        self.acks_unsent = 0
        self.udp_socket_inode: int | None = None  # meterd's UDP socket, once it listens: its kernel drops
        r.register(self)
        self.dropped = Counter("meterd_datagrams_dropped", "UDP datagrams dropped, by reason", ["reason"], registry=r)
        self.readings = Counter("meterd_readings", "Readings flushed, by outcome", ["outcome"], registry=r)
        self.flushes = Counter("meterd_flushes", "Ingest transactions committed", registry=r)
        self.flush_failures = Counter("meterd_flush_failures", "Ingest transactions that failed", registry=r)
        self.flush_seconds = Histogram(
            "meterd_flush_seconds", "Time to commit one flush",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        self.pending = Gauge("meterd_pending_readings", "Readings waiting for the next flush", registry=r)
        self.udp_workers = Gauge("meterd_udp_workers", "UDP worker processes reading the meters' port", registry=r)
        self.http_workers = Gauge("meterd_http_workers", "HTTP worker processes serving the HTTP port", registry=r)
        self.http = Counter("meterd_http_requests", "HTTP requests, by route and status", ["route", "status"], registry=r)
        self.http_refusals = Counter(
            "meterd_http_refusals", "HTTP connections and requests refused before any route: limits, deadlines, bad framing",
            ["reason"], registry=r,
        )
        self.rounded = Counter(
            "meterd_readings_rounded", "Unauthenticated readings (--no-auth) whose valor was rounded half up to the Wh, by transport",
            ["transport"], registry=r,
        )
        self.exports_streaming = Gauge("meterd_exports_streaming", "CSV exports being sent (/getLeituras)", registry=r)
        self.exports_cut = Counter("meterd_exports_cut", "CSV exports cut short by a store failure", registry=r)
        # Alarm webhooks (meterd.webhooks), labelled by webhook id; this process's share when several deliver.
        self.webhooks_delivering = Gauge("meterd_webhooks_delivering", "Webhooks this process delivers (holds the lease of)", registry=r)
        self.webhook_backlog = Gauge(
            "meterd_webhook_backlog", f"Alarm events not yet delivered (counted up to {WEBHOOK_BACKLOG_CAP:,}), per webhook this process delivers",
            ["webhook"], registry=r,
        )
        self.webhook_deliveries = Counter("meterd_webhook_deliveries", "Alarm events delivered (answered 2xx), per webhook", ["webhook"], registry=r)
        self.webhook_failures = Counter(
            "meterd_webhook_failures", "Failed delivery attempts (connection error, timeout, not 2xx), per webhook", ["webhook"], registry=r,
        )
        self.webhook_lag = Histogram(
            "meterd_webhook_lag_seconds", "Time from an alarm event to the 2xx of its delivery, per webhook", ["webhook"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=r,
        )
        self.outcomes = {o: self.readings.labels(o.value) for o in Outcome}
        self._drops: dict[str, Counter] = {}
        # What the log summarises once a minute (meterd.notices): counted here, logged there.
        self.recent: collections.Counter[str] = collections.Counter()

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("meterd_datagrams_received", "UDP datagrams received", value=self.datagrams_received)
        yield CounterMetricFamily("meterd_acks_sent", "Ack datagrams sent", value=self.acks_sent)
        yield CounterMetricFamily(
            "meterd_acks_unsent", "Ack datagrams the socket refused (full send buffer, no route); the meters resend",
            value=self.acks_unsent,
        )
        dropped = None if self.udp_socket_inode is None else kernel_drops.drops(self.udp_socket_inode)
        if dropped is not None:
            yield CounterMetricFamily(
                "meterd_udp_kernel_drops",
                "Datagrams the kernel dropped on meterd's UDP socket (receive buffer full) before anyone read them",
                value=dropped,
            )

    def drop(self, reason: str, n: int = 1) -> None:
        counter = self._drops.get(reason)
        if counter is None:
            counter = self._drops[reason] = self.dropped.labels(reason)
        counter.inc(n)
        self.recent[f"UDP datagrams dropped as {reason}"] += n

    def http_refused(self, reason: str, n: int = 1) -> None:
        """A connection or request the HTTP layer refused (meterd.web.request): counted, and summarised in the log."""
        self.http_refusals.labels(reason).inc(n)
        self.recent[f"HTTP refused as {reason}"] += n

    def webhook_gone(self, webhook_id: int, *, removed: bool) -> None:
        """This process no longer delivers the webhook: its backlog is another's to report (all of it, once removed)."""
        label = str(webhook_id)
        self.webhook_backlog.remove(label)
        if removed:
            for metric in (self.webhook_deliveries, self.webhook_failures, self.webhook_lag):
                metric.remove(label)

    def render(self) -> bytes:
        return generate_latest(self.registry)
