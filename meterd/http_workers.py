"""``--http-workers N``: processes that speak HTTP on meterd's port for the reactor.

meterd spawns N :mod:`meterd.http_worker` processes and gives each the
listening HTTP socket. A worker parses each request and sends it over; meterd
answers it with the same code as its own port (the API's
:meth:`~meterd.web.api.Api.respond`, the web portal's pages)
and sends the answer back, gathered per reactor turn. A streamed answer
(:class:`~meterd.web.exchange.Streamed`) goes a chunk per frame, each sent
when the worker asks for it (its client has taken the one before), with one
chunk read ahead: a client that stops reading stops the body's source in
meterd, and neither process holds more than two chunks of it. A worker repeats
meterd's answer to a ``/getAlarme`` poll it sees again until meterd's
answers generation (:mod:`meterd.generation`) moves on, unless the store is
shared with other processes, whose settlements never move it. While at least one
worker is up meterd's own port stops accepting (connections it already has
stay with it), so the reactor spends its time on ingest, alarms and the
answers themselves; while none is, the reactor accepts again.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import asdict
from functools import partial
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from meterd.generation import Generation
from meterd.web.api import Api, run_now
from meterd.web.exchange import Incoming, Reply, Streamed, answer_row, incoming_from_row
from meterd.web.request import Limits
from meterd.web.streaming import Pump
from meterd.worker_process import GENERATION_FD
from meterd.workers import WorkerLink, WorkerPool

log = Logger()


class HttpWorkers(WorkerPool):
    kind = "http"
    module = "meterd.http_worker"

    def __init__(self, count: int, api: Api, limits: Limits, reactor: Any) -> None:
        super().__init__(count, reactor)
        self.api = api
        #: What answers a request: the API's, unless meterd serves more on its port (the web portal's dispatch).
        self.respond: Callable[[Incoming], Coroutine[Any, Any, Reply]] = api.respond
        self.limits = limits
        # Other processes settle alarms in a shared store without moving this
        # process's generation: there, every poll goes to meterd, which reads the store.
        self.repeat_polls = not api.store.shared
        self.listening: Any = None  # meterd's own HTTP port, once it listens
        self.generation: Generation | None = None  # while started
        self._answers: dict[WorkerLink, list[list[Any]]] = {}  # this turn's, per worker
        self._sending: Any = None  # the DelayedCall that sends them
        self.streams: dict[tuple[WorkerLink, int], WorkerStream] = {}  # streamed answers being sent, by worker and request

    def port(self) -> Any:
        return self.listening

    def child_fds(self) -> dict[int, int]:
        assert self.generation is not None
        return {GENERATION_FD: self.generation.fd}

    def first_messages(self) -> list[dict[str, Any]]:
        return [{"settings": asdict(self.limits), "repeat_polls": self.repeat_polls}]

    def answers_changed(self) -> None:
        """An alarm settled or credentials changed: the workers' kept answers are stale."""
        if self.generation is not None:
            self.generation.bump()

    def startService(self) -> None:
        self.generation = Generation()
        super().startService()

    def ready_count_changed(self, ready: int) -> None:
        self.api.metrics.http_workers.set(ready)
        super().ready_count_changed(ready)

    def message(self, link: WorkerLink, message: dict[str, Any]) -> None:
        if message.get("answered"):
            self.api.count("/getAlarme", 200, message["answered"])
        for reason, n in message.get("notices", {}).items():
            self.api.metrics.http_refused(reason, n)
        for id_ in message.get("more", ()):
            stream = self.streams.get((link, id_))
            if stream is not None:
                stream.pump.resume()
        for id_ in message.get("cancel", ()):
            stream = self.streams.pop((link, id_), None)
            if stream is not None:
                stream.pump.stop()
        respond = self.respond
        for id_, *row in message.get("requests", ()):
            run_now(respond(incoming_from_row(row)), partial(self._answered, link, id_))

    def _answered(self, link: WorkerLink, id_: int, answer: Reply) -> None:
        if not self.running or self.links.get(link.index) is not link:
            if isinstance(answer, Streamed):
                answer.body.close()
            return  # stopping (the worker answered it 503), or that worker died, and the connection with it
        if isinstance(answer, Streamed):
            stream = self.streams[(link, id_)] = WorkerStream(self, link, id_, answer)
            link.send({"stream": [id_, answer.status, answer.content_type.decode("latin-1"), answer.headers]})
            stream.pump.start()  # reads the first chunk; sends it when the worker asks
            return
        self._answers.setdefault(link, []).append([id_, *answer_row(answer)])
        if self._sending is None:
            self._sending = self.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._sending = None
        answers, self._answers = self._answers, {}
        for link, rows in answers.items():
            link.send({"answers": rows})

    def ended(self, link: WorkerLink, reason: Any) -> None:
        for key in [key for key in self.streams if key[0] is link]:
            self.streams.pop(key).pump.stop()
        super().ended(link, reason)

    def stopService(self) -> Any:
        if self._sending is not None:
            self._sending.cancel()
            self._send()
        for stream in self.streams.values():
            stream.pump.stop()
        self.streams.clear()
        stopped = super().stopService()
        if self.generation is not None:
            stopped.addBoth(_close, self.generation)
            self.generation = None
        return stopped


class WorkerStream:
    """A streamed answer going to a worker: a chunk per frame, one each time the worker asks for it."""

    def __init__(self, pool: HttpWorkers, link: WorkerLink, id_: int, answer: Streamed) -> None:
        self.pool = pool
        self.link = link
        self.id = id_
        self.pump = Pump(answer.body, self, paused=True)

    def write(self, chunk: bytes) -> None:
        self.link.send({"chunk": [self.id, chunk.decode("latin-1")]})
        self.pump.pause()  # until the worker asks for the next

    def done(self) -> None:
        self._end(True)

    def failed(self, failure: Failure) -> None:
        log.failure("a streamed answer through {kind} worker {n} was cut short", failure, kind=self.pool.kind, n=self.link.index)
        self._end(False)

    def _end(self, whole: bool) -> None:
        self.pool.streams.pop((self.link, self.id), None)
        self.link.send({"end": [self.id, whole]})


def _close(result: Any, generation: Generation) -> Any:
    generation.close()
    return result
