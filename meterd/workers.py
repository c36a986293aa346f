"""Worker processes beside the reactor: spawned, linked by frames, restarted, stopped.

One CPython process runs Python on one core at a time. ``--udp-workers``
and ``--http-workers`` each move the per-datagram or per-request protocol
work into child processes that inherit the listening socket as fd 3 and
talk to meterd over stdin/stdout in length-prefixed (``Int32StringReceiver``)
orjson frames, while meterd keeps every piece of state. What the two kinds
share is here: spawning, the frames, the workers' log lines, restarting a
worker that died (ever more slowly while each new one dies young) and
stopping them. The listening port goes back to the reactor whenever no
worker is ready, so a dead worker never closes the port.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.protocols.basic import Int32StringReceiver

import meterd
from meterd.twisted_internals import write_now
from meterd.worker_process import SOCKET_FD

log = Logger()

RESTART_DELAY = 1.0  # seconds before a worker that exited is started again...
MAX_RESTART_DELAY = 60.0  # ... doubled up to this while each new one dies young
SETTLED_AFTER = 30.0  # seconds a worker must have run for its successor to start after RESTART_DELAY again
STOP_TIMEOUT = 10.0  # seconds a stopping worker gets to send what it holds before it is killed
# A new worker's first frames carry every meter's key or customer's token hash
# this many rows at a time. In one frame, 100,000 meters would be ~10 MB, and
# a worker would keep for good the memory that frame took: its buffer grows
# read by read, and its parsed rows would all live at once.
FIRST_ROWS = 5_000


class _Frames(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def stringReceived(self, frame: bytes) -> None:
        self.link.pool.frame(self.link, frame)

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("{kind} worker {n} sent a frame of {length} bytes; stopping it",
                  kind=self.link.pool.kind, n=self.link.index, length=length)
        self.link.process.signalProcess("KILL")


class WorkerLink(ProcessProtocol):
    """One worker process: frames in from its stdout, frames out to its stdin."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ready = False
        self.started = pool.reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self._frames = _Frames(self)
        self._stderr = b""
        self._level = LogLevel.info  # of the worker's last log line: a traceback's lines follow it

    @property
    def process(self) -> IProcessTransport:
        """The worker process (its transport): there from ``connectionMade`` on."""
        assert self.transport is not None, "the worker has not started"
        return self.transport

    def connectionMade(self) -> None:
        self._frames.makeConnection(self.transport)  # sendString writes to the worker's stdin
        for message in self.pool.first_messages():
            self.send(message)

    def send(self, message: dict[str, Any], *, at_once: bool = False) -> None:
        """Frame ``message`` to the worker's stdin; ``at_once``: into the pipe now, not when the reactor turn ends.

        A transport's writes wait until the reactor next polls, after every
        callback of the current turn. A flush's acks are followed in their
        turn by the flush's observers (the alarm rules, several milliseconds
        at full load), which a meter's ack need not wait for. What does not fit in
        the pipe, or an error, is left to the reactor as for any write; so
        is everything once stdin is closing, since the reactor closes the
        pipe on what that last write returns.
        """
        self._frames.sendString(orjson.dumps(message))
        if at_once:
            write_now(self.transport)

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
                log.emit(self._level, "{kind} worker {n}: {line}", kind=self.pool.kind, n=self.index, line=text)

    def processEnded(self, reason: Any) -> None:
        self.pool.ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """N workers of one kind; a subclass names the module, the socket and what the frames mean."""

    kind: str  # "udp" or "http", in log lines
    module: str  # run as ``python -m module``

    def __init__(self, count: int, reactor: Any) -> None:
        self.count = count
        self.reactor = reactor
        self.links: dict[int, WorkerLink] = {}
        self._restarts: dict[int, Any] = {}
        self._delays: dict[int, float] = {}  # the next restart delay of each worker slot

    # -- what a kind of worker supplies ---------------------------------------

    def socket_fd(self) -> int:
        """The listening socket the workers inherit as fd 3: the port's."""
        return self.port().fileno()

    def child_fds(self) -> dict[int, int]:
        """What else a worker inherits, by its number in the worker."""
        return {}

    def first_messages(self) -> list[dict[str, Any]]:
        """What a new worker is sent before anything else."""
        return [{}]

    def message(self, link: WorkerLink, message: dict[str, Any]) -> None:
        """A frame from a ready worker."""
        raise NotImplementedError

    def ready_count_changed(self, ready: int) -> None:
        """The port is read by the workers while any is ready, by the reactor otherwise."""
        port = self.port()
        if port is None:
            return
        if ready:
            port.stopReading()
        elif self.running:
            log.warn("no {kind} worker is up: the reactor serves the port itself", kind=self.kind)
            port.startReading()

    def port(self) -> Any:
        """The port the workers serve for the reactor (None before it listens)."""
        raise NotImplementedError

    # -- the pool ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        link = self.links[index] = WorkerLink(self, index)
        self.reactor.spawnProcess(
            link, sys.executable, [sys.executable, "-m", self.module], env=_worker_env(),
            childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: self.socket_fd(), **self.child_fds()},
        )

    def frame(self, link: WorkerLink, frame: bytes) -> None:
        message = orjson.loads(frame)
        if message.get("ready"):
            if not link.ready:
                link.ready = True
                log.info("{kind} worker {n} is serving the port", kind=self.kind, n=link.index)
                self._ready_changed()
            return
        self.message(link, message)

    def send_all(self, message: dict[str, Any]) -> None:
        """To every worker, ready or starting (whose first frames have gone already)."""
        for link in self.links.values():
            link.send(message)

    def ready_links(self) -> list[WorkerLink]:
        return [link for link in self.links.values() if link.ready]

    def ended(self, link: WorkerLink, reason: Any) -> None:
        if self.links.get(link.index) is link:
            del self.links[link.index]
        if link.ready:
            link.ready = False
            self._ready_changed()
        if self.running:
            # A worker that keeps dying at once (a broken install, no memory) is retried
            # ever more slowly; the reactor serves the port meanwhile.
            if self.reactor.seconds() - link.started >= SETTLED_AFTER:
                delay = RESTART_DELAY
            else:
                delay = self._delays.get(link.index, RESTART_DELAY)
            self._delays[link.index] = min(2 * delay, MAX_RESTART_DELAY)
            log.error("{kind} worker {n} exited ({reason}); starting another in {delay:g} s",
                      kind=self.kind, n=link.index, reason=reason.getErrorMessage(), delay=delay)
            self._restarts[link.index] = self.reactor.callLater(delay, self._spawn, link.index)

    def _ready_changed(self) -> None:
        self.ready_count_changed(len(self.ready_links()))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        waits = []
        for link in list(self.links.values()):
            link.process.closeStdin()  # the worker sends what it holds, then exits
            link.ended.addBoth(_cancel, self.reactor.callLater(STOP_TIMEOUT, _kill, link))
            waits.append(link.ended)
        return DeferredList(waits)


def in_frames(rows: list[Any]) -> list[list[Any]]:
    """``rows`` in slices of at most FIRST_ROWS; one empty slice when there are none."""
    return [rows[start : start + FIRST_ROWS] for start in range(0, len(rows), FIRST_ROWS)] or [[]]


def _worker_env() -> dict[str, str]:
    """This environment, with the directory this meterd was imported from first on the path.

    The worker must run the same code as the process that spawned it, also
    when meterd runs from a checkout rather than an installed package.
    """
    env = dict(os.environ)
    home = str(Path(meterd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([home, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _cancel(result: Any, call: IDelayedCall) -> Any:
    if call.active():
        call.cancel()
    return result


def _kill(link: WorkerLink) -> None:
    log.warn("{kind} worker {n} did not stop in {t:g} s; killing it", kind=link.pool.kind, n=link.index, t=STOP_TIMEOUT)
    try:
        link.process.signalProcess("KILL")
    except Exception:  # already gone
        pass
