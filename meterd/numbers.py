"""The one number grammar of every numeric field, over HTTP and UDP alike.

A number arrives as a JSON number (already an ``int`` or a ``float``) or as a
string (the CSV datagram, a query string, ``"id_medidor": "1"``). A string is
accepted only when it is spelled as a JSON number in ASCII
(``-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?``), with ASCII blanks around
it allowed: no underscores (``"1_000"``), no other scripts' digits
(``"１０"``), no ``+`` sign, no ``Infinity``, and an exponent of at most
:data:`MAX_EXPONENT` either way. A JSON number that became a ``float`` is
taken at its shortest decimal spelling (``repr``), which is what the sender
wrote whenever a double can hold it.

The value is then kept as its decimal digits and a power of ten, and scaled
to an integer unit (Wh, microseconds) exactly, with digit arithmetic: no
``decimal`` context that could round ``1.0009999999999999999999999999999``
to ``1.001`` or flush ``1e-999999999`` to zero before the precision is
checked. Pure: no Twisted.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

__all__ = ["MAX_EXPONENT", "PATTERN", "Exact", "NotExact", "NumberError", "exact"]

#: Exponents beyond this either way are refused: no field of meterd needs them,
#: and they are how ``1e-999999999`` or ``1e999999999`` would cost time or vanish.
MAX_EXPONENT = 30

_BLANKS = " \t\r\n"
_GRAMMAR = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")
#: The grammar as a regular expression for documents (OpenAPI): blanks, the number, blanks.
PATTERN = r"^[ \t\r\n]*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?[ \t\r\n]*$"


class NumberError(ValueError):
    """Not a number of the grammar; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotExact(ValueError):
    """The value has more decimals than the unit it is scaled to keeps."""


class Exact(NamedTuple):
    """A decimal value: ``(-1 if negative) * int(digits) * 10 ** exponent``.

    ``digits`` has no leading or trailing zeros (``""`` is zero), so two
    spellings of one value (``1.50``, ``15e-1``) are the same ``Exact``.
    """

    negative: bool
    digits: str
    exponent: int

    @property
    def magnitude(self) -> int:
        """How many digits the integer part has: the value is below ``10 ** magnitude``."""
        return len(self.digits) + self.exponent if self.digits else 0

    def scaled(self, places: int, *, round_half_up: bool = False) -> int:
        """``value * 10 ** places`` as an integer.

        Raises :class:`NotExact` when decimals would be lost, unless
        ``round_half_up``: then the first digit dropped decides (5 or more
        rounds the magnitude up), which is all half-up rounding needs; the
        fields rounded this way are never negative. Callers bound
        :attr:`magnitude` first, so the integer is small.
        """
        shift = self.exponent + places
        if shift >= 0:
            value = int(self.digits + "0" * shift) if self.digits else 0
        elif not round_half_up:
            raise NotExact(f"{-shift} decimal digit(s) beyond the unit")
        else:
            kept = len(self.digits) + shift  # digits left of the cut; <= 0 when the value is below one unit
            first_dropped = self.digits[kept] if kept >= 0 else "0"
            value = int(self.digits[:kept] if kept > 0 else "0") + (first_dropped >= "5")
        return -value if self.negative else value


def exact(name: str, value: Any) -> Exact:
    """``value`` (an ``int``, a ``float`` or a string of the grammar) as an :class:`Exact`."""
    if type(value) is int:
        return _from_int(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise NumberError("not_finite", f"{name} must be finite")
        return _parse(name, repr(value))
    if type(value) is str:
        return _parse(name, value.strip(_BLANKS))
    raise NumberError("invalid_type", f"{name} must be a number")


def _from_int(value: int) -> Exact:
    text = str(abs(value)).rstrip("0") if value else ""
    return Exact(value < 0, text, len(str(abs(value))) - len(text) if value else 0)


def _parse(name: str, text: str) -> Exact:
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        raise NumberError("invalid_number", f"{name} is not a number (digits 0-9, an optional '.' and decimals)")
    sign, whole, fraction, power = match.groups()
    exponent = 0
    if power is not None:
        if len(power.lstrip("+-").lstrip("0")) > len(str(MAX_EXPONENT)) or abs(int(power)) > MAX_EXPONENT:
            raise NumberError("invalid_number", f"{name} has an exponent beyond {MAX_EXPONENT} either way")
        exponent = int(power)
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    exponent -= len(fraction)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return Exact(sign == "-" and bool(stripped), stripped, exponent if stripped else 0)
