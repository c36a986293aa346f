"""Pix "copia e cola" (meterd.pix): published vectors, layout rules, bad input.

Where the vectors come from:

* CRC: ``"123456789"`` -> ``0x29B1`` is the "check" value of CRC-16/IBM-3740
  (alias CRC-16/CCITT-FALSE) in Greg Cook's *Catalogue of parametrised CRC
  algorithms* (reveng.sourceforge.io), the usual reference for CRC parameters.
* ``BCB_MANUAL``: the static BR Code example of the Banco Central's *Manual de
  Padrões para Iniciação do Pix* (key ``123e4567-...``, "Fulano de Tal",
  BRASILIA, CRC ``1D3D``), also used as a fixture by stone-payments/ex-pix-brcode.
* ``STARK_BANK``: the expected output of the static-code test of Stark Bank's
  brcode-python (github.com/starkbank/brcode-python,
  ``brcode/tests/brcodeTests/testStaticBrcode.py``): amount 125.00, a name cut
  to 25 characters, "São Paulo" without its accent, a 25-character txid.
* ``PIX_UTILS``: ``STATIC_TEST_EMV`` of thalesog/pix-utils (``tests/emvCodes.ts``;
  its ``tests/crc.test.ts`` expects CRC ``4367``), a code with a field this
  module does not write (26/02, "Pedido 123"); the same suite normalises the
  city ``"SÃO MIGUÉL DO O"`` to ``"SAO MIGUEL DO O"``.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd import taxid
from meterd.paycodes import PaymentCodeError
from meterd.pix import (
    BRCode,
    brcode,
    crc16,
    normalize_text,
    parse_brcode,
    qr_svg,
    txid_for_bill,
    validate_key,
)

BCB_MANUAL = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)
STARK_BANK = (
    "00020126360014br.gov.bcb.pix0114arya@stark.com5204000053039865406125.00"
    "5802BR5925Arya Stark with a very lo6009Sao Paulo62290525verylongreconcil"
    "iationidt630466F4"
)
PIX_UTILS = (
    "00020126510014br.gov.bcb.pix0115thalesog@me.com0210Pedido 123520400005303"
    "986540510.005802BR5914Thales Ogliari6015SAO MIGUEL DO O62070503***63044367"
)

GOOD = dict(
    key="pix@energia.example",
    name="Companhia Fictícia de Energia",
    city="São Paulo",
    amount=Decimal("187.43"),
    txid="FAT00000000000000123",
)


def _with_crc(body: str) -> str:
    """A payload body (ending in ``6304``) completed with its right CRC.

    Lets the tests build codes that are wrong in one field but not in the CRC,
    so the parser's other checks are what refuses them.
    """
    assert body.endswith("6304")
    return body + f"{crc16(body):04X}"


# ---------------------------------------------------------------------------
# Published vectors


def test_crc16_catalogue_check_value() -> None:
    assert crc16("123456789") == 0x29B1


@pytest.mark.parametrize(
    "payload, crc",
    [(BCB_MANUAL, 0x1D3D), (STARK_BANK, 0x66F4), (PIX_UTILS, 0x4367)],
    ids=["bcb-manual", "stark-bank", "pix-utils"],
)
def test_crc16_of_published_codes(payload: str, crc: int) -> None:
    assert crc16(payload[:-4]) == crc


def test_parse_bcb_manual_example() -> None:
    assert parse_brcode(BCB_MANUAL) == BRCode(
        key="123e4567-e12b-12d1-a456-426655440000",
        name="Fulano de Tal",
        city="BRASILIA",
        amount=None,
        txid="***",
    )


def test_build_reproduces_stark_bank_vector() -> None:
    built = brcode(
        key="arya@stark.com",
        name="Arya Stark with a very long name",
        city="São Paulo",
        amount=Decimal("125.00"),
        txid="verylongreconciliationidt",
    )
    assert built == STARK_BANK


def test_parse_pix_utils_code_with_extra_field() -> None:
    assert parse_brcode(PIX_UTILS) == BRCode(
        key="thalesog@me.com",
        name="Thales Ogliari",
        city="SAO MIGUEL DO O",
        amount=Decimal("10.00"),
        txid="***",
    )


def test_city_normalised_like_pix_utils() -> None:
    assert normalize_text("SÃO MIGUÉL DO O", 15) == "SAO MIGUEL DO O"


# ---------------------------------------------------------------------------
# Layout


def test_fields_in_order_with_their_lengths() -> None:
    payload = brcode(**GOOD)  # type: ignore[arg-type]
    assert payload == (
        "000201"
        "26410014br.gov.bcb.pix0119pix@energia.example"
        "52040000"
        "5303986"
        "5406187.43"
        "5802BR"
        "5925Companhia Ficticia de Ene"
        "6009Sao Paulo"
        "62240520FAT00000000000000123"
        "6304"
    ) + payload[-4:]
    assert crc16(payload[:-4]) == int(payload[-4:], 16)
    assert payload[-4:] == payload[-4:].upper()


@pytest.mark.parametrize(
    "amount, text",
    [
        (Decimal("0.01"), "0.01"),
        (Decimal("1"), "1.00"),
        (Decimal("10.5"), "10.50"),
        (Decimal("9999999999.99"), "9999999999.99"),  # 13 characters
    ],
)
def test_amount_has_two_decimals_and_a_dot(amount: Decimal, text: str) -> None:
    payload = brcode(**{**GOOD, "amount": amount})  # type: ignore[arg-type]
    assert f"54{len(text):02d}{text}5802BR" in payload
    assert parse_brcode(payload).amount == amount


def test_name_and_city_cut_to_layout_limits() -> None:
    payload = brcode(**{**GOOD, "name": "N" * 40, "city": "C" * 40})  # type: ignore[arg-type]
    parsed = parse_brcode(payload)
    assert parsed.name == "N" * 25
    assert parsed.city == "C" * 15


def test_cut_does_not_leave_a_trailing_space() -> None:
    assert normalize_text("Companhia de Energia do X", 20) == "Companhia de Energia"
    assert normalize_text("Companhia de Energia do X", 21) == "Companhia de Energia"


def test_normalize_text_removes_accents_and_folds_spaces() -> None:
    assert normalize_text("  Ação\tÚnica  Çia ", 25) == "Acao Unica Cia"
    assert normalize_text("Fulano de Tal", 25) == "Fulano de Tal"  # case kept


def test_txid_for_bill_is_fixed_width_and_valid() -> None:
    assert txid_for_bill(1) == "FAT00000000000000001"
    assert txid_for_bill(10**17 - 1) == "FAT99999999999999999"
    assert len(txid_for_bill(42)) == 20
    payload = brcode(**{**GOOD, "txid": txid_for_bill(42)})  # type: ignore[arg-type]
    assert parse_brcode(payload).txid == "FAT00000000000000042"


# ---------------------------------------------------------------------------
# Keys

VALID_KEYS = [
    taxid.make_cpf("123456789"),
    taxid.make_cnpj("112223330001"),
    "+5511987654321",
    "fulano_da_silva.recebedor@example.com",
    "123e4567-e12b-12d1-a456-426655440000",
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key, reason",
    [
        ("", "empty"),
        ("12345678900", "not a valid CPF"),
        ("11222333000100", "not a valid CNPJ"),
        ("123456789012", "neither a CPF (11) nor a CNPJ (14)"),
        ("11987654321", "not a valid CPF"),  # a phone without +55
        ("+551187654321", "phone key"),  # landline: 8 digits
        ("+5511 98765-4321", "phone key"),
        ("Fulano@Example.com", "e-mail key"),
        ("fulano@localhost", "e-mail key"),
        ("a" * 71 + "@ex.com", "longer than 77"),
        ("123E4567-E12B-12D1-A456-426655440000", "not a Pix key"),
        ("123e4567e12b12d1a456426655440000", "not a Pix key"),
    ],
)
def test_bad_keys_are_refused_with_reason(key: str, reason: str) -> None:
    with pytest.raises(PaymentCodeError) as info:
        validate_key(key)
    assert info.value.field == "key"
    assert reason in str(info.value)


# ---------------------------------------------------------------------------
# Bad input to brcode


@pytest.mark.parametrize(
    "change, field, reason",
    [
        ({"amount": Decimal("0")}, "amount", "positive"),
        ({"amount": Decimal("-1.00")}, "amount", "positive"),
        ({"amount": Decimal("10000000000.00")}, "amount", "max 9999999999.99"),
        ({"amount": Decimal("1.005")}, "amount", "fractions of a cent"),
        ({"amount": Decimal("NaN")}, "amount", "finite"),
        ({"amount": 1.5}, "amount", "Decimal"),
        ({"amount": 2}, "amount", "Decimal"),
        ({"txid": ""}, "txid", "letters or digits"),
        ({"txid": "A" * 26}, "txid", "letters or digits"),
        ({"txid": "FAT-1"}, "txid", "letters or digits"),
        ({"txid": "***"}, "txid", "letters or digits"),
        ({"name": "   "}, "name", "empty"),
        ({"name": "Energia – Cia"}, "name", "ASCII only"),
        ({"city": "€"}, "city", "ASCII only"),
        ({"city": None}, "city", "string"),
        ({"key": "not a key"}, "key", "not a Pix key"),
    ],
)
def test_bad_brcode_input_names_field_and_reason(
    change: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(PaymentCodeError) as info:
        brcode(**{**GOOD, **change})  # type: ignore[arg-type]
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("bad", [0, -1, 10**17, True, "12", 1.0])
def test_txid_for_bill_refuses_bad_numbers(bad: object) -> None:
    with pytest.raises(PaymentCodeError) as info:
        txid_for_bill(bad)  # type: ignore[arg-type]
    assert info.value.field == "bill_number"


# ---------------------------------------------------------------------------
# Parser refuses broken codes

_BODY = (
    "000201" "26410014br.gov.bcb.pix0119pix@energia.example" "52040000" "5303986"
    "5406187.43" "5802BR" "5913Energia Teste" "6009Sao Paulo" "62240520FAT00000000000000123"
    "6304"
)


def test_reference_body_is_valid() -> None:
    assert parse_brcode(_with_crc(_BODY)).txid == "FAT00000000000000123"


@pytest.mark.parametrize(
    "old, new, field, reason",
    [
        ("000201", "000202", "field 00", "start with 000201"),
        ("5303986", "5303840", "field 53", "986"),
        ("5802BR", "5802US", "field 58", "BR"),
        ("5913Energia Teste", "5926Energia Teste Energia Test", "field 59", "1 to 25"),
        ("6009Sao Paulo", "6016Sao Paulo Sao Pa", "field 60", "1 to 15"),
        ("6009Sao Paulo", "", "field 60", "missing"),
        ("5406187.43", "5406187,43", "field 54", "amount"),
        ("5406187.43", "5414123456789012.3", "field 54", "13 characters"),
        ("5406187.43", "5405187.4", None, None),  # one decimal: valid EMV
        ("62240520FAT00000000000000123", "", "field 62", "missing"),
        ("62240520FAT00000000000000123", "62080504FAT-", "field 62.05", "letters or digits"),
        ("0014br.gov.bcb.pix", "0014BR.GOV.BCB.PIX", None, None),  # GUI in any case
        ("0014br.gov.bcb.pix", "0014br.gov.bcb.pux", "field 26", "no merchant account"),
        ("0119pix@energia.example", "0119Pix@energia.example", "field 26.01", "e-mail key"),
        ("52040000", "52040000" "52040000", "field 52", "twice"),
        ("5406187.43", "5499187.43", "field 54", "declares 99 characters"),
    ],
)
def test_parser_refuses_each_broken_field(
    old: str, new: str, field: str | None, reason: str | None
) -> None:
    assert old in _BODY
    body = _BODY.replace(old, new, 1)
    payload = _with_crc(body)
    if field is None:
        parse_brcode(payload)
        return
    with pytest.raises(PaymentCodeError) as info:
        parse_brcode(payload)
    assert info.value.field == field, str(info.value)
    assert reason is not None and reason in info.value.reason, str(info.value)


def test_parser_refuses_wrong_crc_and_lower_case_crc() -> None:
    good = _with_crc(_BODY)
    wrong = good[:-4] + ("0000" if good[-4:] != "0000" else "0001")
    with pytest.raises(PaymentCodeError, match="field 63: CRC is"):
        parse_brcode(wrong)
    if good[-4:] != good[-4:].lower():
        with pytest.raises(PaymentCodeError, match="upper-case hex"):
            parse_brcode(good[:-4] + good[-4:].lower())


def test_parser_refuses_truncated_and_non_ascii_payloads() -> None:
    good = _with_crc(_BODY)
    with pytest.raises(PaymentCodeError, match="declares"):
        parse_brcode(good[:-2])
    with pytest.raises(PaymentCodeError, match="printable ASCII"):
        parse_brcode(good.replace("Sao Paulo", "São Paulo"))
    with pytest.raises(PaymentCodeError, match="2-digit ID"):
        parse_brcode("0002010")
    with pytest.raises(PaymentCodeError, match="start with 000201"):
        parse_brcode("")


# ---------------------------------------------------------------------------
# Properties

_ASCII_WORD = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8
)


def _label(limit: int) -> st.SearchStrategy[str]:
    """Already-normalised names: printable ASCII words, single spaces, <= limit."""
    return (
        st.lists(_ASCII_WORD, min_size=1, max_size=6)
        .map(" ".join)
        .map(lambda s: s[:limit].rstrip())
    )


_AMOUNTS = st.integers(min_value=1, max_value=999_999_999_999).map(
    lambda cents: Decimal(cents).scaleb(-2)
)
_KEYS = st.one_of(
    st.sampled_from(VALID_KEYS),
    st.uuids().map(str),
    st.from_regex(r"\+55[1-9]{2}9[0-9]{8}", fullmatch=True),
)


@given(
    key=_KEYS,
    name=_label(25),
    city=_label(15),
    amount=_AMOUNTS,
    txid=st.from_regex(r"[A-Za-z0-9]{1,25}", fullmatch=True),
)
def test_parse_of_build_round_trips(
    key: str, name: str, city: str, amount: Decimal, txid: str
) -> None:
    payload = brcode(key=key, name=name, city=city, amount=amount, txid=txid)
    assert parse_brcode(payload) == BRCode(key, name, city, amount, txid)


@given(
    position=st.integers(min_value=0),
    replacement=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)
def test_any_changed_character_is_detected(position: int, replacement: str) -> None:
    """A single wrong character (a typo in a pasted code) never parses as valid.

    CRC-16 catches every error confined to 16 consecutive bits, so a changed
    character is caught by the CRC if nothing else catches it first.
    """
    payload = brcode(**GOOD)  # type: ignore[arg-type]
    i = position % len(payload)
    if payload[i] == replacement:
        return
    with pytest.raises(PaymentCodeError):
        parse_brcode(payload[:i] + replacement + payload[i + 1 :])


@given(bill=st.integers(min_value=1, max_value=10**17 - 1))
def test_txid_for_bill_is_injective_and_valid(bill: int) -> None:
    txid = txid_for_bill(bill)
    assert int(txid.removeprefix("FAT")) == bill
    assert txid.isalnum() and len(txid) <= 25


# ---------------------------------------------------------------------------
# QR


def test_qr_svg_is_inline_svg_with_title_and_text() -> None:
    payload = brcode(**GOOD)  # type: ignore[arg-type]
    svg = qr_svg(payload)
    assert svg.startswith("<svg")  # no <?xml ...?>: it is inlined in HTML
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert root.findtext(f"{ns}title") == "QR Code Pix"
    assert root.findtext(f"{ns}desc") == payload
    # Scalable: a square viewBox, no fixed size.
    x, y, w, h = (int(v) for v in root.attrib["viewBox"].split())
    assert (x, y) == (0, 0) and w == h
    assert "width" not in root.attrib and "height" not in root.attrib
    # Version 1..40 plus a 4-module quiet zone on each side.
    assert (w - 8 - 17) % 4 == 0 and 21 <= w - 8 <= 177


def test_qr_svg_refuses_an_invalid_code() -> None:
    payload = brcode(**GOOD)  # type: ignore[arg-type]
    with pytest.raises(PaymentCodeError, match="field 63"):
        qr_svg(payload[:-1] + ("0" if payload[-1] != "0" else "1"))


def test_uuid_keys_from_the_stdlib_are_valid() -> None:
    key = str(uuid.uuid4())
    assert validate_key(key) == key
