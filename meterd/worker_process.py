"""The child's side of a worker (:mod:`meterd.workers`): stdio frames, logs, signals.

A worker inherits its listening socket as fd 3, reads frames from meterd on
stdin and writes frames to it on stdout, and logs to stderr, one
``LEVEL text`` line per event, which meterd logs under the worker's number.
"""

from __future__ import annotations

import fcntl
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.logger import FileLogObserver, eventAsText, globalLogBeginner
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from meterd import tuning

SOCKET_FD = 3
GENERATION_FD = 4  # an HTTP worker's: meterd's answers generation (meterd.generation)
PIPE_SIZE = 1024 * 1024


@implementer(interfaces.IHalfCloseableProtocol)
class ParentLink(Int32StringReceiver):
    """A worker's frames to and from meterd; the worker's reactor stops once meterd is gone.

    A subclass stops its port and sends what it holds when meterd closes its
    stdin (``readConnectionLost``), then closes stdout.
    """

    # meterd's frames: keys and token hashes come a few thousand rows a frame,
    # but an HTTP worker's answers of a turn, bodies included, come in one.
    MAX_LENGTH = 1 << 30

    def __init__(self, reactor: Any, fd: int = SOCKET_FD) -> None:
        self.reactor = reactor
        self.fd = fd
        self.port: Any = None  # what the worker adopted the inherited socket as
        self.grace = 0.0  # seconds between meterd gone and the reactor stopped
        self._stopping = False

    @property
    def stdio(self) -> StandardIO:
        """The worker's stdin and stdout, once connected."""
        assert self.transport is not None, "not connected to stdio yet"
        return cast(StandardIO, self.transport)  # what run() connects every link to

    def adopt(self, adopt: Callable[..., Any], *args: Any) -> None:
        """Serve the socket meterd passed us as ``adopt(fd, family, *args)``: a reactor's
        ``adoptDatagramPort`` or ``adoptStreamPort``, which takes a dup of it."""
        sock = socket.socket(fileno=self.fd)  # learns the family
        sock.setblocking(False)  # the reactor reads until EAGAIN; Twisted leaves this to whoever adopts
        try:
            self.port = adopt(sock.fileno(), sock.family, *args)
        finally:
            sock.close()

    def stop_port(self) -> None:
        """Take nothing more from the inherited socket; it closes when the process exits.

        Not ``stopListening``: on a UNIX socket that removes the path, which is
        meterd's, still listening until it stops itself.
        """
        if self.port is not None:
            self.port.stopReading()
            self.port = None

    def readConnectionLost(self) -> None:
        """meterd closed our stdin: stop the port, send what is held, close stdout (each kind of worker)."""
        raise NotImplementedError

    def writeConnectionLost(self) -> None:
        self.connectionLost()  # meterd is gone: nobody to send to

    def connectionLost(self, reason: Any = None) -> None:
        if self.reactor.running and not self._stopping:  # told of stdout, then again of the whole link
            self._stopping = True
            self.reactor.callLater(self.grace, self.reactor.stop)


def _widen_pipe(fd: int) -> None:
    """Let stdout hold ~200 ms of readings at 60,000/s (Linux's default pipe: 64 KB, ~15 ms).

    meterd's reactor stops reading this pipe while it answers a flush; past
    what the pipe and the transport's buffer hold, the worker stops reading
    its socket, and the kernel's socket buffer is what is left.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


def _as_line(event: dict[str, Any]) -> str:
    """``LEVEL text``, with a traceback if any: meterd adds the time and logs it at that level."""
    return f"{event['log_level'].name} {eventAsText(event, includeTimestamp=False, includeSystem=False)}\n"


def run(link: Callable[[Any], Protocol]) -> None:
    """Run a worker whose link to meterd over stdio is ``link(reactor)``, until it stops the reactor."""
    from twisted.internet import reactor

    tuning.tune()
    _widen_pipe(sys.stdout.fileno())
    # stderr, not stdout (the frames): meterd logs each line under the worker's number
    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stderr, _as_line)], redirectStandardIO=False)
    # A service manager signals the whole group on stop; meterd then closes our
    # stdin once its port is closed, and what we hold is still sent to it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    StandardIO(link(reactor), reactor=reactor)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]  # the reactors have it, IReactorCore does not say
    sys.exit(0)
