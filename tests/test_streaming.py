"""Streamed answers: read only as fast as the client takes them, stopped when it goes, cut short visibly.

In memory first: meterd's own HTTP channel over a transport that fills up
like a socket's buffer, an HTTP worker's side and meterd's side of the
workers' pipe, each with a body whose reads are counted. Then with real
sockets against a server holding enough readings to fill every buffer on
the way, on meterd's own port and through an HTTP worker: a client that
stops reading stops the store's reads, one that reads again gets every
row, one that goes away ends the export.
"""

from __future__ import annotations

import csv
import io
import socket
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Request

from meterd.http_worker import HttpWorker
from meterd.http_workers import HttpWorkers
from meterd.store.base import StoreError
from meterd.taxid import make_cpf
from meterd.web.exchange import Streamed
from meterd.web.request import Limits, MeterdSite
from meterd.web.streaming import Pump, write_stream
from meterd.workers import WorkerLink
from tests.support import frame, frames, http_workers_ready, start_server, until

CSV = b"text/csv; charset=utf-8"


class Body:
    """A streamed body of numbered chunks whose every read is counted; it may fail at one, or answer later."""

    def __init__(self, n: int, *, size: int = 1000, fail_at: int | None = None, later: bool = False) -> None:
        self.chunks = [b"%06d" % i + b"x" * (size - 6) for i in range(n)]
        self.fail_at = fail_at
        self.later = later
        self.asked = 0
        self.closed = False
        self.waiting: list[tuple[Deferred[bytes | None], bytes | None]] = []

    def next_chunk(self) -> Deferred[bytes | None]:
        i, self.asked = self.asked, self.asked + 1
        if i == self.fail_at:
            return fail(StoreError("the store went away"))
        chunk = self.chunks[i] if i < len(self.chunks) else None
        if not self.later:
            return succeed(chunk)
        d: Deferred[bytes | None] = Deferred()
        self.waiting.append((d, chunk))
        return d

    def answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, chunk in waiting:
            d.callback(chunk)

    def close(self) -> None:
        self.closed = True


# -- the pump -----------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.ended: str | None = None
        self.pump: Pump | None = None
        self.pause_after: int | None = None

    def write(self, chunk: bytes) -> None:
        self.written.append(chunk)
        if self.pause_after is not None and len(self.written) >= self.pause_after:
            assert self.pump is not None
            self.pump.pause()

    def done(self) -> None:
        self.ended = "done"

    def failed(self, failure: Failure) -> None:
        self.ended = f"failed: {failure.getErrorMessage()}"


def pumped(body: Body, *, paused: bool = False) -> tuple[Pump, Sink]:
    sink = Sink()
    sink.pump = Pump(body, sink, paused=paused)
    return sink.pump, sink


def test_a_paused_pump_reads_one_chunk_ahead_and_no_more() -> None:
    body = Body(10)
    pump, sink = pumped(body, paused=True)
    pump.start()
    assert (sink.written, body.asked) == ([], 1)
    sink.pause_after = 3
    pump.resume()
    assert len(sink.written) == 3 and body.asked == 4  # three sent, the fourth read ahead
    sink.pause_after = None
    pump.resume()
    assert sink.written == body.chunks and sink.ended == "done" and body.closed
    assert body.asked == 11  # the tenth chunk, then the end


def test_a_stopped_pump_lets_its_body_go_and_drops_what_was_on_its_way() -> None:
    body = Body(10, later=True)
    pump, sink = pumped(body)
    pump.start()
    assert body.asked == 1
    pump.stop()
    assert body.closed
    body.answer()
    assert sink.written == [] and sink.ended is None and body.asked == 1


def test_a_failing_body_is_reported_once_and_let_go() -> None:
    body = Body(10, fail_at=2)
    pump, sink = pumped(body)
    pump.start()
    assert len(sink.written) == 2 and sink.ended == "failed: the store went away" and body.closed and body.asked == 3


def test_bodies_that_answer_at_once_do_not_recurse() -> None:
    body = Body(20_000, size=8)
    pump, sink = pumped(body)
    pump.start()  # a RecursionError if each chunk's callback moved the next one
    assert len(sink.written) == 20_000 and sink.ended == "done"


# -- meterd's own port, in memory ---------------------------------------------------------


class Socket(StringTransport):
    """A connection's transport whose buffer fills: past ``room`` bytes the client has not taken, it pauses its producer."""

    def __init__(self, room: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.room = room
        self.taken = 0
        self.full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.full and len(self.value()) - self.taken > self.room and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def take(self) -> None:
        """The client reads everything sent so far."""
        self.taken = len(self.value())
        if self.full and self.producer is not None:
            self.full = False
            self.producer.resumeProducing()

    def loseConnection(self) -> None:
        self.disconnecting = True


def serve(body: Body, room: int = 10_000, method: bytes = b"GET") -> tuple[Any, Socket]:
    def handle(request: Request) -> None:
        write_stream(request, Streamed(200, CSV, {"X-Total-Count": "3"}, body))

    site = MeterdSite(handle, Limits(), lambda _: None, Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    client = Socket(room)
    channel.makeConnection(client)
    channel.dataReceived(method + b" /getLeituras HTTP/1.1\r\nHost: x\r\n\r\n")
    return channel, client


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """(head, body, whether the terminating chunk came) of a chunked HTTP/1.1 answer."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, body, rest == b"\r\n"
        body, rest = body + rest[:size], rest[size + 2 :]
    return head, body, False


def test_a_client_that_stops_reading_pauses_the_export_and_one_that_reads_again_gets_it_whole() -> None:
    body = Body(200)
    channel, client = serve(body)
    head, _, _ = dechunk(client.value())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert client.full
    sent = body.asked
    assert sent <= 12  # ~10 KB of room: ten chunks written, one read ahead
    for _ in range(5):
        channel.dataReceived(b"")  # time passes, the client still reads nothing
    assert body.asked == sent
    while not body.closed:
        client.take()
        assert body.asked <= sent + 12
        sent = body.asked
    _, received, whole = dechunk(client.value())
    assert received == b"".join(body.chunks) and whole and not client.disconnecting


def test_a_client_that_goes_away_stops_the_export() -> None:
    body = Body(200)
    channel, client = serve(body)
    client.take()
    asked = body.asked
    channel.connectionLost(Failure(ConnectionDone()))
    assert body.closed
    client.take()
    assert body.asked == asked


def test_a_body_that_fails_midway_ends_without_its_last_chunk_and_is_logged() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        body = Body(5, fail_at=3)
        _, client = serve(body, room=1_000_000)
    finally:
        globalLogPublisher.removeObserver(events.append)
    head, received, whole = dechunk(client.value())
    assert b" 200 " in head and received == b"".join(body.chunks[:3]) and not whole
    assert client.disconnecting and body.closed
    assert any("cut short" in e.get("log_format", "") and e.get("log_failure") for e in events)


def test_head_gets_the_headers_and_reads_nothing() -> None:
    body = Body(5)
    _, client = serve(body, method=b"HEAD")
    assert client.value().startswith(b"HTTP/1.1 200 OK\r\n") and client.value().endswith(b"\r\n\r\n")
    assert b"X-Total-Count: 3" in client.value() and body.asked == 0 and body.closed


def test_an_answer_that_begins_while_the_socket_is_full_waits_for_it() -> None:
    held: list[Request] = []
    site = MeterdSite(held.append, Limits(), lambda _: None, Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    client = Socket(10_000)
    channel.makeConnection(client)
    channel.dataReceived(b"GET /getLeituras HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.pauseProducing()  # the socket's buffer filled meanwhile (another answer, say)
    client.full = True
    body = Body(50)
    write_stream(held[0], Streamed(200, CSV, {}, body))
    assert body.asked == 1 and dechunk(client.value())[1] == b""  # read ahead, not written
    client.take()
    assert dechunk(client.value())[1].startswith(body.chunks[0])


# -- through an HTTP worker, in memory -------------------------------------------------------


def worker_streaming(room: int = 10_000) -> tuple[HttpWorker, StringTransport, Socket, Any, Clock, int]:
    clock = Clock()
    worker = HttpWorker(clock)
    stdio = StringTransport()
    worker.makeConnection(stdio)
    channel = worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    client = Socket(room)
    channel.makeConnection(client)
    channel.dataReceived(b"GET /getLeituras?id=1&format=csv HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0)
    [sent] = frames(stdio.value())
    stdio.clear()
    [[id_, *_]] = sent["requests"]
    worker.dataReceived(frame({"stream": [id_, 200, CSV.decode(), {"X-Total-Count": "9"}]}))
    return worker, stdio, client, channel, clock, id_


def asked(stdio: StringTransport, clock: Clock) -> tuple[list[int], list[int]]:
    """The ``more`` and ``cancel`` the worker sent since last asked."""
    clock.advance(0)
    sent = frames(stdio.value())
    stdio.clear()
    return [i for f in sent for i in f.get("more", ())], [i for f in sent for i in f.get("cancel", ())]


def test_a_worker_asks_for_a_chunk_only_while_its_client_takes_them() -> None:
    worker, stdio, client, _, clock, id_ = worker_streaming()
    assert client.value().startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Total-Count: 9" in client.value()
    assert asked(stdio, clock) == ([id_], [])
    chunk = "é" * 3000  # 3,000 bytes as latin-1, 6,000 as the frame's UTF-8
    worker.dataReceived(frame({"chunk": [id_, chunk]}))
    assert asked(stdio, clock) == ([id_], [])  # room left: the next one
    worker.dataReceived(frame({"chunk": [id_, chunk * 3]}))
    assert client.full and asked(stdio, clock) == ([], [])  # the socket is full: nothing more until it drains
    client.take()
    assert asked(stdio, clock) == ([id_], [])
    worker.dataReceived(frame({"end": [id_, True]}))
    _, body, whole = dechunk(client.value())
    assert body == (chunk * 4).encode("latin-1") and whole and worker.streams == {}


def test_a_worker_tells_meterd_when_the_client_goes_and_cuts_what_meterd_cut() -> None:
    worker, stdio, client, channel, clock, id_ = worker_streaming()
    asked(stdio, clock)
    channel.connectionLost(Failure(ConnectionDone()))
    assert asked(stdio, clock) == ([], [id_]) and worker.streams == {}
    worker.dataReceived(frame({"chunk": [id_, "late"]}))  # already on its way: dropped
    worker, stdio, client, channel, clock, id_ = worker_streaming()
    worker.dataReceived(frame({"chunk": [id_, "abc"]}))
    worker.dataReceived(frame({"end": [id_, False]}))
    _, body, whole = dechunk(client.value())
    assert body == b"abc" and not whole and client.disconnecting


# -- meterd's side of the workers' pipe, in memory ------------------------------------------


class FakeApi:
    respond = None  # no requests come in these tests

    class store:  # noqa: N801 - what HttpWorkers reads of Api.store
        shared = False

    class metrics:  # noqa: N801 - what HttpWorkers reads of Api.metrics
        class http_workers:  # noqa: N801
            @staticmethod
            def set(n: int) -> None:
                pass


def pool_with_a_stream(body: Body) -> tuple[HttpWorkers, WorkerLink, StringTransport]:
    pool = HttpWorkers(1, FakeApi(), Limits(), Clock())  # type: ignore[arg-type]
    pool.running = True
    link = pool.links[0] = WorkerLink(pool, 0)
    stdin = StringTransport()
    link.makeConnection(stdin)
    stdin.clear()
    pool._answered(link, 7, Streamed(200, CSV, {"X-Total-Count": "2"}, body))
    return pool, link, stdin


def test_meterd_sends_a_worker_a_chunk_each_time_it_asks_and_reads_one_ahead() -> None:
    body = Body(3, size=10)
    pool, link, stdin = pool_with_a_stream(body)
    assert frames(stdin.value()) == [{"stream": [7, 200, CSV.decode(), {"X-Total-Count": "2"}]}] and body.asked == 1
    stdin.clear()
    pool.message(link, {"more": [7]})
    assert frames(stdin.value()) == [{"chunk": [7, body.chunks[0].decode()]}] and body.asked == 2
    stdin.clear()
    pool.message(link, {"more": [7]})
    pool.message(link, {"more": [7]})
    pool.message(link, {"more": [7]})
    assert [f.get("chunk", f.get("end")) for f in frames(stdin.value())] == [[7, body.chunks[1].decode()], [7, body.chunks[2].decode()], [7, True]]
    assert body.closed and pool.streams == {}


def test_meterd_stops_a_stream_the_worker_cancels_or_takes_down_and_ends_one_that_fails() -> None:
    body = Body(3)
    pool, link, _ = pool_with_a_stream(body)
    pool.message(link, {"cancel": [7]})
    assert body.closed and pool.streams == {}
    body = Body(3)
    pool, link, _ = pool_with_a_stream(body)
    pool.ended(link, Failure(ConnectionDone()))
    assert body.closed and pool.streams == {}
    pool.stopService()
    body = Body(3, fail_at=1)
    pool, link, stdin = pool_with_a_stream(body)
    stdin.clear()
    pool.message(link, {"more": [7]})
    pool.message(link, {"more": [7]})
    assert frames(stdin.value())[-1] == {"end": [7, False]} and body.closed


# -- real sockets ------------------------------------------------------------------------------

A = make_cpf("529982247")
ROWS = 150_000  # about 8 MB of CSV: more than every buffer between the store and a client that stops reading


#: The real-client tests run against meterd's own port and through one HTTP worker.
SERVED_BY = pytest.mark.parametrize("workers", [(), ("--http-workers", "1")], ids=["meterd's port", "an HTTP worker"])


async def loaded_server(tmp_path: Any, *args: str) -> Any:
    """meterd with ROWS one-minute readings of customer A; its HTTP workers, if any, ready to serve."""
    server = await start_server(tmp_path / "data", *args)
    try:
        status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": A, "name": "Zé", "tz": "UTC"})
        assert status == 201, body
        assert (await server.call("POST", "/cadMedidor", json_body={"id": A}))[0] == 201
        from meterd.readings import Reading

        start_us = (int(time.time()) - ROWS * 60 - 3600) * 1_000_000
        for first in range(0, ROWS, 10_000):
            batch = [Reading(A, 1, start_us + i * 60_000_000, 1_000_000 + 7 * i, None) for i in range(first, min(ROWS, first + 10_000))]
            await server.core.store.ingest(batch, int(time.time() * 1000))
        if "--http-workers" in args:
            await http_workers_ready(server, int(args[args.index("--http-workers") + 1]))
    except BaseException:
        await server.stop()
        raise
    return server


def counting_reads(server: Any) -> list[int]:
    """The number of pages the store has been asked for, kept up to date in ``[0]``."""
    count = [0]
    store = server.core.store
    original = store.readings_page

    def readings_page(*args: Any) -> Any:
        count[0] += 1
        return original(*args)

    store.readings_page = readings_page
    return count


def open_export(server: Any, receive_buffer: int = 8192) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # a fixed window: the kernel holds little
    host, port = server.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    sock.sendall(f"GET /getLeituras?id={A}&format=csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        more = sock.recv(1 << 20)
        assert more, "the connection closed before the last chunk"
        data += more
    return data


async def settle(count: list[int], quiet: float = 1.0) -> int:
    """The read count once it has not moved for ``quiet`` seconds."""
    while True:
        before = count[0]
        await deferLater(reactor, quiet, lambda: None)
        if count[0] == before:
            return before


@pytest.mark.slow
@SERVED_BY
@pytest_twisted.ensureDeferred
async def test_a_real_client_that_stops_reading_stops_the_store_reads_and_gets_every_row_when_it_reads_again(tmp_path: Any, workers: tuple[str, ...]) -> None:
    server = await loaded_server(tmp_path, *workers)
    try:
        count = counting_reads(server)
        sock = open_export(server)
        first = await deferToThread(sock.recv, 65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        pages = ROWS // 4_000 + 1
        stalled = await settle(count)
        assert 1 <= stalled < pages / 2, (stalled, pages)  # stopped with the client, far from the end...
        await deferLater(reactor, 2.0, lambda: None)
        assert count[0] < pages / 2, (count[0], pages)  # ... and staying there (a busy machine may have been slow to fill its buffers)
        rest = await deferToThread(read_all, sock)
        sock.close()
        assert count[0] == pages
        _, body, whole = dechunk(first + rest)
        rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
        assert whole and len(rows) == ROWS + 1
        assert [int(r[2].replace(".", "")) for r in rows[1:]] == [1_000_000 + 7 * i for i in range(ROWS)]
        assert server.core.parts.metrics.exports_streaming._value.get() == 0
    finally:
        await server.stop()


@pytest.mark.slow
@SERVED_BY
@pytest_twisted.ensureDeferred
async def test_a_real_client_that_goes_away_ends_the_export(tmp_path: Any, workers: tuple[str, ...]) -> None:
    server = await loaded_server(tmp_path, *workers)
    try:
        count = counting_reads(server)
        sock = open_export(server)
        assert (await deferToThread(sock.recv, 65536)).startswith(b"HTTP/1.1 200 OK\r\n")
        streaming = server.core.parts.metrics.exports_streaming._value

        async def one_streaming() -> bool:
            return streaming.get() == 1

        await until(one_streaming)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # a reset, at once
        sock.close()

        async def none_streaming() -> bool:
            return streaming.get() == 0

        await until(none_streaming)
        reads = await settle(count)
        assert reads < ROWS // 4_000 / 2
        status, _, _ = await server.call("GET", "/health")
        assert status == 200
    finally:
        await server.stop()
