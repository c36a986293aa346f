"""What the bill's two payment codes, Pix (``meterd.pix``) and the FEBRABAN
barcode (``meterd.arrecadacao``), have in common.

Both carry the same bill's amount and number, so both must accept exactly the
same ones: one rule for an amount in whole cents, one range for the bill
number, and one exception type the billing run catches for either code.

Pure module: standard library only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

__all__ = ["BILL_NUMBER_DIGITS", "PaymentCodeError", "check_bill_number", "whole_cents"]

#: Digits of a bill number in both codes: the barcode's 25-digit free field
#: less its 8-digit due date; the Pix txid has room for them too.
BILL_NUMBER_DIGITS: Final = 17

_CENT: Final = Decimal("0.01")


class PaymentCodeError(ValueError):
    """An input or a code that must not be used on a bill.

    ``str()`` is ``"<field>: <reason>"``; ``field`` and ``reason`` are also
    attributes, so a caller (the tariff loader, an API) can re-word or re-wrap
    the message without parsing it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def whole_cents(value: object, field: str, maximum: Decimal) -> int:
    """``value`` (reais) as an integer number of cents, or PaymentCodeError.

    Refused rather than rounded: a positive, finite ``Decimal`` in whole cents,
    at most ``maximum`` (what the code's field can hold).  A float is refused
    too, because it may already be off by a fraction of a cent.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise PaymentCodeError(field, f"must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise PaymentCodeError(field, f"must be a finite number (got {value})")
    if value <= 0:
        raise PaymentCodeError(field, f"must be positive (got {value})")
    if value > maximum:
        raise PaymentCodeError(field, f"too large for the code (max {maximum}, got {value})")
    if value.quantize(_CENT) != value:
        raise PaymentCodeError(field, f"has fractions of a cent (got {value})")
    return int(value.scaleb(2))


def check_bill_number(bill_number: int) -> int:
    """``bill_number`` if it is an int from 1 to 17 nines, else PaymentCodeError."""
    if isinstance(bill_number, bool) or not isinstance(bill_number, int):
        raise PaymentCodeError(
            "bill_number", f"must be an integer, not {type(bill_number).__name__}"
        )
    if not 1 <= bill_number < 10**BILL_NUMBER_DIGITS:
        raise PaymentCodeError(
            "bill_number",
            f"must be between 1 and {10**BILL_NUMBER_DIGITS - 1} (got {bill_number})",
        )
    return bill_number
