"""What a reading is, and the one validation every way in (HTTP, UDP) shares.

Pure: values become integer Wh and times integer microseconds here, once, so
nothing downstream ever handles a float that could drift by a watt-hour.
Numbers follow the one grammar of :mod:`meterd.numbers`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from meterd import taxid
from meterd.numbers import Exact, NotExact, NumberError, exact

MIN_TIMESTAMP_S = 946_684_800  # 2000-01-01T00:00:00Z
MAX_FUTURE_S = 300
#: Readings are timed to the microsecond: a meter's scheduler may fire readings
#: a fraction of a millisecond apart, and each is its own reading.
US_PER_S = 1_000_000
US_PER_MS = 1_000
HOUR_US = 3_600 * US_PER_S
MAX_KWH = 10**12  # far above any real register, far below int64 Wh
MAX_SEQ = 2**63 - 1
MAX_METER_ID = 2**31 - 1
_MAX_KWH_FLOAT = float(MAX_KWH)


class Reading(NamedTuple):
    customer_id: str
    meter_id: int
    ts: int  # microseconds since the epoch
    wh: int  # register (register meters) or energy since the previous reading (interval meters)
    seq: int | None


class Outcome(enum.Enum):
    """What the store did with a reading; the value is the HTTP status and metrics label."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    BACKWARDS = "register_backwards"
    UNKNOWN_METER = "unknown_meter"
    RETIRED = "meter_retired"  # after the final reading of a retired meter


class InvalidField(ValueError):
    """A field that cannot be accepted; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def us_edges(edges_ms: Iterable[int]) -> list[int]:
    """Calendar instants (ms, as :mod:`meterd.periods` computes them) in the unit of reading times."""
    return [t * US_PER_MS for t in edges_ms]


def number(name: str, value: Any) -> Exact:
    """A field's value by the one number grammar (:mod:`meterd.numbers`), as exact decimal digits."""
    if isinstance(value, bool):  # a JSON true is not the number 1
        raise InvalidField("invalid_type", f"{name} must be a number")
    try:
        return exact(name, value)
    except NumberError as e:
        raise InvalidField(e.code, str(e)) from None


def as_int(name: str, value: Any, *, minimum: int = 0, maximum: int = MAX_SEQ) -> int:
    """An integer field that may arrive as a JSON number or a string (``"1"``, ``1.0``)."""
    if type(value) is int and minimum <= value <= maximum:
        return value  # the common case
    exact_value = number(name, value)
    # The magnitude first: int("1e30") is cheap, but a bound on digits keeps every field small.
    if exact_value.magnitude > len(str(max(abs(minimum), abs(maximum)))):
        raise InvalidField("out_of_range", f"{name} must be between {minimum} and {maximum}")
    try:
        result = exact_value.scaled(0)
    except NotExact:
        raise InvalidField("invalid_integer", f"{name} must be an integer") from None
    if not minimum <= result <= maximum:
        raise InvalidField("out_of_range", f"{name} must be between {minimum} and {maximum}")
    return result


def kwh_to_wh(name: str, value: Any, *, round_to_wh: bool = False) -> int:
    """kWh to exact integer Wh: at most 3 decimals, or rounded half up when ``round_to_wh``."""
    if type(value) is float and 0.0 <= value <= _MAX_KWH_FLOAT:
        wh = round(value * 1000)
        if wh / 1000 == value:  # exactly the double nearest to a 3-decimal number: what the exact path accepts
            return wh
    return wh_of(name, kwh_exact(name, value), round_to_wh=round_to_wh)


def kwh_exact(name: str, value: Any) -> Exact:
    """An energy in kWh, checked but for its precision: a number, not negative, not implausibly large."""
    energy = number(name, value)
    if energy.negative:
        raise InvalidField("negative", f"{name} must not be negative")
    if energy.magnitude > len(str(MAX_KWH)) or energy.scaled(0, round_half_up=True) > MAX_KWH:
        raise InvalidField("out_of_range", f"{name} is implausibly large")
    return energy


def wh_of(name: str, kwh: Exact, *, round_to_wh: bool = False) -> int:
    """A checked energy (:func:`kwh_exact`) in whole Wh: ``too_precise`` past 3 decimals, unless rounded half up."""
    try:
        return kwh.scaled(3, round_half_up=round_to_wh)
    except NotExact:
        raise InvalidField("too_precise", f"{name} has more than 3 decimals (the store keeps whole Wh)") from None


def timestamp_us(value: Any, now_s: float) -> int:
    """Unix seconds (fractions allowed) to integer microseconds, within the accepted window.

    Finer than a microsecond is rounded half up: a timestamp is when, not how much.
    """
    if type(value) in (int, float) and MIN_TIMESTAMP_S <= value <= now_s + MAX_FUTURE_S:
        us = round(value * US_PER_S)
        if us / US_PER_S == value:  # whole microseconds: exact, no rounding rule involved
            return us
    return timestamp_at(number("timestamp", value), now_s)


def timestamp_exact(name: str, value: Any) -> Exact:
    """A timestamp in unix seconds, checked but for the window's end, which moves with the clock (:func:`timestamp_at`)."""
    seconds = number(name, value)
    if seconds.negative or seconds.magnitude < len(str(MIN_TIMESTAMP_S)) or (
        seconds.magnitude == len(str(MIN_TIMESTAMP_S)) and seconds.scaled(6, round_half_up=True) < MIN_TIMESTAMP_S * US_PER_S
    ):
        raise InvalidField("timestamp_too_old", f"{name} is before 2000-01-01")
    return seconds


def timestamp_at(seconds: Exact, now_s: float) -> int:
    """A timestamp in seconds (:func:`number`) as microseconds, if it lies in the accepted window."""
    # Bounded before it is scaled: "1e30" is far in the future, and never a 37-digit integer.
    us = 0 if seconds.negative else seconds.scaled(6, round_half_up=True) if seconds.magnitude <= 12 else None
    if us is not None and us < MIN_TIMESTAMP_S * US_PER_S:
        raise InvalidField("timestamp_too_old", "timestamp is before 2000-01-01")
    if us is None or us > (now_s + MAX_FUTURE_S) * US_PER_S:
        raise InvalidField("timestamp_in_future", "timestamp is more than 300 s in the future")
    return us


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


def parse_reading(fields: dict[str, Any], now_s: float, *, round_to_wh: bool = False) -> Reading:
    """Validate the raw fields of a reading from either transport.

    ``round_to_wh`` is for readings nobody authenticated (``--no-auth``, the
    assignment's meters, which send ``random.triangular()`` floats): their
    ``valor`` is rounded half up to the Wh instead of refused as too precise.

    A meter that sends JSON numbers (what every datagram of a real meter
    holds) is checked inline, by the same tests as the fast paths of
    :func:`as_int`, :func:`timestamp_us` and :func:`kwh_to_wh`: at tens of
    thousands of datagrams a second on the reactor thread, the ten calls of
    the general path would be half the cost of a reading. Anything else takes
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
        us = round(ts * US_PER_S)
        wh = round(kwh * 1000)
        if us / US_PER_S == ts and wh / 1000 == kwh:  # whole us and Wh: as exact as the general path
            return reading_of((customer_id(cid), meter, us, wh, seq))
    return _parse_general(fields, now_s, round_to_wh)


def parse_rounding(fields: dict[str, Any], now_s: float) -> tuple[Reading, bool]:
    """A reading nobody authenticated, its ``valor`` rounded half up to the Wh if need be; True if it was.

    Strict first, so the common reading pays nothing for the rule, and a
    rounding is known (and counted) only when one happened.
    """
    try:
        return parse_reading(fields, now_s), False
    except InvalidField as e:
        if e.code != "too_precise":
            raise
    return parse_reading(fields, now_s, round_to_wh=True), True


def _parse_general(fields: dict[str, Any], now_s: float, round_to_wh: bool = False) -> Reading:
    seq = fields.get("seq")
    return Reading(
        customer_id(require(fields, "id")),
        as_int("id_medidor", require(fields, "id_medidor"), minimum=1, maximum=MAX_METER_ID),
        timestamp_us(require(fields, "timestamp"), now_s),
        kwh_to_wh("valor", require(fields, "valor"), round_to_wh=round_to_wh),
        None if seq is None else as_int("seq", seq),
    )


# A Reading from fields already checked, built in C: a NamedTuple's generated
# __new__ costs twice what building the tuple does.
reading_of: Callable[[Sequence[Any]], Reading] = functools.partial(tuple.__new__, Reading)
