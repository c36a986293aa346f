"""FEBRABAN arrecadação codes (meterd.arrecadacao): vectors, layout, bad input, bars.

Where the vectors come from:

* Check digits: the worked examples of FEBRABAN's *Layout Padrão de
  Arrecadação/Recebimento com Utilização do Código de Barras*, modulo 10 and
  modulo 11 of ``01230067896`` (3 and 0), as reproduced in the docstrings of
  WilliamSampaio/febraban_barcode (``febraban_barcode/functions.py``, which
  ships the layout's version 7 in ``specs/``).
* ``TAGLIATTI_*``: the examples of Tagliatti's boleto-validator (npm
  ``boleto-validator``, README and ``test/test.js``): an energy bill (segment 3,
  modulo 10, R$ 133,12) and a segment-5 code in modulo 11, plus the same suite's
  deliberately broken variants.
* ``MCRVAZ_*``: mcrvaz/boleto-brasileiro-validator (``test/boleto-arrecadacao.js``):
  an energy bill in modulo 10 (R$ 66,78) and a segment-4 code in modulo 11,
  each as barcode and linha, plus that suite's invalid codes.
* Free field layout: WilliamSampaio/febraban_barcode's
  ``tests/test_gerar_numeracao_codigo_de_barras_func.py`` (due 2023-12-31,
  data 54321 -> ``84670000000109910422023123100000000000054321``).
* ITF modules: zint's ``backend/tests/test_2of5.c`` (Interleaved 2 of 5 of
  ``87654321``, checked there against TEC-IT, and ``602003``, Wikipedia's DX
  cartridge example), drawn with the same 1:3 narrow:wide ratio.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.arrecadacao import (
    Arrecadacao,
    bill_free_field,
    build_barcode,
    format_linha_digitavel,
    itf_modules,
    itf_svg,
    linha_digitavel,
    mod10_digit,
    mod11_digit,
    parse_bill_free_field,
    parse_code,
)
from meterd.paycodes import PaymentCodeError

TAGLIATTI_ENERGY = "83640000001-1 33120138000-2 81288462711-6 08013618155-1"
TAGLIATTI_ENERGY_BARCODE = "83640000001331201380008128846271108013618155"
TAGLIATTI_MOD11 = "85890000460-9 52460179160-5 60759305086-5 83148300001-0"
MCRVAZ_ENERGY = "836200000005667800481000180975657313001589636081"
MCRVAZ_ENERGY_BARCODE = "83620000000667800481001809756573100158963608"
MCRVAZ_MOD11 = "848900000002404201622015806051904292586034111220"
MCRVAZ_MOD11_BARCODE = "84890000000404201622018060519042958603411122"
SAMPAIO_BARCODE = "84670000000109910422023123100000000000054321"
SAMPAIO_LINHA = "84670000000 9   10991042202 0   31231000000 4   00000054321 5"

SVG = "{http://www.w3.org/2000/svg}"


def _digits(code: str) -> str:
    return re.sub(r"\D", "", code)


# ---------------------------------------------------------------------------
# Published vectors


def test_check_digits_of_the_febraban_layout_examples() -> None:
    assert mod10_digit("01230067896") == 3
    assert mod11_digit("01230067896") == 0


@pytest.mark.parametrize(
    "value, company, free, barcode, line",
    [
        (
            Decimal("133.12"), "0138", "0008128846271108013618155",
            TAGLIATTI_ENERGY_BARCODE, _digits(TAGLIATTI_ENERGY),
        ),
        (
            Decimal("66.78"), "0048", "1001809756573100158963608",
            MCRVAZ_ENERGY_BARCODE, MCRVAZ_ENERGY,
        ),
    ],
    ids=["boleto-validator", "boleto-brasileiro-validator"],
)
def test_build_reproduces_published_energy_bills(
    value: Decimal, company: str, free: str, barcode: str, line: str
) -> None:
    built = build_barcode(value, company, free)
    assert built == barcode
    assert linha_digitavel(built) == line
    assert parse_code(line) == parse_code(barcode) == Arrecadacao(3, 6, value, company, free)


def test_format_matches_the_published_masked_linha() -> None:
    assert format_linha_digitavel(_digits(TAGLIATTI_ENERGY)) == TAGLIATTI_ENERGY
    assert format_linha_digitavel(_digits(TAGLIATTI_MOD11)) == TAGLIATTI_MOD11


@pytest.mark.parametrize(
    "code, expected",
    [
        (TAGLIATTI_MOD11, Arrecadacao(5, 8, Decimal("46052.46"), "0179", "1606075930508683148300001")),
        (MCRVAZ_MOD11, Arrecadacao(4, 8, Decimal("40.42"), "0162", "2018060519042958603411122")),
        (MCRVAZ_MOD11_BARCODE, Arrecadacao(4, 8, Decimal("40.42"), "0162", "2018060519042958603411122")),
        (SAMPAIO_BARCODE, Arrecadacao(4, 6, Decimal("10.99"), "1042", "2023123100000000000054321")),
        (SAMPAIO_LINHA, Arrecadacao(4, 6, Decimal("10.99"), "1042", "2023123100000000000054321")),
    ],
)
def test_parse_published_codes_of_other_segments(code: str, expected: Arrecadacao) -> None:
    assert parse_code(code) == expected


def test_linha_of_published_barcodes() -> None:
    assert linha_digitavel(MCRVAZ_MOD11_BARCODE) == MCRVAZ_MOD11
    assert linha_digitavel(SAMPAIO_BARCODE) == _digits(SAMPAIO_LINHA)


@pytest.mark.parametrize(
    "code, field",
    [
        # Tagliatti's invalid examples: block 1's digit changed.
        ("83640000001-2 33120138000-2 81288462711-6 08013618155-1", "block 1"),
        ("85890000460-8 52460179160-5 60759305086-5 83148300001-0", "block 1"),
        # Valid block digits (Tagliatti's "resto 10" case: block 1 ends in a
        # remainder of 10, digit 1) but the value changed under the general
        # check digit: a block-only validator accepts it, a full one must not.
        ("85890000464-1 52460179160-5 60759305086-5 83148300001-0", "position 4"),
        # mcrvaz's invalid linhas and barcode.
        ("836200000005667800481800180975657313001589636081", "block 2"),
        ("848900000002404201622015809051904292586034111220", "block 3"),
        ("83620000000667800481001809756573800158963608", "position 4"),
        ("536400000011331201380002812884627116080136181551", "position 1"),
        ("8464000000087350024030015034903370804040612", "code"),  # 43 digits
    ],
)
def test_published_invalid_codes_are_refused(code: str, field: str) -> None:
    with pytest.raises(PaymentCodeError) as info:
        parse_code(code)
    assert info.value.field == field, str(info.value)


def test_free_field_layout_matches_febraban_barcode_library() -> None:
    free = bill_free_field(54321, date(2023, 12, 31))
    assert free == SAMPAIO_BARCODE[19:]
    assert parse_bill_free_field(free) == (54321, date(2023, 12, 31))


# ---------------------------------------------------------------------------
# Layout of our own codes

_FREE = bill_free_field(123, date(2026, 12, 10))


@pytest.mark.parametrize("value_id", [6, 8])
def test_layout_positions_and_lengths(value_id: int) -> None:
    barcode = build_barcode(Decimal("187.43"), "0042", _FREE, value_id=value_id)  # type: ignore[arg-type]
    assert len(barcode) == 44 and barcode.isdigit()
    assert barcode[0:3] == f"83{value_id}"
    assert barcode[4:15] == "00000018743"
    assert barcode[15:19] == "0042"
    assert barcode[19:44] == "20261210" + "00000000000000123"
    check = mod10_digit if value_id == 6 else mod11_digit
    assert int(barcode[3]) == check(barcode[:3] + barcode[4:])

    line = linha_digitavel(barcode)
    assert len(line) == 48 and line.isdigit()
    blocks = [line[i : i + 12] for i in range(0, 48, 12)]
    assert "".join(b[:11] for b in blocks) == barcode
    for block in blocks:
        assert int(block[11]) == check(block[:11])
    assert re.fullmatch(r"(\d{11}-\d )+", format_linha_digitavel(line) + " ")


def test_largest_value_fills_eleven_digits() -> None:
    barcode = build_barcode(Decimal("999999999.99"), "0042", _FREE)
    assert barcode[4:15] == "99999999999"
    assert parse_code(barcode).value == Decimal("999999999.99")


def test_mod11_remainders_zero_and_one_share_digit_zero() -> None:
    """The layout's modulo-11 exceptions; one digit has weight 2, so its sum is 2d."""
    assert mod11_digit("0") == 0  # sum 0, remainder 0
    assert mod11_digit("6") == 0  # sum 12, remainder 1
    assert mod11_digit("5") == 1  # sum 10, remainder 10
    assert mod11_digit("1") == 9  # sum 2, remainder 2


# ---------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, field, reason",
    [
        ({"value": Decimal("1000000000.00")}, "value", "max 999999999.99"),
        ({"value": Decimal("0")}, "value", "positive"),
        ({"value": Decimal("-5.00")}, "value", "positive"),
        ({"value": Decimal("1.001")}, "value", "fractions of a cent"),
        ({"value": Decimal("Infinity")}, "value", "finite"),
        ({"value": 10.0}, "value", "Decimal"),
        ({"value": 10}, "value", "Decimal"),
        ({"company_code": "123"}, "company_code", "must be 4 digits"),
        ({"company_code": "12345"}, "company_code", "must be 4 digits"),
        ({"company_code": "12a4"}, "company_code", "digits only"),
        ({"company_code": "١٢٣٤"}, "company_code", "digits only"),  # Arabic-Indic
        ({"company_code": 42}, "company_code", "string"),
        ({"free_field": _FREE + "0"}, "free_field", "must be 25 digits"),
        ({"free_field": _FREE[:-1]}, "free_field", "must be 25 digits"),
        ({"free_field": _FREE[:-1] + "x"}, "free_field", "digits only"),
        ({"value_id": 7}, "value_id", "6 (modulo 10) or 8"),
        ({"value_id": 9}, "value_id", "6 (modulo 10) or 8"),
    ],
)
def test_bad_barcode_input_names_field_and_reason(
    kwargs: dict[str, object], field: str, reason: str
) -> None:
    args: dict[str, object] = {
        "value": Decimal("10.00"), "company_code": "0042", "free_field": _FREE, **kwargs
    }
    with pytest.raises(PaymentCodeError) as info:
        build_barcode(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert reason in info.value.reason, str(info.value)
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "bill, due, field, reason",
    [
        (0, date(2026, 1, 1), "bill_number", "between 1 and"),
        (10**17, date(2026, 1, 1), "bill_number", "between 1 and"),
        (True, date(2026, 1, 1), "bill_number", "integer"),
        ("12", date(2026, 1, 1), "bill_number", "integer"),
        (1, "2026-01-01", "due", "date"),
    ],
)
def test_bad_free_field_input(bill: object, due: object, field: str, reason: str) -> None:
    with pytest.raises(PaymentCodeError) as info:
        bill_free_field(bill, due)  # type: ignore[arg-type]
    assert info.value.field == field
    assert reason in info.value.reason


@pytest.mark.parametrize(
    "free, reason",
    [
        ("2026130100000000000000123", "not a due date"),
        ("2026123100000000000000000", "no bill number"),
        ("20261231", "must be 25 digits"),
    ],
)
def test_parse_bill_free_field_refuses(free: str, reason: str) -> None:
    with pytest.raises(PaymentCodeError, match=reason):
        parse_bill_free_field(free)


def _valid(value_id: int = 6) -> str:
    return build_barcode(Decimal("10.00"), "0042", _FREE, value_id=value_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code, field, reason",
    [
        ("", "code", "not 0"),
        ("8" * 45, "code", "not 45"),
        ("83a" + "0" * 41, "code", "only digits"),
        ("7" + _valid()[1:], "position 1", "product must be 8"),
        ("88" + _valid()[2:], "position 2", "segment 8 does not exist"),
        ("80" + _valid()[2:], "position 2", "segment 0 does not exist"),
        ("86" + _valid()[2:], "position 2", "segment 6"),
        ("837" + _valid()[3:], "position 3", "not supported"),
        ("839" + _valid()[3:], "position 3", "not supported"),
        ("835" + _valid()[3:], "position 3", "must be 6, 7, 8 or 9"),
    ],
)
def test_parse_refuses_bad_codes_with_reason(code: str, field: str, reason: str) -> None:
    with pytest.raises(PaymentCodeError) as info:
        parse_code(code)
    assert info.value.field == field
    assert reason in info.value.reason, str(info.value)


def test_linha_and_format_refuse_the_wrong_kind_of_code() -> None:
    barcode = _valid()
    line = linha_digitavel(barcode)
    with pytest.raises(PaymentCodeError, match="barcode: must be 44 digits"):
        linha_digitavel(line)
    with pytest.raises(PaymentCodeError, match="linha: must be the 48 digits"):
        format_linha_digitavel(barcode)
    broken = barcode[:3] + str((int(barcode[3]) + 1) % 10) + barcode[4:]
    with pytest.raises(PaymentCodeError, match="position 4: general check digit"):
        linha_digitavel(broken)


# ---------------------------------------------------------------------------
# Properties

_VALUES = st.integers(min_value=1, max_value=99_999_999_999).map(lambda c: Decimal(c).scaleb(-2))
_COMPANY = st.from_regex(r"[0-9]{4}", fullmatch=True)
_FREE_FIELDS = st.from_regex(r"[0-9]{25}", fullmatch=True)
_VALUE_IDS = st.sampled_from([6, 8])


@given(value=_VALUES, company=_COMPANY, free=_FREE_FIELDS, value_id=_VALUE_IDS)
def test_parse_of_build_round_trips(value: Decimal, company: str, free: str, value_id: int) -> None:
    barcode = build_barcode(value, company, free, value_id=value_id)  # type: ignore[arg-type]
    expected = Arrecadacao(3, value_id, value, company, free)  # type: ignore[arg-type]
    assert parse_code(barcode) == expected
    assert parse_code(linha_digitavel(barcode)) == expected
    assert parse_code(format_linha_digitavel(linha_digitavel(barcode))) == expected


@given(
    bill=st.integers(min_value=1, max_value=10**17 - 1),
    due=st.dates(min_value=date(1000, 1, 1)),
)
def test_bill_free_field_round_trips(bill: int, due: date) -> None:
    free = bill_free_field(bill, due)
    assert len(free) == 25 and free.isdigit()
    assert parse_bill_free_field(free) == (bill, due)


@given(
    value=_VALUES, company=_COMPANY, free=_FREE_FIELDS,
    position=st.integers(min_value=0), delta=st.integers(min_value=1, max_value=9),
)
def test_modulo10_catches_any_single_wrong_digit(
    value: Decimal, company: str, free: str, position: int, delta: int
) -> None:
    """Value identifier 6 (the default): one wrong digit anywhere is always caught,
    in the barcode by the general digit and in the linha by its block's digit."""
    barcode = build_barcode(value, company, free)
    for code in (barcode, linha_digitavel(barcode)):
        i = position % len(code)
        wrong = code[:i] + str((int(code[i]) + delta) % 10) + code[i + 1 :]
        with pytest.raises(PaymentCodeError):
            parse_code(wrong)


# ---------------------------------------------------------------------------
# ITF bars


@pytest.mark.parametrize(
    "digits, modules",
    [
        ("87654321", "101011101010111000100010001110111000101010001000111010111010001110101011100011101"),
        ("602003", "101010111011100010001010111010001000111010001000111011101011101"),
    ],
)
def test_itf_modules_match_zint(digits: str, modules: str) -> None:
    assert itf_modules(digits) == modules


@pytest.mark.parametrize(
    "bad, reason", [("", "non-empty"), ("123", "even number"), ("12a4", "digits"), ("١٢", "digits")]
)
def test_itf_modules_refuses_bad_digits(bad: str, reason: str) -> None:
    with pytest.raises(PaymentCodeError, match=reason):
        itf_modules(bad)


@pytest.mark.parametrize("bad", ["", "12 3", "x", "١٢"])
def test_check_digit_functions_refuse_non_digits(bad: str) -> None:
    for digit in (mod10_digit, mod11_digit):
        with pytest.raises(PaymentCodeError, match="digits: must be a non-empty string of digits"):
            digit(bad)


def test_itf_svg_draws_the_barcode() -> None:
    barcode = TAGLIATTI_ENERGY_BARCODE
    svg = itf_svg(barcode)
    assert svg.startswith("<svg")  # no XML declaration: inlined in HTML
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.findtext(f"{SVG}title") == "Código de barras"
    assert root.findtext(f"{SVG}desc") == barcode
    _, _, width, height = (int(v) for v in root.attrib["viewBox"].split())
    bars = root.findall(f"{SVG}g/{SVG}rect")
    assert len(bars) == 2 + 22 * 5 + 2 == 114

    # Redraw the modules from the rectangles: they are the ITF of the digits,
    # after a 10-module quiet zone, with 10 more at the end.
    drawn = ["0"] * width
    for bar in bars:
        x, w = int(bar.attrib["x"]), int(bar.attrib["width"])
        assert int(bar.attrib["height"]) == height
        drawn[x : x + w] = ["1"] * w
    modules = itf_modules(barcode)
    assert "".join(drawn) == "0" * 10 + modules + "0" * 10
    assert {int(b.attrib["width"]) for b in bars} == {1, 3}


def test_itf_svg_refuses_invalid_barcode_and_linha() -> None:
    barcode = TAGLIATTI_ENERGY_BARCODE
    with pytest.raises(PaymentCodeError, match="position 4"):
        itf_svg(barcode[:3] + "0" + barcode[4:])
    with pytest.raises(PaymentCodeError, match="must be 44 digits"):
        itf_svg(_digits(TAGLIATTI_ENERGY))
