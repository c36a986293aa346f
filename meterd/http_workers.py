"""``--http-workers N``: processes that speak HTTP on meterd's port for the reactor.

meterd spawns N :mod:`meterd.http_worker` processes and gives each the
listening HTTP socket. A worker parses each request and sends it over; meterd
answers it with the same :meth:`~meterd.web.api.Api.respond` as its own port
and sends the answer back, gathered per reactor turn. On SQLite, with
authentication on, workers answer customers' own ``/getAlarme`` themselves
(:mod:`meterd.http_alarms`): meterd gives them every customer's token hash
and bumps a shared generation (:mod:`meterd.generation`) after each alarm
settlement. While at least one worker is up meterd's own port stops
accepting (connections it already has stay with it), so the reactor spends
its time on ingest, alarms and the answers themselves; while none is, the
reactor accepts again.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from meterd.alarms import Alarms
from meterd.generation import Generation
from meterd.store.base import Customer
from meterd.web.api import Api, run_now
from meterd.web.exchange import Answer, answer_row, incoming_from_row
from meterd.worker_process import GENERATION_FD
from meterd.workers import WorkerLink, WorkerPool, in_frames


class HttpWorkers(WorkerPool):
    kind = "http"
    module = "meterd.http_worker"

    def __init__(self, count: int, api: Api, listening: Any, reactor: Any, *, sqlite_path: str | None = None) -> None:
        """``listening()`` is meterd's own HTTP port, once it listens; ``sqlite_path`` the store's file, if SQLite."""
        super().__init__(count, reactor)
        self.api = api
        self._listening = listening
        self.alarms: Alarms | None = api.alarm_service
        self.sqlite_path = sqlite_path
        # Workers answer /getAlarme from the file only where no other process settles alarms and a token is needed.
        self.local_alarms = self.alarms is not None and sqlite_path is not None and not api.settings.no_auth
        self.generation: Generation | None = None  # while started with local alarms
        self._answers: dict[WorkerLink, list[list[Any]]] = {}  # this turn's, per worker
        self._sending: Any = None  # the DelayedCall that sends them

    def port(self) -> Any:
        return self._listening()

    def child_fds(self) -> dict[int, int]:
        return {} if self.generation is None else {GENERATION_FD: self.generation.fd}

    def first_messages(self) -> list[dict[str, Any]]:
        """The settings with the first customers' token hashes, then the rest.

        The worker serves the port from the first frame on: until the others
        arrive, a customer it does not know yet is answered by meterd, as
        every request it does not answer itself.
        """
        if not self.local_alarms:
            return [{"alarms": None}]
        first, *rest = in_frames([_customer_row(c) for c in self.api.directory.customers.values()])
        alarms = {"db": self.sqlite_path, "recent_events": self.alarms.recent_events, "customers": first}
        return [{"alarms": alarms}, *({"customers": customers} for customers in rest)]

    def startService(self) -> None:
        if self.local_alarms:
            self.generation = Generation()
            self.alarms.settled_listeners.append(self.generation.bump)
            self.api.directory.customer_listeners.append(self._customer_added)
        super().startService()

    def _customer_added(self, customer: Customer) -> None:
        self.send_all({"customers": [_customer_row(customer)]})

    def ready_count_changed(self, ready: int) -> None:
        self.api.metrics.http_workers.set(ready)
        super().ready_count_changed(ready)

    def message(self, link: WorkerLink, message: dict[str, Any]) -> None:
        if message.get("answered"):
            self.api.count("/getAlarme", 200, message["answered"])
        respond = self.api.respond
        for id_, *row in message.get("requests", ()):
            run_now(respond(incoming_from_row(row)), partial(self._answered, link, id_))

    def _answered(self, link: WorkerLink, id_: int, answer: Answer) -> None:
        if not self.running or self.links.get(link.index) is not link:
            return  # stopping (the worker answered it 503), or that worker died, and the connection with it
        self._answers.setdefault(link, []).append([id_, *answer_row(answer)])
        if self._sending is None:
            self._sending = self.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._sending = None
        answers, self._answers = self._answers, {}
        for link, rows in answers.items():
            link.send({"answers": rows})

    def stopService(self) -> Any:
        if self._sending is not None:
            self._sending.cancel()
            self._send()
        if self.generation is not None:
            self.alarms.settled_listeners.remove(self.generation.bump)
            self.api.directory.customer_listeners.remove(self._customer_added)
        stopped = super().stopService()
        if self.generation is not None:
            stopped.addBoth(_close, self.generation)
            self.generation = None
        return stopped


def _customer_row(customer: Customer) -> list[str]:
    return [customer.id, customer.tz, customer.token_hash]


def _close(result: Any, generation: Generation) -> Any:
    generation.close()
    return result
