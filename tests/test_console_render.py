"""Rendering for people (plain and rich) and the pt/en message catalog."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.console.messages import CATALOG, Messages
from clients.console.render import Renderer, brl, format_number
from tests.console_fakes import BILL, history_doc


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0", "R$ 0,00"),
        ("5", "R$ 5,00"),
        ("123.45", "R$ 123,45"),
        ("1234.56", "R$ 1.234,56"),
        (1234567.8, "R$ 1.234.567,80"),
        ("999.995", "R$ 1.000,00"),  # half up
        ("0.005", "R$ 0,01"),
        ("-12.5", "-R$ 12,50"),
    ],
)
def test_brl(value: object, expected: str) -> None:
    assert brl(value) == expected


@given(st.integers(min_value=0, max_value=10**12))
def test_brl_round_trips_cents(cents: int) -> None:
    text = brl(f"{cents // 100}.{cents % 100:02d}")
    digits = text.removeprefix("R$ ").replace(".", "").replace(",", "")
    assert int(digits) == cents
    whole = text.removeprefix("R$ ").split(",")[0]
    assert all(len(g) == 3 for g in whole.split(".")[1:])


def test_format_number_locales() -> None:
    assert format_number("1234.5", 3) == "1.234,500"
    assert format_number(1234.5, 3, decimal_sep=".", thousands_sep=",") == "1,234.500"
    assert format_number(None, 2) == "—"


def _placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_catalog_languages_match() -> None:
    assert CATALOG["pt"].keys() == CATALOG["en"].keys()
    date_fields = {"d", "m", "y", "H", "M", "mon"}
    for key in CATALOG["pt"]:
        pt, en = _placeholders(CATALOG["pt"][key]), _placeholders(CATALOG["en"][key])
        if key.startswith("date."):  # each language picks its own date parts
            assert pt <= date_fields and en <= date_fields, key
        else:
            assert pt == en, key


def test_every_key_used_in_code_exists() -> None:
    src = Path(__file__).parent.parent / "clients" / "console"
    used: set[str] = set()
    for path in src.glob("*.py"):
        if path.name == "messages.py":
            continue
        used |= set(re.findall(r"\bm\(\s*\"([a-z_.]+)\"\s*[,)]", path.read_text()))
    assert used, "no message keys found; the pattern is stale"
    missing = sorted(k for k in used if k not in CATALOG["pt"])
    assert missing == []


def test_missing_key_shows_key() -> None:
    assert Messages("en")("no.such.key") == "no.such.key"


def test_bill_plain_is_itemised() -> None:
    out = Renderer(Messages("pt")).bill(BILL)
    assert "\x1b" not in out
    lines = out.splitlines()

    def row(label: str) -> str:
        return next(line for line in lines if label in line)

    assert "R$ 30,00" in row("Energia (TE)") and "0,30" in row("Energia (TE)")
    assert "R$ 45,00" in row("Uso do sistema (TUSD)")
    assert "0,01885" in row("Bandeira Amarela") and "R$ 1,89" in row("Bandeira Amarela")
    assert "R$ 76,89" in row("Subtotal")  # 30 + 45 + 1.89
    assert "R$ 27,77" in row("ICMS (25%)")
    assert "R$ 1,14" in row("PIS (1,03%)")
    assert "R$ 5,28" in row("COFINS (4,75%)")
    assert "R$ 1.111,08" in row("TOTAL A PAGAR")
    assert "nov/2026" in row("Referência") and "aberta" in row("Referência")
    assert "01/11/2026 – 30/11/2026" in row("Período")  # fim is exclusive
    assert "amarela" in row("Bandeira tarifária")


def test_bill_minimum_and_estimated() -> None:
    doc = {**BILL, "consumo_kwh": 12.5, "faturado_kwh": 30.0, "estimado": True}
    out = Renderer(Messages("en")).bill(doc)
    assert "30.000 kWh (minimum for a single-phase connection)" in out
    assert "estimated" in out
    assert "TOTAL DUE" in out and "R$ 1.111,08" in out


def test_bill_color_uses_ansi() -> None:
    out = Renderer(Messages("pt"), color=True).bill(BILL)
    assert "\x1b[" in out and "R$ 1.111,08" in out


def test_history_chart_plain_and_color() -> None:
    doc = history_doc("D", 0, None)
    out = Renderer(Messages("pt")).history(doc)
    assert "Consumo do dia 05/11/2026" in out
    assert "00h |" + "#" * 15 + " 1,000" in out
    assert "01h |" + "#" * 30 + " 2,000" in out
    assert "02h |" + "#" * 60 + " 4,000 *" in out
    assert "valores estimados" in out
    out = Renderer(Messages("pt"), color=True).history(doc)
    assert "█" * 60 in out


def test_history_empty_and_year_labels() -> None:
    doc = {
        "kind": "Y",
        "tz": "America/Sao_Paulo",
        "start": "2026-01-01T00:00:00-03:00",
        "total_kwh": 3.0,
        "buckets": [{"start": "2026-02-01T00:00:00-03:00", "kwh": 3.0}],
        "meters": [],
    }
    assert "fev/2026 |" in Renderer(Messages("pt")).history(doc)
    assert "Feb 2026 |" in Renderer(Messages("en")).history(doc)
    doc["buckets"] = []
    assert "Sem dados" in Renderer(Messages("pt")).history(doc)


def test_alarm_times_in_customer_zone() -> None:
    doc = {
        "active": [
            {
                "alarm_id": 4,
                "rule": "monthly",
                "id_medidor": None,
                "raised_at": "2026-11-05T02:30:00+00:00",
                "cleared_at": None,
                "acked_at": None,
                "value": 1200.5,
                "threshold": 1000,
                "message": "Consumo do mês acima do limite",
            }
        ],
        "events": [{"event_id": 9, "alarm_id": 4, "type": "raised", "at": "2026-11-05T02:30:00+00:00"}],
    }
    pt = Renderer(Messages("pt")).alarms(doc, "America/Sao_Paulo")
    # 02:30 UTC on the 5th is 23:30 on the 4th in São Paulo
    assert "04/11/2026 23:30" in pt
    assert "Consumo mensal" in pt and "1.200,50 kWh" in pt and "1.000,00 kWh" in pt
    assert "todos" in pt  # customer-wide alarm, no meter
    en = Renderer(Messages("en")).alarms(doc, "Asia/Tokyo")
    assert "2026-11-05 11:30" in en and "Monthly consumption" in en
    assert "No active alarms." in Renderer(Messages("en")).alarms({"active": [], "events": []})


def test_banner_for_acked_is_none() -> None:
    r = Renderer(Messages("pt"))
    assert r.banner({"type": "acked", "alarm_id": 1, "at": None}, None) is None
    text = r.banner({"type": "cleared", "alarm_id": 1, "at": "2026-11-05T17:20:00+00:00"}, None, "UTC")
    assert text == "*** ALARME #1 NORMALIZADO — ? em 05/11/2026 17:20 ***\n"


def test_secret_line_never_wrapped() -> None:
    token = "x" * 150
    out = Renderer(Messages("pt"), color=True, width=60).customer_created(
        {"id": "52998224725", "name": "Ana", "ligacao": "mono", "limite_kw": 10, "limite_kwh": 1000, "tz": "UTC", "token": token}
    )
    assert token in out
