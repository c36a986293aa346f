"""The request path's shortcuts keep every answer what it was (issue 8).

Answers that wait for nothing are written before ``render`` returns; those
that wait are finished by Twisted; the open month's bill is cached until a
reading of its meters is stored, even one whose GET is pipelined right
behind its POST; request counters, query strings and crashes behave as
before.
"""

from __future__ import annotations

import json
import socket
from zoneinfo import ZoneInfo
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from bench.http_load import parse_response
from meterd import periods
from meterd.web import params as p
from meterd.web.api import run_now
from meterd.web.routes import Route
from meterd.web.errors import ApiError
from tests.support import LiveServer

CID = "12345678909"


async def customer_with_meter(server: LiveServer) -> tuple[str, str]:
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201, body
    status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID})
    assert status == 201, meter
    return body["token"], meter["key"]


async def post_reading(server: LiveServer, key: str, kwh: str, ts_ms: int) -> None:
    body = {"id": CID, "id_medidor": 1, "valor": kwh, "timestamp": ts_ms / 1000}
    status, answer, _ = await server.call("POST", "/postConsumo", token=key, json_body=body)
    assert status == 201, answer


def now_ms(server: LiveServer) -> int:
    return int(server.core.api.clock.seconds() * 1000)


# -- stepping the handler coroutine ---------------------------------------------


def test_run_finishes_at_once_what_waits_for_nothing() -> None:
    done: list[int] = []

    async def work() -> int:
        return await succeed(1) + 1

    run_now(work(), done.append)
    assert done == [2]


def test_run_hands_what_waits_to_twisted_and_loses_nothing() -> None:
    first: Deferred[int] = Deferred()
    second: Deferred[int] = Deferred()
    done: list[Any] = []

    async def work() -> str:
        done.append(await first)
        try:
            await second
        except ValueError as e:
            done.append(str(e))
        return "delivered"

    run_now(work(), done.append)
    assert done == []
    first.callback(2)
    assert done == [2]
    second.errback(ValueError("late"))
    assert done == [2, "late", "delivered"]


# -- answered before render returns -----------------------------------------------


def raw_request(server: LiveServer, raw: bytes) -> bytes:
    """Feed one request to a channel of the real site; what it wrote without any reactor turn."""
    channel = server.core.http_port.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8888), peerAddress=IPv4Address("TCP", "127.0.0.1", 50000)
    )
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    written = transport.value()
    channel.connectionLost(Exception("done"))
    return written


@pytest_twisted.ensureDeferred
async def test_memory_answers_are_written_synchronously_and_store_answers_later(server: LiveServer) -> None:
    token, _ = await customer_with_meter(server)
    await server.core.api.alarm_service.ready()
    head = f"Host: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    alarms = raw_request(server, f"GET /getAlarme?id={CID} HTTP/1.1\r\n{head}".encode())
    assert alarms.startswith(b"HTTP/1.1 200 OK\r\n")
    body = json.loads(alarms.partition(b"\r\n\r\n")[2])
    assert (body["id"], body["alarme"], body["active"]) == (CID, False, [])
    assert b"\r\nCache-Control: no-store\r\n" in alarms and b"\r\nContent-Type: application/json; charset=utf-8\r\n" in alarms
    # Errors take the same path and are as before.
    denied = raw_request(server, f"GET /getAlarme?id=52998224725 HTTP/1.1\r\n{head}".encode())
    assert denied.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert json.loads(denied.partition(b"\r\n\r\n")[2])["error"]["code"] == "forbidden"
    # /health asks the store: nothing is written until a reader thread answers.
    assert raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    status, health, _ = await server.call("GET", "/health", token=None)
    assert (status, health["status"]) == (200, "ok")


# -- the open month's bill ---------------------------------------------------------


class FixedClock:
    def __init__(self, seconds: float) -> None:
        self.now = seconds

    def seconds(self) -> float:
        return self.now


@pytest_twisted.ensureDeferred
async def test_open_month_bill_is_cached_until_a_reading_and_closes_as_fechado(server: LiveServer) -> None:
    token, key = await customer_with_meter(server)
    api = server.core.api
    t = now_ms(server)
    await post_reading(server, key, "1000", t - 2000)

    status, bill, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID})
    assert (status, bill["mes"], bill["consumo_kwh"]) == (200, "aberto", 0.0)
    year, month = (int(part) for part in bill["referencia"].split("-"))
    assert api.bills.get(CID, year, month) == bill
    status, again, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID})
    assert again == bill

    await post_reading(server, key, "1005.5", t - 1000)
    assert api.bills.get(CID, year, month) is None  # the new reading moved the month's end edge
    status, later, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID})
    assert (later["mes"], later["consumo_kwh"], later["medidores"][0]["consumo_kwh"]) == ("aberto", 5.5, 5.5)

    # A month later the same month is closed: the bill cached while it was open is not the answer.
    _, end = periods.month_range(year, month, ZoneInfo("America/Sao_Paulo"))
    api.clock = FixedClock((end + 86_400_000) / 1000)
    status, closed, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID, "periodo": 1})
    assert (status, closed["status"], closed["mes"], closed["referencia"], closed["consumo_kwh"]) == (200, "previa", "fechado", later["referencia"], 5.5)
    assert {k: v for k, v in closed.items() if k != "mes"} == {k: v for k, v in later.items() if k != "mes"}
    status, current, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID})
    assert (current["mes"], current["consumo_kwh"]) == ("aberto", 0.0)
    assert current["referencia"] != closed["referencia"]


def pipelined(port: int, requests: list[bytes]) -> list[tuple[int, Any]]:
    """Send every request in one write on one connection; the answers in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        buf, answers = bytearray(), []
        while len(answers) < len(requests):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buf += chunk
            while (parsed := parse_response(buf)) is not None:
                status, used = parsed
                answers.append((status, json.loads(bytes(buf[:used]).partition(b"\r\n\r\n")[2])))
                del buf[:used]
    return answers


@pytest_twisted.ensureDeferred
async def test_a_bill_pipelined_behind_its_reading_sees_it(server: LiveServer) -> None:
    """Ingest answers the POST before its observers evict cached bills, and
    Twisted serves a pipelined request synchronously when the previous one
    finishes: the bill must be evicted by the time the POST is answered."""
    token, key = await customer_with_meter(server)
    t = now_ms(server)
    await post_reading(server, key, "1000", t - 2000)
    status, cached, _ = await server.call("GET", "/getFatura", token=token, params={"id": CID})
    assert (status, cached["consumo_kwh"]) == (200, 0.0)
    body = json.dumps({"id": CID, "id_medidor": 1, "valor": "1007", "timestamp": (t - 1000) / 1000}).encode()
    post = (
        f"POST /postConsumo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    get = f"GET /getFatura?id={CID} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    port = server.url.rpartition(":")[2]
    (posted, stored), (billed, bill) = await threads.deferToThread(pipelined, int(port), [post, get])
    assert (posted, stored) == (201, {"status": "stored"})
    assert (billed, bill["consumo_kwh"]) == (200, 7.0)


# -- counters, crashes, query strings ------------------------------------------------


def counted(text: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meterd_http_requests_total" and sample.labels == {"route": route, "status": status}:
                return sample.value
    return 0.0


@pytest_twisted.ensureDeferred
async def test_requests_are_counted_by_route_and_status(server: LiveServer) -> None:
    token, _ = await customer_with_meter(server)
    for _ in range(3):
        assert (await server.call("GET", "/getAlarme", token=token, params={"id": CID}))[0] == 200
    assert (await server.call("GET", "/getAlarme", token=None, params={"id": CID}))[0] == 401
    assert (await server.call("GET", "/nowhere", token=None))[0] == 404
    status, text, _ = await server.call("GET", "/metrics", token=None)
    text = text.decode()
    assert counted(text, "/getAlarme", "200") == 3
    assert counted(text, "/getAlarme", "401") == 1
    assert counted(text, "unknown", "404") == 1


@pytest_twisted.ensureDeferred
async def test_a_crash_with_or_without_waiting_is_a_logged_500(server: LiveServer) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)

    async def at_once(call: Any) -> Any:
        raise RuntimeError("boom now")

    async def after_waiting(call: Any) -> Any:
        await server.core.store.ping()
        raise RuntimeError("boom later")

    routes = server.core.api.routes
    saved = dict(routes)
    try:
        routes["/getAlarme"] = (Route("GET", "/getAlarme", "public", (), "crashes at once"), at_once)
        routes["/getFatura"] = (Route("GET", "/getFatura", "public", (), "crashes after waiting"), after_waiting)
        for path in ("/getAlarme", "/getFatura"):
            status, body, _ = await server.call("GET", path, token=None)
            assert (status, body["error"]["code"]) == (500, "internal_error")
    finally:
        routes.clear()
        routes.update(saved)
        globalLogPublisher.removeObserver(events.append)
    crashes = [e for e in events if e.get("log_format", "").startswith("unhandled error answering")]
    assert sorted(str(e["log_failure"].value) for e in crashes) == ["boom later", "boom now"]
    status, text, _ = await server.call("GET", "/metrics", token=None)
    assert counted(text.decode(), "error", "500") == 2


def test_query_strings_parse_the_same_whether_remembered_or_not() -> None:
    short = b"id=123.456.789-09&periodo=2&blank="
    first = p.parse(b"", None, short)
    first["periodo"] = "changed"  # a caller's dict is its own
    assert p.parse(b"", None, short) == {"id": "123.456.789-09", "periodo": "2", "blank": ""}
    long = b"id=1&pad=" + b"x" * 1000
    assert p.parse(b"", None, long) == {"id": "1", "pad": "x" * 1000}
    assert p.parse(b'{"id": "1"}', "application/json", b"id=1") == {"id": "1"}
    for query in (b"id=1&id=2", b"id=1&pad=" + b"x" * 1000 + b"&id=2"):
        with pytest.raises(ApiError) as raised:
            p.parse(b"", None, query)
        assert raised.value.code == "conflicting_parameter"
