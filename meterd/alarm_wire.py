"""An alarm and an alarm event as JSON (DESIGN §7), the same in ``/getAlarme`` and in webhooks.

Pure: times are written in the customer's zone by :func:`meterd.periods.iso`.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from meterd import periods
from meterd.alarm_book import Alarm, Event

__all__ = ["alarm_json", "event_json"]


def alarm_json(alarm: Alarm, tz: ZoneInfo) -> dict[str, Any]:
    def at(ms: int | None) -> str | None:
        return None if ms is None else periods.iso(ms, tz)

    return {
        "alarm_id": alarm.alarm_id,
        "rule": alarm.rule,
        "id_medidor": alarm.meter_id,
        "raised_at": at(alarm.raised_at),
        "cleared_at": at(alarm.cleared_at),
        "acked_at": at(alarm.acked_at),
        "value": round(alarm.value, 3),
        "threshold": round(alarm.threshold, 3),
        "message": alarm.message,
    }


def event_json(event: Event, tz: ZoneInfo) -> dict[str, Any]:
    return {"event_id": event.event_id, "alarm_id": event.alarm_id, "type": event.type, "at": periods.iso(event.at, tz)}
