"""What a person types into a field, checked and converted before anything is sent.

Each parser returns the API's value or raises :class:`~.errors.Invalid` with a
sentence in the screen's language; the menu's forms and the subcommands' flags
share them, so a value is refused the same way wherever it is typed.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from meterd.taxid import InvalidTaxId, normalize

from .choices import Choice
from .errors import Invalid
from .messages import Messages

__all__ = [
    "parse_taxid", "parse_int", "parse_positive_number", "parse_choice", "parse_kwh", "parse_when", "parse_text", "parse_date_or_time", "parse_url",
]

_BRAZILIAN_TIME = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def parse_taxid(m: Messages, text: str) -> str:
    """A CPF or CNPJ, formatted or not, as its digits; check digits verified."""
    try:
        return normalize(text)
    except InvalidTaxId as e:
        digits = "".join(ch for ch in text if ch.isdigit())
        raise Invalid(m(f"invalid.taxid.{e.reason}", n=len(digits))) from None


def parse_int(m: Messages, text: str, *, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        key = "invalid.positive_int" if minimum > 0 else "invalid.integer"
        raise Invalid(m(key, value=text)) from None
    if value < minimum:
        if minimum > 0:
            raise Invalid(m("invalid.positive_int", value=text))
        raise Invalid(m("invalid.nonnegative"))
    return value


def parse_positive_number(m: Messages, text: str) -> float | int:
    """Accept the decimal comma people type in Brazil as well as the point."""
    raw = text.strip().replace(",", ".")
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise Invalid(m("invalid.number", value=text)) from None
    if not d.is_finite() or d <= 0:
        raise Invalid(m("invalid.number", value=text))
    return int(d) if d == d.to_integral_value() else float(d)


def parse_choice(m: Messages, choice: Choice, text: str) -> str:
    """The API's value for a label (or value) typed in any case."""
    value = choice.parse(m, text)
    if value is None:
        raise Invalid(m("invalid.choice", choices=", ".join(choice.labels(m))))
    return value


def parse_text(m: Messages, text: str) -> str:
    """Text as typed, without blanks around it; refused only when there is nothing."""
    value = text.strip()
    if not value:
        raise Invalid(m("invalid.empty"))
    return value


def parse_kwh(m: Messages, text: str) -> str:
    """An energy in kWh, zero allowed, with a decimal comma or point: sent as its exact digits."""
    raw = text.strip().replace(",", ".")
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise Invalid(m("invalid.kwh", value=text)) from None
    if not d.is_finite() or d < 0:
        raise Invalid(m("invalid.kwh", value=text))
    return format(d, "f")


def parse_when(m: Messages, text: str) -> float:
    """An instant as unix seconds: typed as unix seconds, ISO 8601 (``2026-11-05T14:30``, an offset
    allowed) or the Brazilian ``05/11/2026 14:30``; without an offset, in this computer's time zone."""
    raw = text.strip()
    try:
        return float(Decimal(raw)) if re.fullmatch(r"\d+(\.\d+)?", raw) else _instant(raw).timestamp()
    except (ValueError, InvalidOperation):
        raise Invalid(m("invalid.when", value=text)) from None


def _instant(raw: str) -> datetime:
    brazilian = _BRAZILIAN_TIME.fullmatch(raw)
    if brazilian:
        day, month, year, hour, minute, second = (int(g) if g else 0 for g in brazilian.groups())
        moment = datetime(year, month, day, hour, minute, second)
    else:
        moment = datetime.fromisoformat(raw)
    return moment if moment.tzinfo is not None else moment.astimezone()


_DAY_MONTH_YEAR = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")


def parse_date_or_time(m: Messages, text: str) -> str:
    """A date or a time as the API takes it (ISO 8601); ``DD/MM/AAAA`` too, as dates are written in Brazil."""
    typed = text.strip()
    dmy = _DAY_MONTH_YEAR.fullmatch(typed)
    try:
        if dmy and m.lang == "pt":
            return date(int(dmy[3]), int(dmy[2]), int(dmy[1])).isoformat()
        try:
            return date.fromisoformat(typed).isoformat()
        except ValueError:
            return datetime.fromisoformat(typed).isoformat()
    except ValueError:
        raise Invalid(m("invalid.date_or_time", value=text)) from None


def parse_url(m: Messages, text: str) -> str:
    """A URL the server may accept: http:// or https:// and something after it (the server checks the rest)."""
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise Invalid(m("invalid.url", value=text))
    return url
