"""Issued bills, their ledger and the billing runs (schema: the issued-bills migration), as a mixin of :class:`SqlStore`.

A billing run reads a batch of customers in one query transaction
(:meth:`BillSql.bill_batch`: everything about them that decides their bills,
a few statements per batch, each over the batch's whole range of customer
ids) and writes the batch's bills in one write transaction
(:meth:`BillSql.issue_bills`). The write locks the bill counter row first, so
bills from every process are numbered without gaps in commit order, and
issues a customer's bill only if the customer's latest bill is still the one
the read saw: two runs (two processes on one PostgreSQL database) can never
issue a bill twice, nor adjust a month twice. Portable SQL only, as in
:mod:`meterd.store.alarm_sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from twisted.internet.defer import Deferred

from meterd.billing import Rates
from meterd.billing_run import (
    DONE,
    HISTORY_MONTHS,
    INTERRUPTED,
    RUNNING,
    BilledMonth,
    Counts,
    Draft,
    Edge,
    Issue,
    Run,
    Snapshot,
    Target,
    counted_edge,
    edge_of,
    history_months,
    needed_edges,
)
from meterd.paycodes import PaymentCodeError
from meterd.readings import HOUR_US, US_PER_MS
from meterd.registers import Sample

__all__ = ["BillSql", "Batch"]

T = TypeVar("T")

_RUN_COLUMNS = (
    "run_id, periodo, referencia, now_ms, state, started_ms, updated_ms, finished_ms, customers, processed,"
    " issued, already, skipped, adjustments, errors, total_cents, cursor, message"
)
_BILL_COLUMNS = (
    "customer_id, referencia, numero, run_id, issued_ms, inicio_us, fim_us, dias, consumo_wh, consumo_atual_wh,"
    " estimado, total_cents, rates, document"
)
_EDGE_COLUMNS = "customer_id, meter_id, edge, wh, estimated, span_lo, span_hi"
_EDGE_UPSERT = (
    "ON CONFLICT (customer_id, meter_id, edge) DO UPDATE SET wh = excluded.wh, estimated = excluded.estimated,"
    " span_lo = excluded.span_lo, span_hi = excluded.span_hi"
)
_MONTH_COLUMNS = "referencia, numero, inicio_us, fim_us, consumo_atual_wh, rates"
#: Above this many values to read at one edge, one statement reads every register meter of the batch there.
_BULK_EDGES = 16
# The register around edge ?: the first rollup at or after its hour, the last one before it.
_AROUND = """
SELECT m.customer_id, m.meter_id,
  (SELECT r.first_ts FROM rollups r WHERE r.customer_id = m.customer_id AND r.meter_id = m.meter_id AND r.hour >= ? ORDER BY r.hour LIMIT 1),
  (SELECT r.first_wh FROM rollups r WHERE r.customer_id = m.customer_id AND r.meter_id = m.meter_id AND r.hour >= ? ORDER BY r.hour LIMIT 1),
  (SELECT r.last_ts FROM rollups r WHERE r.customer_id = m.customer_id AND r.meter_id = m.meter_id AND r.hour < ? ORDER BY r.hour DESC LIMIT 1),
  (SELECT r.last_wh FROM rollups r WHERE r.customer_id = m.customer_id AND r.meter_id = m.meter_id AND r.hour < ? ORDER BY r.hour DESC LIMIT 1)
FROM meters m WHERE m.customer_id >= ? AND m.customer_id <= ? AND m.mode = 'register'
"""

Batch = tuple[str | None, list[tuple[Snapshot, Any]]]  # (the batch's last customer id, or None at the end; each customer and what was made of it)


class BillSql:
    """Bill persistence over the pools and statement translation of SqlStore."""

    # provided by SqlStore
    sql: Any
    engine: Any
    _write: Any
    _read: Any
    _one: Any
    _neighbours: Any

    # -- issued bills ------------------------------------------------------

    def issued_bill(self, customer_id: str, referencia: str) -> Deferred[bytes | None]:
        """The issued bill's document, as its bytes were written; None if the month is not issued."""

        def get(txn: Any) -> bytes | None:
            row = self._one(txn, "SELECT document FROM bills WHERE customer_id = ? AND referencia = ?", (customer_id, referencia))
            return None if row is None else row[0].encode()

        return self._read(get)

    def run_bills(self, run_id: int, after: int, limit: int) -> Deferred[list[tuple[int, bytes]]]:
        """The (number, document) of the bills a run issued, by number, after bill number ``after``."""

        def get(txn: Any) -> list[tuple[int, bytes]]:
            txn.execute(
                self.sql("SELECT numero, document FROM bills WHERE run_id = ? AND numero > ? ORDER BY numero LIMIT ?"), (run_id, after, limit)
            )
            return [(int(numero), document.encode()) for numero, document in txn.fetchall()]

        return self._read(get)

    # -- a batch: read -------------------------------------------------------

    def bill_batch(
        self, after: str, limit: int, target: Callable[[str], Target], make: Callable[[Snapshot, dict[tuple[int, int], Edge]], T]
    ) -> Deferred[Batch]:
        """The next ``limit`` customers after id ``after``, what decides their bills, and ``make`` of each one billable.

        ``target`` gives a zone's month; ``make`` (pure: the billing run's
        draft) runs here, on the reader thread, with the register values it
        needs read afresh.
        """

        def read(txn: Any) -> Batch:
            txn.execute(self.sql("SELECT id, name, ligacao, tz, created_ms FROM customers WHERE id > ? ORDER BY id LIMIT ?"), (after, limit))
            rows = txn.fetchall()
            if not rows:
                return None, []
            snaps = {r[0]: Snapshot(r[0], r[1], r[2], r[3], int(r[4]), target=target(r[3])) for r in rows}
            lo, hi = rows[0][0], rows[-1][0]
            self._mark_issued(txn, snaps, lo, hi)
            self._mark_supplied(txn, snaps, lo, hi)
            billable = {cid: s for cid, s in snaps.items() if s.billable}
            if billable:
                self._load(txn, billable, lo, hi)
            needs = {cid: needed_edges(snap) for cid, snap in billable.items()}
            bulk = self._bulk(txn, needs, lo, hi)
            out: list[tuple[Snapshot, Any]] = []
            for snap in snaps.values():
                if snap.billable:
                    out.append((snap, make(snap, self._fresh(txn, snap, needs[snap.cid], bulk))))
                else:
                    out.append((snap, None))
            return hi, out

        return self._read(read)

    def _mark_issued(self, txn: Any, snaps: dict[str, Snapshot], lo: str, hi: str) -> None:
        refs = sorted({s.target.referencia for s in snaps.values() if s.target is not None})
        txn.execute(
            self.sql(
                "SELECT customer_id, referencia FROM bills WHERE customer_id >= ? AND customer_id <= ?"
                f" AND referencia IN ({', '.join('?' * len(refs))})"
            ),
            (lo, hi, *refs),
        )
        for cid, ref in txn.fetchall():
            snap = snaps[cid]
            if snap.target is not None and snap.target.referencia == ref:
                snap.already = True

    def _mark_supplied(self, txn: Any, snaps: dict[str, Snapshot], lo: str, hi: str) -> None:
        """Customers registered after their month: whether any reading of theirs is from before its end."""
        late = {s.target.fim_ms * US_PER_MS for s in snaps.values() if s.target is not None and s.created_ms >= s.target.fim_ms}
        for t in late:
            txn.execute(
                self.sql(
                    "SELECT c.id FROM customers c WHERE c.id >= ? AND c.id <= ? AND c.created_ms >= ?"
                    " AND EXISTS (SELECT 1 FROM rollups r WHERE r.customer_id = c.id AND r.hour < ?)"
                ),
                (lo, hi, t // US_PER_MS, t),
            )
            for (cid,) in txn.fetchall():
                snap = snaps[cid]
                if snap.target is not None and snap.target.fim_ms * US_PER_MS == t:
                    snap.supplied = True

    def _load(self, txn: Any, snaps: dict[str, Snapshot], lo: str, hi: str) -> None:
        """Meters, latest bill, history and ledger values of the batch's billable customers."""
        rng = (lo, hi)
        txn.execute(
            self.sql(
                "SELECT customer_id, meter_id, mode, retired_ts FROM meters WHERE customer_id >= ? AND customer_id <= ?"
                " ORDER BY customer_id, meter_id"
            ),
            rng,
        )
        for cid, meter_id, mode, retired_ts in txn.fetchall():
            if cid in snaps:
                snaps[cid].meters.append((int(meter_id), mode))
                if retired_ts is not None:
                    snaps[cid].retired[int(meter_id)] = int(retired_ts)
        txn.execute(
            self.sql(
                "SELECT b.customer_id, b.numero, b.total_cents, b.fim_us FROM bills b WHERE b.customer_id >= ? AND b.customer_id <= ?"
                " AND b.numero = (SELECT MAX(x.numero) FROM bills x WHERE x.customer_id = b.customer_id)"
            ),
            rng,
        )
        for cid, numero, total, fim in txn.fetchall():
            if cid in snaps:
                snaps[cid].latest = (int(numero), int(total), int(fim))
        windows = {s.cid: history_months(s.target.year, s.target.month)[:HISTORY_MONTHS] for s in snaps.values() if s.target is not None}
        first, last = min(w[0] for w in windows.values()), max(w[-1] for w in windows.values())
        txn.execute(
            self.sql(
                "SELECT customer_id, referencia, consumo_atual_wh, dias, estimado FROM bills"
                " WHERE customer_id >= ? AND customer_id <= ? AND referencia >= ? AND referencia <= ?"
            ),
            (lo, hi, first, last),
        )
        for cid, ref, wh, dias, estimado in txn.fetchall():
            if cid in snaps and ref in windows[cid]:
                snaps[cid].history[ref] = (int(wh), int(dias), bool(estimado))
        edges = {t for s in snaps.values() if s.target is not None for t in s.target.edges}
        edges |= {s.latest[2] for s in snaps.values() if s.latest is not None}
        ordered = sorted(edges)
        txn.execute(
            self.sql(
                f"SELECT {_EDGE_COLUMNS} FROM bill_edges WHERE customer_id >= ? AND customer_id <= ?"
                f" AND edge IN ({', '.join('?' * len(ordered))})"
            ),
            (lo, hi, *ordered),
        )
        for cid, meter_id, edge, wh, estimated, span_lo, span_hi in txn.fetchall():
            if cid in snaps:
                snaps[cid].rows[(int(meter_id), int(edge))] = _edge(wh, estimated, span_lo, span_hi)
        for cid, meter_id, edge in self._hit(txn, lo, hi):
            if cid in snaps:
                snaps[cid].changed.add((int(meter_id), int(edge)))
        for snap in snaps.values():
            if snap.changed or snap.lacking():
                self._load_all(txn, snap)

    def _hit(self, txn: Any, lo: str, hi: str) -> list[tuple[Any, ...]]:
        """Ledger values a reading stored since has fallen into the span of (all of an interval meter's)."""
        inside = " OR ".join(
            f"EXISTS (SELECT 1 FROM {table} r WHERE r.customer_id = e.customer_id AND r.meter_id = e.meter_id"
            " AND r.ts > COALESCE(e.span_lo, -1) AND r.ts < COALESCE(e.span_hi, 9223372036854775807))"
            for table in self.engine.reading_tables
        )
        txn.execute(
            self.sql(
                "SELECT e.customer_id, e.meter_id, e.edge FROM bill_edges e WHERE e.customer_id >= ? AND e.customer_id <= ?"
                f" AND (e.span_lo IS NULL OR e.span_hi IS NULL OR e.span_lo < e.span_hi) AND ({inside})"
            ),
            (lo, hi),
        )
        return list(txn.fetchall())

    def _load_all(self, txn: Any, snap: Snapshot) -> None:
        """Every issued month and every ledger value of a customer whose months are checked again."""
        txn.execute(self.sql(f"SELECT {_MONTH_COLUMNS} FROM bills WHERE customer_id = ? ORDER BY numero"), (snap.cid,))
        snap.months = [
            BilledMonth(ref, int(numero), int(inicio), int(fim), int(wh), Rates.from_json(orjson.loads(rates)))
            for ref, numero, inicio, fim, wh, rates in txn.fetchall()
        ]
        txn.execute(self.sql(f"SELECT {_EDGE_COLUMNS} FROM bill_edges WHERE customer_id = ?"), (snap.cid,))
        for _, meter_id, edge, wh, estimated, span_lo, span_hi in txn.fetchall():
            snap.rows[(int(meter_id), int(edge))] = _edge(wh, estimated, span_lo, span_hi)

    def _bulk(self, txn: Any, needs: dict[str, list[tuple[int, str, int]]], lo: str, hi: str) -> dict[tuple[str, int, int], Edge]:
        """The register values many customers of the batch need at the same edge on the hour, one statement per edge."""
        wanted: dict[int, int] = {}
        for needed in needs.values():
            for _, mode, t in needed:
                if mode == "register" and t % HOUR_US == 0:
                    wanted[t] = wanted.get(t, 0) + 1
        found: dict[tuple[str, int, int], Edge] = {}
        for t, n in wanted.items():
            if n > _BULK_EDGES:
                found.update(self._around(txn, t, lo, hi))
        return found

    def _fresh(
        self, txn: Any, snap: Snapshot, needed: list[tuple[int, str, int]], bulk: dict[tuple[str, int, int], Edge]
    ) -> dict[tuple[int, int], Edge]:
        """The values ``snap`` needs read afresh: from the batch's bulk reads, else one meter at a time."""
        fresh: dict[tuple[int, int], Edge] = {}
        for meter_id, mode, t in needed:
            key = (snap.cid, meter_id)
            if mode != "register":
                fresh[(meter_id, t)] = counted_edge(self._counted(txn, key, t))
                continue
            found = bulk.get((snap.cid, meter_id, t))
            fresh[(meter_id, t)] = found if found is not None else edge_of(t, *self._neighbours(txn, key, t))
        return fresh

    def _around(self, txn: Any, t: int, lo: str, hi: str) -> dict[tuple[str, int, int], Edge]:
        """Every register meter of the range at edge ``t`` (on the hour), from the rollups: four index seeks each."""
        txn.execute(self.sql(_AROUND), (t, t, t, t, lo, hi))
        out = {}
        for cid, meter_id, a_ts, a_wh, b_ts, b_wh in txn.fetchall():
            after = None if a_ts is None else Sample(int(a_ts), int(a_wh))
            if after is not None and after.ts == t:
                out[(cid, int(meter_id), t)] = edge_of(t, after, None)
            else:
                out[(cid, int(meter_id), t)] = edge_of(t, None if b_ts is None else Sample(int(b_ts), int(b_wh)), after)
        return out

    def _counted(self, txn: Any, key: tuple[str, int], t: int) -> int:
        """An interval meter's Wh counted before ``t``: whole hours from the rollups, the rest from the readings."""
        c, m = key
        hour = t - t % HOUR_US
        (wh,) = self._one(txn, "SELECT COALESCE(SUM(sum_wh), 0) FROM rollups WHERE customer_id = ? AND meter_id = ? AND hour < ?", (c, m, hour))
        if t > hour:
            tables = self.engine.reading_tables
            union = " UNION ".join(f"SELECT ts, wh FROM {table} WHERE customer_id = ? AND meter_id = ? AND ts >= ? AND ts < ?" for table in tables)
            (part,) = self._one(txn, f"SELECT COALESCE(SUM(u.wh), 0) FROM ({union}) AS u", (c, m, hour, t) * len(tables))
            wh += part
        return int(wh)

    # -- a batch: write ------------------------------------------------------

    def issue_bills(
        self, run_id: int, drafts: Sequence[Draft], finalize: Callable[[Draft, int], Issue], counts: Counts, cursor: str, now_ms: int
    ) -> Deferred[tuple[list[tuple[str, str]], Counts]]:
        """Number and store ``drafts``, and add the batch to its run, in one transaction.

        A draft whose customer's latest bill is no longer the one its read saw
        (another run issued meanwhile) is left out and counted as already
        issued. Returns the (customer, month) issued and the batch's counts.
        """

        def write(txn: Any) -> tuple[list[tuple[str, str]], Counts]:
            txn.execute("UPDATE bill_counters SET next_number = next_number WHERE id = 1")
            (number,) = self._one(txn, "SELECT next_number FROM bill_counters WHERE id = 1", ())
            number = int(number)
            done = replace(counts)
            latest: dict[str, int] = {}
            if drafts:
                txn.execute(
                    self.sql("SELECT customer_id, MAX(numero) FROM bills WHERE customer_id >= ? AND customer_id <= ? GROUP BY customer_id"),
                    (min(d.cid for d in drafts), max(d.cid for d in drafts)),
                )
                latest = {cid: int(n) for cid, n in txn.fetchall()}
            bills: list[tuple[Any, ...]] = []
            edges: list[tuple[Any, ...]] = []
            adjusted: list[tuple[int, str, str]] = []
            issued = []
            for d in drafts:
                if latest.get(d.cid) != d.previous:
                    done.already += 1
                    continue
                try:
                    issue = finalize(d, number)
                except PaymentCodeError:
                    done.errors += 1
                    continue
                number += 1
                b, start, end = d.bill, *d.target.edges
                consumo = int(b.consumo_kwh.scaleb(3))
                bills.append((
                    d.cid, d.referencia, issue.numero, run_id, now_ms, start, end, d.dias, consumo, consumo,
                    int(b.estimado), issue.total_cents, orjson.dumps(b.rates.to_json()).decode(), issue.document.decode(),
                ))
                edges += [(d.cid, m, t, e.wh, int(e.estimated), e.lo, e.hi) for (m, t), e in d.edges.items()]
                adjusted += [(wh, d.cid, ref) for ref, wh in d.adjusted]
                issued.append((d.cid, d.referencia))
                done.issued += 1
                done.adjustments += len(d.adjusted)
                done.total_cents += issue.total_cents
            self.engine.rows(txn, f"INSERT INTO bills ({_BILL_COLUMNS}) VALUES", bills)
            self.engine.rows(txn, f"INSERT INTO bill_edges ({_EDGE_COLUMNS}) VALUES", edges, _EDGE_UPSERT)
            if adjusted:
                txn.executemany(self.sql("UPDATE bills SET consumo_atual_wh = ? WHERE customer_id = ? AND referencia = ?"), adjusted)
            txn.execute(self.sql("UPDATE bill_counters SET next_number = ? WHERE id = 1"), (number,))
            txn.execute(
                self.sql(
                    "UPDATE billing_runs SET processed = processed + ?, issued = issued + ?, already = already + ?, skipped = skipped + ?,"
                    " adjustments = adjustments + ?, errors = errors + ?, total_cents = total_cents + ?, cursor = ?, updated_ms = ?"
                    " WHERE run_id = ?"
                ),
                (done.processed, done.issued, done.already, done.skipped, done.adjustments, done.errors, done.total_cents, cursor, now_ms, run_id),
            )
            return issued, done

        return self._write(write)

    # -- runs -----------------------------------------------------------------

    def start_run(self, periodo: int, referencia: str, now_ms: int, stale_before_ms: int) -> Deferred[tuple[str, Run]]:
        """Start a run, or resume the latest one of the same ``periodo`` that was cut short.

        Returns ``("ativa", run)`` (and changes nothing) when the latest run is
        being run (its ``updated_ms`` after ``stale_before_ms``), else
        ``("retomada", run)`` or ``("nova", run)``. Runs start one at a time in
        every process: the counter row is locked first.
        """

        def write(txn: Any) -> tuple[str, Run]:
            txn.execute("UPDATE bill_counters SET next_run = next_run WHERE id = 1")
            row = self._one(txn, f"SELECT {_RUN_COLUMNS} FROM billing_runs ORDER BY run_id DESC LIMIT 1", ())
            if row is not None:
                last = _run(row)
                if last.state == RUNNING and last.updated_ms > stale_before_ms:
                    return "ativa", last
                if last.state != DONE and last.periodo == periodo:
                    txn.execute(
                        self.sql("UPDATE billing_runs SET state = ?, updated_ms = ?, message = NULL WHERE run_id = ?"), (RUNNING, now_ms, last.run_id)
                    )
                    return "retomada", replace(last, state=RUNNING, updated_ms=now_ms, message=None)
                if last.state == RUNNING:
                    txn.execute(self.sql("UPDATE billing_runs SET state = ? WHERE run_id = ?"), (INTERRUPTED, last.run_id))
            (run_id,) = self._one(txn, "SELECT next_run FROM bill_counters WHERE id = 1", ())
            (customers,) = self._one(txn, "SELECT COUNT(*) FROM customers", ())
            run = Run(int(run_id), periodo, referencia, now_ms, RUNNING, now_ms, now_ms, None, int(customers), 0, 0, 0, 0, 0, 0, 0, "", None)
            txn.execute(self.sql(f"INSERT INTO billing_runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 18)})"), _run_row(run))
            txn.execute(self.sql("UPDATE bill_counters SET next_run = ? WHERE id = 1"), (run.run_id + 1,))
            return "nova", run

        return self._write(write)

    def finish_run(self, run_id: int, state: str, now_ms: int, message: str | None) -> Deferred[None]:
        def write(txn: Any) -> None:
            finished = now_ms if state == DONE else None
            txn.execute(
                self.sql("UPDATE billing_runs SET state = ?, updated_ms = ?, finished_ms = ?, message = ? WHERE run_id = ?"),
                (state, now_ms, finished, message, run_id),
            )

        return self._write(write)

    def interrupt_runs(self, message: str) -> Deferred[None]:
        """Mark every run still ``executando`` as cut short (at the start of a store's only process)."""

        def write(txn: Any) -> None:
            txn.execute(self.sql("UPDATE billing_runs SET state = ?, message = ? WHERE state = ?"), (INTERRUPTED, message, RUNNING))

        return self._write(write)

    def get_run(self, run_id: int | None) -> Deferred[Run | None]:
        """A run by id, or the latest one (None: no such run)."""

        def get(txn: Any) -> Run | None:
            if run_id is None:
                row = self._one(txn, f"SELECT {_RUN_COLUMNS} FROM billing_runs ORDER BY run_id DESC LIMIT 1", ())
            else:
                row = self._one(txn, f"SELECT {_RUN_COLUMNS} FROM billing_runs WHERE run_id = ?", (run_id,))
            return None if row is None else _run(row)

        return self._read(get)


def _edge(wh: Any, estimated: Any, span_lo: Any, span_hi: Any) -> Edge:
    return Edge(int(wh), bool(estimated), None if span_lo is None else int(span_lo), None if span_hi is None else int(span_hi))


def _run(row: Sequence[Any]) -> Run:
    values = list(row)
    for i in (0, 1, 3, 5, 6, *range(8, 16)):
        values[i] = int(values[i])
    values[7] = None if values[7] is None else int(values[7])
    return Run(*values)


def _run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.run_id, run.periodo, run.referencia, run.now_ms, run.state, run.started_ms, run.updated_ms, run.finished_ms,
        run.customers, run.processed, run.issued, run.already, run.skipped, run.adjustments, run.errors, run.total_cents,
        run.cursor, run.message,
    )
