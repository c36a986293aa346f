"""The schema as a list of forward migrations, shared by every backend.

Migration N brings a database from version N-1 to N. Statements use only SQL
that SQLite and PostgreSQL both accept (BIGINT, TEXT, ON CONFLICT), so one
list serves both; at start the store applies the ones newer than the stored
version, all in one transaction (``SqlStore._migrate``). A migration that concerns one backend only is a
mapping from backend name to statements; it still gives every backend the
version number, so an older meterd refuses a database it would misread.
A statement may also be a function of the transaction and the backend's
placeholder translation, for what SQL alone cannot compute (names' search
words are Python's Unicode rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meterd import names
from meterd.store import readings_log

Step = str | Callable[[Any, Callable[[str], str]], None]

READINGS = """CREATE TABLE {table} (
    customer_id TEXT NOT NULL,
    meter_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    wh BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (customer_id, meter_id, ts)
)"""

_TO_MICROSECONDS: list[Step] = [
    "UPDATE readings SET ts = ts * 1000",
    "UPDATE rollups SET hour = hour * 1000, first_ts = first_ts * 1000, last_ts = last_ts * 1000",
    "UPDATE meters SET last_ts = last_ts * 1000 WHERE last_ts IS NOT NULL",
]

CUSTOMER_COLUMNS = "id, name, ligacao, limit_w, limit_wh, tz, token_hash, created_ms"  # a Customer, in order
METER_COLUMNS = "customer_id, meter_id, mode, key_hex, created_ms"  # what registering a meter writes
METER_FIELDS = f"{METER_COLUMNS}, retired_ts, replaces"  # a Meter, in order
def run_step(txn: Any, step: Step, sql: Callable[[str], str]) -> None:
    """One statement of a migration, or its function, in the migration's transaction."""
    if callable(step):
        step(txn, sql)
    else:
        txn.execute(step)


WORDS_INSERT = "INSERT INTO customer_words (word, search_key, customer_id) VALUES (?, ?, ?)"


def word_rows(customer_id: str, name: str) -> list[tuple[str, str, str]]:
    """The rows of ``customer_words`` that find a customer by name: one per distinct word (:mod:`meterd.names`)."""
    key = names.search_key(name)
    return [(word, key, customer_id) for word in dict.fromkeys(names.words(name))]


def _backfill_words(txn: Any, sql: Callable[[str], str]) -> None:
    """Migration 7: the search words of the customers registered before it."""
    txn.execute("SELECT id, name FROM customers")
    rows = [row for customer_id, name in txn.fetchall() for row in word_rows(customer_id, name)]
    if rows:
        txn.executemany(sql(WORDS_INSERT), rows)


def _operations(collate: str) -> list[Step]:
    """Migration 7's statements; ``collate`` orders the search words by code point on PostgreSQL (SQLite's TEXT already does)."""
    return [
        # a retired meter's final reading time (us): readings after it are refused
        "ALTER TABLE meters ADD COLUMN retired_ts BIGINT",
        # the retired meter of the same customer that this one replaced
        "ALTER TABLE meters ADD COLUMN replaces BIGINT",
        # Each customer's distinct name words (meterd.names), with the whole name's
        # key: the primary key is the order search results are given in, a word's
        # prefix one range of it; the second index checks a customer's other words.
        f"""CREATE TABLE customer_words (
            word TEXT{collate} NOT NULL,
            search_key TEXT{collate} NOT NULL,
            customer_id TEXT NOT NULL,
            PRIMARY KEY (word, search_key, customer_id)
        )""",
        "CREATE INDEX customer_words_of ON customer_words (customer_id, word)",
        # Every change an operator made, kept for them to read. Ids come from a
        # counter locked by each writing transaction, so they follow commit order.
        """CREATE TABLE audit (
            customer_id TEXT NOT NULL,
            audit_id BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            address TEXT NOT NULL,
            action TEXT NOT NULL,
            meter_id BIGINT,
            field TEXT,
            old_value TEXT,
            new_value TEXT,
            PRIMARY KEY (customer_id, audit_id)
        )""",
        "CREATE INDEX audit_id ON audit (audit_id)",
        "CREATE TABLE audit_counter (id BIGINT PRIMARY KEY, next_audit_id BIGINT NOT NULL)",
        "INSERT INTO audit_counter (id, next_audit_id) VALUES (1, 1)",
        _backfill_words,
    ]


MIGRATIONS: list[list[Step] | dict[str, list[Step]]] = [
    # 1: customers, meters, readings and hourly rollups
    [
        """CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            ligacao TEXT NOT NULL,
            limit_w BIGINT NOT NULL,
            limit_wh BIGINT NOT NULL,
            tz TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE meters (
            customer_id TEXT NOT NULL REFERENCES customers (id),
            meter_id BIGINT NOT NULL,
            mode TEXT NOT NULL,
            key_hex TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_ts BIGINT,
            last_wh BIGINT,
            last_seen_ms BIGINT,
            PRIMARY KEY (customer_id, meter_id)
        )""",
        READINGS.format(table="readings"),
        """CREATE TABLE rollups (
            customer_id TEXT NOT NULL,
            meter_id BIGINT NOT NULL,
            hour BIGINT NOT NULL,
            n BIGINT NOT NULL,
            first_ts BIGINT NOT NULL,
            first_wh BIGINT NOT NULL,
            last_ts BIGINT NOT NULL,
            last_wh BIGINT NOT NULL,
            sum_wh BIGINT NOT NULL,
            PRIMARY KEY (customer_id, meter_id, hour)
        )""",
    ],
    # 2: alarms and their events (DESIGN §7). Ids come from counters (the
    # alarm book's here, the database's since 3), not AUTOINCREMENT/SERIAL; keys lead
    # with customer_id so the tables distribute by customer on Citus.
    [
        """CREATE TABLE alarms (
            customer_id TEXT NOT NULL,
            alarm_id BIGINT NOT NULL,
            meter_id BIGINT,
            rule TEXT NOT NULL,
            raised_at BIGINT NOT NULL,
            cleared_at BIGINT,
            acked_at BIGINT,
            value DOUBLE PRECISION NOT NULL,
            threshold DOUBLE PRECISION NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (customer_id, alarm_id)
        )""",
        "CREATE INDEX alarms_active ON alarms (customer_id, alarm_id) WHERE cleared_at IS NULL",
        "CREATE INDEX alarms_id ON alarms (alarm_id)",
        """CREATE TABLE alarm_events (
            customer_id TEXT NOT NULL,
            event_id BIGINT NOT NULL,
            alarm_id BIGINT NOT NULL,
            event_type TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            PRIMARY KEY (customer_id, event_id)
        )""",
        "CREATE INDEX alarm_events_id ON alarm_events (event_id)",
    ],
    # 3: the alarm id counters move into the database. Several processes may
    # decide the same alarm, so the store settles every alarm change; each
    # settlement locks this one row, which serializes settlements across
    # processes and hands out ids in commit order (a cursor never skips one).
    [
        """CREATE TABLE alarm_counters (
            id BIGINT PRIMARY KEY,
            next_alarm_id BIGINT NOT NULL,
            next_event_id BIGINT NOT NULL
        )""",
        """INSERT INTO alarm_counters (id, next_alarm_id, next_event_id) SELECT 1,
            COALESCE((SELECT MAX(alarm_id) FROM alarms), 0) + 1,
            COALESCE((SELECT MAX(event_id) FROM alarm_events), 0) + 1""",
    ],
    # 4: the embedded store's readings land in a small write log first (store/readings_log.py)
    {
        "sqlite": [
            *(READINGS.format(table=log) for log in readings_log.LOGS),
            # the log readings land in, and the first key of the other one not yet moved into readings
            """CREATE TABLE readings_logs (
                id BIGINT PRIMARY KEY CHECK (id = 1),
                active BIGINT NOT NULL,
                unmoved_customer TEXT NOT NULL,
                unmoved_meter BIGINT NOT NULL,
                unmoved_ts BIGINT NOT NULL
            )""",
            "INSERT INTO readings_logs VALUES (1, 0, '', 0, 0)",
        ],
        "postgresql": [],
    },
    # 5: readings are timed to the microsecond, not the millisecond (meterd.readings):
    # every stored reading time moves to the new unit. Distinct readings stay
    # distinct and in order, and no time in microseconds can equal one still
    # in milliseconds (those are below 10^13, these above 9 x 10^14), so the
    # keys never collide while the rows are rewritten.
    {
        "sqlite": [
            *_TO_MICROSECONDS,
            *(f"UPDATE {log} SET ts = ts * 1000" for log in readings_log.LOGS),
            "UPDATE readings_logs SET unmoved_ts = unmoved_ts * 1000",
        ],
        "postgresql": _TO_MICROSECONDS,
    },
    # 6: when a customer's or meter's row last changed (a new token or key, an update):
    # processes sharing a PostgreSQL database learn each other's changes from it.
    [
        "ALTER TABLE customers ADD COLUMN updated_ms BIGINT",
        "ALTER TABLE meters ADD COLUMN updated_ms BIGINT",
        "CREATE INDEX customers_updated ON customers (updated_ms)",
        "CREATE INDEX meters_updated ON meters (updated_ms)",
    ],
    # 7: operations on customers and meters: name search, the audit log, retired and replaced meters
    {"sqlite": _operations(""), "postgresql": _operations(' COLLATE "C"')},
    # 8: alarm webhooks (meterd/webhooks.py). Each row is a webhook, its durable
    # cursor (the last event id delivered), how delivery goes, and the lease that
    # lets one process at a time deliver it. A removed webhook keeps its row (and
    # its id, never handed out again).
    [
        """CREATE TABLE webhooks (
            webhook_id BIGINT PRIMARY KEY,
            url TEXT NOT NULL,
            customer_id TEXT,
            secret TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            removed_ms BIGINT,
            last_delivered BIGINT NOT NULL,
            last_success_ms BIGINT,
            last_failure_ms BIGINT,
            last_error TEXT,
            failures BIGINT NOT NULL,
            lease_owner TEXT,
            lease_until_ms BIGINT
        )""",
    ],
    # 9: issued bills (meterd.billing_run). A bill is written once and never changed
    # but for consumo_atual_wh, what its month is billed as once adjustments are
    # counted; bill_edges is the ledger of the register values issued months
    # were billed with, and the span where a late reading would change each;
    # bill_counters hands out gapless bill numbers in commit order (its row is
    # locked by every issuing transaction, in every process).
    [
        """CREATE TABLE bill_counters (
            id BIGINT PRIMARY KEY,
            next_number BIGINT NOT NULL,
            next_run BIGINT NOT NULL
        )""",
        "INSERT INTO bill_counters (id, next_number, next_run) VALUES (1, 1, 1)",
        """CREATE TABLE bills (
            customer_id TEXT NOT NULL,
            referencia TEXT NOT NULL,
            numero BIGINT NOT NULL,
            run_id BIGINT NOT NULL,
            issued_ms BIGINT NOT NULL,
            inicio_us BIGINT NOT NULL,
            fim_us BIGINT NOT NULL,
            dias BIGINT NOT NULL,
            consumo_wh BIGINT NOT NULL,
            consumo_atual_wh BIGINT NOT NULL,
            estimado BIGINT NOT NULL,
            total_cents BIGINT NOT NULL,
            rates TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (customer_id, referencia)
        )""",
        "CREATE UNIQUE INDEX bills_numero ON bills (numero)",
        "CREATE INDEX bills_run ON bills (run_id, numero)",
        """CREATE TABLE bill_edges (
            customer_id TEXT NOT NULL,
            meter_id BIGINT NOT NULL,
            edge BIGINT NOT NULL,
            wh BIGINT NOT NULL,
            estimated BIGINT NOT NULL,
            span_lo BIGINT,
            span_hi BIGINT,
            PRIMARY KEY (customer_id, meter_id, edge)
        )""",
        """CREATE TABLE billing_runs (
            run_id BIGINT PRIMARY KEY,
            periodo BIGINT NOT NULL,
            referencia TEXT NOT NULL,
            now_ms BIGINT NOT NULL,
            state TEXT NOT NULL,
            started_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            finished_ms BIGINT,
            customers BIGINT NOT NULL,
            processed BIGINT NOT NULL,
            issued BIGINT NOT NULL,
            already BIGINT NOT NULL,
            skipped BIGINT NOT NULL,
            adjustments BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            total_cents BIGINT NOT NULL,
            cursor TEXT NOT NULL,
            message TEXT
        )""",
    ],
]

LATEST = len(MIGRATIONS)

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"

ROLLUP_COLUMNS = "customer_id, meter_id, hour, n, first_ts, first_wh, last_ts, last_wh, sum_wh"

ROLLUP_CONFLICT = """
ON CONFLICT (customer_id, meter_id, hour) DO UPDATE SET
    n = rollups.n + excluded.n,
    first_ts = CASE WHEN excluded.first_ts < rollups.first_ts THEN excluded.first_ts ELSE rollups.first_ts END,
    first_wh = CASE WHEN excluded.first_ts < rollups.first_ts THEN excluded.first_wh ELSE rollups.first_wh END,
    last_ts = CASE WHEN excluded.last_ts > rollups.last_ts THEN excluded.last_ts ELSE rollups.last_ts END,
    last_wh = CASE WHEN excluded.last_ts > rollups.last_ts THEN excluded.last_wh ELSE rollups.last_wh END,
    sum_wh = rollups.sum_wh + excluded.sum_wh
"""
