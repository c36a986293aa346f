"""An HTTP worker process, ``python -m meterd.http_worker``, spawned by ``meterd --http-workers N``.

twisted.web's HTTP parsing, request objects and writes took ~60 % of the
reactor's time under request load, meterd's own handlers ~10 % (py-spy,
issue 8), and the reactor also runs ingest's flushes and the alarms. A
worker does the HTTP part on another core: it accepts connections on the
HTTP socket, which it inherits from meterd as fd 3 (the kernel hands each
new connection to one accepting process), parses each request with
twisted.web (keep-alive, pipelining, HEAD, the body limit: all as in
meterd's own port) and passes it to meterd as an
:class:`~meterd.web.exchange.Incoming`; meterd decides the answer with the
same code as for its own port and the worker writes it. The worker holds no
state: authentication, every route, caches and metrics stay in meterd.

stdin and stdout carry length-prefixed (``Int32StringReceiver``) orjson frames:

meterd to worker
  ``{"alarms": null}`` first, or, when the worker may answer ``/getAlarme``
  itself (:mod:`meterd.http_alarms`; SQLite, authentication on):
  ``{"alarms": {"db": path, "recent_events": n, "customers": [[id, tz, token_hash], ...]}}``
  with the first few thousand customers, then ``{"customers": [...]}`` with the rest, a few
  thousand at a time, and for each customer added; and
  ``{"answers": [[id, status, content_type, body, {header: value}], ...]}``
worker to meterd
  ``{"ready": true}`` once the socket is being accepted on; then, after each
  reactor turn that parsed requests to forward, and each second it answered some itself:
  ``{"requests": [[id, method, path, query, authorization, content_type, body, too_large], ...], "answered": n}``
  (``answered``: the ``/getAlarme`` requests it answered itself since its last frame, for meterd's metrics)

Bytes travel as latin-1 strings (:mod:`meterd.web.exchange`). When stdin
closes (meterd stops, or dies) the worker stops accepting, answers what is
still waiting 503 (meterd will not answer it any more; a reading posted in
it may still be stored, and its resend is then a duplicate) and exits.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from twisted.internet.task import LoopingCall
from twisted.web.server import Request

from meterd.generation import Generation
from meterd.http_alarms import LocalReads, RawRequest, WorkerAlarms
from meterd.web.api import JSON, run_now
from meterd.web.errors import ApiError
from meterd.web.exchange import Answer, Incoming, answer_from_row, incoming_of, incoming_row, write_answer
from meterd.web.request import make_site
from meterd.worker_process import GENERATION_FD, SOCKET_FD, ParentLink, run

_STOPPING = Answer(503, JSON, orjson.dumps(ApiError(503, "stopping", "the server is stopping; retry shortly").body()), {})
CLOSE_GRACE = 1.0  # seconds for those 503s to leave before the reactor stops
# A frame is sent early once its requests' bodies reach this: meterd stops a
# worker whose frame passes 16 MB, and each body (up to 64 KiB) may grow 6-fold
# as JSON (a control byte is written \u00XX).
FRAME_BODIES = 512 * 1024
# The requests a worker answered itself reach meterd's metrics with the next
# forwarded requests or after this many seconds, not in a frame of their own
# per reactor turn (thousands a second, each waking meterd's reactor).
REPORT_INTERVAL = 1.0


class HttpWorker(ParentLink):
    """The link to meterd over stdio."""

    def __init__(self, reactor: Any, fd: int = SOCKET_FD) -> None:
        super().__init__(reactor, fd)
        self.site = make_site(self.forward)  # every request: answered here or passed to meterd
        self.waiting: dict[int, Request] = {}  # sent to meterd, not yet answered
        self.batch: list[list[Any]] = []
        self.batch_bodies = 0  # bytes of body in the batch
        self.pending: Any = None  # the DelayedCall of the next send
        self.next_id = 0
        self.alarms: WorkerAlarms | None = None
        self.answered = 0  # requests answered here since the last frame
        self.reporting = LoopingCall(self._report)
        self.reporting.clock = reactor

    def stringReceived(self, frame: bytes) -> None:
        message = orjson.loads(frame)
        answers = message.get("answers")
        if answers is not None:
            waiting = self.waiting
            for id_, *row in answers:
                request = waiting.pop(id_, None)
                if request is not None:
                    write_answer(request, answer_from_row(row))
            return
        if "customers" in message and self.alarms is not None:
            self.alarms.add_customers(message["customers"])
            return
        if self.port is None:
            alarms = message.get("alarms")
            if alarms is not None:
                self.alarms = WorkerAlarms(LocalReads(alarms["db"]), Generation(GENERATION_FD), alarms["recent_events"])
                self.alarms.add_customers(alarms["customers"])
            self.adopt(self.reactor.adoptStreamPort, self.site)
            self.port.doRead = partial(_accept_one, self.port, self.port.doRead)
            self.reporting.start(REPORT_INTERVAL, now=False)
            self.sendString(b'{"ready":true}')

    def forward(self, request: Request) -> None:
        alarms = self.alarms
        if alarms is not None and request.path == b"/getAlarme":
            raw = _plain_get(request)
            if raw is not None:
                body = alarms.repeat(raw)
                if body is not None:
                    self._write_own_answer(request, body)
                    return
            incoming = incoming_of(request)
            run_now(alarms.answer(incoming, raw), partial(self._answered_here, request, incoming))
        else:
            self._to_meterd(request, incoming_of(request))

    def _answered_here(self, request: Request, incoming: Incoming, body: bytes | None) -> None:
        if body is None:
            self._to_meterd(request, incoming)
        else:
            self._write_own_answer(request, body)

    def _write_own_answer(self, request: Request, body: bytes) -> None:
        write_answer(request, Answer(200, JSON, body, {}))
        self.answered += 1

    def _report(self) -> None:
        if self.answered:
            self._send_soon()

    def _to_meterd(self, request: Request, incoming: Incoming) -> None:
        id_ = self.next_id
        self.next_id += 1
        self.waiting[id_] = request
        self.batch.append([id_, *incoming_row(incoming)])
        self.batch_bodies += len(incoming.body)
        if self.batch_bodies >= FRAME_BODIES:
            if self.pending is not None:
                self.pending.cancel()
            self.send()
        else:
            self._send_soon()

    def _send_soon(self) -> None:
        if self.pending is None:
            self.pending = self.reactor.callLater(0, self.send)

    def send(self) -> None:
        self.pending = None
        batch, self.batch = self.batch, []
        self.batch_bodies = 0
        self.sendString(orjson.dumps({"requests": batch, "answered": self.answered}))
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
        for request in waiting.values():
            write_answer(request, _STOPPING, close=True)
        self.grace = CLOSE_GRACE if waiting else 0.0
        self.transport.loseConnection()


def _plain_get(request: Request) -> RawRequest | None:
    """A GET without a body, as ``(request target, Authorization header)``; else None.

    Without a body nothing but these two decides a ``/getAlarme`` answer.
    """
    headers = request.requestHeaders
    if request.method != b"GET" or headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding"):
        return None
    authorization = request.getHeader(b"authorization")
    return None if authorization is None else (request.uri, authorization)


def _accept_one(port: Any, do_read: Any) -> None:
    """Accept one connection per wakeup (Twisted's port takes up to ``numberAccepts``, 100 at first).

    Every worker waits on the same listening socket and is woken by every new
    connection; taking one at a time lets them take turns, so connections
    opened together (a client's pool) spread over the workers instead of all
    going to whichever woke first, and stay there while they are kept alive.
    """
    port.numberAccepts = 1
    do_read()


if __name__ == "__main__":
    run(HttpWorker)
