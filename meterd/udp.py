"""The meters' UDP port: parse, verify, validate, hand to ingest, send acks.

Everything here runs on the reactor thread per datagram, so it does the least
it can: no store access (keys come from the in-memory directory), no reply to
anything invalid (a forged datagram must not be able to make us send), and a
counter for every reason a datagram is dropped.

The one exception is a meter this process does not know: another meterd on
the same database may have registered it. Its datagram is dropped (the meter
resends until acknowledged) and the meter is looked up in the store in the
background, at most once per :data:`RELOAD_INTERVAL` per (customer, meter),
with few lookups in flight and a bounded memory of recent misses, so forged
ids cannot turn the UDP port into a load generator against the database.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from meterd.datagram import send_ack_rows
from meterd.directory import Directory
from meterd.ingest import AckRow, Address, Ingest, Overloaded
from meterd.metrics import Metrics
from meterd.screen import Rejected, Screen
from meterd.store.base import Meter
from meterd.twisted_internals import datagram_socket, limit_reads_per_turn

log = Logger()

RELOAD_INTERVAL = 5.0  # seconds between store lookups of the same unknown meter
MAX_LOOKUPS_IN_FLIGHT = 4
MAX_REMEMBERED_MISSES = 10_000
READ_BYTES_PER_TURN = 8 * 1024  # bytes read from the UDP socket per reactor turn (Twisted's default: 256 KB)


class MeterProtocol(DatagramProtocol):
    def __init__(self, directory: Directory, ingest: Ingest, metrics: Metrics, clock: IReactorTime, *, require_signature: bool) -> None:
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        rounded = metrics.rounded.labels("udp")
        self.screen = Screen(directory.key, require_signature=require_signature, retired=directory.retired, on_rounded=rounded.inc)
        ingest.send_acks = self.send_acks
        self._misses: dict[tuple[str, int], float] = {}  # unknown meter -> when it was last looked up
        self._lookups_in_flight = 0

    def startProtocol(self) -> None:
        """Read fewer bytes per reactor turn than Twisted's default 256 KB.

        At 20-45 us of Python per datagram, 256 KB of ~230-byte readings is a
        25-50 ms turn; an HTTP request needs several turns (accept, read,
        the database ping's thread callback, write), so under a UDP flood
        ``/health`` would wait several of those. 8 KB (~35 readings) keeps a turn near 2 ms;
        what cannot be read waits in the socket's receive buffer
        (``service.UDP_RECEIVE_BUFFER``) or is dropped by the kernel, as under
        any overload.
        """
        if self.transport is not None and hasattr(self.transport, "maxThroughput"):  # a real port, not a test's
            limit_reads_per_turn(self.transport, READ_BYTES_PER_TURN)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        self.metrics.datagrams_received += 1
        try:
            reading = self.screen.reading(data, self.clock.seconds())
        except Rejected as e:
            self.metrics.drop(e.reason)
            if e.meter is not None:
                self.unknown_meter(*e.meter)
            return
        try:
            self.ingest.submit(reading, addr)
        except Overloaded:
            self.metrics.drop("overloaded")

    def unknown_meter(self, customer_id: str, meter_id: int) -> None:
        """A valid reading of a meter the directory lacks: another process may have registered it."""
        if self.ingest.store.shared:  # else the directory already holds every meter
            self._look_up(customer_id, meter_id)

    def _look_up(self, customer_id: str, meter_id: int) -> None:
        """Ask the store, in the background, for a meter another process may have registered."""
        key = (customer_id, meter_id)
        now = self.clock.seconds()
        last = self._misses.get(key)
        if last is not None and now - last < RELOAD_INTERVAL:
            return
        if self._lookups_in_flight >= MAX_LOOKUPS_IN_FLIGHT:
            return
        if last is None and len(self._misses) >= MAX_REMEMBERED_MISSES:
            self._misses = {k: t for k, t in self._misses.items() if now - t < RELOAD_INTERVAL}
            if len(self._misses) >= MAX_REMEMBERED_MISSES:
                return
        self._misses[key] = now
        self._lookups_in_flight += 1

        async def look_up() -> None:
            store = self.ingest.store
            meter: Meter | None = await store.get_meter(customer_id, meter_id)
            if meter is None:
                return
            if customer_id not in self.directory.customers:
                customer = await store.get_customer(customer_id)
                if customer is not None:
                    self.directory.add_customer(customer)
            self.directory.add_meter(meter)
            self._misses.pop(key, None)
            log.info("meter {meter} of customer {customer} was registered elsewhere; loaded", meter=meter_id, customer=customer_id)

        def done(result: Any) -> None:
            self._lookups_in_flight -= 1

        def failed(failure: Any) -> None:
            log.warn("lookup of meter {meter} of customer {customer} failed: {error}",
                     meter=meter_id, customer=customer_id, error=failure.getErrorMessage())

        Deferred.fromCoroutine(look_up()).addErrback(failed).addBoth(done)

    def send_acks(self, acks: list[AckRow]) -> None:
        """Send each meter its signed acks, straight to the socket when there is one.

        One row per meter per flush: ~20,000 a second at full load.
        Twisted's ``Port.write`` parses the address three times per call
        (IPv4, IPv6, family checks: ~1.2 us) before the ``sendto`` it then
        does; our addresses come from ``recvfrom`` and need none of it.
        """
        transport = self.transport
        if transport is None:
            return
        write = datagram_socket(transport).sendto if hasattr(transport, "socket") else transport.write
        sent, unsent = send_ack_rows(write, self.screen.key_for, acks)
        self.metrics.acks_sent += sent
        self.metrics.acks_unsent += unsent
