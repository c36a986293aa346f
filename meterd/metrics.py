"""Prometheus metrics, one registry per service so tests can run several."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from meterd.readings import Outcome


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.datagrams_received = 0  # a plain int: counted per datagram on the hot path, read at scrape time
        r.register(self)
        self.dropped = Counter("meterd_datagrams_dropped", "UDP datagrams dropped, by reason", ["reason"], registry=r)
        self.readings = Counter("meterd_readings", "Readings flushed, by outcome", ["outcome"], registry=r)
        self.acks = Counter("meterd_acks_sent", "Ack datagrams sent", registry=r)
        self.flushes = Counter("meterd_flushes", "Ingest transactions committed", registry=r)
        self.flush_failures = Counter("meterd_flush_failures", "Ingest transactions that failed", registry=r)
        self.flush_seconds = Histogram(
            "meterd_flush_seconds", "Time to commit one flush",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        self.pending = Gauge("meterd_pending_readings", "Readings waiting for the next flush", registry=r)
        self.http = Counter("meterd_http_requests", "HTTP requests, by route and status", ["route", "status"], registry=r)
        self.outcomes = {o: self.readings.labels(o.value) for o in Outcome}
        self._drops: dict[str, Counter] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("meterd_datagrams_received", "UDP datagrams received", value=self.datagrams_received)

    def drop(self, reason: str) -> None:
        counter = self._drops.get(reason)
        if counter is None:
            counter = self._drops[reason] = self.dropped.labels(reason)
        counter.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
