"""``/getFrota``: the fleet at a glance, for the operator (the portal's fleet page).

How fast readings are being stored, which meters are silent now, the active
alarms by rule, and the datagrams dropped by reason: what a person watching
the head-end wants to see move, in one cheap answer. Everything comes from
memory (the directory, the alarm book, the metrics); nothing is read from the
store.

The rate is this process's: with several meterd processes on one database
(``--reuse-port``), each answers for the readings it stored itself.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, ClassVar, Final
from zoneinfo import ZoneInfo

from prometheus_client import Counter as PromCounter
from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from meterd import kernel_drops, periods
from meterd.alarm_rules import RULES
from meterd.alarms import Alarms
from meterd.web.api import Api, Call
from meterd.web.routes import route

__all__ = ["Fleet", "ReadingRate"]

_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 local time with offset"}

#: ``/getFrota``'s answer, for ``/openapi.json``.
SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["at", "readings_per_s", "customers", "meters", "silent_meters", "silent", "alarms", "drops"],
    "additionalProperties": False,
    "properties": {
        "at": _ISO,
        "readings_per_s": {
            "type": "number", "minimum": 0, "nullable": True,
            "description": "readings stored per second over the last 10 s by this process; null until measured",
        },
        "customers": {"type": "integer", "minimum": 0},
        "meters": {"type": "integer", "minimum": 0},
        "silent_meters": {"type": "integer", "minimum": 0, "description": "meters with an active `silent` alarm"},
        "silent": {
            "type": "array",
            "description": "the silent meters, silent the longest first (at most 100)",
            "items": {
                "type": "object",
                "required": ["id", "name", "id_medidor", "since"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "id_medidor": {"type": "integer", "minimum": 1},
                    "since": {**_ISO, "description": "when its silent alarm was raised"},
                },
            },
        },
        "alarms": {
            "type": "object",
            "required": list(RULES),
            "additionalProperties": False,
            "properties": {rule: {"type": "integer", "minimum": 0} for rule in RULES},
            "description": "active alarms by rule, every customer's",
        },
        "drops": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1},
            "description": "UDP datagrams dropped since start, by reason (`kernel`: by the kernel, before meterd read them)",
        },
    },
}

SAMPLE_INTERVAL: Final = 1.0  # seconds between samples of the stored-readings counter
RATE_WINDOW: Final = 10  # samples the rate spans
MAX_SILENT_LISTED: Final = 100  # silent meters named in the answer, longest silent first


class ReadingRate:
    """Readings stored per second over the last ``window`` samples of a growing total."""

    def __init__(self, window: int = RATE_WINDOW) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=window + 1)

    def sample(self, now: float, total: float) -> None:
        if self._samples and total < self._samples[-1][1]:
            self._samples.clear()  # the counter started over
        self._samples.append((now, total))

    def per_second(self) -> float | None:
        """None until two samples a moment apart exist."""
        if len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return None if t1 <= t0 else (n1 - n0) / (t1 - t0)


def _by_label(counter: PromCounter) -> dict[str, float]:
    """A one-label counter's totals by the label's value, from its own ``collect`` (no scrape of the registry)."""
    return {next(iter(s.labels.values())): s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")}


class Fleet:
    """The route, and the timer that samples the stored-readings counter for its rate."""

    tags: ClassVar[list[dict[str, str]]] = [{"name": "fleet", "description": "operator: the fleet at a glance"}]
    schemas: ClassVar[dict[str, Any]] = {"Fleet": SCHEMA}

    def __init__(self, api: Api, alarms: Alarms, clock: IReactorTime) -> None:
        self.api = api
        self.alarms = alarms
        self.clock = clock
        self.rate = ReadingRate()
        self.sampler = TimerService(SAMPLE_INTERVAL, self.sample)
        self.sampler.clock = clock

    def sample(self) -> None:
        self.rate.sample(self.clock.seconds(), _by_label(self.api.metrics.readings).get("stored", 0.0))

    def drops(self) -> dict[str, int]:
        """UDP datagrams dropped since start, by reason; ``kernel`` for those the kernel dropped before meterd read them."""
        metrics = self.api.metrics
        out = {reason: int(n) for reason, n in sorted(_by_label(metrics.dropped).items()) if n}
        kernel = None if metrics.udp_socket_inode is None else kernel_drops.drops(metrics.udp_socket_inode)
        if kernel:
            out["kernel"] = kernel
        return out

    @route(
        "GET", "/getFrota", "operator",
        summary="The fleet at a glance (operator token)",
        description=(
            "Readings stored per second over the last 10 s (this process's; null until it has two samples),"
            " the meters silent now (their `silent` alarms, longest first, at most 100 listed), the active"
            " alarms by rule, and the UDP datagrams dropped since start by reason."
        ),
        tag="fleet", ok=((200, "the fleet", "Fleet"),), errors=(503,),
    )
    async def fleet(self, call: Call) -> tuple[int, dict[str, Any]]:
        book = await self.alarms.ready()
        active = book.every_active()
        by_rule = Counter(a.rule for a in active)
        directory = self.api.directory
        tz = ZoneInfo(self.api.settings.tz)
        silent = [a for a in active if a.rule == "silent"]
        listed = []
        for alarm in silent[:MAX_SILENT_LISTED]:  # oldest alarm first: silent the longest
            customer = directory.customers.get(alarm.customer_id)
            listed.append(
                {
                    "id": alarm.customer_id,
                    "name": customer.name if customer is not None else "",
                    "id_medidor": alarm.meter_id,
                    "since": periods.iso(alarm.raised_at, tz),
                }
            )
        rate = self.rate.per_second()
        return 200, {
            "at": periods.iso(self.api.now_ms(), tz),
            "readings_per_s": None if rate is None else round(rate, 1),
            "customers": len(directory.customers),
            "meters": len(directory.meters),
            "silent_meters": len(silent),
            "silent": listed,
            "alarms": {rule: by_rule.get(rule, 0) for rule in RULES},
            "drops": self.drops(),
        }
