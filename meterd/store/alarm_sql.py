"""The alarm tables (schema migration 2), as a mixin of :class:`SqlStore`.

The alarm book in memory is the working copy; these methods make it survive
a restart and answer cursors older than memory holds. Portable SQL only (the
PostgreSQL backend inherits it): ``?`` placeholders through ``self.sql``,
upserts with ``ON CONFLICT``, window functions that SQLite 3.25+ and
PostgreSQL both have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from meterd.alarm_rules import Alarm, Event

if TYPE_CHECKING:
    from twisted.enterprise import adbapi

__all__ = ["AlarmSql", "AlarmState"]

_ALARM_COLUMNS = "customer_id, alarm_id, meter_id, rule, raised_at, cleared_at, acked_at, value, threshold, message"
_EVENT_COLUMNS = "event_id, alarm_id, customer_id, event_type, at_ms"

# (active alarms and those the recent events refer to, recent events, next alarm id, next event id)
AlarmState = tuple[list[Alarm], list[Event], int, int]

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
    _writer: adbapi.ConnectionPool | None
    _reader: adbapi.ConnectionPool | None

    def save_alarm_events(self, alarms: Sequence[Alarm], events: Sequence[Event]) -> Deferred[None]:
        """One transaction for an evaluation batch: the alarm rows it touched and its events.

        Idempotent, so a batch retried after a failure writes nothing twice;
        a timestamp already set (cleared, acked) is never overwritten.
        """

        def write(txn: Any) -> None:
            if alarms:
                txn.executemany(
                    self.sql(_UPSERT_ALARM),
                    [
                        (a.customer_id, a.alarm_id, a.meter_id, a.rule, a.raised_at, a.cleared_at, a.acked_at,
                         a.value, a.threshold, a.message)
                        for a in alarms
                    ],
                )
            if events:
                txn.executemany(
                    self.sql(_INSERT_EVENT),
                    [(e.event_id, e.alarm_id, e.customer_id, e.type, e.at) for e in events],
                )

        return self._write(write)

    def load_alarm_state(self, recent_per_customer: int) -> Deferred[AlarmState]:
        """What a restarted alarm book needs: every active alarm, each customer's
        newest events and the alarms they refer to, and the id counters."""

        def load(txn: Any) -> AlarmState:
            txn.execute(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE cleared_at IS NULL")
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
                txn.execute(
                    self.sql(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE customer_id = ? AND alarm_id = ?"),
                    (customer_id, alarm_id),
                )
                row = txn.fetchone()
                if row is not None:
                    alarms[int(row[1])] = _alarm(row)
            txn.execute("SELECT MAX(alarm_id) FROM alarms")
            (max_alarm,) = txn.fetchone()
            txn.execute("SELECT MAX(event_id) FROM alarm_events")
            (max_event,) = txn.fetchone()
            return list(alarms.values()), events, int(max_alarm or 0) + 1, int(max_event or 0) + 1

        # the writer: it sees every committed batch of this process, in order
        return self._write(load)

    def alarm_events_after(self, customer_id: str, cursor: int, limit: int) -> Deferred[list[Event]]:
        """The customer's events after ``cursor``, oldest first, at most ``limit``."""

        def query(txn: Any) -> list[Event]:
            txn.execute(
                self.sql(
                    f"SELECT {_EVENT_COLUMNS} FROM alarm_events WHERE customer_id = ? AND event_id > ? "
                    "ORDER BY event_id LIMIT ?"
                ),
                (customer_id, cursor, limit),
            )
            return [_event(row) for row in txn.fetchall()]

        return self._read(query)

    def get_alarm(self, customer_id: str, alarm_id: int) -> Deferred[Alarm | None]:
        """One alarm of one customer (None for another customer's or none)."""

        def query(txn: Any) -> Alarm | None:
            txn.execute(
                self.sql(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE customer_id = ? AND alarm_id = ?"),
                (customer_id, alarm_id),
            )
            row = txn.fetchone()
            return None if row is None else _alarm(row)

        return self._read(query)

    def meters_last_seen(self) -> Deferred[list[tuple[str, int, int | None]]]:
        """(customer, meter, last_seen_ms) of every meter: the silent rule's start."""

        def query(txn: Any) -> list[tuple[str, int, int | None]]:
            txn.execute("SELECT customer_id, meter_id, last_seen_ms FROM meters")
            return [(c, int(m), None if s is None else int(s)) for c, m, s in txn.fetchall()]

        return self._read(query)

    def first_reading_ms(self, customer_id: str) -> Deferred[int | None]:
        """When the customer's data begins (earliest hourly rollup): the anomaly
        rule counts only days fully after it as days of history."""

        def query(txn: Any) -> int | None:
            txn.execute(self.sql("SELECT MIN(first_ts) FROM rollups WHERE customer_id = ?"), (customer_id,))
            row = txn.fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._read(query)
