"""The figures the portal derives from the API's answers: where this month is
heading, what a bucket of consumption cost, how this month compares.

They are estimates, and the pages say so; the bill itself is only ever what
:func:`meterd.billing.compute_bill` says. A projection in reais is made the
same way: project the kWh here, then price them with ``compute_bill`` (so the
minimum billed kWh, the flag and the taxes apply as on the real bill).

Pure module: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from meterd.portal.fmt import decimal_of

__all__ = ["all_in_rate", "bucket_cost", "month_projection_kwh", "relative_change"]

_CENT = Decimal("0.01")
_WH = Decimal("0.001")


def month_projection_kwh(so_far_kwh: Any, start: str, end: str, now: str) -> Decimal:
    """This month's kWh at its end if the rest of it goes as it went so far.

    A straight line through the elapsed share of the month (``start``/``end``
    are the period's ISO bounds, ``now`` an ISO instant): the simplest
    projection a customer can check by hand. Before the month starts it is
    what was measured (nothing to extrapolate from); after it ends, exactly
    what was measured. Rounded half up to the Wh.
    """
    so_far = decimal_of(so_far_kwh)
    t0, t1, t = (datetime.fromisoformat(x) for x in (start, end, now))
    if t >= t1 or t <= t0:
        return so_far.quantize(_WH, rounding=ROUND_HALF_UP)
    elapsed = Decimal((t - t0).total_seconds())
    whole = Decimal((t1 - t0).total_seconds())
    return (so_far * whole / elapsed).quantize(_WH, rounding=ROUND_HALF_UP)


def all_in_rate(bill: Mapping[str, Any]) -> Decimal | None:
    """What one billed kWh cost on ``bill`` (an API ``Bill``), taxes and flag included.

    ``total / faturado_kwh``: the price a customer compares with another month.
    None for a bill with nothing billed.
    """
    billed = decimal_of(bill["faturado_kwh"])
    if billed == 0:
        return None
    return decimal_of(bill["total"]) / billed


def bucket_cost(kwh: Any, rate: Decimal) -> Decimal:
    """What ``kwh`` cost at ``rate`` (R$/kWh, e.g. :func:`all_in_rate`), to the cent, half up."""
    return (decimal_of(kwh) * rate).quantize(_CENT, rounding=ROUND_HALF_UP)


def relative_change(now: Any, before: Any) -> Decimal | None:
    """``(now - before) / before``; None when ``before`` is zero (no basis to compare)."""
    base = decimal_of(before)
    if base == 0:
        return None
    return (decimal_of(now) - base) / base
