"""What happens often is logged once an interval with its count, never a line per event."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from meterd.metrics import Metrics
from meterd.notices import Notices


def _logged() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    return events, lambda: globalLogPublisher.removeObserver(events.append)


def _ours(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "meterd.notices"]


def test_a_flood_is_one_line_a_minute_with_its_counts() -> None:
    metrics = Metrics()
    notices = Notices(metrics.recent)
    clock = notices.clock = Clock()
    events, stop = _logged()
    try:
        notices.startService()
        for _ in range(5000):
            metrics.drop("bad_signature")
        metrics.drop("unknown_meter", 3)
        metrics.http_refused("header_timeout", 7)
        clock.advance(59)
        assert not any(e.get("summary") for e in _ours(events))  # nothing before the minute is up
        clock.advance(1)
        (line,) = [e for e in _ours(events) if e.get("summary")]
        assert line["summary"] == (
            "HTTP refused as header_timeout: 7, UDP datagrams dropped as bad_signature: 5000, "
            "UDP datagrams dropped as unknown_meter: 3"
        )
        clock.advance(60)  # a quiet minute logs nothing
        assert len([e for e in _ours(events) if e.get("summary")]) == 1
        metrics.drop("too_large")
        notices.stopService()  # what is left is logged at stop
        last = [e for e in _ours(events) if e.get("summary")][-1]
        assert last["summary"] == "UDP datagrams dropped as too_large: 1"
    finally:
        stop()
    # the counters in /metrics keep everything: the summaries only restart their counts
    text = metrics.render().decode()
    assert 'meterd_datagrams_dropped_total{reason="bad_signature"} 5000.0' in text
    assert 'meterd_http_refusals_total{reason="header_timeout"} 7.0' in text
