"""Numbers, money, dates and texts as a person reads them, in pt-BR or English.

Every page formats through one :class:`Fmt`, so a page is in one language from
its title to its chart labels, and Brazilian pages read the way a Brazilian
bill does: ``1.234,56``, ``R$ 1.234,56``, ``06/12/2026``, ``dez/2026``.

Money arrives from the API as ``Decimal`` strings (``"123.45"``) and stays a
``Decimal`` here; kWh arrive as JSON numbers with at most three decimals and
are read through their shortest decimal spelling (``repr``), so ``0.1`` is
``Decimal("0.1")`` and never its binary expansion. Rounding is half up, like
the bill and the customer's calculator.

Dates arrive as ISO 8601 strings already in the customer's time zone (the
API writes them so): they are shown as their wall-clock time, never converted.

Pure module: standard library only.
"""

from __future__ import annotations

import string
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final, TypeAlias

from meterd.portal.catalog import CATALOG, LANGS

__all__ = ["DEFAULT_LANG", "LANGS", "Fmt", "decimal_of", "placeholders"]

DEFAULT_LANG: Final = "pt"

#: A moment or a day as the API writes it (ISO 8601) or as Python holds it.
#: Named here because ``Fmt`` has methods called ``date`` and ``datetime``.
When: TypeAlias = "str | date"

_MONTHS_SHORT: Final = {
    "pt": ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}
_MONTHS_LONG: Final = {
    "pt": (
        "janeiro",
        "fevereiro",
        "março",
        "abril",
        "maio",
        "junho",
        "julho",
        "agosto",
        "setembro",
        "outubro",
        "novembro",
        "dezembro",
    ),
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
}
# (decimal separator, thousands separator)
_SEPARATORS: Final = {"pt": (",", "."), "en": (".", ",")}


def decimal_of(value: Any) -> Decimal:
    """An API number or money string as an exact ``Decimal`` (floats via ``repr``).

    Raises ``ValueError`` for anything that is not a finite number, booleans
    included: a page must not show ``True`` as ``1``.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, float):
        d = Decimal(repr(value))
    elif isinstance(value, (int, str)):
        try:
            d = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    else:
        raise ValueError(f"not a number: {value!r}")
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a catalog text expects (the catalog test compares them)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _parse_when(value: When) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(value)


def _month_parts(value: When) -> tuple[int, int]:
    """``"2026-12"`` (a bill's ``referencia``), an ISO date-time or a date → (year, month)."""
    if isinstance(value, str) and len(value) == 7:
        year, month = value.split("-")
        return int(year), int(month)
    when = _parse_when(value)
    return when.year, when.month


class Fmt:
    """Formats and texts of one language; every page gets one."""

    def __init__(self, lang: str = DEFAULT_LANG) -> None:
        if lang not in LANGS:
            raise ValueError(f"unknown language {lang!r}; use one of {', '.join(LANGS)}")
        self.lang = lang
        self._texts = CATALOG[lang]
        self._decimal_sep, self._thousands_sep = _SEPARATORS[lang]

    def t(self, key: str, /, **values: Any) -> str:
        """The catalog text ``key`` with its placeholders filled (KeyError if unknown)."""
        text = self._texts[key]
        return text.format(**values) if values else text

    # -- numbers ---------------------------------------------------------------

    def number(self, value: Any, places: int = 0) -> str:
        """``value`` rounded half up to ``places`` decimals, digits grouped by thousands."""
        d = decimal_of(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        whole, _, fraction = f"{abs(d):f}".partition(".")
        groups: list[str] = []
        while len(whole) > 3:
            groups.insert(0, whole[-3:])
            whole = whole[:-3]
        groups.insert(0, whole)
        text = self._thousands_sep.join(groups)
        if fraction:
            text += self._decimal_sep + fraction
        return ("-" if d < 0 else "") + text

    def exact(self, value: Any) -> str:
        """A rate as written in the tariff (``0.01885`` → ``0,01885``): no rounding, no trailing zeros cut."""
        d = decimal_of(value)
        places = max(0, -d.as_tuple().exponent)  # type: ignore[operator]
        return self.number(d, places)

    def kwh(self, value: Any, places: int = 1) -> str:
        """Energy: ``1.234,5 kWh`` (a no-break space keeps number and unit together)."""
        return f"{self.number(value, places)}\u00a0kWh"

    def money(self, value: Any) -> str:
        """Reais: ``R$ 1.234,56`` / ``R$ 1,234.56``; negative ``-R$ 1,00``."""
        d = decimal_of(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return ("-" if d < 0 else "") + "R$\u00a0" + self.number(abs(d), 2)

    def percent(self, fraction: Any, places: int = 2) -> str:
        """A fraction as a percentage: ``0.0103`` → ``1,03%``."""
        return self.number(decimal_of(fraction) * 100, places) + "%"

    def change(self, fraction: Any) -> str:
        """A relative change, signed and whole: ``+12%``, ``-5%``, ``0%``."""
        d = decimal_of(fraction) * 100
        text = self.number(d, 0)
        return text + "%" if text.startswith("-") or text == "0" else f"+{text}%"

    # -- time ------------------------------------------------------------------

    def date(self, value: When) -> str:
        """``06/12/2026`` / ``6 Dec 2026`` (English spells the month: 06/12 is ambiguous there)."""
        d = _parse_when(value)
        if self.lang == "pt":
            return f"{d.day:02d}/{d.month:02d}/{d.year}"
        return f"{d.day} {_MONTHS_SHORT['en'][d.month - 1]} {d.year}"

    def datetime(self, value: When) -> str:
        """``06/12/2026 14:30`` / ``6 Dec 2026, 14:30``."""
        d = _parse_when(value)
        sep = " " if self.lang == "pt" else ", "
        return f"{self.date(d)}{sep}{d.hour:02d}:{d.minute:02d}"

    def hour(self, value: When) -> str:
        """An hourly bucket's label: ``14h`` / ``14:00``."""
        d = _parse_when(value)
        return f"{d.hour}h" if self.lang == "pt" else f"{d.hour:02d}:00"

    def day(self, value: When) -> str:
        """A daily bucket's label: ``06/12`` / ``6 Dec``."""
        d = _parse_when(value)
        if self.lang == "pt":
            return f"{d.day:02d}/{d.month:02d}"
        return f"{d.day} {_MONTHS_SHORT['en'][d.month - 1]}"

    def month(self, value: When) -> str:
        """A bill's reference month: ``dez/2026`` / ``Dec 2026``."""
        year, month = _month_parts(value)
        name = _MONTHS_SHORT[self.lang][month - 1]
        return f"{name}/{year}" if self.lang == "pt" else f"{name} {year}"

    def month_name(self, value: When, *, long: bool = False) -> str:
        """The month alone: ``dez`` / ``Dec``, or ``dezembro`` / ``December``."""
        _, month = _month_parts(value)
        return (_MONTHS_LONG if long else _MONTHS_SHORT)[self.lang][month - 1]

    def month_long(self, value: When) -> str:
        """``dezembro de 2026`` / ``December 2026``."""
        year, _ = _month_parts(value)
        name = self.month_name(value, long=True)
        return f"{name} de {year}" if self.lang == "pt" else f"{name} {year}"

    def period(self, kind: str, start: When) -> str:
        """A history period by its kind (D, M, Y) and start: ``06/12/2026``, ``dezembro de 2026``, ``2026``."""
        if kind == "D":
            return self.date(start)
        if kind == "M":
            return self.month_long(start)
        return str(_parse_when(start).year)
