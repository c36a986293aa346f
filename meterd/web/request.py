"""meterd's twisted.web Site: its Request refuses oversized bodies, its channel asks less of the kernel.

twisted.web buffers the whole body before a resource sees it; the Request
decides from Content-Length (or the running total of a chunked body) and then
discards the bytes instead of keeping them, so a client cannot make the server
hold more than the limit. A client that keeps sending far past the limit is
disconnected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

MAX_BODY = 64 * 1024
_ABORT_AFTER = 64 * 1024 * 1024  # past this, stop reading: the body costs bandwidth, not memory


class LimitedRequest(Request):
    too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            if not self.too_large:
                self.too_large = True
                self.content.seek(0)
                self.content.truncate()
            if self._received > _ABORT_AFTER and self.channel is not None:
                self.channel.transport.abortConnection()
            return
        if not self.too_large:
            super().handleContentChunk(data)


class Channel(HTTPChannel):
    """HTTP/1.1, asking for the connection's local address once rather than per request.

    Every Request asks its channel for it, a ``getsockname`` system call each
    time (~7 % of an HTTP worker's time under load); it cannot change while
    the connection lasts. Site's default protocol only adds a wrapper that
    would negotiate HTTP/2, which needs the ``h2`` package meterd does not
    install.
    """

    _host: Any = None

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host


class _Handled(Resource):
    """Every request, whatever its path, to one handler that finishes it later (meterd routes by itself)."""

    isLeaf = True

    def __init__(self, handle: Callable[[Request], None]) -> None:
        super().__init__()
        self.handle = handle

    def render(self, request: Request) -> Any:
        self.handle(request)
        return NOT_DONE_YET


def make_site(handle: Callable[[Request], None]) -> Site:
    """A Site that hands every request to ``handle``: meterd's own port (:func:`meterd.web.api.serve`), or a worker's."""
    site = Site(_Handled(handle))
    site.protocol = Channel
    site.requestFactory = LimitedRequest
    site.log = lambda request: None  # no per-request access log on the hot path; /metrics counts requests
    return site
