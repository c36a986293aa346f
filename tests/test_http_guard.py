"""What an HTTP connection may cost (meterd.web.request): limits, deadlines, backpressure, errors in meterd's shape.

Most run the real Site and channel over Twisted's in-memory transports and a
Clock, so every deadline is exact; the rest use real sockets on loopback
against an in-process meterd, two loopback addresses among them.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.web.server import Request

from meterd import tuning
from meterd.web.exchange import Answer, write_answer
from meterd.web.request import (
    BACKLOG,
    BODY_GRACE,
    CLOSED_BEFORE_TRIM,
    DESCRIPTOR_RESERVE,
    MAX_BODY,
    SEND_BUFFER,
    SWEEP_INTERVAL,
    Limits,
    MeterdSite,
    with_backlog,
)
from tests.support import LiveServer, Twistd, start_server


class Client(StringTransport):
    """A connection's transport, as the channel sees it: it can be closed for writing, or aborted."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.disconnecting = True


class Guarded:
    """A MeterdSite on a Clock whose handler answers every request ``{"ok": true}`` (or holds it)."""

    def __init__(self, hold: bool = False, **limits: Any) -> None:
        self.clock = Clock()
        self.notices: list[str] = []
        self.held: list[Request] = []
        self.site = MeterdSite(self.handle, Limits(**limits), self.notices.append, self.clock)
        self.hold = hold

    def handle(self, request: Request) -> None:
        if self.hold:
            self.held.append(request)
        else:
            write_answer(request, Answer(200, b"application/json", b'{"ok":true}', {}))

    def connect(self, host: str = "127.0.0.1", port: int = 40000) -> tuple[Any, Client]:
        channel = self.site.buildProtocol(IPv4Address("TCP", host, port))
        client = Client(peerAddress=IPv4Address("TCP", host, port))
        if channel is not None:
            channel.makeConnection(client)
        return channel, client


def answer_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_read() -> None:
    g = Guarded()
    channel, client = g.connect()
    channel.dataReceived(b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    status, body = answer_of(client.value())
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert client.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert client.write_closed and g.notices == ["body_too_large"]
    channel.dataReceived(b"x" * 100_000)  # the body the client was already sending: dropped, never answered
    assert client.value().count(b"HTTP/1.1") == 1
    g.clock.advance(10)  # after lingering, the connection is cut
    assert client.disconnecting


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "bad_request"),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /health HTTP/1.1\r\n" + b"X-Many: " + b"c" * 5_000 + b"\r\n" + b"X-More: " + b"d" * 5_000 + b"\r\n"
     + b"X-Most: " + b"e" * 7_000 + b"\r\n\r\n", 431, "headers_too_large"),
])
def test_what_the_parser_refuses_is_answered_in_meterds_shape(request_bytes: bytes, status: int, code: str) -> None:
    g = Guarded()
    channel, client = g.connect()
    channel.dataReceived(request_bytes)
    got, body = answer_of(client.value())
    assert (got, body["error"]["code"]) == (status, code) and body["error"]["message"]
    assert g.notices == [code]


def test_headers_must_arrive_within_the_deadline_however_slowly_they_trickle() -> None:
    g = Guarded(header_timeout=10)
    channel, client = g.connect()
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
        channel.dataReceived(bytes([byte]))  # a byte a second: the idle timer never fires
        g.clock.advance(1)
        g.site.sweep()
        if client.value():
            break
    status, body = answer_of(client.value())
    assert (status, body["error"]["code"]) == (408, "header_timeout")
    assert g.notices == ["header_timeout"]


def test_a_keep_alive_connection_may_wait_between_requests() -> None:
    g = Guarded(header_timeout=2)
    channel, client = g.connect()
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 200")
    client.clear()
    for _ in range(10):  # idle, not late: the deadline runs from a request's first byte
        g.clock.advance(1)
        g.site.sweep()
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 200") and g.notices == []


def test_a_body_must_arrive_in_time_and_not_too_slowly() -> None:
    g = Guarded(body_timeout=30, body_min_rate=100)
    channel, client = g.connect()
    channel.dataReceived(b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
    for _ in range(int(BODY_GRACE) + 3):
        channel.dataReceived(b"x" * 50)  # 50 bytes a second: under the 100 required once the grace is over
        g.clock.advance(1)
        g.site.sweep()
    status, body = answer_of(client.value())
    assert (status, body["error"]["code"]) == (408, "body_too_slow")

    g = Guarded(body_timeout=3)
    channel, client = g.connect()
    channel.dataReceived(b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    g.clock.advance(4)
    g.site.sweep()
    status, body = answer_of(client.value())
    assert (status, body["error"]["code"]) == (408, "body_timeout")


def test_bodies_being_received_are_bounded_together() -> None:
    g = Guarded(max_buffered_bodies=100_000)
    channels = [g.connect(port=40000 + i) for i in range(3)]
    for channel, _ in channels:
        channel.dataReceived(b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + b"x" * 40_000)
    answered = [client.value() for _, client in channels]
    assert answered[:2] == [b"", b""]
    status, body = answer_of(answered[2])
    assert (status, body["error"]["code"]) == (503, "busy")
    assert g.site.buffered_bodies == 80_000
    channels[2][0].connectionLost(None)
    channels[0][0].dataReceived(b"x" * 20_000)  # the first completes, and gives its bytes back
    assert channels[0][1].value().startswith(b"HTTP/1.1 200") and g.site.buffered_bodies == 40_000


def test_connections_are_capped_in_all_and_per_address() -> None:
    g = Guarded(max_connections=5, max_per_address=3)
    from_one = [g.connect("127.0.0.1", 40000 + i)[0] for i in range(4)]
    assert [c is not None for c in from_one] == [True, True, True, False]
    assert g.connect("127.0.0.2")[0] is not None  # another address is still served
    assert g.connect("127.0.0.3")[0] is not None
    assert g.connect("127.0.0.4")[0] is None  # 5 open in all
    from_one[0].connectionLost(None)
    assert g.connect("127.0.0.1", 41000)[0] is not None  # a closed one frees its place
    assert g.notices == ["too_many_connections_from_address", "too_many_connections"]


def test_answers_a_client_does_not_read_stop_its_pipelined_requests() -> None:
    """A client that pipelines and never reads: once its unsent answers fill the transport, parsing stops."""
    g = Guarded()
    channel, client = g.connect()
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    assert client.value().count(b"HTTP/1.1 200") == 1000  # a transport that takes everything: all answered
    g = Guarded()
    channel, client = g.connect()
    answered: list[int] = []
    original = client.write

    def write(data: bytes) -> None:
        original(data)
        answered.append(1)
        if len(answered) == 10:
            channel.pauseProducing()  # what a TCP transport does when its buffer is over its size

    client.write = write  # type: ignore[method-assign]
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    assert client.value().count(b"HTTP/1.1 200") == 10
    channel.resumeProducing()  # the client reads again: the rest is answered, in order
    assert client.value().count(b"HTTP/1.1 200") == 1000


def test_a_connections_kernel_send_buffer_is_capped() -> None:
    """What the kernel may hold for a client that reads nothing is small, not tcp_wmem's maximum."""
    ours, theirs = socket.socketpair()
    expected = socket.socket()
    with ours, theirs, expected:
        expected.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # anything else, to see it set
        g = Guarded()
        channel = g.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        client = Client(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        client.getHandle = lambda: ours  # type: ignore[attr-defined]
        channel.makeConnection(client)
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == expected.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def test_when_many_connections_have_closed_the_free_heap_goes_back_to_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(tuning, "release_free_memory", lambda: trims.append(1))
    g = Guarded()
    g.site.startFactory()
    channels = [g.connect("127.0.0.1", 40000 + i)[0] for i in range(CLOSED_BEFORE_TRIM)]
    for channel in channels[:-1]:
        channel.connectionLost(None)
    g.clock.advance(SWEEP_INTERVAL)
    assert trims == []  # a few closed connections are not worth it
    channels[-1].connectionLost(None)
    g.clock.advance(SWEEP_INTERVAL)
    assert trims == [1]
    g.clock.advance(SWEEP_INTERVAL * 5)
    assert trims == [1]  # once per burst
    g.site.stopFactory()


def test_the_listening_backlog_is_meterds_unless_the_endpoint_names_one() -> None:
    assert with_backlog("tcp:8888") == f"tcp:8888:backlog={BACKLOG}"
    assert with_backlog("tcp:8888:interface=127.0.0.1") == f"tcp:8888:interface=127.0.0.1:backlog={BACKLOG}"
    assert with_backlog("tcp:8888:backlog=10") == "tcp:8888:backlog=10"
    assert with_backlog("unix:/run/meterd.sock").endswith(f":backlog={BACKLOG}")
    tuning.release_free_memory()  # callable here, whatever the C library


def test_idle_timeouts_are_counted_not_logged_one_by_one() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        g = Guarded(idle_timeout=5)
        channels = [g.connect(port=40000 + i) for i in range(20)]
        for channel, _ in channels:
            channel.callLater = g.clock.callLater  # TimeoutMixin's clock
            channel.setTimeout(5)
        g.clock.advance(6)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert g.notices == ["idle_timeout"] * 20
    assert not [e for e in events if "Timing out" in str(e.get("log_format", ""))]


# -- real sockets ----------------------------------------------------------------------------


def _connect(server: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _refused(server: LiveServer, source: str) -> bool:
    """Whether a new connection from ``source`` is closed without an answer."""
    try:
        with _connect(server, source) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def _get_health(server: LiveServer, source: str) -> int:
    with _connect(server, source) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


@pytest_twisted.ensureDeferred
async def test_a_slowloris_from_one_address_does_not_keep_another_from_being_served(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", "--max-connections-per-address", "20", "--header-timeout", "30")
    held: list[socket.socket] = []
    try:
        for _ in range(20):  # half-open requests from 127.0.0.1: its whole share
            sock = _connect(server)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        await deferLater(reactor, 0.2, lambda: None)
        assert await deferToThread(_get_health, server, "127.0.0.2") == 200
        assert await deferToThread(_refused, server, "127.0.0.1")  # its own share is taken
        refusals = server.core.api.metrics.http_refusals.labels("too_many_connections_from_address")._value.get()
        assert refusals >= 1
    finally:
        for sock in held:
            sock.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_never_read_are_not_all_answered_into_memory(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data")
    try:
        assert server.core.http_port.backlog == BACKLOG  # type: ignore[union-attr]
        sock = _connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        requests = 3000
        await deferToThread(sock.sendall, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        await deferLater(reactor, 1.0, lambda: None)
        answered = server.core.api.metrics.http.labels("/openapi.json", "200")._value.get()
        assert 0 < answered < requests / 3, answered  # bounded by buffers, not by what was sent
        assert await deferToThread(_get_health, server, "127.0.0.1") == 200  # others are served meanwhile

        def read_all() -> int:
            marker, data, seen = b"HTTP/1.1 200 OK", b"", 0
            while seen < requests:
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed early"
                data += chunk
                cut = data.rfind(marker)
                seen += data[:cut].count(marker)
                data = data[cut:]
                if len(data) > 30_000 and data.endswith(b"}"):  # the last answer is complete
                    seen += 1
                    data = b""
            return seen

        assert await deferToThread(read_all) == requests  # reading again, the client gets every answer
        sock.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_several_megabyte_declared_body_gets_413_early_over_a_socket(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data")
    try:
        def exchange() -> bytes:
            with _connect(server) as sock:
                sock.sendall(b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
                start = time.monotonic()
                data = sock.recv(65536)  # answered before any of the body is sent
                assert time.monotonic() - start < 10
                return data

        status, body = answer_of(await deferToThread(exchange))
        assert (status, body["error"]["code"]) == (413, "body_too_large")
    finally:
        await server.stop()


@pytest.mark.slow  # a twistd subprocess with its own descriptor limit
def test_connections_run_out_before_descriptors_so_the_store_keeps_working(tmp_path: Any) -> None:
    """More connections than descriptors: HTTP refuses the excess, the store and new clients carry on."""
    nofile = DESCRIPTOR_RESERVE + 150  # room for 150 connections
    server = Twistd(tmp_path / "data", nofile=nofile).start()
    held: list[socket.socket] = []
    try:
        port = server.http_port
        for i in range(nofile):  # more than the process has descriptors, from two addresses
            sock = socket.socket()
            sock.bind((f"127.0.0.{1 + i % 2}", 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never finish
            held.append(sock)
        time.sleep(0.5)
        refused = sum(1 for sock in held if _closed(sock))
        assert refused >= nofile - 150, refused  # the excess is closed at once, not left in the backlog
        for sock in held[:20]:
            sock.close()
        time.sleep(0.3)
        headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
        for path, body in (("/cadCliente", {"id": "52998224725", "name": "Ana"}), ("/cadMedidor", {"id": "52998224725"})):
            req = urllib.request.Request(server.url + path, json.dumps(body).encode(), headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 201
        req = urllib.request.Request(server.url + "/getConsumoHist?id=52998224725&kind=D", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            assert 'meterd_http_refusals_total{reason="too_many_connections"}' in r.read().decode()
    finally:
        for sock in held:
            sock.close()
        code = server.stop()
    log = server.output()
    assert code in (0, -15), log
    for sign in ("Too many open files", "unable to open database file", "Traceback"):
        assert sign not in log, log[-3000:]


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(10)
