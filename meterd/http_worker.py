"""An HTTP worker process, ``python -m meterd.http_worker``, spawned by ``meterd --http-workers N``.

twisted.web's HTTP parsing, request objects and writes are most of the
reactor's time under request load (``docs/performance.md``), and the
reactor also runs ingest's flushes and the alarms. A worker does the HTTP
part on another core: it accepts connections on the
HTTP socket, which it inherits from meterd as fd 3 (the kernel hands each
new connection to one accepting process), parses each request with
twisted.web (keep-alive, pipelining, HEAD, the body limit: all as in
meterd's own port) and passes it to meterd as an
:class:`~meterd.web.exchange.Incoming`; meterd decides the answer with the
same code as for its own port and the worker writes it. The worker decides
nothing: authentication, every route, caches and metrics stay in meterd.

stdin and stdout carry length-prefixed (``Int32StringReceiver``) orjson frames:

meterd to worker
  ``{"settings": {limit: value}, "repeat_polls": bool}`` first, meterd's HTTP limits
  (meterd.web.request.Limits) and whether polls may be repeated (the worker serves the port from then on), then
  ``{"answers": [[id, status, content_type, body, {header: value}], ...]}``, and for a streamed answer
  ``{"stream": [id, status, content_type, {header: value}]}``, then a ``{"chunk": [id, data]}`` for each
  ``more`` the worker sent, and ``{"end": [id, whole]}`` (``whole`` false: cut short by a failure)
worker to meterd
  ``{"ready": true}`` once the socket is being accepted on; then, after each
  reactor turn that parsed requests to forward, and each second it answered some itself:
  ``{"requests": [[id, method, path, query, authorization, content_type, body, client, accept], ...], "answered": n,
  "notices": {name: n}, "more": [id, ...], "cancel": [id, ...]}``
  (``answered``: the ``/getAlarme`` polls it answered from what meterd answered before, for meterd's metrics;
  ``more``: streams whose client has taken the last chunk; ``cancel``: streams whose client has gone)

A streamed answer is written as its chunks come, the worker asking for
the next one only once its client's socket has taken the last (the request's
producer is paused meanwhile): a client that stops reading stops meterd's
reading of the body's source, and the worker holds at most one chunk.

Customers poll ``/getAlarme`` with the same request over and over. A worker
keeps meterd's 200 answer to a plain poll (a GET without a body) under the
exact request target and Authorization header it answered, and answers the
same poll again from it while meterd's *answers generation*
(:mod:`meterd.generation`, a word of shared memory) has not moved: meterd
bumps it after every alarm settlement and every change of credentials,
before it answers anything that change decided. Every decision (who the
token is, whether it may read that customer) is meterd's; the worker only
repeats an answer to the very request it was given for.

Bytes travel as latin-1 strings (:mod:`meterd.web.exchange`). When stdin
closes (meterd stops, or dies) the worker stops accepting, answers what is
still waiting 503 (meterd will not answer it any more; a reading posted in
it may still be stored, and its resend is then a duplicate) and exits.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import orjson
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.web.server import Request
from zope.interface import implementer

from meterd.generation import Generation
from meterd.twisted_internals import accept_one_per_wakeup, request_gone, waiting_for_transport
from meterd.web.api import JSON
from meterd.web.errors import ApiError
from meterd.web.exchange import Answer, answer_from_row, answer_headers, incoming_of, incoming_row, write_answer
from meterd.web.request import Limits, make_site
from meterd.web.streaming import cut_short
from meterd.worker_process import GENERATION_FD, SOCKET_FD, ParentLink, run

_STOPPING = Answer(503, JSON, orjson.dumps(ApiError(503, "stopping", "the server is stopping; retry shortly").body()), {})
CLOSE_GRACE = 1.0  # seconds for those 503s to leave before the reactor stops
# A frame is sent early once its requests' bodies reach this: meterd stops a
# worker whose frame passes 16 MB, and each body (up to 64 KiB) may grow 6-fold
# as JSON (a control byte is written \u00XX).
FRAME_BODIES = 512 * 1024
# The polls a worker answered itself reach meterd's metrics with the next
# forwarded requests or after this many seconds, not in a frame of their own
# per reactor turn (thousands a second, each waking meterd's reactor).
REPORT_INTERVAL = 1.0
MAX_POLLS = 20_000  # polls whose answers are kept; past this the memory starts over
MAX_POLL_BYTES = 512  # a longer request target and token than any client's poll is not kept

#: A poll as its client sent it: the request target and the Authorization header.
Poll = tuple[bytes, bytes]


class Waiting(NamedTuple):
    """A request meterd is answering; for a poll, the generation when it was sent."""

    request: Request
    poll: Poll | None
    generation: int


class HttpWorker(ParentLink):
    """The link to meterd over stdio."""

    def __init__(self, reactor: Any, fd: int = SOCKET_FD) -> None:
        super().__init__(reactor, fd)
        # every request: answered here or passed to meterd; the limits are meterd's, from its first frame
        self.site = make_site(self.forward, Limits(), self._notice, reactor)
        self.notices: Counter[str] = Counter()  # refusals since the last frame, for meterd's metrics
        self.waiting: dict[int, Waiting] = {}  # sent to meterd, not yet answered
        self.batch: list[list[Any]] = []
        self.batch_bodies = 0  # bytes of body in the batch
        self.pending: Any = None  # the DelayedCall of the next send
        self.next_id = 0
        self.generation: Generation | None = None
        self.polls: dict[Poll, tuple[int, bytes]] = {}  # -> (generation when sent, meterd's 200 body)
        self.repeat_polls = True  # meterd says no when other processes settle alarms too (a shared store)
        self.answered = 0  # polls answered here since the last frame
        self.streams: dict[int, PipedStream] = {}  # streamed answers being written
        self.more: list[int] = []  # streams that want their next chunk, for the next frame
        self.cancel: list[int] = []  # streams whose client has gone, for the next frame
        self.reporting = LoopingCall(self._report)
        self.reporting.clock = reactor

    def stringReceived(self, frame: bytes) -> None:
        message = orjson.loads(frame)
        answers = message.get("answers")
        if answers is not None:
            waiting = self.waiting
            for id_, *row in answers:
                sent = waiting.pop(id_, None)
                if sent is not None:
                    answer = answer_from_row(row)
                    if sent.poll is not None and answer.status == 200:
                        self._keep(sent.poll, sent.generation, answer.body)
                    write_answer(sent.request, answer)
            return
        chunk = message.get("chunk")
        if chunk is not None:
            id_, data = chunk
            stream = self.streams.get(id_)
            if stream is not None:
                stream.chunk(data.encode("latin-1"))
            return
        if "stream" in message:
            id_, status, content_type, headers = message["stream"]
            sent = self.waiting.pop(id_, None)
            if sent is None:
                return  # cannot be: meterd answers only what is waiting
            if request_gone(sent.request):
                self.ask(self.cancel, id_)
            else:
                self.streams[id_] = stream = PipedStream(self, id_, sent.request)
                stream.begin(status, content_type.encode("latin-1"), headers)
            return
        if "end" in message:
            id_, whole = message["end"]
            stream = self.streams.pop(id_, None)
            if stream is not None:
                stream.end(whole)
            return
        if self.port is None and "settings" in message:
            self.site.set_limits(Limits(**message["settings"]).within_descriptors())
            self.repeat_polls = bool(message["repeat_polls"])
            self.generation = Generation(GENERATION_FD)
            self.adopt(self.reactor.adoptStreamPort, self.site)
            accept_one_per_wakeup(self.port)
            self.reporting.start(REPORT_INTERVAL, now=False)
            self.sendString(b'{"ready":true}')

    def _keep(self, poll: Poll, generation: int, body: bytes) -> None:
        if len(poll[0]) + len(poll[1]) > MAX_POLL_BYTES:
            return
        if len(self.polls) >= MAX_POLLS:
            self.polls.clear()
        self.polls[poll] = (generation, body)

    def forward(self, request: Request) -> None:
        """Answer a poll meterd answered before, while nothing has changed since; else pass it to meterd."""
        poll = _poll(request) if self.repeat_polls and request.path == b"/getAlarme" else None
        generation = 0
        if poll is not None:
            assert self.generation is not None
            generation = self.generation.value()  # before the request leaves: a later change makes its answer stale
            kept = self.polls.get(poll)
            if kept is not None and kept[0] == generation:
                write_answer(request, Answer(200, JSON, kept[1], {}))
                self.answered += 1
                return
        id_ = self.next_id
        self.next_id += 1
        self.waiting[id_] = Waiting(request, poll, generation)
        incoming = incoming_of(request)
        self.batch.append([id_, *incoming_row(incoming)])
        self.batch_bodies += len(incoming.body)
        if self.batch_bodies >= FRAME_BODIES:
            if self.pending is not None:
                self.pending.cancel()
            self.send()
        else:
            self._send_soon()

    def _notice(self, reason: str) -> None:
        self.notices[reason] += 1
        self._send_soon()

    def _report(self) -> None:
        if self.answered:
            self._send_soon()

    def _send_soon(self) -> None:
        if self.pending is None:
            self.pending = self.reactor.callLater(0, self.send)

    def ask(self, asks: list[int], id_: int) -> None:
        """Tell meterd, in the next frame, that stream ``id_`` wants its next chunk (``more``) or has ended (``cancel``)."""
        asks.append(id_)
        self._send_soon()

    def send(self) -> None:
        self.pending = None
        batch, self.batch = self.batch, []
        self.batch_bodies = 0
        message: dict[str, Any] = {"requests": batch, "answered": self.answered}
        if self.notices:
            message["notices"] = self.notices
            self.notices = Counter()
        if self.more:
            message["more"], self.more = self.more, []
        if self.cancel:
            message["cancel"], self.cancel = self.cancel, []
        self.sendString(orjson.dumps(message))
        self.answered = 0

    # IHalfCloseableProtocol: meterd closed our stdin.
    def readConnectionLost(self) -> None:
        self.stop_port()
        if self.reporting.running:
            self.reporting.stop()
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        self.batch, self.batch_bodies = [], 0
        if self.answered:
            self.send()  # the count only: meterd will answer none of what was waiting
        waiting, self.waiting = self.waiting, {}
        for sent in waiting.values():
            write_answer(sent.request, _STOPPING, close=True)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.end(False)  # meterd will send no more of it
        self.grace = CLOSE_GRACE if waiting else 0.0
        self.stdio.loseConnection()


@implementer(IPushProducer)
class PipedStream:
    """A streamed answer from meterd, written to its request as the client takes it.

    The request's producer: the next chunk is asked of meterd only while the
    client's socket takes what was written, so the worker holds one chunk at most.
    """

    def __init__(self, worker: HttpWorker, id_: int, request: Request) -> None:
        self.worker = worker
        self.id = id_
        self.request = request
        self.paused = False
        self.asked = False  # a chunk is on its way
        self.ended = False

    def begin(self, status: int, content_type: bytes, headers: dict[str, str]) -> None:
        request = self.request
        answer_headers(request, status, content_type, headers)
        if request.method == b"HEAD":  # the headers only
            request.finish()
            self.stopProducing()
            return
        request.registerProducer(self, True)
        self.paused = waiting_for_transport(request.channel)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.write(b"")  # the headers, at once
        self._ask()

    def chunk(self, data: bytes) -> None:
        self.asked = False
        if not self.ended:
            self.request.write(data)
            self._ask()

    def end(self, whole: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if request_gone(self.request):
            return
        if whole:
            self.request.unregisterProducer()
            self.request.finish()
        else:
            cut_short(self.request)

    def _ask(self) -> None:
        if not (self.paused or self.asked or self.ended):
            self.asked = True
            self.worker.ask(self.worker.more, self.id)

    # IPushProducer, driven by the HTTP channel
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._ask()

    def stopProducing(self) -> None:
        """The client has gone (or asked only for the headers): meterd stops the body."""
        if not self.ended:
            self.ended = True
            self.worker.streams.pop(self.id, None)
            self.worker.ask(self.worker.cancel, self.id)


def _poll(request: Request) -> Poll | None:
    """A GET without a body, as ``(request target, Authorization header)``; else None.

    Without a body nothing but these two decides a ``/getAlarme`` answer.
    """
    headers = request.requestHeaders
    if request.method != b"GET" or headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding"):
        return None
    authorization = request.getHeader(b"authorization")
    return None if authorization is None else (request.uri, authorization)


if __name__ == "__main__":
    run(HttpWorker)
