"""The one number grammar (meterd.numbers), spelling by spelling, over every way in.

Each spelling has one defined answer: the value it stands for, or the error
code that refuses it. The table is checked against the pure functions, a CSV
datagram through the screen every UDP datagram passes, and a JSON string in
an HTTP body, so no transport can drift from the others.
"""

from __future__ import annotations

import decimal
import json
import time
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from meterd.datagram import parse_payload
from meterd.numbers import MAX_EXPONENT, exact
from meterd.readings import InvalidField, as_int, kwh_to_wh, parse_reading, parse_rounding, timestamp_us
from meterd.screen import Rejected, Screen
from tests.support import LiveServer

NOW_S = 1_796_588_600.0
CID = "12345678909"

# valor: (spelling, Wh when exact, Wh when rounded half up to the Wh: unauthenticated readings)
VALOR: list[tuple[Any, int | str, int | str]] = [
    ("12.5", 12_500, 12_500),
    ("7.25", 7_250, 7_250),
    ("0", 0, 0),
    ("-0", 0, 0),
    ("1.50", 1_500, 1_500),
    ("15e-1", 1_500, 1_500),
    ("1.2345E2", 123_450, 123_450),
    ("  2.5\t", 2_500, 2_500),  # ASCII blanks around the number
    ("104.9803105991331", "too_precise", 104_980),
    ("0.0005", "too_precise", 1),  # half up
    ("0.0004999999999999", "too_precise", 0),
    ("1.0009999999999999999999999999999", "too_precise", 1_001),  # never rounded before it is checked
    ("1e-999999999", "invalid_number", "invalid_number"),  # an exponent past the bound: not stored as 0
    ("1e999999999", "invalid_number", "invalid_number"),
    (f"1e{MAX_EXPONENT + 1}", "invalid_number", "invalid_number"),
    ("1e12", 10**15, 10**15),
    ("1e13", "out_of_range", "out_of_range"),
    ("1_000", "invalid_number", "invalid_number"),
    ("１０", "invalid_number", "invalid_number"),  # fullwidth digits
    ("٣", "invalid_number", "invalid_number"),  # Arabic-Indic three
    ("\u00a02.5", "invalid_number", "invalid_number"),  # a no-break space is not an ASCII blank
    ("+1", "invalid_number", "invalid_number"),
    ("007", "invalid_number", "invalid_number"),
    (".5", "invalid_number", "invalid_number"),
    ("5.", "invalid_number", "invalid_number"),
    ("1e", "invalid_number", "invalid_number"),
    ("0x10", "invalid_number", "invalid_number"),
    ("NaN", "invalid_number", "invalid_number"),
    ("Infinity", "invalid_number", "invalid_number"),
    ("-1", "negative", "negative"),
    ("-0.001", "negative", "negative"),
    (1.5, 1_500, 1_500),
    (104.9803105991331, "too_precise", 104_980),
    (float("inf"), "not_finite", "not_finite"),
    (True, "invalid_type", "invalid_type"),
    ([1], "invalid_type", "invalid_type"),
]

# id_medidor: (spelling, the integer, or the error code)
METER: list[tuple[Any, int | str]] = [
    ("1", 1),
    (" 1 ", 1),
    ("1.0", 1),
    ("1e0", 1),
    ("10e-1", 1),
    (1, 1),
    (1.0, 1),
    ("01", "invalid_number"),
    ("１", "invalid_number"),
    ("1_0", "invalid_number"),
    ("1.5", "invalid_integer"),
    ("0", "out_of_range"),
    ("2147483648", "out_of_range"),
    ("1e30", "out_of_range"),
    ("1e-999999999", "invalid_number"),
]

# timestamp: (spelling, microseconds, or the error code)
TIMESTAMP: list[tuple[Any, int | str]] = [
    ("1796588566.0803108", 1_796_588_566_080_311),  # finer than a microsecond: half up
    ("1796588566.08031049", 1_796_588_566_080_310),
    ("1796588566.000001", 1_796_588_566_000_001),
    ("1796588566", 1_796_588_566_000_000),
    ("1.7e9", 1_700_000_000_000_000),
    (1796588566.0803108, 1_796_588_566_080_311),
    ("１７９６５８８５６６", "invalid_number"),
    ("946684799.9999994", "timestamp_too_old"),
    ("946684799.9999995", 946_684_800_000_000),  # rounds to 2000-01-01 exactly
    ("1796588900.000001", "timestamp_in_future"),
    ("1e30", "timestamp_in_future"),
    ("-1", "timestamp_too_old"),
]


def _answer(convert: Any, value: Any) -> int | str:
    try:
        return convert(value)
    except InvalidField as e:
        return e.code


@pytest.mark.parametrize(("spelling", "strict", "rounded"), VALOR)
def test_valor_spellings(spelling: Any, strict: int | str, rounded: int | str) -> None:
    assert _answer(lambda v: kwh_to_wh("valor", v), spelling) == strict
    assert _answer(lambda v: kwh_to_wh("valor", v, round_to_wh=True), spelling) == rounded


@pytest.mark.parametrize(("spelling", "expected"), METER)
def test_integer_spellings(spelling: Any, expected: int | str) -> None:
    assert _answer(lambda v: as_int("id_medidor", v, minimum=1, maximum=2**31 - 1), spelling) == expected


@pytest.mark.parametrize(("spelling", "expected"), TIMESTAMP)
def test_timestamp_spellings(spelling: Any, expected: int | str) -> None:
    assert _answer(lambda v: timestamp_us(v, NOW_S), spelling) == expected


def _csv_safe(spelling: Any) -> bool:
    return isinstance(spelling, str) and not set(spelling) & set(",\r\n")


@pytest.mark.parametrize(("spelling", "strict", "rounded"), [row for row in VALOR if _csv_safe(row[0])])
def test_a_csv_datagram_gives_the_same_answers(spelling: str, strict: int | str, rounded: int | str) -> None:
    """Unsigned CSV (--no-auth) is rounded; the same fields signed would be strict."""
    payload = f"{CID},1,{spelling},1796588566.5".encode()
    fields = parse_payload(payload)
    assert _answer(lambda f: parse_reading(f, NOW_S).wh, fields) == strict
    assert _answer(lambda f: parse_rounding(f, NOW_S)[0].wh, fields) == rounded
    counted: list[int] = []
    screen = Screen(lambda meter: b"k" * 32, require_signature=False, on_rounded=lambda: counted.append(1))
    try:
        answer: int | str = screen.reading(payload, NOW_S).wh
    except Rejected as e:
        answer = e.reason
    assert answer == rounded
    assert len(counted) == (isinstance(strict, str) and isinstance(rounded, int))


@given(st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False))
def test_every_plain_decimal_spelling_is_read_exactly(value: Any) -> None:
    """Whatever the digits, the value is the decimal's: exact when it has 3 decimals or fewer, else refused."""
    text = format(value, "f")
    with decimal.localcontext() as exact_arithmetic:
        exact_arithmetic.prec = 1000  # more digits than any example: the product is never rounded
        thousandths = value * 1000
    if thousandths == thousandths.to_integral_value():
        assert kwh_to_wh("valor", text) == int(thousandths)
    else:
        assert _answer(lambda v: kwh_to_wh("valor", v), text) == "too_precise"


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=0, max_value=25))
def test_zeros_and_exponents_do_not_change_a_value(digits: int, shift: int) -> None:
    plain = str(digits)
    assert exact("n", plain) == exact("n", f"{plain}{'0' * shift}e-{shift}") == exact("n", digits)


@pytest_twisted.ensureDeferred
async def test_http_answers_each_valor_spelling_as_the_table_says(open_server: LiveServer) -> None:
    """Over HTTP without credentials (--no-auth: rounded), and with the operator's token (strict)."""
    server = open_server
    assert (await server.call("POST", "/cadCliente", token=None, json_body={"id": CID, "name": "Ana"}))[0] == 201
    assert (await server.call("POST", "/cadMedidor", token=None, json_body={"id": CID}))[0] == 201
    stored = 0
    for n, (spelling, strict, rounded) in enumerate(VALOR):
        if isinstance(spelling, float) and spelling != spelling * 0:  # JSON has no infinity
            continue
        for token, expected in ((None, rounded), (server.token, strict)):
            ts = 1_796_000_000 + 2 * n + (token is not None)  # 2026-11-30, an interval meter: any order
            status, body, _ = await server.call(
                "POST", "/postConsumo", token=token,
                data=json.dumps({"id": CID, "id_medidor": 1, "valor": spelling, "timestamp": ts}).encode(),
            )
            if isinstance(expected, int):
                assert status == 201, (spelling, token, body)
                stored += expected
            else:
                assert (status, body["error"]["code"]) == (400, expected), (spelling, token, body)
    status, year, _ = await server.call("GET", "/getConsumoHist", token=None, params={"id": CID, "kind": "Y", "periodo": str(time.gmtime().tm_year - 2026)})
    assert status == 200 and round(year["total_kwh"] * 1000) == stored
