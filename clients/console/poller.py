"""The customer's alarm feed: polls ``/getAlarme`` and announces what changed.

Kept apart from the menu because it runs on its own clock, between and during
whatever the person is doing, and talks back only through ``notify``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from clients.api import MeterdClient, ServerUnreachable

from .errors import describe_error
from .messages import Messages
from .render import Renderer

__all__ = ["AlarmPoller"]


class AlarmPoller:
    """Polls ``/getAlarme`` with the cursor and announces new raised/cleared events.

    The first answer only sets the baseline (old events are history, not news).
    A server that goes away is reported once; polling carries on and says so
    when it is back. Other errors (e.g. 501 before alarms exist) are reported
    once per error code, not every interval.
    """

    def __init__(
        self,
        client: MeterdClient,
        customer: str,
        *,
        clock: IReactorTime,
        interval: float,
        notify: Callable[[str], None],
        renderer: Renderer,
        msgs: Messages,
        tz: str | None = None,
    ) -> None:
        self.client = client
        self.customer = customer
        self.clock = clock
        self.interval = interval
        self.notify = notify
        self.r = renderer
        self.m = msgs
        self.tz = tz
        self.cursor: int | None = None
        self.alarms: dict[Any, dict[str, Any]] = {}
        self._down = False
        self._last_error: str | None = None
        self._call: LoopingCall | None = None
        self._inflight: Deferred[None] | None = None
        self._stopped = False
        self._seen: int | None = None  # highest event id already known

    def start(self) -> None:
        self._call = LoopingCall(self.poll)
        self._call.clock = self.clock
        self._call.start(self.interval, now=True)

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.running:
            self._call.stop()
        self._call = None
        if self._inflight is not None:
            self._inflight.cancel()

    def remember(self, doc: dict[str, Any]) -> None:
        for alarm in doc.get("active") or []:
            if isinstance(alarm, dict) and "alarm_id" in alarm:
                self.alarms[alarm["alarm_id"]] = alarm

    def poll(self) -> Deferred[None]:
        """One round; never fails, so the LoopingCall keeps running."""
        d = self.client.alarms(self.customer, self.cursor).addCallbacks(self._got, self._failed)
        self._inflight = d

        def clear(_: Any) -> None:
            self._inflight = None

        d.addBoth(clear)
        return d

    def _got(self, doc: dict[str, Any]) -> None:
        if self._stopped:
            return
        if self._down:
            self.notify(self.m("poll.back") + "\n")
        self._down = False
        self._last_error = None
        self.remember(doc)
        first = self._seen is None
        events = [e for e in doc.get("events") or [] if isinstance(e, dict)]
        ids = [e["event_id"] for e in events if isinstance(e.get("event_id"), int)]
        if first:
            active = [a for a in doc.get("active") or [] if not a.get("acked_at")]
            if active:
                self.notify(self.m("poll.active", n=len(active)) + "\n")
        else:
            # Event ids increase, so this also guards against a server that
            # ignores the cursor and repeats old events.
            for event in events:
                eid = event.get("event_id")
                if isinstance(eid, int) and eid <= (self._seen or 0):
                    continue
                text = self.r.banner(event, self.alarms.get(event.get("alarm_id")), self.tz)
                if text:
                    self.notify(text)
        self._seen = max([self._seen or 0, *ids])
        cursor = doc.get("cursor")
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            self.cursor = cursor

    def _failed(self, failure: Failure) -> None:
        if self._stopped:
            return
        err = failure.value
        assert err is not None  # a Failure always holds its exception
        if isinstance(err, ServerUnreachable):
            if not self._down:
                self._down = True
                self.notify(self.m("poll.lost") + "\n")
            return
        code = getattr(err, "code", type(err).__name__)
        if code != self._last_error:
            self._last_error = code
            self.notify(self.m("poll.failed", error=describe_error(err, self.m)) + "\n")
