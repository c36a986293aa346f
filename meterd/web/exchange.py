"""A request and its answer as plain values, apart from twisted.web's objects.

The API decides an answer from an :class:`Incoming` alone, so the same code
answers a request parsed by this process's own twisted.web and one parsed by
an HTTP worker (``--http-workers``) that carried it over a pipe. Both sides
read and write the wire through the functions here.

An answer is whole (:class:`Answer`, sent with its ``Content-Length``) or
streamed (:class:`Streamed`: headers now, then the body a chunk at a time as
the client reads it, ``Transfer-Encoding: chunked``), for bodies too large
to hold (:mod:`meterd.web.streaming` moves them).

Bytes cross the pipe as latin-1 strings: one character per byte, so any
body, even one that is not UTF-8, arrives exactly as it was sent.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred
from twisted.web.server import Request

from meterd.twisted_internals import request_gone

#: RFC 9110's names where Python's table still has RFC 7231's (twisted.web has
#: none at all for 422 and would send "Unknown Status").
_RFC_9110 = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}


def reason(status: int) -> bytes:
    """The standard reason phrase of ``status``."""
    try:
        return _RFC_9110.get(status, HTTPStatus(status).phrase).encode("ascii")
    except ValueError:
        return b"Unknown Status"


class Incoming(NamedTuple):
    method: str
    path: str
    query: bytes
    authorization: str | None  # the header, latin-1 decoded
    content_type: str | None
    body: bytes
    client: str = ""  # the peer's address (the audit log's "from where"; the portal throttles logins by it)
    accept: str | None = None  # the Accept header: which form of an answer the client prefers
    # What only the web portal reads (meterd.portal.site): its login session's
    # cookie, and If-None-Match (its stylesheet and script are revalidated by ETag).
    cookie: str | None = None
    if_none_match: str | None = None


class Answer(NamedTuple):
    status: int
    content_type: bytes
    body: bytes
    headers: dict[str, str]  # beyond those every answer has (e.g. Allow, WWW-Authenticate)


class Chunks(Protocol):
    """A streamed body, read one chunk at a time, only as fast as it is sent."""

    def next_chunk(self) -> Deferred[bytes | None]:
        """The next chunk, None once the body is complete; a failure cuts the body short."""

    def close(self) -> None:
        """No more chunks will be asked for (the body is complete, or the client has gone)."""


class Streamed(NamedTuple):
    status: int
    content_type: bytes
    headers: dict[str, str]
    body: Chunks


Reply = Answer | Streamed


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def incoming_of(request: Request) -> Incoming:
    return Incoming(
        request.method.decode("latin-1"),
        request.path.decode("utf-8", "replace"),
        request.uri.partition(b"?")[2],
        _text(request.getHeader(b"authorization")),
        _text(request.getHeader(b"content-type")),
        request.content.read() if request.content is not None else b"",
        client_address(request),
        _text(request.getHeader(b"accept")),
        _text(request.getHeader(b"cookie")),
        _text(request.getHeader(b"if-none-match")),
    )


def client_address(request: Request) -> str:
    """The peer's IP address (a UNIX socket's path, if that is what it is)."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host is not None:
        return str(host)
    name = getattr(address, "name", None)
    return "" if name is None else name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def answer_headers(request: Request, status: int, content_type: bytes, headers: dict[str, str]) -> None:
    """An answer's status and headers, whole or streamed."""
    request.setResponseCode(status, reason(status))
    for name, value in headers.items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", content_type)
    if "Cache-Control" not in headers:  # the portal's stylesheet and script are revalidated instead
        request.setHeader(b"cache-control", b"no-store")


def write_answer(request: Request, answer: Answer, *, close: bool = False) -> None:
    """Write the answer and finish; ``close`` (and every 413) closes the connection after it."""
    if request.finished or request_gone(request):
        return
    answer_headers(request, answer.status, answer.content_type, answer.headers)
    request.setHeader(b"content-length", b"%d" % len(answer.body))  # not chunked: simpler for every client
    if (close or answer.status == 413) and request.channel is not None:
        request.channel.persistent = False  # after a 413: the rest of an oversized body is not worth reading
        request.setHeader(b"connection", b"close")
    request.write(answer.body)
    request.finish()


# -- over the workers' pipe ------------------------------------------------------


def incoming_row(incoming: Incoming) -> list[Any]:
    method, path, query, authorization, content_type, body, client, accept, cookie, if_none_match = incoming
    return [method, path, query.decode("latin-1"), authorization, content_type, body.decode("latin-1"), client, accept, cookie, if_none_match]


def incoming_from_row(row: list[Any]) -> Incoming:
    method, path, query, authorization, content_type, body, client, accept, cookie, if_none_match = row
    return Incoming(
        method, path, query.encode("latin-1"), authorization, content_type, body.encode("latin-1"), client, accept, cookie, if_none_match
    )


def answer_row(answer: Answer) -> list[Any]:
    status, content_type, body, headers = answer
    return [status, content_type.decode("latin-1"), body.decode("latin-1"), headers]


def answer_from_row(row: list[Any]) -> Answer:
    status, content_type, body, headers = row
    return Answer(status, content_type.encode("latin-1"), body.encode("latin-1"), headers)
