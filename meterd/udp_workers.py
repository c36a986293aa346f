"""``--udp-workers N``: processes that read the meters' socket for the reactor.

meterd spawns N :mod:`meterd.udp_worker` processes, gives each the UDP socket
and every meter's key, and hands the readings they send to ingest as if its
own port had read them. While at least one worker is up the reactor's port stops reading and
the workers also sign and send the acks, so the reactor spends its time on
flushes, alarms and HTTP; while none is (at start, or after a crash until the
restart) the reactor reads and acks itself, so a dead worker costs resends of
the datagrams it held, never the port.
"""

from __future__ import annotations

from typing import Any

from meterd.directory import Directory, MeterEntry
from meterd.ingest import AckRow, Ingest
from meterd.metrics import Metrics
from meterd.readings import reading_of
from meterd.udp import MeterProtocol
from meterd.workers import RESTART_DELAY, SETTLED_AFTER, WorkerLink, WorkerPool, in_frames

__all__ = ["RESTART_DELAY", "SETTLED_AFTER", "UdpWorkers"]


class UdpWorkers(WorkerPool):
    kind = "udp"
    module = "meterd.udp_worker"

    def __init__(self, count: int, protocol: MeterProtocol, directory: Directory, ingest: Ingest, metrics: Metrics,
                 reactor: Any) -> None:
        super().__init__(count, reactor)
        self.protocol = protocol
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self._next = 0  # round robin over ready workers

    def port(self) -> Any:
        return self.protocol.transport

    def first_messages(self) -> list[dict[str, Any]]:
        """Every meter's key, the settings with the last of them: the worker serves the port once it has all."""
        *head, last = in_frames([_key_row(entry) for entry in self.directory.meters.values()])
        return [*({"keys": keys} for keys in head), {"require_signature": self.protocol.screen.require_signature, "keys": last}]

    def meter_added(self, entry: MeterEntry) -> None:
        """A meter was registered (or its key changed, or it was retired): every worker needs to know."""
        self.send_all({"keys": [_key_row(entry)]})

    def send_acks(self, acks: list[AckRow]) -> None:
        """Ingest's ack sender: a flush's acks go to one worker in one frame, into its pipe at the commit.

        At once, not at the end of the reactor turn: the rest of the turn is
        the flush's observers, which a meter's ack need not wait for.
        """
        ready = self.ready_links()
        if not ready:
            self.protocol.send_acks(acks)
            return
        self._next = (self._next + 1) % len(ready)
        ready[self._next].send({"acks": acks}, at_once=True)  # the rows as they are: orjson writes tuples as arrays

    def message(self, link: WorkerLink, message: dict[str, Any]) -> None:
        readings = message.get("readings")
        if readings is None:
            return
        metrics = self.metrics
        metrics.datagrams_received += message["received"]
        metrics.acks_sent += message.get("acks_sent", 0)
        metrics.acks_unsent += message.get("acks_unsent", 0)
        for reason, n in message.get("dropped", {}).items():
            metrics.drop(reason, n)
        if "rounded" in message:
            metrics.rounded.labels("udp").inc(message["rounded"])
        for customer_id, meter_id in message.get("unknown", ()):
            self.protocol.unknown_meter(customer_id, meter_id)
        # The rows come from our own worker, five fields each, already screened.
        overloaded = self.ingest.submit_many(list(map(reading_of, readings)), list(map(tuple, message["from"])))
        if overloaded:
            metrics.drop("overloaded", overloaded)

    def ready_count_changed(self, ready: int) -> None:
        self.metrics.udp_workers.set(ready)
        super().ready_count_changed(ready)


def _key_row(entry: MeterEntry) -> list[Any]:
    """A meter's key as the worker's frames carry it: ``[customer_id, meter_id, key_hex, retired_ts]``."""
    meter = entry.meter
    return [meter.customer_id, meter.meter_id, meter.key_hex, meter.retired_ts]
