"""``--http-workers``: HTTP parsed in other processes, every answer decided by meterd.

The rows that carry requests and answers over the pipe keep every byte; a
worker forwards every request and answers 503 to what meterd will no longer
answer; a worker repeats meterd's answer to a ``/getAlarme`` poll it sees
again, byte for byte, and sees every alarm settlement before the client can
ask again; a dead worker is replaced while meterd serves the port; twistd
stops them.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python import usage

from meterd import http_worker
from meterd.alarm_book import Event
from meterd.alarms import page
from meterd.generation import Generation
from meterd.http_worker import REPORT_INTERVAL, HttpWorker
from meterd.http_workers import HttpWorkers
from meterd.options import Options
from meterd.taxid import make_cpf
from meterd.web.exchange import Answer, Incoming, answer_from_row, answer_row, incoming_from_row, incoming_row
from meterd.web.request import Limits
from tests.support import (
    LiveServer,
    frame,
    frames,
    gone,
    http_workers_ready,
    split_frames,
    start_server,
    twistd_with_workers,
    until,
    worker_pids,
)

A = make_cpf("529982247")
B = make_cpf("168995350")


# -- what crosses the pipe -------------------------------------------------------------


def test_rows_carry_every_byte_through_json() -> None:
    every_byte = bytes(range(256))
    incoming = Incoming(
        "POST", "/cadCliente", b"id=1&x=%FF\xff", "Bearer t\xe9", "application/json", every_byte + b'{"a":"\xc3\xa7"}', "2001:db8::1", "text/csv",
        "meterd_portal=\xe9", '"x"',
    )
    assert incoming_from_row(orjson.loads(orjson.dumps(incoming_row(incoming)))) == incoming
    answer = Answer(405, b"application/json; charset=utf-8", every_byte, {"Allow": "GET, HEAD"})
    assert answer_from_row(orjson.loads(orjson.dumps(answer_row(answer)))) == answer


def test_the_generation_is_one_counter_for_every_descriptor() -> None:
    ours = Generation()
    theirs = Generation(os.dup(ours.fd))  # as a worker inherits it
    try:
        assert theirs.value() == 0
        ours.bump()
        ours.bump()
        assert theirs.value() == 2
    finally:
        ours.close()
        theirs.close()


def test_page_gives_the_last_event_of_a_full_page_else_the_newest_id() -> None:
    events = [Event(i, 1, A, "raised", i * 1000) for i in (5, 6, 7)]
    assert page([], events, 40, 4, limit=3).cursor == 7  # full: more may follow
    assert page([], events, 40, 4, limit=4).cursor == 40
    assert page([], [], 40, 90, limit=4).cursor == 90  # never back


# -- the worker's side, in memory --------------------------------------------------------


def worker_with_request(raw: bytes) -> tuple[HttpWorker, StringTransport, StringTransport, Clock]:
    clock = Clock()
    worker = HttpWorker(clock)
    stdio = StringTransport()
    worker.makeConnection(stdio)
    channel = worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    client = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8888), peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    channel.makeConnection(client)
    channel.dataReceived(raw)
    clock.advance(0)
    return worker, stdio, client, clock


def test_a_worker_forwards_a_request_and_writes_the_answer_meterd_sends() -> None:
    worker, stdio, client, _ = worker_with_request(
        b"POST /cadCliente?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer T\r\nContent-Type: application/json\r\n"
        b"Cookie: meterd_portal=abc\r\nIf-None-Match: \"e1\"\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n"
    )
    [sent] = frames(stdio.value())
    [[id_, *row]] = sent["requests"]
    assert incoming_from_row(row) == Incoming(
        "POST", "/cadCliente", b"x=1", "Bearer T", "application/json", b'{"a":1}\n', "127.0.0.1", None, "meterd_portal=abc", '"e1"'
    )
    assert client.value() == b""  # nothing until meterd answers
    worker.dataReceived(frame({"answers": [[id_, *answer_row(Answer(409, b"application/json", b'{"e":1}', {"X-Why": "exists"}))]]}))
    written = client.value()
    assert written.startswith(b"HTTP/1.1 409 Conflict\r\n")
    assert b"\r\nX-Why: exists\r\n" in written and b"\r\nContent-Length: 7\r\n" in written and written.endswith(b'\r\n\r\n{"e":1}')
    assert not client.disconnecting  # kept alive
    assert worker.waiting == {}


def test_a_turn_of_large_bodies_goes_in_frames_meterd_accepts() -> None:
    from meterd.workers import _Frames

    clock = Clock()
    worker = HttpWorker(clock)
    stdio = StringTransport()
    worker.makeConnection(stdio)
    body = b"\x01" * 60_000  # 6 bytes of JSON each: the worst case
    for port in range(100):  # 100 connections, one request each, all in one reactor turn
        channel = worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000 + port))
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /postConsumo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    clock.advance(0)
    sizes = [len(body) for body in split_frames(stdio.value())]
    assert len(sizes) > 1 and max(sizes) < _Frames.MAX_LENGTH
    assert sum(len(f["requests"]) for f in frames(stdio.value())) == 100


class Poller:
    """A worker in memory with its own answers generation; polls go through it, meterd's answers come back by hand."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.worker = HttpWorker(self.clock)
        self.stdio = StringTransport()
        self.worker.makeConnection(self.stdio)
        self.worker.generation = Generation()

    def send(self, request: bytes) -> StringTransport:
        channel = self.worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(request)
        self.clock.advance(0)
        return client

    def forwarded(self) -> list[list[Any]]:
        """The requests sent to meterd since last asked."""
        rows = [r for f in frames(self.stdio.value()) for r in f["requests"]]
        self.stdio.clear()
        return rows

    def answer(self, id_: int, status: int, body: bytes) -> None:
        """meterd's answer to the request ``id_``."""
        self.worker.dataReceived(frame({"answers": [[id_, *answer_row(Answer(status, b"application/json; charset=utf-8", body, {}))]]}))


POLL = b"GET /getAlarme?id=%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ta\r\n\r\n" % A.encode()


def test_a_poll_meterd_answered_is_answered_again_from_its_answer_until_something_changes() -> None:
    p = Poller()
    first = p.send(POLL)
    [[id_, *row]] = p.forwarded()
    assert incoming_from_row(row).path == "/getAlarme"
    assert first.value() == b""  # nothing until meterd answers
    p.answer(id_, 200, b'{"alarme":false}')
    assert first.value().startswith(b"HTTP/1.1 200 OK\r\n") and first.value().endswith(b'\r\n\r\n{"alarme":false}')
    again = [p.send(POLL) for _ in range(3)]
    assert p.forwarded() == [] and p.worker.answered == 3
    assert all(c.value().startswith(b"HTTP/1.1 200 OK\r\n") and c.value().endswith(b'\r\n\r\n{"alarme":false}') for c in again)

    assert p.worker.generation is not None
    p.worker.generation.bump()  # an alarm settled, or credentials changed: meterd answers again
    stale = p.send(POLL)
    [[id_, *_]] = p.forwarded()
    assert stale.value() == b""
    p.answer(id_, 200, b'{"alarme":true}')
    assert p.send(POLL).value().endswith(b'{"alarme":true}') and p.forwarded() == []

    # Another token, a body, another method, an error: never answered from what the plain poll got.
    p.send(POLL.replace(b"Bearer ta", b"Bearer tb"))
    [[id_, *_]] = p.forwarded()
    p.answer(id_, 403, b'{"error":{"code":"forbidden","message":"x"}}')
    p.send(POLL.replace(b"Bearer ta", b"Bearer tb"))
    assert len(p.forwarded()) == 1  # a 403 is not kept
    p.send(POLL.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"))
    p.send(POLL.replace(b"GET", b"HEAD"))
    assert [r[1:3] for r in p.forwarded()] == [["GET", "/getAlarme"], ["HEAD", "/getAlarme"]]


def test_with_a_shared_store_every_poll_goes_to_meterd() -> None:
    """Other processes settle alarms without moving this meterd's generation: nothing is repeated."""
    p = Poller()
    p.worker.repeat_polls = False  # as meterd's first frame says for a shared store (below)
    for _ in range(3):
        p.send(POLL)
        [[id_, *_]] = p.forwarded()
        p.answer(id_, 200, b'{"alarme":false}')
    assert p.worker.answered == 0 and p.worker.polls == {}
    api = SlowApi()
    api.store.shared = True
    assert HttpWorkers(1, api, Limits(), Clock()).first_messages() == [{"settings": asdict(Limits()), "repeat_polls": False}]  # type: ignore[arg-type]


def test_an_answer_that_crossed_a_change_is_not_kept() -> None:
    """The generation is read when the poll leaves: a change before meterd's answer arrives makes it stale."""
    p = Poller()
    p.send(POLL)
    [[id_, *_]] = p.forwarded()
    assert p.worker.generation is not None
    p.worker.generation.bump()  # settled while meterd was answering
    p.answer(id_, 200, b'{"alarme":false}')
    p.send(POLL)
    assert len(p.forwarded()) == 1


def test_kept_answers_are_for_short_polls_and_bounded_in_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_worker, "MAX_POLLS", 2)
    p = Poller()

    def ask(request: bytes) -> bool:
        """Poll; True if the worker answered without meterd."""
        p.send(request)
        forwarded = p.forwarded()
        for id_, *_ in forwarded:
            p.answer(id_, 200, b"{}")
        return not forwarded

    def poll(query: bytes) -> bytes:
        return b"GET /getAlarme?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ta\r\n\r\n" % query

    long = poll(b"id=" + A.encode() + b"&pad=" + b"x" * http_worker.MAX_POLL_BYTES)
    assert not ask(long) and not ask(long)  # answered, never kept
    first, second, third = poll(b"id=1"), poll(b"id=2"), poll(b"id=3")
    assert not ask(first) and not ask(second)
    assert ask(first) and ask(second)
    assert not ask(third)  # past the bound: the memory starts over
    assert ask(third) and not ask(first)


def test_a_worker_reports_what_it_answered_itself_each_second_not_each_turn() -> None:
    p = Poller()
    p.worker.reporting.start(REPORT_INTERVAL, now=False)
    p.send(POLL)
    [[id_, *_]] = p.forwarded()
    p.answer(id_, 200, b'{"alarme":false}')
    clients = [p.send(POLL) for _ in range(3)]
    assert all(c.value().endswith(b'\r\n\r\n{"alarme":false}') for c in clients)
    assert p.stdio.value() == b""  # no frame for meterd per turn
    p.clock.advance(REPORT_INTERVAL)
    assert frames(p.stdio.value()) == [{"requests": [], "answered": 3}]
    p.stdio.clear()
    p.send(POLL)
    p.worker.readConnectionLost()  # meterd stopping: what is left is still counted
    assert frames(p.stdio.value()) == [{"requests": [], "answered": 1}]


def test_what_meterd_will_not_answer_any_more_gets_a_503_and_the_connection_closes() -> None:
    worker, stdio, client, clock = worker_with_request(b"GET /getFatura?id=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(worker.waiting) == 1
    worker.readConnectionLost()  # meterd closed our stdin
    written = client.value()
    assert written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert orjson.loads(written.partition(b"\r\n\r\n")[2])["error"]["code"] == "stopping"
    assert client.disconnecting and stdio.disconnecting


class ClosingStdin(StringTransport):
    """A worker's process transport: writing after its stdin closed fails, as Twisted's does once the pipe is gone."""

    stdin_closed = False

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def write(self, data: bytes) -> None:
        assert not self.stdin_closed, "written to a worker after its stdin closed"
        super().write(data)


class SlowApi:
    """An Api whose answers wait for a Deferred: a reading waiting for its flush, say."""

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        from meterd.metrics import Metrics

        self.metrics = Metrics()
        self.alarm_service = None
        self.store = SimpleNamespace(shared=False)
        self.waiting: Deferred[None] = Deferred()

    async def respond(self, incoming: Incoming) -> Answer:
        await self.waiting
        return Answer(201, b"application/json", b"{}", {})


def test_an_answer_after_the_pool_stopped_is_not_written_to_the_worker() -> None:
    clock = Clock()
    spawned: list[Any] = []
    clock.spawnProcess = lambda protocol, *args, **kw: spawned.append(protocol)  # type: ignore[attr-defined]
    api = SlowApi()
    pool = HttpWorkers(1, api, Limits(), clock)  # type: ignore[arg-type]
    pool.socket_fd = lambda: 3  # type: ignore[method-assign]
    pool.startService()
    [link] = spawned
    transport = ClosingStdin()
    link.makeConnection(transport)
    link.childDataReceived(1, frame({"ready": True}))
    incoming = Incoming("POST", "/postConsumo", b"", None, None, b"{}")
    link.childDataReceived(1, frame({"requests": [[7, *incoming_row(incoming)]], "answered": 0}))
    clock.advance(0)
    assert frames(transport.value()) == [{"settings": asdict(Limits()), "repeat_polls": True}]  # not answered yet
    pool.stopService()
    assert transport.stdin_closed
    api.waiting.callback(None)  # the answer comes now: the worker has already answered 503
    clock.advance(0)
    assert frames(transport.value()) == [{"settings": asdict(Limits()), "repeat_polls": True}]


# -- end to end: workers beside an in-process meterd --------------------------------------


async def customer(server: LiveServer, cid: str, **extra: Any) -> str:
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": "Ana", **extra})
    assert status == 201, body
    return body["token"]


def counted(server: LiveServer, route: str, status: int) -> float:
    return server.core.api.metrics.http.labels(route, str(status))._value.get()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_workers_repeat_meterds_alarm_answers_and_see_each_settlement_at_once(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", "--http-workers", "2")
    try:
        await http_workers_ready(server, 2)
        token = await customer(server, A, limite_kw=0.001)  # registered after the workers started
        await customer(server, B)
        key = (await server.call("POST", "/cadMedidor", json_body={"id": A}))[1]["key"]
        now = int(time.time())
        for ts, valor in ((now - 250, 0), (now - 200, 5)):  # 5 kWh in 50 s: far over 1 W of demand
            body = {"id": A, "id_medidor": 1, "valor": valor, "timestamp": ts}
            assert (await server.call("POST", "/postConsumo", token=key, json_body=body))[0] == 201
            if valor == 0:  # kept by both workers: no alarm yet
                for _ in range(4):
                    assert (await server.call("GET", "/getAlarme", token=token, params={"id": A}))[1]["active"] == []

        # The reading's answer waited for the alarm it raised: the very next poll has it.
        status, before, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
        assert status == 200 and [a["rule"] for a in before["active"]] == ["demand"], before

        # Repeated by the workers: meterd is asked at most once per worker (nothing changed), and every answer counts.
        api = server.core.api
        asked: list[Incoming] = []
        respond = api.respond
        api.respond = lambda incoming: (asked.append(incoming), respond(incoming))[1]  # type: ignore[method-assign]
        await deferLater(reactor, 1.5 * REPORT_INTERVAL, lambda: None)  # the polls above are counted by now
        counted_before = counted(server, "/getAlarme", 200)
        for _ in range(8):
            status, again, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
            assert status == 200 and again == before
        assert len(asked) <= 2
        await until(lambda: _true(counted(server, "/getAlarme", 200) == counted_before + 8))
        asked.clear()

        # Byte for byte what meterd answers, and a poll never seen goes to meterd first.
        for query in (b"id=" + A.encode(), b"id=" + A.encode() + b"&cursor=0"):
            ours = await respond(Incoming("GET", "/getAlarme", query, f"Bearer {token}", None, b""))
            _, theirs, response = await server.call("GET", "/getAlarme?" + query.decode(), token=token)
            assert orjson.dumps(theirs) == ours.body and response.code == ours.status == 200
        assert [i.query for i in asked] == [b"id=" + A.encode() + b"&cursor=0"]

        # An acknowledgement (meterd's) is in the very next poll, which meterd answers again.
        alarm_id = before["active"][0]["alarm_id"]
        status, acked, _ = await server.call("POST", "/ackAlarme", token=token, json_body={"id": A, "alarm_id": alarm_id})
        assert status == 200 and acked["acked_at"] is not None
        _, after, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
        assert [a["acked_at"] for a in after["active"] if a["alarm_id"] == alarm_id] == [acked["acked_at"]]
        assert after["cursor"] > before["cursor"]  # the ack's event
        assert [i.path for i in asked[1:]] == ["/ackAlarme", "/getAlarme"]

        # Errors, other customers, other routes: meterd's, every time.
        for _ in range(2):
            assert (await server.call("GET", "/getAlarme", token=token, params={"id": B}))[0] == 403
            assert (await server.call("GET", "/getAlarme", token=token, params={"id": A, "cursor": "-1"}))[0] == 400
            assert (await server.call("GET", "/getAlarme", token=None, params={"id": A}))[0] == 401
        assert (await server.call("GET", "/getFatura", token=token, params={"id": A}))[0] == 200
        assert [i.path for i in asked[3:]] == ["/getAlarme"] * 6 + ["/getFatura"]
    finally:
        await server.stop()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_without_authentication_workers_repeat_nothing(tmp_path: Path) -> None:
    """--no-auth: a poll has no Authorization to be told apart by, so meterd answers every request."""
    server = await start_server(tmp_path / "data", "--no-auth", "--http-workers", "1")
    try:
        await http_workers_ready(server, 1)
        assert (await server.call("POST", "/cadCliente", token=None, json_body={"id": A, "name": "Ana"}))[0] == 201
        asked: list[Incoming] = []
        respond = server.core.api.respond
        server.core.api.respond = lambda incoming: (asked.append(incoming), respond(incoming))[1]  # type: ignore[method-assign]
        for _ in range(3):
            status, body, _ = await server.call("GET", "/getAlarme", token=None, params={"id": A})
            assert status == 200 and body["alarme"] is False
        assert len(asked) == 3
    finally:
        await server.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_dead_worker_is_replaced_and_meterd_serves_the_port_meanwhile(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", "--http-workers", "1")
    try:
        await http_workers_ready(server, 1)
        port = server.core.http_workers.port()
        assert port not in reactor.getReaders()  # the worker accepts
        [pid] = worker_pids(server.core.http_workers)
        os.kill(pid, signal.SIGKILL)
        await until(lambda: _true(not server.core.http_workers.ready_links()))
        assert port in reactor.getReaders()
        assert (await server.call("GET", "/health", token=None))[0] == 200  # meterd's own port
        await http_workers_ready(server, 1)
        [new] = worker_pids(server.core.http_workers)
        assert new != pid and port not in reactor.getReaders()
        assert (await server.call("GET", "/health", token=None))[0] == 200
    finally:
        await server.stop()
    await until(lambda: _true(gone(new)))


@pytest.mark.slow
def test_twistd_with_http_workers_serves_the_quick_start_and_stops_them(tmp_path: Path) -> None:
    import urllib.request

    with twistd_with_workers(tmp_path / "data", "http", 2) as server:
        request = urllib.request.Request(server.url + "/cadCliente", data=orjson.dumps({"id": A, "name": "Ana"}),
                                         headers={"Authorization": f"Bearer {server.token}"})
        token = orjson.loads(urllib.request.urlopen(request, timeout=5).read())["token"]
        request = urllib.request.Request(server.url + f"/getAlarme?id={A}", headers={"Authorization": f"Bearer {token}"})
        assert orjson.loads(urllib.request.urlopen(request, timeout=5).read())["alarme"] is False


def unix_get(path: Path, target: str) -> bytes | None:
    """One HTTP/1.0 GET over a UNIX socket; None while nothing listens there."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.slow
def test_workers_share_a_unix_socket_and_leave_its_path_to_meterd(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support import free_port, subprocess_env

    path = tmp_path / "meterd.sock"
    cmd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "meterd", "--http", f"unix:{path}",
           "--udp", str(free_port()), "--udp-interface", "127.0.0.1", "--data-dir", str(tmp_path / "data"), "--http-workers", "2"]
    log_path = tmp_path / "twistd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while b"meterd_http_workers 2.0" not in (unix_get(path, "/metrics") or b""):
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        assert unix_get(path, "/health").startswith(b"HTTP/1.0 200 OK")  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(20)
    output = log_path.read_text()
    assert proc.returncode in (0, -15), output
    assert "Traceback" not in output and "critical" not in output  # a worker removing meterd's path failed here
    assert not path.exists()


# -- options ------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    path = tmp_path / "server.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_workers_cannot_share_a_tls_port(tmp_path: Path) -> None:
    pem = self_signed(tmp_path)
    options = ["--data-dir", str(tmp_path / "data"), "--http", f"ssl:0:privateKey={pem}"]
    Options().parseOptions(options)  # TLS alone is fine
    with pytest.raises(usage.UsageError, match="--http-workers: --http must be a tcp:"):
        Options().parseOptions([*options, "--http-workers", "1"])
