"""The checks a datagram passes before it is a reading (DESIGN §4).

Pure, so the reactor's UDP port and the UDP worker processes
(:mod:`meterd.udp_worker`) run the same code, in the same order: size,
signature shape, payload, fields, a known meter, a valid signature, a meter
not retired before the reading's time. Anything
that fails is dropped silently by the caller and counted under ``reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from meterd.datagram import MAX_DATAGRAM, MAX_SIGNED, DatagramError, Key, parse_payload, split_signature
from meterd.readings import InvalidField, Reading, parse_reading, parse_rounding

MeterId = tuple[str, int]  # (customer_id, meter_id)
MAX_KEYED = 200_000


class Rejected(Exception):
    """A datagram that is not a reading; ``reason`` is the metrics label.

    ``meter`` is set for a well-formed reading of a meter the key lookup does
    not know, which another process may have registered.
    """

    def __init__(self, reason: str, meter: MeterId | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.meter = meter


class Screen:
    """Turns datagrams into readings, given where the meters' keys are."""

    __slots__ = ("key_of", "retired", "require_signature", "on_rounded", "_keys")

    def __init__(self, key_of: Callable[[MeterId], bytes | None], *, require_signature: bool,
                 retired: Mapping[MeterId, int] | None = None, on_rounded: Callable[[], None] = lambda: None) -> None:
        self.key_of = key_of
        # Retired meters' final reading times (us), kept current by the owner: later readings are refused.
        self.retired: Mapping[MeterId, int] = {} if retired is None else retired
        self.require_signature = require_signature
        # Told of every unsigned reading whose valor was rounded to the Wh (counted in /metrics).
        self.on_rounded = on_rounded
        # Keyed HMAC state of the meters that send, made on first use: it halves
        # the cost of each signature, but at ~400 B a meter is not worth holding
        # for every registered meter that stays silent.
        self._keys: dict[bytes, Key] = {}

    def _key(self, raw: bytes) -> Key:
        key = self._keys.get(raw)
        if key is None:
            if len(self._keys) >= MAX_KEYED:
                self._keys.clear()
            key = self._keys[raw] = Key(raw)
        return key

    def key_for(self, meter: MeterId) -> Key | None:
        """The keyed HMAC of a known meter, to sign its acks with."""
        raw = self.key_of(meter)
        return None if raw is None else self._key(raw)

    def reading(self, data: bytes, now: float) -> Reading:
        """The reading ``data`` carries, or :class:`Rejected`."""
        if len(data) > MAX_SIGNED:
            raise Rejected("too_large")
        payload, signature = split_signature(data)
        if len(payload) > MAX_DATAGRAM:
            raise Rejected("too_large")
        if signature is None and self.require_signature:
            raise Rejected("unsigned")
        try:
            if signature is None:  # accepted unsigned (--no-auth): the assignment's meters send long floats
                reading, rounded = parse_rounding(parse_payload(payload), now)
            else:  # a signed meter that reports below the Wh is misconfigured: too_precise
                reading, rounded = parse_reading(parse_payload(payload), now), False
        except DatagramError as e:
            raise Rejected(e.reason) from None
        except InvalidField as e:
            raise Rejected(e.code) from None
        meter = reading[:2]
        raw = self.key_of(meter)
        if raw is None:
            raise Rejected("unknown_meter", meter)
        if signature is not None and not self._key(raw).verify(payload, signature):
            raise Rejected("bad_signature")
        if self.retired:
            final = self.retired.get(meter)
            if final is not None and reading.ts > final:
                raise Rejected("meter_retired")
        if rounded:
            self.on_rounded()
        return reading
