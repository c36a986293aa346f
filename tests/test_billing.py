"""Monthly bills (meterd.billing), DESIGN §6, checked against hand-computed bills.

Unless a test says otherwise the tariff is the built-in default (the DESIGN §6
file): te 0.30, tusd 0.45 R$/kWh; icms 0.25, pis 0.0103, cofins 0.0475, so
taxes sum to 0.3078 and the "por dentro" divisor is 1 − 0.3078 = 0.6922;
bandeiras verde 0, amarela 1.885, vermelha1 4.463, vermelha2 7.877 R$/100 kWh;
2026-11 is amarela, every other month verde; minimums mono 30, bi 50, tri 100.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.billing import LIGACOES, Bill, compute_bill
from meterd.tariff import FLAGS, Tariff, default_tariff

D = Decimal


def _tariff(**changes: object) -> Tariff:
    """The default tariff with some fields replaced (mappings as plain dicts)."""
    return replace(default_tariff(), **changes)  # type: ignore[arg-type]


def _zero_taxes(**changes: object) -> Tariff:
    return _tariff(icms=D(0), pis=D(0), cofins=D(0), **changes)


def _lines(bill: Bill) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    return [(i.descricao, i.quantidade_kwh, i.tarifa, i.valor) for i in bill.itens]


def _taxes(bill: Bill) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    t = bill.tributos
    return (t.icms, t.pis, t.cofins, t.valor)


# ---------------------------------------------------------------------------
# The cases of the issue


def test_mono_month_under_the_minimum_is_billed_as_30_kwh() -> None:
    bill = compute_bill(
        tariff=default_tariff(), ligacao="mono", year=2026, month=10,
        consumo_wh=20_000, estimado=False,
    )
    assert bill.referencia == "2026-10"
    assert bill.consumo_kwh == D("20.000")
    assert bill.faturado_kwh == D("30.000")
    assert bill.bandeira == "verde"
    # TE   30 × 0.30 = 9.00
    # TUSD 30 × 0.45 = 13.50
    # Verde 30 × 0 / 100 = 0.00 (line kept although zero)
    assert _lines(bill) == [
        ("Energia (TE)", D(30), D("0.30"), D("9.00")),
        ("Uso do sistema (TUSD)", D(30), D("0.45"), D("13.50")),
        ("Bandeira Verde", D(30), D(0), D("0.00")),
    ]
    # subtotal 22.50; gross = 22.50 / 0.6922 = 32.505056...
    # icms   32.505056 × 0.25   = 8.126264 -> 8.13
    # pis    32.505056 × 0.0103 = 0.334802 -> 0.33
    # cofins 32.505056 × 0.0475 = 1.543990 -> 1.54
    # taxes 8.13 + 0.33 + 1.54 = 10.00; total 22.50 + 10.00 = 32.50
    assert _taxes(bill) == (D("8.13"), D("0.33"), D("1.54"), D("10.00"))
    assert bill.total == D("32.50")
    assert bill.estimado is False


def test_tri_month_under_100_kwh_with_amarela() -> None:
    bill = compute_bill(
        tariff=default_tariff(), ligacao="tri", year=2026, month=11,
        consumo_wh=87_654, estimado=False,
    )
    assert bill.consumo_kwh == D("87.654")
    assert bill.faturado_kwh == D(100)
    assert bill.bandeira == "amarela"
    # TE 100 × 0.30 = 30.00; TUSD 100 × 0.45 = 45.00
    # Amarela 100 × 1.885 / 100 = 1.885 -> 1.89 half up (half-even would say 1.88)
    assert _lines(bill) == [
        ("Energia (TE)", D(100), D("0.30"), D("30.00")),
        ("Uso do sistema (TUSD)", D(100), D("0.45"), D("45.00")),
        ("Bandeira Amarela", D(100), D("0.01885"), D("1.89")),
    ]
    # subtotal 76.89; gross = 76.89 / 0.6922 = 111.080612...
    # icms   × 0.25   = 27.770153 -> 27.77
    # pis    × 0.0103 =  1.144130 ->  1.14
    # cofins × 0.0475 =  5.276329 ->  5.28
    # taxes 34.19; total 76.89 + 34.19 = 111.08
    assert _taxes(bill) == (D("27.77"), D("1.14"), D("5.28"), D("34.19"))
    assert bill.total == D("111.08")


def test_bandeira_vermelha_patamar_2() -> None:
    tariff = _tariff(calendario=MappingProxyType({"2026-08": "vermelha2"}))
    bill = compute_bill(
        tariff=tariff, ligacao="bi", year=2026, month=8,
        consumo_wh=250_500, estimado=False,
    )
    assert bill.bandeira == "vermelha2"
    assert bill.faturado_kwh == D("250.5")
    # TE 250.5 × 0.30 = 75.15
    # TUSD 250.5 × 0.45 = 112.725 -> 112.73 (half-even: 112.72)
    # Vermelha 2: 250.5 × 7.877 / 100 = 19.731885 -> 19.73
    assert _lines(bill) == [
        ("Energia (TE)", D("250.5"), D("0.30"), D("75.15")),
        ("Uso do sistema (TUSD)", D("250.5"), D("0.45"), D("112.73")),
        ("Bandeira Vermelha patamar 2", D("250.5"), D("0.07877"), D("19.73")),
    ]
    # subtotal 207.61; gross = 207.61 / 0.6922 = 299.927766...
    # icms 74.981942 -> 74.98; pis 3.089256 -> 3.09; cofins 14.246569 -> 14.25
    # taxes 92.32; total 207.61 + 92.32 = 299.93
    assert _taxes(bill) == (D("74.98"), D("3.09"), D("14.25"), D("92.32"))
    assert bill.total == D("299.93")
    # The month before is back to padrao.
    july = compute_bill(
        tariff=tariff, ligacao="bi", year=2026, month=7, consumo_wh=250_500, estimado=False
    )
    assert july.bandeira == "verde"


def test_vermelha_patamar_1_label() -> None:
    tariff = _tariff(calendario=MappingProxyType({"2026-09": "vermelha1"}))
    bill = compute_bill(
        tariff=tariff, ligacao="mono", year=2026, month=9, consumo_wh=200_000, estimado=False
    )
    # 200 × 4.463 / 100 = 8.926 -> 8.93
    assert _lines(bill)[2] == ("Bandeira Vermelha patamar 1", D(200), D("0.04463"), D("8.93"))


def test_zero_taxes_total_is_the_subtotal() -> None:
    bill = compute_bill(
        tariff=_zero_taxes(), ligacao="mono", year=2026, month=1,
        consumo_wh=150_000, estimado=False,
    )
    # 150 × 0.30 = 45.00; 150 × 0.45 = 67.50; verde 0.00; no taxes
    assert [line[3] for line in _lines(bill)] == [D("45.00"), D("67.50"), D("0.00")]
    assert _taxes(bill) == (D("0.00"), D("0.00"), D("0.00"), D("0.00"))
    assert bill.total == D("112.50")


def test_line_rounding_is_half_up_not_half_even() -> None:
    bill = compute_bill(
        tariff=_zero_taxes(), ligacao="mono", year=2026, month=1,
        consumo_wh=100_500, estimado=False,
    )
    # TE 100.5 × 0.30 = 30.15 exactly
    # TUSD 100.5 × 0.45 = 45.225 -> 45.23 half up; half-even would give 45.22
    assert [line[3] for line in _lines(bill)] == [D("30.15"), D("45.23"), D("0.00")]
    assert bill.total == D("75.38")


def test_tax_rounding_is_half_up_not_half_even() -> None:
    tariff = _tariff(
        te=D("0.101"), tusd=D(0), icms=D("0.2"), pis=D(0), cofins=D(0)
    )
    bill = compute_bill(
        tariff=tariff, ligacao="mono", year=2026, month=1,
        consumo_wh=100_000, estimado=False,
    )
    # TE 100 × 0.101 = 10.10; TUSD 0.00; verde 0.00; subtotal 10.10
    # gross = 10.10 / (1 − 0.2) = 12.625; icms = 12.625 × 0.2 = 2.525
    # -> 2.53 half up (half-even: 2.52); total 10.10 + 2.53 = 12.63
    assert _taxes(bill) == (D("2.53"), D("0.00"), D("0.00"), D("2.53"))
    assert bill.total == D("12.63")


def test_total_is_the_sum_of_the_printed_lines_not_the_rounded_gross() -> None:
    tariff = _tariff(
        te=D("0.01"), tusd=D(0), icms=D("0.1"), pis=D("0.1"), cofins=D("0.1")
    )
    bill = compute_bill(
        tariff=tariff, ligacao="mono", year=2026, month=1,
        consumo_wh=100_000, estimado=False,
    )
    # subtotal 100 × 0.01 = 1.00; gross 1.00 / 0.7 = 1.428571...
    # each tax 1.428571 × 0.1 = 0.142857 -> 0.14; taxes 0.42
    # total 1.00 + 0.42 = 1.42 (rounding the gross would say 1.43)
    assert _taxes(bill) == (D("0.14"), D("0.14"), D("0.14"), D("0.42"))
    assert bill.total == D("1.42")


def test_customer_with_two_meters() -> None:
    meter_1_wh, meter_2_wh = 61_234, 45_678
    bill = compute_bill(
        tariff=default_tariff(), ligacao="mono", year=2026, month=11,
        consumo_wh=meter_1_wh + meter_2_wh, estimado=False,
    )
    # 61.234 + 45.678 = 106.912 kWh, above the 30 kWh minimum
    assert bill.consumo_kwh == bill.faturado_kwh == D("106.912")
    # TE 106.912 × 0.30 = 32.0736 -> 32.07
    # TUSD 106.912 × 0.45 = 48.1104 -> 48.11
    # Amarela 106.912 × 0.01885 = 2.0152912 -> 2.02
    assert [line[3] for line in _lines(bill)] == [D("32.07"), D("48.11"), D("2.02")]
    # subtotal 82.20; gross = 82.20 / 0.6922 = 118.751806...
    # icms 29.687951 -> 29.69; pis 1.223144 -> 1.22; cofins 5.640711 -> 5.64
    # taxes 36.55; total 82.20 + 36.55 = 118.75
    assert _taxes(bill) == (D("29.69"), D("1.22"), D("5.64"), D("36.55"))
    assert bill.total == D("118.75")


def test_month_with_an_estimated_gap_is_marked_estimado() -> None:
    kwargs = dict(tariff=default_tariff(), ligacao="bi", year=2026, month=3, consumo_wh=80_000)
    estimated = compute_bill(estimado=True, **kwargs)  # type: ignore[arg-type]
    measured = compute_bill(estimado=False, **kwargs)  # type: ignore[arg-type]
    assert estimated.estimado is True and measured.estimado is False
    assert estimated.to_json()["estimado"] is True
    # Estimation marks the bill; it does not change the money.
    assert estimated.total == measured.total
    # 80 × 0.30 = 24.00; 80 × 0.45 = 36.00; subtotal 60.00
    # gross 60.00 / 0.6922 = 86.680150; icms 21.670038 -> 21.67;
    # pis 0.892806 -> 0.89; cofins 4.117307 -> 4.12; taxes 26.68; total 86.68
    assert _taxes(estimated) == (D("21.67"), D("0.89"), D("4.12"), D("26.68"))
    assert estimated.total == D("86.68")


# ---------------------------------------------------------------------------
# Edges


@pytest.mark.parametrize(
    "ligacao, minimum", [("mono", 30), ("bi", 50), ("tri", 100)]
)
def test_zero_consumption_pays_the_minimum(ligacao: str, minimum: int) -> None:
    bill = compute_bill(
        tariff=default_tariff(), ligacao=ligacao, year=2026, month=1,
        consumo_wh=0, estimado=False,
    )
    assert bill.consumo_kwh == 0
    assert bill.faturado_kwh == minimum


def test_exactly_at_and_just_above_the_minimum() -> None:
    at = compute_bill(
        tariff=default_tariff(), ligacao="bi", year=2026, month=1,
        consumo_wh=50_000, estimado=False,
    )
    above = compute_bill(
        tariff=default_tariff(), ligacao="bi", year=2026, month=1,
        consumo_wh=50_001, estimado=False,
    )
    assert at.faturado_kwh == D(50)
    assert above.faturado_kwh == D("50.001")
    # 50.001 × 0.45 = 22.50045 -> 22.50, same line as at 50 kWh
    assert above.itens[1].valor == at.itens[1].valor == D("22.50")


def test_one_watt_hour_resolution_is_kept() -> None:
    bill = compute_bill(
        tariff=default_tariff(), ligacao="mono", year=2026, month=1,
        consumo_wh=1_234_567, estimado=False,
    )
    assert bill.consumo_kwh == D("1234.567")
    assert str(bill.consumo_kwh) == "1234.567"
    # 1234.567 × 0.30 = 370.3701 -> 370.37
    assert bill.itens[0].valor == D("370.37")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(ligacao="quad"), ValueError),
        (dict(consumo_wh=-1), ValueError),
        (dict(consumo_wh=1.5), TypeError),
        (dict(consumo_wh=True), TypeError),
        (dict(month=13), ValueError),
        (dict(month=0), ValueError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, object] = dict(
        tariff=default_tariff(), ligacao="mono", year=2026, month=1,
        consumo_wh=1000, estimado=False,
    )
    args.update(kwargs)
    with pytest.raises(error):
        compute_bill(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# JSON


def test_to_json_shape_and_formats() -> None:
    bill = compute_bill(
        tariff=default_tariff(), ligacao="tri", year=2026, month=11,
        consumo_wh=87_654, estimado=True,
    )
    doc = bill.to_json()
    assert doc == {
        "referencia": "2026-11",
        "consumo_kwh": 87.654,
        "faturado_kwh": 100.0,
        "ligacao": "tri",
        "bandeira": "amarela",
        "itens": [
            # tarifa_com_tributos: tarifa / 0.6922, half up to 8 decimals
            {"descricao": "Energia (TE)", "quantidade_kwh": 100.0,
             "tarifa": "0.30", "tarifa_com_tributos": "0.43340075", "valor": "30.00"},
            {"descricao": "Uso do sistema (TUSD)", "quantidade_kwh": 100.0,
             "tarifa": "0.45", "tarifa_com_tributos": "0.65010113", "valor": "45.00"},
            {"descricao": "Bandeira Amarela", "quantidade_kwh": 100.0,
             "tarifa": "0.01885", "tarifa_com_tributos": "0.02723201", "valor": "1.89"},
        ],
        "tributos": {
            # base: the gross 76.89 / 0.6922 = 111.0806... -> 111.08
            "icms": "27.77", "pis": "1.14", "cofins": "5.28", "valor": "34.19", "base": "111.08",
            "aliquotas": {"icms": "0.25", "pis": "0.0103", "cofins": "0.0475"},
        },
        "total": "111.08",
        "estimado": True,
    }
    json.dumps(doc)  # JSON-ready: no Decimal left anywhere


def test_to_json_zero_and_tiny_values_have_no_exponent() -> None:
    tariff = _zero_taxes(
        te=D("0.0000001"), tusd=D(0), bandeiras=MappingProxyType({f: D(0) for f in FLAGS})
    )
    doc = compute_bill(
        tariff=tariff, ligacao="mono", year=2026, month=1, consumo_wh=0, estimado=False
    ).to_json()
    assert doc["itens"][0]["tarifa"] == "0.0000001"
    # 30 kWh minimum × 0.0000001 = 0.000003 -> 0.00
    assert doc["itens"][0]["valor"] == "0.00"
    assert doc["itens"][2]["tarifa"] in ("0", "0.00")  # 0 R$/100 kWh, never "0E-2"
    assert doc["tributos"]["aliquotas"] == {"icms": "0", "pis": "0", "cofins": "0"}
    assert doc["total"] == "0.00"


# ---------------------------------------------------------------------------
# Properties, against an exact rational oracle


def _half_up_cents(x: Fraction) -> Fraction:
    return Fraction(math.floor(x * 100 + Fraction(1, 2)), 100)


rates = st.decimals(min_value=0, max_value=3, places=5)
fractions_of_one = st.decimals(min_value=0, max_value=D("0.33"), places=4)


@given(
    consumo_wh=st.integers(min_value=0, max_value=10**9),
    ligacao=st.sampled_from(LIGACOES),
    month=st.integers(min_value=1, max_value=12),
    te=rates,
    tusd=rates,
    flag_rate=st.decimals(min_value=0, max_value=50, places=3),
    icms=fractions_of_one,
    pis=fractions_of_one,
    cofins=fractions_of_one,
    estimado=st.booleans(),
)
def test_bill_invariants(
    consumo_wh: int, ligacao: str, month: int, te: Decimal, tusd: Decimal,
    flag_rate: Decimal, icms: Decimal, pis: Decimal, cofins: Decimal, estimado: bool,
) -> None:
    tariff = _tariff(
        te=te, tusd=tusd, icms=icms, pis=pis, cofins=cofins,
        bandeiras=MappingProxyType({f: flag_rate for f in FLAGS}),
    )
    bill = compute_bill(
        tariff=tariff, ligacao=ligacao, year=2030, month=month,
        consumo_wh=consumo_wh, estimado=estimado,
    )
    kwh = Fraction(consumo_wh, 1000)
    billed = max(kwh, Fraction(tariff.disponibilidade[ligacao]))
    assert Fraction(bill.consumo_kwh) == kwh
    assert Fraction(bill.faturado_kwh) == billed

    expected_lines = [
        _half_up_cents(billed * Fraction(te)),
        _half_up_cents(billed * Fraction(tusd)),
        _half_up_cents(billed * Fraction(flag_rate) / 100),
    ]
    assert [Fraction(i.valor) for i in bill.itens] == expected_lines
    subtotal = sum(expected_lines, Fraction(0))
    divisor = 1 - Fraction(icms) - Fraction(pis) - Fraction(cofins)
    expected_taxes = [_half_up_cents(subtotal * Fraction(r) / divisor) for r in (icms, pis, cofins)]
    t = bill.tributos
    assert [Fraction(t.icms), Fraction(t.pis), Fraction(t.cofins)] == expected_taxes
    assert t.valor == t.icms + t.pis + t.cofins

    # The total is exactly the sum of the printed lines ...
    assert bill.total == sum((i.valor for i in bill.itens), D(0)) + t.valor
    # ... and within three half-cents of the unrounded "por dentro" gross.
    assert abs(Fraction(bill.total) - subtotal / divisor) <= Fraction(15, 1000)
    # Every amount is in cents, and the JSON strings say so.
    for amount in [i.valor for i in bill.itens] + [t.icms, t.pis, t.cofins, t.valor, bill.total]:
        assert amount.as_tuple().exponent == -2
    doc = bill.to_json()
    assert D(doc["total"]) == bill.total and doc["total"].count(".") == 1
    assert len(doc["total"].split(".")[1]) == 2
    assert doc["estimado"] is estimado
