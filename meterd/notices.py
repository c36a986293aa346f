"""Things that happen often, logged at most once a minute, with their counts.

A dropped datagram or a timed-out connection is worth an operator's notice,
but not a line each: under a flood that would be thousands of lines a second.
:class:`meterd.metrics.Metrics` counts them in ``recent`` as they happen (and
in ``/metrics`` for good); this service logs what accumulated, once per
interval, and starts the count again.
"""

from __future__ import annotations

from collections import Counter

from twisted.application.internet import TimerService
from twisted.logger import Logger

log = Logger()

INTERVAL = 60.0


class Notices(TimerService):
    def __init__(self, recent: Counter[str], interval: float = INTERVAL) -> None:
        super().__init__(interval, self.report)
        self.recent = recent
        self.interval = interval

    def report(self) -> None:
        if not self.recent:
            return
        summary = ", ".join(f"{what}: {n}" for what, n in sorted(self.recent.items()))
        self.recent.clear()
        log.info("in the last {interval:.0f} s: {summary}", interval=self.interval, summary=summary)

    def stopService(self) -> object:
        result = super().stopService()
        self.report()
        return result
