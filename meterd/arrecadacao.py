"""FEBRABAN "arrecadação" payment codes: the 44-digit barcode, the 48-digit
linha digitável, their validator and the ITF bars.

Utility bills in Brazil are paid at any bank, lottery shop or banking app with
the barcode of FEBRABAN's *Layout Padrão de Arrecadação/Recebimento com
Utilização do Código de Barras* (not the "boleto" of bank collection, which
starts with a bank code).  The 44 digits, positions numbered from 1:

=========  ======  ==========================================================
position   size    content
=========  ======  ==========================================================
1          1       product: ``8`` (arrecadação)
2          1       segment: ``3`` (energia elétrica e gás)
3          1       value identifier: ``6`` effective value in reais, check
                   digits modulo 10; ``8`` the same with modulo 11
4          1       general check digit over the other 43 digits
5-15       11      value in cents, zero-padded
16-19      4       company code assigned by FEBRABAN
20-44      25      free field, the company's own (layout below)
=========  ======  ==========================================================

The free field this module writes (:func:`bill_free_field`): the due date as
``AAAAMMDD`` (positions 20-27, where decoders of this layout, such as the
febraban_barcode library, look for a date) followed by the bill number
zero-padded to 17 digits (positions 28-44).  The bank's return file carries the barcode back, so
the bill number in it is what reconciles a payment with its bill.

The linha digitável is what a payer types when the bars do not scan: the
barcode cut into four blocks of 11 digits, each followed by its own check
digit, in the modulus the value identifier names.

Pure module: no Twisted, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final, Literal

from meterd.paycodes import BILL_NUMBER_DIGITS, PaymentCodeError, check_bill_number, whole_cents

__all__ = [
    "Arrecadacao",
    "bill_free_field",
    "build_barcode",
    "format_linha_digitavel",
    "itf_modules",
    "itf_svg",
    "linha_digitavel",
    "mod10_digit",
    "mod11_digit",
    "parse_bill_free_field",
    "parse_code",
]

ValueId = Literal[6, 8]

BARCODE_LENGTH: Final = 44
LINE_LENGTH: Final = 48
FREE_FIELD_LENGTH: Final = 25
PRODUCT: Final = 8
SEGMENT_ENERGY: Final = 3
#: 11 digits of cents.
MAX_VALUE: Final = Decimal("999999999.99")

_DIGITS: Final = frozenset("0123456789")
#: A digit weighted 2 by modulo 10: the sum of the digits of its double.
_DOUBLED: Final = str.maketrans("0123456789", "0246813579")
_SEPARATORS: Final = str.maketrans("", "", " .-")
# Segments 1-7 and 9 exist; 6 ("carnês e assemelhados") identifies the company
# by 8 digits of its CNPJ instead of a 4-digit code, a layout not handled here.
_SEGMENTS: Final = frozenset({1, 2, 3, 4, 5, 7, 9})
_BLOCK: Final = 11

# Interleaved 2 of 5: each digit is five elements, two of them wide.
_ITF_WIDTHS: Final = (
    "nnwwn", "wnnnw", "nwnnw", "wwnnn", "nnwnw",
    "wnwnn", "nwwnn", "nnnww", "wnnwn", "nwnwn",
)
_ITF_START: Final = "1010"  # narrow bar, narrow space, narrow bar, narrow space
_ITF_STOP: Final = "11101"  # wide bar, narrow space, narrow bar
_WIDE: Final = 3  # narrow:wide = 1:3
_QUIET: Final = 10  # blank modules each side, so a scanner finds the start
_BAR_HEIGHT: Final = 60  # in narrow modules: forgiving of a tilted hand scanner


@dataclass(frozen=True)
class Arrecadacao:
    """What a valid arrecadação code says, as :func:`parse_code` reads it."""

    segment: int
    value_id: ValueId
    value: Decimal  # reais, 2 decimals
    company_code: str  # 4 digits
    free_field: str  # 25 digits


# ---------------------------------------------------------------------------
# Check digits


def mod10_digit(digits: str) -> int:
    """FEBRABAN's modulo-10 check digit of ``digits``.

    Weights 2, 1, 2, 1... from the right; a product above 9 counts as the sum
    of its two digits; the digit is what brings the sum up to a multiple of 10.
    """
    _any_digits(digits)
    backwards = digits[::-1]
    # the digits weighted 2 become the digit sums of their doubles (one table lookup each)
    total = sum(map(int, backwards[0::2].translate(_DOUBLED))) + sum(map(int, backwards[1::2]))
    return -total % 10


def mod11_digit(digits: str) -> int:
    """FEBRABAN's modulo-11 check digit of ``digits`` (arrecadação rule).

    Weights 2..9 from the right, repeating; the digit is ``11 - remainder``,
    except that remainders 0 and 1 give 0 (the layout says remainder 0 or 1
    gives 0 and remainder 10 gives 1, which ``11 - 10`` already is).
    """
    _any_digits(digits)
    total = sum(int(c) * (2 + i % 8) for i, c in enumerate(reversed(digits)))
    remainder = total % 11
    return 0 if remainder < 2 else 11 - remainder


def _check_digit(digits: str, value_id: int) -> int:
    return mod10_digit(digits) if value_id == 6 else mod11_digit(digits)


# ---------------------------------------------------------------------------
# Building


def bill_free_field(bill_number: int, due: date) -> str:
    """The 25-digit free field of a bill: ``AAAAMMDD`` due date + 17-digit bill number.

    17 digits are what is left after the date; they are also the digits the
    Pix txid gives the bill number (``meterd.pix.txid_for_bill``), so every bill
    number fits both codes.
    """
    check_bill_number(bill_number)
    if not isinstance(due, date):
        raise PaymentCodeError("due", f"must be a date, not {type(due).__name__}")
    return f"{due.year:04d}{due.month:02d}{due.day:02d}{bill_number:0{BILL_NUMBER_DIGITS}d}"


def parse_bill_free_field(free_field: str) -> tuple[int, date]:
    """``(bill_number, due)`` back from a free field written by :func:`bill_free_field`.

    For reconciliation: a bank's return file gives the barcode of each payment.
    """
    _digits("free_field", free_field, FREE_FIELD_LENGTH)
    try:
        due = date(int(free_field[0:4]), int(free_field[4:6]), int(free_field[6:8]))
    except ValueError as e:
        raise PaymentCodeError(
            "free_field", f"digits 1-8 are not a due date AAAAMMDD ({free_field[:8]})"
        ) from e
    bill_number = int(free_field[8:])
    if bill_number == 0:
        raise PaymentCodeError("free_field", "digits 9-25 hold no bill number")
    return bill_number, due


def build_barcode(
    value: Decimal, company_code: str, free_field: str, *, value_id: ValueId = 6
) -> str:
    """The 44-digit barcode of an energy bill (product 8, segment 3).

    ``value`` in reais, whole cents, positive and at most 999,999,999.99 (11
    digits of cents); ``company_code`` the 4 digits FEBRABAN assigned;
    ``free_field`` 25 digits (:func:`bill_free_field`).  ``value_id`` 6 makes
    every check digit modulo 10, 8 modulo 11, whichever the company's
    collection agreement with its banks names.  6 is the default because its
    digits catch every single mistyped digit, while this layout's modulo 11
    gives remainders 0 and 1 the same digit 0, so a typo that moves the sum
    between them goes unnoticed.  Bad input raises
    :class:`PaymentCodeError` naming the field; nothing is rounded or padded,
    since a changed digit would be a bill for another amount or another bill.
    """
    if value_id not in (6, 8):
        raise PaymentCodeError(
            "value_id", f"must be 6 (modulo 10) or 8 (modulo 11), not {value_id!r}"
        )
    cents = whole_cents(value, "value", MAX_VALUE)
    _digits("company_code", company_code, 4)
    _digits("free_field", free_field, FREE_FIELD_LENGTH)
    head = f"{PRODUCT}{SEGMENT_ENERGY}{value_id}"
    tail = f"{cents:011d}{company_code}{free_field}"
    return f"{head}{_check_digit(head + tail, value_id)}{tail}"


def linha_digitavel(barcode: str) -> str:
    """The 48-digit linha digitável of a valid 44-digit barcode.

    Four blocks of 11 digits, each followed by its check digit (modulo 10 for
    value identifier 6, modulo 11 for 8).
    """
    _checked_barcode(barcode)
    value_id = int(barcode[2])
    return "".join(
        block + str(_check_digit(block, value_id)) for block in _blocks(barcode)
    )


def format_linha_digitavel(line: str) -> str:
    """A linha digitável as printed on a bill: ``83640000001-1 33120138000-2 ...``.

    The hyphen sets each block's check digit apart, the way customers see it
    on every utility bill and type it in banking apps.
    """
    if not isinstance(line, str) or len(line) != LINE_LENGTH:
        raise PaymentCodeError("linha", f"must be the {LINE_LENGTH} digits of a linha digitável")
    parse_code(line)
    return " ".join(f"{line[i:i + _BLOCK]}-{line[i + _BLOCK]}" for i in range(0, LINE_LENGTH, 12))


def _digits(field: str, text: str, size: int) -> None:
    if not isinstance(text, str):
        raise PaymentCodeError(
            field, f"must be a string of {size} digits, not {type(text).__name__}"
        )
    if not (text.isascii() and text.isdigit()):
        raise PaymentCodeError(field, f"must be digits only (got {text!r})")
    if len(text) != size:
        raise PaymentCodeError(field, f"must be {size} digits (got {len(text)})")


def _any_digits(digits: str) -> None:
    if not isinstance(digits, str) or not digits or not (digits.isascii() and digits.isdigit()):
        raise PaymentCodeError("digits", "must be a non-empty string of digits")


def _blocks(barcode: str) -> list[str]:
    return [barcode[i : i + _BLOCK] for i in range(0, BARCODE_LENGTH, _BLOCK)]


# ---------------------------------------------------------------------------
# Validating


def parse_code(code: str) -> Arrecadacao:
    """Check an arrecadação barcode (44 digits) or linha digitável (48) and read it.

    Spaces, dots and hyphens are ignored, so a linha typed as printed
    (``83640000001-1 33120138000-2 ...``) is accepted.  Every check digit is
    recomputed: each block's (a linha only), which points at the block a typo
    is in, then the general one at position 4.  Raises
    :class:`PaymentCodeError` naming the position or block and the reason.
    Segment 6 (company identified by CNPJ) and value identifiers 7 and 9
    (reference values, not reais) are refused as not supported.
    """
    if not isinstance(code, str):
        raise PaymentCodeError("code", f"must be a string, not {type(code).__name__}")
    digits = code.translate(_SEPARATORS)
    if not all(c in _DIGITS for c in digits):
        raise PaymentCodeError("code", "only digits, spaces, dots and hyphens are allowed")
    if len(digits) == LINE_LENGTH:
        barcode = _barcode_of_line(digits)
    elif len(digits) == BARCODE_LENGTH:
        barcode = digits
    else:
        raise PaymentCodeError(
            "code",
            f"must have {BARCODE_LENGTH} digits (barcode) or {LINE_LENGTH} "
            f"(linha digitável), not {len(digits)}",
        )
    _checked_barcode(barcode)
    return Arrecadacao(
        segment=int(barcode[1]),
        value_id=6 if barcode[2] == "6" else 8,
        value=Decimal(int(barcode[4:15])).scaleb(-2),
        company_code=barcode[15:19],
        free_field=barcode[19:44],
    )


def _barcode_of_line(line: str) -> str:
    """The barcode inside a linha, after checking each block's own digit."""
    _header(line)
    value_id = int(line[2])
    blocks = []
    for n, start in enumerate(range(0, LINE_LENGTH, 12), start=1):
        block, given = line[start : start + _BLOCK], int(line[start + _BLOCK])
        expected = _check_digit(block, value_id)
        if given != expected:
            raise PaymentCodeError(
                f"block {n}",
                f"check digit is {given}, expected {expected} ({_modulus(value_id)})",
            )
        blocks.append(block)
    return "".join(blocks)


def _checked_barcode(barcode: str) -> None:
    """Refuse anything but a valid 44-digit barcode of the supported layout."""
    _digits("barcode", barcode, BARCODE_LENGTH)
    _header(barcode)
    value_id = int(barcode[2])
    given = int(barcode[3])
    expected = _check_digit(barcode[:3] + barcode[4:], value_id)
    if given != expected:
        raise PaymentCodeError(
            "position 4",
            f"general check digit is {given}, expected {expected} ({_modulus(value_id)})",
        )


def _header(digits: str) -> None:
    """Positions 1-3 (product, segment, value identifier), which say how to read the rest."""
    if digits[0] != str(PRODUCT):
        raise PaymentCodeError("position 1", f"product must be 8 (arrecadação), not {digits[0]}")
    segment = int(digits[1])
    if segment == 6:
        raise PaymentCodeError(
            "position 2", "segment 6 (company identified by CNPJ) is not supported"
        )
    if segment not in _SEGMENTS:
        raise PaymentCodeError("position 2", f"segment {segment} does not exist")
    value_id = digits[2]
    if value_id in "79":
        raise PaymentCodeError(
            "position 3",
            f"value identifier {value_id} (reference value, not reais) is not supported",
        )
    if value_id not in "68":
        raise PaymentCodeError(
            "position 3", f"value identifier must be 6, 7, 8 or 9, not {value_id}"
        )


def _modulus(value_id: int) -> str:
    return "modulo 10" if value_id == 6 else "modulo 11"


# ---------------------------------------------------------------------------
# Bars


def itf_modules(digits: str) -> str:
    """The Interleaved 2 of 5 symbol of ``digits`` as modules: ``"1"`` bar, ``"0"`` space.

    Start pattern (narrow bar, space, bar, space), then each pair of digits
    with the first one's five elements as bars and the second one's as the
    spaces between them, then the stop pattern (wide bar, narrow space, narrow
    bar).  A narrow element is one module, a wide one three.  ITF encodes
    digit pairs, hence an even count; the 44-digit barcode gives 2 + 22 * 5 + 2
    = 114 bars.
    """
    _any_digits(digits)
    if len(digits) % 2:
        raise PaymentCodeError("digits", f"ITF needs an even number of digits (got {len(digits)})")
    parts = [_ITF_START]
    for i in range(0, len(digits), 2):
        bars, spaces = _ITF_WIDTHS[int(digits[i])], _ITF_WIDTHS[int(digits[i + 1])]
        for bar, space in zip(bars, spaces):
            parts.append("1" * (_WIDE if bar == "w" else 1))
            parts.append("0" * (_WIDE if space == "w" else 1))
    parts.append(_ITF_STOP)
    return "".join(parts)


def itf_svg(barcode: str) -> str:
    """The bars of a valid 44-digit barcode as an SVG string to inline in HTML.

    One ``<rect>`` per bar inside a ``<g>``, in narrow-module units with a
    10-module quiet zone each side, on a white background (so it scans in a
    dark-mode mail client too).  No XML declaration and no fixed size: the
    bill layout gives it its printed width through CSS.  ``<title>`` names the
    image for screen readers and ``<desc>`` holds the digits, the text
    alternative to the bars.  The barcode is validated first: bars cannot be
    proof-read by eye.
    """
    _checked_barcode(barcode)
    modules = itf_modules(barcode)
    width = len(modules) + 2 * _QUIET
    rects = "".join(
        f'<rect x="{_QUIET + bar.start()}" y="0" width="{len(bar.group())}" '
        f'height="{_BAR_HEIGHT}"/>'
        for bar in re.finditer("1+", modules)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {_BAR_HEIGHT}" '
        f'role="img" shape-rendering="crispEdges">'
        f"<title>Código de barras</title><desc>{barcode}</desc>"
        f'<rect width="{width}" height="{_BAR_HEIGHT}" fill="#fff"/>'
        f'<g fill="#000">{rects}</g></svg>'
    )
