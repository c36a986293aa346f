"""A UDP worker process, ``python -m meterd.udp_worker``, spawned by ``meterd --udp-workers N``.

One CPython process runs Python on one core at a time, and at tens of
thousands of datagrams a second, receiving, parsing and verifying each
datagram is most of what the reactor thread would do. A worker does that
part on another core. It reads the meters' socket, which it
inherits from meterd as fd 3 (the kernel hands each datagram to one reader),
runs every datagram through the same :class:`~meterd.screen.Screen` as the
reactor's port, and passes meterd the readings that pass. meterd keeps
everything that needs state: group commit, alarms, what to acknowledge; the
worker signs the acks meterd asks for and sends them from the same socket,
so from the port the meter sent to.

stdin and stdout carry length-prefixed (``Int32StringReceiver``) orjson frames:

meterd to worker
  ``{"keys": [[customer_id, meter_id, key_hex, retired_ts], ...]}`` with every known meter (``retired_ts``
  null but for a retired meter, whose readings after that time are dropped), a few
  thousand at a time, the last of these frames also carrying ``"require_signature": bool``
  (the worker serves the socket from then on); then ``{"keys": [...]}`` for each meter added or changed,
  and ``{"acks": [[customer_id, meter_id, [seq, ...], host, port], ...]}`` to sign and send.
worker to meterd
  ``{"ready": true}`` once the frame with the settings is in and the socket is being read; then,
  after each reactor turn that read datagrams:
  ``{"readings": [[customer_id, meter_id, ts, wh, seq], ...], "from": [[host, port], ...],
  "received": n, "dropped": {reason: n}, "unknown": [[customer_id, meter_id], ...], "acks_sent": n, "acks_unsent": n, "rounded": n}``

The worker holds nothing that meterd has acknowledged: a worker that dies
loses only readings nobody acked, which the meters resend. When stdin closes
(meterd stops, or dies) the worker stops reading, sends what it holds and
exits. When meterd reads slower than the worker sends, stdout's buffer fills
and the worker stops reading the socket until it drains (the port is the
stdout transport's push producer): datagrams then wait in the kernel's buffer,
or are dropped there, as in a single process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import orjson
from twisted.internet import interfaces
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from meterd.datagram import send_ack_rows
from meterd.screen import MeterId, Rejected, Screen
from meterd.twisted_internals import datagram_socket, limit_reads_per_turn
from meterd.worker_process import SOCKET_FD, ParentLink, run

if TYPE_CHECKING:
    from meterd.ingest import AckRow

# Bytes read from the socket per reactor turn (Twisted's default: 256 KB, some
# 1,600 readings). Between turns the worker reads meterd's frames, the acks
# among them, and sends the readings it screened: under a backlog, turns of
# 256 KB would hold a flush's acks for tens of milliseconds, while shorter
# turns cost no more reading time in all.
READ_BYTES_PER_TURN = 32 * 1024


class Receiver(DatagramProtocol):
    """The inherited socket's protocol: screen each datagram, batch what passes."""

    def __init__(self, worker: Worker, clock: IReactorTime) -> None:
        self.worker = worker
        self.clock = clock

    def startProtocol(self) -> None:
        limit_reads_per_turn(self.transport, READ_BYTES_PER_TURN)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        worker = self.worker
        worker.received += 1
        if worker.pending is None:
            worker.pending = self.clock.callLater(0, worker.send)
        try:
            reading = worker.screen.reading(data, self.clock.seconds())
        except Rejected as e:
            worker.dropped[e.reason] = worker.dropped.get(e.reason, 0) + 1
            if e.meter is not None:
                worker.unknown.add(e.meter)
            return
        worker.readings.append(tuple(reading))  # orjson writes tuples, not NamedTuples
        worker.sources.append(addr)


@implementer(interfaces.IPushProducer)
class Worker(ParentLink):
    """The link to meterd over stdio, and the producer that reads the socket."""

    def __init__(self, reactor: Any, fd: int = SOCKET_FD) -> None:
        super().__init__(reactor, fd)
        self.keys: dict[MeterId, bytes] = {}
        self.retired: dict[MeterId, int] = {}
        self.screen: Screen
        self.pending: Any = None  # the DelayedCall of the next send
        self.readings: list[tuple[Any, ...]] = []  # the Readings' fields
        self.sources: list[Any] = []  # where each came from
        self.received = 0
        self.dropped: dict[str, int] = {}
        self.unknown: set[MeterId] = set()
        self.acks_sent = 0
        self.acks_unsent = 0
        self.rounded = 0

    def _rounded(self) -> None:
        self.rounded += 1

    def stringReceived(self, frame: bytes) -> None:
        message = orjson.loads(frame)
        for customer_id, meter_id, key_hex, retired_ts in message.get("keys", ()):
            self.keys[(customer_id, meter_id)] = bytes.fromhex(key_hex)
            if retired_ts is not None:
                self.retired[(customer_id, meter_id)] = retired_ts
        if "acks" in message:
            self._send_acks(message["acks"])
            return
        if self.port is None and "require_signature" in message:
            self.screen = Screen(
                self.keys.get, require_signature=bool(message["require_signature"]), retired=self.retired, on_rounded=self._rounded,
            )
            self.adopt(self.reactor.adoptDatagramPort, Receiver(self, self.reactor))
            self.stdio.registerProducer(self, True)
            self.sendString(b'{"ready":true}')

    def _send_acks(self, acks: list[list[Any]]) -> None:
        if self.port is None:
            return
        rows = cast("list[AckRow]", acks)  # the same five fields, as lists: unpacked alike
        sent, unsent = send_ack_rows(datagram_socket(self.port).sendto, self.screen.key_for, rows)
        self.acks_sent += sent
        self.acks_unsent += unsent
        if self.pending is None:
            self.pending = self.reactor.callLater(0, self.send)

    def send(self) -> None:
        self.pending = None
        message: dict[str, Any] = {"readings": self.readings, "from": self.sources, "received": self.received}
        if self.dropped:
            message["dropped"] = self.dropped
        if self.unknown:
            message["unknown"] = list(self.unknown)
        if self.acks_sent:
            message["acks_sent"] = self.acks_sent
        if self.acks_unsent:
            message["acks_unsent"] = self.acks_unsent
        if self.rounded:
            message["rounded"] = self.rounded
        self.sendString(orjson.dumps(message))
        self.readings, self.sources, self.received, self.dropped, self.unknown = [], [], 0, {}, set()
        self.acks_sent = self.acks_unsent = self.rounded = 0

    # IPushProducer: stdout's buffer is full, or has drained.
    def pauseProducing(self) -> None:
        if self.port is not None:
            self.port.stopReading()

    def resumeProducing(self) -> None:
        if self.port is not None:
            self.port.startReading()

    def stopProducing(self) -> None:
        self.pauseProducing()

    # IHalfCloseableProtocol: meterd closed our stdin.
    def readConnectionLost(self) -> None:
        self.stop_port()
        if self.pending is not None:
            self.pending.cancel()
            self.send()
        self.stdio.unregisterProducer()
        self.stdio.loseConnection()  # after stdout has been written


if __name__ == "__main__":
    run(Worker)
