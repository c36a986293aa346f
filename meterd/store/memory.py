"""What a store that sees every write can keep in memory: each meter's newest reading and past period edges.

Only a process that is its database's one writer (SQLite; a lock file makes
sure) can trust these: with it, in-order readings cost no query at all and
this month's bill is answered without a trip to a database thread.

Owned by the reactor thread: only the reactor changes these dicts. The one
other thread that sees any of them is the writer, and only the meters'
states, only while a flush's transaction runs: the store lends it a
read-only view (:meth:`lend`), and until the flush is given back
(:meth:`give_back`, then :meth:`committed`) nothing changes them: a meter
registered meanwhile waits to be added. Lending costs nothing on the reactor
thread, where copying out the states a flush needs would cost a pass over
all its readings. A transaction outside a flush (a retirement, a
replacement) gets a copy of the one state it needs (:meth:`states_of`). A
query on a reader thread gets the edges already known (:meth:`edge`) and
returns what it found for the reactor to :meth:`remember`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from meterd.registers import Sample, Span, any_in_span, sensitive_span
from meterd.store.plan import MeterKey, MeterState, Plan

MAX_REMEMBERED_EDGES = 250_000

Around = tuple[Sample | None, Sample | None]  # the stored readings at-or-before and after an edge


class MeterMemory:
    def __init__(self) -> None:
        self.states: dict[MeterKey, MeterState] = {}
        self._view: Mapping[MeterKey, MeterState] = MappingProxyType(self.states)
        self._lent = False  # a flush's transaction is reading the states
        self._waiting: dict[MeterKey, MeterState] = {}  # meters registered while lent, added when given back
        # The readings around past period edges (month starts...) with the spans
        # where a stored reading would change them (registers.sensitive_span).
        self._edges: dict[MeterKey, _Edges] = {}
        self._edge_count = 0
        self.flushes = 0  # committed flushes: a query that spanned one may not be remembered

    def load(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """``(customer_id, meter_id, mode, last_ts, last_wh, retired_ts)`` of every meter, as the store holds them."""
        assert not self._lent
        self.states = {(c, m): MeterState(mode, ts, wh, retired) for c, m, mode, ts, wh, retired in rows}
        self._view = MappingProxyType(self.states)

    def meter_added(self, key: MeterKey, mode: str) -> None:
        """A meter was registered: no flush holds its readings yet (they were screened out as unknown)."""
        if self._lent:
            self._waiting[key] = MeterState(mode)
        else:
            self.states[key] = MeterState(mode)

    def retired(self, key: MeterKey, final_ts: int) -> None:
        """A meter was retired at its final reading (after :meth:`committed` took that reading in).

        Between flushes (:meth:`meterd.ingest.Ingest.exclusively`), as
        retirements and replacements are.
        """
        assert not self._lent, "a meter retired while a flush reads the states"
        state = self.states[key]
        self.states[key] = MeterState(state.mode, state.last_ts, state.last_wh, final_ts)

    def lend(self) -> Mapping[MeterKey, MeterState]:
        """Every meter's newest state, read-only, for one flush's transaction on the writer thread.

        Nothing changes the states until :meth:`give_back`: flushes run one
        at a time, and retirements and replacements between them.
        """
        assert not self._lent, "the states are lent to one flush at a time"
        self._lent = True
        return self._view

    def give_back(self) -> None:
        """The flush's transaction is over (committed or not): the meters registered meanwhile are added."""
        self._lent = False
        if self._waiting:
            self.states.update(self._waiting)
            self._waiting.clear()

    def states_of(self, keys: Iterable[MeterKey]) -> dict[MeterKey, MeterState]:
        """A copy of these meters' newest states, for a transaction outside a flush."""
        states = self.states
        return {key: states[key] for key in keys if key in states}

    def committed(self, plan: Plan) -> None:
        """A flush (or a retirement's or replacement's reading) committed: its meters' newest readings, and the edges its rows make stale."""
        assert not self._lent, "committed before the states were given back"
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
