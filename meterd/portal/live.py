"""Live alarm streams: the open alarms pages, told of each new alarm event by Server-Sent Events.

Each open page holds one ``text/event-stream`` answer (:mod:`meterd.portal.sse`)
that never finishes. Nothing polls: the alarm service tells
:meth:`LiveAlarms.changed` after every settlement (a raise, a clear, an
acknowledgement), and each stream then asks for the events after its cursor
through its own fetch function (the API's ``/getAlarme`` on behalf of the
page's login session, answered from memory). With a store that other processes
write too, their settlements are not told here, so the streams also ask
every ``poll`` seconds.

What streams can cost is bounded: at most ``max_streams`` in all and
``max_per_session`` per session (a person with several tabs); past either the
portal refuses the stream with a 503 and the page's script falls back to
reloading the list now and then. Every ``heartbeat`` seconds each stream gets
a comment line (idle connections stay open through proxies) and is ended if
its login session has (logout, expiry, a new token) or it is older than
``max_age`` (the browser reconnects by itself, from the last event id it got).
A stream whose client went away is dropped when its connection closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request

from meterd.portal import sse
from meterd.portal.sessions import SessionStore
from meterd.twisted_internals import request_gone

__all__ = ["Fetch", "LiveAlarms", "Stream"]

log = Logger()

MAX_STREAMS: Final = 200
MAX_PER_SESSION: Final = 4
HEARTBEAT: Final = 15.0
MAX_AGE: Final = 3600.0
#: How long a browser waits before reconnecting a dropped stream (the ``retry`` field).
RECONNECT_MS: Final = 3000

#: The events after a cursor as wire bytes, and the cursor to ask from next.
Fetch = Callable[[int], Awaitable[tuple[list[bytes], int]]]


@dataclass(eq=False)
class Stream:
    """One open alarms page: its connection, its login session's key, where it is in the events."""

    request: Request
    session_key: str
    cursor: int
    fetch: Fetch
    opened: float
    closed: bool = field(default=False)


class LiveAlarms(Service):
    """The open streams, bounded, told of every alarm change."""

    def __init__(
        self,
        clock: IReactorTime,
        sessions: SessionStore,
        *,
        max_streams: int = MAX_STREAMS,
        max_per_session: int = MAX_PER_SESSION,
        heartbeat: float = HEARTBEAT,
        max_age: float = MAX_AGE,
        poll: float | None = None,
    ) -> None:
        self.clock = clock
        self.sessions = sessions
        self.max_streams = max_streams
        self.max_per_session = max_per_session
        self.heartbeat = heartbeat
        self.max_age = max_age
        self.poll = poll
        self.streams: dict[Request, Stream] = {}
        self._loops: list[LoopingCall] = []
        self._due: IDelayedCall | None = None
        self._refreshing = False
        self._again = False

    # -- admission -----------------------------------------------------------

    def room_for(self, session_key: str) -> bool:
        """Whether one more stream of this login session may open."""
        if not self.running or len(self.streams) >= self.max_streams:
            return False
        return sum(1 for s in self.streams.values() if s.session_key == session_key) < self.max_per_session

    def open(self, stream: Stream, first: list[bytes]) -> None:
        """Start answering ``stream``: the headers are set by the caller; ``first`` are the events it already missed."""
        request = stream.request
        self.streams[request] = stream
        request.notifyFinish().addBoth(lambda _: self._forget(stream))
        request.write(f"retry: {RECONNECT_MS}\n\n".encode())
        self._write(stream, first)

    def _forget(self, stream: Stream) -> None:
        stream.closed = True
        self.streams.pop(stream.request, None)

    def close(self, stream: Stream) -> None:
        """End a stream from this side (the browser reconnects if its page is still open)."""
        if stream.closed:
            return
        self._forget(stream)
        if not stream.request.finished and not request_gone(stream.request):
            stream.request.finish()

    def _write(self, stream: Stream, chunks: list[bytes]) -> None:
        if chunks and not stream.closed and not request_gone(stream.request):
            stream.request.write(b"".join(chunks))

    # -- told of changes -----------------------------------------------------------

    def changed(self) -> None:
        """An alarm was raised, cleared or acknowledged somewhere: every stream asks for what is new.

        Several changes in one reactor turn make one round of asking; a
        change during a round makes another round after it.
        """
        if self._refreshing:
            self._again = True
        elif self._due is None and self.streams:
            self._due = self.clock.callLater(0, self._start_refresh)

    def _start_refresh(self) -> None:
        self._due = None
        Deferred.fromCoroutine(self._refresh())

    async def _refresh(self) -> None:
        self._refreshing = True
        try:
            while True:
                self._again = False
                for stream in list(self.streams.values()):
                    await self._catch_up(stream)
                if not self._again:
                    return
        finally:
            self._refreshing = False

    async def _catch_up(self, stream: Stream) -> None:
        if stream.closed:
            return
        try:
            chunks, cursor = await stream.fetch(stream.cursor)
        except Exception as e:
            # The customer's alarms are no longer this login session's to read, or the store failed:
            # end the stream; the browser reconnects and is answered (or refused) afresh.
            log.debug("live alarm stream ended: {error}", error=e)
            self.close(stream)
            return
        stream.cursor = max(stream.cursor, cursor)
        self._write(stream, chunks)

    def sessions_changed(self) -> None:
        """Sessions ended (a customer's token was replaced): their streams end now, not at the next heartbeat."""
        for stream in list(self.streams.values()):
            if not self.sessions.alive(stream.session_key):
                self.close(stream)

    # -- heartbeat ---------------------------------------------------------------

    def beat(self) -> None:
        """A comment on every stream; streams whose login session ended, or that are too old, end."""
        now = self.clock.seconds()
        for stream in list(self.streams.values()):
            if not self.sessions.alive(stream.session_key) or now - stream.opened >= self.max_age:
                self.close(stream)
            else:
                self._write(stream, [sse.comment()])

    def startService(self) -> None:
        super().startService()
        timers: list[tuple[Callable[[], Any], float]] = [(self.beat, self.heartbeat)]
        if self.poll is not None:
            timers.append((self.changed, self.poll))
        for fn, interval in timers:
            loop = LoopingCall(fn)
            loop.clock = self.clock
            loop.start(interval, now=False).addErrback(lambda f: log.failure("live alarm timer stopped", f))
            self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._due is not None and self._due.active():
            self._due.cancel()
        self._due = None
        for stream in list(self.streams.values()):
            self.close(stream)
