"""``--http-workers``: HTTP parsed in other processes, answers decided by meterd (issue 8).

The rows that carry requests and answers over the pipe keep every byte; a
worker forwards what it cannot answer and answers 503 to what meterd will
no longer answer; workers answer a customer's own ``/getAlarme`` themselves,
byte for byte as meterd would, and see every alarm settlement before the
client can ask again; a dead worker is replaced while meterd serves the port;
twistd stops them.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python import usage

from meterd import http_alarms, workers
from meterd.alarms import page
from meterd.alarm_rules import Event
from meterd.credentials import token_hash
from meterd.generation import Generation
from meterd.http_alarms import RawRequest
from meterd.http_worker import REPORT_INTERVAL, HttpWorker
from meterd.options import Options
from meterd.taxid import make_cpf
from meterd.web.exchange import Answer, Incoming, answer_from_row, answer_row, incoming_from_row, incoming_row
from tests.support import (
    LiveServer, frame, frames, gone, http_workers_ready, split_frames, start_server, twistd_with_workers, until,
    worker_pids,
)

A = make_cpf("529982247")
B = make_cpf("168995350")


# -- what crosses the pipe -------------------------------------------------------------


def test_rows_carry_every_byte_through_json() -> None:
    every_byte = bytes(range(256))
    incoming = Incoming("POST", "/cadCliente", b"id=1&x=%FF\xff", "Bearer t\xe9", "application/json", every_byte + b'{"a":"\xc3\xa7"}', False)
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
        b"Content-Length: 8\r\n\r\n{\"a\":1}\n"
    )
    [sent] = frames(stdio.value())
    [[id_, *row]] = sent["requests"]
    assert incoming_from_row(row) == Incoming("POST", "/cadCliente", b"x=1", "Bearer T", "application/json", b'{"a":1}\n', False)
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


def test_a_worker_reports_what_it_answered_itself_each_second_not_each_turn() -> None:
    class Local:
        async def answer(self, incoming: Incoming, raw: RawRequest | None) -> bytes | None:
            return b'{"alarme":false}'

    clock = Clock()
    worker = HttpWorker(clock)
    stdio = StringTransport()
    worker.makeConnection(stdio)
    worker.alarms = Local()  # type: ignore[assignment]
    worker.reporting.start(REPORT_INTERVAL, now=False)

    def poll() -> StringTransport:
        channel = worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(b"GET /getAlarme?id=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(0)
        return client

    clients = [poll() for _ in range(3)]
    assert all(c.value().endswith(b'\r\n\r\n{"alarme":false}') for c in clients)
    assert stdio.value() == b""  # no frame for meterd per turn
    clock.advance(REPORT_INTERVAL)
    assert frames(stdio.value()) == [{"requests": [], "answered": 3}]
    stdio.clear()
    poll()
    worker.readConnectionLost()  # meterd stopping: what is left is still counted
    assert frames(stdio.value()) == [{"requests": [], "answered": 1}]


class ViewsRead:
    """The store a worker reads alarm views from, counting the reads: no alarm, no event."""

    def __init__(self) -> None:
        self.reads = 0

    def alarm_view(self, customer_id: str, cursor: int | None, limit: int) -> Deferred[tuple[list[Any], list[Any], int]]:
        self.reads += 1
        return succeed(([], [], 0))


def test_a_request_seen_before_is_answered_without_parsing_it_again_while_its_view_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[str] = []
    monkeypatch.setattr(http_alarms, "token_hash", lambda token: hashed.append(token) or token_hash(token))
    clock = Clock()
    worker = HttpWorker(clock)
    stdio = StringTransport()
    worker.makeConnection(stdio)
    store, generation = ViewsRead(), Generation()
    worker.alarms = http_alarms.WorkerAlarms(store, generation, 10)  # type: ignore[arg-type]
    worker.alarms.add_customers([[A, "America/Sao_Paulo", token_hash("ta")], [B, "America/Sao_Paulo", token_hash("tb")]])

    def poll(request: bytes) -> bytes:
        channel = worker.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(request)
        clock.advance(0)
        return client.value()

    plain = b"GET /getAlarme?id=%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ta\r\n\r\n" % A.encode()
    first = poll(plain)
    assert first.startswith(b"HTTP/1.1 200 ") and (store.reads, len(hashed)) == (1, 1)
    assert [poll(plain) for _ in range(3)] == [first] * 3  # the same bytes, with no token hashed again
    assert (store.reads, len(hashed)) == (1, 1)

    generation.bump()  # an alarm settled: read afresh, and remembered again
    assert poll(plain).startswith(b"HTTP/1.1 200 ") and (store.reads, len(hashed)) == (2, 2)
    poll(plain)
    assert (store.reads, len(hashed)) == (2, 2)

    # Another token, a body, another method: each decided in full, never from what the plain poll taught.
    assert poll(plain.replace(b"Bearer ta", b"Bearer tb")) == b""  # B's token for A's alarms: meterd says 403
    with_body = plain.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
    assert poll(with_body).startswith(b"HTTP/1.1 200 ") and poll(with_body).startswith(b"HTTP/1.1 200 ")
    assert poll(plain.replace(b"GET", b"HEAD")) == b""  # to meterd
    assert len(hashed) == 5 and [r[1:3] for f in frames(stdio.value()) for r in f["requests"]] == [
        ["GET", "/getAlarme"], ["HEAD", "/getAlarme"],
    ]


@pytest_twisted.ensureDeferred
async def test_remembered_requests_are_short_and_bounded_in_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_alarms, "MAX_REPEATS", 2)
    alarms = http_alarms.WorkerAlarms(ViewsRead(), Generation(), 10)  # type: ignore[arg-type]
    alarms.add_customers([[A, "America/Sao_Paulo", token_hash("ta")]])

    async def answer(query: bytes) -> RawRequest:
        raw = (b"/getAlarme?" + query, b"Bearer ta")
        assert await alarms.answer(Incoming("GET", "/getAlarme", query, "Bearer ta", None, b"", False), raw) is not None
        return raw

    long = await answer(b"id=" + A.encode() + b"&pad=" + b"x" * http_alarms.MAX_REPEAT_BYTES)  # answered, not remembered
    assert alarms.repeat(long) is None
    first, second = [await answer(b"id=" + A.encode() + b"&cursor=%d" % n) for n in (1, 2)]
    assert alarms.repeat(first) is not None and alarms.repeat(second) is not None
    third = await answer(b"id=" + A.encode() + b"&cursor=3")  # past the bound: the memory starts over
    assert (alarms.repeat(first), alarms.repeat(second)) == (None, None) and alarms.repeat(third) is not None


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
        from meterd.metrics import Metrics
        from twisted.internet.defer import Deferred

        self.metrics = Metrics()
        self.alarm_service = None
        self.waiting: Deferred[None] = Deferred()

    async def respond(self, incoming: Incoming) -> Answer:
        await self.waiting
        return Answer(201, b"application/json", b"{}", {})


def test_an_answer_after_the_pool_stopped_is_not_written_to_the_worker() -> None:
    from meterd.http_workers import HttpWorkers

    clock = Clock()
    spawned: list[Any] = []
    clock.spawnProcess = lambda protocol, *args, **kw: spawned.append(protocol)  # type: ignore[attr-defined]
    api = SlowApi()
    pool = HttpWorkers(1, api, lambda: None, clock)  # type: ignore[arg-type]
    pool.socket_fd = lambda: 3  # type: ignore[method-assign]
    pool.startService()
    [link] = spawned
    transport = ClosingStdin()
    link.makeConnection(transport)
    link.childDataReceived(1, frame({"ready": True}))
    incoming = Incoming("POST", "/postConsumo", b"", None, None, b"{}", False)
    link.childDataReceived(1, frame({"requests": [[7, *incoming_row(incoming)]], "answered": 0}))
    clock.advance(0)
    assert frames(transport.value()) == [{"alarms": None}]  # not answered yet
    pool.stopService()
    assert transport.stdin_closed
    api.waiting.callback(None)  # the answer comes now: the worker has already answered 503
    clock.advance(0)
    assert frames(transport.value()) == [{"alarms": None}]


# -- end to end: workers beside an in-process meterd --------------------------------------


async def customer(server: LiveServer, cid: str, **extra: Any) -> str:
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": "Ana", **extra})
    assert status == 201, body
    return body["token"]


def counted(server: LiveServer, route: str, status: int) -> float:
    return server.core.api.metrics.http.labels(route, str(status))._value.get()


@pytest_twisted.ensureDeferred
async def test_workers_answer_alarms_as_meterd_would_and_see_each_settlement_at_once(tmp_path: Path) -> None:
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
            if valor == 0:  # cached by both workers: no alarm yet
                for _ in range(4):
                    assert (await server.call("GET", "/getAlarme", token=token, params={"id": A}))[1]["active"] == []

        # The reading's answer waited for the alarm it raised: the very next poll, a worker's, has it.
        status, before, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
        assert status == 200 and [a["rule"] for a in before["active"]] == ["demand"], before

        # Answered by a worker: meterd's respond is not asked, the answer is still counted.
        api = server.core.api
        asked: list[Incoming] = []
        respond = api.respond
        api.respond = lambda incoming: (asked.append(incoming), respond(incoming))[1]  # type: ignore[method-assign]
        await deferLater(reactor, 1.5 * REPORT_INTERVAL, lambda: None)  # the polls above are counted by now
        counted_before = counted(server, "/getAlarme", 200)
        status, raw, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
        assert status == 200 and asked == []
        await until(lambda: _true(counted(server, "/getAlarme", 200) == counted_before + 1))

        # Byte for byte what meterd answers itself, with and without a cursor.
        for query in (b"id=" + A.encode(), b"id=" + A.encode() + b"&cursor=0"):
            ours = await respond(Incoming("GET", "/getAlarme", query, f"Bearer {token}", None, b"", False))
            _, theirs, response = await server.call("GET", "/getAlarme?" + query.decode(), token=token)
            assert orjson.dumps(theirs) == ours.body and response.code == ours.status == 200
        assert asked == []

        # An acknowledgement (meterd's) is in the very next poll (a worker's, from its cache before).
        alarm_id = before["active"][0]["alarm_id"]
        status, acked, _ = await server.call("POST", "/ackAlarme", token=token, json_body={"id": A, "alarm_id": alarm_id})
        assert status == 200 and acked["acked_at"] is not None
        _, after, _ = await server.call("GET", "/getAlarme", token=token, params={"id": A})
        assert [a["acked_at"] for a in after["active"] if a["alarm_id"] == alarm_id] == [acked["acked_at"]]
        assert after["cursor"] > before["cursor"]  # the ack's event
        assert len(asked) == 1 and asked[0].path == "/ackAlarme"

        # Whatever a worker does not decide goes to meterd: errors, other customers, other routes.
        assert (await server.call("GET", "/getAlarme", token=token, params={"id": B}))[0] == 403
        assert (await server.call("GET", "/getAlarme", token=token, params={"id": A, "cursor": "-1"}))[0] == 400
        assert (await server.call("GET", "/getAlarme", token=None, params={"id": A}))[0] == 401
        assert (await server.call("GET", "/getFatura", token=token, params={"id": A}))[0] == 200
        assert [i.path for i in asked[1:]] == ["/getAlarme"] * 3 + ["/getFatura"]
    finally:
        await server.stop()


async def _true(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_a_worker_knows_the_customers_of_every_first_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token hashes go to a new worker a few thousand at a time; here one a frame."""
    server = await start_server(tmp_path / "data")
    tokens = [await customer(server, cid) for cid in (A, B)]
    await server.stop()
    monkeypatch.setattr(workers, "FIRST_ROWS", 1)
    server = await start_server(tmp_path / "data", "--http-workers", "1")
    try:
        sent = server.core.http_workers.first_messages()
        assert [len(m["alarms"]["customers"]) if "alarms" in m else len(m["customers"]) for m in sent] == [1, 1]
        await http_workers_ready(server, 1)
        asked: list[Incoming] = []
        respond = server.core.api.respond
        server.core.api.respond = lambda incoming: (asked.append(incoming), respond(incoming))[1]  # type: ignore[method-assign]
        for cid, token in zip((A, B), tokens):
            status, body, _ = await server.call("GET", "/getAlarme", token=token, params={"id": cid})
            assert status == 200 and body["active"] == []
        assert asked == []  # both answered by the worker: it knew the customer of either frame
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_without_authentication_workers_answer_nothing_themselves(tmp_path: Path) -> None:
    """--no-auth: anyone reads anything, so meterd answers every request (the legacy clients' mode)."""
    server = await start_server(tmp_path / "data", "--no-auth", "--http-workers", "1")
    try:
        await http_workers_ready(server, 1)
        assert (await server.call("POST", "/cadCliente", token=None, json_body={"id": A, "name": "Ana"}))[0] == 201
        counted_before = counted(server, "/getAlarme", 200)
        status, body, _ = await server.call("GET", "/getAlarme", token=None, params={"id": A})
        assert status == 200 and body["alarme"] is False
        assert counted(server, "/getAlarme", 200) == counted_before + 1  # counted at once: meterd answered it
        assert server.core.http_workers.first_messages() == [{"alarms": None}]
    finally:
        await server.stop()


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
    now = datetime.datetime.now(datetime.timezone.utc)
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
