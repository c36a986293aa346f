"""meterd's twisted.web Site: what every HTTP connection may cost, and errors in meterd's own shape.

Nobody needs a token to open a connection, so what a connection can take is
bounded here, before any route runs:

* **connections**: at most ``max_connections`` open (kept below the process's
  descriptor limit, with a reserve for the store and the logs) and at most
  ``max_per_address`` from one address, so one client cannot lock others out;
* **time**: a request's headers must arrive within ``header_timeout`` of its
  first byte, and its body within ``body_timeout`` and at ``body_min_rate``
  bytes a second at least (a slow sender holds a connection and a buffer);
* **memory**: a body over 64 KiB is refused from its ``Content-Length``
  before any of it is read (413), or as soon as a chunked one passes it; the
  bodies being received are bounded together by ``max_buffered_bodies``; and
  a connection whose answers the client does not read stops being read
  (backpressure), so pipelined requests cannot pile answers up in memory;
  its kernel send buffer is capped too (``SEND_BUFFER``), so what the
  kernel holds for it, and what meterd answers before the pause, is small;
* **the accept queue**: the listening socket's backlog is ``BACKLOG``
  unless ``--http`` says otherwise (Twisted's default, 50, overflows under a
  burst of connections, and the kernel then drops anyone's, not only the
  burst's); the caps above are applied once a connection is accepted.

Every refusal is answered with meterd's error body
(``{"error": {"code", "message"}}``), including those of the HTTP parser
itself (400 bad framing, 414 request line, 431 headers), counted in
``/metrics`` and summarised in the log at most once a minute.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from meterd import tuning
from meterd.twisted_internals import at_request_line, headers_size_so_far
from meterd.web.exchange import reason

log = Logger()

MAX_BODY = 64 * 1024
#: Descriptors kept for the store, its write-ahead log, the logs and the workers' pipes.
DESCRIPTOR_RESERVE = 256
SWEEP_INTERVAL = 1.0  # seconds between checks of the header and body deadlines
BODY_GRACE = 5.0  # seconds of a body before its rate is held to the minimum
#: After a refusal the connection is closed for writing and what the client still
#: sends is read and dropped this long, so it reads the answer rather than a reset.
LINGER = 5.0

#: Bytes of a connection's kernel send buffer (Linux doubles what is asked): a
#: client that reads nothing holds this much in the kernel and no more, where
#: autotuning would let each connection hold up to ``tcp_wmem``'s maximum (4 MB).
#: Enough for a stream of several MB/s at a continental round-trip time.
SEND_BUFFER = 256 * 1024
BACKLOG = 1024
#: Connections closed since memory was last handed back to the system that
#: make it worth doing again (see :func:`meterd.tuning.release_free_memory`).
CLOSED_BEFORE_TRIM = 64

Notice = Callable[[str], None]  # counts one event by name (metrics, and the log's summary)


@dataclass(frozen=True)
class Limits:
    """What one HTTP connection, and all of them together, may take (the options of the same names)."""

    max_connections: int = 10_000
    max_per_address: int = 128
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 1024  # bytes a second, after BODY_GRACE
    max_buffered_bodies: int = 64 * 1024 * 1024
    idle_timeout: float = 60.0  # a kept-alive connection with nothing to do

    def within_descriptors(self) -> Limits:
        """These limits with ``max_connections`` under the soft descriptor limit, raised to the hard one first.

        Past the limit ``accept`` fails, and so does the store when it opens
        a file: the connections must run out before the descriptors do.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if soft == resource.RLIM_INFINITY:
            return self
        return Limits(**{**self.__dict__, "max_connections": max(1, min(self.max_connections, soft - DESCRIPTOR_RESERVE))})


def error_response(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer in meterd's error shape, closing the connection: for what no route sees."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, reason(status)),
        b"Content-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\n",
        b"Content-Length: %d\r\n\r\n" % len(body),
        body,
    ))


class LimitedRequest(Request):
    """A request whose body counts against the connection's deadlines and everyone's body buffer.

    A declared ``Content-Length`` over the limit never gets here (the channel
    refuses it with the headers); a chunked body is refused as it passes it.
    """

    _received = 0

    @property
    def guarded(self) -> Channel | None:
        """The request's channel: a MeterdSite makes only :class:`Channel`\\ s."""
        return cast("Channel | None", self.channel)

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if self.guarded is not None and length != 0:
            self.guarded.body_begins()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.guarded
        if channel is None or channel.refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            channel.refuse(413, "body_too_large", "the body is larger than 64 KiB")
        elif channel.body_received(len(data)):
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.guarded is not None:
            self.guarded.body_ends()
        super().requestReceived(command, path, version)


class Channel(HTTPChannel):
    """HTTP/1.1 with meterd's limits, its error answers and backpressure on pipelined requests."""

    site: MeterdSite
    peer: str = ""  # the client's address, as the site counts it
    _host: Any = None
    _linger: Any = None
    started: float | None = None  # when the request being received began (its headers, then its body)
    receiving_body = False
    body_bytes = 0  # of the body being received, counted in the site's buffer
    refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        try:
            self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)  # type: ignore[union-attr]
        except (AttributeError, OSError):
            pass  # not a socket of its own (TLS over a memory BIO, a test's transport)

    def getHost(self) -> Any:
        """The connection's local address, asked of the kernel once (every Request asks)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    # -- deadlines -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.started is None and not self._handlingRequest:
            self.started = self.site.now()
            self.site.receiving(self)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY:
            self.refuse(413, "body_too_large", "the body is larger than 64 KiB")
            return
        self.started = self.site.now()  # the body's turn; with no body, allContentReceived ends it
        super().allHeadersReceived()

    def body_begins(self) -> None:
        self.receiving_body = True

    def body_received(self, n: int) -> bool:
        """Count a chunk of body; False (and the request refused) when every connection's bodies are full."""
        if not self.site.buffer_body(n):
            self.refuse(503, "busy", "too many request bodies are being received; retry shortly")
            return False
        self.body_bytes += n
        return True

    def body_ends(self) -> None:
        self.site.release_body(self.body_bytes)
        self.body_bytes = 0
        self.receiving_body = False

    def allContentReceived(self) -> None:
        self.started = None
        self.site.done_receiving(self)
        super().allContentReceived()

    def overdue(self, now: float) -> None:
        """The site's sweep: refuse a request whose headers or body are late."""
        if self.started is None or self.refused:
            return
        elapsed = now - self.started
        limits = self.site.limits
        if not self.receiving_body:
            if elapsed > limits.header_timeout:
                self.refuse(408, "header_timeout", f"the request's headers took more than {limits.header_timeout:g} s")
        elif elapsed > limits.body_timeout:
            self.refuse(408, "body_timeout", f"the request's body took more than {limits.body_timeout:g} s")
        elif elapsed > BODY_GRACE and self.body_bytes < limits.body_min_rate * elapsed:
            self.refuse(408, "body_too_slow", f"the request's body came slower than {limits.body_min_rate} bytes a second")

    # -- backpressure ---------------------------------------------------------------

    def pauseProducing(self) -> None:
        """The client does not read its answers: stop parsing what it already sent, and stop reading.

        HTTPChannel alone pauses reading only between requests, and goes on
        parsing requests already received: pipelined in one read, thousands of
        them were answered into memory while the client read none.
        """
        super().pauseProducing()
        self.paused = True  # LineReceiver's own flag: the requests already buffered wait too
        self._networkProducer.pauseProducing()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.paused and not self.refused:
            self.paused = False
            super().dataReceived(b"")  # parse on where it stopped

    # -- meterd's errors for what the parser refuses -----------------------------------

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` in meterd's shape, parse nothing more, and close.

        Closed for writing once the answer is sent, and what the client still
        sends (the rest of a body it was sending) is read and dropped for up
        to LINGER seconds: closing outright would reset the connection, and
        the client would see the reset rather than the answer.
        """
        if self.refused:
            return
        self.refused = True
        self.paused = True  # LineReceiver stops parsing what is already buffered
        self.site.notice(code)
        self.dataReceived = lambda data: None  # type: ignore[method-assign]  # what the client sends after is dropped
        transport: Any = self.transport  # a TCP transport (or a test's), which can close for writing
        assert transport is not None
        transport.write(error_response(status, code, message))
        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
            self._linger = self.callLater(LINGER, transport.abortConnection)
        else:
            self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def lineReceived(self, line: bytes) -> None:
        if headers_size_so_far(self) + len(line) > self.totalHeadersSize:
            self.refuse(431, "headers_too_large", f"the request's headers are larger than {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if at_request_line(self):
            self.refuse(414, "uri_too_long", f"the request line is longer than {self.MAX_LENGTH} bytes")
        else:
            self.refuse(431, "headers_too_large", f"a header line is longer than {self.MAX_LENGTH} bytes")

    # -- quiet timeouts -----------------------------------------------------------------

    def timeoutConnection(self) -> None:
        """An idle connection timed out: counted and summarised, not logged one by one."""
        self.site.notice("idle_timeout")
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        self._abortingCall = None
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.body_ends()
        self.site.done_receiving(self)
        self.site.connection_ended(self.peer)
        super().connectionLost(reason)


class _Handled(Resource):
    """Every request, whatever its path, to one handler that finishes it later (meterd routes by itself)."""

    isLeaf = True

    def __init__(self, handle: Callable[[Request], None]) -> None:
        super().__init__()
        self.handle = handle

    def render(self, request: Request) -> Any:
        self.handle(request)
        return NOT_DONE_YET


class MeterdSite(Site):
    """A Site that hands every request to one handler and keeps every connection within :class:`Limits`."""

    # HTTP/1.1: Site's default only adds a wrapper that would negotiate HTTP/2 (the h2 package)
    protocol = Channel  # type: ignore[assignment]
    requestFactory = LimitedRequest

    def __init__(self, handle: Callable[[Request], None], limits: Limits, notice: Notice, clock: Any) -> None:
        super().__init__(_Handled(handle), timeout=limits.idle_timeout, reactor=clock)
        self.limits = limits
        self.notice = notice
        self.clock = clock
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.buffered_bodies = 0
        self.closed_since_trim = 0
        self._receiving: dict[Channel, None] = {}  # channels with a request's headers or body under way
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock

    def set_limits(self, limits: Limits) -> None:
        """New limits, for connections opened from now on (an HTTP worker gets meterd's at start)."""
        self.limits = limits
        self.timeOut = limits.idle_timeout

    def log(self, request: http.Request) -> None:
        """No per-request access log on the hot path; /metrics counts requests."""

    def now(self) -> float:
        return float(self.clock.seconds())

    def startFactory(self) -> None:
        super().startFactory()
        if not self._sweep.running:
            self._sweep.start(SWEEP_INTERVAL, now=False)

    def stopFactory(self) -> None:
        if self._sweep.running:
            self._sweep.stop()
        super().stopFactory()

    def buildProtocol(self, addr: IAddress | None) -> Channel | None:  # type: ignore[override]  # protocol is Channel
        """A channel, or None (the connection is closed at once) past a connection limit."""
        host = getattr(addr, "host", "")
        if self.open >= self.limits.max_connections:
            self.notice("too_many_connections")
            return None
        if self.by_address.get(host, 0) >= self.limits.max_per_address:
            self.notice("too_many_connections_from_address")
            return None
        channel: Channel | None = super().buildProtocol(addr)
        if channel is not None:
            channel.peer = host
            self.open += 1
            self.by_address[host] = self.by_address.get(host, 0) + 1
        return channel

    def connection_ended(self, host: str) -> None:
        self.open -= 1
        self.closed_since_trim += 1
        left = self.by_address.get(host, 0) - 1
        if left > 0:
            self.by_address[host] = left
        else:
            self.by_address.pop(host, None)

    def receiving(self, channel: Channel) -> None:
        self._receiving[channel] = None

    def done_receiving(self, channel: Channel) -> None:
        self._receiving.pop(channel, None)

    def buffer_body(self, n: int) -> bool:
        if self.buffered_bodies + n > self.limits.max_buffered_bodies:
            return False
        self.buffered_bodies += n
        return True

    def release_body(self, n: int) -> None:
        self.buffered_bodies -= n

    def sweep(self) -> None:
        now = self.now()
        for channel in list(self._receiving):
            channel.overdue(now)
        if self.closed_since_trim >= CLOSED_BEFORE_TRIM:
            # Many connections gone (an attack's, say): give the heap they used back.
            self.closed_since_trim = 0
            tuning.release_free_memory()


def with_backlog(description: str) -> str:
    """An endpoint string with meterd's ``BACKLOG`` unless it names its own."""
    if ":backlog=" in description or description.split(":", 1)[0] not in ("tcp", "tcp6", "ssl", "unix"):
        return description
    return f"{description}:backlog={BACKLOG}"


def make_site(handle: Callable[[Request], None], limits: Limits, notice: Notice, clock: Any) -> MeterdSite:
    """The Site of meterd's own HTTP port (:meth:`meterd.portal.site.Portal.serve`), or of an HTTP worker's."""
    return MeterdSite(handle, limits, notice, clock)
