"""How an alarm reads to a person: Brazilian number formats and the Portuguese messages. Pure."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from meterd.alarm_rules import ANOMALY_FACTOR, Number, as_fraction

__all__ = ["format_br", "format_duration", "message_for"]


def _decimal(x: Number) -> Decimal:
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    if isinstance(x, int):
        return Decimal(x)
    f = as_fraction(x)
    return Decimal(f.numerator) / Decimal(f.denominator)


def format_br(x: Number, max_decimals: int = 3) -> str:
    """Format like a Brazilian bill: ``1.020,5`` (no trailing zeros, half up)."""
    q = Decimal(1).scaleb(-max_decimals)
    d = _decimal(x).quantize(q, rounding=ROUND_HALF_UP)
    text = format(abs(d), "f")
    int_part, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    groups = []
    while len(int_part) > 3:
        groups.append(int_part[-3:])
        int_part = int_part[:-3]
    groups.append(int_part)
    out = ".".join(reversed(groups))
    if frac:
        out += "," + frac
    if d < 0 and out.strip("0.,"):
        out = "-" + out
    return out


def _format_above(value: Number, threshold: Number, decimals: int) -> str:
    """Format a value that is above ``threshold`` so that it *reads* above it.

    5.004 kW over a 5 kW limit would print as "5 kW acima do limite de 5 kW";
    one more decimal at a time (up to 3) avoids that.
    """
    t_text = format_br(threshold, 3)
    text = format_br(value, decimals)
    while decimals < 3 and text == t_text:
        decimals += 1
        text = format_br(value, decimals)
    return text


def format_duration(seconds: Number) -> str:
    """A duration in Portuguese, coarse enough for a message (floors)."""
    s = int(as_fraction(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        if s % 60 and s < 120:
            return f"{s} s"
        return f"{s // 60} min"
    if s < 86_400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    days = s // 86_400
    return "1 dia" if days == 1 else f"{days} dias"


def message_for(
    rule: str,
    meter_id: int | None,
    value: Number,
    threshold: Number,
    demand_window_s: int = 300,
) -> str:
    """The Portuguese message of an alarm, from its value and threshold."""
    if rule == "demand":
        return (
            f"Demanda média de {_format_above(value, threshold, 1)} kW acima do "
            f"limite de {format_br(threshold, 3)} kW nos últimos "
            f"{format_duration(demand_window_s)}"
        )
    if rule == "monthly":
        return (
            f"Consumo do mês de {_format_above(value, threshold, 0)} kWh acima do "
            f"limite de {format_br(threshold, 3)} kWh"
        )
    if rule == "anomaly":
        mean = as_fraction(threshold) / ANOMALY_FACTOR
        if mean > 0:
            pct = (as_fraction(value) / mean - 1) * 100
            return (
                f"Consumo das últimas 24 h {format_br(pct, 0)} % acima da "
                f"média diária"
            )
        return "Consumo das últimas 24 h acima da média diária"
    if rule == "silent":
        return f"Medidor {meter_id} sem leituras há {format_duration(value)}"
    raise ValueError(f"unknown rule: {rule!r}")
