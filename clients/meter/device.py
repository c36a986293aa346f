"""One simulated meter: its register, sequence numbers and datagram encoding.

Pure (no Twisted): time is passed in. The register is integer Wh, as in a real
meter's display; the fraction of a Wh not yet reached is carried to the next
reading so no energy is lost to rounding.
"""

from __future__ import annotations

import math

from meterd.datagram import MAX_DATAGRAM, sign

from .load import LoadModel
from .outbox import Outbox

__all__ = ["SimMeter", "encode_reading", "format_milli"]


def format_milli(n: int) -> str:
    """``1234567`` -> ``"1234.567"``: an exact 3-decimal JSON number, no float in between."""
    sign_ = "-" if n < 0 else ""
    n = abs(n)
    return f"{sign_}{n // 1000}.{n % 1000:03d}"


def encode_reading(customer_id: str, meter_id: int, register_wh: int, ts_ms: int, seq: int) -> bytes:
    """The JSON payload of DESIGN §4, written by hand so the numbers stay exact."""
    return (
        f'{{"id":"{customer_id}","id_medidor":{meter_id},'
        f'"valor":{format_milli(register_wh)},"timestamp":{format_milli(ts_ms)},"seq":{seq}}}'
    ).encode()


class SimMeter:
    """A meter that reads its register when asked and remembers what is unacknowledged."""

    def __init__(
        self,
        customer_id: str,
        meter_id: int,
        key: bytes,
        model: LoadModel,
        outbox: Outbox,
        start_time: float,
        start_wh: int = 0,
        index: int = 0,
    ) -> None:
        self.customer_id = customer_id
        self.meter_id = meter_id
        self.key = key
        self.model = model
        self.outbox = outbox
        self.index = index
        self.start_wh = start_wh
        self.first_wh: int | None = None  # register in the first reading sent
        self.register_wh = start_wh
        self.seq = 0
        self.readings = 0
        self.last_t = start_time
        self.last_ms = -1
        self._fraction = 0.0

    @property
    def route(self) -> tuple[str, int]:
        """The ``(id, id_medidor)`` that acks carry, used to route them here."""
        return self.customer_id, self.meter_id

    @property
    def energy_wh(self) -> int:
        """Energy registered since the first reading this run sent.

        Measured from the first reading, not from ``start_wh``, because that is
        what the server can see: energy drawn before the first reading (if the
        first read comes a tick late) is in no interval the server knows of.
        """
        return 0 if self.first_wh is None else self.register_wh - self.first_wh

    def advance(self, t: float) -> None:
        """Integrate the load up to ``t`` without taking a reading."""
        self._fraction += self.model.energy_wh(self.last_t, t)
        whole = math.floor(self._fraction)
        if whole > 0:
            self.register_wh += whole
            self._fraction -= whole
        self.last_t = max(self.last_t, t)

    def read(self, t: float) -> tuple[int, bytes]:
        """Take a reading at ``t``: ``(seq, signed datagram)``.

        Timestamps are strictly increasing, in whole milliseconds: the server
        identifies a reading by (meter, timestamp), so two readings at one
        timestamp would be a conflict and the second one lost.
        """
        self.advance(t)
        ts_ms = max(round(t * 1000), self.last_ms + 1)
        self.last_ms = ts_ms
        if self.first_wh is None:
            self.first_wh = self.register_wh
        self.seq += 1
        self.readings += 1
        payload = encode_reading(self.customer_id, self.meter_id, self.register_wh, ts_ms, self.seq)
        datagram = sign(payload, self.key)
        if len(datagram) > MAX_DATAGRAM:  # only a pathological customer id could do this
            raise ValueError("reading does not fit in one datagram")
        return self.seq, datagram
