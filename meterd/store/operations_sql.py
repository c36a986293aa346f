"""Operations on customers and meters (schema migration 7), as a mixin of :class:`SqlStore`.

* **Search.** A name query walks the ``customer_words`` primary key (word,
  the whole name's key, customer id) over one query word's prefix range, the
  *driver*, and checks each other query word with one probe of the
  ``(customer_id, word)`` index; results come in that key's order, so a page
  is the next ``limit`` rows after a position (keyset), never an offset, and
  a customer registered meanwhile is neither repeated nor makes another
  skipped. A customer with two words in the driver's range is listed once,
  under the first. The driver is the query word with the fewest matches
  (counted up to :data:`DRIVER_COUNT_CAP`), chosen on the first page and kept
  in the cursor. A tax-id query is a range of the customers' primary key.
* **Changes** (an update, a retirement, a replacement) are one transaction
  each, with their audit rows: the log holds exactly what was committed.
* **Retiring and replacing meters** change what a flush may store: the
  meter's state is read and locked as a flush does (from the store's memory,
  or ``FOR UPDATE`` on a shared database), and the final or initial reading
  goes through the same :func:`~meterd.store.plan.plan_ingest` as any other.
  Callers run these between flushes (:meth:`meterd.ingest.Ingest.exclusively`),
  so the memory a flush starts from has them.

Portable SQL through ``self.sql``, like :mod:`meterd.store.alarm_sql`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from meterd import names
from meterd.readings import Outcome, Reading
from meterd.store.base import (
    Actor,
    AlreadyReplaced,
    AuditEntry,
    Customer,
    Found,
    Meter,
    MeterRetired,
    NotFound,
    NotRetired,
    ReadingRefused,
    ReadingsAfter,
)
from meterd.store.plan import MeterKey, MeterState, Plan, plan_ingest
from meterd.store.schema import CUSTOMER_COLUMNS, METER_FIELDS

__all__ = ["DRIVER_COUNT_CAP", "OperationsSql", "write_audit"]

#: Matches of a query word counted, at most, to choose the driver of a name search.
DRIVER_COUNT_CAP = 1_000

_AUDIT = "audit_id, customer_id, at_ms, actor, address, action, meter_id, field, old_value, new_value"

#: (action, meter_id, field, old, new): one audit row before it has an id.
AuditRow = tuple[str, "int | None", "str | None", Any, Any]


def _encoded(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _decoded(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def write_audit(txn: Any, sql: Callable[[str], str], actor: Actor, customer_id: str, rows: Sequence[AuditRow]) -> None:
    """Keep ``rows`` in the audit log, in the caller's transaction (writer thread).

    The counter row is locked by the UPDATE until the commit, so ids are
    handed out in commit order whichever process writes.
    """
    txn.execute(sql("UPDATE audit_counter SET next_audit_id = next_audit_id + ? WHERE id = 1"), (len(rows),))
    txn.execute("SELECT next_audit_id FROM audit_counter WHERE id = 1")
    first = int(txn.fetchone()[0]) - len(rows)
    txn.executemany(
        sql(f"INSERT INTO audit ({_AUDIT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        [
            (first + i, customer_id, actor.at_ms, actor.who, actor.address, action, meter_id, field, _encoded(old), _encoded(new))
            for i, (action, meter_id, field, old, new) in enumerate(rows)
        ],
    )


class OperationsSql:
    """Search, changes, retirements, replacements and the audit log, over SqlStore's pools."""

    # provided by SqlStore
    sql: Any
    engine: Any
    memory: Any
    _write: Any
    _read: Any
    _one: Any
    _insert_meter: Any
    _new_meter: Any
    _write_plan: Any
    _write_words: Any
    _neighbours: Any

    # -- customers ---------------------------------------------------------

    def update_customer(self, customer_id: str, changes: dict[str, Any], actor: Actor) -> Deferred[tuple[Customer, list[str]]]:
        """Change a customer's attributes (base.UPDATABLE); the customer after, and the attributes that did change.

        Values equal to the stored ones change nothing and are not logged.
        """

        def write(txn: Any) -> tuple[Customer, list[str]]:
            # locks the row (PostgreSQL) before it is read: two updates never interleave
            txn.execute(self.sql("UPDATE customers SET updated_ms = updated_ms WHERE id = ?"), (customer_id,))
            row = self._one(txn, f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,))
            if row is None:
                raise NotFound(customer_id)
            current = Customer(*row)
            changed = {field: value for field, value in changes.items() if getattr(current, field) != value}
            if not changed:
                return current, []
            updated = dataclasses.replace(current, **changed)
            txn.execute(
                self.sql("UPDATE customers SET name = ?, ligacao = ?, limit_w = ?, limit_wh = ?, tz = ?, updated_ms = ? WHERE id = ?"),
                (updated.name, updated.ligacao, updated.limit_w, updated.limit_wh, updated.tz, actor.at_ms, customer_id),
            )
            if "name" in changed:
                self._write_words(txn, customer_id, updated.name)
            write_audit(
                txn, self.sql, actor, customer_id,
                [("customer_updated", None, field, getattr(current, field), value) for field, value in changed.items()],
            )
            return updated, list(changed)

        return self._write(write)

    def search_customers(
        self, query: names.TaxIdQuery | names.NameQuery, driver: int | None, after: tuple[str, ...] | None, limit: int
    ) -> Deferred[tuple[list[Found], int | None]]:
        """The first ``limit`` customers after ``after`` in the query's order, and the name query's driver word.

        ``driver`` is the index of the query word that drives a name search
        (None on a first page: chosen here); ``after`` a :attr:`Found.position`.
        """

        def search(txn: Any) -> tuple[list[Found], int | None]:
            if isinstance(query, names.TaxIdQuery):
                return self._by_taxid(txn, query.digits, after, limit), None
            chosen = self._driver(txn, query.words) if driver is None else driver
            return self._by_name(txn, query.words, chosen, after, limit), chosen

        return self._read(search)

    def _by_taxid(self, txn: Any, digits: str, after: tuple[str, ...] | None, limit: int) -> list[Found]:
        low, high = names.prefix_range(digits)
        where, args = "id >= ? AND id < ?", [low, high]
        if after is not None:
            where, args = where + " AND id > ?", [*args, after[0]]
        txn.execute(self.sql(f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE {where} ORDER BY id LIMIT ?"), (*args, limit))
        customers = [Customer(*row) for row in txn.fetchall()]
        return self._found(txn, [(c, (c.id,)) for c in customers])

    def _driver(self, txn: Any, query_words: Sequence[str]) -> int:
        """The query word with the fewest matching name words (the first of equals), counted up to the cap."""
        if len(query_words) == 1:
            return 0
        counts = []
        for word in query_words:
            low, high = names.prefix_range(word)
            bound, args = _upper(high)
            row = self._one(
                txn, f"SELECT COUNT(*) FROM (SELECT 1 FROM customer_words WHERE word >= ?{bound} LIMIT ?) AS m",
                (low, *args, DRIVER_COUNT_CAP),
            )
            counts.append(int(row[0]))
        return counts.index(min(counts))

    def _by_name(self, txn: Any, query_words: Sequence[str], driver: int, after: tuple[str, ...] | None, limit: int) -> list[Found]:
        low, high = names.prefix_range(query_words[driver])
        bound, args = _upper(high, "w.word")
        where, params = [f"w.word >= ?{bound}"], [low, *args]
        if after is not None:
            where.append("(w.word, w.search_key, w.customer_id) > (?, ?, ?)")
            params += after
        # listed once, under the first of its words in the driver's range
        where.append("NOT EXISTS (SELECT 1 FROM customer_words e WHERE e.customer_id = w.customer_id AND e.word >= ? AND e.word < w.word)")
        params.append(low)
        for i, word in enumerate(query_words):
            if i != driver:
                other_low, other_high = names.prefix_range(word)
                other_bound, other_args = _upper(other_high, "o.word")
                where.append(
                    f"EXISTS (SELECT 1 FROM customer_words o WHERE o.customer_id = w.customer_id AND o.word >= ?{other_bound})"
                )
                params += [other_low, *other_args]
        txn.execute(
            self.sql(
                "SELECT w.word, w.search_key, w.customer_id FROM customer_words w WHERE " + " AND ".join(where)
                + " ORDER BY w.word, w.search_key, w.customer_id LIMIT ?"
            ),
            (*params, limit),
        )
        hits = txn.fetchall()
        if not hits:
            return []
        ids = [customer_id for _, _, customer_id in hits]
        txn.execute(self.sql(f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id IN ({', '.join('?' * len(ids))})"), ids)
        customers = {row[0]: Customer(*row) for row in txn.fetchall()}
        return self._found(txn, [(customers[cid], (word, key, cid)) for word, key, cid in hits if cid in customers])

    def _found(self, txn: Any, hits: list[tuple[Customer, tuple[str, ...]]]) -> list[Found]:
        if not hits:
            return []
        ids = [c.id for c, _ in hits]
        txn.execute(
            self.sql(f"SELECT customer_id, COUNT(*) FROM meters WHERE customer_id IN ({', '.join('?' * len(ids))}) GROUP BY customer_id"),
            ids,
        )
        counts = {cid: int(n) for cid, n in txn.fetchall()}
        return [Found(c, counts.get(c.id, 0), position) for c, position in hits]

    # -- meters ------------------------------------------------------------

    def retire_meter(self, customer_id: str, meter_id: int, ts: int, wh: int, actor: Actor) -> Deferred[tuple[Meter, bool]]:
        """Retire a meter at its final reading (``ts`` us, ``wh``); the meter, and whether that reading was stored now.

        The final reading is the meter's newest: one already stored (the same
        value, else :class:`ReadingRefused` CONFLICT) or a new one after all
        of them (refused as a live reading would be: ``register_backwards``).
        Readings after it would contradict it: :class:`ReadingsAfter`.
        """
        key = (customer_id, meter_id)
        known = None if self.memory is None else self.memory.states_of({key})

        def write(txn: Any) -> tuple[Meter, Plan | None]:
            states = self._locked(txn, key, known)
            state = states[key]
            if state.retired_ts is not None:
                raise MeterRetired(state.retired_ts)
            plan = None
            if state.last_ts is not None and ts < state.last_ts:
                raise ReadingsAfter(state.last_ts)
            if state.last_ts is not None and ts == state.last_ts:
                if wh != state.last_wh:
                    raise ReadingRefused(Outcome.CONFLICT)
            else:
                plan = self._store_one(txn, Reading(customer_id, meter_id, ts, wh, None), states, actor.at_ms)
            txn.execute(
                self.sql("UPDATE meters SET retired_ts = ?, last_ts = ?, last_wh = ?, updated_ms = ? WHERE customer_id = ? AND meter_id = ?"),
                (ts, ts, wh, actor.at_ms, customer_id, meter_id),
            )
            write_audit(txn, self.sql, actor, customer_id, [("meter_retired", meter_id, None, None, {"ts": ts, "wh": wh})])
            return self._meter(txn, key), plan

        def committed(result: tuple[Meter, Plan | None]) -> tuple[Meter, bool]:
            meter, plan = result
            if self.memory is not None:
                if plan is not None:
                    self.memory.committed(plan)
                self.memory.retired(key, ts)
            return meter, plan is not None

        return self._write(write).addCallback(committed)

    def replace_meter(
        self, customer_id: str, retired_id: int, mode: str, key_hex: str, ts: int, wh: int, actor: Actor
    ) -> Deferred[Meter]:
        """A new meter of the customer in place of a retired one, its first reading (``ts``, ``wh``) stored with it.

        Its register starts where it starts (zero, usually): the customer's
        consumption is each meter's own register difference, so the new
        meter's first value is no consumption. ``ts`` must not be before the
        retired meter's final reading (:class:`ReadingsAfter` otherwise).
        """
        old = (customer_id, retired_id)
        known = None if self.memory is None else self.memory.states_of({old})

        def write(txn: Any) -> tuple[Meter, Plan]:
            state = self._locked(txn, old, known)[old]
            if state.retired_ts is None:
                raise NotRetired(old)
            successor = self._one(txn, "SELECT meter_id FROM meters WHERE customer_id = ? AND replaces = ?", old)
            if successor is not None:
                raise AlreadyReplaced(int(successor[0]))
            if ts < state.retired_ts:
                raise ReadingsAfter(state.retired_ts)
            meter = self._insert_meter(txn, customer_id, mode, key_hex, actor.at_ms, replaces=retired_id)
            new = (customer_id, meter.meter_id)
            plan = self._store_one(txn, Reading(customer_id, meter.meter_id, ts, wh, None), {new: MeterState(mode)}, actor.at_ms)
            txn.execute(
                self.sql("UPDATE meters SET last_ts = ?, last_wh = ? WHERE customer_id = ? AND meter_id = ?"), (ts, wh, *new)
            )
            record = {"replaces": retired_id, "mode": mode, "ts": ts, "wh": wh}
            write_audit(txn, self.sql, actor, customer_id, [("meter_replaced", meter.meter_id, None, None, record)])
            return meter, plan

        def committed(result: tuple[Meter, Plan]) -> Meter:
            meter, plan = result
            if self.memory is not None:
                self.memory.meter_added((customer_id, meter.meter_id), mode)
                self.memory.committed(plan)
            return meter

        return self._new_meter(customer_id, write).addCallback(committed)

    def _locked(self, txn: Any, key: MeterKey, known: dict[MeterKey, MeterState] | None) -> dict[MeterKey, MeterState]:
        """The meter's state as a flush would take it (memory, or its row locked); NotFound if there is no such meter."""
        states = known if known is not None else self.engine.locked_states(txn, {key})
        if key not in states:
            raise NotFound(key)
        return dict(states)

    def _store_one(self, txn: Any, reading: Reading, states: dict[MeterKey, MeterState], received_ms: int) -> Plan:
        """Store one reading the operator gave, judged as a live one; ReadingRefused if it is not stored."""
        plan = plan_ingest([reading], states, lambda key, t: self._neighbours(txn, key, t), received_ms)
        if plan.outcomes[0] is not Outcome.STORED:
            raise ReadingRefused(plan.outcomes[0])
        self._write_plan(txn, plan)
        return plan

    def _meter(self, txn: Any, key: MeterKey) -> Meter:
        return Meter(*self._one(txn, f"SELECT {METER_FIELDS} FROM meters WHERE customer_id = ? AND meter_id = ?", key))

    # -- the audit log -----------------------------------------------------

    def audit_log(self, customer_id: str | None, before: int | None, limit: int) -> Deferred[list[AuditEntry]]:
        """The newest ``limit`` entries (of one customer, or all) with ids below ``before``, newest first."""

        def read(txn: Any) -> list[AuditEntry]:
            where: list[str] = []
            args: list[Any] = []
            if customer_id is not None:
                where.append("customer_id = ?")
                args.append(customer_id)
            if before is not None:
                where.append("audit_id < ?")
                args.append(before)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            txn.execute(self.sql(f"SELECT {_AUDIT} FROM audit{clause} ORDER BY audit_id DESC LIMIT ?"), (*args, limit))
            return [
                AuditEntry(int(i), c, int(at), who, address, action, None if m is None else int(m), field, _decoded(old), _decoded(new))
                for i, c, at, who, address, action, m, field, old, new in txn.fetchall()
            ]

        return self._read(read)


def _upper(high: str | None, column: str = "word") -> tuple[str, list[str]]:
    """The SQL of a prefix range's upper bound, if it has one, and its argument."""
    return ("", []) if high is None else (f" AND {column} < ?", [high])
