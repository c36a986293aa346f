"""The alarm tables (schema migrations 2 and 3), as a mixin of :class:`SqlStore`.

The database is where alarm changes are decided for good: every change a
process makes (a rule's raise or clear, an acknowledgement) is settled in one
transaction that locks the counter row, reads the alarms it concerns, applies
the pure :func:`~meterd.alarm_book.settle` and writes the result. Several
processes on one database therefore store one alarm per (customer, meter,
rule) and hand out ids in commit order. An in-memory alarm book is a cache of
what was settled. Portable SQL only (the PostgreSQL backend inherits it):
``?`` placeholders through ``self.sql``, upserts with ``ON CONFLICT``, window
functions that SQLite 3.25+ and PostgreSQL both have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from meterd.alarm_book import Acknowledgement, Alarm, Change, Event, Settled, settle

__all__ = ["AlarmSql", "AlarmState", "AlarmView"]

_ALARM_COLUMNS = "customer_id, alarm_id, meter_id, rule, raised_at, cleared_at, acked_at, value, threshold, message"
_EVENT_COLUMNS = "event_id, alarm_id, customer_id, event_type, at_ms"
_COUNTERS = "SELECT next_alarm_id, next_event_id FROM alarm_counters WHERE id = 1"
_ALL_ACTIVE = f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE cleared_at IS NULL"

# (active alarms and those the recent events refer to, recent events, next alarm id, next event id)
AlarmState = tuple[list[Alarm], list[Event], int, int]
# (the customer's active alarms, events after a cursor, the last event id handed out)
AlarmView = tuple[list[Alarm], list[Event], int]

_CUSTOMERS_PER_QUERY = 500

_UPSERT_ALARM = f"""
INSERT INTO alarms ({_ALARM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, alarm_id) DO UPDATE SET
    cleared_at = COALESCE(alarms.cleared_at, excluded.cleared_at),
    acked_at = COALESCE(alarms.acked_at, excluded.acked_at)
"""

_INSERT_EVENT = f"""
INSERT INTO alarm_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""


def _alarm(row: Sequence[Any]) -> Alarm:
    customer_id, alarm_id, meter_id, rule, raised_at, cleared_at, acked_at, value, threshold, message = row
    return Alarm(
        alarm_id=int(alarm_id),
        customer_id=customer_id,
        rule=rule,
        meter_id=None if meter_id is None else int(meter_id),
        raised_at=int(raised_at),
        cleared_at=None if cleared_at is None else int(cleared_at),
        acked_at=None if acked_at is None else int(acked_at),
        value=float(value),
        threshold=float(threshold),
        message=message,
    )


def _event(row: Sequence[Any]) -> Event:
    event_id, alarm_id, customer_id, event_type, at_ms = row
    return Event(int(event_id), int(alarm_id), customer_id, event_type, int(at_ms))


class AlarmSql:
    """Alarm persistence over the pools and statement translation of SqlStore."""

    # provided by SqlStore
    sql: Any
    _write: Any
    _read: Any
    _one: Any

    def settle_alarms(self, changes: Sequence[Change]) -> Deferred[Settled]:
        """Settle changes decided in memory against the stored alarms, in one transaction.

        The counter row is locked first (an UPDATE that changes nothing), so
        settlements from every process run one at a time and see each
        other's results: a raise decided twice stores one alarm, ids are
        unique and increase in commit order.
        """

        def write(txn: Any) -> Settled:
            txn.execute("UPDATE alarm_counters SET next_alarm_id = next_alarm_id WHERE id = 1")
            next_alarm, next_event = self._one(txn, _COUNTERS, ())
            stored = self._active_of(txn, sorted({c.customer_id for c in changes}))
            held = {a.alarm_id for a in stored}
            for change in changes:
                if isinstance(change, Acknowledgement) and change.alarm_id not in held:
                    alarm = self._alarm_by_id(txn, change.customer_id, change.alarm_id)
                    if alarm is not None:
                        stored.append(alarm)
                        held.add(change.alarm_id)
            settled = settle(stored, changes, int(next_alarm), int(next_event))
            if settled.alarms:
                txn.executemany(
                    self.sql(_UPSERT_ALARM),
                    [
                        (a.customer_id, a.alarm_id, a.meter_id, a.rule, a.raised_at, a.cleared_at, a.acked_at,
                         a.value, a.threshold, a.message)
                        for a in settled.alarms
                    ],
                )
            if settled.events:
                txn.executemany(
                    self.sql(_INSERT_EVENT),
                    [(e.event_id, e.alarm_id, e.customer_id, e.type, e.at) for e in settled.events],
                )
            txn.execute(
                self.sql("UPDATE alarm_counters SET next_alarm_id = ?, next_event_id = ? WHERE id = 1"),
                (settled.next_alarm_id, settled.next_event_id),
            )
            return settled

        return self._write(write)

    def _alarm_by_id(self, txn: Any, customer_id: str, alarm_id: int) -> Alarm | None:
        row = self._one(txn, f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE customer_id = ? AND alarm_id = ?", (customer_id, alarm_id))
        return None if row is None else _alarm(row)

    def _active_of(self, txn: Any, customers: Sequence[str]) -> list[Alarm]:
        alarms: list[Alarm] = []
        for start in range(0, len(customers), _CUSTOMERS_PER_QUERY):
            chunk = customers[start : start + _CUSTOMERS_PER_QUERY]
            txn.execute(
                self.sql(
                    f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE cleared_at IS NULL "
                    f"AND customer_id IN ({', '.join('?' * len(chunk))})"
                ),
                chunk,
            )
            alarms += map(_alarm, txn.fetchall())
        return alarms

    def active_alarms(self) -> Deferred[list[Alarm]]:
        """Every active alarm: what a process sharing the database refreshes its view from."""

        def query(txn: Any) -> list[Alarm]:
            txn.execute(_ALL_ACTIVE)
            return list(map(_alarm, txn.fetchall()))

        return self._read(query)

    def load_alarm_state(self, recent_per_customer: int) -> Deferred[AlarmState]:
        """What a restarted alarm book needs: every active alarm, each customer's
        newest events and the alarms they refer to, and the id counters."""

        def load(txn: Any) -> AlarmState:
            txn.execute(_ALL_ACTIVE)
            alarms = {a.alarm_id: a for a in map(_alarm, txn.fetchall())}
            txn.execute(
                self.sql(
                    f"""SELECT {_EVENT_COLUMNS} FROM (
                        SELECT {_EVENT_COLUMNS},
                               ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY event_id DESC) AS rn
                        FROM alarm_events) recent
                    WHERE rn <= ? ORDER BY event_id"""
                ),
                (recent_per_customer,),
            )
            events = [_event(row) for row in txn.fetchall()]
            wanted = sorted({(e.customer_id, e.alarm_id) for e in events if e.alarm_id not in alarms})
            for customer_id, alarm_id in wanted:
                alarm = self._alarm_by_id(txn, customer_id, alarm_id)
                if alarm is not None:
                    alarms[alarm_id] = alarm
            next_alarm, next_event = self._one(txn, _COUNTERS, ())
            return list(alarms.values()), events, int(next_alarm), int(next_event)

        # the writer: it sees every committed settlement of this process, in order
        return self._write(load)

    def alarm_view(self, customer_id: str, cursor: int | None, limit: int) -> Deferred[AlarmView]:
        """The customer's active alarms and events after ``cursor`` (the newest
        ``limit`` without one), with the last event id handed out.

        The counter is read before the events: every event below it is
        committed by then (settlements commit in id order), so the later
        events query returns them all and the caller may hand out that id
        as a cursor.
        """

        def query(txn: Any) -> AlarmView:
            _, next_event = self._one(txn, _COUNTERS, ())
            if cursor is None:
                txn.execute(
                    self.sql(f"SELECT {_EVENT_COLUMNS} FROM alarm_events WHERE customer_id = ? ORDER BY event_id DESC LIMIT ?"),
                    (customer_id, limit),
                )
                events = [_event(row) for row in reversed(txn.fetchall())]
            else:
                txn.execute(
                    self.sql(
                        f"SELECT {_EVENT_COLUMNS} FROM alarm_events WHERE customer_id = ? AND event_id > ? "
                        "ORDER BY event_id LIMIT ?"
                    ),
                    (customer_id, cursor, limit),
                )
                events = [_event(row) for row in txn.fetchall()]
            txn.execute(
                self.sql(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE customer_id = ? AND cleared_at IS NULL ORDER BY alarm_id"),
                (customer_id,),
            )
            active = list(map(_alarm, txn.fetchall()))
            return active, events, int(next_event) - 1

        return self._read(query)

    def meters_last_seen(self) -> Deferred[list[tuple[str, int, int | None]]]:
        """(customer, meter, last_seen_ms) of every meter: the silent rule's start."""

        def query(txn: Any) -> list[tuple[str, int, int | None]]:
            txn.execute("SELECT customer_id, meter_id, last_seen_ms FROM meters")
            return [(c, int(m), None if s is None else int(s)) for c, m, s in txn.fetchall()]

        return self._read(query)

    def first_reading_us(self, customer_id: str) -> Deferred[int | None]:
        """When the customer's data begins (earliest hourly rollup): the anomaly
        rule counts only days fully after it as days of history."""

        def query(txn: Any) -> int | None:
            row = self._one(txn, "SELECT MIN(first_ts) FROM rollups WHERE customer_id = ?", (customer_id,))
            return None if row is None or row[0] is None else int(row[0])

        return self._read(query)
