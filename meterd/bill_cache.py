"""Bills, computed once until a reading changes them.

A month's bill changes only when a reading arrives that its computation did
not see and that falls where it matters: between the readings around the
month's edges (register meters) or inside the month (interval meters).
Entries remember those spans per meter, so live readings never evict a closed
month while a late reading for that month does. The open month is cached the
same way: its end edge lies after the meter's newest reading, so the next
reading of any of its meters evicts it, and between two flushes every request
for it is answered from here. Pure: no Twisted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meterd.readings import Outcome, Reading
from meterd.registers import Span, in_span

_Key = tuple[str, int, int]


class BillCache:
    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[_Key, tuple[dict[str, Any], Mapping[int, Sequence[Span]]]] = OrderedDict()
        self._by_customer: dict[str, set[_Key]] = {}
        self._flushes = 0

    def begin(self) -> int:
        """Call before computing a bill; pass the result to :meth:`put`.

        A flush that commits while the bill is computed may or may not be in
        it; such a bill is answered but not cached, and the next one is.
        """
        return self._flushes

    def get(self, customer_id: str, year: int, month: int) -> dict[str, Any] | None:
        entry = self._entries.get((customer_id, year, month))
        if entry is None:
            return None
        self._entries.move_to_end((customer_id, year, month))
        return entry[0]

    def put(
        self, customer_id: str, year: int, month: int, bill: dict[str, Any], spans: Mapping[int, Sequence[Span]], begun: int
    ) -> None:
        if begun != self._flushes:
            return
        key = (customer_id, year, month)
        self._entries[key] = (bill, spans)
        self._entries.move_to_end(key)
        self._by_customer.setdefault(customer_id, set()).add(key)
        while len(self._entries) > self.max_entries:
            old, _ = self._entries.popitem(last=False)
            self._discard(old)

    def forget_customer(self, customer_id: str) -> None:
        """A meter was added: every cached bill of the customer is stale."""
        for key in self._by_customer.pop(customer_id, set()):
            self._entries.pop(key, None)

    def issued(self, customer_ids: Iterable[str]) -> None:
        """A billing run issued these customers' bills: their previews are stale from now on.

        Counted like a flush, so a preview computed meanwhile is not cached.
        """
        self._flushes += 1
        for cid in customer_ids:
            self.forget_customer(cid)

    def readings_stored(self, readings: Iterable[Reading], outcomes: Iterable[Outcome]) -> None:
        """Ingest observer: evict the bills a newly stored reading changes.

        Ingest runs it before answering the flush's readings, so a request
        pipelined behind a POST never gets a bill without that reading.
        """
        self._flushes += 1
        if not self._by_customer:
            return
        for reading, outcome in zip(readings, outcomes):
            keys = self._by_customer.get(reading.customer_id)
            if not keys or outcome is not Outcome.STORED:
                continue
            for key in list(keys):
                spans = self._entries[key][1].get(reading.meter_id, ())
                if any(in_span(reading.ts, span) for span in spans):
                    self._entries.pop(key)
                    self._discard(key)

    def _discard(self, key: _Key) -> None:
        keys = self._by_customer.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_customer[key[0]]

    def __len__(self) -> int:
        return len(self._entries)
