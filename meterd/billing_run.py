"""The monthly billing run's rules: which month each customer gets, what is read, what is issued.

Pure module (no Twisted, no I/O): the store reads a batch of customers
(:meth:`meterd.store.bill_sql.BillSql.bill_batch`) and asks this module which
register values it needs and what to issue; the runner
(:mod:`meterd.faturamento`) only schedules batches.

**The ledger.** For every issued month the store keeps each meter's register
value at the month's two edges (``bill_edges``), with the span of reading
times where a reading stored later would change it (the interval between the
two readings it was interpolated from; empty when a reading sits exactly on
the edge). An issued bill is never recomputed. Instead, each run asks which
ledger values a late reading has hit since (a reading now inside its span),
recomputes only those, and when an issued month's consumption is not what it
was billed as, the customer's bill of this run carries an adjustment, priced
with that month's own rates (:func:`meterd.billing.adjustment`). Consecutive
months share an edge, so a reading that moves one month's end moves the next
month's start by the same Wh: nothing is billed twice and nothing is lost, and
the sum of everything issued for a month is always what the month measures
now, once the next bill has carried the adjustment.

The ledger has values for every meter at every edge of every issued month:
a meter registered after a customer's latest bill (the only way to lack one)
makes that customer's months all be checked again, with the new meter's
contribution as the difference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from meterd import bill_document, periods
from meterd.bill_document import EdgeValue, HistoryMonth, MeterCycle
from meterd.billing import Adjustment, Bill, Rates, adjustment, money, price
from meterd.readings import US_PER_MS
from meterd.registers import Sample, Span, register_at, sensitive_span
from meterd.tariff import Empresa, Tariff

__all__ = [
    "BATCH",
    "HISTORY_MONTHS",
    "BilledMonth",
    "Draft",
    "Edge",
    "Issue",
    "Snapshot",
    "Target",
    "draft",
    "edge_of",
    "finalize",
    "needed_edges",
    "target_of",
]

#: Customers per batch: one read and one write transaction each. Large enough
#: that a query's fixed cost is shared by many customers, small enough that a
#: write holds the store's single writer (and so ingest's flushes) for tens
#: of milliseconds at most.
BATCH: Final = 500
#: Months of consumption history on a bill, besides its own month.
HISTORY_MONTHS: Final = 12

MeterKey = tuple[int, int]  # (meter id, edge in microseconds)


@dataclass(frozen=True, slots=True)
class Edge:
    """A meter's register at an edge (Wh, estimated) and the span of reading times that would change it.

    ``lo``/``hi`` bound the open interval (None: unbounded); ``lo == hi`` is an
    empty span (a reading sits on the edge: nothing can move it).
    """

    wh: int
    estimated: bool
    lo: int | None
    hi: int | None


def edge_of(t: int, before: Sample | None, after: Sample | None) -> Edge:
    """A register meter's edge from the stored readings around ``t`` (DESIGN §5's interpolation)."""
    wh, estimated = register_at(t, before, after)
    spans: list[Span] = sensitive_span(t, before, after)
    lo, hi = spans[0] if spans else (t, t)
    return Edge(wh, estimated, lo, hi)


def counted_edge(wh: int) -> Edge:
    """An interval meter's edge: the energy counted before it. Any reading may change it."""
    return Edge(wh, False, None, None)


@dataclass(frozen=True, slots=True)
class Target:
    """The month a customer is billed for in this run, its edges in ms and in reading time (us)."""

    year: int
    month: int
    inicio_ms: int
    fim_ms: int

    @property
    def referencia(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def edges(self) -> tuple[int, int]:
        return self.inicio_ms * US_PER_MS, self.fim_ms * US_PER_MS


def target_of(now_ms: int, tz: str, periodo: int, cache: dict[str, Target]) -> Target:
    """The month ``periodo`` months before ``now_ms``'s in zone ``tz`` (cached per zone for the run)."""
    found = cache.get(tz)
    if found is None:
        zone = ZoneInfo(tz)
        year, month = periods.months_back(now_ms, zone, periodo)
        found = cache[tz] = Target(year, month, *periods.month_range(year, month, zone))
    return found


@dataclass(frozen=True, slots=True)
class BilledMonth:
    """An issued month of a customer, as billed so far (issued plus its adjustments)."""

    referencia: str
    numero: int
    inicio_us: int
    fim_us: int
    consumo_wh: int
    rates: Rates


@dataclass
class Snapshot:
    """What the store holds about one customer of a batch, read in one transaction.

    ``rows``: ledger values at the target month's edges and at the latest
    bill's end; all of them when the customer is ``dirty`` (a ledger value was
    hit by a late reading, or a meter has none yet). ``months``: every issued
    month, only when dirty. ``history``: the months of the history, as billed
    so far (consumption, days, estimated).
    """

    cid: str
    name: str
    ligacao: str
    tz: str
    created_ms: int
    meters: list[tuple[int, str]] = field(default_factory=list)  # (meter id, mode), retired ones too
    retired: dict[int, int] = field(default_factory=dict)  # meter id -> its final reading's time (us)
    target: Target | None = None
    already: bool = False
    latest: tuple[int, int, int] | None = None  # (numero, total in cents, end edge in us) of the latest bill
    history: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    rows: dict[MeterKey, Edge] = field(default_factory=dict)
    changed: set[MeterKey] = field(default_factory=set)
    months: list[BilledMonth] | None = None

    #: registered after the month, but with readings before its end (history loaded into meterd)
    supplied: bool = False

    @property
    def billable(self) -> bool:
        """Not issued yet, and a customer in the month: registered before it ended, or with readings in it or before.

        A customer registered later is not billed the bare minimum of a month
        nobody supplied them; one whose history was loaded is billed for it.
        """
        if self.target is None or self.already:
            return False
        return self.created_ms < self.target.fim_ms or self.supplied

    def lacking(self) -> bool:
        """A meter without a ledger value at the latest bill's end: registered since, so every month is checked again."""
        if self.latest is None:
            return False
        end = self.latest[2]
        return any((m, end) not in self.rows for m, _ in self.meters)

    def shown(self, meter: int, start_us: int, consumo_wh: int) -> bool:
        """Whether a meter is on the bill of a cycle from ``start_us``: not when it was retired before, with nothing in it."""
        retired = self.retired.get(meter)
        return retired is None or retired >= start_us or consumo_wh != 0


def flagged_months(snap: Snapshot) -> list[BilledMonth]:
    """The issued months whose ledger values were hit or are missing for a meter (dirty customers only)."""
    if snap.months is None:
        return []
    out = []
    for month in snap.months:
        keys = [(m, t) for m, _ in snap.meters for t in (month.inicio_us, month.fim_us)]
        if any(k in snap.changed or k not in snap.rows for k in keys):
            out.append(month)
    return out


def needed_edges(snap: Snapshot) -> list[tuple[int, str, int]]:
    """The (meter, mode, edge) values to read afresh: missing from the ledger, or hit by a late reading."""
    assert snap.target is not None
    wanted: dict[MeterKey, str] = {}
    edges = list(snap.target.edges)
    for month in flagged_months(snap):
        edges += [month.inicio_us, month.fim_us]
    for meter, mode in snap.meters:
        for t in edges:
            key = (meter, t)
            if key not in wanted and (key in snap.changed or key not in snap.rows):
                wanted[key] = mode
    return [(m, mode, t) for (m, t), mode in wanted.items()]


@dataclass(frozen=True)
class Draft:
    """A bill ready to be numbered: everything but its number and payment codes."""

    cid: str
    referencia: str
    previous: int | None  # the customer's latest bill number when read: the write checks it is still so
    bill: Bill
    target: Target
    dias: int
    vencimento: date
    document: tuple[bytes, ...]  # bill_document.issued_template's, split: all but the number and the payment codes
    edges: dict[MeterKey, Edge]  # ledger values to write
    adjusted: list[tuple[str, int]]  # (referencia, consumption now) of the issued months adjusted
    total: Decimal


def draft(snap: Snapshot, fresh: Mapping[MeterKey, Edge], *, tariff: Tariff, empresa: Empresa, now_ms: int) -> Draft:
    """The customer's bill for its target month, with the adjustments of its issued months."""
    target = snap.target
    assert target is not None and snap.billable

    def value(meter: int, t: int) -> Edge:
        found = fresh.get((meter, t))
        return found if found is not None else snap.rows[(meter, t)]

    written: dict[MeterKey, Edge] = {}
    ajustes: list[Adjustment] = []
    adjusted: list[tuple[str, int]] = []
    history = dict(snap.history)
    for month in flagged_months(snap):
        now = 0
        for meter, _ in snap.meters:
            start, end = value(meter, month.inicio_us), value(meter, month.fim_us)
            written[(meter, month.inicio_us)], written[(meter, month.fim_us)] = start, end
            now += end.wh - start.wh
        if now != month.consumo_wh:
            ajustes.append(adjustment(month.rates, month.referencia, month.consumo_wh, now))
            adjusted.append((month.referencia, now))
            if month.referencia in history:
                _, dias, estimado = history[month.referencia]
                history[month.referencia] = (now, dias, estimado)

    start_us, end_us = target.edges
    cycles = []
    for meter, mode in snap.meters:
        a, b = value(meter, start_us), value(meter, end_us)
        written[(meter, start_us)], written[(meter, end_us)] = a, b
        cycles.append(MeterCycle(meter, mode, EdgeValue(a.wh, a.estimated), EdgeValue(b.wh, b.estimated)))
    consumo = sum(c.consumo_wh for c in cycles)
    cycles = [c for c in cycles if snap.shown(c.meter_id, start_us, c.consumo_wh)]
    estimado = any(c.estimado for c in cycles)
    bill = price(Rates.of(tariff, snap.ligacao, target.year, target.month), target.referencia, consumo, estimado)

    zone = ZoneInfo(snap.tz)
    dias = bill_document.cycle_days(target.inicio_ms, target.fim_ms, zone)
    history[target.referencia] = (consumo, dias, estimado)
    emissao = periods.local_date(now_ms, zone)
    vencimento = emissao + timedelta(days=empresa.vencimento_dias)
    credito = None
    if snap.latest is not None and snap.latest[1] < 0:
        credito = (snap.latest[0], Decimal(snap.latest[1]).scaleb(-2))
    document = bill_document.split_template(bill_document.issued_template(
        cid=snap.cid, name=snap.name, tz_name=snap.tz, bill=bill, inicio_ms=target.inicio_ms, fim_ms=target.fim_ms,
        emissao=emissao, vencimento=vencimento, meters=cycles, ajustes=ajustes, credito=credito, empresa=empresa,
        historico=[
            HistoryMonth(ref, *history[ref]) if ref in history else HistoryMonth(ref, None, None, False)
            for ref in history_months(target.year, target.month)
        ],
    ))
    return Draft(
        cid=snap.cid, referencia=target.referencia, previous=None if snap.latest is None else snap.latest[0],
        bill=bill, target=target, dias=dias, vencimento=vencimento, document=document,
        edges=written, adjusted=adjusted, total=bill_document.amount_due(bill, ajustes, credito),
    )


@functools.lru_cache(maxsize=64)
def history_months(year: int, month: int) -> tuple[str, ...]:
    """The references of a bill's history: the 12 months before it, then its own, oldest first."""
    index = year * 12 + month - 1
    return tuple(f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - HISTORY_MONTHS, index + 1))


@dataclass(frozen=True)
class Issue:
    """A numbered bill as the store writes it: the document's bytes and the row's columns."""

    numero: int
    document: bytes
    total_cents: int


def finalize(d: Draft, numero: int, empresa: Empresa) -> Issue:
    """Number the draft: its payment codes (Pix txid and barcode free field carry the number) and its bytes."""
    payment = bill_document.payment_codes(empresa, numero, d.total, d.vencimento)
    return Issue(numero, bill_document.fill_parts(d.document, numero, payment), int(d.total.scaleb(2)))


#: A run's states. One is ``executando`` while a process works on it (its
#: ``updated_ms`` moves with every batch); a run found so and not moving for
#: STALE_MS, or after a restart of the only process, was cut short: it is
#: ``interrompida`` and the next run of the same ``periodo`` resumes it.
RUNNING: Final = "executando"
DONE: Final = "concluida"
INTERRUPTED: Final = "interrompida"
STALE_MS: Final = 60_000


@dataclass(frozen=True)
class Run:
    """A billing run as stored: its month, its clock, its state and its counts."""

    run_id: int
    periodo: int
    referencia: str  # the month in the server's default zone (each customer's is in their own)
    now_ms: int  # the run's "now": months, issue dates and due dates come from it, also when resumed
    state: str
    started_ms: int
    updated_ms: int
    finished_ms: int | None
    customers: int
    processed: int
    issued: int
    already: int
    skipped: int
    adjustments: int
    errors: int
    total_cents: int
    cursor: str
    message: str | None

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        return {
            "execucao": self.run_id,
            "periodo": self.periodo,
            "referencia": self.referencia,
            "estado": self.state,
            "iniciada": periods.iso(self.started_ms, tz),
            "atualizada": periods.iso(self.updated_ms, tz),
            "concluida": None if self.finished_ms is None else periods.iso(self.finished_ms, tz),
            "clientes": self.customers,
            "processados": self.processed,
            "emitidas": self.issued,
            "ja_emitidas": self.already,
            "ignoradas": self.skipped,
            "ajustes": self.adjustments,
            "erros": self.errors,
            "valor_total": money(Decimal(self.total_cents).scaleb(-2)),
            "mensagem": self.message,
        }


@dataclass
class Counts:
    """What one batch did, added to its run's counts in the batch's own transaction."""

    processed: int = 0
    issued: int = 0
    already: int = 0
    skipped: int = 0
    adjustments: int = 0
    errors: int = 0
    total_cents: int = 0
