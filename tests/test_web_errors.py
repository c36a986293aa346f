"""Every error of DESIGN §3: bad input of every kind gets a 4xx with its code,
is documented in the OpenAPI document, and changes nothing in the store;
never a 500."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from meterd.taxid import make_cpf
from tests.support import LiveServer, start_server
from tests.web_support import SAO_PAULO, call, dump_store, local_ts, raw_exchange, yesterday

CPF = "12345678909"
UNKNOWN_CPF = make_cpf("987654321")
DAY = yesterday()
T10 = local_ts(DAY, 10)
T12 = local_ts(DAY, 12)


@pytest_twisted.async_yield_fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """One seeded server for the tests whose requests must change nothing (each checks that it did not)."""
    server = await start_server(tmp_path_factory.mktemp("errors") / "data")
    await seed(server)
    yield server
    await server.stop()


async def seed(server: LiveServer) -> dict[str, Any]:
    """A customer with a register meter (readings at 10:00 and 12:00 yesterday) and an interval meter."""
    status, customer, _ = await call(server, "POST", "/cadCliente", json_body={"id": CPF, "name": "Ana"})
    assert status == 201
    keys = []
    for mode in ("register", "interval"):
        status, meter, _ = await call(server, "POST", "/cadMedidor", json_body={"id": CPF, "mode": mode})
        assert status == 201
        keys.append(meter["key"])
    for ts, valor in ((T10, 100), (T12, 110)):
        status, _, _ = await call(server, "POST", "/postConsumo", json_body={"id": CPF, "id_medidor": 1, "valor": valor, "timestamp": ts})
        assert status == 201
    return {"token": customer["token"], "keys": keys}


def reading(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": CPF, "id_medidor": 1, "valor": 105, "timestamp": local_ts(DAY, 11)}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()

# (method, path, call kwargs, expected status, expected code)
BAD_READINGS = [
    ({"data": b'{"id": "12345678909", "valor": ', "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
    ({"data": b"{'id': 1}"}, 400, "malformed_json"),
    ({"data": b"[1, 2, 3]"}, 400, "malformed_json"),
    ({"data": b'{"valor": NaN}'}, 400, "malformed_json"),
    ({"data": b'{"valor": Infinity}'}, 400, "malformed_json"),
    ({"data": b"\xff\xfe{"}, 415, "unsupported_media_type"),
    ({"data": b"{\xff\xfe}"}, 400, "malformed_json"),
    ({"data": b"id=12345678909&valor=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
    ({"data": b"<reading/>", "headers": {"Content-Type": "application/xml"}}, 415, "unsupported_media_type"),
    ({"data": b'"just a string"'}, 415, "unsupported_media_type"),
    ({"json_body": reading(valor="NaN")}, 400, "invalid_number"),
    ({"data": b'{"id": "12345678909", "id_medidor": 1, "valor": 1e400, "timestamp": 1700000000}'}, 400, "not_finite"),
    ({"json_body": reading(valor="-Infinity")}, 400, "invalid_number"),
    ({"json_body": reading(valor=-1)}, 400, "negative"),
    ({"json_body": reading(valor="-0.001")}, 400, "negative"),
    ({"json_body": reading(valor=True)}, 400, "invalid_type"),
    ({"json_body": reading(valor=[1])}, 400, "invalid_type"),
    ({"json_body": reading(valor={"kwh": 1})}, 400, "invalid_type"),
    ({"json_body": reading(valor="abc")}, 400, "invalid_number"),
    ({"json_body": reading(valor=105.0001)}, 400, "too_precise"),
    ({"json_body": reading(valor=1e13)}, 400, "out_of_range"),
    ({"json_body": reading(valor=DROP)}, 400, "missing_field"),
    ({"json_body": reading(valor=None)}, 400, "missing_field"),
    ({"json_body": reading(valor="")}, 400, "missing_field"),
    ({"json_body": reading(id_medidor=0)}, 400, "out_of_range"),
    ({"json_body": reading(id_medidor=-1)}, 400, "out_of_range"),
    ({"json_body": reading(id_medidor=1.5)}, 400, "invalid_integer"),
    ({"json_body": reading(id_medidor="one")}, 400, "invalid_number"),
    ({"json_body": reading(id_medidor=2**31)}, 400, "out_of_range"),
    ({"json_body": reading(id_medidor="1e999999999")}, 400, "invalid_number"),  # never built as an int
    ({"json_body": reading(seq="9e999999999")}, 400, "invalid_number"),
    ({"json_body": reading(valor="1e999999999")}, 400, "invalid_number"),
    ({"json_body": reading(timestamp="1e999999999")}, 400, "invalid_number"),
    ({"json_body": reading(timestamp="-1e999999999")}, 400, "invalid_number"),
    ({"json_body": reading(id_medidor=DROP)}, 400, "missing_field"),
    ({"json_body": reading(id_medidor=9)}, 404, "unknown_meter"),
    ({"json_body": reading(id=UNKNOWN_CPF)}, 404, "unknown_customer"),
    ({"json_body": reading(id="123.456.789-00")}, 400, "invalid_id"),
    ({"json_body": reading(id="111.111.111-11")}, 400, "invalid_id"),
    ({"json_body": reading(id=123)}, 400, "invalid_id"),
    ({"json_body": reading(id=True)}, 400, "invalid_id"),
    ({"json_body": reading(id=["12345678909"])}, 400, "invalid_id"),
    ({"json_body": reading(id=DROP)}, 400, "missing_field"),
    ({"json_body": reading(timestamp="soon")}, 400, "invalid_number"),
    ({"json_body": reading(timestamp=946_684_799)}, 400, "timestamp_too_old"),
    ({"json_body": reading(timestamp=-1)}, 400, "timestamp_too_old"),
    ({"json_body": reading(timestamp=DROP)}, 400, "missing_field"),
    ({"json_body": reading(seq=-1)}, 400, "out_of_range"),
    ({"json_body": reading(seq="x")}, 400, "invalid_number"),
    ({"json_body": reading(seq=2**63)}, 400, "out_of_range"),
    ({"json_body": reading(valor=101, timestamp=T10)}, 409, "conflict"),
    ({"json_body": reading(valor=99)}, 422, "register_backwards"),
    ({"json_body": reading(valor=111)}, 422, "register_backwards"),
    ({"json_body": reading(), "params": {"id_medidor": "2"}}, 400, "conflicting_parameter"),
    ({"json_body": reading(id_medidor=DROP), "params": [("id_medidor", "1"), ("id_medidor", "2")]}, 400, "conflicting_parameter"),
]


@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_READINGS, ids=[f"{c}-{i}" for i, (_, _, c) in enumerate(BAD_READINGS)])
@pytest_twisted.ensureDeferred
async def test_bad_readings_are_refused_and_change_nothing(seeded: LiveServer, kwargs: dict[str, Any], status: int, code: str) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    refused_reading = code in ("conflict", "register_backwards")  # well-formed: its meter was seen
    before = dump_store(server.data_dir, except_last_seen=refused_reading)
    got, body, _ = await call(server, "POST", "/postConsumo", **kwargs)
    assert (got, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"]
    assert dump_store(server.data_dir, except_last_seen=refused_reading) == before


@pytest_twisted.ensureDeferred
async def test_future_timestamp_is_refused(server: LiveServer) -> None:
    await seed(server)
    before = dump_store(server.data_dir)
    for ahead in (400, 86400 * 365):
        status, body, _ = await call(server, "POST", "/postConsumo", json_body=reading(valor=120, timestamp=time.time() + ahead))
        assert (status, body["error"]["code"]) == (400, "timestamp_in_future")
    assert dump_store(server.data_dir) == before
    # a little in the future (clock skew) is accepted
    status, _, _ = await call(server, "POST", "/postConsumo", json_body=reading(valor=120, timestamp=time.time() + 60))
    assert status == 201


BAD_QUERIES = [
    ("POST", "/cadCliente", {"json_body": {"id": CPF, "name": "Ana"}}, 409, "customer_exists"),
    ("POST", "/cadCliente", {"json_body": {"id": "123.456.789-09", "name": "Ana again"}}, 409, "customer_exists"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF}}, 400, "missing_field"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": 5}}, 400, "invalid_type"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "A\x00B"}}, 400, "invalid_value"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "A" * 201}}, 400, "invalid_value"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "ligacao": "quad"}}, 400, "invalid_value"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "tz": "Mars/Base"}}, 400, "invalid_tz"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "tz": "../../etc/passwd"}}, 400, "invalid_tz"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "limite_kw": -1}}, 400, "negative"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "limite_kwh": 0}}, 400, "out_of_range"),
    ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B", "limite_kwh": "NaN"}}, 400, "invalid_number"),
    ("POST", "/cadCliente", {"json_body": {"id": "00000000000", "name": "B"}}, 400, "invalid_id"),
    ("POST", "/cadMedidor", {"json_body": {"id": UNKNOWN_CPF}}, 404, "unknown_customer"),
    ("POST", "/cadMedidor", {"json_body": {"id": CPF, "mode": "cumulative"}}, 400, "invalid_value"),
    ("POST", "/cadMedidor", {"json_body": {}}, 400, "missing_field"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF}}, 400, "missing_field"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "W"}}, 400, "invalid_value"),
    ("GET", "/getConsumoHist", {"json_body": {"id": CPF, "kind": 5}}, 400, "invalid_type"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "M", "periodo": "-1"}}, 400, "out_of_range"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "M", "periodo": "1.5"}}, 400, "invalid_integer"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "M", "periodo": "NaN"}}, 400, "invalid_number"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "Y", "periodo": "10001"}}, 400, "out_of_range"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "Y", "periodo": "10000"}}, 400, "out_of_range"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "D", "id_medidor": "7"}}, 404, "unknown_meter"),
    ("GET", "/getConsumoHist", {"params": {"id": UNKNOWN_CPF, "kind": "D"}}, 404, "unknown_customer"),
    ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "D"}, "json_body": {"kind": "M"}}, 400, "conflicting_parameter"),
    ("GET", "/getFatura", {"params": {"id": CPF, "periodo": "1201"}}, 400, "out_of_range"),
    ("GET", "/getFatura", {"params": {"id": CPF, "periodo": "1e999999999"}}, 400, "invalid_number"),
    ("GET", "/getFatura", {"json_body": {"id": CPF, "periodo": "last"}}, 400, "invalid_number"),
    ("GET", "/getFatura", {"json_body": {"id": CPF, "periodo": [0]}}, 400, "invalid_type"),
    ("GET", "/getFatura", {"params": {"id": UNKNOWN_CPF}}, 404, "unknown_customer"),
    ("GET", "/getFatura", {}, 400, "missing_field"),
    ("GET", "/getMedidores", {"params": {"id": UNKNOWN_CPF}}, 404, "unknown_customer"),
    ("GET", "/getMedidores", {"params": {"id": "abc"}}, 400, "invalid_id"),
    ("GET", "/getAlarme", {"params": {"id": UNKNOWN_CPF}}, 404, "unknown_customer"),
    ("POST", "/ackAlarme", {"json_body": {"id": UNKNOWN_CPF, "alarm_id": 1}}, 404, "unknown_customer"),
    ("GET", "/cadCliente", {"params": {"id": CPF, "name": "X"}}, 405, "method_not_allowed"),
    ("POST", "/getFatura", {"json_body": {"id": CPF}}, 405, "method_not_allowed"),
    ("DELETE", "/getMedidores", {"params": {"id": CPF}}, 405, "method_not_allowed"),
    ("PUT", "/postConsumo", {"json_body": reading()}, 405, "method_not_allowed"),
    ("POST", "/health", {}, 405, "method_not_allowed"),
    ("GET", "/nope", {}, 404, "unknown_route"),
    ("POST", "/", {}, 404, "unknown_route"),  # a browser's GET / goes to the web portal
    ("POST", "/postconsumo", {"json_body": reading()}, 404, "unknown_route"),
    ("GET", "/getFatura/../cadCliente", {}, 404, "unknown_route"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"), BAD_QUERIES, ids=[f"{m}{p}-{c}-{i}" for i, (m, p, _, _, c) in enumerate(BAD_QUERIES)]
)
@pytest_twisted.ensureDeferred
async def test_bad_requests_get_their_code_and_change_nothing(
    seeded: LiveServer, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    before = dump_store(server.data_dir)
    got, body, response = await call(server, method, path, **kwargs)
    assert (got, body["error"]["code"]) == (status, code), body
    if status == 405:
        allow = response.headers.getRawHeaders("allow")[0]
        assert method not in allow.split(", ")
        assert server.core.api.routes[path][0].method in allow.split(", ")
    assert dump_store(server.data_dir) == before


@pytest_twisted.ensureDeferred
async def test_body_limit(server: LiveServer) -> None:
    await seed(server)
    before = dump_store(server.data_dir)
    padding = "x" * (64 * 1024)
    for size_body in (
        json.dumps({"id": CPF, "name": padding}).encode(),  # just over 64 KiB
        b"{" + b" " * 1_000_000 + b"}",  # 1 MB
    ):
        status, body, _ = await call(server, "POST", "/cadCliente", data=size_body, headers={"Content-Type": "application/json"})
        assert (status, body["error"]["code"]) == (413, "body_too_large")
    # exactly 64 KiB is still accepted
    name = "B" * 100
    exact = json.dumps({"id": UNKNOWN_CPF, "name": name}).encode()
    exact = exact[:-1] + b" " * (64 * 1024 - len(exact)) + b"}"
    assert len(exact) == 64 * 1024
    status, body, _ = await call(server, "POST", "/cadCliente", data=exact, headers={"Content-Type": "application/json"})
    assert status == 201, body
    after = dump_store(server.data_dir)
    assert after["customers"] != before["customers"]
    # a GET with a large body is refused the same way
    status, body, _ = await call(server, "GET", "/getFatura", data=b"{" + b" " * 70_000 + b"}")
    assert status == 413


@pytest_twisted.ensureDeferred
async def test_a_several_megabyte_body_still_gets_413_not_a_cut_connection(seeded: LiveServer) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    before = dump_store(server.data_dir)
    body = b'{"id": "' + b"1" * (5 * 1024 * 1024) + b'"}'
    status, answer, _ = await call(server, "POST", "/cadCliente", data=body, headers={"Content-Type": "application/json"})
    assert (status, answer["error"]["code"]) == (413, "body_too_large")
    assert dump_store(server.data_dir) == before


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit(seeded: LiveServer) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    before = dump_store(server.data_dir)
    host = server.url.removeprefix("http://")
    chunk = b"{" + b" " * 9_998 + b"}"

    def chunked(n: int) -> bytes:
        head = (
            f"POST /cadCliente HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(n))
        return head + body + b"0\r\n\r\n"

    status, headers, body = await deferToThread(raw_exchange, server.url, chunked(8))  # 80 kB
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert dump_store(server.data_dir) == before
    # a client that keeps sending far past the limit is cut off rather than read forever
    status, _, _ = await deferToThread(raw_exchange, server.url, chunked(200))  # 2 MB
    assert status in (0, 413)
    status, health, _ = await call(server, "GET", "/health", token=None)
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_store_unavailable_is_503_not_500(server: LiveServer) -> None:
    await seed(server)
    await server.core.store.stop()
    status, health, _ = await call(server, "GET", "/health", token=None)
    assert (status, health) == (503, {"status": "degraded", "db": "unavailable"})
    for method, path, kwargs in (
        ("GET", "/getFatura", {"params": {"id": CPF}}),
        ("GET", "/getConsumoHist", {"params": {"id": CPF, "kind": "D"}}),
        ("GET", "/getMedidores", {"params": {"id": CPF}}),
        ("POST", "/postConsumo", {"json_body": reading(valor=120, timestamp=time.time() - 5)}),
        ("POST", "/cadCliente", {"json_body": {"id": UNKNOWN_CPF, "name": "B"}}),
        ("POST", "/cadMedidor", {"json_body": {"id": CPF}}),
    ):
        status, body, _ = await call(server, method, path, **kwargs)
        assert (status, body["error"]["code"]) == (503, "store_unavailable"), (path, body)


FUZZ_BODIES = [
    b"{}", b"{ }", b"null", b"true", b"0", b"[]", b"{\"id\": {}}", b"{\"id\": null}", b"{\"id\": 1e999}",
    b"{\"id\": \"" + b"1" * 5000 + b"\"}", b"{\"id\": " + b"1" * 5000 + b"}", b"[" * 10_000 + b"]" * 10_000,
    b"{\"a\":" * 5000 + b"1" + b"}" * 5000, b"\x00\x01\x02", "{\"id\": \"\u00e9\u4e2d\"}".encode(), b"{\"id\": \"\\ud800\"}",
    b"\xef\xbb\xbf{\"id\": \"12345678909\"}",
]


@pytest.mark.parametrize("path", ["/cadCliente", "/cadMedidor", "/postConsumo", "/getConsumoHist", "/getFatura", "/getMedidores", "/getAlarme", "/ackAlarme"])
@pytest_twisted.ensureDeferred
async def test_junk_is_never_a_500(seeded: LiveServer, path: str) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    before = dump_store(server.data_dir)
    method = server.core.api.routes[path][0].method
    for junk in FUZZ_BODIES:
        status, body, _ = await call(server, method, path, data=junk, headers={"Content-Type": "application/json"})
        assert 400 <= status < 500, (junk[:40], status, body)
        assert body["error"]["code"], body
    for query in ({"id": "\x00"}, {"id": "1" * 3000}, {"id": ""}, [("id", CPF), ("id", UNKNOWN_CPF)]):
        status, body, _ = await call(server, method, path, params=query)
        assert 400 <= status < 500, (query, status, body)
    assert dump_store(server.data_dir) == before


def test_every_status_meterd_sends_has_its_standard_reason_phrase() -> None:
    from meterd.web.exchange import reason
    from meterd.web.app import openapi_document

    statuses = {int(s) for path in openapi_document()["paths"].values() for op in path.values() for s in op["responses"]}
    assert {200, 201, 400, 401, 403, 404, 413, 422, 503} <= statuses
    assert all(reason(s) != b"Unknown Status" for s in statuses)
    assert (reason(413), reason(414), reason(422), reason(431)) == (
        b"Content Too Large", b"URI Too Long", b"Unprocessable Content", b"Request Header Fields Too Large",
    )


@pytest_twisted.ensureDeferred
async def test_a_422_goes_out_with_its_reason_phrase(seeded: LiveServer) -> None:
    server = seeded  # shared by the module: every request here changes nothing
    body = json.dumps({"id": CPF, "id_medidor": 1, "valor": 105, "timestamp": T12 + 60}).encode()  # below 110: backwards
    host = server.url.removeprefix("http://")
    request = (f"POST /postConsumo HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.token}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    def status_line() -> bytes:
        import socket

        with socket.create_connection(("127.0.0.1", int(host.rpartition(":")[2])), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.partition(b"\r\n")[0]

    assert await deferToThread(status_line) == b"HTTP/1.1 422 Unprocessable Content"


@pytest.mark.parametrize(("kind", "back", "allowed"), [("Y", 56, True), ("Y", 57, False), ("Y", 2025, False), ("M", 56 * 12 + 11, True), ("M", 57 * 12 + 11, False)])
@pytest_twisted.ensureDeferred
async def test_no_period_before_1970(seeded: LiveServer, kind: str, back: int, allowed: bool) -> None:
    """A period that starts before 1970 gets a clear 400, never the year 0001 with a local mean time offset."""
    server = seeded  # shared by the module: every request here changes nothing
    now = datetime.now(SAO_PAULO)  # the customer's calendar
    back += now.year - 2026  # the bound is a calendar year, whatever year the test runs in
    if kind == "M":
        back += now.month - 12
    status, body, _ = await call(server, "GET", "/getConsumoHist", params={"id": CPF, "kind": kind, "periodo": str(back)})
    if allowed:
        assert status == 200 and body["start"].startswith("1970-01-01T00:00:00"), body
    else:
        assert (status, body["error"]["code"]) == (400, "out_of_range") and "1970" in body["error"]["message"]
    if kind == "M":
        status, body, _ = await call(server, "GET", "/getFatura", params={"id": CPF, "periodo": str(back)})
        assert status == (200 if allowed else 400), body
