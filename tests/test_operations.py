"""The operator's operations over HTTP (meterd.web.operations), against a real in-process meterd.

Finding customers (accents, pages across inserts, bad cursors), a customer's
record, changing it (seen by the bill, the alarm rules and the search at
once), the audit log, and retiring and replacing a meter: readings after the
final one refused and counted over HTTP and UDP, the history and the bill
exact to the Wh across the replacement, before and after a restart. Every
answer is held to ``/openapi.json`` (``tests.web_support.call``).
"""

from __future__ import annotations

import json
import socket
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from meterd.datagram import decode_ack, sign
from meterd.taxid import make_cpf
from tests.support import LiveServer, pg_dsn, reset_pg, start_server, until
from tests.web_support import call, local_ts, periods_back

A = make_cpf("529982247")


def cpf(n: int) -> str:
    return make_cpf(f"{300_000_000 + n:09d}")


async def register(server: LiveServer, cid: str, name: str, **fields: Any) -> dict[str, Any]:
    status, body, _ = await call(server, "POST", "/cadCliente", json_body={"id": cid, "name": name, **fields})
    assert status == 201, body
    return body


async def meter(server: LiveServer, cid: str = A, **fields: Any) -> dict[str, Any]:
    status, body, _ = await call(server, "POST", "/cadMedidor", json_body={"id": cid, **fields})
    assert status == 201, body
    return body


async def post(server: LiveServer, meter_id: int, valor: float, ts: float, cid: str = A, token: str | None = "operator") -> tuple[int, Any]:
    status, body, _ = await call(server, "POST", "/postConsumo", token=token,
                                 json_body={"id": cid, "id_medidor": meter_id, "valor": valor, "timestamp": ts})
    return status, body


async def search(server: LiveServer, q: str, **params: Any) -> tuple[int, Any]:
    status, body, _ = await call(server, "GET", "/buscaClientes", params={"q": q, **{k: str(v) for k, v in params.items()}})
    return status, body


def metric(server: LiveServer, name: str, labels: dict[str, str]) -> float:
    return server.core.api.metrics.registry.get_sample_value(name, labels) or 0.0


# -- finding customers ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_names_are_found_without_accents_or_case_and_tax_ids_by_prefix(server: LiveServer) -> None:
    await register(server, A, "João da Conceição")
    await register(server, cpf(1), "Maria Conceição Souza")
    await register(server, cpf(2), "JOANA D'ÁVILA")
    await meter(server)
    status, body = await search(server, "joao")
    assert status == 200 and [(r["id"], r["name"], r["meters"]) for r in body["results"]] == [(A, "João da Conceição", 1)]
    assert body["cursor"] is None and body["q"] == "joao"
    assert [r["name"] for r in (await search(server, "CONCEICAO"))[1]["results"]] == ["João da Conceição", "Maria Conceição Souza"]
    assert [r["name"] for r in (await search(server, "conceição   souza"))[1]["results"]] == ["Maria Conceição Souza"]
    assert [r["name"] for r in (await search(server, "d'avila"))[1]["results"]] == ["JOANA D'ÁVILA"]
    assert [r["id"] for r in (await search(server, "529.982"))[1]["results"]] == [A]
    assert (await search(server, "xavier"))[1] == {"q": "xavier", "results": [], "cursor": None}
    for bad in ("...", "!?", "a b c d e f g"):
        status, body = await search(server, bad)
        assert (status, body["error"]["code"]) == (400, "invalid_value"), bad


@pytest_twisted.ensureDeferred
async def test_search_pages_by_cursor_and_customers_registered_meanwhile_neither_repeat_nor_hide(server: LiveServer) -> None:
    for n in range(0, 30, 2):
        await register(server, cpf(n), f"José {n:02d} Antônio")
    seen: list[str] = []
    behind: set[str] = set()
    ahead: set[str] = set()
    status, body = await search(server, "jose antonio", limite=4)
    while True:
        assert status == 200, body
        seen += [r["name"] for r in body["results"]]
        if body["cursor"] is None:
            break
        last = int(body["results"][-1]["name"].split()[1])
        for n, where in ((last - 1, behind), (last + 3, ahead)):  # one behind the pages, one ahead of them
            name = f"José {n:02d} Antônio"
            if n % 2 and n < 30 and name not in behind | ahead:
                await register(server, cpf(n), name)
                where.add(name)
        status, body = await search(server, "jose antonio", limite=4, cursor=body["cursor"])
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert set(seen) == {f"José {n:02d} Antônio" for n in range(0, 30, 2)} | ahead  # nothing from behind
    assert ahead and behind


@pytest_twisted.ensureDeferred
async def test_a_bad_cursor_is_a_clear_400(server: LiveServer) -> None:
    for n in range(3):
        await register(server, cpf(n), f"Ana {n}")
    _, first = await search(server, "ana", limite=1)
    _, audit, _ = await call(server, "GET", "/getAuditoria", params={"limite": "1"})
    for q, cursor, why in [
        ("ana", "definitely-not-a-cursor", "meterd wrote"),
        ("maria", first["cursor"], "another"),  # another query's
        ("ana", audit["cursor"], "another"),  # another list's
        ("ana", first["cursor"][:-3], ""),
    ]:
        status, body = await search(server, q, cursor=cursor)
        assert (status, body["error"]["code"]) == (400, "invalid_cursor"), (q, cursor)
        assert why in body["error"]["message"]
    status, body, _ = await call(server, "GET", "/getAuditoria", params={"cursor": first["cursor"]})
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")
    assert (await search(server, "ana", limite=1, cursor=first["cursor"]))[0] == 200


# -- a customer's record, and changing it ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_record_shows_the_meters_state_and_the_active_alarms(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", "--silent-after", "0.5")
    try:
        await register(server, A, "Ana", limite_kw=1, tz="America/Manaus")
        await meter(server)
        await meter(server, mode="interval")
        now = time.time()
        assert (await post(server, 1, 0, now - 70))[0] == 201
        assert (await post(server, 1, 0.1, now - 10))[0] == 201  # 6 kW over the limit of 1: a demand alarm
        assert (await post(server, 2, 0.25, now - 5))[0] == 201

        async def demand_raised() -> Any:
            _, body, _ = await call(server, "GET", "/getCliente", params={"id": A})
            return body if any(a["rule"] == "demand" for a in body["active"]) else None

        record = await until(demand_raised)
        assert {k: record[k] for k in ("id", "name", "ligacao", "limite_kw", "limite_kwh", "tz")} == {
            "id": A, "name": "Ana", "ligacao": "mono", "limite_kw": 1.0, "limite_kwh": 1000.0, "tz": "America/Manaus",
        }
        assert record["created_at"].endswith("-04:00")
        one, two = record["meters"]
        assert (one["id_medidor"], one["mode"], one["last_kwh"], one["retired_at"], one["replaced_by"]) == (1, "register", 0.1, None, None)
        assert (two["mode"], two["last_kwh"]) == ("interval", 0.25)  # an interval meter's last interval
        assert [a["id_medidor"] for a in record["active"] if a["rule"] == "demand"] == [1]

        async def silent() -> Any:
            _, body, _ = await call(server, "GET", "/getCliente", params={"id": A})
            return body if all(m["silent"] for m in body["meters"]) else None

        await until(silent)  # nothing heard for --silent-after
        status, body, _ = await call(server, "GET", "/getCliente", params={"id": cpf(9)})
        assert (status, body["error"]["code"]) == (404, "unknown_customer")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_change_is_seen_at_once_by_the_search_the_bill_and_the_alarms(server: LiveServer) -> None:
    await register(server, A, "Ana Souza")
    await meter(server)
    now = time.time()
    for ts, valor in ((now - 70, 0), (now - 10, 0.1)):  # 6 kW
        assert (await post(server, 1, valor, ts))[0] == 201
    _, bill, _ = await call(server, "GET", "/getFatura", params={"id": A})  # cached from now on
    assert (bill["ligacao"], bill["faturado_kwh"], bill["inicio"][-6:]) == ("mono", 30.0, "-03:00")
    status, body, _ = await call(server, "POST", "/alteraCliente", json_body={
        "id": "529.982.247-25", "name": "Ana Luíza Conceição", "ligacao": "tri", "tz": "America/Manaus", "limite_kw": "2.5",
    })
    assert status == 200, body
    assert body == {"id": A, "name": "Ana Luíza Conceição", "ligacao": "tri", "limite_kw": 2.5, "limite_kwh": 1000.0,
                    "tz": "America/Manaus", "changed": ["name", "ligacao", "tz", "limite_kw"]}
    _, bill, _ = await call(server, "GET", "/getFatura", params={"id": A})
    assert (bill["name"], bill["ligacao"], bill["faturado_kwh"], bill["inicio"][-6:]) == ("Ana Luíza Conceição", "tri", 100.0, "-04:00")
    _, alarms, _ = await call(server, "GET", "/getAlarme", params={"id": A})
    assert [(a["rule"], a["threshold"]) for a in alarms["active"]] == [("demand", 2.5)]  # decided before the answer
    assert [r["id"] for r in (await search(server, "conceicao luiza"))[1]["results"]] == [A]
    assert (await search(server, "souza"))[1]["results"] == []
    status, body, _ = await call(server, "POST", "/alteraCliente", json_body={"id": A, "limite_kw": 100})
    assert body["changed"] == ["limite_kw"]
    _, alarms, _ = await call(server, "GET", "/getAlarme", params={"id": A})
    assert alarms["active"] == [] and alarms["events"][-1]["type"] == "cleared"
    status, body, _ = await call(server, "POST", "/alteraCliente", json_body={"id": A, "limite_kw": 100})
    assert (status, body["changed"]) == (200, [])  # the same value again: nothing changed, nothing logged
    status, body, _ = await call(server, "POST", "/alteraCliente", json_body={"id": A})
    assert (status, body["error"]["code"]) == (400, "nothing_to_change")
    for bad, code in (({"tz": "Mars/Olympus"}, "invalid_tz"), ({"ligacao": "quad"}, "invalid_value"), ({"limite_kwh": 0}, "out_of_range")):
        status, body, _ = await call(server, "POST", "/alteraCliente", json_body={"id": A, **bad})
        assert (status, body["error"]["code"]) == (400, code), bad
    status, body, _ = await call(server, "POST", "/alteraCliente", json_body={"id": cpf(9), "name": "x"})
    assert (status, body["error"]["code"]) == (404, "unknown_customer")


# -- the audit log -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_change_is_in_the_audit_log_with_who_from_where_and_when_and_no_secret(server: LiveServer) -> None:
    token = (await register(server, A, "Ana", limite_kwh=500))["token"]
    key = (await meter(server))["key"]
    await register(server, cpf(1), "Bruno")
    status, renewed, _ = await call(server, "POST", "/novoToken", json_body={"id": A})
    status, rekeyed, _ = await call(server, "POST", "/novaChave", json_body={"id": A, "id_medidor": 1})
    await call(server, "POST", "/alteraCliente", json_body={"id": A, "name": "Ana Luíza", "limite_kwh": 600.5})
    now = time.time()
    await post(server, 1, 1.5, now - 60)
    status, _, _ = await call(server, "POST", "/retiraMedidor", json_body={"id": A, "id_medidor": 1, "valor": 2, "timestamp": now - 30})
    assert status == 200
    status, new, _ = await call(server, "POST", "/substituiMedidor", json_body={"id": A, "id_medidor": 1, "valor": 0, "timestamp": now - 20})
    assert status == 201
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, page, _ = await call(server, "GET", "/getAuditoria", params={"id": A, "limite": "3", **({"cursor": cursor} if cursor else {})})
        assert status == 200 and page["id"] == A and len(page["entries"]) <= 3
        entries += page["entries"]
        cursor = page["cursor"]
        if cursor is None:
            break
    ids = [e["audit_id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    assert [(e["action"], e["id_medidor"], e["field"], e["old"], e["new"]) for e in reversed(entries)] == [
        ("customer_registered", None, None, None,
         {"name": "Ana", "ligacao": "mono", "limite_kw": 10.0, "limite_kwh": 500.0, "tz": "America/Sao_Paulo"}),
        ("meter_registered", 1, None, None, {"mode": "register"}),
        ("token_renewed", None, None, None, None),
        ("key_renewed", 1, None, None, None),
        ("customer_updated", None, "name", "Ana", "Ana Luíza"),
        ("customer_updated", None, "limite_kwh", 500.0, 600.5),
        ("meter_retired", 1, None, None, {"timestamp": entries[1]["new"]["timestamp"], "valor": 2.0}),
        ("meter_replaced", 2, None, None,
         {"replaces": 1, "mode": "register", "timestamp": entries[0]["new"]["timestamp"], "valor": 0.0}),
    ]
    assert {(e["who"], e["address"], e["id"]) for e in entries} == {("operator", "127.0.0.1", A)}
    assert all(abs(_epoch(e["at"]) - now) < 60 for e in entries)
    log_text = json.dumps(entries)
    for secret in (token, key, renewed["token"], rekeyed["key"], new["key"]):
        assert secret not in log_text
    _, everyone, _ = await call(server, "GET", "/getAuditoria", params={"limite": "100"})
    assert {e["id"] for e in everyone["entries"]} == {A, cpf(1)} and everyone["id"] is None
    assert len(everyone["entries"]) == len(entries) + 1


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# -- retiring and replacing a meter ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_readings_after_the_final_one_are_refused_and_counted_over_http_and_udp(server: LiveServer) -> None:
    await register(server, A, "Ana")
    key = (await meter(server))["key"]
    now = time.time()
    assert (await post(server, 1, 10, now - 100))[0] == 201
    status, body, _ = await call(server, "POST", "/retiraMedidor", json_body={"id": A, "id_medidor": 1, "valor": "10.5", "timestamp": now - 50})
    assert status == 200 and (body["id_medidor"], body["valor"], body["stored"]) == (1, 10.5, True)
    assert body["timestamp"] == pytest.approx(now - 50, abs=1e-6)
    # over HTTP, with the meter's own key: after the final reading a 422; before it, a late reading as any
    status, body = await post(server, 1, 11, now - 40, token=key)
    assert (status, body["error"]["code"]) == (422, "meter_retired")
    assert (await post(server, 1, 10.2, now - 70, token=key))[0] == 201
    assert metric(server, "meterd_readings_total", {"outcome": "meter_retired"}) == 1
    assert metric(server, "meterd_http_requests_total", {"route": "/postConsumo", "status": "422"}) == 1

    def exchange(*payloads: dict[str, Any]) -> bytes:
        """The payloads in order from one socket: the first answer."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(15)
            for payload in payloads:
                sock.sendto(sign(json.dumps(payload).encode(), bytes.fromhex(key)), ("127.0.0.1", server.udp_port))
            return sock.recv(4096)

    after_final = {"id": A, "id_medidor": 1, "valor": 12, "timestamp": now - 10, "seq": 2}
    late = {"id": A, "id_medidor": 1, "valor": 10.3, "timestamp": now - 60, "seq": 1}
    # over UDP the same: had the reading after the final one been stored, the first ack would carry its seq 2
    assert decode_ack(await deferToThread(exchange, after_final, late), bytes.fromhex(key)) == (A, 1, [1])
    assert metric(server, "meterd_datagrams_dropped_total", {"reason": "meter_retired"}) == 1
    status, body, _ = await call(server, "GET", "/getMedidores", params={"id": A})
    assert body["meters"][0]["last_kwh"] == 10.5  # the final reading is the newest, whatever came after


@pytest_twisted.ensureDeferred
async def test_what_retiring_and_replacing_refuse(server: LiveServer) -> None:
    await register(server, A, "Ana")
    await meter(server)
    await meter(server)
    now = time.time()
    await post(server, 1, 5, now - 100)
    await post(server, 1, 6, now - 80)

    async def retire(meter_id: int, valor: float, ts: float) -> tuple[int, Any]:
        status, body, _ = await call(server, "POST", "/retiraMedidor", json_body={"id": A, "id_medidor": meter_id, "valor": valor, "timestamp": ts})
        return status, body if status == 200 else body["error"]["code"]

    async def replace(meter_id: int, ts: float, **more: Any) -> tuple[int, Any]:
        status, body, _ = await call(server, "POST", "/substituiMedidor",
                                     json_body={"id": A, "id_medidor": meter_id, "valor": 0, "timestamp": ts, **more})
        return status, body if status == 201 else body["error"]["code"]

    assert await retire(1, 5.5, now - 90) == (422, "readings_after_final")
    assert await retire(1, 6.5, now - 80) == (409, "conflict")  # not the value stored at that time
    assert await retire(1, 5.9, now - 70) == (422, "register_backwards")
    assert await retire(1, 6.0, now + 3600) == (400, "timestamp_in_future")
    assert await retire(1, 6.0001, now - 70) == (400, "too_precise")
    assert await retire(3, 6, now - 70) == (404, "unknown_meter")
    assert await replace(2, now) == (409, "not_retired")
    status, body = await retire(1, 6, now - 80)  # its newest reading, as stored
    assert status == 200 and body["stored"] is False
    assert await retire(1, 7, now - 60) == (409, "already_retired")
    assert await replace(1, now - 81) == (422, "before_final_reading")
    status, body = await replace(1, now - 80, mode="interval")
    assert status == 201 and (body["id_medidor"], body["mode"], body["replaces"], len(body["key"])) == (3, "interval", 1, 64)
    assert await replace(1, now) == (409, "already_replaced")
    status, listed, _ = await call(server, "GET", "/getCliente", params={"id": A})
    assert [(m["id_medidor"], m["retired_at"] is not None, m["replaces"], m["replaced_by"]) for m in listed["meters"]] == [
        (1, True, None, 3), (2, False, None, None), (3, False, 1, None),
    ]


def _march(year: int, day: int, hour: int) -> int:
    return local_ts(date(year, 3, 1) + timedelta(days=day - 1), hour)


async def _kwh(server: LiveServer, path: str, **params: Any) -> Any:
    status, body, _ = await call(server, "GET", path, params={"id": A, **{k: str(v) for k, v in params.items()}})
    assert status == 200, body
    return body


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_year_stays_exact_to_the_wh_across_a_replacement_and_a_restart(tmp_path: Path) -> None:
    """Last year's March: meter 1 until noon of the 10th, meter 2 (its register from zero) after, every 6 h."""
    year = date.today().year - 1
    server = await start_server(tmp_path / "data")
    try:
        await register(server, A, "Ana")
        await meter(server)
        times = [_march(year, d, h) for d in range(1, 11) for h in (0, 6, 12, 18)][:-1]  # to the 10th at 12:00
        old = [7_000_000 + sum(1_000 + (i * 7919) % 997 for i in range(n)) for n in range(len(times))]
        for ts, wh in zip(times, old):
            assert (await post(server, 1, wh / 1000, ts))[0] == 201
        old_wh = old[-1]
        status, body, _ = await call(server, "POST", "/retiraMedidor",
                                     json_body={"id": A, "id_medidor": 1, "valor": old_wh / 1000, "timestamp": times[-1]})
        assert (status, body["stored"]) == (200, False)
        status, new, _ = await call(server, "POST", "/substituiMedidor",
                                    json_body={"id": A, "id_medidor": 1, "valor": 0, "timestamp": times[-1]})
        assert status == 201
        later = [_march(year, d, h) for d in range(10, 41) for h in (0, 6, 12, 18) if _march(year, d, h) > times[-1]]
        fresh = dict(zip(later, [sum(800 + (i * 104_729) % 613 for i in range(n + 1)) for n in range(len(later))]))
        for ts, wh in fresh.items():  # to April 9th: a register from zero, far below the old one
            assert (await post(server, 2, wh / 1000, ts, token=new["key"]))[0] == 201
        new_wh = fresh[later[-1]]

        def new_wh_at(ts: int) -> int:
            return fresh[ts]
        measured = (old_wh - old[0]) + new_wh  # every Wh either meter measured; nothing for the swap itself

        async def check() -> None:
            year_hist = await _kwh(server, "/getConsumoHist", kind="Y", periodo=periods_back(date(year, 3, 10), "Y"))
            assert round(year_hist["total_kwh"] * 1000) == measured
            assert sum(round(b["kwh"] * 1000) for b in year_hist["buckets"]) == measured
            assert {m["id_medidor"]: round(m["total_kwh"] * 1000) for m in year_hist["meters"]} == {1: old_wh - old[0], 2: new_wh}
            months = [await _kwh(server, "/getConsumoHist", kind="M", periodo=periods_back(date(year, m, 1), "M")) for m in (3, 4)]
            assert sum(round(h["total_kwh"] * 1000) for h in months) == measured
            day = await _kwh(server, "/getConsumoHist", kind="D", periodo=periods_back(date(year, 3, 10), "D"))
            assert sum(round(b["kwh"] * 1000) for b in day["buckets"]) == round(day["total_kwh"] * 1000)
            assert {m["id_medidor"]: round(m["total_kwh"] * 1000) for m in day["meters"]} == {
                1: old_wh - old[-3], 2: new_wh_at(_march(year, 11, 0)),  # the 10th: meter 1 to noon, meter 2 from noon
            }
            march = await _kwh(server, "/getFatura", periodo=periods_back(date(year, 3, 1), "M"))
            april = await _kwh(server, "/getFatura", periodo=periods_back(date(year, 4, 1), "M"))
            assert round(march["consumo_kwh"] * 1000) + round(april["consumo_kwh"] * 1000) == measured
            assert round(march["consumo_kwh"] * 1000) == round(months[0]["total_kwh"] * 1000)
            assert [m["id_medidor"] for m in march["medidores"]] == [1, 2]

        await check()
        await server.stop()
        server = await start_server(tmp_path / "data")  # a restart: the retirement and the replacement are the store's
        await check()
        status, body = await post(server, 1, old_wh / 1000 + 1, later[-1])
        assert (status, body["error"]["code"]) == (422, "meter_retired")
        assert (await post(server, 2, new_wh / 1000 + 0.5, later[-1] + 3600, token=new["key"]))[0] == 201
    finally:
        await server.stop()


# -- several processes on one PostgreSQL -----------------------------------------------------------

PG = pg_dsn()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason="METERD_TEST_PG is not set: no PostgreSQL to test against (.ci/run starts one)")
@pytest_twisted.ensureDeferred
async def test_a_change_and_a_retirement_made_through_one_process_hold_in_the_other(tmp_path: Path) -> None:
    reset_pg()
    one = await start_server(tmp_path / "one", "--db", PG)
    two = await start_server(tmp_path / "two", "--db", PG)
    try:
        await register(one, A, "Ana")
        await meter(one)
        now = time.time()
        assert (await post(two, 1, 1, now - 100))[0] == 201
        status, _, _ = await call(one, "POST", "/alteraCliente", json_body={"id": A, "name": "Ana Luíza", "limite_kw": 3})
        assert status == 200
        status, _, _ = await call(one, "POST", "/retiraMedidor", json_body={"id": A, "id_medidor": 1, "valor": 2, "timestamp": now - 50})
        assert status == 200
        # at once: the flush in the other process locks the meter's row and finds it retired
        status, body = await post(two, 1, 3, now - 10)
        assert (status, body["error"]["code"]) == (422, "meter_retired")
        assert [r["name"] for r in (await search(two, "luiza"))[1]["results"]] == ["Ana Luíza"]  # the store's words

        async def synced() -> bool:
            customer = two.core.directory.customers.get(A)
            return customer is not None and customer.limit_w == 3_000 and (A, 1) in two.core.directory.retired

        await until(synced, timeout=20)  # within a sync interval (meterd.sync)
        _, record, _ = await call(two, "GET", "/getCliente", params={"id": A})
        assert (record["name"], record["meters"][0]["silent"], record["meters"][0]["retired_at"] is not None) == ("Ana Luíza", False, True)
    finally:
        await one.stop()
        await two.stop()
        await deferLater(reactor, 0, lambda: None)
