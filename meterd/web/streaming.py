"""Streamed answers: a body read a chunk at a time, only as fast as the client takes it.

A :class:`~meterd.web.exchange.Streamed` answer's body is a
:class:`~meterd.web.exchange.Chunks`: asked for one chunk at a time. A
:class:`Pump` asks for the next chunk only while its sink wants more, and
reads one chunk ahead so the next one is ready when the sink is; so at most
two chunks of a body are held however large it is, and a client that stops
reading stops the reading of the store behind it.

The sinks: :class:`RequestStream` writes to a twisted.web request of
meterd's own port, as a push producer registered with it (the HTTP channel
pauses it while the socket's buffer is full, and stops it when the
connection is lost); an HTTP worker's stream (:mod:`meterd.http_workers`)
sends a chunk over the pipe each time the worker asks for one.

A body cut short (its source failed) is logged here and ended without
HTTP's terminating chunk, so the client knows it is incomplete.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from meterd.twisted_internals import request_gone, waiting_for_transport
from meterd.web.exchange import Chunks, Streamed, answer_headers

log = Logger()

_NOTHING: Any = object()  # no chunk ready


class Sink(Protocol):
    def write(self, chunk: bytes) -> None:
        """A chunk of the body: it may pause the pump before it returns."""

    def done(self) -> None:
        """The body is complete."""

    def failed(self, failure: Failure) -> None:
        """The body's source failed: the body is cut short."""


class Pump:
    """Moves chunks from a body to a sink while the sink wants them, one chunk read ahead."""

    def __init__(self, body: Chunks, sink: Sink, *, paused: bool = False) -> None:
        self.body = body
        self.sink = sink
        self.paused = paused
        self.stopped = False
        self._ready: Any = _NOTHING  # a chunk read ahead (None: the end)
        self._reading: Deferred[bytes | None] | None = None
        self._moving = False  # inside _move: callbacks that fire at once only record their result

    def start(self) -> None:
        self._move()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._move()

    def stop(self) -> None:
        """The sink has gone: read nothing more, and let the body go."""
        if not self.stopped:
            self.stopped = True
            self.body.close()

    def _move(self) -> None:
        if self._moving:
            return
        self._moving = True
        try:
            while not self.stopped:
                if self._ready is not _NOTHING and not self.paused:
                    chunk, self._ready = self._ready, _NOTHING
                    if chunk is None:
                        self.stopped = True
                        self.body.close()
                        self.sink.done()
                        return
                    self.sink.write(chunk)
                elif self._ready is _NOTHING and self._reading is None:
                    self._reading = self.body.next_chunk()
                    self._reading.addCallbacks(self._read, self._failed)
                    if self._reading is not None:
                        return  # waiting for it; _read moves on
                else:
                    return
        finally:
            self._moving = False

    def _read(self, chunk: bytes | None) -> None:
        self._reading = None
        self._ready = chunk
        self._move()

    def _failed(self, failure: Failure) -> None:
        self._reading = None
        if not self.stopped:
            self.stopped = True
            self.body.close()
            self.sink.failed(failure)


@implementer(IPushProducer)
class RequestStream:
    """A streamed answer written to a request of meterd's own port, as the request's producer."""

    def __init__(self, request: Request, answer: Streamed) -> None:
        self.request = request
        self.pump = Pump(answer.body, self)
        answer_headers(request, answer.status, answer.content_type, answer.headers)

    def start(self) -> None:
        request = self.request
        if request.method == b"HEAD":  # the headers only
            self.pump.stop()
            request.finish()
            return
        request.registerProducer(self, True)
        if waiting_for_transport(request.channel):  # registered while the socket's buffer is full
            self.pump.pause()
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.write(b"")  # the headers, at once
        self.pump.start()

    # IPushProducer, driven by the HTTP channel
    def pauseProducing(self) -> None:
        self.pump.pause()

    def resumeProducing(self) -> None:
        self.pump.resume()

    def stopProducing(self) -> None:
        self.pump.stop()

    # Sink
    def write(self, chunk: bytes) -> None:
        self.request.write(chunk)

    def done(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def failed(self, failure: Failure) -> None:
        log.failure("a streamed answer to {path} was cut short", failure, path=self.request.path.decode("utf-8", "replace"))
        cut_short(self.request)


def cut_short(request: Request) -> None:
    """End a chunked body without its terminating chunk: what was written is sent, then the connection closes."""
    if request_gone(request) or request.channel is None:
        return
    request.unregisterProducer()
    request.channel.loseConnection()


def write_stream(request: Request, answer: Streamed) -> None:
    """Write ``answer`` to ``request`` as the client reads it; the body is let go if the client is gone already."""
    if request.finished or request_gone(request):
        answer.body.close()
        return
    RequestStream(request, answer).start()
