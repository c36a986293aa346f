"""An alarm event as a webhook POSTs it: the URL it may go to, the JSON body, the signature.

Pure (no Twisted): :mod:`meterd.webhooks` sends what these functions make,
and a receiver checks it with :func:`verify` or the ten lines of standard
library the README shows.

One POST per event, its body the JSON of :func:`body`, with these headers:

* ``Meterd-Delivery``: ``<webhook_id>-<event_id>``, the same on every retry
  of that event to that webhook, so a receiver can drop what it already took;
* ``Meterd-Event``: ``raised``, ``cleared`` or ``acked``;
* ``Meterd-Signature``: ``t=<unix seconds>,v1=<hex>``, where ``<hex>`` is
  HMAC-SHA256 keyed with the webhook's secret (its UTF-8 bytes) over the
  *signed string*: the ASCII digits of ``t``, a ``.``, then the body's bytes
  exactly as sent. ``t`` is when this attempt was made: a retry is signed
  anew, so a receiver that refuses signatures older than a few minutes
  (:data:`TOLERANCE_S`) refuses replays without refusing retries.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson
from hyperlink import EncodedURL

from meterd.alarm_book import Alarm, Event
from meterd.alarm_wire import alarm_json, event_json

__all__ = [
    "DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "TOLERANCE_S", "MAX_URL_LENGTH",
    "EventDetail", "InvalidUrl", "body", "check_url", "delivery_id", "headers", "origin", "signature", "signed_string", "verify",
]

DELIVERY_HEADER = "Meterd-Delivery"
EVENT_HEADER = "Meterd-Event"
SIGNATURE_HEADER = "Meterd-Signature"
TOLERANCE_S = 300  # how old a signature a receiver should accept (the README's example uses it)
MAX_URL_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class EventDetail:
    """An alarm event with what its delivery says: the alarm (as stored when it is read) and the customer's zone."""

    event: Event
    alarm: Alarm
    tz: str


class InvalidUrl(ValueError):
    """Not a URL meterd POSTs to; the message says why."""


def check_url(url: object) -> str:
    """``url`` if meterd can POST to it: ``http`` or ``https``, a host, no credentials, no fragment.

    ASCII only: a host name in another script is given in its ``xn--`` form,
    a path's other characters percent-encoded, so what is stored is exactly
    what is sent.
    """
    if not isinstance(url, str):
        raise InvalidUrl("the url must be a string")
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"the url must be 1 to {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidUrl("the url must be printable ASCII without spaces (percent-encode the rest, xn-- for host names)")
    try:
        parts = urlsplit(url)
    except ValueError as e:  # a bracket left open around an IPv6 address
        raise InvalidUrl(f"the url does not parse: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidUrl("the url must start with http:// or https://")
    if "@" in parts.netloc:
        raise InvalidUrl("the url must not carry a user name or password")
    if not parts.hostname:
        raise InvalidUrl("the url has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise InvalidUrl("the url's port is not a number from 1 to 65535")
    if parts.fragment or url.endswith("#"):
        raise InvalidUrl("the url must not have a #fragment")
    try:  # what the HTTP client (treq) does with it first: a host it cannot encode is refused now, not at every delivery
        EncodedURL.from_text(url).to_uri()
    except Exception as e:  # hyperlink's and idna's own errors; an IPv6 literal among them
        raise InvalidUrl(f"the url's host is not a host name or IPv4 address meterd can send to ({e})") from None
    return url


def origin(url: str) -> str:
    """What the log says of a webhook's URL: its scheme, host and port only.

    Receivers often take a credential in the path or the query (a chat
    service's incoming-webhook URL is one), and a log is read by more people
    than the operator's API; ``/getWebhooks`` shows the whole URL.
    """
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc}"


def delivery_id(webhook_id: int, event_id: int) -> str:
    """The same for every attempt to deliver this event to this webhook, different for any other pair."""
    return f"{webhook_id}-{event_id}"


def body(webhook_id: int, detail: EventDetail) -> bytes:
    """The POST's body: which delivery, whose, what happened, and the alarm it happened to.

    Times are ISO 8601 with the customer's offset, as ``/getAlarme`` writes
    them; ``alarm`` is the alarm as stored when the event was read for
    delivery (a late ``raised`` may already show it cleared).
    """
    tz = ZoneInfo(detail.tz)
    return orjson.dumps({
        "delivery_id": delivery_id(webhook_id, detail.event.event_id),
        "webhook_id": webhook_id,
        "id": detail.event.customer_id,
        "event": event_json(detail.event, tz),
        "alarm": alarm_json(detail.alarm, tz),
    })


def signed_string(timestamp: int, payload: bytes) -> bytes:
    """What the signature covers: ``b"<timestamp>." + payload``."""
    return str(timestamp).encode("ascii") + b"." + payload


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The ``Meterd-Signature`` header's value for ``payload`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), signed_string(timestamp, payload), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def headers(secret: str, timestamp: int, webhook_id: int, detail: EventDetail, payload: bytes) -> dict[bytes, list[bytes]]:
    """Every header of one attempt (treq's form)."""
    return {
        b"Content-Type": [b"application/json; charset=utf-8"],
        DELIVERY_HEADER.encode(): [delivery_id(webhook_id, detail.event.event_id).encode()],
        EVENT_HEADER.encode(): [detail.event.type.encode()],
        SIGNATURE_HEADER.encode(): [signature(secret, timestamp, payload).encode()],
    }


def verify(secret: str, header: str, payload: bytes, now: float, tolerance: float = TOLERANCE_S) -> bool:
    """The receiver's check: ``header`` signs ``payload`` with ``secret``, at most ``tolerance`` seconds from ``now``.

    Compared in constant time. A header that does not parse is simply false.
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t, given = fields.get("t", ""), fields.get("v1", "")
    if not (t.isascii() and t.isdigit()) or abs(now - int(t)) > tolerance:
        return False
    expected = signature(secret, int(t), payload).rpartition("v1=")[2]
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))
