"""The billing run over HTTP (issue 30): issued bills are immutable, late readings become
adjustments on the next bill, every required field is there, and runs issue each bill once.

Each test runs on SQLite and, when ``METERD_TEST_PG`` names a database, on PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import orjson
import pytest
import pytest_twisted

from meterd import arrecadacao, periods, pix
from meterd.billing import Rates, price
from meterd.tariff import default_tariff
from meterd.taxid import make_cpf
from meterd.web.app import openapi_document
from tests.support import LiveServer, pg_dsn, reset_pg, start_server, until
from tests.web_support import call, schema_errors

SP = ZoneInfo("America/Sao_Paulo")
HOUR_MS = 3_600_000
CID = make_cpf("246813579")


NO_PG = pytest.mark.skipif(not os.environ.get("METERD_TEST_PG"), reason="METERD_TEST_PG not set")


@pytest_twisted.async_yield_fixture(params=["sqlite", pytest.param("postgresql", marks=NO_PG)])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """meterd on SQLite, then on PostgreSQL (an empty schema)."""
    args: tuple[str, ...] = ()
    if request.param == "postgresql":
        reset_pg()
        args = ("--db", pg_dsn())
    live = await start_server(tmp_path / "data", *args)
    yield live
    await live.stop()


def month_back(server: LiveServer, n: int) -> tuple[str, int, int]:
    """(referencia, start ms, end ms) of the month ``n`` months back in São Paulo."""
    now = int(server.core.api.clock.seconds() * 1000)
    year, month = periods.months_back(now, SP, n)
    start, end = periods.month_range(year, month, SP)
    return f"{year:04d}-{month:02d}", start, end


async def customer(server: LiveServer, cid: str = CID, ligacao: str = "bi") -> str:
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": "Caio Ñandú", "ligacao": ligacao})
    assert status == 201, body
    status, body, _ = await server.call("POST", "/cadMedidor", json_body={"id": cid})
    assert status == 201, body
    return str(body["key"])


async def reading(server: LiveServer, ms: int, kwh: str, cid: str = CID, meter: int = 1) -> None:
    status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": cid, "id_medidor": meter, "valor": kwh, "timestamp": ms / 1000})
    assert status == 201, body


async def run(server: LiveServer, periodo: int) -> dict[str, Any]:
    """Start a run and wait until it is over; its final state."""
    status, started, _ = await call(server, "POST", "/faturamento", json_body={"periodo": periodo})
    assert status == 202, started

    async def over() -> dict[str, Any] | None:
        status, state, _ = await call(server, "GET", "/getFaturamento", params={"execucao": started["execucao"]})
        assert status == 200
        return state if state["estado"] != "executando" else None

    done: dict[str, Any] = await until(over)
    assert done["estado"] == "concluida", done
    return done


async def bill_bytes(server: LiveServer, periodo: int, cid: str = CID) -> bytes:
    status, body, response = await server.call("GET", "/getFatura", params={"id": cid, "periodo": periodo})
    assert status == 200, body
    raw: bytes = await response.content()
    return raw


def rates_of(referencia: str, ligacao: str = "bi") -> Rates:
    year, month = (int(x) for x in referencia.split("-"))
    return Rates.of(default_tariff(), ligacao, year, month)


@pytest_twisted.ensureDeferred
async def test_a_late_reading_leaves_the_issued_bill_byte_identical_and_the_next_bill_carries_the_exact_adjustment(server: LiveServer) -> None:
    await customer(server)
    ref3, start3, end3 = month_back(server, 3)
    ref2, _, end2 = month_back(server, 2)
    # month 3: exact 1000 kWh at its start; its end interpolated between 1100 (12 h before) and 1102 (12 h after)
    for ms, kwh in [(start3, "1000"), (end3 - 12 * HOUR_MS, "1100"), (end3 + 12 * HOUR_MS, "1102"),
                    (end2 - 12 * HOUR_MS, "1300"), (end2 + 12 * HOUR_MS, "1302")]:
        await reading(server, ms, kwh)
    first = await run(server, 3)
    assert (first["emitidas"], first["referencia"]) == (1, ref3)
    issued = await bill_bytes(server, 3)
    bill3 = orjson.loads(issued)
    assert (bill3["status"], bill3["numero"], bill3["consumo_kwh"], bill3["ajustes"]) == ("emitida", 1, 101.0, [])
    assert await bill_bytes(server, 3) == issued  # the stored bytes, every time

    # A late reading 1 h before month 3's end: its end is now 1101.5 + 0.5 x 1/13 kWh = 1101.538 (half up, Wh)
    await reading(server, end3 - HOUR_MS, "1101.5")
    assert await bill_bytes(server, 3) == issued  # issued means immutable
    preview = orjson.loads(await bill_bytes(server, 2))
    assert (preview["status"], preview["mes"]) == ("previa", "fechado")

    second = await run(server, 2)
    assert (second["emitidas"], second["ajustes"]) == (1, 1)
    bill2 = orjson.loads(await bill_bytes(server, 2))
    assert bill2["numero"] == 2
    # month 2 starts where month 3 now ends: 1301.000 - 1101.538
    assert bill2["consumo_kwh"] == 199.462
    [ajuste] = bill2["ajustes"]
    assert (ajuste["referencia"], ajuste["descricao"]) == (ref3, f"Ajuste de faturamento ref. {ref3[5:]}/{ref3[:4]}")
    assert (ajuste["consumo_faturado_kwh"], ajuste["consumo_corrigido_kwh"], ajuste["consumo_kwh"]) == (101.0, 101.538, 0.538)
    # priced with month 3's own rates: month 3 as it is now, less month 3 as billed
    before, after = price(rates_of(ref3), ref3, 101_000, False), price(rates_of(ref3), ref3, 101_538, False)
    assert Decimal(ajuste["valor"]) == after.total - before.total
    assert Decimal(bill3["total"]) + Decimal(ajuste["valor"]) == after.total
    assert [Decimal(i["valor"]) for i in ajuste["itens"]] == [n.valor - o.valor for o, n in zip(before.itens, after.itens)]
    assert Decimal(bill2["total"]) == Decimal(bill2["total_mes"]) + Decimal(ajuste["valor"])
    # nothing billed twice, nothing lost: 1301 - 1000 kWh over the two months
    assert bill3["consumo_kwh"] + ajuste["consumo_kwh"] + bill2["consumo_kwh"] == pytest.approx(301.0, abs=1e-9)
    history = {h["referencia"]: h["consumo_kwh"] for h in bill2["historico"]}
    assert (history[ref3], history[ref2]) == (101.538, 199.462)
    assert await bill_bytes(server, 3) == issued


@pytest_twisted.ensureDeferred
async def test_an_issued_bill_has_every_field_and_valid_payment_codes(server: LiveServer) -> None:
    await customer(server, ligacao="tri")
    ref, start, end = month_back(server, 1)
    await reading(server, start, "500")
    await reading(server, end - 2 * HOUR_MS, "540.25")  # 40.25 kWh: under the tri minimum of 100
    await run(server, 1)
    status, doc, _ = await call(server, "GET", "/getFatura", params={"id": CID, "periodo": 1})
    assert status == 200
    schema = openapi_document()["components"]["schemas"]["Bill"]
    assert set(doc) == set(schema["properties"])  # every field the document defines, issued
    assert not schema_errors(openapi_document(), schema, doc)
    empresa = default_tariff().empresa
    assert empresa is not None
    assert doc["empresa"] == {"nome": empresa.nome, "cnpj": empresa.cnpj, "endereco": empresa.endereco}
    assert (doc["id"], doc["name"], doc["ligacao"], doc["referencia"]) == (CID, "Caio Ñandú", "tri", ref)
    [leitura] = doc["leituras"]
    assert leitura == {
        "id_medidor": 1, "modo": "register",
        "data_anterior": periods.iso(start, SP), "leitura_anterior": 500.0, "estimada_anterior": False,
        "data_atual": periods.iso(end, SP), "leitura_atual": 540.25, "estimada_atual": False,
        "constante": 1, "consumo_kwh": 40.25,
    }
    days = periods.local_date(end - 1, SP).day
    assert (doc["dias"], doc["media_diaria_kwh"]) == (days, round(40.25 / days, 3))
    assert (doc["consumo_kwh"], doc["faturado_kwh"]) == (40.25, 100.0)
    assert doc["minimo"]["aplicado"] and "100 kWh" in doc["minimo"]["motivo"] and "trifásica" in doc["minimo"]["motivo"]
    for item in doc["itens"]:
        assert Decimal(item["tarifa_com_tributos"]) > Decimal(item["tarifa"])
    taxes = doc["tributos"]
    assert Decimal(taxes["base"]) == Decimal(doc["total_mes"])  # the gross the taxes are a share of
    assert doc["historico"][-1] == {"referencia": ref, "consumo_kwh": 40.25, "dias": days, "media_diaria_kwh": doc["media_diaria_kwh"],
                                    "estimado": False}
    assert len(doc["historico"]) == 13
    # the payment codes carry the total, the bill number and the due date
    code = pix.parse_brcode(doc["pix"])
    assert (code.amount, code.txid, code.key) == (Decimal(doc["total"]), pix.txid_for_bill(doc["numero"]), empresa.chave_pix)
    assert pix.crc16(doc["pix"][:-4]) == int(doc["pix"][-4:], 16)
    barcode = arrecadacao.parse_code(doc["linha_digitavel"])
    assert arrecadacao.parse_code(doc["codigo_barras"]) == barcode
    assert (barcode.segment, barcode.value, barcode.company_code) == (3, Decimal(doc["total"]), empresa.codigo_febraban)
    numero, due = arrecadacao.parse_bill_free_field(barcode.free_field)
    assert (numero, due.isoformat()) == (doc["numero"], doc["vencimento"])
    assert (periods.local_date(end, SP) <= due) and doc["emissao"] < doc["vencimento"]
    for codigo, marker in (("pix", b"QR Code Pix"), ("barras", doc["codigo_barras"].encode())):
        status, svg, response = await server.call("GET", "/getFaturaCodigo", params={"id": CID, "periodo": 1, "codigo": codigo})
        assert status == 200 and response.headers.getRawHeaders(b"content-type") == [b"image/svg+xml"]
        assert svg.startswith(b"<svg") and marker in svg


@pytest_twisted.ensureDeferred
async def test_a_second_run_issues_none_and_numbers_follow_on(server: LiveServer) -> None:
    cids = [make_cpf(str(100_000_000 + n)) for n in range(7)]
    _, start, end = month_back(server, 1)
    for n, cid in enumerate(cids):
        await customer(server, cid)
        await reading(server, start + HOUR_MS, str(10 * n), cid)
        await reading(server, end - HOUR_MS, str(10 * n + 5), cid)
    server.core.parts.runs.batch = 3  # several batches
    first = await run(server, 1)
    assert (first["emitidas"], first["processados"], first["clientes"]) == (7, 7, 7)
    again = await run(server, 1)
    assert (again["execucao"], again["emitidas"], again["ja_emitidas"]) == (first["execucao"] + 1, 0, 7)
    numbers = [orjson.loads(await bill_bytes(server, 1, cid))["numero"] for cid in cids]
    assert numbers == list(range(1, 8))
    # the result, streamed: every bill of the run, or those after a number
    status, page, response = await server.call("GET", "/getFaturamentoResultado", params={"execucao": 1})
    assert status == 200 and response.headers.getRawHeaders(b"content-type") == [b"application/jsonl; charset=utf-8"]
    assert [orjson.loads(line)["numero"] for line in page.splitlines()] == list(range(1, 8))
    assert [orjson.loads(line) for line in page.splitlines()][0] == orjson.loads(await bill_bytes(server, 1, cids[0]))
    status, page, response = await server.call("GET", "/getFaturamentoResultado", params={"execucao": 1, "formato": "csv", "depois": 4})
    assert status == 200 and response.headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
    assert "faturamento-1-" in response.headers.getRawHeaders(b"content-disposition")[0].decode()
    rows = list(csv.DictReader(io.StringIO(page.decode())))
    assert [int(r["numero"]) for r in rows] == [5, 6, 7]
    assert [r["id"] for r in rows] == cids[4:]
    assert all(arrecadacao.parse_code(r["linha_digitavel"]).value == Decimal(r["total"]) for r in rows)
    status, empty, _ = await server.call("GET", "/getFaturamentoResultado", params={"execucao": 2, "formato": "csv"})
    assert (status, empty) == (200, b"numero,referencia,id,nome,emissao,vencimento,consumo_kwh,faturado_kwh,total_mes,ajustes,total,"
                                    b"codigo_barras,linha_digitavel,pix\r\n")  # the header alone: it issued none


@pytest_twisted.ensureDeferred
async def test_a_run_while_one_runs_is_refused_and_unknown_runs_are_404(server: LiveServer) -> None:
    status, body, _ = await call(server, "GET", "/getFaturamento")
    assert (status, body["error"]["code"]) == (404, "unknown_run")
    status, started, _ = await call(server, "POST", "/faturamento", json_body={"periodo": 1})
    status, body, _ = await call(server, "POST", "/faturamento", json_body={"periodo": 1})
    if status == 409:  # the first was still running
        assert body["error"]["code"] == "billing_run_active"
    else:  # it was already over: a new run
        assert (status, body["execucao"]) == (202, started["execucao"] + 1)
    status, body, _ = await call(server, "GET", "/getFaturamento", params={"execucao": 99})
    assert (status, body["error"]["code"]) == (404, "unknown_run")
    status, body, _ = await call(server, "GET", "/getFaturaCodigo", params={"id": CID, "codigo": "pix"})
    assert (status, body["error"]["code"]) == (404, "unknown_customer")


@pytest_twisted.ensureDeferred
async def test_without_empresa_runs_are_refused_and_previews_still_work(tmp_path: Path) -> None:
    tariff = tmp_path / "tarifa.toml"
    text = (Path(__file__).parents[1] / "meterd" / "default_tariff.toml").read_text()
    tariff.write_text(text[: text.index("[empresa]")])
    server = await start_server(tmp_path / "data", "--tariff", str(tariff))
    try:
        await customer(server)
        status, body, _ = await call(server, "POST", "/faturamento", json_body={"periodo": 1})
        assert (status, body["error"]["code"]) == (422, "company_not_configured")
        assert "[empresa]" in body["error"]["message"]
        status, preview, _ = await call(server, "GET", "/getFatura", params={"id": CID, "periodo": 1})
        assert (status, preview["status"]) == (200, "previa") and "empresa" not in preview
        status, body, _ = await call(server, "GET", "/getFaturamento")
        assert status == 404  # nothing was started
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_adjustment_larger_than_the_bill_is_a_credit_carried_by_the_next_bill(server: LiveServer) -> None:
    await customer(server)
    _, start4, end4 = month_back(server, 4)
    ref3, start3, _ = month_back(server, 3)
    ref2, start2, end2 = month_back(server, 2)
    day = 24 * HOUR_MS
    # month 4's end interpolated across a long gap (estimated): about 1,785 kWh billed
    for ms, kwh in [(start4, "0"), (start4 + day, "10"), (end4 + 20 * day, "3010"), (start2, "3100"), (end2, "3150")]:
        await reading(server, ms, kwh)
    await run(server, 4)
    bill4 = orjson.loads(await bill_bytes(server, 4))
    assert bill4["estimado"] and bill4["consumo_kwh"] > 1700
    await reading(server, end4, "11")  # month 4 really used 11 kWh
    await run(server, 2)  # month 2 (50 kWh) carries month 4's adjustment, over 1,700 kWh less
    bill2 = orjson.loads(await bill_bytes(server, 2))
    [ajuste] = bill2["ajustes"]
    assert ajuste["consumo_corrigido_kwh"] == 11.0 and Decimal(ajuste["valor"]) < -Decimal(bill2["total_mes"])
    assert Decimal(bill2["total"]) < 0 and (bill2["pix"], bill2["codigo_barras"], bill2["linha_digitavel"]) == (None, None, None)
    status, body, _ = await call(server, "GET", "/getFaturaCodigo", params={"id": CID, "periodo": 2, "codigo": "barras"})
    assert (status, body["error"]["code"]) == (404, "nothing_to_pay")
    await run(server, 3)  # the next bill carries the credit
    bill3 = orjson.loads(await bill_bytes(server, 3))
    assert bill3["credito_anterior"] == {"numero": bill2["numero"], "valor": bill2["total"]}
    assert Decimal(bill3["total"]) == Decimal(bill3["total_mes"]) + Decimal(bill2["total"]) > 0
    assert bill3["consumo_kwh"] == 3089.0  # from month 4's corrected end (11) to month 2's start (3100)
    assert pix.parse_brcode(bill3["pix"]).amount == Decimal(bill3["total"])
    # every month: its bill plus its adjustments is what it measures
    assert bill4["consumo_kwh"] + ajuste["consumo_kwh"] == pytest.approx(11.0, abs=1e-9)
    assert (bill3["referencia"], bill2["referencia"]) == (ref3, ref2) and start3 == end4


@pytest_twisted.ensureDeferred
async def test_a_replaced_meter_is_billed_up_to_its_final_reading_and_then_left_off_the_bill(server: LiveServer) -> None:
    await customer(server)
    _, start3, end3 = month_back(server, 3)
    _, start2, end2 = month_back(server, 2)
    day = 24 * HOUR_MS
    await reading(server, start3, "100")
    await reading(server, start3 + 10 * day, "150")
    swap = start3 + 11 * day
    status, body, _ = await server.call("POST", "/retiraMedidor", json_body={"id": CID, "id_medidor": 1, "valor": "160", "timestamp": swap / 1000})
    assert status == 200, body
    status, body, _ = await server.call("POST", "/substituiMedidor", json_body={"id": CID, "id_medidor": 1, "valor": "0", "timestamp": swap / 1000})
    assert status == 201, body
    for ms, kwh in [(end3, "20"), (end2, "95")]:
        await reading(server, ms, kwh, meter=2)
    await run(server, 3)
    await run(server, 2)
    bill3, bill2 = orjson.loads(await bill_bytes(server, 3)), orjson.loads(await bill_bytes(server, 2))
    assert [(r["id_medidor"], r["consumo_kwh"]) for r in bill3["leituras"]] == [(1, 60.0), (2, 20.0)]
    assert bill3["consumo_kwh"] == 80.0  # each meter's own register: no jump at the swap
    assert [(r["id_medidor"], r["leitura_anterior"], r["leitura_atual"]) for r in bill2["leituras"]] == [(2, 20.0, 95.0)]
    assert bill2["consumo_kwh"] == 75.0 and bill2["ajustes"] == []
