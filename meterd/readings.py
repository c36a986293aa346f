"""What a reading is, and the one validation every way in (HTTP, UDP) shares.

Pure: values become integer Wh and times integer milliseconds here, once, so
nothing downstream ever handles a float that could drift by a watt-hour.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

from meterd import taxid

MIN_TIMESTAMP_S = 946_684_800  # 2000-01-01T00:00:00Z
MAX_FUTURE_S = 300
MAX_KWH = Decimal(10) ** 12  # far above any real register, far below int64 Wh
MAX_SEQ = 2**63 - 1
MAX_METER_ID = 2**31 - 1
_MAX_KWH_FLOAT = float(MAX_KWH)
_MS = Decimal(1000)


class Reading(NamedTuple):
    customer_id: str
    meter_id: int
    ts: int  # ms since the epoch
    wh: int  # register (register meters) or energy since the previous reading (interval meters)
    seq: int | None


class Outcome(enum.Enum):
    """What the store did with a reading; the value is the HTTP status and metrics label."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    BACKWARDS = "register_backwards"
    UNKNOWN_METER = "unknown_meter"


class InvalidField(ValueError):
    """A field that cannot be accepted; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _decimal(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidField("invalid_type", f"{name} must be a number")
    text = value.strip() if isinstance(value, str) else repr(value)  # repr: the float as the sender wrote it
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidField("invalid_number", f"{name} is not a number") from None
    if not number.is_finite():
        raise InvalidField("not_finite", f"{name} must be finite")
    return number


def as_int(name: str, value: Any, *, minimum: int = 0, maximum: int = MAX_SEQ) -> int:
    """Coerce an integer field that may arrive as a JSON number or a string."""
    if type(value) is int and minimum <= value <= maximum:
        return value  # the common case, without a Decimal
    number = _decimal(name, value)
    if number != number.to_integral_value():
        raise InvalidField("invalid_integer", f"{name} must be an integer")
    # Range-check the Decimal first: int("1e999999999") would build a billion-digit
    # integer on the reactor thread and hang the server.
    if not minimum <= number <= maximum:
        raise InvalidField("out_of_range", f"{name} must be between {minimum} and {maximum}")
    return int(number)


def kwh_to_wh(name: str, value: Any) -> int:
    """kWh with at most 3 decimals to exact integer Wh."""
    if type(value) is float and 0.0 <= value <= _MAX_KWH_FLOAT:
        wh = round(value * 1000)
        if wh / 1000 == value:  # exactly the double nearest to a 3-decimal number: what the Decimal path accepts
            return wh
    number = _decimal(name, value)
    if number < 0:
        raise InvalidField("negative", f"{name} must not be negative")
    if number > MAX_KWH:
        raise InvalidField("out_of_range", f"{name} is implausibly large")
    wh = number * _MS
    if wh != wh.to_integral_value():
        raise InvalidField("too_precise", f"{name} has more than 3 decimals (the store keeps whole Wh)")
    return int(wh)


def timestamp_ms(value: Any, now_s: float) -> int:
    """Unix seconds (fractions allowed) to integer ms, within the accepted window."""
    if type(value) in (int, float) and MIN_TIMESTAMP_S <= value <= now_s + MAX_FUTURE_S:
        ms = round(value * 1000)
        if ms / 1000 == value:  # whole milliseconds: exact, no rounding rule involved
            return ms
    seconds = _decimal("timestamp", value)
    if seconds < MIN_TIMESTAMP_S:
        raise InvalidField("timestamp_too_old", "timestamp is before 2000-01-01")
    if seconds > Decimal(repr(now_s)) + MAX_FUTURE_S:
        raise InvalidField("timestamp_in_future", "timestamp is more than 300 s in the future")
    return int((seconds * _MS).to_integral_value(ROUND_HALF_UP))


def require(fields: dict[str, Any], name: str) -> Any:
    value = fields.get(name)
    if value is None or value == "":
        raise InvalidField("missing_field", f"{name} is required")
    return value


@functools.lru_cache(maxsize=1 << 17)
def _normalized(text: str) -> str:
    """Meters repeat their id in every datagram: check its digits once, not 60,000 times a second."""
    return taxid.normalize(text)


def customer_id(value: Any) -> str:
    try:
        return _normalized(value) if type(value) is str else taxid.normalize(value)
    except taxid.InvalidTaxId as e:
        raise InvalidField("invalid_id", str(e)) from None


def parse_reading(fields: dict[str, Any], now_s: float) -> Reading:
    """Validate the raw fields of a reading from either transport.

    A meter that sends JSON numbers (what every datagram of a real meter
    holds) is checked inline, by the same tests as the fast paths of
    :func:`as_int`, :func:`timestamp_ms` and :func:`kwh_to_wh`: at tens of
    thousands of datagrams a second on the reactor thread, the ten calls of
    the general path were half the cost of a reading. Anything else takes
    :func:`_parse_general`, which also names what is wrong. The id is checked
    first on both paths, so both raise the same error for the same fields.
    """
    get = fields.get
    cid, meter, ts, kwh, seq = get("id"), get("id_medidor"), get("timestamp"), get("valor"), get("seq")
    if (
        type(cid) is str and cid
        and type(meter) is int and 1 <= meter <= MAX_METER_ID
        and type(ts) is float and MIN_TIMESTAMP_S <= ts <= now_s + MAX_FUTURE_S
        and type(kwh) is float and 0.0 <= kwh <= _MAX_KWH_FLOAT
        and (seq is None or (type(seq) is int and 0 <= seq <= MAX_SEQ))
    ):
        ms = round(ts * 1000)
        wh = round(kwh * 1000)
        if ms / 1000 == ts and wh / 1000 == kwh:  # whole ms and Wh: as exact as the Decimal path
            return reading_of((customer_id(cid), meter, ms, wh, seq))
    return _parse_general(fields, now_s)


def _parse_general(fields: dict[str, Any], now_s: float) -> Reading:
    seq = fields.get("seq")
    return Reading(
        customer_id(require(fields, "id")),
        as_int("id_medidor", require(fields, "id_medidor"), minimum=1, maximum=MAX_METER_ID),
        timestamp_ms(require(fields, "timestamp"), now_s),
        kwh_to_wh("valor", require(fields, "valor")),
        None if seq is None else as_int("seq", seq),
    )


# A Reading from fields already checked, built in C: a NamedTuple's generated
# __new__ costs twice what building the tuple does.
reading_of: Callable[[Sequence[Any]], Reading] = functools.partial(tuple.__new__, Reading)
