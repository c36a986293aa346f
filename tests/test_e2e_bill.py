"""The bill over HTTP with a custom tariff, to the cent (issue 4)."""

from __future__ import annotations

import pytest

import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest_twisted

from meterd import periods
from meterd.taxid import make_cpf
from tests.support import ROOT, start_server, subprocess_env

TARIFF = """
[tarifa]
te = 0.41
tusd = 0.37
[tributos]
icms = 0.18
pis = 0.0165
cofins = 0.076
[bandeiras]
verde = 0
amarela = 1.885
vermelha1 = 4.463
vermelha2 = 7.877
[calendario]
padrao = "vermelha2"
[disponibilidade]
mono = 30
bi = 50
tri = 100
"""


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def expected_total(kwh: Decimal) -> Decimal:
    """By hand: the rules of DESIGN §6 with this file's rates (bandeira vermelha 2)."""
    lines = [cents(kwh * Decimal("0.41")), cents(kwh * Decimal("0.37")), cents(kwh * Decimal("7.877") / 100)]
    subtotal = sum(lines)
    gross = subtotal / (1 - Decimal("0.2725"))
    taxes = sum(cents(gross * rate) for rate in (Decimal("0.18"), Decimal("0.0165"), Decimal("0.076")))
    return subtotal + taxes


@pytest_twisted.ensureDeferred
async def test_closed_month_bill_to_the_cent_and_late_reading_changes_it(tmp_path: Path):
    (tmp_path / "tarifa.toml").write_text(TARIFF)
    server = await start_server(tmp_path / "data", "--tariff", str(tmp_path / "tarifa.toml"))
    try:
        cid = make_cpf("246813579")
        tz = ZoneInfo("America/Sao_Paulo")
        assert (await server.call("POST", "/cadCliente", json_body={"id": cid, "name": "Caio", "ligacao": "bi"}))[0] == 201
        assert (await server.call("POST", "/cadMedidor", json_body={"id": cid}))[0] == 201
        now_ms = int(server.core.api.clock.seconds() * 1000)
        start, end = periods.month_range(*periods.months_back(now_ms, tz, 1), tz)
        # Exact reading at the month's start; the end is interpolated between 12:00 before and 12:00 after.
        half_day = 12 * 3_600_000
        for ts, kwh in [(start, "1000"), (end - half_day, "1234.567"), (end + half_day, "1236.567")]:
            status, body, _ = await server.call(
                "POST", "/postConsumo", json_body={"id": cid, "id_medidor": 1, "valor": kwh, "timestamp": ts / 1000}
            )
            assert status == 201, body
        status, bill, _ = await server.call("GET", "/getFatura", params={"id": cid, "periodo": 1})
        assert status == 200, bill
        consumo = Decimal("235.567")  # 1234.567 - 1000 + half of the 2 kWh across the edge
        assert Decimal(str(bill["consumo_kwh"])) == consumo
        assert (bill["status"], bill["mes"], bill["bandeira"], bill["ligacao"]) == ("previa", "fechado", "vermelha2", "bi")
        assert Decimal(bill["total"]) == expected_total(consumo)
        assert bill["estimado"] is True  # the end edge was interpolated across a 24 h gap

        # A late reading just before the month's end moves the edge: the cached bill must not survive it.
        status, _, _ = await server.call(
            "POST", "/postConsumo", json_body={"id": cid, "id_medidor": 1, "valor": "1236.000", "timestamp": (end - 3_600_000) / 1000}
        )
        assert status == 201
        status, late, _ = await server.call("GET", "/getFatura", params={"id": cid, "periodo": 1})
        # R(end) = 1236000 Wh + 567 Wh * (1 h / 13 h) = 1236043.6 Wh -> 1236044 Wh (half up)
        consumo = Decimal("236.044")
        assert Decimal(str(late["consumo_kwh"])) == consumo
        assert Decimal(late["total"]) == expected_total(consumo)
    finally:
        await server.stop()


@pytest.mark.slow
def test_broken_tariff_stops_the_start_with_one_line(tmp_path: Path):
    bad = tmp_path / "tarifa.toml"
    bad.write_text(TARIFF.replace("te = 0.41", "te = -0.41"))
    twistd = str(Path(sys.executable).parent / "twistd")
    result = subprocess.run(
        [twistd, "-n", "--pidfile=", "meterd", "--data-dir", str(tmp_path / "d"), "--tariff", str(bad)],
        capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, timeout=60,
    )
    assert result.returncode != 0
    last = result.stdout.strip().splitlines()[-1]
    assert "tarifa.toml:3: tarifa.te" in last and "Traceback" not in result.stdout + result.stderr
