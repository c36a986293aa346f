"""The meters' UDP port: parse, verify, validate, hand to ingest, send acks.

Everything here runs on the reactor thread per datagram, so it does the least
it can: no store access (keys come from the in-memory directory), no reply to
anything invalid (a forged datagram must not be able to make us send), and a
counter for every reason a datagram is dropped.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from meterd.datagram import MAX_DATAGRAM, DatagramError, encode_acks, parse_payload, split_signature, verify
from meterd.directory import Directory
from meterd.ingest import Address, Ingest, Overloaded
from meterd.metrics import Metrics
from meterd.readings import InvalidField, parse_reading

log = Logger()


class MeterProtocol(DatagramProtocol):
    def __init__(self, directory: Directory, ingest: Ingest, metrics: Metrics, clock: IReactorTime, *, require_signature: bool) -> None:
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.require_signature = require_signature
        ingest.send_acks = self.send_acks

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        self.metrics.datagrams.inc()
        if len(data) > MAX_DATAGRAM:
            self.metrics.drop("too_large")
            return
        payload, signature = split_signature(data)
        if signature is None and self.require_signature:
            self.metrics.drop("unsigned")
            return
        try:
            reading = parse_reading(parse_payload(payload), self.clock.seconds())
        except DatagramError as e:
            self.metrics.drop(e.reason)
            return
        except InvalidField as e:
            self.metrics.drop(e.code)
            return
        entry = self.directory.meters.get((reading.customer_id, reading.meter_id))
        if entry is None:
            self.metrics.drop("unknown_meter")
            return
        if signature is not None and not verify(payload, signature, entry.key):
            self.metrics.drop("bad_signature")
            return
        try:
            self.ingest.submit(reading, addr)
        except Overloaded:
            self.metrics.drop("overloaded")

    def send_acks(self, customer_id: str, meter_id: int, seqs: list[int], address: Address) -> None:
        entry = self.directory.meters.get((customer_id, meter_id))
        if entry is None or self.transport is None:
            return
        for datagram in encode_acks(customer_id, meter_id, seqs, entry.key):
            try:
                self.transport.write(datagram, address)
            except OSError as e:
                log.debug("ack to {address} failed: {error}", address=address, error=e)
                return
            self.metrics.acks.inc()
