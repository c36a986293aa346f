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

import os
import sys
from pathlib import Path
from typing import Any

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.protocols.basic import Int32StringReceiver

import meterd
from meterd.directory import Directory, MeterEntry
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.readings import reading_of
from meterd.udp import MeterProtocol
from meterd.udp_worker import SOCKET_FD

log = Logger()

RESTART_DELAY = 1.0  # seconds before a worker that exited is started again...
MAX_RESTART_DELAY = 60.0  # ... doubled up to this while each new one dies young
SETTLED_AFTER = 30.0  # seconds a worker must have run for its successor to start after RESTART_DELAY again
STOP_TIMEOUT = 10.0  # seconds a stopping worker gets to send what it holds before it is killed


class _Frames(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def stringReceived(self, frame: bytes) -> None:
        self.link.pool.frame(self.link, frame)

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("udp worker {n} sent a frame of {length} bytes; stopping it", n=self.link.index, length=length)
        self.link.transport.signalProcess("KILL")


class WorkerLink(ProcessProtocol):
    """One worker process: frames in from its stdout, keys out to its stdin."""

    def __init__(self, pool: UdpWorkers, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ready = False
        self.started = pool.reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self._frames = _Frames(self)
        self._stderr = b""
        self._level = LogLevel.info  # of the worker's last log line: a traceback's lines follow it

    def connectionMade(self) -> None:
        self._frames.makeConnection(self.transport)  # sendString writes to the worker's stdin
        self.send({"require_signature": self.pool.protocol.screen.require_signature, "keys": self.pool.all_keys()})

    def send(self, message: dict[str, Any]) -> None:
        self._frames.sendString(orjson.dumps(message))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self._frames.dataReceived(data)
        else:
            *lines, self._stderr = (self._stderr + data).split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                name, _, text = line.partition(" ")
                try:
                    self._level = LogLevel.levelWithName(name)
                except InvalidLogLevelError:
                    text = line
                log.emit(self._level, "udp worker {n}: {line}", n=self.index, line=text)

    def processEnded(self, reason: Any) -> None:
        self.pool.ended(self, reason)
        self.ended.callback(None)


class UdpWorkers(Service):
    def __init__(self, count: int, protocol: MeterProtocol, directory: Directory, ingest: Ingest, metrics: Metrics,
                 reactor: Any) -> None:
        self.count = count
        self.protocol = protocol
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self.reactor = reactor
        self.links: dict[int, WorkerLink] = {}
        self._restarts: dict[int, Any] = {}
        self._delays: dict[int, float] = {}  # the next restart delay of each worker slot
        self._acks: list[list[Any]] = []
        self._acking: Any = None  # the DelayedCall that hands this turn's acks to a worker
        self._next = 0  # round robin over ready workers

    def all_keys(self) -> list[list[Any]]:
        return [_key_row(entry) for entry in self.directory.meters.values()]

    def startService(self) -> None:
        super().startService()
        self.ingest.send_acks = self.send_acks
        self.directory.meter_listeners.append(self._meter_added)
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        link = self.links[index] = WorkerLink(self, index)
        self.reactor.spawnProcess(
            link, sys.executable, [sys.executable, "-m", "meterd.udp_worker"], env=_worker_env(),
            childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: self.protocol.transport.fileno()},
        )

    def _meter_added(self, entry: MeterEntry) -> None:
        for link in self.links.values():
            link.send({"keys": [_key_row(entry)]})

    def send_acks(self, customer_id: str, meter_id: int, seqs: list[int], address: tuple[str, int]) -> None:
        """Ingest's ack sender: gathered per reactor turn, signed and sent by a worker."""
        self._acks.append([customer_id, meter_id, seqs, *address])
        if self._acking is None:
            self._acking = self.reactor.callLater(0, self._hand_acks)

    def _hand_acks(self) -> None:
        self._acking = None
        acks, self._acks = self._acks, []
        ready = [link for link in self.links.values() if link.ready]
        if not ready:
            for customer_id, meter_id, seqs, host, port in acks:
                self.protocol.send_acks(customer_id, meter_id, seqs, (host, port))
            return
        self._next = (self._next + 1) % len(ready)
        ready[self._next].send({"acks": acks})

    def frame(self, link: WorkerLink, frame: bytes) -> None:
        message = orjson.loads(frame)
        readings = message.get("readings")
        if readings is None:
            if message.get("ready") and not link.ready:
                link.ready = True
                log.info("udp worker {n} is reading the meters' port", n=link.index)
                self._ready_changed()
            return
        metrics = self.metrics
        metrics.datagrams_received += message["received"]
        metrics.acks_sent += message.get("acks_sent", 0)
        metrics.acks_unsent += message.get("acks_unsent", 0)
        for reason, n in message.get("dropped", {}).items():
            metrics.drop(reason, n)
        for customer_id, meter_id in message.get("unknown", ()):
            self.protocol.unknown_meter(customer_id, meter_id)
        # The rows come from our own worker, five fields each, already screened.
        overloaded = self.ingest.submit_many(list(map(reading_of, readings)), list(map(tuple, message["from"])))
        if overloaded:
            metrics.drop("overloaded", overloaded)

    def ended(self, link: WorkerLink, reason: Any) -> None:
        if self.links.get(link.index) is link:
            del self.links[link.index]
        if link.ready:
            link.ready = False
            self._ready_changed()
        if self.running:
            # A worker that keeps dying at once (a broken install, no memory) is retried
            # ever more slowly; the reactor reads the port meanwhile.
            if self.reactor.seconds() - link.started >= SETTLED_AFTER:
                delay = RESTART_DELAY
            else:
                delay = self._delays.get(link.index, RESTART_DELAY)
            self._delays[link.index] = min(2 * delay, MAX_RESTART_DELAY)
            log.error("udp worker {n} exited ({reason}); starting another in {delay:g} s",
                      n=link.index, reason=reason.getErrorMessage(), delay=delay)
            self._restarts[link.index] = self.reactor.callLater(delay, self._spawn, link.index)

    def _ready_changed(self) -> None:
        ready = sum(link.ready for link in self.links.values())
        self.metrics.udp_workers.set(ready)
        port = self.protocol.transport
        if port is None:
            return
        if ready:
            port.stopReading()
        elif self.running:
            log.warn("no udp worker is up: the reactor reads the meters' port itself")
            port.startReading()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.ingest.send_acks = self.protocol.send_acks
        if self._acking is not None:
            self._acking.cancel()
            self._hand_acks()
        if self._meter_added in self.directory.meter_listeners:
            self.directory.meter_listeners.remove(self._meter_added)
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        waits = []
        for link in list(self.links.values()):
            link.transport.closeStdin()  # the worker sends what it holds, then exits
            kill = self.reactor.callLater(STOP_TIMEOUT, _kill, link)
            link.ended.addBoth(lambda result, kill=kill: kill.cancel() if kill.active() else None)
            waits.append(link.ended)
        return DeferredList(waits)


def _key_row(entry: MeterEntry) -> list[Any]:
    """A meter's key as the worker's frames carry it: ``[customer_id, meter_id, key_hex]``."""
    meter = entry.meter
    return [meter.customer_id, meter.meter_id, meter.key_hex]


def _worker_env() -> dict[str, str]:
    """This environment, with the directory this meterd was imported from first on the path.

    The worker must run the same code as the process that spawned it, also
    when meterd runs from a checkout rather than an installed package.
    """
    env = dict(os.environ)
    home = str(Path(meterd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([home, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _kill(link: WorkerLink) -> None:
    log.warn("udp worker {n} did not stop in {t:g} s; killing it", n=link.index, t=STOP_TIMEOUT)
    try:
        link.transport.signalProcess("KILL")
    except Exception:  # already gone
        pass
