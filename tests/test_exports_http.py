"""``/getLeituras`` and ``/getConsumoHist`` as CSV, end to end: readings posted over HTTP come back row by row.

Each customer gets a register meter and an interval meter, readings posted
through ``/postConsumo`` with a gap of two hours among them, and a name with
accents; the expected rows are worked out here from what was posted (not
with meterd's own code) and compared with the CSV, read back with Python's
``csv`` module, and with the JSON pages walked by their cursors.
"""

from __future__ import annotations

import csv
import io
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, AsyncIterator
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from twisted.internet.defer import fail
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from meterd.store.base import StoreError
from meterd.taxid import make_cpf
from meterd.web import exports as web_exports
from tests.support import LiveServer, http_workers_ready, pg_dsn, reset_pg, start_server, until
from tests.web_support import call

# A zone without DST, one with a half-hour offset, and one whose offset changes inside the readings.
ZONES = {"UTC": make_cpf("529982247"), "Asia/Kolkata": make_cpf("168995350"), "America/New_York": make_cpf("111444777")}
OTHER = make_cpf("390533447")
NAME = "José da Conceição Müller"
T0 = int(datetime(2025, 3, 9, 5, 0, tzinfo=UTC).timestamp())  # New York leaves EST for EDT at 07:00 UTC
HEADER = ["id_medidor", "timestamp", "valor_kwh", "consumo_kwh", "estimated"]


@dataclass
class Posted:
    meter: int
    ts: int  # unix seconds
    valor: Decimal  # as posted


def readings() -> list[Posted]:
    """A register meter every 10 minutes with a 2-hour gap, and an interval meter every 15 minutes."""
    register = [T0 + i * 600 for i in range(12)] + [T0 + 11 * 600 + 7200 + i * 600 for i in range(1, 8)]
    out = [Posted(1, ts, Decimal(1000) + Decimal(i * 1237) / 1000) for i, ts in enumerate(register)]
    out += [Posted(2, T0 + 300 + i * 900, Decimal(i % 4 * 125 + 3) / 1000) for i in range(16)]
    return out


def expected_rows(posted: list[Posted], tz: ZoneInfo) -> list[list[str]]:
    """The CSV rows of ``posted``: time then meter order, consumption since the meter's previous reading."""
    rows, last = [], {}
    for p in sorted(posted, key=lambda p: (p.ts, p.meter)):
        if p.meter == 2:
            used, estimated = p.valor, False
        else:
            before = last.get(p.meter)
            used, estimated = (Decimal(0), False) if before is None else (p.valor - before.valor, p.ts - before.ts > 3600)
            last[p.meter] = p
        when = datetime.fromtimestamp(p.ts, tz).isoformat()
        rows.append([str(p.meter), when, f"{p.valor:.3f}", f"{used:.3f}", "true" if estimated else "false"])
    return rows


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str]
    posted: list[Posted]


NO_PG = pytest.mark.skipif(not os.environ.get("METERD_TEST_PG"), reason="METERD_TEST_PG not set: no PostgreSQL to test against")


@pytest_twisted.async_yield_fixture(
    scope="module", params=["reactor", pytest.param("http-workers", marks=pytest.mark.slow), pytest.param("postgresql", marks=NO_PG)]
)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Served by meterd's reactor on SQLite, through an HTTP worker, and on PostgreSQL (with METERD_TEST_PG)."""
    args: tuple[str, ...] = ("--http-workers", "1") if request.param == "http-workers" else ()
    if request.param == "postgresql":
        reset_pg()
        args = ("--db", pg_dsn())
    server = await start_server(tmp_path_factory.mktemp("exports") / "data", *args)
    if request.param == "http-workers":
        await http_workers_ready(server, 1)
    tokens = {}
    for zone, cid in [*ZONES.items(), ("UTC", OTHER)]:
        status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": NAME, "tz": zone})
        assert status == 201, body
        tokens[cid] = body["token"]
        for mode in ("register", "interval"):
            assert (await server.call("POST", "/cadMedidor", json_body={"id": cid, "mode": mode}))[0] == 201
    posted = readings()
    for cid in ZONES.values():
        for p in posted:
            status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": cid, "id_medidor": p.meter, "valor": str(p.valor), "timestamp": p.ts})
            assert status == 201, body
    yield World(server, tokens, posted)
    await server.stop()


async def csv_of(w: World, path: str, params: dict[str, Any], headers: dict[str, str] | None = None, token: str = "operator") -> tuple[list[list[str]], Any]:
    status, body, response = await w.server.call("GET", path, params=params, headers=headers, token=token)
    assert status == 200, body
    assert response.headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
    text = body.decode("utf-8")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    return list(csv.reader(io.StringIO(text, newline=""))), response


@pytest.mark.parametrize("zone", ZONES)
@pytest_twisted.ensureDeferred
async def test_a_csv_export_is_the_readings_posted_row_by_row(world: World, zone: str) -> None:
    cid = ZONES[zone]
    rows, response = await csv_of(world, "/getLeituras", {"id": cid, "format": "csv"})
    expected = expected_rows(world.posted, ZoneInfo(zone))
    assert rows == [HEADER, *expected]
    assert any(r[4] == "true" for r in rows[1:])  # the gap is there, and estimated
    assert response.headers.getRawHeaders(b"x-total-count") == [str(len(expected)).encode()]
    disposition = response.headers.getRawHeaders(b"content-disposition")[0].decode("ascii")
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == f"leituras-José-da-Conceição-Müller-{cid}.csv"
    register = [Decimal(r[3]) for r in rows[1:] if r[0] == "1"]
    assert sum(register) == world.posted[18].valor - world.posted[0].valor  # a spreadsheet's sum is the register's rise


@pytest.mark.parametrize("zone", ZONES)
@pytest_twisted.ensureDeferred
async def test_json_pages_walked_by_their_cursor_hold_the_same_rows(world: World, zone: str) -> None:
    cid, tz = ZONES[zone], ZoneInfo(zone)
    rows, cursor, pages = [], None, 0
    while True:
        status, page, _ = await call(world.server, "GET", "/getLeituras", params={"id": cid, "limite": "7", **({"cursor": cursor} if cursor else {})})
        assert status == 200, page
        assert page["total"] == 35 and page["tz"] == zone and page["inicio"] is None and page["fim"] is None
        rows += [[str(r["id_medidor"]), r["timestamp"], f"{Decimal(str(r['valor_kwh'])):.3f}", f"{Decimal(str(r['consumo_kwh'])):.3f}",
                  "true" if r["estimated"] else "false"] for r in page["leituras"]]
        pages += 1
        cursor = page["cursor"]
        if cursor is None:
            break
    assert pages == 5 and rows == expected_rows(world.posted, tz)


@pytest_twisted.ensureDeferred
async def test_a_period_selects_its_readings_by_the_customers_calendar(world: World) -> None:
    cid, tz = ZONES["Asia/Kolkata"], ZoneInfo("Asia/Kolkata")
    everything = expected_rows(world.posted, tz)
    rows, response = await csv_of(world, "/getLeituras", {"id": cid, "format": "csv", "inicio": "2025-03-09T11:30", "fim": "2025-03-09T13:00:00+05:30"})
    assert rows[1:] == [r for r in everything if "2025-03-09T11:30" <= r[1] < "2025-03-09T13:00"] and len(rows) > 3
    assert response.headers.getRawHeaders(b"x-total-count") == [str(len(rows) - 1).encode()]
    rows, _ = await csv_of(world, "/getLeituras", {"id": cid, "format": "csv", "inicio": "2025-03-09", "fim": "2025-03-09", "id_medidor": "2"})
    assert rows[1:] == [r for r in everything if r[0] == "2"]
    rows, response = await csv_of(world, "/getLeituras", {"id": cid, "format": "csv", "kind": "d", "periodo": "0"})
    assert rows == [HEADER] and response.headers.getRawHeaders(b"x-total-count") == [b"0"]


@pytest.mark.parametrize(
    "params, headers, media",
    [
        ({}, {}, "application/json"),
        ({"format": "csv"}, {}, "text/csv"),
        ({"format": "CSV"}, {"Accept": "application/json"}, "text/csv"),
        ({}, {"Accept": "text/csv"}, "text/csv"),
        ({}, {"Accept": "application/json;q=0.9, text/csv"}, "text/csv"),
        ({"format": "json"}, {"Accept": "text/csv"}, "application/json"),
        ({}, {"Accept": "text/html, */*;q=0.1"}, "application/json"),
    ],
)
@pytest.mark.parametrize("path", ["/getLeituras", "/getConsumoHist"])
@pytest_twisted.ensureDeferred
async def test_csv_is_chosen_by_accept_or_format(world: World, path: str, params: dict[str, str], headers: dict[str, str], media: str) -> None:
    query = {"id": ZONES["UTC"], **({"kind": "Y"} if path == "/getConsumoHist" else {}), **params}
    status, body, response = await world.server.call("GET", path, params=query, headers=headers)
    assert status == 200, body
    assert response.headers.getRawHeaders(b"content-type")[0].decode().startswith(media)
    assert (media == "text/csv") is isinstance(body, bytes)


@pytest_twisted.ensureDeferred
async def test_history_as_csv_is_the_json_history_row_by_row(world: World) -> None:
    cid = ZONES["America/New_York"]
    status, history, _ = await call(world.server, "GET", "/getConsumoHist", params={"id": cid, "kind": "Y", "periodo": "1"})
    assert status == 200
    rows, response = await csv_of(world, "/getConsumoHist", {"id": cid, "kind": "Y", "periodo": "1"}, {"Accept": "text/csv"})
    assert rows[0] == ["start", "end", "kwh", "estimated", "medidor_1_kwh", "medidor_2_kwh"]
    ends = [b["start"] for b in history["buckets"][1:]] + [history["end"]]
    assert [r[:4] for r in rows[1:]] == [
        [b["start"], end, f"{Decimal(str(b['kwh'])):.3f}", "true" if b["estimated"] else "false"] for b, end in zip(history["buckets"], ends)
    ]
    assert sum(Decimal(r[2]) for r in rows[1:]) == Decimal(str(history["total_kwh"]))
    for i, meter in enumerate(history["meters"]):
        assert sum(Decimal(r[4 + i]) for r in rows[1:]) == Decimal(str(meter["total_kwh"]))
    assert response.headers.getRawHeaders(b"x-total-count") == [b"12"]
    assert b"historico-Jos" in response.headers.getRawHeaders(b"content-disposition")[0]


@pytest.mark.parametrize("path", ["/getLeituras", "/getConsumoHist"])
@pytest_twisted.ensureDeferred
async def test_a_customer_exports_their_own_data_and_nobody_elses(world: World, path: str) -> None:
    query = {"format": "csv", **({"kind": "M"} if path == "/getConsumoHist" else {})}
    own = world.tokens[OTHER]
    status, _, _ = await world.server.call("GET", path, params={"id": OTHER, **query}, token=own)
    assert status == 200
    status, body, response = await world.server.call("GET", path, params={"id": ZONES["UTC"], **query}, token=own)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]


@pytest.mark.parametrize(
    "params, status, code",
    [
        ({"kind": "M", "inicio": "2025-01-01"}, 400, "conflicting_parameter"),
        ({"inicio": "2025-02-01", "fim": "2025-01-01"}, 400, "out_of_range"),
        ({"inicio": "ontem"}, 400, "invalid_value"),
        ({"periodo": "1"}, 400, "missing_field"),
        ({"cursor": "x"}, 400, "invalid_value"),
        ({"id_medidor": "9"}, 404, "unknown_meter"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_what_is_wrong_before_the_first_byte_is_an_ordinary_json_error(world: World, params: dict[str, str], status: int, code: str) -> None:
    got, body, _ = await call(world.server, "GET", "/getLeituras", params={"id": ZONES["UTC"], "format": "csv", **params})
    assert (got, body["error"]["code"]) == (status, code)


@pytest_twisted.ensureDeferred
async def test_a_store_that_fails_before_the_first_byte_is_a_503_and_too_many_exports_a_503_busy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    store = world.server.core.store
    monkeypatch.setattr(store, "readings_page", lambda *a: fail(StoreError("down")))
    status, body, _ = await call(world.server, "GET", "/getLeituras", params={"id": ZONES["UTC"], "format": "csv"})
    assert (status, body["error"]["code"]) == (503, "store_unavailable")
    monkeypatch.undo()
    monkeypatch.setattr(web_exports, "MAX_STREAMS", 0)
    status, body, _ = await call(world.server, "GET", "/getLeituras", params={"id": ZONES["UTC"], "format": "csv"})
    assert (status, body["error"]["code"]) == (503, "busy")


def raw_get(url: str, target: str, token: str, method: str = "GET") -> tuple[bytes, bool]:
    """Everything the server sends for one request on its own connection, and whether it closed it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n") and not (method == "HEAD" and b"\r\n\r\n" in data):
            more = sock.recv(65536)
            if not more:
                return data, True
            data += more
    return data, False


@pytest_twisted.ensureDeferred
async def test_a_store_failure_midway_cuts_the_csv_short_and_is_logged(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    store = world.server.core.store
    original = store.readings_page
    calls = [0]

    def readings_page(*args: Any) -> Any:
        calls[0] += 1
        return original(*args) if calls[0] == 1 else fail(StoreError("the disk went away"))

    monkeypatch.setattr(store, "readings_page", readings_page)
    monkeypatch.setattr(web_exports, "PAGE_ROWS", 10)
    metrics = world.server.core.parts.metrics
    cut_before = metrics.exports_cut._value.get()
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        raw, closed = await deferToThread(raw_get, world.server.url, f"/getLeituras?id={ZONES['UTC']}&format=csv", world.server.token)
    finally:
        globalLogPublisher.removeObserver(events.append)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert closed and not body.endswith(b"0\r\n\r\n")  # no terminating chunk: the client knows it is cut
    assert body.count(b"\r\n1,") + body.count(b"\r\n2,") == 10  # the first page's rows, and no more
    assert metrics.exports_cut._value.get() == cut_before + 1 and metrics.exports_streaming._value.get() == 0
    assert any("cut short" in e.get("log_format", "") and e.get("log_failure") for e in events)


@pytest_twisted.ensureDeferred
async def test_head_answers_the_headers_only_and_every_export_ends(world: World) -> None:
    raw, _ = await deferToThread(raw_get, world.server.url, f"/getLeituras?id={ZONES['UTC']}&format=csv", world.server.token, "HEAD")
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"\r\n\r\n") and b"X-Total-Count: 35" in raw
    streaming = world.server.core.parts.metrics.exports_streaming._value

    async def ended() -> bool:  # at once on meterd's port; through a worker, once its "cancel" comes
        return streaming.get() == 0

    await until(ended)


@pytest_twisted.ensureDeferred
async def test_every_export_gives_its_place_back_however_it_ends(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    exports_ = next(group for _, handler in world.server.core.api.routes.values() if isinstance(group := getattr(handler, "__self__", None), web_exports.Exports))
    await csv_of(world, "/getLeituras", {"id": ZONES["UTC"], "format": "csv"})
    await deferToThread(raw_get, world.server.url, f"/getLeituras?id={ZONES['UTC']}&format=csv", world.server.token, "HEAD")
    monkeypatch.setattr(world.server.core.store, "count_readings", lambda *a: fail(StoreError("down")))
    assert (await world.server.call("GET", "/getLeituras", params={"id": ZONES["UTC"], "format": "csv"}))[0] == 503
    monkeypatch.undo()

    async def none_open() -> bool:
        return exports_.open == 0

    await until(none_open)
