"""meterd.portal.fmt and its catalog, estimates, routes and the SSE format: pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.portal import routes, sse
from meterd.portal.catalog import CATALOG, LANGS
from meterd.portal.estimates import all_in_rate, bucket_cost, month_projection_kwh, relative_change
from meterd.portal.fmt import Fmt, decimal_of, placeholders

PT, EN = Fmt("pt"), Fmt("en")
NBSP = "\u00a0"


def test_catalog_languages_have_the_same_keys_and_placeholders() -> None:
    assert set(LANGS) == set(CATALOG)
    reference = CATALOG["pt"]
    for lang in LANGS:
        assert set(CATALOG[lang]) == set(reference), lang
        for key, text in CATALOG[lang].items():
            assert placeholders(text) == placeholders(reference[key]), (lang, key)
            assert text.strip(), (lang, key)


def test_placeholders_reads_format_fields() -> None:
    assert placeholders("{a} and {b!r} of {c:>3}") == {"a", "b", "c"}
    assert placeholders("none") == set()


def test_t_fills_placeholders_and_refuses_unknown_keys() -> None:
    assert PT.t("overview.heading", name="Ana") == "Olá, Ana"
    assert EN.t("overview.heading", name="Ana") == "Hello, Ana"
    with pytest.raises(KeyError):
        PT.t("no.such.key")
    with pytest.raises(ValueError):
        Fmt("es")


@pytest.mark.parametrize(
    ("value", "places", "pt", "en"),
    [
        (1234.56, 2, "1.234,56", "1,234.56"),
        ("1234567.891", 3, "1.234.567,891", "1,234,567.891"),
        (0, 1, "0,0", "0.0"),
        ("-1234.5", 0, "-1.235", "-1,235"),  # half up, away from zero
        ("0.125", 2, "0,13", "0.13"),  # half up, not half even
        (999, 0, "999", "999"),
        (1000, 0, "1.000", "1,000"),
    ],
)
def test_number(value: object, places: int, pt: str, en: str) -> None:
    assert PT.number(value, places) == pt
    assert EN.number(value, places) == en


def test_money_is_decimal_exact_and_brazilian() -> None:
    assert PT.money("1234.56") == f"R${NBSP}1.234,56"
    assert EN.money("1234.56") == f"R${NBSP}1,234.56"
    assert PT.money("-1.00") == f"-R${NBSP}1,00"
    assert PT.money(Decimal("0.005")) == f"R${NBSP}0,01"
    # A float is read by its shortest spelling: 2.675 rounds as 2.675, not as 2.67499999999999982236431605997495353221893310546875.
    assert PT.money(2.675) == f"R${NBSP}2,68"


def test_kwh_rate_and_percent() -> None:
    assert PT.kwh(312.457, 3) == f"312,457{NBSP}kWh"
    assert PT.kwh(0.1) == f"0,1{NBSP}kWh"
    assert PT.exact("0.01885") == "0,01885"
    assert EN.exact("0.30") == "0.30"
    assert PT.percent("0.0103") == "1,03%"
    assert PT.percent("0.25", 0) == "25%"
    assert PT.change(Decimal("0.1234")) == "+12%"
    assert PT.change(Decimal("-0.05")) == "-5%"
    assert PT.change(Decimal("0.001")) == "0%"


@pytest.mark.parametrize("bad", [True, None, "abc", float("nan"), "Infinity", [1]])
def test_decimal_of_refuses_what_is_not_a_finite_number(bad: object) -> None:
    with pytest.raises(ValueError):
        decimal_of(bad)


@given(st.decimals(min_value=-10**12, max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_pt_money_reads_back_to_the_same_amount(amount: Decimal) -> None:
    text = PT.money(amount)
    sign = -1 if text.startswith("-") else 1
    digits = text.split(NBSP)[1].replace(".", "").replace(",", ".")
    assert sign * Decimal(digits) == amount


def test_dates_are_wall_clock_of_the_given_offset() -> None:
    late = "2026-12-06T23:30:00-03:00"  # already 7 December in UTC
    assert PT.date(late) == "06/12/2026"
    assert EN.date(late) == "6 Dec 2026"
    assert PT.datetime(late) == "06/12/2026 23:30"
    assert EN.datetime(late) == "6 Dec 2026, 23:30"
    assert PT.hour(late) == "23h" and EN.hour(late) == "23:00"
    assert PT.day(late) == "06/12" and EN.day(late) == "6 Dec"
    assert PT.date("2026-01-09") == "09/01/2026"


def test_months_and_periods() -> None:
    assert PT.month("2026-12") == "dez/2026"
    assert EN.month("2026-12") == "Dec 2026"
    assert PT.month("2026-03-01T00:00:00-03:00") == "mar/2026"
    assert PT.month_long("2026-03") == "março de 2026"
    assert EN.month_long("2026-03") == "March 2026"
    assert PT.month_name("2026-02") == "fev"
    start = "2026-12-01T00:00:00-03:00"
    assert PT.period("D", start) == "01/12/2026"
    assert PT.period("M", start) == "dezembro de 2026"
    assert PT.period("Y", start) == "2026"


# -- estimates ----------------------------------------------------------------

START, END = "2026-12-01T00:00:00-03:00", "2027-01-01T00:00:00-03:00"


def test_projection_is_a_straight_line_through_the_elapsed_share() -> None:
    # A 31-day month, 15.5 days in: the projection doubles what was measured.
    assert month_projection_kwh(100, START, END, "2026-12-16T12:00:00-03:00") == Decimal("200.000")
    assert month_projection_kwh("10.001", START, END, "2026-12-31T00:00:00-03:00") == Decimal("10.334")
    # Before the month and after it there is nothing to extrapolate.
    assert month_projection_kwh(5, START, END, "2026-11-30T00:00:00-03:00") == Decimal("5.000")
    assert month_projection_kwh(321.5, START, END, "2027-01-02T00:00:00-03:00") == Decimal("321.500")


def test_all_in_rate_bucket_cost_and_change() -> None:
    rate = all_in_rate({"total": "347.07", "faturado_kwh": 312.457})
    assert rate == Decimal("347.07") / Decimal("312.457")
    assert all_in_rate({"total": "0.00", "faturado_kwh": 0}) is None
    assert bucket_cost(10, Decimal("1.0005")) == Decimal("10.01")  # 10.005, half up
    assert bucket_cost("0.004", Decimal("1")) == Decimal("0.00")
    assert relative_change(110, 100) == Decimal("0.1")
    assert relative_change(5, 0) is None


# -- routes and SSE ---------------------------------------------------------------


def test_href_and_language_switch() -> None:
    assert routes.href(routes.HISTORY, kind="M", periodo=2, medidor=None) == "/portal/historico?kind=M&periodo=2"
    assert routes.href(routes.BILL) == "/portal/fatura"
    assert routes.with_lang("/portal/historico?kind=M&lang=pt", "en") == "/portal/historico?kind=M&lang=en"
    assert routes.with_lang("/portal/", "en") == "/portal/?lang=en"
    # Only path and query survive: a switch link never leads off the site.
    assert routes.with_lang("https://evil.example/portal/?a=1", "pt") == "/portal/?a=1&lang=pt"


def test_sse_event_splits_lines_and_names_its_id() -> None:
    assert sse.event("alarm", "<li>a</li>", 7) == b"event: alarm\nid: 7\ndata: <li>a</li>\n\n"
    assert sse.event("alarm", "one\r\ntwo\rthree") == b"event: alarm\ndata: one\ndata: two\ndata: three\n\n"
    assert sse.comment("keep-alive") == b": keep-alive\n\n"
    with pytest.raises(ValueError):
        sse.event("al\narm", "x")
    with pytest.raises(ValueError):
        sse.comment("a\nb")
