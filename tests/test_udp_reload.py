"""A meter registered by another meterd process is loaded on its first datagram.

The datagram that misses is dropped (the meter resends); the store is asked
in the background, at most once per RELOAD_INTERVAL per meter and with few
lookups in flight, so unknown or forged ids cannot flood the database.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from meterd import udp
from meterd.datagram import sign
from meterd.directory import Directory
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.store.base import Customer, Meter
from meterd.udp import MeterProtocol

C1 = "12345678909"
KEY_HEX = "ab" * 32
NOW = 1_764_000_000.0


class FakeStore:
    """A shared store (another process may register meters) whose get_meter Deferreds the test fires itself."""

    shared = True

    def __init__(self) -> None:
        self.meter_calls: list[tuple[str, int]] = []
        self.pending: list[Deferred[Meter | None]] = []
        self.customers = {C1: Customer(C1, "n", "mono", 10_000, 1_000_000, "UTC", "h", 0)}

    def get_meter(self, customer_id: str, meter_id: int) -> Deferred[Meter | None]:
        self.meter_calls.append((customer_id, meter_id))
        d: Deferred[Meter | None] = Deferred()
        self.pending.append(d)
        return d

    def get_customer(self, customer_id: str) -> Deferred[Customer | None]:
        return succeed(self.customers.get(customer_id))


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeStore()
        self.directory = Directory()
        self.metrics = Metrics()
        self.ingest = Ingest(self.store, self.clock, self.metrics)  # type: ignore[arg-type]
        self.submitted: list[Any] = []
        self.ingest.submit = lambda reading, reply=None: self.submitted.append(reading)  # type: ignore[method-assign]
        self.protocol = MeterProtocol(self.directory, self.ingest, self.metrics, self.clock, require_signature=True)
        self.protocol.makeConnection(StringTransport())

    def send(self, meter_id: int, seq: int) -> None:
        payload = json.dumps({"id": C1, "id_medidor": meter_id, "valor": 1.5, "timestamp": NOW - 10, "seq": seq}).encode()
        self.protocol.datagramReceived(sign(payload, bytes.fromhex(KEY_HEX)), ("127.0.0.1", 40000))

    def unknown_drops(self) -> float:
        return self.metrics.dropped.labels("unknown_meter")._value.get()


def meter(meter_id: int) -> Meter:
    return Meter(C1, meter_id, "register", KEY_HEX, 0)


def test_meter_registered_elsewhere_is_loaded_and_its_resend_accepted() -> None:
    h = Harness()
    h.send(1, 1)
    assert h.submitted == []
    assert h.unknown_drops() == 1
    assert h.store.meter_calls == [(C1, 1)]
    h.store.pending[0].callback(meter(1))
    assert (C1, 1) in h.directory.meters
    assert C1 in h.directory.customers  # the customer came along, for the alarm rules
    h.send(1, 1)  # the meter resends
    assert [r.seq for r in h.submitted] == [1]


def test_one_lookup_per_interval_per_unknown_meter() -> None:
    h = Harness()
    h.send(7, 1)
    h.store.pending[0].callback(None)  # not registered anywhere
    for seq in range(2, 20):
        h.send(7, seq)
    assert h.store.meter_calls == [(C1, 7)]
    assert h.unknown_drops() == 19
    h.clock.advance(udp.RELOAD_INTERVAL)
    h.send(7, 20)
    assert h.store.meter_calls == [(C1, 7), (C1, 7)]
    assert h.submitted == []


def test_lookups_in_flight_are_bounded() -> None:
    h = Harness()
    for meter_id in range(1, 3 * udp.MAX_LOOKUPS_IN_FLIGHT):
        h.send(meter_id, 1)
    assert len(h.store.meter_calls) == udp.MAX_LOOKUPS_IN_FLIGHT
    h.store.pending[0].callback(None)
    h.send(100, 1)
    assert h.store.meter_calls[-1] == (C1, 100)
    assert len(h.store.meter_calls) == udp.MAX_LOOKUPS_IN_FLIGHT + 1


def test_failed_lookup_frees_its_slot_and_is_retried_later() -> None:
    h = Harness()
    h.send(1, 1)
    h.store.pending[0].errback(RuntimeError("store down"))
    assert h.protocol._lookups_in_flight == 0
    h.send(1, 2)
    assert len(h.store.meter_calls) == 1  # still within the interval
    h.clock.advance(udp.RELOAD_INTERVAL)
    h.send(1, 3)
    h.store.pending[1].callback(meter(1))
    h.send(1, 4)
    assert [r.seq for r in h.submitted] == [4]


def test_remembered_misses_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(udp, "MAX_REMEMBERED_MISSES", 3)
    h = Harness()
    for meter_id in (1, 2, 3):
        h.send(meter_id, 1)
        h.store.pending[-1].callback(None)
    h.send(4, 1)  # memory full of recent misses: no lookup, nothing remembered
    assert len(h.store.meter_calls) == 3
    assert len(h.protocol._misses) == 3
    h.clock.advance(udp.RELOAD_INTERVAL)
    h.send(4, 2)  # the old misses expired and were pruned
    assert h.store.meter_calls[-1] == (C1, 4)
    assert len(h.protocol._misses) == 1


def test_an_unshared_store_is_never_asked() -> None:
    """SQLite: this process registered every meter, so a miss is final (and forged ids cost no query)."""
    h = Harness()
    h.store.shared = False  # type: ignore[misc]
    for seq in range(5):
        h.send(9, seq)
    h.clock.advance(udp.RELOAD_INTERVAL)
    h.send(9, 5)
    assert h.store.meter_calls == []
    assert h.unknown_drops() == 6
