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
from tests.console_fakes import BILL, history_doc, issued_bill


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
    assert "nov/2026 — prévia (mês em curso)" in row("Referência")
    assert "01/11/2026 – 30/11/2026" in row("Período")  # fim is exclusive
    assert "amarela" in row("Bandeira tarifária")


def test_bill_lines_in_english() -> None:
    out = Renderer(Messages("en"), width=100).bill(BILL)
    assert "Energy (TE)" in out and "Distribution system use (TUSD)" in out and "Tariff flag: yellow" in out
    assert "Energia" not in out and "Bandeira" not in out
    odd = {**BILL, "itens": [{"descricao": "Ajuste", "quantidade_kwh": 1, "tarifa": "1", "valor": "1.00"}]}
    assert "Ajuste" in Renderer(Messages("en"), width=100).bill(odd)  # unknown: shown as written


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


# -- views that fit the screen ---------------------------------------------------

from datetime import datetime, timezone  # noqa: E402

from rich.cells import cell_len  # noqa: E402


def _alarm(aid: int, rule: str, value: float, limit: float, message: str, meter: int | None = 1) -> dict[str, object]:
    return {
        "alarm_id": aid,
        "rule": rule,
        "id_medidor": meter,
        "raised_at": "2026-11-05T14:03:00-03:00",
        "cleared_at": None,
        "acked_at": "2026-11-05T15:10:00-03:00" if aid % 2 else None,
        "value": value,
        "threshold": limit,
        "message": message,
    }


ALARMS = {
    "active": [
        _alarm(1, "demand", 12.5, 10, "Demanda média de 12,5 kW acima do limite de 10 kW nos últimos 5 min"),
        _alarm(2, "monthly", 1200.5, 1000, "Consumo do mês de 1.200,5 kWh acima do limite de 1.000 kWh", None),
        _alarm(3, "silent", 5400, 3600, "Medidor 1 sem leituras há 1 h 30 min"),
        _alarm(14, "anomaly", 30.25, 20, "Consumo das últimas 24 h 51 % acima da média diária", None),
    ],
    "events": [{"event_id": i, "alarm_id": 1, "type": "raised", "at": "2026-11-05T14:03:00-03:00"} for i in range(1, 4)],
}


def _column(out: str, index: int, columns: int, bar: str = "|") -> str:
    """Column ``index`` (from 1) of the drawn table with ``columns`` columns, its lines joined."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    return " ".join(
        cell for line in plain.splitlines() if line.count(bar) == columns + 1 if (cell := line.split(bar)[index].strip())
    )


@pytest.mark.parametrize("color", [False, True])
def test_alarms_fit_80_columns_with_every_message(color: bool) -> None:
    out = Renderer(Messages("pt"), color=color, width=80).alarms(ALARMS)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert max(cell_len(line) for line in plain.splitlines()) <= 80
    alarm_column = _column(out, 2, 5, "│" if color else "|")
    for alarm in ALARMS["active"]:  # each message whole, wrapped in the alarm's column
        assert " ".join(str(alarm["message"]).split()) in alarm_column, alarm["message"]
    assert "…" not in plain  # nothing cut
    values = _column(out, 4, 5, "│" if color else "|")
    assert "12,50 kW 10,00 kW" in values and "1.200,50 kWh 1.000,00 kWh" in values and "90 min 60 min" in values


def test_alarms_get_a_message_column_when_wide_enough() -> None:
    out = Renderer(Messages("pt"), width=160).alarms(ALARMS)
    header = next(line for line in out.splitlines() if "Mensagem" in line)
    assert header.index("Reconhecido em") < header.index("Mensagem")
    assert max(len(line) for line in out.splitlines()) <= 160
    messages = _column(out, 8, 8)
    assert all(" ".join(str(a["message"]).split()) in messages for a in ALARMS["active"])


def test_alarm_messages_follow_the_screens_language() -> None:
    out = Renderer(Messages("en"), width=160).alarms(ALARMS)
    messages = _column(out, 8, 8)
    assert "Average demand of 12.50 kW, above the limit of 10.00 kW" in messages
    assert "No readings from the meter for 90 min" in messages
    assert "Demanda" not in out and "leituras" not in out  # the server's Portuguese stays out


def test_durations() -> None:
    r = Renderer(Messages("pt"))
    assert [r.duration(s) for s in (45, 119, 120, 5400, 7199, 7200, 172_800)] == [
        "45 s", "119 s", "2 min", "90 min", "119 min", "2 h", "2 dias",
    ]  # fmt: skip


def _month(days: int = 30) -> dict[str, object]:
    buckets = [
        {"start": f"2026-11-{d:02d}T00:00:00-03:00", "kwh": 0.0 if d >= 21 else float(d % 7), "estimated": d == 3}
        for d in range(1, days + 1)
    ]
    return {"kind": "M", "tz": "America/Sao_Paulo", "start": "2026-11-01T00:00:00-03:00", "total_kwh": 57.0,
            "estimated": True, "buckets": buckets, "meters": [{"id_medidor": 1, "total_kwh": 57.0}]}  # fmt: skip


NOON_20TH = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)  # 12:00 in São Paulo


@pytest.mark.parametrize("color", [False, True])
def test_a_month_fits_80_by_24_and_days_to_come_are_blank(color: bool) -> None:
    r = Renderer(Messages("pt"), color=color, width=80, height=24, now=lambda: NOON_20TH)
    out = r.history(_month())
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = plain.rstrip("\n").split("\n")
    assert len(lines) <= 22  # and the prompt, and the question above, in 24
    assert max(cell_len(line) for line in lines) <= 80
    shown = _bars(plain, r"\d\d/11")
    assert len(shown) == 30
    assert shown["07/11"].endswith("0,000")  # a day with no consumption is a zero
    assert shown["20/11"].endswith("6,000")  # today, so far
    assert all(shown[f"{d}/11"] == "" for d in range(21, 31))  # days to come: nothing drawn


def _bars(out: str, label: str) -> dict[str, str]:
    """What each bar's cell shows after its label (``label`` a regex), by label."""
    return {k: v.strip() for k, v in re.findall(rf"({label}) \|(.*?)(?=\s+{label} \||$)", out, re.M)}


def test_a_year_and_a_day_fit_80_by_24() -> None:
    r = Renderer(Messages("en"), width=80, height=24, now=lambda: NOON_20TH)
    year = {"kind": "Y", "tz": "UTC", "start": "2026-01-01T00:00:00+00:00", "total_kwh": 11.0, "meters": [],
            "buckets": [{"start": f"2026-{m:02d}-01T00:00:00+00:00", "kwh": 1.0} for m in range(1, 13)]}  # fmt: skip
    out = r.history(year)
    assert len(out.splitlines()) <= 22 and max(cell_len(line) for line in out.splitlines()) <= 80
    bars = _bars(out, r"[A-Z][a-z]{2} 2026")
    assert len(bars) == 12 and bars["Nov 2026"].endswith("1.000") and bars["Dec 2026"] == ""
    day = {"kind": "D", "tz": "UTC", "start": "2026-11-20T00:00:00+00:00", "total_kwh": 8.0, "meters": [],
           "buckets": [{"start": f"2026-11-20T{h:02d}:00:00+00:00", "kwh": 0.5} for h in range(24)]}  # fmt: skip
    out = r.history(day)
    assert len(out.splitlines()) <= 22 and max(cell_len(line) for line in out.splitlines()) <= 80
    bars = _bars(out, r"\d\d:00")
    assert len(bars) == 24
    assert all(bars[f"{h:02d}:00"].endswith("0.500") for h in range(16))  # 15:00 has begun
    assert all(bars[f"{h:02d}:00"] == "" for h in range(16, 24))


def test_without_a_screen_the_chart_is_one_column() -> None:
    out = Renderer(Messages("pt"), width=100, now=lambda: NOON_20TH).history(_month())
    assert len(re.findall(r"^\d\d/11 \|", out, re.M)) == 30


def test_the_bill_fits_a_24_line_screen_at_80_columns() -> None:
    doc = {**BILL, "estimado": True, "medidores": [{"id_medidor": 1, "consumo_kwh": 60}, {"id_medidor": 2, "consumo_kwh": 40}]}
    out = Renderer(Messages("pt"), color=True, width=80, height=24).bill(doc)
    assert len(out.rstrip("\n").split("\n")) <= 22
    assert "100,000 kWh (medidor 1: 60,000; medidor 2: 40,000)" in out  # two meters: each one's share
    single = Renderer(Messages("pt"), width=80).bill(BILL)
    assert "100,000 kWh\n" in single  # one meter's share is the measured consumption


def test_meter_modes_are_translated() -> None:
    doc = {"id": "52998224725", "meters": [{"id_medidor": 1, "mode": "interval", "last_seen": None, "last_kwh": None}]}
    assert "intervalo" in Renderer(Messages("pt")).meters(doc)
    assert "interval" in Renderer(Messages("en")).meters(doc)
    created = Renderer(Messages("pt")).meter_created({"id": "52998224725", "id_medidor": 2, "mode": "register", "key": "k"})
    assert "(modo registrador)" in created


def test_every_choice_and_rule_has_its_words_in_both_languages() -> None:
    from clients.console.choices import KIND, LIGACAO, METER_MODE
    from clients.console.render import _RULE_UNITS

    for lang in ("pt", "en"):
        m = Messages(lang)
        for choice in (KIND, LIGACAO, METER_MODE):
            labels = choice.labels(m)
            assert all(m.has(f"choice.{choice.name}.{v}") for v in choice.values), (lang, choice.name)
            assert len({label.casefold() for label in labels}) == len(labels)  # each label names one value
            assert [choice.parse(m, label) for label in labels] == list(choice.values)
        assert all(m.has(f"alarm.message.{rule}") and m.has(f"rule.{rule}") for rule in _RULE_UNITS)


@pytest.mark.parametrize("lang", ["pt", "en"])
@pytest.mark.parametrize("color", [False, True])
def test_an_issued_bill_shows_the_whole_document_within_80_columns(lang: str, color: bool) -> None:
    doc = issued_bill()
    out = Renderer(Messages(lang), color=color, width=80, height=24).bill(doc)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert max(cell_len(line) for line in plain.splitlines()) <= 80
    assert ("Nº 123" if lang == "pt" else "No. 123") in plain
    assert "12.345.678/0001-95" in plain and doc["empresa"]["endereco"] in plain
    assert "529.982.247-25" in plain and "B1 - Residencial" in plain
    pt = lang == "pt"
    for date in ("01/12/2026", "11/12/2026") if pt else ("2026-12-01", "2026-12-11"):  # issue and due dates
        assert date in plain
    assert ("1.000,000" if pt else "1,000.000") in plain and ("1.312,457 *" if pt else "1,312.457 *") in plain  # the current one estimated
    assert ("média de 10,415 kWh/dia" if lang == "pt" else "10.415 kWh/day") in plain
    assert ("0,43340075" if lang == "pt" else "0.43340075") in plain  # the tariff with taxes, all 8 decimals
    assert "ICMS" in plain and ("25%" in plain)
    ajuste = doc["ajustes"][0]
    assert ("Ajuste de faturamento ref. 10/2026" if lang == "pt" else "Billing adjustment for Oct 2026") in plain
    assert brl(ajuste["valor"]) in plain and brl(doc["total"]) in plain and brl(doc["total_mes"]) in plain
    history = [line for line in plain.splitlines() if re.match(r"\s*\w{3}[/ ]\d{4} \|", line)]
    assert len(history) == 13
    linha = doc["linha_digitavel"]
    assert f"{linha[:11]}-{linha[11]} {linha[12:23]}-{linha[23]}" in plain
    lines = plain.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("000201"))
    assert "".join(lines[start : start + 3]) == doc["pix"]  # the copia-e-cola, cut to the width, nothing lost


def test_a_bill_with_nothing_to_pay_says_so_and_has_no_codes() -> None:
    doc = {**issued_bill(), "pix": None, "codigo_barras": None, "linha_digitavel": None, "total": "-12.00"}
    out = Renderer(Messages("pt"), width=80).bill(doc)
    assert "Nada a pagar" in out and "Linha digitável" not in out


def test_a_billing_run_summary() -> None:
    run = {"execucao": 3, "referencia": "2026-11", "estado": "interrompida", "clientes": 100_000, "processados": 5_000,
           "emitidas": 4_990, "ja_emitidas": 10, "ignoradas": 0, "ajustes": 2, "erros": 0, "valor_total": "5594100.00",
           "iniciada": "2026-12-01T08:00:00-03:00", "concluida": None, "mensagem": "meterd stopped during the run"}
    out = Renderer(Messages("pt"), width=80).billing_run(run)
    assert "Faturamento de nov/2026 (execução 3): interrompido" in out
    assert "4.990" in out and "R$ 5.594.100,00" in out and "meterd stopped during the run" in out
