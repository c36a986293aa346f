"""When a webhook that failed is tried again: exponential backoff with jitter, up to a bound (pure).

After the n-th failure in a row (a connection error, a timeout or an answer
other than 2xx) the same event is sent again after
``min(bound, FIRST_DELAY_S × 2^(n−1)) × (0.5 + jitter / 2)`` seconds, with
``jitter`` drawn uniformly from [0, 1): 1 s, 2 s, 4 s ... doubling to the
bound (``--webhook-max-backoff``, 5 minutes by default), each scaled into
its upper half at random so that webhooks failing together (a receiver
restarting) do not all come back in the same instant. The wait never exceeds
the bound, and a receiver that recovers is tried again within it.
"""

from __future__ import annotations

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "delay"]

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300


def delay(failures: int, jitter: float, bound: float = MAX_DELAY_S) -> float:
    """Seconds to wait after ``failures`` consecutive failures (at least 1), ``jitter`` in [0, 1)."""
    if failures < 1:
        raise ValueError("a delay follows a failure")
    if not 0 <= jitter < 1:
        raise ValueError("jitter is drawn from [0, 1)")
    doubled = FIRST_DELAY_S * 2.0 ** min(failures - 1, 64)  # 2^64 s is past any bound: no overflow
    return min(bound, doubled) * (0.5 + jitter / 2)
