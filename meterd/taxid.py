"""Brazilian taxpayer ids: CPF (people, 11 digits) and CNPJ (companies, 14 digits).

Customers are keyed by their tax id, so the id must be canonical before it
reaches the store: the same person typed as ``123.456.789-09`` and as
``12345678909`` has to be one customer, and a typo must be caught at the door
(the check digits exist exactly for that) instead of creating a phantom account.

Pure module: stdlib only, no Twisted.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "InvalidTaxId",
    "normalize",
    "is_cpf",
    "is_cnpj",
    "format_taxid",
    "make_cpf",
    "make_cnpj",
]

Reason = Literal["type", "characters", "length", "repeated", "check_digits"]

_DIGITS: Final = frozenset("0123456789")
_SEPARATORS: Final = str.maketrans("", "", ".-/ ")
_CPF_LEN: Final = 11
_CNPJ_LEN: Final = 14
_CNPJ_W1: Final = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_W2: Final = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


class InvalidTaxId(ValueError):
    """The value is not a valid CPF or CNPJ.

    ``str(e)`` is a short English message fit for an API error body;
    ``e.reason`` says which rule failed, for callers that want to count or
    branch on it without parsing text.
    """

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def _is_digits(s: str) -> bool:
    # str.isdigit() also accepts Arabic-Indic, superscript and other Unicode
    # digits; an id is stored and compared as ASCII, so only accept ASCII.
    return bool(s) and all(c in _DIGITS for c in s)


def _cpf_check_digits(base9: str) -> str:
    """The two CPF check digits (mod-11 with weights 10..2, then 11..2)."""
    nums = [int(c) for c in base9]
    s1 = sum(n * w for n, w in zip(nums, range(10, 1, -1)))
    d1 = (s1 * 10) % 11 % 10
    nums.append(d1)
    s2 = sum(n * w for n, w in zip(nums, range(11, 1, -1)))
    d2 = (s2 * 10) % 11 % 10
    return f"{d1}{d2}"


def _cnpj_digit(nums: list[int], weights: tuple[int, ...]) -> int:
    r = sum(n * w for n, w in zip(nums, weights)) % 11
    return 0 if r < 2 else 11 - r


def _cnpj_check_digits(base12: str) -> str:
    """The two CNPJ check digits (mod-11 with the cyclic 2..9 weights)."""
    nums = [int(c) for c in base12]
    d1 = _cnpj_digit(nums, _CNPJ_W1)
    nums.append(d1)
    d2 = _cnpj_digit(nums, _CNPJ_W2)
    return f"{d1}{d2}"


def _all_equal(s: str) -> bool:
    # Numbers like 111.111.111-11 satisfy the check-digit arithmetic but are
    # never issued; they are what people type to get past a form.
    return len(set(s)) == 1


def is_cpf(digits: str) -> bool:
    """True iff ``digits`` is exactly 11 ASCII digits forming a valid CPF."""
    return _valid(digits, _CPF_LEN)


def is_cnpj(digits: str) -> bool:
    """True iff ``digits`` is exactly 14 ASCII digits forming a valid CNPJ."""
    return _valid(digits, _CNPJ_LEN)


def _valid(digits: str, length: int) -> bool:
    """Digits only, of that length, and what :func:`normalize` accepts."""
    if not isinstance(digits, str) or len(digits) != length or not _is_digits(digits):
        return False
    try:
        normalize(digits)
    except InvalidTaxId:
        return False
    return True


def normalize(value: str | int) -> str:
    """Canonical digits-only form of a CPF or CNPJ, or :class:`InvalidTaxId`.

    Integers are accepted because the assignment's clients send ids as JSON
    numbers; an integer cannot carry leading zeros, so it must already have
    11 or 14 digits (a CPF starting with 0 has to be sent as a string).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidTaxId("id must be a string or an integer", "type")
    if isinstance(value, int):
        if value < 0:
            raise InvalidTaxId("id must not be negative", "characters")
        digits = str(value)
    else:
        digits = value.strip().translate(_SEPARATORS)
    if not _is_digits(digits):
        if not digits:
            raise InvalidTaxId("id is empty", "length")
        raise InvalidTaxId(
            "id may contain only digits and the separators '.', '-', '/'",
            "characters",
        )
    if len(digits) == _CPF_LEN:
        kind, check = "CPF", _cpf_check_digits(digits[:9])
    elif len(digits) == _CNPJ_LEN:
        kind, check = "CNPJ", _cnpj_check_digits(digits[:12])
    else:
        raise InvalidTaxId(
            f"id must have 11 digits (CPF) or 14 digits (CNPJ), not {len(digits)}",
            "length",
        )
    if _all_equal(digits):
        raise InvalidTaxId(f"{kind} with all digits equal is not valid", "repeated")
    if digits[-2:] != check:
        raise InvalidTaxId(f"{kind} check digits do not match", "check_digits")
    return digits


def format_taxid(digits: str) -> str:
    """Human form: ``123.456.789-09`` (CPF) or ``12.345.678/0001-95`` (CNPJ).

    Formats by length only; it does not verify check digits, so it can also
    render ids in error messages.
    """
    if isinstance(digits, str) and _is_digits(digits):
        d = digits
        if len(d) == _CPF_LEN:
            return f"{d[0:3]}.{d[3:6]}.{d[6:9]}-{d[9:11]}"
        if len(d) == _CNPJ_LEN:
            return f"{d[0:2]}.{d[2:5]}.{d[5:8]}/{d[8:12]}-{d[12:14]}"
    raise InvalidTaxId("id must be 11 or 14 digits to format", "length")


def make_cpf(base: str) -> str:
    """Complete 9 digits into a valid 11-digit CPF.

    The meter simulator and the tests need valid ids that are not anybody's
    real number in particular; a repeated-digit base is refused because its
    CPF would be all-equal and thus invalid.
    """
    if not (isinstance(base, str) and len(base) == 9 and _is_digits(base)):
        raise InvalidTaxId("CPF base must be 9 digits", "length")
    if _all_equal(base):
        raise InvalidTaxId("CPF base with all digits equal gives an invalid CPF", "repeated")
    return base + _cpf_check_digits(base)


def make_cnpj(base: str) -> str:
    """Complete 12 digits (8 root + 4 branch) into a valid 14-digit CNPJ."""
    if not (isinstance(base, str) and len(base) == 12 and _is_digits(base)):
        raise InvalidTaxId("CNPJ base must be 12 digits", "length")
    digits = base + _cnpj_check_digits(base)
    if _all_equal(digits):
        raise InvalidTaxId("CNPJ with all digits equal is not valid", "repeated")
    return digits
