"""The Server-Sent Events wire format, for the live alarms list.

The alarms page subscribes with ``EventSource`` (``portal.js``); each new
alarm arrives as an ``alarm`` event whose data is the alarm's list item,
rendered on the server by the same code as the page
(:func:`meterd.portal.customer_pages.alarm_item_html`), so a live alarm looks
and reads exactly like one that was there at load. The event id is the API's
alarm-event cursor: a reconnecting browser sends it back as
``Last-Event-ID`` and misses nothing.

Pure module: standard library only.
"""

from __future__ import annotations

__all__ = ["comment", "event"]


def event(name: str, data: str, event_id: int | None = None) -> bytes:
    """One event. Each line of ``data`` becomes its own ``data:`` field (the
    browser joins them with newlines); ``name`` and the id must be one line."""
    if not name or any(c in name for c in "\r\n"):
        raise ValueError("an event name is one non-empty line")
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {int(event_id)}")
    lines.extend(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def comment(text: str = "") -> bytes:
    """A comment line: keeps an idle connection from being closed by proxies."""
    if any(c in text for c in "\r\n"):
        raise ValueError("a comment is one line")
    return f": {text}\n\n".encode()
