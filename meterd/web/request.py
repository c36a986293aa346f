"""A Request that refuses oversized bodies before buffering them.

twisted.web buffers the whole body before a resource sees it; this subclass
decides from Content-Length (or the running total of a chunked body) and then
discards the bytes instead of keeping them, so a client cannot make the server
hold more than the limit. A client that keeps sending far past the limit is
disconnected.
"""

from __future__ import annotations

from twisted.web.server import Request

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
