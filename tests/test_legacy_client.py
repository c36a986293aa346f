"""The exact bytes the assignment's interface client sends: a GET with a
tab-indented JSON body and a Content-Length, over a plain socket, in
``--no-auth`` mode; and the same requests with a Bearer token with auth on."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support import LiveServer
from tests.web_support import SAO_PAULO, assert_documented, raw_exchange

CPF = "12345678909"


def legacy_request(method: str, path: str, host: str, body: str, token: str | None = None) -> bytes:
    """Byte for byte what the interface client writes (plus Authorization when given)."""
    payload = body.encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: insomnia/2023.5.8",
        "Content-Type: application/json",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += ["Accept: */*", f"Content-Length: {len(payload)}", "", ""]
    return "\r\n".join(lines).encode() + payload


def tab_json(fields: list[tuple[str, Any]]) -> str:
    """``{\\n\\t"id":"12345678909",\\n\\t"id_medidor":1\\n}``, the client's layout."""
    return "{\n" + ",\n".join(f"\t{json.dumps(k)}:{json.dumps(v)}" for k, v in fields) + "\n}"


async def send(server: LiveServer, method: str, path: str, body: str, token: str | None = None) -> tuple[int, Any]:
    host = server.url.removeprefix("http://")
    status, headers, raw = await deferToThread(raw_exchange, server.url, legacy_request(method, path, host, body, token))
    assert headers["content-type"] == "application/json; charset=utf-8"
    decoded = json.loads(raw)
    assert_documented(path, method, status, decoded, {name: [value] for name, value in headers.items()})
    return status, decoded


def this_morning() -> tuple[int, int]:
    """Two timestamps in the past (or a second ahead, within the 300 s allowance),
    today in São Paulo: in the current day, month and year whatever the hour."""
    now = time.time()
    midnight = datetime.now(SAO_PAULO).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    first = int(max(midnight + 1, now - 3 * 3600))
    return first, first + 1


HIST_BODY = '{\n\t"id":"12345678909",\n\t"id_medidor":1,\n\t"kind":"M",\n\t"periodo":0\n}'


@pytest_twisted.ensureDeferred
async def test_the_assignment_client_bytes_in_no_auth_mode(open_server: LiveServer) -> None:
    server = open_server
    assert HIST_BODY == tab_json([("id", CPF), ("id_medidor", 1), ("kind", "M"), ("periodo", 0)])
    status, customer = await send(server, "POST", "/cadCliente", tab_json([("id", CPF), ("name", "Fulano")]))
    assert (status, customer["id"]) == (201, CPF)
    status, meter = await send(server, "POST", "/cadMedidor", tab_json([("id", CPF)]))
    assert (status, meter["id_medidor"], meter["mode"]) == (201, 1, "interval")
    t1, t2 = this_morning()
    for ts, valor in ((t1, 1.25), (t2, 2.5)):
        status, answer = await send(server, "POST", "/postConsumo",
                                    tab_json([("id", CPF), ("id_medidor", 1), ("valor", valor), ("timestamp", ts)]))
        assert (status, answer) == (201, {"status": "stored"})

    status, hist = await send(server, "GET", "/getConsumoHist", HIST_BODY)
    assert status == 200
    assert (hist["id"], hist["kind"], hist["periodo"]) == (CPF, "M", 0)
    assert hist["total_kwh"] == 3.75  # interval meter: the readings' sum
    assert hist["meters"] == [{"id_medidor": 1, "total_kwh": 3.75}]
    assert [b["kwh"] for b in hist["buckets"] if b["kwh"]] == [3.75]
    assert hist["buckets"][datetime.fromtimestamp(t1, SAO_PAULO).day - 1]["kwh"] == 3.75

    status, bill = await send(server, "GET", "/getFatura", tab_json([("id", CPF), ("periodo", 0)]))
    assert (status, bill["consumo_kwh"], bill["status"]) == (200, 3.75, "previa")
    status, meters = await send(server, "GET", "/getMedidores", tab_json([("id", CPF)]))
    assert (status, meters["meters"][0]["last_kwh"]) == (200, 2.5)

    # the id_medidor as a string, the other way the client writes it
    status, same = await send(server, "GET", "/getConsumoHist", HIST_BODY.replace('"id_medidor":1', '"id_medidor":"1"'))
    assert (status, same) == (200, hist)
    # and errors keep the JSON shape for it too
    status, error = await send(server, "GET", "/getConsumoHist", HIST_BODY.replace('"kind":"M"', '"kind":"Q"'))
    assert (status, error["error"]["code"]) == (400, "invalid_value")


@pytest_twisted.ensureDeferred
async def test_the_same_bytes_with_a_bearer_token(server: LiveServer) -> None:
    status, customer = await send(server, "POST", "/cadCliente", tab_json([("id", CPF), ("name", "Fulano")]), server.token)
    assert status == 201
    status, meter = await send(server, "POST", "/cadMedidor", tab_json([("id", CPF)]), server.token)
    assert (status, meter["mode"]) == (201, "register")
    t1, t2 = this_morning()
    for ts, register in ((t1, 1000.5), (t2, 1003.25)):
        body = tab_json([("id", CPF), ("id_medidor", 1), ("valor", register), ("timestamp", ts)])
        status, answer = await send(server, "POST", "/postConsumo", body, meter["key"])
        assert status == 201, answer

    status, hist = await send(server, "GET", "/getConsumoHist", HIST_BODY, customer["token"])
    assert status == 200
    assert hist["total_kwh"] == 2.75  # register meter: 1003.25 - 1000.5
    status, by_operator = await send(server, "GET", "/getConsumoHist", HIST_BODY, server.token)
    assert (status, by_operator) == (200, hist)

    status, error = await send(server, "GET", "/getConsumoHist", HIST_BODY)
    assert (status, error["error"]["code"]) == (401, "unauthorized")
    status, error = await send(server, "GET", "/getConsumoHist", HIST_BODY, meter["key"])
    assert (status, error["error"]["code"]) == (403, "forbidden")
