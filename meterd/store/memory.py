"""What a store that sees every write can keep in memory: each meter's newest reading and past period edges.

Only a process that is its database's one writer (SQLite; a lock file makes
sure) can trust these: with it, in-order readings cost no query at all and
this month's bill is answered without a trip to a database thread.

Owned by the reactor thread. The store reads from it and writes to it only
there: before a flush's transaction it hands the writer thread a copy of the
states that flush needs (:meth:`states_of`), after the commit it applies the
flush (:meth:`committed`); a query on a reader thread gets the edges already
known (:meth:`edge`) and returns what it found for the reactor to
:meth:`remember`. So no thread but the reactor's ever touches these dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from meterd.registers import Sample, Span, any_in_span, sensitive_span
from meterd.store.plan import MeterKey, MeterState, Plan

MAX_REMEMBERED_EDGES = 250_000

Around = tuple[Sample | None, Sample | None]  # the stored readings at-or-before and after an edge


class MeterMemory:
    def __init__(self) -> None:
        self.states: dict[MeterKey, MeterState] = {}
        # The readings around past period edges (month starts...) with the spans
        # where a stored reading would change them (registers.sensitive_span).
        self._edges: dict[MeterKey, _Edges] = {}
        self._edge_count = 0
        self.flushes = 0  # committed flushes: a query that spanned one may not be remembered

    def load(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """``(customer_id, meter_id, mode, last_ts, last_wh, retired_ts)`` of every meter, as the store holds them."""
        self.states = {(c, m): MeterState(mode, ts, wh, retired) for c, m, mode, ts, wh, retired in rows}

    def meter_added(self, key: MeterKey, mode: str) -> None:
        self.states[key] = MeterState(mode)

    def retired(self, key: MeterKey, final_ts: int) -> None:
        """A meter was retired at its final reading (after :meth:`committed` took that reading in)."""
        state = self.states[key]
        self.states[key] = MeterState(state.mode, state.last_ts, state.last_wh, final_ts)

    def states_of(self, keys: Iterable[MeterKey]) -> dict[MeterKey, MeterState]:
        """The newest state of these meters, for a flush's transaction on the writer thread."""
        states = self.states
        return {key: states[key] for key in keys if key in states}

    def committed(self, plan: Plan) -> None:
        """A flush committed: its meters' newest readings, and the edges its rows make stale."""
        self.flushes += 1
        self.states.update(plan.states)
        if self._edges:
            self._forget_edges(plan)

    def _forget_edges(self, plan: Plan) -> None:
        """Forget the remembered edges whose neighbours a committed row changed.

        Per meter, not per row: a meter's rows are one ts-sorted run of
        ``plan.rows``. When its first row is past the meter's ``reach`` no
        span can hold any of them, which is the case of every in-order
        reading (spans end at a stored reading), so the common meter costs
        one comparison. Otherwise each span is checked with one bisect.
        """
        edges = self._edges
        rows = plan.rows
        for key, (start, end) in plan.runs.items():
            remembered = edges.get(key)
            if remembered is None or rows[start][2] >= remembered.reach:
                continue
            times = [row[2] for row in rows[start:end]]
            around = remembered.around
            for t, (_, spans) in list(around.items()):
                if any(any_in_span(times, span) for span in spans):
                    del around[t]
                    self._edge_count -= 1
            if not around:
                del edges[key]

    def edge(self, key: MeterKey, t: int) -> Around | None:
        """The readings around edge ``t`` if known without a query, else None."""
        state = self.states.get(key)
        if state is None:
            return None
        if state.last_ts is None:
            return None, None  # no reading yet: the register is 0 everywhere
        if t >= state.last_ts:
            assert state.last_wh is not None  # set together with last_ts
            return Sample(state.last_ts, state.last_wh), None  # held after the newest reading
        remembered = self._edges.get(key)
        found = None if remembered is None else remembered.around.get(t)
        return None if found is None else found[0]

    def remember(self, found: Mapping[tuple[MeterKey, int], Around], flushes: int) -> None:
        """Keep edges a query found; ``flushes`` is :attr:`flushes` when the query began.

        A flush that committed during the query may or may not be in its
        answer: then nothing is kept.
        """
        if flushes != self.flushes:
            return
        for (key, t), around in found.items():
            if self._edge_count >= MAX_REMEMBERED_EDGES:
                self._edges, self._edge_count = {}, 0
            remembered = self._edges.setdefault(key, _Edges())
            spans = sensitive_span(t, *around)
            remembered.widen(spans)
            if t not in remembered.around:
                self._edge_count += 1
            remembered.around[t] = (around, spans)


class _Edges:
    """One meter's remembered edges, and how far their spans reach.

    ``reach`` only grows (a span removed leaves it as it was): a bound too
    high only costs a check, a bound too low would keep a wrong edge.
    """

    __slots__ = ("around", "reach")

    def __init__(self) -> None:
        self.around: dict[int, tuple[Around, list[Span]]] = {}
        self.reach: float = -math.inf  # no span holds a time at or after this

    def widen(self, spans: list[Span]) -> None:
        for _, hi in spans:
            self.reach = max(self.reach, math.inf if hi is None else hi)
