"""With a shared store, what other processes change in the directory reaches this one within seconds.

Processes sharing a PostgreSQL database each keep the directory in memory
(who a token belongs to, every meter's key). A customer given a new token,
or a meter a new key, by one process must stop opening anything in all of
them: every ``interval`` each process reads the customers and meters whose
rows changed lately and takes them into its directory, where the old
credential stops mapping to anyone. It asks for a ``margin`` further back
than its own last look, so a row written by a process whose clock runs a
little behind is not missed; taking a row twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from meterd.directory import Directory
from meterd.store.base import Store

log = Logger()

INTERVAL = 2.0
MARGIN_MS = 60_000


class DirectorySync(TimerService):
    def __init__(self, store: Store, directory: Directory, clock: Any, interval: float = INTERVAL) -> None:
        super().__init__(interval, self.check)
        self.clock = self.now = clock  # TimerService's clock, and ours to read the time from
        self.store = store
        self.directory = directory
        self.since_ms = int(self.now.seconds() * 1000) - MARGIN_MS

    def check(self) -> Deferred[None]:
        started_ms = int(self.now.seconds() * 1000)

        def take(changed: tuple[list[Any], list[Any]]) -> None:
            customers, meters = changed
            for customer in customers:
                self.directory.add_customer(customer)
            for meter in meters:
                self.directory.add_meter(meter)
            self.since_ms = started_ms - MARGIN_MS

        def failed(failure: Any) -> None:
            log.warn("cannot read the directory's changes; trying again in {s:g} s: {error}",
                     s=self.step, error=failure.getErrorMessage())

        return self.store.changed_since(self.since_ms).addCallbacks(take, failed)
