"""Fault injection on outgoing datagrams: loss, duplication, reordering.

Lets a test prove exactly-once storage over a bad network on localhost, where
nothing is ever lost by itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

__all__ = ["FaultInjector"]


class FaultInjector:
    """Wrap a ``send(datagram)`` function with seeded, probabilistic faults.

    Reordering holds a datagram back for 5–150 ms, so later datagrams overtake it.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        clock: IReactorTime,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        for name, p in (("loss", loss), ("dup", dup), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"--{name} must be between 0 and 1")
        self._send = send
        self._clock = clock
        self.loss = loss
        self.dup = dup
        self.reorder = reorder
        self._rng = rng or random.Random(0)
        self.lost = 0
        self.duplicated = 0
        self.reordered = 0
        self.held = 0

    @property
    def active(self) -> bool:
        return bool(self.loss or self.dup or self.reorder)

    def __call__(self, datagram: bytes) -> None:
        rng = self._rng
        if self.loss and rng.random() < self.loss:
            self.lost += 1
            return
        copies = 1
        if self.dup and rng.random() < self.dup:
            self.duplicated += 1
            copies = 2
        for _ in range(copies):
            if self.reorder and rng.random() < self.reorder:
                self.reordered += 1
                self.held += 1
                self._clock.callLater(rng.uniform(0.005, 0.15), self._release, datagram)
            else:
                self._send(datagram)

    def _release(self, datagram: bytes) -> None:
        self.held -= 1
        self._send(datagram)
