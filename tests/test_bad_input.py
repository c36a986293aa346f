"""Bad input, table-driven: every row gets its documented error and changes nothing.

One server for the module, with a customer, two meters and two readings.
Each row dumps every table of the SQLite store, sends one bad request (as
JSON through treq, or as raw bytes over a socket for what no well-behaved
client can send: conflicting lengths, request smuggling shapes, non-UTF-8),
checks the status and error code of DESIGN §3 (and, for JSON answers, that
the OpenAPI document describes them), and dumps the store again: the two
dumps must be equal. The UDP rows do the same with datagrams, which are never
answered, so they wait for the drop counter of their reason instead.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from meterd.datagram import sign
from meterd.taxid import make_cnpj, make_cpf
from tests.support import LiveServer, start_server, until
from tests.web_support import assert_documented, dump_store

CID = make_cpf("529982247")
UNKNOWN_CID = make_cpf("390533447")  # valid check digits, never registered
NEW_CID = make_cpf("111444777")  # used only by requests that must not create it


@dataclass
class World:
    """What the rows refer to; filled in by the fixture."""

    server: LiveServer
    now: int = 0
    t1: int = 0  # first reading: 100.000 kWh
    t2: int = 0  # second reading: 101.500 kWh
    customer_token: str = ""
    key1: str = ""
    key2: str = ""


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    server = await start_server(tmp_path_factory.mktemp("bad") / "data")
    w = World(server)
    w.now = int(time.time())
    w.t1, w.t2 = w.now - 7200, w.now - 3600
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201
    w.customer_token = body["token"]
    status, body, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID, "mode": "register"})
    assert (status, body["id_medidor"]) == (201, 1)
    w.key1 = body["key"]
    status, body, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID, "mode": "interval"})
    assert (status, body["id_medidor"]) == (201, 2)
    w.key2 = body["key"]
    for ts, valor in ((w.t1, 100), (w.t2, 101.5)):
        status, _, _ = await server.call("POST", "/postConsumo", json_body={"id": CID, "id_medidor": 1, "valor": valor, "timestamp": ts})
        assert status == 201
    yield w
    await server.stop()


def reading(w: World, **changes: Any) -> dict[str, Any]:
    """A reading that would be accepted, with the fields under test changed (None drops one)."""
    body = {"id": CID, "id_medidor": 1, "valor": 102, "timestamp": w.now - 60}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class Row:
    name: str
    method: str
    path: str
    status: int
    code: str | None
    body: Callable[[World], Any] | None = None  # a JSON value, sent as JSON
    data: bytes | None = None  # or raw body bytes
    data_fn: Callable[[World], bytes] | None = None  # or raw bytes that depend on the world
    params: dict[str, str] | None = None
    content_type: str | None = "application/json"
    token: str | None = "operator"
    # Conflicts and backwards registers are well-formed readings: the store
    # counts them as a sign of life of their meter (meters.last_seen_ms), on purpose.
    sign_of_life: bool = False


R = "/postConsumo"
ROWS: list[Row] = [
    # -- malformed JSON and bodies that are not JSON objects
    Row("truncated JSON", "POST", R, 400, "malformed_json", data=b'{"id": "' + CID.encode() + b'", "valor": '),
    Row("trailing garbage", "POST", R, 400, "malformed_json", data=b'{"id": "1"} {"id": "2"}'),
    Row("JSON array", "POST", R, 400, "malformed_json", data=b"[1, 2, 3]"),
    Row("single quotes", "POST", R, 400, "malformed_json", data=b"{'id': 1}"),
    Row("deep nesting", "POST", R, 400, "malformed_json", data=b"[" * 60_000),
    Row("integer literal of 5000 digits", "POST", R, 400, "malformed_json", data=b'{"valor": 1' + b"0" * 5000 + b"}"),
    Row("form body", "POST", R, 415, "unsupported_media_type", data=b"id=1&valor=2", content_type="application/x-www-form-urlencoded"),
    Row("XML body", "POST", R, 415, "unsupported_media_type", data=b"<reading/>", content_type="application/xml"),
    Row("UTF-8 BOM before JSON", "POST", R, 415, "unsupported_media_type", data=b"\xef\xbb\xbf{}"),
    Row("non-UTF-8 bytes in a JSON string", "POST", R, 400, "malformed_json", data=b'{"id": "\xff\xfe\xfa", "valor": 1}'),
    Row("UTF-16 body", "POST", R, 415, "unsupported_media_type", data='{"id": "1"}'.encode("utf-16")),
    # -- NaN and infinity
    Row("NaN literal", "POST", R, 400, "malformed_json", data=b'{"valor": NaN}'),
    Row("Infinity literal", "POST", R, 400, "malformed_json", data=b'{"valor": -Infinity}'),
    Row("1e999 overflows to infinity", "POST", R, 400, "not_finite", data_fn=lambda w: json.dumps(reading(w, valor=0)).replace('"valor": 0', '"valor": 1e999').encode()),
    Row("NaN as a string", "POST", R, 400, "invalid_number", body=lambda w: reading(w, valor="NaN")),
    Row("Infinity as a string", "POST", R, 400, "invalid_number", body=lambda w: reading(w, timestamp="Infinity")),
    # -- wrong types, strings where numbers go and the reverse
    Row("valor is an object", "POST", R, 400, "invalid_type", body=lambda w: reading(w, valor={"kwh": 1})),
    Row("valor is a list", "POST", R, 400, "invalid_type", body=lambda w: reading(w, valor=[1])),
    Row("valor is a boolean", "POST", R, 400, "invalid_type", body=lambda w: reading(w, valor=True)),
    Row("valor is a word", "POST", R, 400, "invalid_number", body=lambda w: reading(w, valor="twelve")),
    Row("valor in hex", "POST", R, 400, "invalid_number", body=lambda w: reading(w, valor="0x10")),
    Row("id_medidor is a word", "POST", R, 400, "invalid_number", body=lambda w: reading(w, id_medidor="one")),
    Row("id_medidor is fractional", "POST", R, 400, "invalid_integer", body=lambda w: reading(w, id_medidor=1.5)),
    Row("timestamp is a date string", "POST", R, 400, "invalid_number", body=lambda w: reading(w, timestamp="2026-01-01T00:00:00Z")),
    Row("seq is a word", "POST", R, 400, "invalid_number", body=lambda w: reading(w, seq="first")),
    Row("id is a list", "POST", R, 400, "invalid_id", body=lambda w: reading(w, id=[CID])),
    Row("id is a number that is no CPF", "POST", R, 400, "invalid_id", body=lambda w: reading(w, id=12345)),
    Row("id with repeated digits", "POST", R, 400, "invalid_id", body=lambda w: reading(w, id="111.111.111-11")),
    Row("id with wrong check digits", "POST", R, 400, "invalid_id", body=lambda w: reading(w, id=CID[:-1] + str((int(CID[-1]) + 1) % 10))),
    Row("missing valor", "POST", R, 400, "missing_field", body=lambda w: reading(w, valor=None)),
    Row("missing timestamp", "POST", R, 400, "missing_field", body=lambda w: reading(w, timestamp=None)),
    Row("empty-string valor", "POST", R, 400, "missing_field", body=lambda w: reading(w, valor="")),
    Row("name is a number", "POST", "/cadCliente", 400, "invalid_type", body=lambda w: {"id": NEW_CID, "name": 42}),
    Row("name is an object", "POST", "/cadCliente", 400, "invalid_type", body=lambda w: {"id": NEW_CID, "name": {"first": "A"}}),
    Row("name has a control character", "POST", "/cadCliente", 400, "invalid_value", body=lambda w: {"id": NEW_CID, "name": "A\x00B"}),
    Row("name is 201 characters", "POST", "/cadCliente", 400, "invalid_value", body=lambda w: {"id": NEW_CID, "name": "A" * 201}),
    Row("ligacao is unknown", "POST", "/cadCliente", 400, "invalid_value", body=lambda w: {"id": NEW_CID, "name": "A", "ligacao": "quadri"}),
    Row("limite_kw is a word", "POST", "/cadCliente", 400, "invalid_number", body=lambda w: {"id": NEW_CID, "name": "A", "limite_kw": "ten"}),
    Row("tz is not a zone", "POST", "/cadCliente", 400, "invalid_tz", body=lambda w: {"id": NEW_CID, "name": "A", "tz": "Mars/Olympus_Mons"}),
    Row("tz is a path", "POST", "/cadCliente", 400, "invalid_tz", body=lambda w: {"id": NEW_CID, "name": "A", "tz": "../../../etc/passwd"}),
    Row("CNPJ with wrong check digits", "POST", "/cadCliente", 400, "invalid_id", body=lambda w: {"id": make_cnpj("112223330001")[:-1] + "0" if make_cnpj("112223330001")[-1] != "0" else make_cnpj("112223330001")[:-1] + "1", "name": "A"}),
    Row("meter mode is unknown", "POST", "/cadMedidor", 400, "invalid_value", body=lambda w: {"id": CID, "mode": "smart"}),
    Row("kind is unknown", "GET", "/getConsumoHist", 400, "invalid_value", params={"id": CID, "kind": "W"}),
    Row("kind is missing", "GET", "/getConsumoHist", 400, "missing_field", params={"id": CID}),
    Row("periodo is a word", "GET", "/getFatura", 400, "invalid_number", params={"id": CID, "periodo": "last"}),
    # -- negative and huge values
    Row("negative valor", "POST", R, 400, "negative", body=lambda w: reading(w, valor=-0.001)),
    Row("negative id_medidor", "POST", R, 400, "out_of_range", body=lambda w: reading(w, id_medidor=-1)),
    Row("id_medidor zero", "POST", R, 400, "out_of_range", body=lambda w: reading(w, id_medidor=0)),
    Row("id_medidor 2**31", "POST", R, 400, "out_of_range", body=lambda w: reading(w, id_medidor=2**31)),
    Row("id_medidor 1e999999999 (an exponent past the grammar's bound)", "POST", R, 400, "invalid_number", body=lambda w: reading(w, id_medidor="1e999999999")),
    Row("negative seq", "POST", R, 400, "out_of_range", body=lambda w: reading(w, seq=-1)),
    Row("seq 2**64", "POST", R, 400, "out_of_range", body=lambda w: reading(w, seq=2**64)),
    Row("valor 10**13 kWh", "POST", R, 400, "out_of_range", body=lambda w: reading(w, valor=10**13)),
    Row("valor 1e999999999 as a string", "POST", R, 400, "invalid_number", body=lambda w: reading(w, valor="1e999999999")),
    Row("valor with 4 decimals", "POST", R, 400, "too_precise", body=lambda w: reading(w, valor=102.0001)),
    Row("negative limite_kwh", "POST", "/cadCliente", 400, "negative", body=lambda w: {"id": NEW_CID, "name": "A", "limite_kwh": -5}),
    Row("zero limite_kw", "POST", "/cadCliente", 400, "out_of_range", body=lambda w: {"id": NEW_CID, "name": "A", "limite_kw": 0}),
    Row("negative periodo", "GET", "/getFatura", 400, "out_of_range", params={"id": CID, "periodo": "-1"}),
    Row("periodo 1201 months", "GET", "/getFatura", 400, "out_of_range", params={"id": CID, "periodo": "1201"}),
    Row("periodo 1e999999999", "GET", "/getConsumoHist", 400, "invalid_number", params={"id": CID, "kind": "D", "periodo": "1e999999999"}),
    Row("periodo reaching before year 1", "GET", "/getConsumoHist", 400, "out_of_range", params={"id": CID, "kind": "Y", "periodo": "5000"}),
    # -- timestamps far in the past and the future
    Row("timestamp zero", "POST", R, 400, "timestamp_too_old", body=lambda w: reading(w, timestamp=0)),
    Row("timestamp negative", "POST", R, 400, "timestamp_too_old", body=lambda w: reading(w, timestamp=-1e9)),
    Row("timestamp 1999-12-31T23:59:59Z", "POST", R, 400, "timestamp_too_old", body=lambda w: reading(w, timestamp=946_684_799)),
    Row("timestamp 301 s ahead", "POST", R, 400, "timestamp_in_future", body=lambda w: reading(w, timestamp=w.now + 301 + 60)),
    Row("timestamp in milliseconds", "POST", R, 400, "timestamp_in_future", body=lambda w: reading(w, timestamp=w.now * 1000)),
    Row("timestamp 1e999999999", "POST", R, 400, "invalid_number", body=lambda w: reading(w, timestamp="1e999999999")),
    # -- unknown customer and meter
    Row("reading for an unknown customer", "POST", R, 404, "unknown_customer", body=lambda w: reading(w, id=UNKNOWN_CID)),
    Row("reading for an unknown meter", "POST", R, 404, "unknown_meter", body=lambda w: reading(w, id_medidor=99)),
    Row("meter for an unknown customer", "POST", "/cadMedidor", 404, "unknown_customer", body=lambda w: {"id": UNKNOWN_CID}),
    Row("history of an unknown customer", "GET", "/getConsumoHist", 404, "unknown_customer", params={"id": UNKNOWN_CID, "kind": "M"}),
    Row("history of an unknown meter", "GET", "/getConsumoHist", 404, "unknown_meter", params={"id": CID, "kind": "M", "id_medidor": "7"}),
    Row("bill of an unknown customer", "GET", "/getFatura", 404, "unknown_customer", params={"id": UNKNOWN_CID}),
    Row("meters of an unknown customer", "GET", "/getMedidores", 404, "unknown_customer", params={"id": UNKNOWN_CID}),
    Row("alarm of an unknown number", "POST", "/ackAlarme", 404, "unknown_alarm", body=lambda w: {"id": CID, "alarm_id": 424242}),
    Row("alarms of an unknown customer", "GET", "/getAlarme", 404, "unknown_customer", params={"id": UNKNOWN_CID}),
    Row("alarm_id is a word", "POST", "/ackAlarme", 400, "invalid_number", body=lambda w: {"id": CID, "alarm_id": "first"}),
    Row("alarm_id zero", "POST", "/ackAlarme", 400, "out_of_range", body=lambda w: {"id": CID, "alarm_id": 0}),
    Row("alarm_id missing", "POST", "/ackAlarme", 400, "missing_field", body=lambda w: {"id": CID}),
    Row("negative cursor", "GET", "/getAlarme", 400, "out_of_range", params={"id": CID, "cursor": "-1"}),
    Row("cursor 1e999999999", "GET", "/getAlarme", 400, "invalid_number", params={"id": CID, "cursor": "1e999999999"}),
    # -- duplicate registration and readings that contradict the stored ones
    Row("webhook for an unknown customer", "POST", "/cadWebhook", 404, "unknown_customer", body=lambda w: {"url": "http://127.0.0.1:9/", "id": UNKNOWN_CID}),
    Row("webhook url without a scheme", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": "alarmes.example.com/hook"}),
    Row("webhook url of another scheme", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": "file:///etc/passwd"}),
    Row("webhook url with a password", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": "https://u:p@example.com/"}),
    Row("webhook url with a fragment", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": "https://example.com/#x"}),
    Row("webhook url not ASCII", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": "https://alarmes.exemplo.com/ação"}),
    Row("webhook url is a number", "POST", "/cadWebhook", 400, "invalid_url", body=lambda w: {"url": 8080}),
    Row("webhook url missing", "POST", "/cadWebhook", 400, "missing_field", body=lambda w: {"id": CID}),
    Row("removing an unknown webhook", "POST", "/removeWebhook", 404, "unknown_webhook", body=lambda w: {"webhook_id": 424242}),
    Row("webhook_id zero", "POST", "/removeWebhook", 400, "out_of_range", body=lambda w: {"webhook_id": 0}),
    Row("customer registered twice", "POST", "/cadCliente", 409, "customer_exists", body=lambda w: {"id": CID, "name": "Ana again"}),
    Row("customer registered twice, formatted id", "POST", "/cadCliente", 409, "customer_exists", body=lambda w: {"id": f"{CID[:3]}.{CID[3:6]}.{CID[6:9]}-{CID[9:]}", "name": "Ana"}),
    Row("same timestamp, other value", "POST", R, 409, "conflict", body=lambda w: reading(w, timestamp=w.t1, valor=100.001), sign_of_life=True),
    Row("register lower than an earlier reading", "POST", R, 422, "register_backwards", body=lambda w: reading(w, valor=99), sign_of_life=True),
    Row("register higher than a later reading", "POST", R, 422, "register_backwards", body=lambda w: reading(w, timestamp=w.t1 + 1800, valor=102), sign_of_life=True),
    # -- parameters that contradict each other, routes and methods that do not exist
    Row("query and body disagree", "POST", R, 400, "conflicting_parameter", body=lambda w: reading(w), params={"id_medidor": "2"}),
    Row("query repeats a key with two values", "GET", "/getFatura?id=" + CID + "&id=" + UNKNOWN_CID, 400, "conflicting_parameter"),
    Row("non-UTF-8 query string", "GET", "/getMedidores?id=%FF%FE", 400, "invalid_id"),
    Row("GET on a POST route", "GET", "/cadCliente", 405, "method_not_allowed"),
    Row("DELETE on a GET route", "DELETE", "/getFatura", 405, "method_not_allowed", params={"id": CID}),
    Row("unknown route", "POST", "/cadClientes", 404, "unknown_route", body=lambda w: {"id": NEW_CID, "name": "A"}),
    Row("path traversal", "GET", "/../../etc/passwd", 404, "unknown_route"),
    # -- oversized bodies
    Row("body of 64 KiB + 1 byte", "POST", "/cadCliente", 413, "body_too_large", data=b"{" + b" " * (64 * 1024 - 1) + b"}"),
    Row("body of 512 KiB", "POST", "/cadCliente", 413, "body_too_large", data=json.dumps({"id": NEW_CID, "name": "A", "pad": "x" * 2**19}).encode()),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
@pytest_twisted.ensureDeferred
async def test_bad_request_gets_its_error_and_changes_nothing(world: World, row: Row) -> None:
    server = world.server
    data = row.data_fn(world) if row.data_fn else row.data
    headers = {"Content-Type": row.content_type} if row.content_type and (data is not None or row.body) else {}
    before = dump_store(server.data_dir, except_last_seen=row.sign_of_life)
    status, body, response = await server.call(
        row.method, row.path, token=row.token, json_body=row.body(world) if row.body else None, data=data, params=row.params, headers=headers
    )
    after = dump_store(server.data_dir, except_last_seen=row.sign_of_life)
    assert (status, _code(body)) == (row.status, row.code), body
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
    assert after == before
    path = row.path.partition("?")[0]
    headers_seen = {k.decode().lower(): [v.decode("latin-1") for v in vs] for k, vs in response.headers.getAllRawHeaders()}
    if row.status != 404 or path in ("/postConsumo", "/cadMedidor", "/getConsumoHist", "/getFatura", "/getMedidores", "/getAlarme", "/ackAlarme"):
        assert_documented(path, row.method, status, body, headers_seen)
    if status == 405:
        assert response.headers.getRawHeaders(b"allow")


def _code(body: Any) -> str | None:
    return body["error"]["code"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else None


# -- raw HTTP: what no well-behaved client sends ------------------------------------


def _exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or stops talking)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def _statuses(answer: bytes) -> list[int]:
    return [int(line.split(b" ")[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def _smuggled(token: str) -> bytes:
    """A whole second request that registers NEW_CID, hidden where a body could end."""
    body = json.dumps({"id": NEW_CID, "name": "Smuggled"}).encode()
    return (
        b"POST /cadCliente HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _head(path: bytes, token: str, *lines: bytes) -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


RAW: list[tuple[str, Callable[[str], bytes], int]] = [
    ("two different Content-Length", lambda t: _head(b"/getMedidores", t, b"Content-Length: 2", b"Content-Length: " + str(2 + len(_smuggled(t))).encode()) + b"{}" + _smuggled(t), 400),
    ("Content-Length then chunked", lambda t: _head(b"/getMedidores", t, b"Content-Length: 4", b"Transfer-Encoding: chunked") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("chunked then Content-Length", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: chunked", b"Content-Length: 4") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("Transfer-Encoding twice", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("chunked, identity", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: chunked, identity") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("xchunked with Content-Length", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: xchunked", b"Content-Length: 3") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("space before the colon", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding : chunked", b"Content-Length: 3") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("chunked in a folded line", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: identity", b" chunked", b"Content-Length: 3") + b"0\r\n\r\n" + _smuggled(t), 400),
    ("Content-Length +2", lambda t: _head(b"/getMedidores", t, b"Content-Length: +2") + b"{}", 400),
    ("Content-Length -1", lambda t: _head(b"/getMedidores", t, b"Content-Length: -1") + b"{}", 400),
    ("Content-Length 2, 2", lambda t: _head(b"/getMedidores", t, b"Content-Length: 2, 2") + b"{}", 400),
    ("Content-Length in hex", lambda t: _head(b"/getMedidores", t, b"Content-Length: 0x2") + b"{}", 400),
    ("negative chunk size", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: chunked") + b"-2\r\n{}\r\n0\r\n\r\n", 400),
    ("chunk size with 0x", lambda t: _head(b"/getMedidores", t, b"Transfer-Encoding: chunked") + b"0x2\r\n{}\r\n0\r\n\r\n", 400),
    # Twisted splits lines on CRLF only: what follows a bare LF stays part of one
    # unfinished header line, so the hidden request is never even parsed (0 = no answer yet).
    ("bare LF ending the headers", lambda t: _head(b"/getMedidores", t, b"Content-Length: 2")[:-4] + b"\n\n{}" + _smuggled(t).replace(b"\r\n", b"\n"), 0),
    ("bare LF inside a header line", lambda t: _head(b"/getMedidores", t, b"X-A: 1\nContent-Length: 2") + b"{}" + _smuggled(t), 400),
    ("non-UTF-8 path", lambda t: b"GET /get\xffMedidores HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("NUL in a header", lambda t: _head(b"/cadCliente", t, b"X-Note: a\x00b", b"Content-Length: 2") + b"{}", 400),
    ("non-UTF-8 bearer token", lambda t: b"GET /getMedidores?id=" + CID.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n", 401),
    ("non-UTF-8 JSON body", lambda t: _head(b"/cadCliente", t, b"Content-Length: 26", b"Connection: close") + b'{"id": "\xff\xff", "name": "\xfe\xfe"}', 400),
    ("chunked body over 64 KiB", lambda t: _head(b"/cadCliente", t, b"Transfer-Encoding: chunked", b"Connection: close") + (b"8000\r\n" + b" " * 0x8000 + b"\r\n") * 3 + b"0\r\n\r\n", 413),
]


@pytest.mark.parametrize("make, status", [(m, s) for _, m, s in RAW], ids=[n for n, _, _ in RAW])
@pytest_twisted.ensureDeferred
async def test_raw_http_shapes_are_refused_and_nothing_is_smuggled(world: World, make: Callable[[str], bytes], status: int) -> None:
    server = world.server
    port = int(server.url.rsplit(":", 1)[1])
    before = dump_store(server.data_dir)
    answer = await deferToThread(_exchange, port, make(server.token), 5.0 if status else 0.3)  # no answer: waiting longer only passes more easily
    after = dump_store(server.data_dir)
    # Exactly one answer, the refusal; the hidden second request never ran.
    assert _statuses(answer) == ([status] if status else []), answer[:400]
    assert after == before
    assert NEW_CID.encode() not in answer
    code, _, _ = await server.call("GET", "/getMedidores", params={"id": NEW_CID})
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_a_body_far_over_the_limit_gets_413_and_a_closed_connection(world: World) -> None:
    """Several MB are read and discarded, never buffered; the answer is 413 and the connection closes."""
    server = world.server
    port = int(server.url.rsplit(":", 1)[1])
    before = dump_store(server.data_dir)
    started = time.monotonic()
    answer = await deferToThread(_exchange, port, _head(b"/cadCliente", server.token, b"Content-Length: 4000000") + b" " * 4_000_000, 10.0)
    assert _statuses(answer) == [413]
    assert time.monotonic() - started < 9, "the connection should be closed, not left to time out"
    assert dump_store(server.data_dir) == before
    assert (await server.call("GET", "/health"))[0] == 200


# -- UDP: datagrams are never answered; each bad one is dropped and counted ----------


def _dropped(server: LiveServer, reason: str) -> float:
    return server.core.api.metrics.registry.get_sample_value("meterd_datagrams_dropped_total", {"reason": reason}) or 0.0


UDP: list[tuple[str, Callable[[World], bytes], str]] = [
    ("oversized (1025 bytes, validly signed)", lambda w: sign(json.dumps(reading(w, pad="x" * 1000)).encode()[:1025].ljust(1025), bytes.fromhex(w.key1)), "too_large"),
    ("non-UTF-8 payload, validly signed", lambda w: sign(b"\xff\xfe," + CID.encode() + b",1,1", bytes.fromhex(w.key1)), "not_utf8"),
    ("unsigned CSV", lambda w: f"{CID},1,102,{w.now - 60}".encode(), "unsigned"),
    ("CSV with five fields", lambda w: sign(f"{CID},1,102,{w.now - 60},7".encode(), bytes.fromhex(w.key1)), "bad_csv"),
    ("JSON that does not parse", lambda w: sign(b'{"id": ', bytes.fromhex(w.key1)), "bad_json"),
    ("empty payload", lambda w: sign(b"  ", bytes.fromhex(w.key1)), "empty"),
    ("NaN valor", lambda w: sign(json.dumps(reading(w, valor="NaN")).encode(), bytes.fromhex(w.key1)), "invalid_number"),
    ("infinite timestamp", lambda w: sign(f"{CID},1,102,inf".encode(), bytes.fromhex(w.key1)), "invalid_number"),
    ("negative valor", lambda w: sign(f"{CID},1,-5,{w.now - 60}".encode(), bytes.fromhex(w.key1)), "negative"),
    ("timestamp in 2038", lambda w: sign(f"{CID},1,102,2147483647".encode(), bytes.fromhex(w.key1)), "timestamp_in_future"),
    ("timestamp in 1970", lambda w: sign(f"{CID},1,102,1".encode(), bytes.fromhex(w.key1)), "timestamp_too_old"),
    ("id_medidor 1e999999999", lambda w: sign(f"{CID},1e999999999,102,{w.now - 60}".encode(), bytes.fromhex(w.key1)), "invalid_number"),
    ("unknown meter", lambda w: sign(f"{CID},9,102,{w.now - 60}".encode(), bytes.fromhex(w.key1)), "unknown_meter"),
    ("signed with another meter's key", lambda w: sign(f"{CID},1,102,{w.now - 60}".encode(), bytes.fromhex(w.key2)), "bad_signature"),
]


@pytest.mark.parametrize("make, reason", [(m, r) for _, m, r in UDP], ids=[n for n, _, _ in UDP])
@pytest_twisted.ensureDeferred
async def test_bad_datagram_is_dropped_counted_and_changes_nothing(world: World, make: Callable[[World], bytes], reason: str) -> None:
    server = world.server
    before_rows, before_count = dump_store(server.data_dir), _dropped(server, reason)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(make(world), ("127.0.0.1", server.udp_port))
        async def dropped() -> bool:
            return _dropped(server, reason) > before_count

        await until(dropped, 30)
        assert _dropped(server, reason) == before_count + 1
        await deferLater(reactor, 0.1, lambda: None)  # a flush would have happened by now
        with pytest.raises(BlockingIOError):
            s.recv(2048)  # never answered
    assert dump_store(server.data_dir) == before_rows


@pytest_twisted.ensureDeferred
async def test_the_server_still_takes_good_input_after_all_that(world: World) -> None:
    server = world.server
    status, body, _ = await server.call("POST", "/postConsumo", json_body=reading(world, timestamp=world.now - 30, valor="102.250"))
    assert (status, body) == (201, {"status": "stored"})
    status, body, _ = await server.call("GET", "/getMedidores", params={"id": CID})
    assert status == 200 and body["meters"][0]["last_kwh"] == 102.25
