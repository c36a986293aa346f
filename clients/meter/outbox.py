"""The meter's memory of readings not yet acknowledged, and when to resend them.

Pure (no Twisted): the caller passes the time in, so the backoff is tested with
any clock. A real meter has a fixed amount of memory for undelivered readings;
when it fills, the oldest ones go (and are counted) rather than the meter
stopping. Retransmission follows TCP's habits: a timeout derived from the
measured round trip (Karn's rule: only readings acknowledged on their first
transmission are timed), doubled on each retry up to a cap, with jitter so a
fleet that lost the server at one moment does not resend in lockstep.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Outbox"]


@dataclass(slots=True)
class _Entry:
    seq: int
    datagram: bytes
    first_sent: float
    due: float
    rto: float
    last_sent: float
    attempts: int = 1


class Outbox:
    """Unacknowledged readings of one meter, oldest first.

    Counters: ``sent`` (readings first transmitted), ``resent`` (retransmissions),
    ``acked`` (readings acknowledged), ``dropped`` (pushed out of a full buffer),
    ``pending`` (still waiting).
    """

    def __init__(
        self,
        capacity: int = 10_000,
        min_rto: float = 0.5,
        max_rto: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.min_rto = min_rto
        self.max_rto = max_rto
        self._rng = rng or random.Random(0)
        self._entries: dict[int, _Entry] = {}  # insertion order == seq order
        self._heap: list[tuple[float, int]] = []
        self.srtt: float | None = None
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.dropped = 0
        self.last_ack_at: float | None = None

    @property
    def pending(self) -> int:
        return len(self._entries)

    def __contains__(self, seq: int) -> bool:
        return seq in self._entries

    def seqs(self) -> list[int]:
        """Pending seqs, oldest first."""
        return list(self._entries)

    def initial_rto(self) -> float:
        """Timeout for a first transmission: a few round trips, within bounds."""
        if self.srtt is None:
            return self.min_rto
        return min(self.max_rto, max(self.min_rto, 4.0 * self.srtt))

    def _jitter(self, rto: float) -> float:
        return rto * self._rng.uniform(0.9, 1.1)

    def add(self, seq: int, datagram: bytes, now: float) -> int | None:
        """Remember a reading just sent; return the seq pushed out if the buffer was full."""
        evicted = None
        if seq in self._entries:
            raise ValueError(f"seq {seq} is already pending")
        if len(self._entries) >= self.capacity:
            evicted = next(iter(self._entries))
            del self._entries[evicted]
            self.dropped += 1
        rto = self.initial_rto()
        due = now + self._jitter(rto)
        self._entries[seq] = _Entry(seq, datagram, now, due, rto, now)
        heapq.heappush(self._heap, (due, seq))
        self.sent += 1
        return evicted

    def ack(self, seqs: Iterable[int], now: float) -> int:
        """Forget acknowledged readings; return how many were still pending.

        Acks for unknown seqs (duplicates, or readings already dropped) are
        ignored: the server acks a duplicate again by design.
        """
        count = 0
        for seq in seqs:
            entry = self._entries.pop(seq, None)
            if entry is None:
                continue
            count += 1
            if entry.attempts == 1:
                sample = max(0.0, now - entry.first_sent)
                self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
        if count:
            self.acked += count
            self.last_ack_at = now
        if not self._entries:
            self._heap.clear()
        return count

    def next_due(self) -> float | None:
        """When the earliest resend falls due (``None`` when nothing is pending)."""
        while self._heap:
            due, seq = self._heap[0]
            entry = self._entries.get(seq)
            if entry is not None and entry.due == due:
                return due
            heapq.heappop(self._heap)
        return None

    def due(self, now: float, limit: int | None = None) -> list[bytes]:
        """Datagrams to resend now, oldest deadline first; each gets a doubled timeout."""
        out: list[bytes] = []
        while self._heap and (limit is None or len(out) < limit):
            due, seq = self._heap[0]
            entry = self._entries.get(seq)
            if entry is None or entry.due != due:
                heapq.heappop(self._heap)
                continue
            if due > now:
                break
            heapq.heappop(self._heap)
            entry.attempts += 1
            entry.rto = min(self.max_rto, entry.rto * 2.0)
            entry.due = now + self._jitter(entry.rto)
            entry.last_sent = now
            heapq.heappush(self._heap, (entry.due, seq))
            self.resent += 1
            out.append(entry.datagram)
        return out

    def expedite(self, now: float, max_rto: float) -> None:
        """Cap every timeout and make backed-off readings due now (used when draining).

        On quit the backed-off timeouts of a lossy stretch would otherwise
        outlast the drain timeout although the server is answering again.
        Readings sent within the last round-trip timeout are still in flight:
        they keep their (capped) deadline instead of being duplicated.
        """
        self.max_rto = min(self.max_rto, max_rto)
        fresh = self.initial_rto()
        self._heap = []
        for entry in self._entries.values():
            entry.rto = min(entry.rto, self.max_rto)
            if now - entry.last_sent < fresh:
                entry.due = min(entry.due, entry.last_sent + self.max_rto)
            else:
                entry.due = now
            self._heap.append((entry.due, entry.seq))
        heapq.heapify(self._heap)
